//! Snapshots over the network: a follower that missed a million keys, whose log the leader has
//! already purged, catches up by installing the leader's snapshot and then serves every key.

mod common;

use cairn_proto::etcdserverpb::kv_client::KvClient;
use cairn_proto::etcdserverpb::{request_op, PutRequest, RangeRequest, RequestOp, TxnRequest};
use common::*;
use openraft::async_runtime::watch::WatchReceiver;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const KEYS: usize = 1_000_000;
/// Puts per transaction: small enough that loading writes more log entries than the leader
/// keeps after a snapshot (5000), so the stopped follower's next entry is surely purged.
const PUTS_PER_TXN: usize = 125;
/// Concurrent writers while loading.
const WRITERS: usize = 16;

fn key(i: usize) -> String {
    format!("key/{i:07}")
}

fn value(i: usize) -> String {
    format!("v{i}")
}

async fn put_batch(kv: &mut KvClient<Channel>, first: usize) {
    let success = (first..(first + PUTS_PER_TXN).min(KEYS))
        .map(|i| RequestOp {
            request: Some(request_op::Request::RequestPut(PutRequest {
                key: key(i).into_bytes(),
                value: value(i).into_bytes(),
                ..Default::default()
            })),
        })
        .collect();
    let txn = TxnRequest {
        success,
        ..Default::default()
    };
    // A retry after a timeout writes the same values again: harmless here.
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        match kv.txn(txn.clone()).await {
            Ok(r) => {
                assert!(r.into_inner().succeeded);
                return;
            }
            Err(e) => {
                assert!(Instant::now() < deadline, "txn at {first}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn count_on(kv: &mut KvClient<Channel>) -> Option<i64> {
    let r = kv
        .range(RangeRequest {
            key: b"key/".to_vec(),
            range_end: b"key0".to_vec(),
            serializable: true,
            count_only: true,
            ..Default::default()
        })
        .await
        .ok()?;
    Some(r.into_inner().count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_follower_misses_a_million_keys_and_catches_up_by_snapshot() {
    let mut cluster = TestCluster::start(3, |c| c.snapshot_logs_since_last = 1000).await;
    let leader_id = cluster.wait_leader().await;
    let leader = cluster.index_of(leader_id);
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let follower_id = cluster.nodes[follower].config.node_id;
    cluster.stop(follower).await;
    let stopped_at = cluster.nodes[leader]
        .node()
        .await
        .raft
        .metrics()
        .borrow_watched()
        .last_log_index
        .unwrap_or(0);

    let started = Instant::now();
    let channel = channel(&cluster.nodes[leader].client_addr()).await;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let mut kv = KvClient::new(channel.clone());
            let next = next.clone();
            tokio::spawn(async move {
                loop {
                    let first = next.fetch_add(PUTS_PER_TXN, std::sync::atomic::Ordering::Relaxed);
                    if first >= KEYS {
                        return;
                    }
                    put_batch(&mut kv, first).await;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
    eprintln!("loaded {KEYS} keys in {:?}", started.elapsed());

    // The entries after the follower's log are gone from the leader: only a snapshot can
    // bring it up to date. Purging follows the snapshot, so give it a moment.
    let leader_node = cluster.nodes[leader].node().await;
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let purged = leader_node
            .raft
            .metrics()
            .borrow_watched()
            .purged
            .map(|l| l.index)
            .unwrap_or(0);
        if purged > stopped_at + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leader purged only up to {purged}; follower stopped at {stopped_at}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let restarted = Instant::now();
    cluster.restart(follower);
    let mut fkv = cluster.kv(follower).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if count_on(&mut fkv).await == Some(KEYS as i64) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node {follower_id} did not catch up: {:?} keys",
            count_on(&mut fkv).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("follower caught up in {:?}", restarted.elapsed());
    let snapshot = cluster.nodes[follower]
        .node()
        .await
        .raft
        .metrics()
        .borrow_watched()
        .snapshot
        .map(|l| l.index)
        .unwrap_or(0);
    assert!(
        snapshot > stopped_at + 1,
        "the follower holds no snapshot past where it stopped ({snapshot} <= {stopped_at})"
    );

    // A sample across the key space, read on the follower itself.
    for i in (0..KEYS).step_by(KEYS / 97).chain([KEYS - 1]) {
        assert_eq!(
            get(&mut fkv, &key(i), true).await.as_deref(),
            Some(value(i).as_str()),
            "key {i} on the caught-up follower"
        );
    }
    // And it goes on replicating: a new write shows up there.
    let mut lkv = cluster.kv(leader).await;
    put(&mut lkv, "after/catch-up", "yes").await;
    let deadline = Instant::now() + WAIT_MAX;
    while get(&mut fkv, "after/catch-up", true).await.as_deref() != Some("yes") {
        assert!(Instant::now() < deadline, "a later write never reached it");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
