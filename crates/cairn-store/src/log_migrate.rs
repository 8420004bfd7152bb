//! Moving a Raft log that an earlier Cairn kept in one redb file (`raft.redb`) into the
//! write-ahead log directory, once, when a node starts on a data dir written before the change.
//!
//! The new log is built in `<dir>.migrating`, fsynced, and renamed to `<dir>` (the rename is the
//! commit point); only then is the redb file deleted. A crash before the rename leaves the redb
//! file in charge and the half-built directory is rebuilt next time; a crash after it leaves a
//! redb file that the next start deletes.

use crate::wal::{sync_dir, EncodedEntries, Wal, SEGMENT_BYTES_MAX};
use crate::{LogId, TypeConfig};
use openraft::alias::{EntryOf, VoteOf};
use redb::{ReadableDatabase, TableDefinition};
use std::io;
use std::path::{Path, PathBuf};

type Entry = EntryOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const KEY_VOTE: &str = "vote";
const KEY_COMMITTED: &str = "committed";
const KEY_LAST_PURGED: &str = "last_purged";
/// Entries copied per write while migrating.
const MIGRATE_BATCH_ENTRIES_MAX: usize = 1024;

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn parent(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What was moved.
#[derive(Debug, Default, PartialEq)]
pub struct Migrated {
    pub entries: u64,
    pub vote: bool,
}

/// Moves the log in the redb file `legacy` into the log directory `dir`, unless `legacy` does
/// not exist; then deletes `legacy`. Returns what was moved (None when there was nothing to do).
pub fn migrate_redb_log(legacy: &Path, dir: &Path) -> io::Result<Option<Migrated>> {
    if !legacy.exists() {
        return Ok(None);
    }
    if dir.exists() {
        // Moved before; the crash came before the old file was deleted.
        std::fs::remove_file(legacy)?;
        sync_dir(&parent(legacy))?;
        return Ok(None);
    }
    let building = PathBuf::from(format!("{}.migrating", dir.display()));
    if building.exists() {
        std::fs::remove_dir_all(&building)?;
    }
    let db = redb::Database::open(legacy).map_err(io_err)?;
    let txn = db.begin_read().map_err(io_err)?;
    let meta = txn.open_table(META).map_err(io_err)?;
    let get = |key: &str| -> io::Result<Option<Vec<u8>>> {
        Ok(meta.get(key).map_err(io_err)?.map(|v| v.value().to_vec()))
    };
    let vote: Option<Vote> = match get(KEY_VOTE)? {
        Some(b) => Some(postcard::from_bytes(&b).map_err(io_err)?),
        None => None,
    };
    let committed: Option<LogId> = match get(KEY_COMMITTED)? {
        Some(b) => postcard::from_bytes(&b).map_err(io_err)?,
        None => None,
    };
    let last_purged: Option<LogId> = match get(KEY_LAST_PURGED)? {
        Some(b) => postcard::from_bytes(&b).map_err(io_err)?,
        None => None,
    };
    let (mut wal, _) = Wal::open(&building, SEGMENT_BYTES_MAX)?;
    if let Some(v) = vote {
        wal.save_vote(v)?;
    }
    if let Some(p) = last_purged {
        wal.purge(p)?;
    }
    let mut moved = Migrated {
        entries: 0,
        vote: vote.is_some(),
    };
    let log = txn.open_table(LOG).map_err(io_err)?;
    let first = last_purged.map_or(0, |p| p.index + 1);
    let mut batch = EncodedEntries::with_capacity(MIGRATE_BATCH_ENTRIES_MAX);
    for item in log.range(first..).map_err(io_err)? {
        let (_, v) = item.map_err(io_err)?;
        let bytes = v.value();
        let entry: Entry = postcard::from_bytes(bytes).map_err(io_err)?;
        batch.push_encoded(entry.log_id, bytes);
        if batch.len() == MIGRATE_BATCH_ENTRIES_MAX {
            wal.append(&batch)?;
            wal.sync(false)?;
            moved.entries += batch.len() as u64;
            batch.clear();
        }
    }
    moved.entries += batch.len() as u64;
    wal.append(&batch)?;
    wal.commit_marker(&committed)?;
    wal.sync(true)?;
    drop(wal);
    drop(log);
    drop(meta);
    drop(txn);
    drop(db);
    sync_dir(&building)?;
    std::fs::rename(&building, dir)?;
    sync_dir(&parent(dir))?;
    std::fs::remove_file(legacy)?;
    sync_dir(&parent(legacy))?;
    tracing::info!(
        entries = moved.entries,
        from = %legacy.display(),
        to = %dir.display(),
        "raft log moved from redb to the write-ahead log"
    );
    Ok(Some(moved))
}
