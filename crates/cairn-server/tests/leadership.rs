//! Leadership made sound: leader work is fenced by its term, leases are renewed only while
//! leadership is confirmed, and a leader cut off by a partition stops acting and rejoins as a
//! follower. Partitions are cut with each node's `peer_faults` (links fail as unreachable).

mod common;

use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest, PutRequest, TxnRequest,
};
use cairn_server::node::Node;
use cairn_server::peer_request::{LeaderRequest, LeaderResponse};
use cairn_store::command::Outcome;
use cairn_store::state_machine::TERM_ENDED_MESSAGE;
use cairn_store::Command;
use common::{channel, get, TestCluster, WAIT_MAX};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Status;

const LEASE_TTL_SECS: i64 = 3;

/// Cuts every link between node `isolated` and the others, both ways.
async fn partition_away(c: &TestCluster, isolated: usize) {
    let id = c.nodes[isolated].config.node_id;
    for (i, n) in c.nodes.iter().enumerate() {
        let node = n.node().await;
        if i == isolated {
            node.peer_faults.block(
                c.nodes
                    .iter()
                    .map(|n| n.config.node_id)
                    .filter(|x| *x != id),
            );
        } else {
            node.peer_faults.block([id]);
        }
    }
}

async fn heal(c: &TestCluster) {
    for n in &c.nodes {
        n.node().await.peer_faults.heal();
    }
}

async fn lease_client(c: &TestCluster, i: usize) -> LeaseClient<Channel> {
    LeaseClient::new(channel(&c.nodes[i].client_addr()).await)
}

/// One keep-alive on a fresh stream, as a client that reconnects does.
async fn keep_alive(client: &mut LeaseClient<Channel>, id: i64) -> Result<i64, Status> {
    let req = LeaseKeepAliveRequest { id };
    let mut stream = client
        .lease_keep_alive(tokio_stream::iter(vec![req]))
        .await?
        .into_inner();
    match tokio::time::timeout(WAIT_MAX, stream.message()).await {
        Ok(Ok(Some(r))) => Ok(r.ttl),
        Ok(Ok(None)) => Err(Status::unavailable("keep-alive stream closed")),
        Ok(Err(s)) => Err(s),
        Err(_) => Err(Status::deadline_exceeded("no keep-alive answer")),
    }
}

/// Renews lease `id` through any of `via` until one answers with a live TTL.
async fn keep_alive_any(c: &TestCluster, via: &[usize], id: i64) -> i64 {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        for &i in via {
            let mut client = lease_client(c, i).await;
            if let Ok(ttl) = keep_alive(&mut client, id).await {
                assert!(ttl > 0, "lease {id} is gone (ttl {ttl})");
                return ttl;
            }
        }
        assert!(Instant::now() < deadline, "no node renewed lease {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn grant_with_key(c: &TestCluster, i: usize, key: &str) -> i64 {
    let id = lease_client(c, i)
        .await
        .lease_grant(LeaseGrantRequest {
            ttl: LEASE_TTL_SECS,
            id: 0,
        })
        .await
        .expect("grant")
        .into_inner()
        .id;
    c.kv(i)
        .await
        .put(PutRequest {
            key: key.into(),
            value: b"held".to_vec(),
            lease: id,
            ..Default::default()
        })
        .await
        .expect("put with lease");
    id
}

/// Waits until a node among `among` leads a term after `after_term`; returns (index, term).
async fn wait_new_leader(c: &TestCluster, among: &[usize], after_term: u64) -> (usize, u64) {
    let deadline = Instant::now() + WAIT_MAX;
    loop {
        for &i in among {
            let node = c.nodes[i].node().await;
            if let Some(t) = node.leader_term() {
                if t.term() > after_term {
                    return (i, t.term());
                }
            }
        }
        assert!(Instant::now() < deadline, "no new leader among {among:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT_MAX;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn leader_index(c: &TestCluster) -> usize {
    let id = c.wait_leader().await;
    let i = c.index_of(id);
    let node = c.nodes[i].node().await;
    wait_until("the leader's services run", || node.leader_term().is_some()).await;
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_leader_stops_renewing_leases_and_rejoins_as_follower() {
    let c = TestCluster::start(3, |_| {}).await;
    let old = leader_index(&c).await;
    let old_node = c.nodes[old].node().await;
    let old_term = old_node.leader_term().expect("leads").term();
    let lease = grant_with_key(&c, old, "lock/owner").await;
    let mut via_old = lease_client(&c, old).await;
    keep_alive(&mut via_old, lease)
        .await
        .expect("renewed by the leader");
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();

    let cut_at = Instant::now();
    partition_away(&c, old).await;
    // When the majority first knows another leader, by Raft (before its services start).
    let old_id = c.nodes[old].config.node_id;
    let mut majority = Vec::new();
    for &i in &others {
        majority.push(c.nodes[i].node().await);
    }
    let elected = tokio::spawn(async move {
        loop {
            if majority
                .iter()
                .any(|n| n.leader().is_some_and(|l| l != old_id))
            {
                return Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });

    // The cut-off leader refuses renewals within about a leader lease (600 ms here), instead of
    // telling the client its lease lives while the majority elects someone else.
    let mut last_renewed_by_old = cut_at;
    let refused = loop {
        match keep_alive(&mut via_old, lease).await {
            Ok(_) => last_renewed_by_old = Instant::now(),
            Err(s) => break s,
        }
        assert!(
            cut_at.elapsed() < WAIT_MAX,
            "the cut-off leader kept renewing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let refused_after = cut_at.elapsed();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    assert!(
        refused_after < 2 * old_node.leader_lease() + Duration::from_secs(1),
        "refused only after {refused_after:?}"
    );
    wait_until("the cut-off leader's services stop", || {
        old_node.leader_term().is_none()
    })
    .await;

    let (new, new_term) = wait_new_leader(&c, &others, old_term).await;
    // Every renewal the old leader granted came before the majority had another leader.
    let elected_at = elected.await.expect("watcher");
    assert!(
        last_renewed_by_old < elected_at,
        "the old leader renewed {:?} after the new one was elected",
        last_renewed_by_old - elected_at
    );
    let new_node = c.nodes[new].node().await;
    assert!(new_node.leads_term(new_term));

    // The client moves to the majority and keeps its lease alive there for longer than the TTL.
    let renew_until = Instant::now() + Duration::from_secs(LEASE_TTL_SECS as u64 + 1);
    while Instant::now() < renew_until {
        keep_alive_any(&c, &others, lease).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut kv = c.kv(new).await;
    assert_eq!(
        get(&mut kv, "lock/owner", false).await.as_deref(),
        Some("held")
    );

    // Healed: the old leader follows the new one and acts as leader no more.
    heal(&c).await;
    let new_id = c.nodes[new].config.node_id;
    wait_until("the old leader follows the new one", || {
        old_node.leader() == Some(new_id)
    })
    .await;
    assert!(old_node.leader_term().is_none());
    assert!(!old_node.raft.is_leader());

    // Still renewed (now through the healed old leader too, which forwards), the lease lives on.
    let renew_until = Instant::now() + Duration::from_secs(LEASE_TTL_SECS as u64 + 1);
    while Instant::now() < renew_until {
        keep_alive_any(&c, &[old, new], lease).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        get(&mut kv, "lock/owner", false).await.as_deref(),
        Some("held")
    );

    // Left alone, it expires on the new leader, and its key goes with it.
    wait_key_gone(&mut kv, "lock/owner").await;
}

/// Waits until the key attached to a lease is gone: the lease expired.
async fn wait_key_gone(
    kv: &mut cairn_proto::etcdserverpb::kv_client::KvClient<Channel>,
    key: &str,
) {
    let deadline = Instant::now() + WAIT_MAX;
    while get(kv, key, false).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the lease of {key} never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Hands leadership from `from` to the next node; returns (its index, its term).
async fn transfer_from(c: &TestCluster, from: usize, from_term: u64) -> (usize, u64) {
    let to = (from + 1) % c.nodes.len();
    c.nodes[from]
        .node()
        .await
        .raft
        .trigger()
        .transfer_leader(c.nodes[to].config.node_id)
        .await
        .expect("transfer");
    let others: Vec<usize> = (0..c.nodes.len()).filter(|i| *i != from).collect();
    wait_new_leader(c, &others, from_term).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lease_survives_a_leader_change_with_its_ttl_extended() {
    let c = TestCluster::start(3, |_| {}).await;
    let old = leader_index(&c).await;
    let old_node = c.nodes[old].node().await;
    let old_term = old_node.leader_term().expect("leads").term();
    let granted_at = Instant::now();
    let lease = grant_with_key(&c, old, "election/owner").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    let (new, _) = transfer_from(&c, old, old_term).await;

    // As etcd: a new leader gives every lease a full TTL from when it took over.
    let ttl = lease_client(&c, new)
        .await
        .lease_time_to_live(LeaseTimeToLiveRequest {
            id: lease,
            keys: false,
        })
        .await
        .expect("time to live")
        .into_inner();
    assert_eq!(ttl.granted_ttl, LEASE_TTL_SECS);
    assert!(
        ttl.ttl >= LEASE_TTL_SECS - 1,
        "ttl {} not extended at the leader change",
        ttl.ttl
    );
    // Past the original deadline, the key is still there.
    let original_deadline = granted_at + Duration::from_secs(LEASE_TTL_SECS as u64);
    tokio::time::sleep(original_deadline.saturating_duration_since(Instant::now())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut kv = c.kv(new).await;
    assert_eq!(
        get(&mut kv, "election/owner", false).await.as_deref(),
        Some("held")
    );
    // And it does expire, a TTL after the new leader took over.
    wait_key_gone(&mut kv, "election/owner").await;
}

fn put_cmd(key: &str) -> Command {
    let req = TxnRequest {
        success: vec![cairn_proto::etcdserverpb::RequestOp {
            request: Some(cairn_proto::etcdserverpb::request_op::Request::RequestPut(
                PutRequest {
                    key: key.into(),
                    value: b"decided".to_vec(),
                    ..Default::default()
                },
            )),
        }],
        ..Default::default()
    };
    Command::txn(&req)
}

async fn stored(node: &Arc<Node>, key: &str) -> bool {
    node.read_barrier().await.expect("barrier");
    let req = cairn_proto::etcdserverpb::RangeRequest {
        key: key.into(),
        ..Default::default()
    };
    let s = node.sm.read();
    s.kv.range(&req).map(|r| !r.kvs.is_empty()).unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_decided_in_an_ended_term_is_refused() {
    let c = TestCluster::start(3, |_| {}).await;
    let old = leader_index(&c).await;
    let old_node = c.nodes[old].node().await;
    let old_term = old_node.leader_term().expect("leads").term();
    old_node
        .propose_in_term(old_term, put_cmd("fenced/in-term"))
        .await
        .expect("a write of the current term");
    assert!(stored(&old_node, "fenced/in-term").await);

    let (new, new_term) = transfer_from(&c, old, old_term).await;
    let new_node = c.nodes[new].node().await;
    // The new leader's services can start before the old leader has heard of the new term (a
    // quorum without it elected the new one): wait until it follows the new leader.
    let new_id = c.nodes[new].config.node_id;
    wait_until("the old leader follows the new one", || {
        old_node.leader() == Some(new_id)
    })
    .await;

    // The deposed leader refuses its own stale decision at once.
    let err = old_node
        .propose_in_term(old_term, put_cmd("fenced/stale-local"))
        .await
        .expect_err("deposed leader wrote");
    assert_eq!(err.message(), "etcdserver: leader changed");

    // Carried to the new leader (as a forwarded write would be), the state machine refuses it.
    let answer = new_node
        .serve_as_leader(LeaderRequest::Write(Command::Fenced {
            term: old_term,
            cmd: Box::new(put_cmd("fenced/stale-forwarded")),
        }))
        .await
        .expect("served");
    match answer {
        LeaderResponse::Written(r) => match r.outcome {
            Outcome::Rejected(reason) => assert_eq!(reason.message, TERM_ENDED_MESSAGE),
            other => panic!("a stale decision was applied: {other:?}"),
        },
        other => panic!("unexpected answer {other:?}"),
    }
    assert!(!stored(&new_node, "fenced/stale-local").await);
    assert!(!stored(&new_node, "fenced/stale-forwarded").await);

    // The new leader's own decisions go through.
    new_node
        .propose_in_term(new_term, put_cmd("fenced/new-term"))
        .await
        .expect("a write of the new term");
    assert!(stored(&new_node, "fenced/new-term").await);
    assert!(stored(&old_node, "fenced/new-term").await);
}
