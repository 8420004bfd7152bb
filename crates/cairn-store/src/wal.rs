//! The Raft log's files: an append-only write-ahead log in segments beside a small metadata file.
//!
//! In the log directory:
//! - `<first index, 20 digits>.wal`: segments, named by the index of the first entry written to
//!   them (zero-padded, so names sort by index). A segment is a run of records
//!   `[body length u32 LE][CRC-32C of body u32 LE][body]`, the body `[kind u8][postcard payload]`:
//!   a log entry, or a commit marker (a restart hint that may lag). Only the newest segment is
//!   written; a new one starts once it holds [`SEGMENT_BYTES_MAX`] bytes (or when the next entry
//!   does not follow its last, after a snapshot was installed past the log's end).
//! - `meta`: the vote and the last purged log id, `[CRC-32C u32 LE][postcard]`, replaced whole:
//!   written to `meta.tmp`, fsynced, renamed over `meta`, the directory fsynced.
//!
//! A group commit is one `pwrite` of all its records at the newest segment's end and one
//! `fdatasync` (redb's B-tree commit wrote ~8 scattered pages per fsync). The newest segment's
//! file is kept ahead of its records by zeroes written [`SEGMENT_PREALLOC_BYTES`] at a time, so
//! that a group commit writes within the file's size and its `fdatasync` flushes the records
//! alone: a write that grows the file also dirties its inode and block map, and on ext4 those
//! are two more synchronous writes per sync. A segment is cut to its records when it is closed.
//! Truncation cuts the segment that holds the first removed entry (`set_len`, fsynced) after
//! deleting every later segment, newest first, so that a crash in between leaves a prefix.
//! Purging records the new last purged id in `meta` first and then deletes the segments wholly
//! before it.
//!
//! Opening recovers: segments wholly purged are deleted, every record is checked, zeroes after
//! the last record are space written ahead (kept), a torn or corrupt tail of the newest segment
//! (a write a crash cut short, never acknowledged) is cut off, and corruption anywhere else, or
//! entries that do not follow each other, refuse the open with the file and offset named.

use crate::crc::Crc32c;
use crate::{LogId, TypeConfig};
use openraft::alias::{EntryOf, VoteOf};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

type Entry = EntryOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// Size at which the newest segment is closed and the next group commit starts a new one.
pub const SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Largest record body a segment may hold; a length above it can only be corruption.
pub const RECORD_BYTES_MAX: u32 = 256 * 1024 * 1024;
/// Most bytes one read of stored entries fetches with a single `pread`.
pub const READ_SPAN_BYTES_MAX: u64 = 1024 * 1024;
/// How far ahead of its records the newest segment's file is zero-filled, at a time (or the
/// segment size, if smaller): a group commit grows the file, and pays for the inode and block-map
/// writes in its sync, once per this many bytes instead of every time (an `fdatasync` after a
/// write that grew the file took 192–247 µs here, one within the file 127–140 µs, BENCHMARKS.md).
pub const SEGMENT_PREALLOC_BYTES: u64 = 1024 * 1024;

const HEADER_BYTES: usize = 8;
const KIND_ENTRY: u8 = 1;
const KIND_COMMITTED: u8 = 2;
const META_FILE: &str = "meta";
const META_TMP_FILE: &str = "meta.tmp";
const SEGMENT_SUFFIX: &str = ".wal";

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn corrupt(path: &Path, offset: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "raft log {} is corrupt at byte {offset}: {what}",
            path.display()
        ),
    )
}

/// What `meta` holds.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WalMeta {
    pub vote: Option<Vote>,
    pub last_purged: Option<LogId>,
}

/// What opening found besides the entries.
#[derive(Debug, Default)]
pub struct Recovered {
    pub meta: WalMeta,
    /// The newest commit marker still in the log.
    pub committed: Option<LogId>,
    /// Bytes cut off the newest segment's end: a torn write, and the zeroes written ahead of
    /// the records after it.
    pub torn_bytes: u64,
}

/// Where one entry's record lies.
#[derive(Clone, Copy, Debug)]
struct Loc {
    segment: u64,
    /// Offset of the record's body.
    offset: u64,
    len: u32,
}

/// Entries encoded for [`Wal::append`], one after another in one buffer (grown by doubling),
/// not a vector per entry (freed by the log writer, on its thread).
#[derive(Default)]
pub struct EncodedEntries {
    bytes: Vec<u8>,
    /// Each entry's id and where its encoding ends in `bytes`.
    ends: Vec<(LogId, usize)>,
}

impl EncodedEntries {
    /// Room for `entries` entries.
    pub fn with_capacity(entries: usize) -> Self {
        Self {
            bytes: Vec::new(),
            ends: Vec::with_capacity(entries),
        }
    }

    /// Encodes `entry` after the others; returns its encoded size.
    pub fn push(&mut self, entry: &Entry) -> io::Result<usize> {
        let size = crate::peer_wire::encode_into(entry, &mut self.bytes).map_err(io_err)?;
        self.ends.push((entry.log_id, self.bytes.len()));
        Ok(size)
    }

    /// Adds an entry already encoded.
    pub fn push_encoded(&mut self, log_id: LogId, encoded: &[u8]) {
        self.bytes.extend_from_slice(encoded);
        self.ends.push((log_id, self.bytes.len()));
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Forgets them all, keeping the room.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// The entries' ids, in order.
    pub fn ids(&self) -> impl Iterator<Item = &LogId> {
        self.ends.iter().map(|(id, _)| id)
    }

    fn iter(&self) -> impl Iterator<Item = (LogId, &[u8])> {
        let starts = std::iter::once(0).chain(self.ends.iter().map(|(_, end)| *end));
        self.ends
            .iter()
            .zip(starts)
            .map(|((id, end), start)| (*id, &self.bytes[start..*end]))
    }
}

/// The stored entries by index, shared by the writer and every reader.
#[derive(Default)]
struct Index {
    /// Index of `locs[0]`.
    first: u64,
    locs: VecDeque<Loc>,
    files: BTreeMap<u64, Arc<File>>,
    last: Option<LogId>,
}

impl Index {
    fn end(&self) -> u64 {
        self.first + self.locs.len() as u64
    }

    fn loc(&self, index: u64) -> Option<Loc> {
        let i = index.checked_sub(self.first)?;
        self.locs.get(usize::try_from(i).ok()?).copied()
    }
}

/// Reads stored entries; cloning shares the index.
#[derive(Clone)]
pub struct WalReader {
    index: Arc<RwLock<Index>>,
}

impl WalReader {
    /// The newest stored entry's id.
    pub fn last(&self) -> Option<LogId> {
        self.index.read().unwrap_or_else(|p| p.into_inner()).last
    }

    /// The stored entries in `range`, in order; indexes not stored are skipped.
    pub fn read(&self, range: (Bound<u64>, Bound<u64>)) -> io::Result<Vec<Entry>> {
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        let start = match range.0 {
            Bound::Included(s) => s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .max(index.first);
        let end = match range.1 {
            Bound::Included(e) => e.saturating_add(1),
            Bound::Excluded(e) => e,
            Bound::Unbounded => u64::MAX,
        }
        .min(index.end());
        let mut out = Vec::with_capacity(end.saturating_sub(start) as usize);
        let mut i = start;
        while i < end {
            // One pread for a run of records in one segment, up to READ_SPAN_BYTES_MAX.
            let Some(head) = index.loc(i) else { break };
            let mut run = vec![head];
            let mut j = i + 1;
            while j < end {
                let Some(next) = index.loc(j) else { break };
                if next.segment != head.segment
                    || next.offset + next.len as u64 - head.offset > READ_SPAN_BYTES_MAX
                {
                    break;
                }
                run.push(next);
                j += 1;
            }
            let tail = run[run.len() - 1];
            let span_start = head.offset - HEADER_BYTES as u64;
            let mut span = vec![0u8; (tail.offset + tail.len as u64 - span_start) as usize];
            let file = index
                .files
                .get(&head.segment)
                .ok_or_else(|| io_err(format!("raft log segment {} missing", head.segment)))?;
            file.read_exact_at(&mut span, span_start)?;
            for (k, loc) in run.iter().enumerate() {
                let at = (loc.offset - span_start) as usize;
                let crc = u32::from_le_bytes(span[at - 4..at].try_into().expect("4 bytes"));
                let body = &span[at..at + loc.len as usize];
                if Crc32c::of(body) != crc || body[0] != KIND_ENTRY {
                    return Err(io_err(format!(
                        "raft log segment {} is corrupt at byte {} (entry {})",
                        head.segment,
                        loc.offset,
                        i + k as u64
                    )));
                }
                out.push(postcard::from_bytes(&body[1..]).map_err(io_err)?);
            }
            i = j;
        }
        Ok(out)
    }
}

struct Segment {
    path: PathBuf,
    file: Arc<File>,
    /// Where its records end.
    len: u64,
    /// The file's size: `len`, or more when zeroes were written ahead of the records.
    allocated: u64,
    /// Index of the last entry in it, if any.
    last: Option<u64>,
}

/// The writer's side of the log; one owner (the log writer thread).
pub struct Wal {
    dir: PathBuf,
    segment_bytes_max: u64,
    segments: BTreeMap<u64, Segment>,
    meta: WalMeta,
    index: Arc<RwLock<Index>>,
    /// Records not written yet, for the newest segment, and where their entries will lie.
    buf: Vec<u8>,
    buf_locs: Vec<(LogId, Loc)>,
    /// Segments written since the last sync.
    unsynced: BTreeSet<u64>,
    /// Deletes purged segments off the writer's thread ([`Wal::purge`]); joined on drop.
    deleter: Option<(
        std::sync::mpsc::SyncSender<Segment>,
        std::thread::JoinHandle<()>,
    )>,
}

/// Purged segments waiting for the deleter thread; past it, the writer deletes them itself.
pub const PURGED_SEGMENTS_QUEUE_MAX: usize = 64;

/// Deletes a purged segment: the unlink, and the last close of its file that frees its blocks
/// (a 64 MiB segment took 106 ms once, BENCHMARKS.md). A failure leaves the file for the next
/// start, which deletes segments wholly before the last purged index.
fn delete_segment(seg: Segment) {
    if let Err(e) = std::fs::remove_file(&seg.path) {
        tracing::warn!(path = %seg.path.display(), "cannot delete a purged log segment: {e}");
    }
    drop(seg);
}

/// The deleter thread, or None (then purges delete inline) if it cannot be started.
fn start_deleter() -> Option<(
    std::sync::mpsc::SyncSender<Segment>,
    std::thread::JoinHandle<()>,
)> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Segment>(PURGED_SEGMENTS_QUEUE_MAX);
    let handle = std::thread::Builder::new()
        .name("cairn-log-deleter".into())
        .spawn(move || {
            while let Ok(seg) = rx.recv() {
                delete_segment(seg);
            }
        })
        .ok()?;
    Some((tx, handle))
}

impl Drop for Wal {
    /// Waits for purged segments still being deleted, so a closed log's files are final.
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.deleter.take() {
            drop(tx);
            let _ = handle.join();
        }
    }
}

fn segment_name(first: u64) -> String {
    format!("{first:020}{SEGMENT_SUFFIX}")
}

/// Makes `dir`'s entries (created, renamed, deleted files) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn push_record(buf: &mut Vec<u8>, kind: u8, payload: &[u8]) -> usize {
    let mut crc = Crc32c::new();
    crc.update(&[kind]);
    crc.update(payload);
    buf.extend_from_slice(&((payload.len() + 1) as u32).to_le_bytes());
    buf.extend_from_slice(&crc.finish().to_le_bytes());
    let body_at = buf.len();
    buf.push(kind);
    buf.extend_from_slice(payload);
    body_at
}

/// Writes zeroes over `from..to` of `file`.
fn write_zeroes(file: &File, from: u64, to: u64) -> io::Result<()> {
    static ZEROES: [u8; 64 * 1024] = [0; 64 * 1024];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROES.len() as u64);
        file.write_all_at(&ZEROES[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

/// One segment's records as read at open.
struct Scan {
    entries: Vec<(LogId, Loc)>,
    committed: Option<LogId>,
    /// Where the valid records end; shorter than the file when its tail is torn or written ahead.
    valid_len: u64,
    /// The file's size, when every byte after the records is a zero written ahead.
    zero_tail_to: Option<u64>,
    problem: Option<(u64, &'static str)>,
}

fn scan_segment(path: &Path, first: u64) -> io::Result<Scan> {
    let bytes = std::fs::read(path)?;
    let mut scan = Scan {
        entries: Vec::new(),
        committed: None,
        valid_len: 0,
        zero_tail_to: None,
        problem: None,
    };
    let mut at = 0usize;
    while at < bytes.len() {
        // Zeroes to the end are space written ahead of the records. No record's length is 0, so
        // at a record this stops within the first four bytes.
        let rest = &bytes[at..];
        if rest.iter().all(|b| *b == 0) {
            scan.zero_tail_to = Some(bytes.len() as u64);
            break;
        }
        if rest.len() < HEADER_BYTES {
            scan.problem = Some((at as u64, "a record header is cut short"));
            break;
        }
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        if len == 0 || len > RECORD_BYTES_MAX {
            scan.problem = Some((at as u64, "a record length is out of range"));
            break;
        }
        let body_at = at + HEADER_BYTES;
        let Some(body) = bytes.get(body_at..body_at + len as usize) else {
            scan.problem = Some((at as u64, "a record is cut short"));
            break;
        };
        if Crc32c::of(body) != crc {
            scan.problem = Some((at as u64, "a record's checksum does not match"));
            break;
        }
        match body[0] {
            KIND_ENTRY => {
                let entry: Entry = postcard::from_bytes(&body[1..])
                    .map_err(|e| corrupt(path, at as u64, &format!("an entry: {e}")))?;
                let loc = Loc {
                    segment: first,
                    offset: body_at as u64,
                    len,
                };
                scan.entries.push((entry.log_id, loc));
            }
            KIND_COMMITTED => {
                scan.committed = postcard::from_bytes(&body[1..])
                    .map_err(|e| corrupt(path, at as u64, &format!("a commit marker: {e}")))?;
            }
            _ => {
                scan.problem = Some((at as u64, "a record of unknown kind"));
                break;
            }
        }
        at = body_at + len as usize;
        scan.valid_len = at as u64;
    }
    Ok(scan)
}

impl Wal {
    /// Opens the log in `dir` (created if missing), recovering as the module describes.
    pub fn open(dir: &Path, segment_bytes_max: u64) -> io::Result<(Wal, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let meta = read_meta(dir)?;
        let purged_to = meta.last_purged.map(|p| p.index);
        let mut recovered = Recovered {
            meta: meta.clone(),
            ..Recovered::default()
        };
        let mut names: Vec<u64> = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let name = item?.file_name();
            let name = name.to_string_lossy();
            if let Some(first) = name.strip_suffix(SEGMENT_SUFFIX) {
                if let Ok(first) = first.parse::<u64>() {
                    names.push(first);
                }
            }
        }
        names.sort_unstable();
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segment_bytes_max,
            segments: BTreeMap::new(),
            meta,
            index: Arc::new(RwLock::new(Index::default())),
            buf: Vec::new(),
            buf_locs: Vec::new(),
            deleter: start_deleter(),
            unsynced: BTreeSet::new(),
        };
        let mut index = Index::default();
        let mut removed = false;
        for (n, first) in names.iter().copied().enumerate() {
            let newest = n + 1 == names.len();
            let path = dir.join(segment_name(first));
            let mut scan = scan_segment(&path, first)?;
            if let Some((offset, what)) = scan.problem {
                if !newest {
                    return Err(corrupt(&path, offset, what));
                }
                // A write a crash cut short: never acknowledged, so cut it off.
                let file = OpenOptions::new().write(true).open(&path)?;
                let size = file.metadata()?.len();
                file.set_len(scan.valid_len)?;
                file.sync_all()?;
                recovered.torn_bytes = size - scan.valid_len;
                tracing::warn!(
                    segment = %path.display(),
                    offset,
                    cut_bytes = recovered.torn_bytes,
                    "raft log: cut a torn write off the newest segment ({what})"
                );
            }
            if !newest && scan.zero_tail_to.is_some() {
                // A closed segment is cut to its records before the next one is made: zeroes
                // where records should be are lost records, not space written ahead.
                return Err(corrupt(
                    &path,
                    scan.valid_len,
                    "zeroes after the last record of a segment that is not the newest",
                ));
            }
            if scan.committed.is_some() {
                recovered.committed = scan.committed;
            }
            let last = scan.entries.last().map(|(id, _)| id.index);
            let wholly_purged = match (last, purged_to) {
                (Some(l), Some(p)) => l <= p,
                (None, _) => !newest,
                (Some(_), None) => false,
            };
            if wholly_purged {
                std::fs::remove_file(&path)?;
                removed = true;
                continue;
            }
            let file = Arc::new(OpenOptions::new().read(true).write(true).open(&path)?);
            for (log_id, loc) in scan.entries.drain(..) {
                if index.locs.is_empty() {
                    index.first = log_id.index;
                } else if log_id.index != index.end() {
                    return Err(corrupt(
                        &path,
                        loc.offset - HEADER_BYTES as u64,
                        &format!("entry {} follows entry {}", log_id.index, index.end() - 1),
                    ));
                }
                index.locs.push_back(loc);
                index.last = Some(log_id);
            }
            index.files.insert(first, file.clone());
            wal.segments.insert(
                first,
                Segment {
                    path,
                    file,
                    len: scan.valid_len,
                    allocated: scan.zero_tail_to.unwrap_or(scan.valid_len),
                    last,
                },
            );
        }
        if removed {
            sync_dir(dir)?;
        }
        // Entries up to the last purged are never read again.
        if let Some(p) = purged_to {
            drop_front(&mut index, p);
        }
        wal.index = Arc::new(RwLock::new(index));
        Ok((wal, recovered))
    }

    pub fn reader(&self) -> WalReader {
        WalReader {
            index: self.index.clone(),
        }
    }

    fn index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The index the next entry must have, if any is fixed.
    fn next_index(&self) -> Option<u64> {
        if let Some((id, _)) = self.buf_locs.last() {
            return Some(id.index + 1);
        }
        let index = self.index.read().unwrap_or_else(|p| p.into_inner());
        (!index.locs.is_empty()).then(|| index.end())
    }

    /// The segment records go to now, starting a new one (named for `next`, or for the next
    /// entry due) when there is none, the newest is full, or `next` does not follow its last entry.
    fn active_for(&mut self, next: Option<u64>) -> io::Result<u64> {
        let queued = self.buf.len() as u64;
        if let Some((first, seg)) = self.segments.iter().next_back() {
            let follows = match (next, seg.last) {
                (None, _) => true,
                (Some(n), Some(l)) => n == l + 1,
                (Some(n), None) => n == *first,
            };
            if follows && seg.len + queued < self.segment_bytes_max {
                return Ok(*first);
            }
        }
        let first = match next.or_else(|| self.next_index()) {
            Some(n) => n,
            None => self.index.read().unwrap_or_else(|p| p.into_inner()).end(),
        };
        self.start_segment(first)
    }

    fn start_segment(&mut self, first: u64) -> io::Result<u64> {
        self.write_buf()?;
        // The segment being closed is cut to its records and made durable first: recovery trusts
        // every segment but the newest to be whole.
        if let Some((first, seg)) = self.segments.iter_mut().next_back() {
            if seg.allocated > seg.len {
                seg.file.set_len(seg.len)?;
                seg.allocated = seg.len;
                self.unsynced.insert(*first);
            }
        }
        self.sync_written()?;
        if let Some(old) = self.segments.get(&first) {
            // Named for an index it no longer holds (truncated to empty): reuse it.
            if old.len == 0 {
                return Ok(first);
            }
            return Err(io_err(format!(
                "raft log: segment {} already exists",
                old.path.display()
            )));
        }
        let path = self.dir.join(segment_name(first));
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?,
        );
        sync_dir(&self.dir)?;
        self.index().files.insert(first, file.clone());
        self.segments.insert(
            first,
            Segment {
                path,
                file,
                len: 0,
                allocated: 0,
                last: None,
            },
        );
        Ok(first)
    }

    /// Queues `entries` for the next write; they must follow the log.
    pub fn append(&mut self, entries: &EncodedEntries) -> io::Result<()> {
        for (log_id, bytes) in entries.iter() {
            // Entries follow the log's last; after a purge past its end, any index may start it.
            if let Some(next) = self.next_index() {
                if log_id.index != next {
                    return Err(io_err(format!(
                        "raft log: append of entry {} where entry {next} is due",
                        log_id.index
                    )));
                }
            }
            let active = self.active_for(Some(log_id.index))?;
            if bytes.len() + 1 > RECORD_BYTES_MAX as usize {
                return Err(io_err(format!(
                    "raft log: an entry of {} bytes is over RECORD_BYTES_MAX ({RECORD_BYTES_MAX})",
                    bytes.len()
                )));
            }
            let seg_len = self.segments[&active].len;
            let body_at = push_record(&mut self.buf, KIND_ENTRY, bytes);
            self.buf_locs.push((
                log_id,
                Loc {
                    segment: active,
                    offset: seg_len + body_at as u64,
                    len: bytes.len() as u32 + 1,
                },
            ));
            let seg = self.segments.get_mut(&active).expect("active segment");
            seg.last = Some(log_id.index);
        }
        Ok(())
    }

    /// Queues a commit marker (a restart hint) for the next write.
    pub fn commit_marker(&mut self, committed: &Option<LogId>) -> io::Result<()> {
        let payload = postcard::to_allocvec(committed).map_err(io_err)?;
        self.active_for(None)?;
        push_record(&mut self.buf, KIND_COMMITTED, &payload);
        Ok(())
    }

    /// Writes the queued records to the newest segment (not synced) and makes their entries
    /// readable.
    fn write_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let (first, seg) = self
            .segments
            .iter_mut()
            .next_back()
            .expect("records are queued only with a segment");
        seg.file.write_all_at(&self.buf, seg.len)?;
        seg.len += self.buf.len() as u64;
        // Not for a full segment, which the next group commit closes; and only as a help: the
        // records are written, so a disk too full for the zeroes is no failure of the log.
        if seg.len > seg.allocated && seg.len < self.segment_bytes_max {
            let ahead = SEGMENT_PREALLOC_BYTES.min(self.segment_bytes_max).max(1);
            let to = seg.len.div_ceil(ahead) * ahead;
            match write_zeroes(&seg.file, seg.len, to) {
                Ok(()) => seg.allocated = to,
                Err(e) => {
                    tracing::warn!(segment = %seg.path.display(), "raft log: cannot write ahead: {e}");
                    seg.allocated = seg.len;
                }
            }
        }
        self.unsynced.insert(*first);
        self.buf.clear();
        let locs = std::mem::take(&mut self.buf_locs);
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        for (log_id, loc) in locs {
            if index.locs.is_empty() {
                index.first = log_id.index;
            }
            index.locs.push_back(loc);
            index.last = Some(log_id);
        }
        Ok(())
    }

    /// fsyncs every segment written since the last sync.
    fn sync_written(&mut self) -> io::Result<()> {
        while let Some(first) = self.unsynced.pop_first() {
            if let Some(seg) = self.segments.get(&first) {
                seg.file.sync_data()?;
            }
        }
        Ok(())
    }

    /// Writes the queued records and, if `durable`, fsyncs every segment written since the last
    /// sync; without it the records reach the disk with the next durable sync.
    pub fn sync(&mut self, durable: bool) -> io::Result<()> {
        self.write_buf()?;
        if durable {
            self.sync_written()?;
        }
        Ok(())
    }

    /// Removes every entry from `from` on, durably: later segments are deleted (newest first),
    /// the one holding `from` is cut there and fsynced.
    pub fn truncate(&mut self, from: u64) -> io::Result<()> {
        self.write_buf()?;
        let later: Vec<u64> = self.segments.range(from..).map(|(f, _)| *f).collect();
        // The index first, under its lock and with no I/O: from then on no reader looks at an
        // entry from `from` on. The files are cut and synced after, outside the lock, so reads
        // (apply, replication) do not wait on those fsyncs.
        let (cut, new_last) = {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            for first in &later {
                index.files.remove(first);
            }
            let cut = index.loc(from);
            if from < index.end() {
                let keep = from.saturating_sub(index.first) as usize;
                index.locs.truncate(keep);
            }
            index.last = None;
            (cut, (!index.locs.is_empty()).then(|| index.end() - 1))
        };
        for first in later.iter().rev() {
            let seg = self.segments.remove(first).expect("listed segment");
            std::fs::remove_file(&seg.path)?;
            self.unsynced.remove(first);
        }
        if !later.is_empty() {
            sync_dir(&self.dir)?;
        }
        if let Some(loc) = cut {
            if let Some(seg) = self.segments.get_mut(&loc.segment) {
                seg.len = loc.offset - HEADER_BYTES as u64;
                seg.allocated = seg.len;
                seg.file.set_len(seg.len)?;
                seg.file.sync_data()?;
                seg.last = from.checked_sub(1);
            }
        }
        // The new last entry's id (its term) is read back from its record.
        if let Some(l) = new_last {
            let last = self
                .reader()
                .read((Bound::Included(l), Bound::Included(l)))?;
            self.index().last = last.first().map(|e| e.log_id);
        }
        Ok(())
    }

    /// Replaces the stored vote, durably.
    pub fn save_vote(&mut self, vote: Vote) -> io::Result<()> {
        self.meta.vote = Some(vote);
        write_meta(&self.dir, &self.meta)
    }

    /// Records `log_id` as the last purged (durably) and deletes the segments wholly before it.
    pub fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        if self
            .meta
            .last_purged
            .is_some_and(|p| p.index >= log_id.index)
        {
            return Ok(());
        }
        self.write_buf()?;
        self.meta.last_purged = Some(log_id);
        write_meta(&self.dir, &self.meta)?;
        let newest = self.segments.keys().next_back().copied();
        let gone: Vec<u64> = self
            .segments
            .iter()
            .filter(|(first, seg)| {
                Some(**first) != newest && seg.last.is_none_or(|l| l <= log_id.index)
            })
            .map(|(first, _)| *first)
            .collect();
        // The index first: readers stop at the purged index, and the files leave it before
        // they are deleted. Then the deletion, off this thread (appends queue behind a purge).
        let mut removed = Vec::with_capacity(gone.len());
        {
            let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
            for first in gone {
                removed.push(self.segments.remove(&first).expect("listed segment"));
                index.files.remove(&first);
                self.unsynced.remove(&first);
            }
            drop_front(&mut index, log_id.index);
        }
        for seg in removed {
            match &self.deleter {
                Some((tx, _)) => {
                    if let Err(e) = tx.try_send(seg) {
                        let (std::sync::mpsc::TrySendError::Full(seg)
                        | std::sync::mpsc::TrySendError::Disconnected(seg)) = e;
                        delete_segment(seg);
                    }
                }
                None => delete_segment(seg),
            }
        }
        Ok(())
    }
}

/// Drops the index's entries up to `purged`.
fn drop_front(index: &mut Index, purged: u64) {
    while index.first <= purged && index.locs.pop_front().is_some() {
        index.first += 1;
    }
    if index.locs.is_empty() {
        index.first = index.first.max(purged + 1);
        index.last = None;
    }
}

fn read_meta(dir: &Path) -> io::Result<WalMeta> {
    let path = dir.join(META_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(WalMeta::default()),
        Err(e) => return Err(e),
    };
    if bytes.len() < 4 {
        return Err(corrupt(&path, 0, "the file is cut short"));
    }
    let crc = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    if Crc32c::of(&bytes[4..]) != crc {
        return Err(corrupt(&path, 0, "its checksum does not match"));
    }
    postcard::from_bytes(&bytes[4..]).map_err(|e| corrupt(&path, 4, &e.to_string()))
}

/// Replaces `meta` atomically and durably.
fn write_meta(dir: &Path, meta: &WalMeta) -> io::Result<()> {
    let payload = postcard::to_allocvec(meta).map_err(io_err)?;
    let mut bytes = Crc32c::of(&payload).to_le_bytes().to_vec();
    bytes.extend_from_slice(&payload);
    let tmp = dir.join(META_TMP_FILE);
    {
        let file = File::create(&tmp)?;
        file.write_all_at(&bytes, 0)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(META_FILE))?;
    sync_dir(dir)
}

/// Bytes the log in `dir` takes on disk.
pub fn disk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|items| {
            items
                .filter_map(|i| i.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
