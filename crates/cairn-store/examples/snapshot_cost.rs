//! Measures what a snapshot costs on a large key space: the copy taken under the state lock,
//! the encoding done outside it, and decoding on restart.
//!
//! `cargo run --release -p cairn-store --example snapshot_cost -- 1000000 100`

use cairn_proto::etcdserverpb::{request_op, PutRequest, RequestOp, TxnRequest};
use cairn_store::mvcc::KvState;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let keys: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let value_bytes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let mut kv = KvState::new();
    let t = Instant::now();
    for i in 0..keys {
        let put = PutRequest {
            key: format!("bench/{i}").into_bytes(),
            value: vec![b'x'; value_bytes],
            ..Default::default()
        };
        let txn = TxnRequest {
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(put)),
            }],
            ..Default::default()
        };
        kv.apply_txn(&txn).expect("put");
    }
    println!(
        "{keys} keys of {value_bytes} B applied in {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let copy = kv.clone();
    println!("copy under the lock: {:?}", t.elapsed());
    let t = Instant::now();
    let bytes = copy.encode_snapshot();
    println!(
        "encode outside the lock: {:?} ({} MB)",
        t.elapsed(),
        bytes.len() / 1_000_000
    );
    let t = Instant::now();
    let back = KvState::decode_snapshot(&bytes).expect("decode");
    println!("decode: {:?} ({} keys)", t.elapsed(), back.key_count());
}
