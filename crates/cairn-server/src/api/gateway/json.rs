//! JSON as etcd's gRPC gateway (grpc-gateway v1 with `OrigName`) writes and reads it: proto
//! field names, 64-bit integers as strings, bytes as base64, enums by name, default values
//! omitted; errors as `{"error","code","message"}`, and inside a stream as
//! `{"error":{"grpc_code","http_code","message","http_status"}}`.
//!
//! Conversion goes through the descriptors `cairn-proto` compiles with its code, so every
//! message of the etcd API has its JSON form without a hand-written mapping.

use std::sync::LazyLock;

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use prost::Message;
use prost_reflect::{
    DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions,
};
use tonic::{Code, Status};

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(cairn_proto::FILE_DESCRIPTOR_SET)
        .expect("cairn-proto's descriptors are built with its code")
});

const WRITE: SerializeOptions = SerializeOptions::new()
    .use_proto_field_name(true)
    .stringify_64_bit_integers(true)
    .use_enum_numbers(false)
    .skip_default_fields(true);

/// Unknown fields are refused (naming the field) rather than dropped: a misspelt option is an
/// error the caller should see. etcd's gateway ignores them; docs/etcd-gateway.md says so.
const READ: DeserializeOptions = DeserializeOptions::new().deny_unknown_fields(true);

/// The request and response descriptors of one RPC, by its full name
/// (`etcdserverpb.KV.Range`).
#[derive(Clone)]
pub struct Method {
    pub input: MessageDescriptor,
    pub output: MessageDescriptor,
    /// gRPC's service (`etcdserverpb.KV`) and method (`Range`) names.
    pub service: String,
    pub method: String,
}

impl Method {
    /// Panics on a name that is not in the descriptors: the gateway's route table names only
    /// RPCs compiled into `cairn-proto`, and a test walks every route.
    pub fn named(full: &str) -> Method {
        let (service, method) = full.rsplit_once('.').expect("Service.Method");
        let m = POOL
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == method))
            .unwrap_or_else(|| panic!("{full} is not an RPC of cairn-proto"));
        Method {
            input: m.input(),
            output: m.output(),
            service: service.to_string(),
            method: method.to_string(),
        }
    }

    /// Decodes one request from JSON (an empty body is `{}`, as etcd's gateway takes it).
    pub fn decode<M: Message + Default>(&self, body: &[u8]) -> Result<M, Status> {
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            body
        };
        let bad = |e: serde_json::Error| {
            Status::invalid_argument(format!("{}: {e}", self.input.full_name()))
        };
        let mut de = serde_json::Deserializer::from_slice(body);
        let msg = DynamicMessage::deserialize_with_options(self.input.clone(), &mut de, &READ)
            .map_err(bad)?;
        de.end().map_err(bad)?;
        M::decode(msg.encode_to_vec().as_slice())
            .map_err(|e| Status::invalid_argument(format!("{}: {e}", self.input.full_name())))
    }

    /// Encodes one response as JSON.
    pub fn encode<M: Message>(&self, msg: &M) -> Result<Vec<u8>, Status> {
        encode_as(&self.output, msg)
    }
}

fn encode_as<M: Message>(desc: &MessageDescriptor, msg: &M) -> Result<Vec<u8>, Status> {
    let internal = |e: String| Status::internal(format!("encoding {}: {e}", desc.full_name()));
    let dynamic = DynamicMessage::decode(desc.clone(), msg.encode_to_vec().as_slice())
        .map_err(|e| internal(e.to_string()))?;
    let mut out = Vec::with_capacity(msg.encoded_len() * 2 + 16);
    let mut ser = serde_json::Serializer::new(&mut out);
    dynamic
        .serialize_with_options(&mut ser, &WRITE)
        .map_err(|e| internal(e.to_string()))?;
    Ok(out)
}

/// The HTTP status grpc-gateway v1 answers a gRPC code with.
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A JSON string literal.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// `{"error":M,"code":C,"message":M}`, the body of a failed unary call.
pub fn error_body(status: &Status) -> String {
    let m = quoted(status.message());
    format!(
        "{{\"error\":{m},\"code\":{},\"message\":{m}}}",
        status.code() as i32
    )
}

/// One error chunk of a stream: `{"error":{"grpc_code",…}}` and a newline.
pub fn stream_error_chunk(status: &Status) -> String {
    let http = http_status(status.code());
    format!(
        "{{\"error\":{{\"grpc_code\":{},\"http_code\":{},\"message\":{},\"http_status\":{}}}}}\n",
        status.code() as i32,
        http.as_u16(),
        quoted(status.message()),
        quoted(http.canonical_reason().unwrap_or("")),
    )
}

/// The response to a failed call: etcd's error body with the mapped HTTP status.
pub fn error_response(status: &Status) -> Response {
    json_response(http_status(status.code()), error_body(status).into_bytes())
}

/// A JSON body with etcd's gateway headers.
pub fn json_response(code: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = (code, body).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::etcdserverpb::{
        LeaseGrantResponse, PutRequest, RangeRequest, RangeResponse, ResponseHeader,
    };
    use cairn_proto::mvccpb::KeyValue;

    #[test]
    fn responses_are_written_the_way_etcd_writes_them() {
        let m = Method::named("etcdserverpb.KV.Range");
        let resp = RangeResponse {
            header: Some(ResponseHeader {
                cluster_id: 324952591200643719,
                member_id: 3319814642761637952,
                revision: 2,
                raft_term: 2,
            }),
            kvs: vec![KeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                value: b"bar".to_vec(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        // Byte for byte what etcd 3.5.1's gateway answered for the same range.
        assert_eq!(
            String::from_utf8(m.encode(&resp).unwrap()).unwrap(),
            r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"2","raft_term":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1"}"#
        );
        let grant = Method::named("etcdserverpb.Lease.LeaseGrant");
        let out = grant
            .encode(&LeaseGrantResponse {
                id: 77,
                ttl: 30,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"ID":"77","TTL":"30"}"#);
    }

    #[test]
    fn requests_take_strings_or_numbers_names_or_numbers_and_refuse_the_rest() {
        let m = Method::named("etcdserverpb.KV.Range");
        let r: RangeRequest = m
            .decode(br#"{"key":"Zm9v","limit":"2","sort_order":"DESCEND"}"#)
            .unwrap();
        assert_eq!(
            (r.key.as_slice(), r.limit, r.sort_order),
            (&b"foo"[..], 2, 2)
        );
        let r: RangeRequest = m
            .decode(br#"{"key":"Zm9v","limit":2,"sortOrder":1}"#)
            .unwrap();
        assert_eq!((r.limit, r.sort_order), (2, 1));
        let empty: RangeRequest = m.decode(b"  ").unwrap();
        assert_eq!(empty, RangeRequest::default());
        for (body, names) in [
            (&br#"{"key":"Zm9v","bogus":1}"#[..], "bogus"),
            (br#"{"key":5}"#, "etcdserverpb.RangeRequest"),
            (br#"{"key":"Zm9v""#, "EOF"),
            (br#"{"key":"!!!"}"#, "etcdserverpb.RangeRequest"),
            (br#"{"sort_order":"NOPE"}"#, "NOPE"),
            (br#"[1]"#, "etcdserverpb.RangeRequest"),
            (br#"{"key":"Zm9v"} {}"#, "trailing"),
        ] {
            let e = m.decode::<RangeRequest>(body).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            assert!(e.message().contains(names), "{names}: {}", e.message());
        }
        let put = Method::named("etcdserverpb.KV.Put");
        let p: PutRequest = put
            .decode(br#"{"key":"YQ==","value":"Yg==","lease":"7"}"#)
            .unwrap();
        assert_eq!((p.key, p.value, p.lease), (b"a".to_vec(), b"b".to_vec(), 7));
    }

    #[test]
    fn errors_have_etcds_shapes() {
        let s = Status::not_found("etcdserver: requested lease not found");
        assert_eq!(
            error_body(&s),
            r#"{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}"#
        );
        assert_eq!(http_status(s.code()), StatusCode::NOT_FOUND);
        assert_eq!(
            stream_error_chunk(&Status::unavailable("etcdserver: no leader")),
            "{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\",\"http_status\":\"Service Unavailable\"}}\n"
        );
    }
}
