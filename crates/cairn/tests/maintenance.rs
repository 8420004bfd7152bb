//! The rest of etcd's Maintenance and Cluster APIs on a 3-node Cairn: HashKV and Hash agree
//! across members at a revision (so a corrupt member would show), alarms are raised, listed and
//! disarmed, the space quota raises NOSPACE and refuses writes until the operator compacts and
//! disarms, Defragment purges the log, and MemberUpdate changes a member's peer address. The
//! etcdctl parts run when Debian's etcdctl is installed.

mod common;
#[path = "common/settle.rs"]
#[allow(dead_code)]
mod settle;

use cairn_proto::etcdserverpb::alarm_request::AlarmAction;
use cairn_proto::etcdserverpb::{
    AlarmRequest, AlarmType, CompactionRequest, DefragmentRequest, DeleteRangeRequest,
    HashKvRequest, HashRequest, PutRequest,
};
use common::etcdctl::{self, Etcdctl};
use common::TestCluster;
use settle::eventually;
use tonic::Code;

async fn put(cluster: &TestCluster, key: &str, value: Vec<u8>) -> Result<i64, tonic::Status> {
    cluster
        .kv(0)
        .put(PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().header.expect("header").revision)
}

async fn alarms(cluster: &TestCluster, i: usize) -> Vec<(u64, i32)> {
    let mut list: Vec<(u64, i32)> = cluster
        .maintenance(i)
        .alarm(AlarmRequest {
            action: AlarmAction::Get as i32,
            member_id: 0,
            alarm: 0,
        })
        .await
        .expect("alarm list")
        .into_inner()
        .alarms
        .into_iter()
        .map(|a| (a.member_id, a.alarm))
        .collect();
    list.sort();
    list
}

/// Member `i`'s alarms once it lists `count` of them (members apply the alarm a moment after
/// the one that raised it); panics past a bound.
async fn wait_alarms(cluster: &TestCluster, i: usize, count: usize) -> Vec<(u64, i32)> {
    let what = format!("node {} to list {count} alarms", i + 1);
    eventually(&what, || async move {
        let list = alarms(cluster, i).await;
        (list.len() == count).then_some(list)
    })
    .await
}

/// Waits (bounded) until every member has applied up to `revision`.
async fn applied_everywhere(cluster: &TestCluster, revision: i64) {
    for i in 0..cluster.size() {
        let what = format!("node {} to apply revision {revision}", i + 1);
        eventually(&what, || async move {
            let r = cluster.status(i).await.ok().and_then(|s| s.header);
            r.is_some_and(|h| h.revision >= revision).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashes_agree_across_members_and_show_a_difference() {
    let cluster = TestCluster::start(3).await;
    let mut rev = 0;
    for i in 0..50 {
        rev = put(&cluster, &format!("k{}", i % 7), vec![b'v'; i])
            .await
            .unwrap();
    }
    applied_everywhere(&cluster, rev).await;
    let mut hashes = Vec::new();
    for i in 0..3 {
        let h = cluster
            .maintenance(i)
            .hash_kv(HashKvRequest { revision: rev })
            .await
            .expect("hashkv")
            .into_inner();
        hashes.push(h.hash);
    }
    assert!(hashes.iter().all(|h| *h == hashes[0]), "{hashes:?}");
    // One more write: the hash at the old revision stays, the current one moves.
    let next = put(&cluster, "k0", b"changed".to_vec()).await.unwrap();
    applied_everywhere(&cluster, next).await;
    let mut m = cluster.maintenance(1);
    let old = m.hash_kv(HashKvRequest { revision: rev }).await.unwrap();
    assert_eq!(old.into_inner().hash, hashes[0]);
    let now = m.hash_kv(HashKvRequest { revision: 0 }).await.unwrap();
    assert_ne!(now.into_inner().hash, hashes[0]);
    let future = m
        .hash_kv(HashKvRequest {
            revision: next + 100,
        })
        .await
        .unwrap_err();
    assert_eq!(future.code(), Code::OutOfRange, "{future:?}");
    let whole: Vec<u32> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(
                cluster
                    .maintenance(i)
                    .hash(HashRequest {})
                    .await
                    .unwrap()
                    .into_inner()
                    .hash,
            );
        }
        v
    };
    assert!(whole.iter().all(|h| *h == whole[0]), "{whole:?}");

    if etcdctl::installed() {
        // etcdctl prints each endpoint's hash: the three agree.
        let ctl = Etcdctl::new(&cluster.client_addrs());
        let out = ctl.json(&["endpoint", "hashkv"]);
        let hashes: Vec<u64> = out
            .as_array()
            .expect("one entry per endpoint")
            .iter()
            .map(|e| e["HashKV"]["hash"].as_u64().expect("a hash"))
            .collect();
        assert_eq!(hashes.len(), 3, "{out}");
        assert!(hashes.iter().all(|h| *h == hashes[0]), "{out}");
        let defrag = ctl.ok(&["defrag"]);
        assert_eq!(
            defrag.matches("Finished defragmenting").count(),
            3,
            "{defrag}"
        );
    } else {
        eprintln!("SKIPPED (etcdctl parts): etcdctl not installed");
    }
    // Defragment builds a snapshot on the member asked.
    cluster
        .maintenance(2)
        .defragment(DefragmentRequest {})
        .await
        .expect("defragment");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_space_quota_raises_nospace_until_compacted_and_disarmed() {
    // 64 KiB of key-value data.
    let cluster =
        TestCluster::start_with_args(3, vec!["--quota-backend-bytes".into(), "65536".into()]).await;
    let mut refused = None;
    for i in 0..200 {
        match put(&cluster, &format!("big/{i}"), vec![b'x'; 2048]).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (at, err) = refused.expect("the quota refuses a write");
    assert!(at > 10, "refused after {at} writes");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(err.message(), "etcdserver: mvcc: database space exceeded");
    // Every member knows the alarm, and refuses even a small write and a lease.
    for i in 0..3 {
        let list = wait_alarms(&cluster, i, 1).await;
        assert_eq!(list[0].1, AlarmType::Nospace as i32);
    }
    let small = put(&cluster, "small", b"1".to_vec()).await.unwrap_err();
    assert_eq!(small.message(), "etcdserver: mvcc: database space exceeded");
    // /health says why.
    let (code, body) = common::net::http_get(cluster.spec(0).client_port, "/health")
        .await
        .unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("ALARM NOSPACE"), "{body}");

    // Deletes still go through; compaction frees the space; disarming lets writes in again.
    let rev = cluster
        .kv(0)
        .delete_range(DeleteRangeRequest {
            key: b"big/".to_vec(),
            range_end: b"big0".to_vec(),
            ..Default::default()
        })
        .await
        .expect("delete while NOSPACE")
        .into_inner()
        .header
        .unwrap()
        .revision;
    cluster
        .kv(0)
        .compact(CompactionRequest {
            revision: rev,
            physical: true,
        })
        .await
        .expect("compact while NOSPACE");
    assert!(
        put(&cluster, "still", b"no".to_vec()).await.is_err(),
        "still armed"
    );
    if etcdctl::installed() {
        let ctl = Etcdctl::new(&cluster.client_addrs());
        let listed = ctl.ok(&["alarm", "list"]);
        assert!(listed.contains("alarm:NOSPACE"), "{listed}");
        let disarmed = ctl.ok(&["alarm", "disarm"]);
        assert!(disarmed.contains("alarm:NOSPACE"), "{disarmed}");
        // etcdctl may ask another member than the one that disarmed, and members apply the
        // disarm a moment after it is acknowledged (as `wait_alarms`): poll, bounded.
        eventually("alarm list to be empty after the disarm", || {
            let listed = ctl.ok(&["alarm", "list"]);
            async move { listed.is_empty().then_some(()) }
        })
        .await;
    } else {
        eprintln!("SKIPPED (etcdctl parts): etcdctl not installed");
        let (member_id, alarm) = alarms(&cluster, 0).await[0];
        cluster
            .maintenance(0)
            .alarm(AlarmRequest {
                action: AlarmAction::Deactivate as i32,
                member_id,
                alarm,
            })
            .await
            .expect("disarm");
    }
    put(&cluster, "after", b"ok".to_vec())
        .await
        .expect("writes go through once disarmed");
    wait_alarms(&cluster, 2, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_are_raised_and_disarmed_by_request_and_member_update_moves_a_peer() {
    let cluster = TestCluster::start(3).await;
    let mut m = cluster.maintenance(1);
    let raised = m
        .alarm(AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: 3,
            alarm: AlarmType::Corrupt as i32,
        })
        .await
        .expect("activate")
        .into_inner();
    assert_eq!(raised.alarms.len(), 1);
    assert_eq!(
        wait_alarms(&cluster, 0, 1).await,
        vec![(3, AlarmType::Corrupt as i32)]
    );
    // Member 2 (through which it is disarmed below, answering with what it had) applies the
    // alarm a moment after the leader acknowledged it, like member 1.
    assert_eq!(
        wait_alarms(&cluster, 1, 1).await,
        vec![(3, AlarmType::Corrupt as i32)]
    );
    // CORRUPT does not refuse writes (only NOSPACE does).
    put(&cluster, "a", b"1".to_vec())
        .await
        .expect("write with CORRUPT raised");
    let bad = m
        .alarm(AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: 3,
            alarm: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let gone = m
        .alarm(AlarmRequest {
            action: AlarmAction::Deactivate as i32,
            member_id: 3,
            alarm: AlarmType::Corrupt as i32,
        })
        .await
        .expect("deactivate")
        .into_inner();
    assert_eq!(gone.alarms.len(), 1);
    wait_alarms(&cluster, 2, 0).await;

    // MemberUpdate: a follower's peer address changes in the membership everyone sees (a
    // follower: requests are forwarded to the leader at its peer address, and nothing listens
    // at the new one in this test).
    let leader = cluster.leader_id().await.expect("a leader");
    let target = (1..=3).find(|id| *id != leader).unwrap();
    let new_peer = format!("127.0.0.1:{}", common::net::pick_free_ports(1)[0]);
    let mut c = cairn_proto::etcdserverpb::cluster_client::ClusterClient::new(cluster.channel(0));
    let resp = c
        .member_update(cairn_proto::etcdserverpb::MemberUpdateRequest {
            id: target,
            peer_ur_ls: vec![format!("http://{new_peer}")],
        })
        .await
        .expect("member update")
        .into_inner();
    let moved = resp
        .members
        .iter()
        .find(|m| m.id == target)
        .expect("the member");
    assert_eq!(moved.peer_ur_ls, vec![format!("http://{new_peer}")]);
    let listed = c
        .member_list(cairn_proto::etcdserverpb::MemberListRequest { linearizable: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.members.len(), 3);
    let unknown = c
        .member_update(cairn_proto::etcdserverpb::MemberUpdateRequest {
            id: 99,
            peer_ur_ls: vec!["http://127.0.0.1:1".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    // Back to where it listens: the cluster keeps all three voters working.
    c.member_update(cairn_proto::etcdserverpb::MemberUpdateRequest {
        id: target,
        peer_ur_ls: vec![format!(
            "http://127.0.0.1:{}",
            cluster.spec(target as usize - 1).peer_port
        )],
    })
    .await
    .expect("member update back");
    put(&cluster, "b", b"2".to_vec())
        .await
        .expect("write after updates");
}
