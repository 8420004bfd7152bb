//! Stats history as the leader serves it (`GetNodeStats`, `GetRegionStats`), hands it to the
//! schedulers and to the next leader.
//!
//! A node's history is the node registry's last [`STATS_HISTORY_MAX`] reports. A region's is the
//! scheduler's smoothing window ([`REGION_LOAD_SAMPLES_MAX`] samples, [`RegionLoads`]): the
//! history is exactly what the schedulers see. Both live in the leader's memory; so that a new
//! leader is not blind, the persisted scheduling summary carries each node's last
//! [`NODE_STATS_PERSISTED_SAMPLES_MAX`] reports (for at most [`NODE_STATS_PERSISTED_NODES_MAX`]
//! nodes, the most recently reporting first) beside the hottest regions' smoothed loads. A new
//! leader serves the restored reports, marked as such, before the node's own, until its own
//! fill the history.
//!
//! Schedulers read both through the pass's snapshot: region loads as the smoothed load of each
//! region, each node's newest [`NODE_LOAD_REPORTS_MAX`] reports (restored ones too, per second)
//! as [`NodeView::reported`], by which hot-region checks that a hot node's heat has lasted.
//!
//! [`RegionLoads`]: super::snapshot::RegionLoads

use super::snapshot::{unix_ms_at, REGION_LOAD_SAMPLES_MAX};
use crate::errors;
use crate::leader::heartbeat::registry::{NodeRegistry, StatsSample, STATS_HISTORY_MAX};
use crate::leader::node::Node;
use crate::replica::meta::store::{self, layout};
use cairn_meta::route::table_id_of;
use cairn_meta::TableRoute;
use cairn_proto::cairnpb::{
    NodeStatsHistory, NodeStatsSample, RegionLoadSample, RegionStatsHistory,
};
use cairn_sched::{NodeView, ReportedLoad, NODE_LOAD_REPORTS_MAX};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;
use tonic::Status;

/// Reports per node the persisted summary keeps (the newest).
pub const NODE_STATS_PERSISTED_SAMPLES_MAX: usize = 4;
/// Nodes the persisted summary keeps reports of (the most recently reporting first). With
/// [`NODE_STATS_PERSISTED_SAMPLES_MAX`] this bounds the node part of the summary to 400 KiB of
/// JSON at the very most (about 200 KiB with real figures), written every 30 s.
pub const NODE_STATS_PERSISTED_NODES_MAX: usize = 256;

/// One node stats report, as served and as persisted. The node's free-form attributes are left
/// out: they are unbounded, and `ListNodes` shows the latest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatsRecord {
    /// When the leader received it, Unix ms.
    pub at_ms: u64,
    pub report_interval_ms: u64,
    pub rcus: u64,
    pub wcus: u64,
    pub table_count: u64,
    pub region_count: u64,
    pub cpu_usage: f64,
    pub load: f64,
    pub disk_read_bytes_per_sec: u64,
    pub disk_write_bytes_per_sec: u64,
}

impl NodeStatsRecord {
    /// A registry sample, its instant read against `now` (a monotonic, Unix ms pair).
    pub fn of(sample: &StatsSample, now: (Instant, u64)) -> Self {
        let s = &sample.stats;
        Self {
            at_ms: unix_ms_at(sample.at, now),
            report_interval_ms: sample.report_interval_ms,
            rcus: s.rcus,
            wcus: s.wcus,
            table_count: s.table_count,
            region_count: s.region_count,
            cpu_usage: s.cpu_usage,
            load: s.load,
            disk_read_bytes_per_sec: s.disk_read_bytes_per_sec,
            disk_write_bytes_per_sec: s.disk_write_bytes_per_sec,
        }
    }

    fn view(&self, restored: bool) -> NodeStatsSample {
        NodeStatsSample {
            at_ms: self.at_ms,
            report_interval_ms: self.report_interval_ms,
            rcus: self.rcus,
            wcus: self.wcus,
            table_count: self.table_count,
            region_count: self.region_count,
            cpu_usage: self.cpu_usage,
            load: self.load,
            disk_read_bytes_per_sec: self.disk_read_bytes_per_sec,
            disk_write_bytes_per_sec: self.disk_write_bytes_per_sec,
            restored,
        }
    }
}

/// One node's reports in the persisted summary, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatsSummary {
    pub node_id: u64,
    pub samples: Vec<NodeStatsRecord>,
}

/// The reports a new leader restored from the summary, by node (each at most
/// [`NODE_STATS_PERSISTED_SAMPLES_MAX`], at most [`NODE_STATS_PERSISTED_NODES_MAX`] nodes).
#[derive(Debug, Default)]
pub struct RestoredNodeStats {
    by_node: BTreeMap<u64, Vec<NodeStatsRecord>>,
}

impl RestoredNodeStats {
    /// Replaces what was restored with `summary`, held to the bounds whatever it holds.
    pub fn replace(&mut self, summary: Vec<NodeStatsSummary>) {
        self.by_node.clear();
        for mut n in summary.into_iter().take(NODE_STATS_PERSISTED_NODES_MAX) {
            n.samples.sort_by_key(|s| s.at_ms);
            let extra = n
                .samples
                .len()
                .saturating_sub(NODE_STATS_PERSISTED_SAMPLES_MAX);
            n.samples.drain(..extra);
            self.by_node.insert(n.node_id, n.samples);
        }
    }

    pub fn get(&self, node_id: u64) -> &[NodeStatsRecord] {
        self.by_node.get(&node_id).map_or(&[], Vec::as_slice)
    }
}

/// A node's history, oldest first, each with whether it was restored: the restored reports
/// older than its first live one, then the live ones; the newest [`STATS_HISTORY_MAX`].
pub fn merged(
    restored: &[NodeStatsRecord],
    live: &VecDeque<StatsSample>,
    now: (Instant, u64),
) -> Vec<(NodeStatsRecord, bool)> {
    let live: Vec<NodeStatsRecord> = live.iter().map(|s| NodeStatsRecord::of(s, now)).collect();
    let first_live_ms = live.first().map_or(u64::MAX, |s| s.at_ms);
    let mut out: Vec<(NodeStatsRecord, bool)> = restored
        .iter()
        .filter(|s| s.at_ms < first_live_ms)
        .map(|s| (s.clone(), true))
        .chain(live.into_iter().map(|s| (s, false)))
        .collect();
    let extra = out.len().saturating_sub(STATS_HISTORY_MAX);
    out.drain(..extra);
    out
}

/// The node part of the persisted summary: for each node the registry knows (the most recently
/// reporting first, at most [`NODE_STATS_PERSISTED_NODES_MAX`]), its newest
/// [`NODE_STATS_PERSISTED_SAMPLES_MAX`] reports, restored ones included (a node silent through
/// a leader change keeps its history across the next one too).
pub fn summary(
    registry: &NodeRegistry,
    restored: &RestoredNodeStats,
    now: (Instant, u64),
) -> Vec<NodeStatsSummary> {
    let mut out: Vec<NodeStatsSummary> = registry
        .nodes()
        .filter_map(|e| {
            let id = e.identity.id;
            let all = merged(restored.get(id), &e.history, now);
            let skip = all.len().saturating_sub(NODE_STATS_PERSISTED_SAMPLES_MAX);
            let samples: Vec<NodeStatsRecord> = all.into_iter().skip(skip).map(|s| s.0).collect();
            (!samples.is_empty()).then_some(NodeStatsSummary {
                node_id: id,
                samples,
            })
        })
        .collect();
    let newest = |n: &NodeStatsSummary| n.samples.last().map_or(0, |s| s.at_ms);
    out.sort_by(|a, b| newest(b).cmp(&newest(a)).then(a.node_id.cmp(&b.node_id)));
    out.truncate(NODE_STATS_PERSISTED_NODES_MAX);
    out
}

/// Fills each node's newest reports into a pass's nodes ([`NodeView::reported`]), newest
/// first: its live reports, then restored ones older than the first live one, at most
/// [`NODE_LOAD_REPORTS_MAX`] in all.
pub fn fill_reported(node: &Node, nodes: &mut [NodeView]) {
    let now = now_pair(node);
    let registry = node.heartbeats.registry();
    let restored = node.scheduling.restored_node_stats();
    for view in nodes.iter_mut() {
        let Some(entry) = registry.get(view.node_id) else {
            continue;
        };
        view.reported = recent_loads(restored.get(view.node_id), &entry.history, now);
    }
}

/// A node's newest reports as [`fill_reported`] takes them, per second of each report's
/// interval (a report without one is left out: it cannot be read as a rate).
fn recent_loads(
    restored: &[NodeStatsRecord],
    live: &VecDeque<StatsSample>,
    now: (Instant, u64),
) -> Vec<ReportedLoad> {
    let load = |wcus: u64, rcus: u64, interval_ms: u64| {
        let secs = interval_ms as f64 / 1000.0;
        (interval_ms > 0).then(|| ReportedLoad {
            wcus: wcus as f64 / secs,
            rcus: rcus as f64 / secs,
        })
    };
    let mut out: Vec<ReportedLoad> = live
        .iter()
        .rev()
        .filter_map(|s| load(s.stats.wcus, s.stats.rcus, s.report_interval_ms))
        .take(NODE_LOAD_REPORTS_MAX)
        .collect();
    let first_live_ms = live.front().map_or(u64::MAX, |s| unix_ms_at(s.at, now));
    let older = restored.iter().rev().filter(|s| s.at_ms < first_live_ms);
    let room = NODE_LOAD_REPORTS_MAX - out.len();
    out.extend(
        older
            .filter_map(|s| load(s.wcus, s.rcus, s.report_interval_ms))
            .take(room),
    );
    out
}

fn now_pair(node: &Node) -> (Instant, u64) {
    (node.heartbeats.now(), node.clock.unix_ms())
}

/// `GetNodeStats` on the leader: NotFound for a node its registry does not know.
pub fn node_stats(node: &Node, node_id: u64) -> Result<NodeStatsHistory, Status> {
    if !node.heartbeats.is_active() {
        return Err(errors::leader_changed());
    }
    let now = now_pair(node);
    let registry = node.heartbeats.registry();
    let Some(entry) = registry.get(node_id) else {
        return Err(Status::not_found(format!(
            "node {node_id} is not registered with the leader"
        )));
    };
    let restored = node.scheduling.restored_node_stats();
    let samples = merged(restored.get(node_id), &entry.history, now)
        .iter()
        .map(|(s, restored)| s.view(*restored))
        .collect();
    Ok(NodeStatsHistory { node_id, samples })
}

/// `GetRegionStats` on the leader: NotFound for a region no table route names.
pub fn region_stats(node: &Node, region_id: u64) -> Result<RegionStatsHistory, Status> {
    let route = store::get::<TableRoute>(node, &layout().route(table_id_of(region_id)))?;
    let Some(leader_node) = route
        .as_ref()
        .and_then(|r| r.value.region(region_id))
        .map(|r| r.leader_node)
    else {
        return Err(Status::not_found(format!(
            "region {region_id} is in no table route"
        )));
    };
    let loads = node.scheduling.loads();
    let (smoothed_wcus, smoothed_rcus, approximate_bytes) = loads.smoothed(region_id);
    let samples: Vec<RegionLoadSample> = loads
        .history(region_id)
        .into_iter()
        .map(|(s, restored)| RegionLoadSample {
            at_ms: s.at_ms,
            wcus: s.wcus as u64,
            rcus: s.rcus as u64,
            restored,
        })
        .collect();
    debug_assert!(samples.len() <= REGION_LOAD_SAMPLES_MAX);
    Ok(RegionStatsHistory {
        region_id,
        leader_node,
        approximate_bytes,
        smoothed_wcus,
        smoothed_rcus,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::cairnpb::{HeartbeatRequest, NodeIdentity, NodeRole, NodeStats};
    use std::time::Duration;

    const LEASE: Duration = Duration::from_secs(10);

    fn record(at_ms: u64, wcus: u64) -> NodeStatsRecord {
        NodeStatsRecord {
            at_ms,
            report_interval_ms: 1000,
            rcus: 0,
            wcus,
            table_count: 0,
            region_count: 0,
            cpu_usage: 0.0,
            load: 0.0,
            disk_read_bytes_per_sec: 0,
            disk_write_bytes_per_sec: 0,
        }
    }

    fn heartbeat(id: u64, sequence: u64, wcus: u64) -> HeartbeatRequest {
        HeartbeatRequest {
            node: Some(NodeIdentity {
                id,
                role: NodeRole::Datanode as i32,
                address: format!("h:{id}"),
                ..Default::default()
            }),
            sequence,
            report_interval_ms: 1000,
            stats: Some(NodeStats {
                wcus,
                region_count: 3,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A registry where node `id` reported `n` times, one second apart from `t0`; its wcus
    /// are 1..=n.
    fn reported(r: &mut NodeRegistry, id: u64, n: u64, t0: Instant) {
        for s in 1..=n {
            let last = (s > 1).then_some(s - 1);
            let at = t0 + Duration::from_secs(s);
            r.on_heartbeat(&heartbeat(id, s, s), last, at).unwrap();
        }
    }

    /// A registry in which node 1 reported `n` times from `t0`, with `t0`, and now: `t0` + 10 s,
    /// Unix 100,000 ms (so the reports came at 91 s, 92 s, …).
    fn node_1_reported(n: u64) -> (NodeRegistry, Instant, (Instant, u64)) {
        let t0 = Instant::now();
        let mut r = NodeRegistry::new(LEASE, LEASE);
        r.leadership_started(Vec::new(), t0);
        reported(&mut r, 1, n, t0);
        (r, t0, (t0 + Duration::from_secs(10), 100_000))
    }

    fn wcus(h: &[(NodeStatsRecord, bool)]) -> Vec<(u64, bool)> {
        h.iter().map(|(s, r)| (s.wcus, *r)).collect()
    }

    #[test]
    fn live_reports_read_in_unix_ms_with_their_figures() {
        // The reports came at 91, 92 and 93 s.
        let (r, _, now) = node_1_reported(3);
        let h = merged(&[], &r.get(1).unwrap().history, now);
        let at: Vec<u64> = h.iter().map(|s| s.0.at_ms).collect();
        assert_eq!(at, [91_000, 92_000, 93_000]);
        assert_eq!(wcus(&h), [(1, false), (2, false), (3, false)]);
        assert_eq!(h[0].0.region_count, 3);
        assert_eq!(h[0].0.report_interval_ms, 1000);
    }

    #[test]
    fn restored_reports_come_first_only_when_older_and_the_whole_is_bounded() {
        let (mut r, t0, now) = node_1_reported(2);
        // Live at 91 s and 92 s; a restored report at 91.5 s overlaps them and is dropped.
        let restored = [record(80_000, 70), record(85_000, 71), record(91_500, 72)];
        let h = merged(&restored, &r.get(1).unwrap().history, now);
        assert_eq!(wcus(&h), [(70, true), (71, true), (1, false), (2, false)]);
        // A full live history leaves no room for restored ones.
        reported(&mut r, 2, STATS_HISTORY_MAX as u64, t0);
        let h = merged(&restored, &r.get(2).unwrap().history, now);
        assert_eq!(h.len(), STATS_HISTORY_MAX);
        assert!(h.iter().all(|s| !s.1));
        // With no live report yet, the restored ones are the history.
        r.leadership_started(
            vec![NodeIdentity {
                id: 3,
                ..Default::default()
            }],
            t0,
        );
        let h = merged(&restored, &r.get(3).unwrap().history, now);
        assert_eq!(wcus(&h), [(70, true), (71, true), (72, true)]);
    }

    #[test]
    fn schedulers_read_the_newest_reports_first_restored_ones_after_the_live() {
        let (mut r, t0, now) = node_1_reported(2);
        let w = |l: Vec<ReportedLoad>| l.iter().map(|l| l.wcus).collect::<Vec<_>>();
        // Live at 91 s (1) and 92 s (2); restored ones before them fill up, newest first,
        // and the one overlapping the live reports is left out.
        let restored = [record(80_000, 70), record(85_000, 71), record(91_500, 72)];
        let loads = recent_loads(&restored, &r.get(1).unwrap().history, now);
        assert_eq!(w(loads), [2.0, 1.0, 71.0, 70.0]);
        // A long live history: its newest reports only.
        reported(&mut r, 2, 20, t0);
        let loads = recent_loads(&restored, &r.get(2).unwrap().history, now);
        assert_eq!(w(loads), [20.0, 19.0, 18.0, 17.0, 16.0, 15.0]);
        assert_eq!(NODE_LOAD_REPORTS_MAX, 6);
        // A new leader that has heard nothing yet reads the restored reports.
        let loads = recent_loads(&restored, &VecDeque::new(), now);
        assert_eq!(w(loads), [72.0, 71.0, 70.0]);
        // Per second of each report's interval; one without an interval is left out.
        let mut slow = [record(80_000, 70), record(85_000, 71), record(91_500, 72)];
        slow[2].report_interval_ms = 10_000;
        slow[1].report_interval_ms = 0;
        let loads = recent_loads(&slow, &VecDeque::new(), now);
        assert_eq!(w(loads), [7.2, 70.0]);
    }

    #[test]
    fn summary_keeps_the_newest_reports_of_the_most_recent_nodes() {
        let t0 = Instant::now();
        let mut r = NodeRegistry::new(LEASE, LEASE);
        r.leadership_started(Vec::new(), t0);
        reported(&mut r, 7, 10, t0);
        // Node 8 reports later than node 7's last report.
        for s in 1..=2 {
            let last = (s > 1).then_some(s - 1);
            let at = t0 + Duration::from_secs(20 + s);
            r.on_heartbeat(&heartbeat(8, s, 100 + s), last, at).unwrap();
        }
        let mut restored = RestoredNodeStats::default();
        restored.replace(vec![NodeStatsSummary {
            node_id: 8,
            samples: vec![record(5, 50), record(1, 49), record(6, 51)],
        }]);
        let now = (t0 + Duration::from_secs(30), 1_000_000);
        let s = summary(&r, &restored, now);
        assert_eq!(s.iter().map(|n| n.node_id).collect::<Vec<_>>(), [8, 7]);
        let w = |n: &NodeStatsSummary| n.samples.iter().map(|s| s.wcus).collect::<Vec<_>>();
        assert_eq!(
            w(&s[0]),
            [50, 51, 101, 102],
            "restored ones first, oldest first"
        );
        assert_eq!(w(&s[1]), [7, 8, 9, 10]);
        assert!(s
            .iter()
            .all(|n| n.samples.len() <= NODE_STATS_PERSISTED_SAMPLES_MAX));
        // A node the registry does not know is left out, restored or not.
        restored.replace(vec![NodeStatsSummary {
            node_id: 99,
            samples: vec![record(5, 50)],
        }]);
        assert!(summary(&r, &restored, now).iter().all(|n| n.node_id != 99));
    }

    #[test]
    fn restoring_holds_an_oversized_summary_to_the_bounds() {
        let huge: Vec<NodeStatsSummary> = (0..NODE_STATS_PERSISTED_NODES_MAX as u64 + 5)
            .map(|id| NodeStatsSummary {
                node_id: id,
                samples: (0..10).rev().map(|at| record(at, at)).collect(),
            })
            .collect();
        let mut restored = RestoredNodeStats::default();
        restored.replace(huge);
        assert_eq!(restored.by_node.len(), NODE_STATS_PERSISTED_NODES_MAX);
        let at: Vec<u64> = restored.get(0).iter().map(|s| s.at_ms).collect();
        assert_eq!(at, [6, 7, 8, 9], "the newest, oldest first");
        assert!(restored
            .get(NODE_STATS_PERSISTED_NODES_MAX as u64)
            .is_empty());
    }

    #[test]
    fn the_node_part_of_a_full_summary_stays_small_enough_to_write() {
        let full: Vec<NodeStatsSummary> = (0..NODE_STATS_PERSISTED_NODES_MAX as u64)
            .map(|id| NodeStatsSummary {
                node_id: u64::MAX - id,
                samples: vec![
                    NodeStatsRecord {
                        at_ms: u64::MAX,
                        report_interval_ms: u64::MAX,
                        rcus: u64::MAX,
                        wcus: u64::MAX,
                        table_count: u64::MAX,
                        region_count: u64::MAX,
                        cpu_usage: -1.234_567_890_123_456_7e-300,
                        load: -1.234_567_890_123_456_7e-300,
                        disk_read_bytes_per_sec: u64::MAX,
                        disk_write_bytes_per_sec: u64::MAX,
                    };
                    NODE_STATS_PERSISTED_SAMPLES_MAX
                ],
            })
            .collect();
        let bytes = cairn_meta::codec::encode(&full).len();
        // Well inside one request (1.5 MiB by default), beside the regions' part.
        assert!(bytes < 400 * 1024, "{bytes} bytes");
    }
}
