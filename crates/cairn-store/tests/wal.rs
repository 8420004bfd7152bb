//! The Raft log's files: what survives a reopen, a torn write, corruption, truncation, purging,
//! and the move from the redb file an earlier Cairn kept.

use cairn_store::log_migrate::{migrate_redb_log, Migrated};
use cairn_store::wal::{EncodedEntries, Wal};
use cairn_store::{Command, LogId, TypeConfig};
use openraft::alias::{EntryOf, VoteOf};
use openraft::vote::RaftLeaderIdExt;
use openraft::EntryPayload;
use std::ops::Bound;
use std::path::{Path, PathBuf};

type Entry = EntryOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// Small segments, so that a few dozen entries span several.
const SMALL_SEGMENT: u64 = 512;

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(
        <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(term, 1),
        index,
    )
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Command::Txn(
            vec![index as u8; 40 + index as usize % 7].into(),
        )),
    }
}

fn encoded(entries: &[Entry]) -> EncodedEntries {
    let mut out = EncodedEntries::default();
    for e in entries {
        out.push(e).unwrap();
    }
    out
}

/// Appends entries `from..=to` of `term` in batches of 4, synced.
fn append(wal: &mut Wal, term: u64, from: u64, to: u64) {
    let all: Vec<Entry> = (from..=to).map(|i| entry(term, i)).collect();
    for chunk in all.chunks(4) {
        wal.append(&encoded(chunk)).unwrap();
        wal.sync(true).unwrap();
    }
}

fn all_entries(wal: &Wal) -> Vec<(u64, u64)> {
    wal.reader()
        .read((Bound::Unbounded, Bound::Unbounded))
        .unwrap()
        .iter()
        .map(|e| (e.log_id.leader_id.term, e.log_id.index))
        .collect()
}

fn segments(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    names
}

/// Where a segment's records end: its last byte that is not a zero written ahead (every test
/// entry ends with a byte of its index, never 0).
fn records_end(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(0, |i| i as u64 + 1)
}

/// Where each record of the segment at `path` starts: a record is its length (u32) and
/// checksum (u32), then that many bytes.
fn record_starts(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap();
    let mut starts = Vec::new();
    let mut at = 0usize;
    while let Some(len) = bytes.get(at..at + 4) {
        starts.push(at as u64);
        at += 8 + u32::from_le_bytes(len.try_into().unwrap()) as usize;
    }
    starts
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn zero(path: &Path, from: u64, to: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&vec![0; (to - from) as usize], from)
        .unwrap();
}

/// A log of entries 1..=11 of term 1, closed, in one segment of 1 MiB; and that segment's path.
fn eleven_entries_in_one_segment() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = Wal::open(dir.path(), 1 << 20).unwrap();
        append(&mut wal, 1, 1, 11);
    }
    let newest = dir.path().join(segments(dir.path()).pop().unwrap());
    (dir, newest)
}

fn terms(term: u64, from: u64, to: u64) -> Vec<(u64, u64)> {
    (from..=to).map(|i| (term, i)).collect()
}

#[test]
fn entries_vote_and_commit_marker_survive_a_reopen_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, recovered) = Wal::open(dir.path(), SMALL_SEGMENT).unwrap();
        assert_eq!(recovered.meta.vote, None);
        append(&mut wal, 2, 1, 50);
        wal.save_vote(Vote::new(3, 2)).unwrap();
        wal.commit_marker(&Some(log_id(2, 40))).unwrap();
        wal.sync(true).unwrap();
        assert_eq!(all_entries(&wal), terms(2, 1, 50));
    }
    assert!(
        segments(dir.path()).len() >= 4,
        "{:?}",
        segments(dir.path())
    );
    let (wal, recovered) = Wal::open(dir.path(), SMALL_SEGMENT).unwrap();
    assert_eq!(recovered.meta.vote, Some(Vote::new(3, 2)));
    assert_eq!(recovered.committed, Some(log_id(2, 40)));
    assert_eq!(recovered.torn_bytes, 0);
    assert_eq!(all_entries(&wal), terms(2, 1, 50));
    assert_eq!(wal.reader().last(), Some(log_id(2, 50)));
    let some = wal
        .reader()
        .read((Bound::Included(17), Bound::Excluded(20)))
        .unwrap();
    assert_eq!(some, vec![entry(2, 17), entry(2, 18), entry(2, 19)]);
}

#[test]
fn a_torn_write_at_the_end_is_cut_off_and_the_log_goes_on_from_there() {
    let (dir, newest) = eleven_entries_in_one_segment();
    // The last record lost its final bytes, as if the machine died mid-write: they are still the
    // zeroes written ahead of the records.
    let end = records_end(&newest);
    zero(&newest, end - 3, end);
    {
        let (mut wal, recovered) = Wal::open(dir.path(), 1 << 20).unwrap();
        assert!(recovered.torn_bytes > 0);
        assert_eq!(all_entries(&wal), terms(1, 1, 10));
        append(&mut wal, 2, 11, 12);
    }
    let (wal, recovered) = Wal::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovered.torn_bytes, 0);
    let mut want = terms(1, 1, 10);
    want.extend(terms(2, 11, 12));
    assert_eq!(all_entries(&wal), want);
}

#[test]
fn a_write_that_reached_the_disk_only_past_a_gap_is_cut_off_too() {
    let (dir, newest) = eleven_entries_in_one_segment();
    // Entry 11's record lost its first page but not what follows it: zeroes, then bytes.
    let end = records_end(&newest);
    // A record: length and checksum (8 bytes), its kind (1), the entry.
    let entry_11 = 9 + postcard::to_allocvec(&entry(1, 11)).unwrap().len() as u64;
    zero(&newest, end - entry_11, end - 4);
    let (wal, recovered) = Wal::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovered.torn_bytes, (1 << 20) - (end - entry_11));
    assert_eq!(file_len(&newest), end - entry_11);
    assert_eq!(all_entries(&wal), terms(1, 1, 10));
}

#[test]
fn zeroes_are_written_ahead_of_the_newest_segment_and_closed_segments_are_cut_to_their_records() {
    let (dir, newest) = eleven_entries_in_one_segment();
    assert_eq!(
        file_len(&newest),
        1 << 20,
        "written ahead to the segment size"
    );
    assert!(records_end(&newest) < 2048);
    {
        // The zeroes are space, not a torn write, and the next records go where the last ended.
        let (mut wal, recovered) = Wal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(recovered.torn_bytes, 0);
        assert_eq!(all_entries(&wal), terms(1, 1, 11));
        append(&mut wal, 1, 12, 20);
    }
    let (wal, recovered) = Wal::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovered.torn_bytes, 0);
    assert_eq!(all_entries(&wal), terms(1, 1, 20));
    drop(wal);

    // Small segments: every closed one holds exactly its records, the newest a whole number of
    // segment sizes.
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), SMALL_SEGMENT).unwrap();
    append(&mut wal, 1, 1, 50);
    let mut names = segments(dir.path());
    let newest = dir.path().join(names.pop().unwrap());
    assert!(names.len() >= 3, "{names:?}");
    for name in names {
        let path = dir.path().join(name);
        assert_eq!(file_len(&path), records_end(&path), "{}", path.display());
    }
    assert_eq!(file_len(&newest) % SMALL_SEGMENT, 0);
    assert!(file_len(&newest) > records_end(&newest));
}

#[test]
fn corruption_before_the_newest_segment_refuses_to_open_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = Wal::open(dir.path(), SMALL_SEGMENT).unwrap();
        append(&mut wal, 1, 1, 40);
    }
    let first = segments(dir.path()).remove(0);
    let path = dir.path().join(&first);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let err = Wal::open(dir.path(), SMALL_SEGMENT).err().expect("refused");
    let msg = err.to_string();
    assert!(msg.contains(&first) && msg.contains("corrupt"), "{msg}");
    // Nothing was cut: the file is as it was.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);

    // Zeroes where a closed segment's last records were are lost records, not space written
    // ahead (a closed segment is cut to its records); a wholly zeroed one is not taken for a
    // purged one and deleted.
    let starts = record_starts(&path);
    assert!(starts.len() > 2);
    for from in [starts[starts.len() - 2], 0] {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, _) = Wal::open(dir.path(), SMALL_SEGMENT).unwrap();
            append(&mut wal, 1, 1, 40);
        }
        let path = dir.path().join(&first);
        zero(&path, from, file_len(&path));
        let err = Wal::open(dir.path(), SMALL_SEGMENT).err().expect("refused");
        let msg = err.to_string();
        assert!(msg.contains(&first) && msg.contains("zeroes"), "{msg}");
        assert!(path.exists());
    }
}

#[test]
fn truncation_replaces_the_tail_and_stays_replaced_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = Wal::open(dir.path(), SMALL_SEGMENT).unwrap();
        append(&mut wal, 1, 1, 30);
        wal.truncate(12).unwrap();
        assert_eq!(all_entries(&wal), terms(1, 1, 11));
        assert_eq!(wal.reader().last(), Some(log_id(1, 11)));
        append(&mut wal, 3, 12, 15);
    }
    let (wal, _) = Wal::open(dir.path(), SMALL_SEGMENT).unwrap();
    let mut want = terms(1, 1, 11);
    want.extend(terms(3, 12, 15));
    assert_eq!(all_entries(&wal), want);
    // Truncating everything leaves an empty log that takes entries from the start again.
    drop(wal);
    let (mut wal, _) = Wal::open(dir.path(), SMALL_SEGMENT).unwrap();
    wal.truncate(1).unwrap();
    assert_eq!(wal.reader().last(), None);
    append(&mut wal, 4, 1, 2);
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), SMALL_SEGMENT).unwrap();
    assert_eq!(all_entries(&wal), terms(4, 1, 2));
}

#[test]
fn an_append_that_does_not_follow_the_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(dir.path(), SMALL_SEGMENT).unwrap();
    append(&mut wal, 1, 1, 5);
    let err = wal.append(&encoded(&[entry(1, 7)])).unwrap_err();
    assert!(err.to_string().contains("entry 6 is due"), "{err}");
    assert_eq!(all_entries(&wal), terms(1, 1, 5));
}

#[test]
fn purging_deletes_whole_segments_and_is_remembered() {
    let dir = tempfile::tempdir().unwrap();
    let before;
    {
        let (mut wal, _) = Wal::open(dir.path(), SMALL_SEGMENT).unwrap();
        append(&mut wal, 1, 1, 40);
        before = segments(dir.path()).len();
        wal.purge(log_id(1, 25)).unwrap();
        assert_eq!(all_entries(&wal), terms(1, 26, 40));
    }
    assert!(segments(dir.path()).len() < before);
    let (wal, recovered) = Wal::open(dir.path(), SMALL_SEGMENT).unwrap();
    assert_eq!(recovered.meta.last_purged, Some(log_id(1, 25)));
    assert_eq!(all_entries(&wal), terms(1, 26, 40));
    let purged = wal
        .reader()
        .read((Bound::Included(1), Bound::Included(25)))
        .unwrap();
    assert!(purged.is_empty());
}

#[test]
fn after_a_purge_past_the_end_the_log_starts_again_further_on() {
    // As after installing a snapshot beyond the follower's log.
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut wal, _) = Wal::open(dir.path(), SMALL_SEGMENT).unwrap();
        append(&mut wal, 1, 1, 5);
        wal.purge(log_id(2, 100)).unwrap();
        assert_eq!(wal.reader().last(), None);
        append(&mut wal, 2, 101, 103);
    }
    let (wal, recovered) = Wal::open(dir.path(), SMALL_SEGMENT).unwrap();
    assert_eq!(recovered.meta.last_purged, Some(log_id(2, 100)));
    assert_eq!(all_entries(&wal), terms(2, 101, 103));
    assert_eq!(segments(dir.path()), vec![format!("{:020}.wal", 101)]);
}

#[test]
fn a_log_kept_in_redb_by_an_earlier_cairn_is_moved_once_and_nothing_is_lost() {
    use redb::TableDefinition;
    const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
    const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
    let data = tempfile::tempdir().unwrap();
    let legacy = data.path().join("raft.redb");
    let dir = data.path().join("raft-log");
    {
        let db = redb::Database::create(&legacy).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut log = txn.open_table(LOG).unwrap();
            for i in 4..=20 {
                let bytes = postcard::to_allocvec(&entry(2, i)).unwrap();
                log.insert(i, bytes.as_slice()).unwrap();
            }
            let mut meta = txn.open_table(META).unwrap();
            let vote = postcard::to_allocvec(&Vote::new(5, 3)).unwrap();
            meta.insert("vote", vote.as_slice()).unwrap();
            let committed = postcard::to_allocvec(&Some(log_id(2, 18))).unwrap();
            meta.insert("committed", committed.as_slice()).unwrap();
            let purged = postcard::to_allocvec(&Some(log_id(1, 3))).unwrap();
            meta.insert("last_purged", purged.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let moved = migrate_redb_log(&legacy, &dir).unwrap();
    assert_eq!(
        moved,
        Some(Migrated {
            entries: 17,
            vote: true
        })
    );
    assert!(!legacy.exists());
    let (wal, recovered) = Wal::open(&dir, SMALL_SEGMENT).unwrap();
    assert_eq!(recovered.meta.vote, Some(Vote::new(5, 3)));
    assert_eq!(recovered.meta.last_purged, Some(log_id(1, 3)));
    assert_eq!(recovered.committed, Some(log_id(2, 18)));
    assert_eq!(all_entries(&wal), terms(2, 4, 20));
    drop(wal);
    // A second start finds nothing to move and leaves the log alone.
    assert_eq!(migrate_redb_log(&legacy, &dir).unwrap(), None);
    let (wal, _) = Wal::open(&dir, SMALL_SEGMENT).unwrap();
    assert_eq!(all_entries(&wal), terms(2, 4, 20));
}
