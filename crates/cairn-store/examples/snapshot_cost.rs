//! Measures what a snapshot costs on a large key space: the view taken under the state lock,
//! the encoding done outside it, decoding on restart, and what the persistent key map costs
//! elsewhere (apply throughput with and without a snapshot alive, reads, resident memory).
//!
//! `cargo run --release -p cairn-store --example snapshot_cost -- 1000000 100`

use cairn_proto::etcdserverpb::{request_op, PutRequest, RangeRequest, RequestOp, TxnRequest};
use cairn_store::mvcc::KvState;
use std::time::{Duration, Instant};

fn put_txn(key: usize, value_bytes: usize) -> TxnRequest {
    let put = PutRequest {
        key: format!("bench/{key}").into_bytes(),
        value: vec![b'x'; value_bytes],
        ..Default::default()
    };
    TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestPut(put)),
        }],
        ..Default::default()
    }
}

/// Applies single-put transactions to the given keys; returns puts per second.
fn apply_puts(kv: &mut KvState, keys: impl Iterator<Item = usize>, value_bytes: usize) -> f64 {
    let t = Instant::now();
    let mut n = 0;
    for i in keys {
        kv.apply_txn(&put_txn(i, value_bytes)).expect("put");
        n += 1;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

/// Resident memory of this process, MiB (Linux only; 0 elsewhere).
fn rss_mib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096 / (1024 * 1024)
}

fn millis(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let keys: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let value_bytes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let rss_before = rss_mib();
    let mut kv = KvState::new();
    let rate = apply_puts(&mut kv, 0..keys, value_bytes);
    println!("{keys} keys of {value_bytes} B applied: {rate:.0} puts/s");
    println!(
        "resident memory holding them: {} MiB",
        rss_mib() - rss_before
    );

    // Reads: one count-only scan of everything, and point gets spread over the key space.
    let t = Instant::now();
    let all = kv
        .range(&RangeRequest {
            key: b"\0".to_vec(),
            range_end: b"\0".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .expect("range");
    assert_eq!(all.count as usize, keys);
    println!("count-only range over all keys: {}", millis(t.elapsed()));
    let gets = 100_000.min(keys);
    let t = Instant::now();
    for i in 0..gets {
        let key = format!("bench/{}", i * (keys / gets));
        let r = kv
            .range(&RangeRequest {
                key: key.into_bytes(),
                ..Default::default()
            })
            .expect("get");
        assert_eq!(r.kvs.len(), 1);
    }
    println!(
        "point gets: {:.0} gets/s",
        gets as f64 / t.elapsed().as_secs_f64()
    );

    let t = Instant::now();
    let view = kv.snapshot_view();
    println!("view under the lock: {}", millis(t.elapsed()));

    // Apply goes on while the snapshot is encoded: the first write to each shared node copies it.
    let overwrites = 100_000.min(keys);
    let rate = apply_puts(
        &mut kv,
        (0..overwrites).map(|i| i * (keys / overwrites)),
        value_bytes,
    );
    println!("{overwrites} overwrites spread over the keys while the view lives: {rate:.0} puts/s");
    println!(
        "resident memory with the view and the overwrites: {} MiB",
        rss_mib() - rss_before
    );

    let t = Instant::now();
    let mut bytes = Vec::new();
    view.encode_into(&mut bytes);
    println!(
        "encode outside the lock: {} ({} MB)",
        millis(t.elapsed()),
        bytes.len() / 1_000_000
    );
    let t = Instant::now();
    drop(view);
    println!("drop the view: {}", millis(t.elapsed()));
    let rate = apply_puts(
        &mut kv,
        (0..overwrites).map(|i| i * (keys / overwrites) + 1),
        value_bytes,
    );
    println!("{overwrites} overwrites with no view alive: {rate:.0} puts/s");

    let t = Instant::now();
    let back = KvState::decode_snapshot(&bytes).expect("decode");
    println!(
        "decode: {} ({} keys)",
        millis(t.elapsed()),
        back.key_count()
    );
}
