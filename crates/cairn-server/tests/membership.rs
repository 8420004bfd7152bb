//! Multi-node behaviour in one process: forwarding, joining from a snapshot, promotion, removal,
//! leadership transfer and restart.

mod common;

use cairn_proto::cairnpb::admin_client::AdminClient;
use cairn_proto::cairnpb::TransferLeaderRequest;
use cairn_proto::etcdserverpb::cluster_client::ClusterClient;
use cairn_proto::etcdserverpb::{
    MemberListRequest, MemberPromoteRequest, MemberRemoveRequest, RangeRequest,
};
use common::*;
use std::time::{Duration, Instant};

async fn member_list(
    members: &mut ClusterClient<tonic::transport::Channel>,
) -> Vec<cairn_proto::etcdserverpb::Member> {
    members
        .member_list(MemberListRequest { linearizable: true })
        .await
        .expect("member list")
        .into_inner()
        .members
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_forwards_writes_and_serves_linearizable_reads() {
    let cluster = TestCluster::start(3, |_| {}).await;
    let leader = cluster.wait_leader().await;
    let follower = (0..3)
        .find(|i| cluster.nodes[*i].config.node_id != leader)
        .unwrap();
    let other = (0..3)
        .find(|i| cluster.nodes[*i].config.node_id != leader && *i != follower)
        .unwrap();
    let mut f = cluster.kv(follower).await;
    let mut o = cluster.kv(other).await;
    for i in 0..20 {
        let rev = put(&mut f, &format!("k{i}"), &format!("v{i}")).await;
        assert!(rev > 1);
        // A linearizable read on another follower sees the write at once.
        assert_eq!(
            get(&mut o, &format!("k{i}"), false).await.as_deref(),
            Some(format!("v{i}").as_str())
        );
    }
}

/// Requests forwarded at once share the follower's stream to the leader in batches: every caller
/// still gets its own answer, successes and refusals alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_forwarded_writes_each_get_their_own_answer() {
    use cairn_proto::etcdserverpb::PutRequest;
    let cluster = TestCluster::start(3, |_| {}).await;
    let leader = cluster.wait_leader().await;
    let follower = (0..3)
        .find(|i| cluster.nodes[*i].config.node_id != leader)
        .unwrap();
    let kv = cluster.kv(follower).await;
    let calls = (0..300).map(|i| {
        let mut kv = kv.clone();
        async move {
            // Every third put names a lease that does not exist: the leader refuses just that one.
            let lease = if i % 3 == 0 { 424_242 + i } else { 0 };
            let put = PutRequest {
                key: format!("fwd/{i:03}").into_bytes(),
                value: format!("value-{i}").into_bytes(),
                lease,
                ..Default::default()
            };
            (i, kv.put(put).await)
        }
    });
    let answers = futures::future::join_all(calls).await;
    let mut revisions = std::collections::BTreeSet::new();
    for (i, answer) in answers {
        if i % 3 == 0 {
            let refused = answer.expect_err("a put with an unknown lease is refused");
            assert!(
                refused.message().contains("lease not found"),
                "put {i}: {refused:?}"
            );
        } else {
            let rev = answer.expect("put").into_inner().header.unwrap().revision;
            assert!(
                revisions.insert(rev),
                "two puts answered with revision {rev}"
            );
        }
    }
    assert_eq!(revisions.len(), 200);
    // What each caller was told is what the store holds.
    let mut lkv = cluster.kv(cluster.index_of(leader)).await;
    for i in 0..300 {
        let got = get(&mut lkv, &format!("fwd/{i:03}"), false).await;
        let want = (i % 3 != 0).then(|| format!("value-{i}"));
        assert_eq!(got, want, "key fwd/{i:03}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_joins_from_snapshot_is_promoted_then_removed() {
    // Snapshot every 50 entries and keep little log, so the joiner must install a snapshot.
    let mut cluster = TestCluster::start(3, |c| c.snapshot_logs_since_last = 50).await;
    let mut kv = cluster.kv(0).await;
    for i in 0..300 {
        put(&mut kv, &format!("key/{i:04}"), &format!("value-{i}")).await;
    }
    let joiner = cluster.join(4, 1, |c| c.snapshot_logs_since_last = 50);
    let mut members = ClusterClient::new(channel(&cluster.nodes[0].client_addr()).await);
    // The new member shows up as a learner, and catches up.
    let deadline = Instant::now() + WAIT_MAX;
    let new_id = loop {
        let list = member_list(&mut members).await;
        if let Some(m) = list.iter().find(|m| m.is_learner) {
            break m.id;
        }
        assert!(
            Instant::now() < deadline,
            "learner never appeared: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut jkv = cluster.kv(joiner).await;
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        let n = jkv
            .range(RangeRequest {
                key: b"key/".to_vec(),
                range_end: b"key0".to_vec(),
                serializable: true,
                count_only: true,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().count)
            .unwrap_or(0);
        if n == 300 {
            break;
        }
        assert!(Instant::now() < deadline, "learner has {n} of 300 keys");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Snapshots were taken: the first node's data dir holds one.
    assert!(cluster.nodes[0]
        .config
        .data_dir
        .join("snapshots/snapshot.bin")
        .exists());

    members
        .member_promote(MemberPromoteRequest { id: new_id })
        .await
        .expect("promote");
    let list = member_list(&mut members).await;
    assert_eq!(list.len(), 4);
    assert!(list.iter().all(|m| !m.is_learner), "{list:?}");
    // Writes still commit with 4 voters, through the new member too.
    put(&mut jkv, "after-promote", "yes").await;

    members
        .member_remove(MemberRemoveRequest { id: new_id })
        .await
        .expect("remove");
    let list = member_list(&mut members).await;
    assert_eq!(list.len(), 3, "{list:?}");
    assert_eq!(
        get(&mut kv, "after-promote", false).await.as_deref(),
        Some("yes")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_of_unknown_member_is_not_found() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let mut members = ClusterClient::new(channel(&cluster.nodes[0].client_addr()).await);
    let err = members
        .member_promote(MemberPromoteRequest { id: 99 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(err.message(), "etcdserver: member not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_transfer_moves_leadership() {
    let cluster = TestCluster::start(3, |_| {}).await;
    let leader = cluster.wait_leader().await;
    let target = (1..=3).find(|id| *id != leader).unwrap();
    let mut admin = AdminClient::new(channel(&cluster.nodes[0].client_addr()).await);
    let resp = admin
        .transfer_leader(TransferLeaderRequest { to: target })
        .await
        .expect("transfer")
        .into_inner();
    assert_eq!(resp.leader_id, target);
    assert_eq!(cluster.wait_leader().await, target);
    let mut kv = cluster.kv(0).await;
    put(&mut kv, "after-transfer", "ok").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_leader_elects_another_and_restart_keeps_data() {
    let mut cluster = TestCluster::start(3, |_| {}).await;
    let mut kv = cluster.kv(0).await;
    for i in 0..50 {
        put(&mut kv, &format!("d{i}"), "x").await;
    }
    let leader = cluster.wait_leader().await;
    let li = cluster.index_of(leader);
    cluster.stop(li).await;
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, leader);
    let alive = (0..3).find(|i| *i != li).unwrap();
    let mut kv = cluster.kv(alive).await;
    put(&mut kv, "during-outage", "y").await;
    cluster.restart(li);
    cluster.wait_leader().await;
    let mut back = cluster.kv(li).await;
    assert_eq!(get(&mut back, "d49", false).await.as_deref(), Some("x"));
    assert_eq!(
        get(&mut back, "during-outage", false).await.as_deref(),
        Some("y")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_added_by_operator_then_started_with_join_takes_its_id() {
    let mut cluster = TestCluster::start(3, |_| {}).await;
    let mut config = node_config(cluster.dir.path(), 9);
    let mut members = ClusterClient::new(channel(&cluster.nodes[0].client_addr()).await);
    let added = members
        .member_add(cairn_proto::etcdserverpb::MemberAddRequest {
            peer_ur_ls: vec![format!("http://{}", config.listen_peer)],
            is_learner: true,
        })
        .await
        .expect("member add")
        .into_inner()
        .member
        .unwrap();
    config.join = Some(cluster.nodes[1].client_addr());
    let i = cluster.start_node(config);
    let mut kv = cluster.kv(0).await;
    put(&mut kv, "seen-by-new-member", "1").await;
    let mut new_kv = cluster.kv(i).await;
    let deadline = Instant::now() + WAIT_MAX;
    while get(&mut new_kv, "seen-by-new-member", true).await.is_none() {
        assert!(Instant::now() < deadline, "new member never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id_file = cluster.nodes[i].config.data_dir.join("node_id");
    let stored: u64 = std::fs::read_to_string(id_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(stored, added.id);
    let list = member_list(&mut members).await;
    assert_eq!(list.len(), 4, "{list:?}");
}
