//! The `cairn` binary: parses arguments and hands off to the library code of each subcommand.

mod bench;
mod ctl;
mod playground;
mod serve;
mod sim;
mod snapshot;

use cairn_server::config::WORKER_THREADS_MAX;
use clap::{Parser, Subcommand};
use std::ffi::OsStr;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "cairn",
    version,
    about = "Cairn: the metadata service of a distributed database"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one Cairn node.
    Serve(Box<serve::ServeArgs>),
    /// Run a 3-node Cairn cluster on local ports (the main job on one machine).
    Playground(playground::PlaygroundArgs),
    /// Talk to a running cluster through the etcd v3 API and Cairn's admin API.
    Ctl(ctl::CtlArgs),
    /// Measure throughput and latency against any etcd v3 endpoints.
    Bench(bench::BenchArgs),
    /// Simulated datanodes and frontends heartbeating to a running cluster.
    Sim(sim::SimArgs),
    /// Offline work on backups: restore one into a new cluster's member, check one.
    Snapshot(snapshot::SnapshotArgs),
}

fn main() -> ExitCode {
    // Before any thread starts: large buffers mapped on their own, few arenas.
    cairn_server::memory::tune_allocator();
    let cli = Cli::parse();
    let result: Result<(), String> = match cli.command {
        // A node's settings are resolved first: they size its runtime.
        Command::Serve(args) => args.to_config().and_then(|config| {
            // On this thread before any other starts: they all inherit it.
            if let Err(e) = cairn_server::cpu_policy::apply(config.cpu_policy) {
                eprintln!(
                    "warning: cpu-policy {} could not be set ({e}); the threads keep the \
                     inherited policy",
                    config.cpu_policy
                );
            }
            let sharing = config.members_on_this_host();
            runtime(config.worker_threads, sharing)?.block_on(serve::run(config))
        }),
        Command::Playground(args) => {
            runtime(0, 1).and_then(|rt| rt.block_on(playground::run(args)))
        }
        Command::Ctl(args) => {
            runtime(0, 1).and_then(|rt| rt.block_on(ctl::run(args)).map_err(|e| e.to_string()))
        }
        Command::Bench(args) => {
            runtime(0, 1).and_then(|rt| rt.block_on(bench::run(args)).map_err(|e| e.to_string()))
        }
        Command::Sim(args) => runtime(0, 1).and_then(|rt| rt.block_on(sim::run(args))),
        Command::Snapshot(args) => {
            runtime(0, 1).and_then(|rt| rt.block_on(async { snapshot::run(args) }))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// The variable tokio reads for its worker count when none is configured.
const WORKER_THREADS_ENV: &str = "TOKIO_WORKER_THREADS";

/// The async runtime, with `configured` worker threads (0: see [`worker_threads`]), for a
/// process that shares its host's cores with `sharing - 1` other Cairn nodes.
fn runtime(configured: usize, sharing: usize) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let env = std::env::var_os(WORKER_THREADS_ENV);
    if let Some(n) = worker_threads(configured, env.as_deref(), cores, sharing)? {
        builder.worker_threads(n);
    }
    builder
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Worker threads: `configured` unless 0, else `TOKIO_WORKER_THREADS` when set (checked here,
/// where tokio would panic on a bad value), else the process's share of the `cores` it may use
/// when `sharing` nodes run on this host (at least one), else `None`: tokio's one per core.
/// Nodes that share a host share its cores: a worker each per core would have every node wake
/// threads that find the cores taken (BENCHMARKS.md, issue 12).
fn worker_threads(
    configured: usize,
    env: Option<&OsStr>,
    cores: usize,
    sharing: usize,
) -> Result<Option<usize>, String> {
    if configured > 0 {
        return Ok(Some(configured));
    }
    let Some(value) = env else {
        return Ok((sharing > 1).then(|| (cores / sharing).max(1)));
    };
    match value.to_str().and_then(|s| s.trim().parse::<usize>().ok()) {
        Some(n) if (1..=WORKER_THREADS_MAX).contains(&n) => Ok(Some(n)),
        _ => Err(format!(
            "{WORKER_THREADS_ENV}: must be a whole number from 1 to {WORKER_THREADS_MAX} \
             (worker_threads_max), got {value:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_come_from_the_setting_then_the_environment() {
        let env = |s: &str| Some(OsStr::new(s).to_owned());
        assert_eq!(worker_threads(3, env("5").as_deref(), 8, 3), Ok(Some(3)));
        assert_eq!(worker_threads(0, env("5").as_deref(), 8, 3), Ok(Some(5)));
        assert_eq!(worker_threads(0, env(" 1 ").as_deref(), 8, 1), Ok(Some(1)));
        assert_eq!(worker_threads(0, None, 8, 1), Ok(None));
        for bad in ["0", "-1", "two", "", "1025"] {
            let err = worker_threads(0, env(bad).as_deref(), 8, 1).unwrap_err();
            assert!(
                err.starts_with("TOKIO_WORKER_THREADS: must be a whole number from 1 to 1024"),
                "{err}"
            );
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn nodes_sharing_a_host_share_its_cores() {
        // Three nodes on two cores: one worker each; on 16 cores, five.
        assert_eq!(worker_threads(0, None, 2, 3), Ok(Some(1)));
        assert_eq!(worker_threads(0, None, 16, 3), Ok(Some(5)));
        assert_eq!(worker_threads(0, None, 16, 2), Ok(Some(8)));
        // A node alone keeps tokio's default; a setting or the variable still wins.
        assert_eq!(worker_threads(0, None, 16, 1), Ok(None));
        assert_eq!(worker_threads(4, None, 2, 3), Ok(Some(4)));
        let two = Some(OsStr::new("2").to_owned());
        assert_eq!(worker_threads(0, two.as_deref(), 2, 3), Ok(Some(2)));
    }
}
