//! `cairn ctl snapshot save FILE`: downloads a backup of one member's state (etcd's
//! `Maintenance.Snapshot`) into FILE, checks its SHA-256, and renames it into place only then.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn_client::EtcdClient;
use cairn_proto::etcdserverpb::SnapshotRequest;
use clap::Subcommand;
use serde::Serialize;

use super::output::{print_json, OutputFormat};
use super::CtlError;

/// Longest wait for the next chunk of a download before it is given up.
const SNAPSHOT_CHUNK_WAIT: Duration = Duration::from_secs(60);

/// `cairn ctl snapshot` verbs.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Save a backup of the first endpoint's state to FILE (restore it with
    /// `cairn snapshot restore FILE --data-dir D`).
    Save {
        /// Where to write the backup; written to FILE.part first and renamed when whole.
        file: PathBuf,
    },
}

#[derive(Serialize)]
struct SavedJson {
    file: String,
    endpoint: String,
    bytes: usize,
    revision: i64,
    keys: usize,
    sha256: String,
}

pub async fn run(
    client: &EtcdClient,
    out: OutputFormat,
    command: SnapshotCommand,
) -> Result<(), CtlError> {
    match command {
        SnapshotCommand::Save { file } => save(client, out, &file).await,
    }
}

async fn save(client: &EtcdClient, out: OutputFormat, file: &Path) -> Result<(), CtlError> {
    let endpoint = client.preferred_endpoint().to_string();
    let failed =
        |what: String| CtlError::Unexpected(format!("snapshot save from {endpoint}: {what}"));
    let mut stream = client
        .maintenance()
        .max_decoding_message_size(usize::MAX / 2)
        .snapshot(SnapshotRequest {})
        .await
        .map_err(|s| failed(s.message().to_string()))?
        .into_inner();
    let part = file.with_extension("part");
    let mut f = std::fs::File::create(&part)
        .map_err(|e| CtlError::Usage(format!("cannot create {}: {e}", part.display())))?;
    let mut bytes = Vec::new();
    loop {
        let next = tokio::time::timeout(SNAPSHOT_CHUNK_WAIT, stream.message())
            .await
            .map_err(|_| failed(format!("no data for {} s", SNAPSHOT_CHUNK_WAIT.as_secs())))?
            .map_err(|s| failed(s.message().to_string()))?;
        let Some(chunk) = next else { break };
        bytes.extend_from_slice(&chunk.blob);
    }
    let checked = cairn_store::backup::verify_backup(&bytes).map(|(_, s)| s);
    let summary = match checked {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            return Err(failed(e));
        }
    };
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&part, file))
        .map_err(|e| CtlError::Usage(format!("cannot write {}: {e}", file.display())))?;
    let saved = SavedJson {
        file: file.display().to_string(),
        endpoint,
        bytes: summary.bytes,
        revision: summary.revision,
        keys: summary.keys,
        sha256: summary.sha256,
    };
    match out {
        OutputFormat::Json => print_json(&saved),
        OutputFormat::Table => {
            println!(
                "Snapshot saved at {} ({} bytes, revision {}, {} keys, sha256 {}, from {})",
                saved.file, saved.bytes, saved.revision, saved.keys, saved.sha256, saved.endpoint
            );
            Ok(())
        }
    }
}
