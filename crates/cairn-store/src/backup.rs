//! Backups: what `Maintenance.Snapshot` streams and `cairn snapshot restore` reads. A backup is
//! a snapshot file (the state machine's image, [`crate::snapshot_file`]) padded with zeros to a
//! multiple of [`BACKUP_ALIGN_BYTES`], then the SHA-256 of everything before it, as etcd's
//! snapshot stream is laid out (etcdctl finds the hash by that size rule): a corrupt or
//! truncated copy is told apart from a good one before anything is restored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use cairn_types::NodeAddrs;
use openraft::vote::RaftLeaderIdExt;
use sha2::{Digest, Sha256};

use crate::snapshot_file::{decode_state, encode_state, write_atomically, SmState, SNAPSHOT_FILE};
use crate::state_machine::StateMachineHandle;
use crate::{LogId, StoredMembership, TypeConfig};

/// Bytes of the SHA-256 at the end of a backup.
pub const BACKUP_HASH_BYTES: usize = 32;
/// What a backup's body is padded to: etcdctl takes a stream whose size is a multiple of this
/// plus 32 to end with its hash (a bolt file is a whole number of pages).
pub const BACKUP_ALIGN_BYTES: usize = 512;

/// What a backup holds, for the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSummary {
    /// Size of the backup, hash included.
    pub bytes: usize,
    pub revision: i64,
    pub compact_revision: i64,
    pub keys: usize,
    /// Log index the image was taken at on the member that made it.
    pub applied_index: u64,
    /// The hex SHA-256 the backup ends with.
    pub sha256: String,
}

impl StateMachineHandle {
    /// This member's state as a backup. The image is taken under the state's lock in O(1) and
    /// encoded after; a 1M-key state takes a second or more, so call it off the async workers.
    pub fn backup(&self) -> std::io::Result<Vec<u8>> {
        let image = self.read().image();
        let mut bytes = encode_state(&image)?;
        bytes.resize(
            bytes.len().div_ceil(BACKUP_ALIGN_BYTES) * BACKUP_ALIGN_BYTES,
            0,
        );
        let hash = Sha256::digest(&bytes);
        bytes.extend_from_slice(&hash);
        Ok(bytes)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a backup's hash and decodes it; the error says what is wrong with the file.
pub fn verify_backup(bytes: &[u8]) -> Result<(SmState, BackupSummary), String> {
    if bytes.len() <= BACKUP_HASH_BYTES {
        return Err(format!(
            "not a Cairn snapshot: {} bytes is shorter than any (truncated?)",
            bytes.len()
        ));
    }
    let (body, hash) = bytes.split_at(bytes.len() - BACKUP_HASH_BYTES);
    let actual = Sha256::digest(body);
    if actual.as_slice() != hash {
        return Err(format!(
            "checksum mismatch: the SHA-256 of the first {} bytes is {}, the file ends with {}; \
             the file is corrupt or truncated",
            body.len(),
            hex(&actual),
            hex(hash)
        ));
    }
    let state = decode_state(body).map_err(|e| format!("not a Cairn snapshot: {e}"))?;
    let summary = BackupSummary {
        bytes: bytes.len(),
        revision: state.kv.revision(),
        compact_revision: state.kv.compact_revision(),
        keys: state.kv.key_count(),
        applied_index: state.last_applied.map(|l| l.index).unwrap_or(0),
        sha256: hex(hash),
    };
    Ok((state, summary))
}

/// Writes the snapshot directory of a member of a new cluster from a backup: the backup's key
/// space and leases, `voters` as the whole membership, no cluster id (the new cluster's first
/// leader picks one), no alarms and no announced addresses. Every member of the new cluster is
/// restored from the same backup with the same `voters`, so all start from one state.
pub fn restore_backup(
    bytes: &[u8],
    snapshot_dir: &Path,
    voters: &BTreeMap<u64, NodeAddrs>,
) -> Result<BackupSummary, String> {
    let (mut state, summary) = verify_backup(bytes)?;
    if voters.is_empty() || voters.contains_key(&0) {
        return Err("the new cluster needs at least one voter, ids from 1".into());
    }
    // One log id for every restored member: the first entry of the new cluster's log.
    let log_id = LogId::new(
        <TypeConfig as openraft::RaftTypeConfig>::LeaderId::new_committed(0, 0),
        1,
    );
    let ids: BTreeSet<u64> = voters.keys().copied().collect();
    let membership = openraft::Membership::new(vec![ids], voters.clone())
        .map_err(|e| format!("the new cluster's membership: {e}"))?;
    state.last_applied = Some(log_id);
    state.membership = StoredMembership::new(Some(log_id), membership);
    state.node_addrs.clear();
    state.cluster = Default::default();
    std::fs::create_dir_all(snapshot_dir)
        .map_err(|e| format!("creating {}: {e}", snapshot_dir.display()))?;
    let file = encode_state(&state.image()).map_err(|e| format!("encoding the state: {e}"))?;
    write_atomically(snapshot_dir, SNAPSHOT_FILE, &file).map_err(|e| {
        format!(
            "writing {}: {e}",
            snapshot_dir.join(SNAPSHOT_FILE).display()
        )
    })?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::StateMachineStore;

    #[test]
    fn a_backup_restores_and_any_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateMachineStore::open(&dir.path().join("a")).unwrap();
        {
            let mut s = store.write();
            for i in 0..100 {
                crate::mvcc::test_util::put(&mut s.kv, format!("k{i}").as_bytes(), b"v");
            }
            s.cluster.cluster_id = 42;
        }
        let bytes = store.handle().backup().unwrap();
        let (_, summary) = verify_backup(&bytes).unwrap();
        assert_eq!((summary.keys, summary.revision), (100, 101));
        assert_eq!(bytes.len() % BACKUP_ALIGN_BYTES, BACKUP_HASH_BYTES);

        let voters = BTreeMap::from([
            (
                1,
                NodeAddrs {
                    peer: "127.0.0.1:1".into(),
                    ..Default::default()
                },
            ),
            (
                2,
                NodeAddrs {
                    peer: "127.0.0.1:2".into(),
                    ..Default::default()
                },
            ),
        ]);
        let target = dir.path().join("b");
        restore_backup(&bytes, &target, &voters).unwrap();
        let restored = StateMachineStore::open(&target).unwrap();
        let s = restored.handle();
        let s = s.read();
        assert_eq!(s.kv.key_count(), 100);
        assert_eq!(s.cluster.cluster_id, 0, "a new cluster gets a new id");
        assert_eq!(
            s.membership.membership().voter_ids().collect::<Vec<_>>(),
            vec![1, 2]
        );

        // Truncated, flipped, empty, or not a snapshot at all.
        let refused = |bytes: &[u8]| verify_backup(bytes).err().expect("refused");
        let truncated = &bytes[..bytes.len() - 100];
        assert!(refused(truncated).contains("checksum mismatch"));
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 1;
        assert!(refused(&flipped).contains("corrupt"));
        assert!(refused(b"short").contains("shorter"));
        let mut junk = b"not a snapshot at all, just text".to_vec();
        junk.extend_from_slice(&Sha256::digest(&junk));
        assert!(refused(&junk).contains("not a Cairn snapshot"));
        // Nothing is written from a bad file.
        let never = dir.path().join("c");
        assert!(restore_backup(truncated, &never, &voters).is_err());
        assert!(!never.exists());
    }
}
