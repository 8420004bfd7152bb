//! Runs Debian's `etcdctl` (API v3) against a test cluster, with every wait bounded.
//!
//! One-shot commands return their exit status and output. Long-running ones (`watch`, `elect`,
//! `lock`) run as `CtlChild`, whose stdout lines arrive on a channel so a test can wait, with a
//! deadline, for the lines it expects or check that nothing was printed for a while. A child is
//! interrupted with SIGINT (so `elect` resigns and `lock` unlocks) and killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Upper bound of a one-shot etcdctl command (its own --command-timeout is 5 s).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an interrupted child may take to clean up and exit before it is killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Whether `etcdctl` can be run at all; the compatibility suite is skipped otherwise.
pub fn installed() -> bool {
    Command::new("etcdctl")
        .arg("version")
        .env("ETCDCTL_API", "3")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[derive(Debug)]
pub struct CtlOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

pub struct Etcdctl {
    endpoints: String,
}

impl Etcdctl {
    /// `endpoints` as etcdctl's `--endpoints` takes them: comma separated.
    pub fn new(endpoints: &str) -> Etcdctl {
        Etcdctl {
            endpoints: endpoints.to_string(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("etcdctl");
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints))
            .args(args);
        cmd
    }

    /// Runs a command to completion (bounded), feeding it `stdin`.
    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> CtlOutput {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn etcdctl");
        let mut input = child.stdin.take().expect("stdin piped");
        input
            .write_all(stdin.as_bytes())
            .expect("write etcdctl stdin");
        drop(input);
        let stdout = read_all_in_background(child.stdout.take().expect("stdout piped"));
        let stderr = read_all_in_background(child.stderr.take().expect("stderr piped"));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for etcdctl") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("etcdctl {args:?} did not finish within {COMMAND_TIMEOUT:?}");
            }
            std::thread::sleep(POLL_INTERVAL);
        };
        CtlOutput {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        }
    }

    pub fn run(&self, args: &[&str]) -> CtlOutput {
        self.run_with_stdin(args, "")
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed ({}): {}",
            out.status,
            out.stderr
        );
        out.stdout
    }

    /// Runs a command with `-w json` that must succeed; returns the parsed output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-w", "json"]);
        let stdout = self.ok(&all);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("etcdctl {all:?} printed invalid JSON ({e}): {stdout}"))
    }

    /// Starts a long-running command (watch, elect, lock).
    pub fn spawn(&self, args: &[&str]) -> CtlChild {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn etcdctl");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = read_all_in_background(child.stderr.take().expect("stderr piped"));
        CtlChild {
            what: format!("etcdctl {}", args.join(" ")),
            child,
            lines,
            seen: Vec::new(),
            stderr: Some(stderr),
        }
    }
}

fn read_all_in_background<R: Read + Send + 'static>(mut pipe: R) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// A running etcdctl whose output lines are read as they come.
pub struct CtlChild {
    what: String,
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

impl CtlChild {
    /// Waits for the next line (bounded); `None` when the deadline passed or the output ended.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => {
                self.seen.push(line.clone());
                Some(line)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The next lines must be exactly `expected`, all printed within `timeout`.
    pub fn expect_lines(&mut self, expected: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for want in expected {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_line(left) {
                Some(line) => assert_eq!(
                    line, *want,
                    "{}: unexpected output line; everything so far: {:?}",
                    self.what, self.seen
                ),
                None => panic!(
                    "{}: expected line {want:?} within {timeout:?}; everything so far: {:?}",
                    self.what, self.seen
                ),
            }
        }
    }

    /// The next line, which must arrive within `timeout`.
    pub fn expect_line(&mut self, timeout: Duration) -> String {
        self.next_line(timeout).unwrap_or_else(|| {
            panic!(
                "{}: no output within {timeout:?}; so far {:?}",
                self.what, self.seen
            )
        })
    }

    /// Nothing may be printed during `duration` (e.g. a second lock holder must still wait).
    pub fn expect_silence(&mut self, duration: Duration) {
        if let Some(line) = self.next_line(duration) {
            panic!(
                "{}: expected no output yet, got {line:?}; so far {:?}",
                self.what, self.seen
            );
        }
    }

    /// SIGINT, then waits (bounded) for the exit; a straggler is killed.
    pub fn interrupt(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + INTERRUPT_GRACE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!(
            "{} did not exit within {INTERRUPT_GRACE:?} of SIGINT",
            self.what
        );
    }

    /// What the child wrote to stderr; only after it exited.
    pub fn stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for CtlChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Standard base64 with padding, as etcdctl's JSON output encodes keys and values.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
