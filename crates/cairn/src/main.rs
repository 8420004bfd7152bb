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
            runtime(config.worker_threads)?.block_on(serve::run(config))
        }),
        Command::Playground(args) => runtime(0).and_then(|rt| rt.block_on(playground::run(args))),
        Command::Ctl(args) => {
            runtime(0).and_then(|rt| rt.block_on(ctl::run(args)).map_err(|e| e.to_string()))
        }
        Command::Bench(args) => {
            runtime(0).and_then(|rt| rt.block_on(bench::run(args)).map_err(|e| e.to_string()))
        }
        Command::Sim(args) => runtime(0).and_then(|rt| rt.block_on(sim::run(args))),
        Command::Snapshot(args) => {
            runtime(0).and_then(|rt| rt.block_on(async { snapshot::run(args) }))
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

/// The async runtime, with `configured` worker threads (0: see [`worker_threads`]).
fn runtime(configured: usize) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = worker_threads(configured, std::env::var_os(WORKER_THREADS_ENV).as_deref())? {
        builder.worker_threads(n);
    }
    builder
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

/// Worker threads: `configured` unless 0, else `TOKIO_WORKER_THREADS` when set (checked here,
/// where tokio would panic on a bad value), else `None`: tokio's one per core the process may use.
fn worker_threads(configured: usize, env: Option<&OsStr>) -> Result<Option<usize>, String> {
    if configured > 0 {
        return Ok(Some(configured));
    }
    let Some(value) = env else {
        return Ok(None);
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
        assert_eq!(worker_threads(3, env("5").as_deref()), Ok(Some(3)));
        assert_eq!(worker_threads(0, env("5").as_deref()), Ok(Some(5)));
        assert_eq!(worker_threads(0, env(" 1 ").as_deref()), Ok(Some(1)));
        assert_eq!(worker_threads(0, None), Ok(None));
        for bad in ["0", "-1", "two", "", "1025"] {
            let err = worker_threads(0, env(bad).as_deref()).unwrap_err();
            assert!(
                err.starts_with("TOKIO_WORKER_THREADS: must be a whole number from 1 to 1024"),
                "{err}"
            );
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
    }
}
