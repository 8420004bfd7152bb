//! The `cairn` binary: parses arguments and hands off to the library code of each subcommand.

mod bench;
mod ctl;
mod playground;
mod serve;
mod sim;
mod snapshot;

use clap::{Parser, Subcommand};
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), String> = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve::run(*args).await,
            Command::Playground(args) => playground::run(args).await,
            Command::Ctl(args) => ctl::run(args).await.map_err(|e| e.to_string()),
            Command::Bench(args) => bench::run(args).await.map_err(|e| e.to_string()),
            Command::Sim(args) => sim::run(args).await,
            Command::Snapshot(args) => snapshot::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
