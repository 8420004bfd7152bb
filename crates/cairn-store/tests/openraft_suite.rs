//! openraft's storage conformance suite, run against Cairn's write-ahead log store and state machine.

use cairn_store::log_cache::CacheBounds;
use cairn_store::log_store::LogStore;
use cairn_store::mem_log_store::MemLogStore;
use cairn_store::{StateMachineStore, TypeConfig};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::StorageError;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = LogStore::open(&dir.path().join("raft-log")).expect("open log");
        let sm = StateMachineStore::open(&dir.path().join("snapshots")).expect("open sm");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_store_passes_openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder).await
}

/// The same store with segments of a few hundred bytes: every few entries start a new file, so
/// the suite's truncations and purges cross segment boundaries.
struct TinySegmentsBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir>
    for TinySegmentsBuilder
{
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        // And a cache of two entries: most reads take some entries from memory, the rest from
        // the files.
        let cache = CacheBounds {
            entries_max: 2,
            bytes_max: 1024,
        };
        let log = LogStore::open_with(&dir.path().join("raft-log"), 300, cache).expect("open log");
        let sm = StateMachineStore::open(&dir.path().join("snapshots")).expect("open sm");
        Ok((dir, log, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_store_with_tiny_segments_passes_openraft_storage_suite(
) -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(TinySegmentsBuilder).await
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, MemLogStore, StateMachineStore, tempfile::TempDir> for MemBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, MemLogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let sm = StateMachineStore::open(&dir.path().join("snapshots"))
            .expect("open sm")
            .with_inline_snapshot_work();
        Ok((dir, MemLogStore::default(), sm))
    }
}

/// The simulation's log (and its state machine doing snapshot work inline) meet the same contract.
#[tokio::test(flavor = "current_thread")]
async fn simulation_store_passes_openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(MemBuilder).await
}
