//! Runs `cairn ctl` (the binary under test) against a test cluster, every run bounded in time and
//! off the async workers, which must keep simulated datanodes' heartbeats going meanwhile. The
//! helpers assert what a user would check: a command succeeded (its stdout), printed valid JSON,
//! or failed with a non-zero exit and a message naming what was wrong.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Upper bound of one `cairn ctl` run.
pub const CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// What one `cairn ctl` run did.
#[derive(Debug)]
pub struct CtlRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cairn ctl --endpoints E ARGS` to completion (bounded by [`CTL_TIMEOUT`]).
pub async fn ctl(endpoints: &str, args: &[&str]) -> CtlRun {
    let mut argv = vec![
        "ctl".to_string(),
        "--endpoints".to_string(),
        endpoints.to_string(),
    ];
    argv.extend(args.iter().map(|a| a.to_string()));
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
            .args(&argv)
            .env_remove("CAIRN_ENDPOINTS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn ctl");
        let mut stdout_pipe = child.stdout.take().expect("stdout piped");
        let mut stderr_pipe = child.stderr.take().expect("stderr piped");
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout_pipe.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr_pipe.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + CTL_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for cairn ctl") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("cairn {argv:?} did not finish within {CTL_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        CtlRun {
            success: status.success(),
            stdout: out.join().expect("stdout reader"),
            stderr: err.join().expect("stderr reader"),
        }
    })
    .await
    .expect("ctl runner")
}

/// A command that must succeed; its stdout.
pub async fn ok(endpoints: &str, args: &[&str]) -> String {
    let run = ctl(endpoints, args).await;
    assert!(
        run.success,
        "cairn ctl {args:?} failed:\nstdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    run.stdout
}

/// A command run with `-o json` that must succeed; its parsed output.
pub async fn json(endpoints: &str, args: &[&str]) -> Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    let stdout = ok(endpoints, &all).await;
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("cairn ctl {all:?} printed invalid JSON ({e}): {stdout}"))
}

/// A command that must fail; its stderr, which must name every one of `expected`.
pub async fn fails(endpoints: &str, args: &[&str], expected: &[&str]) -> String {
    let run = ctl(endpoints, args).await;
    assert!(
        !run.success,
        "cairn ctl {args:?} should have failed; stdout: {}",
        run.stdout
    );
    assert!(
        !run.stderr.contains("panicked"),
        "cairn ctl {args:?} panicked: {}",
        run.stderr
    );
    for want in expected {
        assert!(
            run.stderr.contains(want),
            "cairn ctl {args:?}: stderr should name {want:?}: {}",
            run.stderr
        );
    }
    run.stderr
}
