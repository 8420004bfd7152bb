//! Backup and disaster recovery: `cairn ctl snapshot save` (and `etcdctl snapshot save`, when
//! installed) writes a backup of a live 3-node cluster; the cluster then loses its majority for
//! good; `cairn snapshot restore` builds a new 3-node cluster from the backup, which serves every
//! key with its revisions, a new cluster id, and takes writes. A corrupt or truncated backup is
//! refused with a clear error, and nothing is written.

mod common;
#[path = "common/settle.rs"]
#[allow(dead_code)]
mod settle;

use std::path::Path;
use std::process::Command;

use cairn_proto::etcdserverpb::{CompactionRequest, PutRequest, RangeRequest};
use common::etcdctl::{self, Etcdctl};
use common::TestCluster;
use settle::eventually;

/// Runs the `cairn` binary; (success, stdout, stderr).
fn cairn(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env_remove("CAIRN_ENDPOINTS")
        .output()
        .expect("run cairn");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn restore(file: &Path, dir: &Path, id: u64, initial: &str) -> (bool, String, String) {
    cairn(&[
        "snapshot",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        dir.to_str().unwrap(),
        "--node-id",
        &id.to_string(),
        "--initial-cluster",
        initial,
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_rebuilds_a_cluster_that_lost_its_majority() {
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("backup.db");
    let (old_cluster_id, last_revision, keys) = {
        let mut cluster = TestCluster::start(3).await;
        let mut kv = cluster.kv(0);
        let mut last = 0;
        for i in 0..300 {
            let r = kv
                .put(PutRequest {
                    key: format!("app/{i:03}").into_bytes(),
                    value: format!("value {i}").into_bytes(),
                    ..Default::default()
                })
                .await
                .expect("put");
            last = r.into_inner().header.unwrap().revision;
        }
        kv.compact(CompactionRequest {
            revision: last - 100,
            physical: true,
        })
        .await
        .expect("compact");
        let keys = kv
            .range(RangeRequest {
                key: b"app/".to_vec(),
                range_end: b"app0".to_vec(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let id = keys.header.as_ref().unwrap().cluster_id;

        // The backup is node 2's own state, and the writes and the compaction were acknowledged
        // through node 1: wait until node 2 has applied the compaction (the last entry), so that
        // what it saves holds every key and the compaction.
        let kv2 = cluster.kv(1);
        eventually("node 2 to apply the compaction", || {
            let mut kv = kv2.clone();
            async move {
                let local = kv
                    .range(RangeRequest {
                        key: b"app/000".to_vec(),
                        revision: last - 150,
                        serializable: true,
                        ..Default::default()
                    })
                    .await;
                matches!(local, Err(e) if e.message().contains("compacted")).then_some(())
            }
        })
        .await;

        let endpoint = cluster.client_endpoint(1);
        let (ok, out, err) = cairn(&[
            "ctl",
            "--endpoints",
            &endpoint,
            "snapshot",
            "save",
            file.to_str().unwrap(),
        ]);
        assert!(ok, "{out}{err}");
        assert!(out.starts_with("Snapshot saved at"), "{out}");
        assert!(out.contains("300 keys"), "{out}");
        let (ok, out, err) = cairn(&["snapshot", "status", file.to_str().unwrap()]);
        assert!(ok && out.contains("checksum ok"), "{out}{err}");

        if etcdctl::installed() {
            // etcdctl saves the same stream byte for byte (it only copies it); Cairn restores it.
            let theirs = work.path().join("etcdctl.db");
            let ctl = Etcdctl::new(&cluster.client_addr(0));
            let said = ctl.ok(&["snapshot", "save", theirs.to_str().unwrap()]);
            assert!(said.contains("Snapshot saved at"), "{said}");
            let (ok, out, err) = cairn(&["snapshot", "status", theirs.to_str().unwrap()]);
            assert!(ok && out.contains("300 keys"), "{out}{err}");
        } else {
            eprintln!("SKIPPED (etcdctl snapshot save): etcdctl not installed");
        }

        // The majority is lost for good.
        cluster.kill(1);
        cluster.kill(2);
        (id, last, keys.kvs)
    };

    // Bad files are refused before anything is written.
    let bytes = std::fs::read(&file).unwrap();
    let corrupt = work.path().join("corrupt.db");
    let mut flipped = bytes.clone();
    flipped[bytes.len() / 3] ^= 0x40;
    std::fs::write(&corrupt, &flipped).unwrap();
    let truncated = work.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for bad in [&corrupt, &truncated] {
        let dir = work.path().join("never");
        let (ok, out, err) = restore(bad, &dir, 1, "1=127.0.0.1:1");
        assert!(!ok, "{out}");
        assert!(err.contains("checksum mismatch"), "{err}");
        assert!(!dir.exists() || std::fs::read_dir(&dir).unwrap().next().is_none());
    }
    let (ok, _, err) = restore(&file, work.path(), 1, "1=127.0.0.1:1");
    assert!(!ok && err.contains("is not empty"), "{err}");
    let (ok, _, err) = restore(&file, &work.path().join("x"), 4, "1=127.0.0.1:1");
    assert!(
        !ok && err.contains("not one of the new cluster's voters"),
        "{err}"
    );

    // A new 3-node cluster from the backup, every member restored from the same file.
    let restored = TestCluster::start_prepared(3, |specs| {
        let initial = specs
            .iter()
            .map(|s| format!("{}=127.0.0.1:{}", s.id, s.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        for s in specs {
            let (ok, out, err) = restore(&file, &s.data_dir, s.id, &initial);
            assert!(ok, "{out}{err}");
            assert!(out.contains("restored 300 keys"), "{out}");
        }
    })
    .await;
    let mut kv = restored.kv(2);
    let now = kv
        .range(RangeRequest {
            key: b"app/".to_vec(),
            range_end: b"app0".to_vec(),
            ..Default::default()
        })
        .await
        .expect("range on the restored cluster")
        .into_inner();
    assert_eq!(now.kvs, keys, "every key, value and revision");
    let header = now.header.unwrap();
    assert!(header.revision >= last_revision);
    assert_ne!(header.cluster_id, old_cluster_id, "a new cluster");
    // The compaction came along: older revisions are gone, as before.
    let old = kv
        .range(RangeRequest {
            key: b"app/000".to_vec(),
            revision: last_revision - 150,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(old.code(), tonic::Code::OutOfRange, "{old:?}");
    let w = kv
        .put(PutRequest {
            key: b"after".to_vec(),
            value: b"restore".to_vec(),
            ..Default::default()
        })
        .await
        .expect("the restored cluster takes writes")
        .into_inner();
    assert_eq!(w.header.unwrap().revision, last_revision + 1);
}
