//! Request counters and latency histograms, rendered in Prometheus text format.
//!
//! A small fixed set of series (one per RPC method and status code), so memory is bounded by the
//! API surface, not by traffic.

use cairn_types::latency::{write_histogram_samples, LatencyHistogram};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Upper bounds of the latency buckets, seconds.
const LATENCY_BUCKETS_SECS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048,
    4.096,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS_SECS.len()],
    count: u64,
    sum_secs: f64,
}

/// Process-wide counters of one node.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    /// Proposals handed to Raft on this node (as leader).
    pub proposals: AtomicU64,
    /// Proposals that failed.
    pub proposals_failed: AtomicU64,
    /// Requests this node forwarded to the leader.
    pub forwarded: AtomicU64,
    /// Forwarded requests the leader answered: from handing each to the link until its answer.
    pub forward_round_trip: LatencyHistogram,
    /// Proposals on this node (as leader) that Raft applied: from handing each to Raft until
    /// its result.
    pub proposal_latency: LatencyHistogram,
    /// The Raft log's durable group commits (write and `fdatasync`), once the log is open.
    log_syncs: OnceLock<Arc<LatencyHistogram>>,
    /// Leader changes this node has seen.
    pub leader_changes: AtomicU64,
    /// Leader terms this node started its leader services in.
    pub leader_terms_started: AtomicU64,
    /// The last scheduling pass on this node (as leader): all of it, building its snapshot
    /// (the routes written since the last pass read again, every region's view built),
    /// planning, and the regions it saw.
    pub scheduler_pass_micros: AtomicU64,
    pub scheduler_snapshot_micros: AtomicU64,
    pub scheduler_plan_micros: AtomicU64,
    pub scheduler_regions: AtomicU64,
    /// Region-lease grants (as leader) checked against the decoded routes, known current.
    pub lease_grants_from_views: AtomicU64,
    /// Region-lease grants that read each route's stored revision (the route feed lagged).
    pub lease_grants_from_store: AtomicU64,
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

impl Metrics {
    /// Renders the durations of the log's group commits, which its writer records in `syncs`.
    /// The first call wins.
    pub fn show_log_syncs(&self, syncs: Arc<LatencyHistogram>) {
        let _ = self.log_syncs.set(syncs);
    }

    /// Records one finished RPC.
    pub fn observe(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        {
            let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            *r.entry((method, code_name(code))).or_default() += 1;
        }
        let secs = elapsed.as_secs_f64();
        let mut l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let h = l.entry(method).or_default();
        h.count += 1;
        h.sum_secs += secs;
        if let Some(i) = LATENCY_BUCKETS_SECS.iter().position(|b| secs <= *b) {
            h.buckets[i] += 1;
        }
    }

    /// Times `fut` and records it under `method`.
    pub async fn track<T>(
        &self,
        method: &'static str,
        fut: impl std::future::Future<Output = Result<T, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        let start = std::time::Instant::now();
        let r = fut.await;
        let code = match &r {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.observe(method, code, start.elapsed());
        r
    }

    /// Appends this registry's series to `out` in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            out,
            "cairn_raft_proposals_total",
            "Proposals handed to Raft by this node.",
            self.proposals.load(Ordering::Relaxed),
        );
        counter(
            out,
            "cairn_raft_proposals_failed_total",
            "Proposals that failed.",
            self.proposals_failed.load(Ordering::Relaxed),
        );
        counter(
            out,
            "cairn_forwarded_requests_total",
            "Requests forwarded to the leader.",
            self.forwarded.load(Ordering::Relaxed),
        );
        counter(
            out,
            "cairn_raft_leader_changes_total",
            "Leader changes seen by this node.",
            self.leader_changes.load(Ordering::Relaxed),
        );
        counter(
            out,
            "cairn_leader_terms_started_total",
            "Leader terms in which this node started its leader services.",
            self.leader_terms_started.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP cairn_region_lease_grants_total Region-lease grants by how routes were checked: against the decoded routes known current (views), or each route's stored revision (store; the route feed lagged).\n# TYPE cairn_region_lease_grants_total counter"
        );
        for (how, n) in [
            ("views", &self.lease_grants_from_views),
            ("store", &self.lease_grants_from_store),
        ] {
            let _ = writeln!(
                out,
                "cairn_region_lease_grants_total{{checked=\"{how}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let gauge = |out: &mut String, name: &str, help: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let micros = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64 / 1e6;
        gauge(
            out,
            "cairn_scheduler_pass_seconds",
            "The last scheduling pass, all of it: snapshot, stale operators, planning, queueing (leader only).",
            micros(&self.scheduler_pass_micros),
        );
        gauge(
            out,
            "cairn_scheduler_pass_snapshot_seconds",
            "The last scheduling pass's snapshot: routes written since read again, every region's view built (leader only).",
            micros(&self.scheduler_snapshot_micros),
        );
        gauge(
            out,
            "cairn_scheduler_pass_plan_seconds",
            "The last scheduling pass's planning by the enabled schedulers (leader only).",
            micros(&self.scheduler_plan_micros),
        );
        gauge(
            out,
            "cairn_scheduler_pass_regions",
            "Regions in the last scheduling pass's snapshot (leader only).",
            self.scheduler_regions.load(Ordering::Relaxed) as f64,
        );
        if let Some(bytes) = crate::memory::heap_in_use_bytes() {
            gauge(
                out,
                "cairn_memory_heap_bytes",
                "Bytes the allocator has handed out and not had back (live data; resident memory also counts freed memory the allocator keeps and the program's own pages).",
                bytes as f64,
            );
        }
        let _ = writeln!(
            out,
            "# HELP cairn_grpc_requests_total Finished RPCs by method and status code.\n# TYPE cairn_grpc_requests_total counter"
        );
        for ((m, c), v) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "cairn_grpc_requests_total{{method=\"{m}\",code=\"{c}\"}} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP cairn_grpc_request_duration_seconds RPC latency by method.\n# TYPE cairn_grpc_request_duration_seconds histogram"
        );
        for (m, h) in self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            write_histogram_samples(
                out,
                "cairn_grpc_request_duration_seconds",
                &format!("method=\"{m}\""),
                LATENCY_BUCKETS_SECS.iter().copied().zip(h.buckets),
                || (h.count, h.sum_secs),
            );
        }
        if let Some(syncs) = self.log_syncs.get() {
            syncs.render(
                out,
                "cairn_wal_sync_duration_seconds",
                "Durable group commits of the Raft log: the write and its fdatasync.",
            );
        }
        self.forward_round_trip.render(
            out,
            "cairn_forward_round_trip_seconds",
            "Requests forwarded to the leader and answered: from sending each until its answer.",
        );
        self.proposal_latency.render(
            out,
            "cairn_raft_proposal_duration_seconds",
            "Proposals made on this node as leader and applied: from handing each to Raft until its result.",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_codes() {
        let m = Metrics::default();
        m.observe("Range", tonic::Code::Ok, Duration::from_micros(300));
        m.observe("Range", tonic::Code::Ok, Duration::from_millis(3));
        m.observe("Range", tonic::Code::NotFound, Duration::from_secs(10));
        let mut s = String::new();
        m.render(&mut s);
        assert!(s.contains("cairn_grpc_requests_total{method=\"Range\",code=\"OK\"} 2"));
        assert!(s.contains("cairn_grpc_requests_total{method=\"Range\",code=\"NotFound\"} 1"));
        assert!(s.contains("le=\"0.0005\"} 1"));
        assert!(s.contains("le=\"0.004\"} 2"));
        assert!(s.contains("le=\"+Inf\"} 3"));
    }
}
