//! The snapshot file of a node: the state machine's image in the file format, written atomically
//! under a temporary name of its own, and read back.
//!
//! The format is a postcard [`SnapshotFile`] followed by a [`ClusterState`] (a file written
//! before that existed ends with the key-value image and reads as cluster id 0, which the next
//! leader then assigns, and no alarms). The same bytes are what a leader streams to a follower,
//! so a follower can keep what it received as its own snapshot file unchanged.

use crate::mvcc::{KvSnapshot, KvState};
use crate::{LogId, StoredMembership};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// The node's current snapshot, in its snapshot directory.
pub(crate) const SNAPSHOT_FILE: &str = "snapshot.bin";

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    node_addrs: BTreeMap<u64, (String, String)>,
    #[serde(with = "crate::serde_bytes")]
    kv: Vec<u8>,
}

/// The cluster-wide facts beside the key space, after the image in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// The cluster's id, random and set once by its first leader; 0 until then.
    pub cluster_id: u64,
    /// Raised alarms, as etcd keeps them: (member id, `AlarmType` number).
    pub alarms: std::collections::BTreeSet<(u64, i32)>,
    /// Users, roles and permissions (etcd's Auth).
    pub auth: crate::auth::AuthState,
}

/// Everything the state machine holds.
pub struct SmState {
    pub kv: KvState,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Client and HTTP addresses announced by each node.
    pub node_addrs: BTreeMap<u64, (String, String)>,
    pub cluster: ClusterState,
}

impl SmState {
    /// What a snapshot of this state holds, in O(1): the key space and leases are shared with
    /// the live state, not copied (the node addresses are a handful of strings).
    pub(crate) fn image(&self) -> SmImage {
        SmImage {
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            node_addrs: self.node_addrs.clone(),
            cluster: self.cluster.clone(),
            kv: self.kv.snapshot_view(),
        }
    }
}

/// What a snapshot file holds, taken from the state in O(1) (see [`SmState::image`]) so that it
/// can be encoded after the state's lock is released.
pub(crate) struct SmImage {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub node_addrs: BTreeMap<u64, (String, String)>,
    pub cluster: ClusterState,
    pub kv: KvSnapshot,
}

pub(crate) fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Decodes a snapshot file into a state, checking the key-value image's invariants.
pub(crate) fn decode_state(bytes: &[u8]) -> io::Result<SmState> {
    let (file, rest): (SnapshotFile, _) = postcard::take_from_bytes(bytes).map_err(io_err)?;
    let cluster = if rest.is_empty() {
        ClusterState::default()
    } else {
        // A backup pads the file with zeros; nothing else may follow.
        let (cluster, padding): (ClusterState, _) =
            postcard::take_from_bytes(rest).map_err(io_err)?;
        if padding.iter().any(|b| *b != 0) {
            return Err(io_err(format!(
                "{} bytes of trailing data after the snapshot",
                padding.len()
            )));
        }
        cluster
    };
    Ok(SmState {
        kv: KvState::decode_snapshot(&file.kv).map_err(io_err)?,
        last_applied: file.last_applied,
        membership: file.membership,
        node_addrs: file.node_addrs,
        cluster,
    })
}

/// The last applied log id and membership a snapshot file records, without decoding its image.
pub(crate) fn decode_meta(bytes: &[u8]) -> io::Result<(Option<LogId>, StoredMembership)> {
    // A struct is decoded field by field, so the header alone decodes as a tuple prefix.
    let ((last_applied, membership), _rest): ((Option<LogId>, StoredMembership), _) =
        postcard::take_from_bytes(bytes).map_err(io_err)?;
    Ok((last_applied, membership))
}

/// The longest postcard varint of a `usize` (the length prefix of the `kv` byte string).
const VARINT_USIZE_BYTES_MAX: usize = 10;

/// Encodes `image` as a [`SnapshotFile`], byte for byte, in one buffer: the key-value image
/// (the bulk, 100+ MB with a million keys) is encoded in place after room left for the header
/// and its length prefix, which are then written right before it. Encoding the image first and
/// then the file around it would hold two full copies at once.
pub(crate) fn encode_state(image: &SmImage) -> io::Result<Vec<u8>> {
    // A struct is encoded as its fields in order, so this is the file up to `kv`.
    let header =
        postcard::to_allocvec(&(&image.last_applied, &image.membership, &image.node_addrs))
            .map_err(io_err)?;
    let room = header.len() + VARINT_USIZE_BYTES_MAX;
    let mut out = vec![0u8; room];
    image.kv.encode_into(&mut out);
    let kv_len = out.len() - room;
    // `serialize_bytes` writes the length as a varint, as a `usize` (a u64) is written.
    let prefix = postcard::to_extend(&kv_len, header).map_err(io_err)?;
    let start = room - prefix.len();
    out[start..room].copy_from_slice(&prefix);
    out.drain(..start);
    postcard::to_extend(&image.cluster, out).map_err(io_err)
}

/// Tells apart the temporary files of concurrent writers in one process (several in-process
/// nodes, or a build racing an install should the caller's serialization ever be lost).
static TEMP_FILE_SEQ: AtomicU64 = AtomicU64::new(0);

fn is_temp_file(file_name: &str, name: &str) -> bool {
    file_name
        .strip_prefix(name)
        .is_some_and(|rest| rest.starts_with('.') && rest.ends_with(".tmp"))
}

/// Writes `bytes` to `dir/name` atomically: a temporary file of this write's own, fsync,
/// rename, fsync the directory. Blocking: call it off the async workers.
pub(crate) fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let seq = TEMP_FILE_SEQ.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!("{name}.{}-{seq}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))
    })();
    if written.is_err() {
        // Best effort: a leftover is also removed at the next start.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::File::open(dir)?.sync_all()
}

/// Removes temporary files of `name` that a crash left behind in `dir`. Only at start, when no
/// write can be in progress.
pub(crate) fn remove_temp_files(dir: &Path, name: &str) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|f| is_temp_file(f, name))
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::test_util::put;

    fn state(keys: usize) -> SmState {
        let mut kv = KvState::new();
        for i in 0..keys {
            put(
                &mut kv,
                format!("key/{i:05}").as_bytes(),
                &vec![b'v'; i % 300],
            );
        }
        SmState {
            kv,
            last_applied: None,
            membership: StoredMembership::default(),
            node_addrs: [
                (1, ("127.0.0.1:1".to_string(), "127.0.0.1:2".to_string())),
                (2, ("127.0.0.1:3".to_string(), String::new())),
            ]
            .into(),
            cluster: ClusterState {
                cluster_id: 0x1234_5678_9abc,
                alarms: [(2, 1)].into(),
                auth: crate::auth::AuthState {
                    enabled: true,
                    revision: 3,
                    ..Default::default()
                },
            },
        }
    }

    #[test]
    fn one_buffer_encoding_is_the_snapshot_file_format() {
        // Sizes around the varint boundaries of the kv length (1, 2, 3 bytes and more).
        for keys in [0, 1, 5, 200, 3_000] {
            let s = state(keys);
            let framed = postcard::to_allocvec(&SnapshotFile {
                last_applied: s.last_applied,
                membership: s.membership.clone(),
                node_addrs: s.node_addrs.clone(),
                kv: s.kv.encode_snapshot(),
            })
            .unwrap();
            let bytes = encode_state(&s.image()).unwrap();
            let framed = postcard::to_extend(&s.cluster, framed).unwrap();
            assert_eq!(bytes, framed, "{keys} keys");
            let back = decode_state(&bytes).unwrap();
            assert_eq!(back.kv, s.kv);
            assert_eq!(back.node_addrs, s.node_addrs);
            assert_eq!(back.cluster, s.cluster);
            assert_eq!(decode_meta(&bytes).unwrap().0, s.last_applied);
            // A file from before the cluster state: the same key space, id 0, no alarms.
            let old = &bytes[..bytes.len() - postcard::to_allocvec(&s.cluster).unwrap().len()];
            let back = decode_state(old).unwrap();
            assert_eq!((back.kv, back.cluster), (s.kv, ClusterState::default()));
        }
    }

    #[test]
    fn atomic_writes_use_their_own_temp_files_and_leftovers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // Two writers at once never share a temporary file: both land whole.
        std::thread::scope(|scope| {
            for fill in [1u8, 2] {
                let dir = dir.path();
                scope.spawn(move || {
                    for _ in 0..20 {
                        write_atomically(dir, SNAPSHOT_FILE, &vec![fill; 256 * 1024]).unwrap();
                    }
                });
            }
        });
        let bytes = std::fs::read(dir.path().join(SNAPSHOT_FILE)).unwrap();
        assert_eq!(bytes.len(), 256 * 1024);
        assert!(bytes.iter().all(|b| *b == bytes[0]), "a torn file");

        for leftover in ["snapshot.bin.tmp", "snapshot.bin.7-3.tmp"] {
            std::fs::write(dir.path().join(leftover), b"partial").unwrap();
        }
        std::fs::write(dir.path().join("other.tmp"), b"not ours").unwrap();
        remove_temp_files(dir.path(), SNAPSHOT_FILE).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, vec!["other.tmp", "snapshot.bin"]);
    }
}
