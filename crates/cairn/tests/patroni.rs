//! Patroni, PostgreSQL's high-availability manager, with Cairn as its DCS through etcd's JSON
//! gateway (Patroni's `etcd3` settings): two Patroni nodes on a one-node Cairn elect a primary,
//! the other streams from it, and when the primary's Patroni is SIGKILLed the replica is
//! promoted.
//!
//! What it exercises on Cairn: `/version` (Patroni picks `/v3` from it), leases (grant, the
//! keep-alive of every loop, expiry), the leader race (a txn creating the leader key if absent),
//! puts with a lease, ranges, and a long-lived `/v3/watch` on the cluster prefix that must deliver
//! the leader key's DELETE when the dead primary's lease expires.
//!
//! Only the Patroni process is killed, as the issue puts it ("when the primary's Patroni is
//! killed"). Its PostgreSQL keeps running, unmanaged: nothing renews the leader key any more, its
//! lease expires after `ttl`, the replica's Patroni sees the key go and takes it. (Without a
//! watchdog the old postgres stays a primary too; Patroni's answer to that is the watchdog, which
//! is not the DCS's business.)
//!
//! Needs Patroni (`pip install 'patroni[etcd3]' psycopg2-binary`) and PostgreSQL's server
//! binaries (Debian's `postgresql`); skipped, with a message, without them. PostgreSQL refuses
//! to run as root: as root the test runs Patroni as `CAIRN_TEST_PG_USER` (default `postgres`, the
//! user Debian's package creates), and Patroni must then be installed where that user can run it
//! (not under /root). `CAIRN_TEST_PATRONI` and `CAIRN_TEST_PG_BIN` name the patroni program and
//! PostgreSQL's bin directory; `CAIRN_TEST_PATRONI_LOG=DEBUG` makes Patroni log every request
//! it sends to the gateway.

mod common;

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cairn_proto::etcdserverpb::RangeRequest;
use common::{http_get, pick_free_ports, TestCluster, POLL_INTERVAL, RPC_TIMEOUT};

/// Patroni's cluster name; its keys live under `/service/SCOPE/`.
const SCOPE: &str = "cairn-patroni";
/// The leader key's lease. 20 s is the smallest Patroni accepts (it raises smaller values).
const TTL_S: u64 = 20;
/// Patroni's HA loop period.
const LOOP_WAIT_S: u64 = 2;
/// How long Patroni retries a DCS or PostgreSQL operation before giving up on it.
const RETRY_TIMEOUT_S: u64 = 5;
/// initdb, the first start and the leader race.
const PRIMARY_TIMEOUT: Duration = Duration::from_secs(90);
/// The replica: pg_basebackup from the primary, start, streaming.
const REPLICA_TIMEOUT: Duration = Duration::from_secs(90);
/// From the SIGKILL to the replica serving as primary: the lease's TTL, plus a loop and the
/// promotion, with room for a slow machine.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(TTL_S + 40);
/// A row written on the primary must reach a streaming replica within this.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound of one psql or `--version` run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a postmaster may take to stop after SIGQUIT (immediate shutdown) before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of each Patroni log printed when the test fails.
const LOG_TAIL_LINES: usize = 80;

/// The unprivileged account PostgreSQL and Patroni run as when the test runs as root.
#[derive(Clone, Debug)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// What the test needs installed.
struct Setup {
    patroni: String,
    pg_bin: PathBuf,
    run_as: Option<RunAs>,
}

/// Finds Patroni, PostgreSQL and (as root) an unprivileged user; `Err` is why the test is skipped.
fn setup() -> Result<Setup, String> {
    let pg_bin = pg_bin_dir().ok_or(
        "no PostgreSQL server binaries (initdb, postgres, pg_ctl, pg_basebackup, psql) in \
         CAIRN_TEST_PG_BIN, /usr/lib/postgresql/*/bin or pg_config --bindir \
         (apt-get install postgresql)",
    )?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let run_as = if unsafe { libc::geteuid() } == 0 {
        let name = std::env::var("CAIRN_TEST_PG_USER").unwrap_or_else(|_| "postgres".into());
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, &name]).output().ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        match (id("-u"), id("-g")) {
            (Some(uid), Some(gid)) if uid != 0 => Some(RunAs { name, uid, gid }),
            _ => {
                return Err(format!(
                    "running as root and there is no unprivileged user {name:?} to run \
                     PostgreSQL as (set CAIRN_TEST_PG_USER)"
                ))
            }
        }
    } else {
        None
    };
    let mut candidates: Vec<String> = Vec::new();
    if let Ok(p) = std::env::var("CAIRN_TEST_PATRONI") {
        candidates.push(p);
    }
    candidates.push("patroni".into());
    candidates.push("/usr/local/bin/patroni".into());
    candidates.push("/usr/bin/patroni".into());
    if let Ok(home) = std::env::var("HOME") {
        candidates.push(format!("{home}/.local/bin/patroni"));
    }
    let patroni = candidates
        .into_iter()
        .find(|p| {
            let mut cmd = Command::new(p);
            cmd.arg("--version");
            run_bounded(cmd, run_as.as_ref()).is_ok_and(|(ok, _)| ok)
        })
        .ok_or_else(|| match &run_as {
            None => "patroni not installed (pip install 'patroni[etcd3]' psycopg2-binary)".into(),
            Some(user) => format!(
                "no patroni that user {} can run (pip install 'patroni[etcd3]' psycopg2-binary \
                 system-wide, not under /root)",
                user.name
            ),
        })?;
    Ok(Setup {
        patroni,
        pg_bin,
        run_as,
    })
}

/// PostgreSQL's bin directory: `CAIRN_TEST_PG_BIN`, Debian's newest `/usr/lib/postgresql/N/bin`,
/// or `pg_config --bindir`; it must hold every program Patroni and the test run.
fn pg_bin_dir() -> Option<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "postgres", "pg_ctl", "pg_basebackup", "psql"]
            .iter()
            .all(|p| dir.join(p).is_file())
    };
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(dir) = std::env::var("CAIRN_TEST_PG_BIN") {
        candidates.push(dir.into());
    }
    let mut debian: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    debian.sort();
    candidates.extend(debian.into_iter().rev().map(|(_, dir)| dir));
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        candidates.push(String::from_utf8_lossy(&out.stdout).trim().into());
    }
    candidates.into_iter().find(|dir| complete(dir))
}

/// Runs `cmd` (as `run_as`, if given) to completion within [`COMMAND_TIMEOUT`]; returns whether
/// it succeeded and its stdout, or an error with its stderr.
fn run_bounded(mut cmd: Command, run_as: Option<&RunAs>) -> Result<(bool, String), String> {
    if let Some(user) = run_as {
        cmd.uid(user.uid).gid(user.gid);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {cmd:?}: {e}"))?;
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd:?} did not finish within {COMMAND_TIMEOUT:?}"));
            }
        }
    };
    // The outputs are small (a version, a query's rows): the pipes never filled up.
    let mut stdout = String::new();
    let mut stderr = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    if status.success() {
        Ok((true, stdout))
    } else if stderr.is_empty() {
        Ok((false, stdout))
    } else {
        Err(stderr)
    }
}

/// One Patroni node and the PostgreSQL it manages.
struct Node {
    name: String,
    api_port: u16,
    pg_port: u16,
    data_dir: PathBuf,
    config: PathBuf,
    log_path: PathBuf,
    patroni: Option<Child>,
}

/// Two Patroni nodes in one temporary directory. Dropping it kills both Patronis (SIGKILL) and
/// then stops their postmasters, found by `postmaster.pid` since PostgreSQL detaches from
/// Patroni; on a panic it prints the Patroni logs and keeps the directory.
struct PatroniPair {
    dir: Option<tempfile::TempDir>,
    nodes: Vec<Node>,
    setup: Setup,
}

impl PatroniPair {
    /// Writes both configurations and starts both Patronis against the etcd API on
    /// 127.0.0.1:`client_port`.
    fn start(setup: Setup, client_port: u16) -> PatroniPair {
        let dir = tempfile::Builder::new()
            .prefix("cairn-patroni-")
            .tempdir()
            .expect("create temp dir");
        if let Some(user) = &setup.run_as {
            std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid))
                .unwrap_or_else(|e| panic!("chown {} to {}: {e}", dir.path().display(), user.name));
        }
        let ports = pick_free_ports(4);
        let nodes = (0..2)
            .map(|i| {
                let name = format!("pg{}", i + 1);
                Node {
                    api_port: ports[2 * i],
                    pg_port: ports[2 * i + 1],
                    data_dir: dir.path().join(format!("{name}-data")),
                    config: dir.path().join(format!("{name}.yml")),
                    log_path: dir.path().join(format!("{name}.log")),
                    name,
                    patroni: None,
                }
            })
            .collect();
        let mut pair = PatroniPair {
            dir: Some(dir),
            nodes,
            setup,
        };
        for i in 0..2 {
            pair.write_config(i, client_port);
            pair.spawn(i);
        }
        pair
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir is kept until drop").path()
    }

    fn write_config(&self, i: usize, client_port: u16) {
        let node = &self.nodes[i];
        let dir = self.dir().display();
        let level = std::env::var("CAIRN_TEST_PATRONI_LOG").unwrap_or_else(|_| "INFO".into());
        let config = format!(
            "scope: {SCOPE}
name: {name}
log:
  level: {level}
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
etcd3:
  hosts: 127.0.0.1:{client_port}
  protocol: http
bootstrap:
  dcs:
    ttl: {TTL_S}
    loop_wait: {LOOP_WAIT_S}
    retry_timeout: {RETRY_TIMEOUT_S}
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: false
      parameters:
        wal_level: replica
        hot_standby: 'on'
        max_wal_senders: 5
        max_replication_slots: 5
  initdb:
  - encoding: UTF8
  - auth: trust
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {data}
  bin_dir: {bin}
  pgpass: {dir}/{name}.pgpass
  authentication:
    superuser:
      username: postgres
      password: postgres
    replication:
      username: replicator
      password: replicator
  pg_hba:
  - local all all trust
  - host all all 127.0.0.1/32 trust
  - host replication all 127.0.0.1/32 trust
  parameters:
    unix_socket_directories: '{dir}'
    shared_buffers: 16MB
",
            name = node.name,
            api = node.api_port,
            pg = node.pg_port,
            data = node.data_dir.display(),
            bin = self.setup.pg_bin.display(),
        );
        fs::write(&node.config, config)
            .unwrap_or_else(|e| panic!("write {}: {e}", node.config.display()));
    }

    fn spawn(&mut self, i: usize) {
        let node = &self.nodes[i];
        let log = File::create(&node.log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", node.log_path.display()));
        let log_err = log.try_clone().expect("clone log file");
        let mut cmd = Command::new(&self.setup.patroni);
        cmd.arg(&node.config)
            .current_dir(self.dir())
            .env("HOME", self.dir())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some(user) = &self.setup.run_as {
            cmd.uid(user.uid).gid(user.gid).env("USER", &user.name);
        }
        // SAFETY: the closure runs in the forked child before exec and makes one
        // async-signal-safe system call. It runs after the uid change, which would clear the
        // setting. The signal fires when the spawning thread exits: the test's own thread.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.setup.patroni));
        self.nodes[i].patroni = Some(child);
    }

    /// Fails if a Patroni that should be running has exited by itself.
    fn check_alive(&mut self) {
        for node in &mut self.nodes {
            if let Some(child) = node.patroni.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    node.patroni = None;
                    panic!("patroni {} exited by itself: {status}", node.name);
                }
            }
        }
    }

    /// `GET path` on node `i`'s REST API: its status code, or 0 when it does not answer.
    async fn rest_code(&self, i: usize, path: &str) -> u16 {
        http_get(self.nodes[i].api_port, path)
            .await
            .map_or(0, |(code, _)| code)
    }

    /// Waits until one of `candidates` answers 200 on `path`; returns its index.
    async fn wait_for(&mut self, path: &str, candidates: &[usize], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_alive();
            for &i in candidates {
                if self.rest_code(i, path).await == 200 {
                    return i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no node among {:?} answered 200 on {path} within {timeout:?}",
                candidates
                    .iter()
                    .map(|&i| &self.nodes[i].name)
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// SIGKILLs node `i`'s Patroni and reaps it; its PostgreSQL keeps running.
    fn kill_patroni(&mut self, i: usize) -> u32 {
        let mut child = self.nodes[i].patroni.take().expect("patroni is running");
        let pid = child.id();
        child.kill().expect("SIGKILL patroni");
        child.wait().expect("reap patroni");
        pid
    }

    /// Runs one SQL statement on node `i`'s PostgreSQL; returns psql's unaligned output.
    fn psql(&self, i: usize, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new(self.setup.pg_bin.join("psql"));
        cmd.args(["-h", "127.0.0.1", "-p", &self.nodes[i].pg_port.to_string()])
            .args(["-U", "postgres", "-d", "postgres"])
            .args(["-Atq", "-v", "ON_ERROR_STOP=1"])
            .args(["-c", sql])
            .env("PGCONNECT_TIMEOUT", "3")
            .env("PGOPTIONS", "-c statement_timeout=5000");
        match run_bounded(cmd, None)? {
            (true, out) => Ok(out.trim().to_string()),
            (false, out) => Err(format!("psql failed: {out}")),
        }
    }

    /// Runs `sql` on node `i` until it prints `want`.
    async fn wait_sql(&self, i: usize, sql: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.psql(i, sql);
            if got.as_deref() == Ok(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer {want:?} to {sql:?} within {timeout:?}; last: {got:?}",
                self.nodes[i].name
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn log_tail(&self, i: usize) -> String {
        let Ok(file) = File::open(&self.nodes[i].log_path) else {
            return String::from("(no log)");
        };
        let all: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
        all[all.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }
}

/// Whether `pid` is a live (not zombie) process whose command line names postgres.
fn postmaster_alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    !state.is_some_and(|s| s.starts_with('Z'))
        && String::from_utf8_lossy(&cmdline).contains("postgres")
}

/// Stops the postmaster of `data_dir`, if one runs: SIGQUIT (immediate shutdown, which takes its
/// children along), then SIGKILL after [`STOP_GRACE`].
fn stop_postmaster(data_dir: &Path) {
    let Some(pid) = fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next()?.trim().parse::<i32>().ok())
    else {
        return;
    };
    if !postmaster_alive(pid) {
        return;
    }
    // SAFETY: kill has no memory-safety preconditions; the pid is a postgres (checked above).
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    let deadline = Instant::now() + STOP_GRACE;
    while postmaster_alive(pid) {
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            eprintln!("postmaster {pid} ignored SIGQUIT; sent SIGKILL");
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for PatroniPair {
    fn drop(&mut self) {
        // Patroni first, so that none restarts the postgres stopped next.
        for node in &mut self.nodes {
            if let Some(mut child) = node.patroni.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        for node in &self.nodes {
            stop_postmaster(&node.data_dir);
        }
        if std::thread::panicking() {
            for (i, node) in self.nodes.iter().enumerate() {
                eprintln!(
                    "===== patroni {} log (last {LOG_TAIL_LINES} lines) =====",
                    node.name
                );
                eprintln!("{}", self.log_tail(i));
            }
            if let Some(dir) = self.dir.take() {
                eprintln!("patroni data and logs kept in {}", dir.keep().display());
            }
        }
    }
}

/// The value of `key` on the cluster's node 0, or `None` when the key is absent.
async fn read_key(cluster: &TestCluster, key: &str) -> Option<String> {
    let request = RangeRequest {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    };
    let mut kv = cluster.kv(0);
    let response = tokio::time::timeout(RPC_TIMEOUT, kv.range(request))
        .await
        .unwrap_or_else(|_| panic!("Range {key} timed out"))
        .unwrap_or_else(|status| panic!("Range {key}: {status}"))
        .into_inner();
    response
        .kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_is_promoted_when_the_primarys_patroni_is_killed() {
    let setup = match setup() {
        Ok(setup) => setup,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let started = Instant::now();
    let elapsed = || format!("{:.1}s", started.elapsed().as_secs_f64());
    let cluster = TestCluster::start(1).await;
    let client_port = cluster.spec(0).client_port;
    eprintln!(
        "[{}] {:?} (one node) serves the etcd API on 127.0.0.1:{client_port}; starting `{}` \
         with {} as {}",
        elapsed(),
        cluster.backend(),
        setup.patroni,
        setup.pg_bin.display(),
        setup
            .run_as
            .as_ref()
            .map_or("the current user".into(), |u| format!("user {}", u.name)),
    );
    let mut pair = PatroniPair::start(setup, client_port);
    eprintln!(
        "[{}] patroni data and logs in {}",
        elapsed(),
        pair.dir().display()
    );

    let primary = pair.wait_for("/primary", &[0, 1], PRIMARY_TIMEOUT).await;
    let replica = 1 - primary;
    let (primary_name, replica_name) = (
        pair.nodes[primary].name.clone(),
        pair.nodes[replica].name.clone(),
    );
    eprintln!("[{}] {primary_name} is the primary", elapsed());
    pair.wait_for("/replica", &[replica], REPLICA_TIMEOUT).await;
    eprintln!("[{}] {replica_name} is a replica", elapsed());
    let leader_key = format!("/service/{SCOPE}/leader");
    assert_eq!(
        read_key(&cluster, &leader_key).await.as_deref(),
        Some(primary_name.as_str()),
        "the leader key in the DCS names the primary"
    );

    // A row written on the primary must stream to the replica (and survive the failover).
    pair.psql(
        primary,
        "CREATE TABLE failover_check (v text); \
         INSERT INTO failover_check VALUES ('written on the first primary')",
    )
    .unwrap_or_else(|e| panic!("write on {primary_name}: {e}"));
    pair.wait_sql(
        replica,
        "SELECT v FROM failover_check",
        "written on the first primary",
        REPLICATION_TIMEOUT,
    )
    .await;
    eprintln!("[{}] the replica streams from the primary", elapsed());

    let killed_at = Instant::now();
    let pid = pair.kill_patroni(primary);
    eprintln!(
        "[{}] SIGKILLed {primary_name}'s patroni (pid {pid}); its postgres keeps running; \
         the leader key's lease (ttl {TTL_S}s) must expire",
        elapsed()
    );
    pair.wait_for("/primary", &[replica], FAILOVER_TIMEOUT)
        .await;
    eprintln!(
        "[{}] {replica_name} is the primary, {:.1}s after the kill",
        elapsed(),
        killed_at.elapsed().as_secs_f64()
    );
    assert_eq!(
        read_key(&cluster, &leader_key).await.as_deref(),
        Some(replica_name.as_str()),
        "the leader key in the DCS names the new primary"
    );
    pair.wait_sql(
        replica,
        "SELECT pg_is_in_recovery()",
        "f",
        REPLICATION_TIMEOUT,
    )
    .await;
    assert_eq!(
        pair.psql(
            replica,
            "INSERT INTO failover_check VALUES ('written on the new primary'); \
             SELECT count(*) FROM failover_check"
        ),
        Ok("2".to_string()),
        "the promoted replica has the old primary's row and takes writes"
    );
    eprintln!(
        "[{}] {replica_name} is out of recovery, kept the data and takes writes",
        elapsed()
    );
}
