//! `cairn snapshot restore|status FILE`: offline work on a backup written by
//! `cairn ctl snapshot save` or `etcdctl snapshot save` (no cluster needed).
//!
//! `restore` builds the data directory of one member of a *new* cluster from the backup: the
//! backup's keys, revisions and leases; the members named by `--initial-cluster` (or this one
//! alone at `--listen-peer`); a new cluster id. Restore every member of the new cluster from the
//! same file with the same `--initial-cluster`, then start each with `cairn serve --data-dir D`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use cairn_server::ServerConfig;
use cairn_types::NodeAddrs;
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Build a member of a new cluster from a backup file.
    Restore {
        /// The backup (`cairn ctl snapshot save FILE` or `etcdctl snapshot save FILE`).
        file: PathBuf,
        /// The new member's data directory: must be empty or not exist.
        #[arg(long)]
        data_dir: PathBuf,
        /// This member's id in the new cluster.
        #[arg(long, default_value_t = 1)]
        node_id: u64,
        /// Voters of the new cluster, "1=HOST:PEERPORT,2=HOST:PEERPORT,…" (the same on every
        /// member). Default: this member alone, at --listen-peer.
        #[arg(long)]
        initial_cluster: Option<String>,
        /// This member's peer address when it is alone in the new cluster.
        #[arg(long, default_value = "127.0.0.1:4380")]
        listen_peer: String,
    },
    /// Check a backup's checksum and print what it holds.
    Status {
        /// The backup file.
        file: PathBuf,
    },
}

pub fn run(args: SnapshotArgs) -> Result<(), String> {
    match args.command {
        SnapshotCommand::Restore {
            file,
            data_dir,
            node_id,
            initial_cluster,
            listen_peer,
        } => {
            let members: Vec<(u64, String)> = match initial_cluster {
                Some(list) => ServerConfig::parse_initial_cluster(&list)?,
                None => vec![(node_id, listen_peer)],
            };
            let voters: BTreeMap<u64, NodeAddrs> = members
                .into_iter()
                .map(|(id, peer)| {
                    let addrs = NodeAddrs {
                        peer,
                        ..Default::default()
                    };
                    (id, addrs)
                })
                .collect();
            if voters.is_empty() {
                return Err("--initial-cluster: names no member".into());
            }
            let summary = cairn_server::run::restore_snapshot(&file, &data_dir, node_id, &voters)?;
            println!(
                "restored {} keys at revision {} (compacted at {}) from {} ({} bytes, sha256 {}) \
                 into {} as member {node_id} of a new cluster of {}; start it with: \
                 cairn serve --data-dir {}",
                summary.keys,
                summary.revision,
                summary.compact_revision,
                file.display(),
                summary.bytes,
                summary.sha256,
                data_dir.display(),
                voters.len(),
                data_dir.display(),
            );
            Ok(())
        }
        SnapshotCommand::Status { file } => {
            let bytes =
                std::fs::read(&file).map_err(|e| format!("reading {}: {e}", file.display()))?;
            let (_, s) = cairn_store::backup::verify_backup(&bytes)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            println!(
                "{}: checksum ok (sha256 {}), {} bytes, revision {}, compacted at {}, {} keys, \
                 taken at log index {}",
                file.display(),
                s.sha256,
                s.bytes,
                s.revision,
                s.compact_revision,
                s.keys,
                s.applied_index
            );
            Ok(())
        }
    }
}
