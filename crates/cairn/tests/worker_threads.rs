//! The worker-thread setting of `cairn serve` and the `TOKIO_WORKER_THREADS` variable: a value
//! out of range is refused at start-up with a message naming it and exit status 1, never a panic.

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
