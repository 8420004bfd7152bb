//! Bad input on the peer port: an oversized message or snapshot stream is refused with
//! `ResourceExhausted` naming the limit, a message on the replication stream that does not decode
//! with `InvalidArgument`, and the node goes on serving.

mod common;

use cairn_proto::raftpb::raft_peer_client::RaftPeerClient;
use cairn_proto::raftpb::{RaftMessage, SnapshotChunk};
use cairn_store::network::encode;
use cairn_store::TypeConfig;
use cairn_types::limits::PEER_MESSAGE_BYTES_MAX;
use common::*;
use openraft::alias::{SnapshotMetaOf, VoteOf};
use tonic::Code;

/// A small limit, so the test need not stream gigabytes.
const SNAPSHOT_LIMIT: usize = 3 * 1024 * 1024;

async fn peer_client(cluster: &TestCluster) -> RaftPeerClient<tonic::transport::Channel> {
    RaftPeerClient::new(channel(&cluster.nodes[0].config.listen_peer).await)
        .max_encoding_message_size(usize::MAX)
}

async fn assert_serving(cluster: &TestCluster, n: usize) {
    let mut kv = cluster.kv(0).await;
    put(&mut kv, &format!("still/{n}"), "up").await;
    assert_eq!(
        get(&mut kv, &format!("still/{n}"), false).await.as_deref(),
        Some("up")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_peer_message_and_snapshot_are_refused_and_the_node_serves_on() {
    let cluster = TestCluster::start(1, |c| c.snapshot_bytes_max = SNAPSHOT_LIMIT).await;
    assert_serving(&cluster, 0).await;

    // One byte over the message limit, on a unary RPC: refused before it is buffered.
    let mut peer = peer_client(&cluster).await;
    let err = peer
        .append_entries(RaftMessage {
            data: vec![0; PEER_MESSAGE_BYTES_MAX + 1],
        })
        .await
        .expect_err("an oversized AppendEntries was accepted");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("peer_message_bytes_max"), "{err:?}");
    assert_serving(&cluster, 1).await;

    // A snapshot stream of well-formed chunks that adds up to more than the node accepts.
    let meta = encode(&(
        VoteOf::<TypeConfig>::new(1, 1),
        SnapshotMetaOf::<TypeConfig>::default(),
    ))
    .unwrap();
    let chunk_bytes = 1024 * 1024;
    let chunks = SNAPSHOT_LIMIT / chunk_bytes + 2;
    let stream = (0..chunks).map(move |i| SnapshotChunk {
        meta: if i == 0 { meta.clone() } else { Vec::new() },
        data: vec![7; chunk_bytes],
        done: i + 1 == chunks,
    });
    let err = peer_client(&cluster)
        .await
        .full_snapshot(futures::stream::iter(stream))
        .await
        .expect_err("an oversized snapshot was accepted");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("snapshot_bytes_max"), "{err:?}");
    assert_serving(&cluster, 2).await;

    // A single chunk over the message limit inside the stream is refused the same way.
    let meta = encode(&(
        VoteOf::<TypeConfig>::new(1, 1),
        SnapshotMetaOf::<TypeConfig>::default(),
    ))
    .unwrap();
    let stream = [SnapshotChunk {
        meta,
        data: vec![7; PEER_MESSAGE_BYTES_MAX + 1],
        done: true,
    }];
    let err = peer_client(&cluster)
        .await
        .full_snapshot(futures::stream::iter(stream))
        .await
        .expect_err("an oversized snapshot chunk was accepted");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("peer_message_bytes_max"), "{err:?}");
    assert_serving(&cluster, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_on_the_replication_stream_are_refused_and_the_node_serves_on() {
    let cluster = TestCluster::start(1, |_| {}).await;
    assert_serving(&cluster, 0).await;
    let cases = [
        (vec![0xff; 16], Code::InvalidArgument, "decode"),
        (
            vec![0; PEER_MESSAGE_BYTES_MAX + 1],
            Code::ResourceExhausted,
            "peer_message_bytes_max",
        ),
    ];
    for (n, (data, code, named)) in cases.into_iter().enumerate() {
        let mut answers = peer_client(&cluster)
            .await
            .stream_append(futures::stream::iter([RaftMessage { data }]))
            .await
            .expect("the stream opens")
            .into_inner();
        let err = answers
            .message()
            .await
            .expect_err("a bad AppendEntries on the stream was accepted");
        assert_eq!(err.code(), code, "{err:?}");
        assert!(err.message().contains(named), "{err:?}");
        assert_serving(&cluster, n + 1).await;
    }
}
