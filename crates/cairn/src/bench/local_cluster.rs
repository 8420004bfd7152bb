//! A 3-node cluster of child processes on 127.0.0.1, for benchmarks that kill and restart
//! servers (`cairn bench leader-failover`): Cairn (`cairn serve`) or a real etcd, on ports the
//! kernel picks at run time, with data in a temporary directory.
//!
//! Dropping a [`LocalCluster`] SIGKILLs every child, reaps it and removes the data directory,
//! so an error, a panic or an interrupt that drops it leaves no server behind; children are also
//! asked to die with the bench process (`PR_SET_PDEATHSIG`) for the case nothing gets to run
//! (a SIGKILLed bench: the data directory then stays behind).

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// Nodes in the cluster: the smallest one that survives losing its leader.
pub const NODES: usize = 3;
/// How much of a dead node's log an error quotes, in bytes.
const LOG_TAIL_BYTES_MAX: u64 = 2048;

/// Which server the cluster runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// `cairn serve`.
    Cairn,
    /// A real etcd (`etcd` binary).
    Etcd,
}

impl ServerKind {
    /// The name `--target` takes.
    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Cairn => "cairn",
            ServerKind::Etcd => "etcd",
        }
    }
}

/// One node's ports.
#[derive(Debug, Clone, Copy)]
struct Ports {
    client: u16,
    peer: u16,
    /// Cairn's HTTP port; etcd gets no extra listener.
    http: u16,
}

/// Three server processes; node `i` (0-based) is called node `i + 1` everywhere it is shown.
pub struct LocalCluster {
    kind: ServerKind,
    bin: PathBuf,
    extra_args: Vec<String>,
    log_dir: PathBuf,
    ports: Vec<Ports>,
    children: Vec<Option<Child>>,
    // Dropped after `Drop::drop` has killed the children, so no server writes into a
    // directory being removed.
    data: tempfile::TempDir,
}

impl LocalCluster {
    /// Starts all nodes. Server logs go to `log_dir/node-N.log` (appended across restarts), or
    /// into the data directory, removed with it, when `log_dir` is `None`.
    pub fn start(
        kind: ServerKind,
        bin: PathBuf,
        extra_args: Vec<String>,
        log_dir: Option<PathBuf>,
    ) -> Result<Self, String> {
        let data = tempfile::Builder::new()
            .prefix("cairn-bench-cluster-")
            .tempdir()
            .map_err(|e| format!("cannot create a temporary data directory: {e}"))?;
        let log_dir = match log_dir {
            Some(dir) => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                dir
            }
            None => data.path().to_path_buf(),
        };
        let mut cluster = LocalCluster {
            kind,
            bin,
            extra_args,
            log_dir,
            ports: free_ports()?,
            children: (0..NODES).map(|_| None).collect(),
            data,
        };
        for i in 0..NODES {
            cluster.start_node(i)?;
        }
        Ok(cluster)
    }

    /// Node `i`'s client endpoint (`HOST:PORT`).
    pub fn client_endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i].client)
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.log_dir.join(format!("node-{}.log", i + 1))
    }

    /// Starts node `i`, which must not be running, on its data directory (a restart when the
    /// directory exists: both servers then ignore the bootstrap flags and recover from disk).
    pub fn start_node(&mut self, i: usize) -> Result<(), String> {
        assert!(self.children[i].is_none(), "node {} is running", i + 1);
        let log_path = self.log_path(i);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let mut command = Command::new(&self.bin);
        command
            .args(server_args(self.kind, &self.ports, self.data.path(), i))
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: the closure runs in the forked child before exec and only makes one
        // async-signal-safe system call. The signal fires when the *thread* that spawned the
        // child exits; the bench spawns from the thread that runs `block_on`, which lives as long
        // as the process.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        self.children[i] = Some(child);
        Ok(())
    }

    /// SIGKILLs node `i` and reaps it; returns the instant just before the signal was sent,
    /// from which a failover is timed.
    pub fn kill_node(&mut self, i: usize) -> Result<Instant, String> {
        let mut child = self.children[i]
            .take()
            .ok_or_else(|| format!("node {} is not running", i + 1))?;
        let at = Instant::now();
        // `Child::kill` sends SIGKILL on Unix: no shutdown code runs, as in a crash.
        child
            .kill()
            .map_err(|e| format!("cannot kill node {}: {e}", i + 1))?;
        // Reaped before returning, so a restart never races the old process for its ports.
        child
            .wait()
            .map_err(|e| format!("cannot reap node {}: {e}", i + 1))?;
        Ok(at)
    }

    /// Fails, quoting the end of its log, if a node that should run has exited on its own
    /// (a crash, a port taken by another program, bad flags).
    pub fn check_running(&mut self) -> Result<(), String> {
        for i in 0..NODES {
            let Some(child) = self.children[i].as_mut() else {
                continue;
            };
            if let Ok(Some(status)) = child.try_wait() {
                self.children[i] = None;
                return Err(format!(
                    "node {} ({}) exited by itself: {status}; end of its log:\n{}",
                    i + 1,
                    self.bin.display(),
                    log_tail(&self.log_path(i))
                ));
            }
        }
        Ok(())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `name` in one of PATH's directories.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// The first line `BIN --version` prints, for the report.
pub fn binary_version(bin: &Path) -> String {
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Command-line arguments of node `i`. Restarts pass the same ones: etcd ignores its
/// `--initial-cluster*` flags once its data directory holds a WAL, Cairn its
/// `--initial-cluster` once the store holds a vote.
fn server_args(kind: ServerKind, ports: &[Ports], data: &Path, i: usize) -> Vec<String> {
    let me = ports[i];
    let data_dir = data.join(format!("{}", i + 1)).display().to_string();
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    match kind {
        ServerKind::Cairn => {
            let initial_cluster = (0..ports.len())
                .map(|j| format!("{}=127.0.0.1:{}", j + 1, ports[j].peer))
                .collect::<Vec<_>>()
                .join(",");
            vec![
                "serve".into(),
                "--node-id".into(),
                (i + 1).to_string(),
                "--data-dir".into(),
                data_dir,
                "--initial-cluster".into(),
                initial_cluster,
                "--listen-client".into(),
                format!("127.0.0.1:{}", me.client),
                "--listen-peer".into(),
                format!("127.0.0.1:{}", me.peer),
                "--listen-http".into(),
                format!("127.0.0.1:{}", me.http),
            ]
        }
        ServerKind::Etcd => {
            let initial_cluster = (0..ports.len())
                .map(|j| format!("e{}={}", j + 1, url(ports[j].peer)))
                .collect::<Vec<_>>()
                .join(",");
            vec![
                "--name".into(),
                format!("e{}", i + 1),
                "--data-dir".into(),
                data_dir,
                "--listen-client-urls".into(),
                url(me.client),
                "--advertise-client-urls".into(),
                url(me.client),
                "--listen-peer-urls".into(),
                url(me.peer),
                "--initial-advertise-peer-urls".into(),
                url(me.peer),
                "--initial-cluster".into(),
                initial_cluster,
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                "cairn-bench".into(),
            ]
        }
    }
}

/// Ports for every node, chosen by the kernel: all are bound at once (so they are distinct) and
/// released just before the servers start. Another program could take one in between; the
/// server then fails to bind and [`LocalCluster::check_running`] reports it.
fn free_ports() -> Result<Vec<Ports>, String> {
    let listeners = (0..3 * NODES)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot find free local ports: {e}"))?;
    let port = |k: usize| -> Result<u16, String> {
        listeners[k]
            .local_addr()
            .map(|a| a.port())
            .map_err(|e| format!("cannot find free local ports: {e}"))
    };
    (0..NODES)
        .map(|i| {
            Ok(Ports {
                client: port(3 * i)?,
                peer: port(3 * i + 1)?,
                http: port(3 * i + 2)?,
            })
        })
        .collect()
}

/// The last [`LOG_TAIL_BYTES_MAX`] bytes of a log, for an error message.
fn log_tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES_MAX)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn ports_are_distinct() {
        let ports = free_ports().unwrap();
        let mut all: Vec<u16> = ports
            .iter()
            .flat_map(|p| [p.client, p.peer, p.http])
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 3 * NODES);
    }

    #[test]
    fn every_node_is_in_the_initial_cluster() {
        let ports = free_ports().unwrap();
        let value = |args: &[String], flag: &str| {
            args[args.iter().position(|a| a == flag).unwrap() + 1].clone()
        };
        let args = server_args(ServerKind::Etcd, &ports, Path::new("/d"), 1);
        let ic = value(&args, "--initial-cluster");
        assert_eq!(ic.split(',').count(), NODES);
        assert!(ic.contains(&format!("e2=http://127.0.0.1:{}", ports[1].peer)));
        assert_eq!(value(&args, "--data-dir"), "/d/2");
        let args = server_args(ServerKind::Cairn, &ports, Path::new("/d"), 0);
        assert_eq!(args[0], "serve");
        let ic = value(&args, "--initial-cluster");
        assert_eq!(ic.split(',').count(), NODES);
        assert!(ic.contains(&format!("3=127.0.0.1:{}", ports[2].peer)));
        assert_eq!(
            value(&args, "--listen-peer"),
            format!("127.0.0.1:{}", ports[0].peer)
        );
    }

    fn alive(pid: u32) -> bool {
        // A reaped child has no /proc entry; a zombie would still have one, hence the reap.
        Path::new(&format!("/proc/{pid}")).exists()
    }

    /// Kill, restart and drop on stand-in servers: a script that ignores its arguments.
    #[test]
    fn kill_restart_and_drop_leave_no_process() {
        let dir = tempfile::tempdir().unwrap();
        let server = dir.path().join("server.sh");
        std::fs::write(&server, "#!/bin/sh\nexec sleep 60\n").unwrap();
        std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cluster = LocalCluster::start(ServerKind::Cairn, server, Vec::new(), None).unwrap();
        let pids: Vec<u32> = cluster.children.iter().flatten().map(|c| c.id()).collect();
        assert_eq!(pids.len(), NODES);
        cluster.kill_node(1).unwrap();
        assert!(!alive(pids[1]));
        assert!(
            cluster.kill_node(1).is_err(),
            "a dead node cannot be killed twice"
        );
        cluster.start_node(1).unwrap();
        cluster.check_running().unwrap();
        let data = cluster.data.path().to_path_buf();
        let mut pids: Vec<u32> = cluster.children.iter().flatten().map(|c| c.id()).collect();
        drop(cluster);
        pids.retain(|&pid| alive(pid));
        assert!(pids.is_empty(), "still running: {pids:?}");
        assert!(!data.exists());
    }

    #[test]
    fn a_server_that_exits_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let server = dir.path().join("server.sh");
        std::fs::write(&server, "#!/bin/sh\necho cannot bind >&2\nexit 3\n").unwrap();
        std::fs::set_permissions(&server, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut cluster = LocalCluster::start(ServerKind::Etcd, server, Vec::new(), None).unwrap();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        let error = loop {
            match cluster.check_running() {
                Err(e) => break e,
                Ok(()) if Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Ok(()) => panic!("the exiting servers were not noticed"),
            }
        };
        assert!(error.contains("cannot bind"), "{error}");
        assert!(error.contains("exit status: 3"), "{error}");
    }
}
