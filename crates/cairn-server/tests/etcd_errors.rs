//! Bad input gets etcd's error code and message, and never changes what is stored.

mod common;

use cairn_proto::etcdserverpb::watch_client::WatchClient;
use cairn_proto::etcdserverpb::watch_request::RequestUnion;
use cairn_proto::etcdserverpb::{
    request_op, CompactionRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest,
};
use common::*;
use tonic::Code;

fn put_op(key: &str, lease: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease,
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_etcd_errors_and_change_nothing() {
    let cluster = TestCluster::start(1, |c| {
        c.request_bytes_max = 4096;
        c.txn_ops_max = 4;
    })
    .await;
    let mut kv = cluster.kv(0).await;
    let before = put(&mut kv, "stable", "1").await;

    let err = kv.put(PutRequest::default()).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "etcdserver: key is not provided")
    );

    let err = kv
        .put(PutRequest {
            key: b"big".to_vec(),
            value: vec![7; 5000],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("etcdserver: request is too large"),
        "{}",
        err.message()
    );
    assert!(
        err.message().contains("request_bytes_max 4096"),
        "{}",
        err.message()
    );

    let txn = TxnRequest {
        success: (0..5).map(|i| put_op(&format!("t{i}"), 0)).collect(),
        ..Default::default()
    };
    let err = kv.txn(txn).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::InvalidArgument,
            "etcdserver: too many operations in txn request"
        )
    );

    let txn = TxnRequest {
        success: vec![put_op("dup", 0), put_op("dup", 0)],
        ..Default::default()
    };
    let err = kv.txn(txn).await.unwrap_err();
    assert_eq!(
        err.message(),
        "etcdserver: duplicate key given in txn request"
    );

    // One good put and one with a lease that does not exist: nothing is applied.
    let txn = TxnRequest {
        success: vec![put_op("half-a", 0), put_op("half-b", 12345)],
        ..Default::default()
    };
    let err = kv.txn(txn).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::NotFound, "etcdserver: requested lease not found")
    );
    assert_eq!(get(&mut kv, "half-a", false).await, None);

    let err = kv
        .range(RangeRequest {
            key: b"stable".to_vec(),
            revision: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision is a future revision"
        )
    );

    // Nothing stored was lost and the revision did not move.
    assert_eq!(get(&mut kv, "stable", false).await.as_deref(), Some("1"));
    let now = kv
        .range(RangeRequest {
            key: b"stable".to_vec(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .header
        .unwrap()
        .revision;
    assert_eq!(now, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_revisions_are_refused_for_reads_and_watches() {
    let cluster = TestCluster::start(1, |_| {}).await;
    let mut kv = cluster.kv(0).await;
    let r1 = put(&mut kv, "c", "1").await;
    put(&mut kv, "c", "2").await;
    let r3 = put(&mut kv, "c", "3").await;
    kv.compact(CompactionRequest {
        revision: r3,
        physical: false,
    })
    .await
    .expect("compact");
    let err = kv
        .range(RangeRequest {
            key: b"c".to_vec(),
            revision: r1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (
            Code::OutOfRange,
            "etcdserver: mvcc: required revision has been compacted"
        )
    );
    let err = kv
        .compact(CompactionRequest {
            revision: r1,
            physical: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);

    let mut watch = WatchClient::new(channel(&cluster.nodes[0].client_addr()).await);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: b"c".to_vec(),
            start_revision: r1,
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut stream = watch
        .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let created = stream.message().await.unwrap().unwrap();
    assert!(created.created);
    let cancelled = stream.message().await.unwrap().unwrap();
    assert!(cancelled.canceled);
    assert_eq!(cancelled.compact_revision, r3);
}
