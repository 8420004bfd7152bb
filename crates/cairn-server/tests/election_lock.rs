//! etcd's Lock and Election services end to end, over gRPC against in-process nodes: queueing,
//! fencing revisions, lease loss, abandoned waiters, leadership hand-over and Observe.

mod common;

use cairn_proto::etcdserverpb::lease_client::LeaseClient;
use cairn_proto::etcdserverpb::{LeaseGrantRequest, LeaseRevokeRequest, RangeRequest};
use cairn_proto::v3electionpb::election_client::ElectionClient;
use cairn_proto::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, LeaderResponse, ProclaimRequest, ResignRequest,
};
use cairn_proto::v3lockpb::lock_client::LockClient;
use cairn_proto::v3lockpb::{LockRequest, UnlockRequest};
use common::*;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

/// How long a call that must stay blocked is given to (wrongly) complete.
const STILL_BLOCKED_MS: u64 = 500;
/// Upper bound on a call that must complete.
const COMPLETES_WITHIN: Duration = Duration::from_secs(10);

struct Clients {
    lock: LockClient<Channel>,
    election: ElectionClient<Channel>,
    lease: LeaseClient<Channel>,
    kv: cairn_proto::etcdserverpb::kv_client::KvClient<Channel>,
}

async fn clients(cluster: &TestCluster, i: usize) -> Clients {
    let ch = channel(&cluster.nodes[i].client_addr()).await;
    Clients {
        lock: LockClient::new(ch.clone()),
        election: ElectionClient::new(ch.clone()),
        lease: LeaseClient::new(ch.clone()),
        kv: cairn_proto::etcdserverpb::kv_client::KvClient::new(ch),
    }
}

async fn grant(c: &mut Clients, ttl: i64) -> i64 {
    c.lease
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id
}

/// The create revision of `key`, None if it does not exist.
async fn create_revision(c: &mut Clients, key: &[u8]) -> Option<i64> {
    let r =
        c.kv.range(RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    r.kvs.first().map(|kv| kv.create_revision)
}

/// Waits until `key` exists (`present`) or is gone, failing with `what` past
/// [`COMPLETES_WITHIN`].
async fn wait_for_key(c: &mut Clients, key: &[u8], present: bool, what: &str) {
    let deadline = tokio::time::Instant::now() + COMPLETES_WITHIN;
    while create_revision(c, key).await.is_some() != present {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_leader(stream: &mut Streaming<LeaderResponse>) -> (Vec<u8>, Vec<u8>) {
    let msg = tokio::time::timeout(COMPLETES_WITHIN, stream.message())
        .await
        .expect("observe update in time")
        .expect("observe stream ok")
        .expect("observe stream open");
    let kv = msg.kv.expect("leader kv");
    (kv.key, kv.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_lock_waits_for_unlock_and_gets_a_higher_fencing_revision() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let mut c = clients(&cluster, 0).await;
    let (l1, l2) = (grant(&mut c, 60).await, grant(&mut c, 60).await);

    let first = c
        .lock
        .lock(LockRequest {
            name: b"jobs".to_vec(),
            lease: l1,
        })
        .await
        .expect("first lock")
        .into_inner();
    assert_eq!(first.key, format!("jobs/{l1:x}").into_bytes());
    let first_rev = create_revision(&mut c, &first.key)
        .await
        .expect("holder key");

    let mut waiter_client = c.lock.clone();
    let waiter = tokio::spawn(async move {
        waiter_client
            .lock(LockRequest {
                name: b"jobs".to_vec(),
                lease: l2,
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(STILL_BLOCKED_MS)).await;
    assert!(
        !waiter.is_finished(),
        "second Lock must wait while the first holds"
    );

    let unlocked = c
        .lock
        .unlock(UnlockRequest {
            key: first.key.clone(),
        })
        .await
        .expect("unlock")
        .into_inner();
    let second = tokio::time::timeout(COMPLETES_WITHIN, waiter)
        .await
        .expect("second Lock completes after Unlock")
        .unwrap()
        .expect("second lock")
        .into_inner();
    assert_eq!(second.key, format!("jobs/{l2:x}").into_bytes());
    let second_rev = create_revision(&mut c, &second.key)
        .await
        .expect("holder key");
    assert!(second_rev > first_rev, "fencing revision must grow");
    assert!(
        second.header.unwrap().revision >= unlocked.header.unwrap().revision,
        "the lock is granted no earlier than the release"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_waiter_on_a_follower_wakes_when_the_holder_unlocks_on_the_leader() {
    let cluster = TestCluster::start(3, |_| {}).await;
    let leader = cluster.index_of(cluster.wait_leader().await);
    let follower = (0..3).find(|i| *i != leader).unwrap();
    let mut on_leader = clients(&cluster, leader).await;
    let mut on_follower = clients(&cluster, follower).await;
    let (l1, l2) = (
        grant(&mut on_leader, 60).await,
        grant(&mut on_follower, 60).await,
    );

    let held = on_leader
        .lock
        .lock(LockRequest {
            name: b"f".to_vec(),
            lease: l1,
        })
        .await
        .unwrap()
        .into_inner();
    let mut lc = on_follower.lock.clone();
    let waiter = tokio::spawn(async move {
        lc.lock(LockRequest {
            name: b"f".to_vec(),
            lease: l2,
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(STILL_BLOCKED_MS)).await;
    assert!(!waiter.is_finished());
    on_leader
        .lock
        .unlock(UnlockRequest { key: held.key })
        .await
        .unwrap();
    let got = tokio::time::timeout(COMPLETES_WITHIN, waiter)
        .await
        .expect("follower waiter wakes")
        .unwrap()
        .expect("lock on follower");
    assert_eq!(got.into_inner().key, format!("f/{l2:x}").into_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_waiter_fails_when_its_lease_is_revoked() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let mut c = clients(&cluster, 0).await;
    let (l1, l2) = (grant(&mut c, 60).await, grant(&mut c, 60).await);
    c.lock
        .lock(LockRequest {
            name: b"r".to_vec(),
            lease: l1,
        })
        .await
        .unwrap();
    let mut lc = c.lock.clone();
    let waiter = tokio::spawn(async move {
        lc.lock(LockRequest {
            name: b"r".to_vec(),
            lease: l2,
        })
        .await
    });
    // Revoke only once the waiter is queued (its key written): revoked before its Lock reached
    // the server, the call would fail as a lock on an unknown lease, not as a lost session.
    let waiter_key = format!("r/{l2:x}").into_bytes();
    wait_for_key(&mut c, &waiter_key, true, "waiter never queued").await;
    c.lease
        .lease_revoke(LeaseRevokeRequest { id: l2 })
        .await
        .unwrap();
    let err = tokio::time::timeout(COMPLETES_WITHIN, waiter)
        .await
        .expect("waiter ends when its lease goes")
        .unwrap()
        .expect_err("waiter must fail");
    assert_eq!(err.code(), Code::Unknown);
    assert_eq!(err.message(), "mutex: session is expired");
    // The holder is unaffected.
    assert!(create_revision(&mut c, format!("r/{l1:x}").as_bytes())
        .await
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_lock_waiter_withdraws_its_key() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let mut c = clients(&cluster, 0).await;
    let (l1, l2) = (grant(&mut c, 60).await, grant(&mut c, 60).await);
    c.lock
        .lock(LockRequest {
            name: b"a".to_vec(),
            lease: l1,
        })
        .await
        .unwrap();
    // The client gives up after a deadline: the server drops the call.
    let mut req = tonic::Request::new(LockRequest {
        name: b"a".to_vec(),
        lease: l2,
    });
    req.set_timeout(Duration::from_millis(300));
    let err = c.lock.lock(req).await.expect_err("deadline");
    // tonic's client enforces the deadline itself (Cancelled) and resets the stream.
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    let waiter_key = format!("a/{l2:x}").into_bytes();
    wait_for_key(
        &mut c,
        &waiter_key,
        false,
        "abandoned waiter key stays queued",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_waiter_keeps_a_short_lease_alive_while_it_waits() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let mut c = clients(&cluster, 0).await;
    let holder = grant(&mut c, 60).await;
    let short = grant(&mut c, 2).await;
    let held = c
        .lock
        .lock(LockRequest {
            name: b"k".to_vec(),
            lease: holder,
        })
        .await
        .unwrap()
        .into_inner();
    let mut lc = c.lock.clone();
    let waiter = tokio::spawn(async move {
        lc.lock(LockRequest {
            name: b"k".to_vec(),
            lease: short,
        })
        .await
    });
    // Twice the waiter's TTL: without keep-alives its lease would expire and the call fail.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!waiter.is_finished(), "waiter still queued, lease alive");
    c.lock
        .unlock(UnlockRequest { key: held.key })
        .await
        .unwrap();
    tokio::time::timeout(COMPLETES_WITHIN, waiter)
        .await
        .expect("waiter wakes")
        .unwrap()
        .expect("waiter gets the lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_with_an_unknown_lease_is_refused() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let mut c = clients(&cluster, 0).await;
    let err = c
        .lock
        .lock(LockRequest {
            name: b"x".to_vec(),
            lease: 0x7777,
        })
        .await
        .expect_err("no such lease");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "etcdserver: requested lease not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_hands_over_between_two_candidates_and_observe_follows() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let mut c = clients(&cluster, 0).await;
    let (la, lb) = (grant(&mut c, 60).await, grant(&mut c, 60).await);
    let name = b"svc".to_vec();

    let err = c
        .election
        .leader(LeaderRequest { name: name.clone() })
        .await
        .expect_err("nobody campaigns yet");
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unknown, "election: no leader")
    );

    let mut observe = c
        .election
        .observe(LeaderRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();

    let a = c
        .election
        .campaign(CampaignRequest {
            name: name.clone(),
            lease: la,
            value: b"a".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .leader
        .unwrap();
    assert_eq!(a.key, format!("svc/{la:x}").into_bytes());
    assert_eq!((a.name.as_slice(), a.lease), (name.as_slice(), la));
    assert_eq!(
        next_leader(&mut observe).await,
        (a.key.clone(), b"a".to_vec())
    );

    let mut ec = c.election.clone();
    let n = name.clone();
    let b_campaign = tokio::spawn(async move {
        ec.campaign(CampaignRequest {
            name: n,
            lease: lb,
            value: b"b".to_vec(),
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(STILL_BLOCKED_MS)).await;
    assert!(!b_campaign.is_finished(), "B waits while A leads");

    c.election
        .proclaim(ProclaimRequest {
            leader: Some(a.clone()),
            value: b"a2".to_vec(),
        })
        .await
        .expect("leader proclaims");
    assert_eq!(
        next_leader(&mut observe).await,
        (a.key.clone(), b"a2".to_vec())
    );
    let now = c
        .election
        .leader(LeaderRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner()
        .kv
        .unwrap();
    assert_eq!(
        (now.key.as_slice(), now.value.as_slice()),
        (a.key.as_slice(), &b"a2"[..])
    );

    c.election
        .resign(ResignRequest {
            leader: Some(a.clone()),
        })
        .await
        .expect("resign");
    let b = tokio::time::timeout(COMPLETES_WITHIN, b_campaign)
        .await
        .expect("B elected after A resigns")
        .unwrap()
        .expect("B campaign")
        .into_inner()
        .leader
        .unwrap();
    assert!(b.rev > a.rev);
    assert_eq!(
        next_leader(&mut observe).await,
        (b.key.clone(), b"b".to_vec())
    );

    // A's old term can no longer speak; a made-up term neither.
    for stale in [
        a.clone(),
        LeaderKey {
            rev: b.rev + 1000,
            ..b.clone()
        },
    ] {
        let err = c
            .election
            .proclaim(ProclaimRequest {
                leader: Some(stale),
                value: b"stale".to_vec(),
            })
            .await
            .expect_err("not leader");
        assert_eq!(
            (err.code(), err.message()),
            (Code::Unknown, "election: not leader")
        );
    }
    // Resigning a gone term is no error, as in etcd, and leaves B leading.
    c.election
        .resign(ResignRequest {
            leader: Some(a.clone()),
        })
        .await
        .expect("stale resign is a no-op");
    let now = c
        .election
        .leader(LeaderRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner()
        .kv
        .unwrap();
    assert_eq!(now.value, b"b".to_vec());

    let err = c
        .election
        .proclaim(ProclaimRequest {
            leader: None,
            value: b"x".to_vec(),
        })
        .await
        .expect_err("missing leader key");
    assert_eq!(err.message(), "\"leader\" field must be provided");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaigning_again_with_a_new_value_proclaims_it() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let mut c = clients(&cluster, 0).await;
    let l = grant(&mut c, 60).await;
    let campaign = |value: &'static [u8]| CampaignRequest {
        name: b"e".to_vec(),
        lease: l,
        value: value.to_vec(),
    };
    let first = c
        .election
        .campaign(campaign(b"v1"))
        .await
        .unwrap()
        .into_inner();
    let again = c
        .election
        .campaign(campaign(b"v2"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.leader, again.leader, "same session, same term");
    let kv = c
        .election
        .leader(LeaderRequest {
            name: b"e".to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .kv
        .unwrap();
    assert_eq!(kv.value, b"v2".to_vec());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_candidate_withdraws_and_the_next_one_leads() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let mut c = clients(&cluster, 0).await;
    let (la, lb, lc) = (
        grant(&mut c, 60).await,
        grant(&mut c, 60).await,
        grant(&mut c, 60).await,
    );
    let campaign = |lease: i64, value: &'static [u8]| CampaignRequest {
        name: b"w".to_vec(),
        lease,
        value: value.to_vec(),
    };
    let a = c
        .election
        .campaign(campaign(la, b"a"))
        .await
        .unwrap()
        .into_inner();
    // B queues behind A, then its client goes away.
    let mut ec = c.election.clone();
    let b = tokio::spawn(async move { ec.campaign(campaign(lb, b"b")).await });
    let b_key = format!("w/{lb:x}").into_bytes();
    wait_for_key(&mut c, &b_key, true, "B never queued").await;
    b.abort();
    wait_for_key(&mut c, &b_key, false, "abandoned candidate stays queued").await;
    // C queues, A resigns: C leads at once, nobody waits on the vanished B.
    let mut ec = c.election.clone();
    let cc = tokio::spawn(async move { ec.campaign(campaign(lc, b"c")).await });
    tokio::time::sleep(Duration::from_millis(STILL_BLOCKED_MS)).await;
    c.election
        .resign(ResignRequest { leader: a.leader })
        .await
        .unwrap();
    let leader = tokio::time::timeout(COMPLETES_WITHIN, cc)
        .await
        .expect("C elected")
        .unwrap()
        .unwrap()
        .into_inner()
        .leader
        .unwrap();
    assert_eq!(leader.key, format!("w/{lc:x}").into_bytes());
}
