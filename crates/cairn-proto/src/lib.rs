//! Wire types and gRPC service stubs for Cairn.
//!
//! This crate is generated at build time from the `.proto` files in
//! `proto/` and contains two groups of modules:
//!
//! * The etcd v3 client API, wire-compatible with etcd v3.5 so stock etcd
//!   clients (etcdctl, client libraries) can talk to Cairn:
//!   [`mvccpb`], [`authpb`], [`etcdserverpb`], [`v3electionpb`], [`v3lockpb`].
//!   The Downgrade RPC is not included.
//! * Cairn's own services: [`raftpb`] (node-to-node replication transport,
//!   proto package `cairn.raft`) and [`cairnpb`] (administrative API and
//!   error details, proto package `cairn.v1`).
//!
//! Every service module comes with both a server (`*_server`) and a client
//! (`*_client`) half. The modules are siblings at the crate root because the
//! generated code refers across packages via `super::<package>`.

/// Every message and service above as an encoded `google.protobuf.FileDescriptorSet`: field
/// names, JSON names, enum names and types, for the HTTP/JSON gateway.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cairn_descriptors.bin"));

/// etcd storage types: `KeyValue` and `Event` (proto package `mvccpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's auth records: users, roles, key permissions (proto package `authpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// The etcd v3 KV, Watch, Lease, Cluster, Maintenance and Auth services
/// (proto package `etcdserverpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// The etcd v3 Election service (proto package `v3electionpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// The etcd v3 Lock service (proto package `v3lockpb`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// Cairn's peer-to-peer replication transport (proto package `cairn.raft`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod raftpb {
    tonic::include_proto!("cairn.raft");
}

/// Cairn's administrative API and error details (proto package `cairn.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod cairnpb {
    tonic::include_proto!("cairn.v1");
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::etcdserverpb::{
        compare::{CompareResult, CompareTarget, TargetUnion},
        request_op::Request,
        Compare, PutRequest, RangeRequest, RequestOp, TxnRequest,
    };

    #[test]
    fn put_request_field_tags() {
        let put = PutRequest {
            key: b"a".to_vec(),
            value: b"b".to_vec(),
            ..Default::default()
        };
        assert_eq!(put.encode_to_vec(), vec![0x0a, 1, b'a', 0x12, 1, b'b']);
    }

    #[test]
    fn compare_field_tags() {
        // result=GREATER (1:varint), target=MOD (2:varint), key (3:bytes),
        // mod_revision (6:varint), range_end (64:bytes).
        let cmp = Compare {
            result: CompareResult::Greater as i32,
            target: CompareTarget::Mod as i32,
            key: b"k".to_vec(),
            range_end: b"z".to_vec(),
            target_union: Some(TargetUnion::ModRevision(5)),
        };
        let bytes = cmp.encode_to_vec();
        assert_eq!(
            bytes,
            vec![
                0x08, 1, // result
                0x10, 2, // target
                0x1a, 1, b'k', // key
                0x30, 5, // mod_revision = field 6, varint
                0x82, 0x04, 1, b'z', // range_end = field 64, length-delimited
            ]
        );
    }

    #[test]
    fn txn_roundtrip() {
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal as i32,
                target: CompareTarget::Mod as i32,
                key: b"a".to_vec(),
                target_union: Some(TargetUnion::ModRevision(7)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: b"a".to_vec(),
                    value: b"b".to_vec(),
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(Request::RequestRange(RangeRequest {
                    key: b"a".to_vec(),
                    ..Default::default()
                })),
            }],
        };
        let bytes = txn.encode_to_vec();

        // compare (field 1): Compare{target=MOD, key="a", mod_revision=7}
        // (result EQUAL is the default and is omitted).
        let compare = [0x10, 2, 0x1a, 1, b'a', 0x30, 7];
        // success (field 2): RequestOp{request_put (field 2): PutRequest}
        let put = [0x0a, 1, b'a', 0x12, 1, b'b'];
        // failure (field 3): RequestOp{request_range (field 1): RangeRequest}
        let range = [0x0a, 1, b'a'];
        let mut expected = vec![0x0a, compare.len() as u8];
        expected.extend_from_slice(&compare);
        expected.extend_from_slice(&[0x12, put.len() as u8 + 2, 0x12, put.len() as u8]);
        expected.extend_from_slice(&put);
        expected.extend_from_slice(&[0x1a, range.len() as u8 + 2, 0x0a, range.len() as u8]);
        expected.extend_from_slice(&range);
        assert_eq!(bytes, expected);

        let decoded = TxnRequest::decode(bytes.as_slice()).expect("decode");
        assert_eq!(decoded, txn);
        assert_eq!(
            decoded.compare[0].target_union,
            Some(TargetUnion::ModRevision(7))
        );
    }
}

/// The gRPC codec of every service above: prost's, with smaller buffers.
pub mod codec {
    use prost::Message;
    use std::marker::PhantomData;
    use tonic::codec::{BufferSettings, Codec};
    use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

    /// Bytes of the buffer a call starts with to encode or to decode a message; larger messages
    /// grow it. tonic's default is 8 KiB, allocated twice per call on each side: above glibc's
    /// per-thread cache (1,032 bytes), so each took malloc's slow path, one of the larger callers
    /// of an allocator that was about a sixth of the servers' CPU under many small writes
    /// (BENCHMARKS.md, issue 12). etcd's requests and responses are mostly far smaller.
    pub const GRPC_CODEC_BUFFER_BYTES: usize = 1024;
    /// How many bytes a stream gathers before it yields them for sending (tonic's default).
    pub const GRPC_STREAM_YIELD_BYTES: usize = 32 * 1024;

    fn buffer_settings() -> BufferSettings {
        BufferSettings::new(GRPC_CODEC_BUFFER_BYTES, GRPC_STREAM_YIELD_BYTES)
    }

    /// prost's codec with [`GRPC_CODEC_BUFFER_BYTES`] buffers.
    #[derive(Debug, Clone)]
    pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

    impl<T, U> Default for SmallBufferCodec<T, U> {
        fn default() -> Self {
            Self(PhantomData)
        }
    }

    impl<T, U> Codec for SmallBufferCodec<T, U>
    where
        T: Message + Send + 'static,
        U: Message + Default + Send + 'static,
    {
        type Encode = T;
        type Decode = U;
        type Encoder = ProstEncoder<T>;
        type Decoder = ProstDecoder<U>;

        fn encoder(&mut self) -> Self::Encoder {
            ProstCodec::<T, U>::raw_encoder(buffer_settings())
        }

        fn decoder(&mut self) -> Self::Decoder {
            ProstCodec::<T, U>::raw_decoder(buffer_settings())
        }
    }
}
