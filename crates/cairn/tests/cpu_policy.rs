//! `cairn serve --cpu-policy`: every thread of a node runs under the policy chosen, `batch`
//! (Linux's SCHED_BATCH) unless told otherwise, as `ps -L -o cls` shows an operator.
#![cfg(target_os = "linux")]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `cairn serve` child, killed when dropped.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(data: &std::path::Path, extra: &[&str]) -> Node {
    let child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["serve", "--data-dir", data.to_str().unwrap()])
        .args([
            "--listen-client",
            "127.0.0.1:0",
            "--listen-peer",
            "127.0.0.1:0",
        ])
        .args(["--listen-http", "127.0.0.1:0"])
        .args(extra)
        .env_remove("CAIRN_CPU_POLICY")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start cairn serve");
    Node(child)
}

/// Each thread's name and policy, once the node has started its Raft log writer (the thread
/// started last of those a serving node has, and from an async worker, not the first thread).
fn thread_policies(node: &Node) -> Vec<(String, libc::c_int)> {
    let tasks = format!("/proc/{}/task", node.0.id());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let threads: Vec<(String, libc::c_int)> = std::fs::read_dir(&tasks)
            .map(|dir| {
                dir.filter_map(|t| {
                    let entry = t.ok()?;
                    let tid: libc::pid_t = entry.file_name().to_str()?.parse().ok()?;
                    let name = std::fs::read_to_string(entry.path().join("comm")).ok()?;
                    // SAFETY: reads another thread's policy by id; no memory handed over.
                    let policy = unsafe { libc::sched_getscheduler(tid) };
                    (policy >= 0).then(|| (name.trim().to_string(), policy))
                })
                .collect()
            })
            .unwrap_or_default();
        if threads.iter().any(|(n, _)| n == "cairn-log-write") {
            return threads;
        }
        assert!(
            Instant::now() < deadline,
            "no log writer thread: {threads:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn every_thread_of_a_node_runs_under_the_cpu_policy_chosen() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, want) in [
        (&[][..], libc::SCHED_BATCH),
        (&["--cpu-policy", "batch"][..], libc::SCHED_BATCH),
        (&["--cpu-policy", "normal"][..], libc::SCHED_OTHER),
    ] {
        let data = dir.path().join(format!("data-{want}-{}", extra.len()));
        let node = serve(&data, extra);
        let threads = thread_policies(&node);
        assert!(threads.len() >= 3, "{threads:?}");
        for (name, policy) in &threads {
            assert_eq!(*policy, want, "thread {name} with {extra:?}: {threads:?}");
        }
    }
}
