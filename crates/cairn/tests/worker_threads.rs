//! The worker-thread setting of `cairn serve` and the `TOKIO_WORKER_THREADS` variable: a value
//! out of range is refused at start-up with a message naming it and exit status 1, never a panic.

mod common;

use std::process::{Command, Output};

fn cairn(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(args).env_remove("TOKIO_WORKER_THREADS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run cairn")
}

fn refused(out: &Output, message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(message), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_worker_count_out_of_range_is_refused_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let serve = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "serve",
            "--data-dir",
            data,
            "--listen-client",
            "127.0.0.1:0",
        ];
        args.extend([
            "--listen-peer",
            "127.0.0.1:0",
            "--listen-http",
            "127.0.0.1:0",
        ]);
        args.extend(extra);
        cairn(&args, env)
    };
    refused(
        &serve(&["--worker-threads", "1025"], &[]),
        "worker-threads: at most 1024",
    );
    let too_many = "worker_threads = 5000\n";
    let file = dir.path().join("c.toml");
    std::fs::write(&file, too_many).unwrap();
    refused(
        &serve(&["--config", file.to_str().unwrap()], &[]),
        "worker-threads: at most 1024",
    );
    for bad in ["0", "many", "-2"] {
        refused(
            &serve(&[], &[("TOKIO_WORKER_THREADS", bad)]),
            "TOKIO_WORKER_THREADS: must be a whole number from 1 to 1024",
        );
    }
    // Nothing was started: the data directory was never made.
    assert!(!dir.path().join("data").exists());
    // Every subcommand builds a runtime, and checks the variable first.
    refused(
        &cairn(
            &["ctl", "--endpoints", "127.0.0.1:1", "member", "list"],
            &[("TOKIO_WORKER_THREADS", "lots")],
        ),
        "TOKIO_WORKER_THREADS: must be a whole number from 1 to 1024 (worker_threads_max), got \"lots\"",
    );
}

/// `line` without its terminal colour codes (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The worker count `cairn serve` reports at start-up for node 1 of `initial_cluster` (with
/// `{P}` standing for its own peer port, `peer`).
fn workers_reported(initial_cluster: &str, peer: u16) -> usize {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(["serve", "--node-id", "1", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client",
            "127.0.0.1:0",
            "--listen-http",
            "127.0.0.1:0",
        ])
        .args(["--listen-peer", &format!("127.0.0.1:{peer}")])
        .args([
            "--initial-cluster",
            &initial_cluster.replace("{P}", &peer.to_string()),
        ])
        .env_remove("TOKIO_WORKER_THREADS")
        .env_remove("CAIRN_WORKER_THREADS")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start cairn serve");
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let mut workers = None;
    for line in stderr.lines().map_while(Result::ok) {
        let line = without_colours(&line);
        if line.contains("async runtime started") {
            workers = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("worker_threads="))
                .and_then(|n| n.parse().ok());
            break;
        }
        seen.push(line);
    }
    let _ = child.kill();
    let _ = child.wait();
    workers.unwrap_or_else(|| panic!("no start-up line with worker_threads: {seen:?}"))
}

#[test]
fn nodes_sharing_a_host_share_its_cores_between_their_workers() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let ports = common::pick_free_ports(3);
    // Three members on this machine (the other two are not running: only the count matters).
    let three = format!(
        "1=127.0.0.1:{{P}},2=127.0.0.1:{},3=localhost:{}",
        ports[1], ports[2]
    );
    assert_eq!(workers_reported(&three, ports[0]), (cores / 3).max(1));
    // A node alone on its host: one worker per core, tokio's default.
    assert_eq!(workers_reported("1=127.0.0.1:{P}", ports[0]), cores);
}
