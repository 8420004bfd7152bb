//! The operators as the event log records them (kind `operator`): each one planned, and each
//! that ends other than done (cancelled as stale, superseded or by a user, timed out, failed),
//! with its scheduler, why, and the figures. A balancing operator is one event; urgent ones
//! (drain, evict-leaders, replica-repair) are one event per scheduler, source, copy, outcome and
//! batch of up to [`MIGRATION_BATCH_REGIONS_MAX`] regions: a drain of a node leading 100,000
//! regions, or the repair after a failover, must not flood the bounded event log (and push
//! everything else out of it) with an event per region.

use super::operators::Entry;
use crate::leader::events;
use crate::leader::node::Node;
use crate::leader::procedure::migrate_region::{self, MIGRATION_BATCH_REGIONS_MAX};
use cairn_sched::{MoveKind, Operator};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// How an operator ended (its id, status and why); None for one just planned.
type Ending<'a> = Option<(u64, &'static str, &'a str)>;

/// Records operators just planned, in leader term `term`.
pub fn record_planned(node: &Arc<Node>, term: u64, ops: &[Operator]) {
    record(node, term, ops.iter().map(|op| (op, None)).collect());
}

/// Records operators that ended other than done (`OperatorTable::take_ended`), in leader term
/// `term`.
pub fn record_ended(node: &Arc<Node>, term: u64, ended: &[Entry]) {
    let ops = ended
        .iter()
        .map(|e| (&e.op, Some((e.id, e.status.as_str(), e.outcome.as_str()))))
        .collect();
    record(node, term, ops);
}

/// (scheduler, source, copy, how they ended) → the urgent operators of one kind of event.
type Groups<'a> =
    BTreeMap<(&'static str, u64, MoveKind, Option<(&'static str, &'a str)>), Vec<&'a Operator>>;

fn record<'a>(node: &Arc<Node>, term: u64, ops: Vec<(&'a Operator, Ending<'a>)>) {
    let mut groups: Groups<'a> = BTreeMap::new();
    for (op, ending) in ops {
        if !op.urgent() {
            record_one(node, term, op, ending);
            continue;
        }
        let how = ending.map(|(_, status, why)| (status, why));
        groups
            .entry((op.scheduler, op.from, op.kind, how))
            .or_default()
            .push(op);
    }
    for ((scheduler, from, kind, how), ops) in groups {
        for chunk in ops.chunks(MIGRATION_BATCH_REGIONS_MAX) {
            record_batch(node, term, (scheduler, from, kind), chunk, how);
        }
    }
}

fn record_one(node: &Arc<Node>, term: u64, op: &Operator, ending: Ending<'_>) {
    let mut figures: Vec<(&str, String)> = vec![
        ("scheduler", op.scheduler.to_string()),
        ("kind", op.kind.as_str().to_string()),
        ("from", op.from.to_string()),
        ("to", op.to.to_string()),
        ("priority", op.priority.as_str().to_string()),
    ];
    let message = match ending {
        None => {
            figures.extend(op.figures.iter().cloned());
            format!("{}: {}", op.scheduler, op.reason)
        }
        Some((id, status, why)) => {
            figures.extend([
                ("operator", id.to_string()),
                ("status", status.to_string()),
                ("outcome", why.to_string()),
            ]);
            format!("{}: operator {id} {status}: {why}", op.scheduler)
        }
    };
    let subject = migrate_region::target(op.region_id);
    events::record(node, term, "operator", subject, message, &figures);
}

fn record_batch(
    node: &Arc<Node>,
    term: u64,
    (scheduler, from, kind): (&'static str, u64, MoveKind),
    chunk: &[&Operator],
    how: Option<(&'static str, &str)>,
) {
    let to: BTreeSet<String> = chunk.iter().map(|op| op.to.to_string()).collect();
    let to = to.into_iter().collect::<Vec<_>>().join(",");
    let ids: Vec<String> = chunk.iter().map(|op| op.region_id.to_string()).collect();
    let n = chunk.len();
    let mut figures: Vec<(&str, String)> = vec![
        ("scheduler", scheduler.to_string()),
        ("kind", kind.as_str().to_string()),
        ("from", from.to_string()),
        ("to", to.clone()),
        ("priority", chunk[0].priority.as_str().to_string()),
        ("regions", n.to_string()),
        ("region_ids", ids.join(",")),
    ];
    let (subject, what) = match kind {
        MoveKind::AddFollower => (
            format!("node {to}"),
            format!("{n} new follower copies on node {to}"),
        ),
        MoveKind::RemoveFollower => (
            format!("node {from}"),
            format!("{n} follower copies dropped from node {from}"),
        ),
        _ => (
            format!("node {from}"),
            format!("{n} {} copies of node {from} to node {to}", kind.as_str()),
        ),
    };
    let message = match how {
        None => format!("{scheduler}: {what}"),
        Some((status, why)) => {
            figures.extend([("status", status.to_string()), ("outcome", why.to_string())]);
            format!("{scheduler}: {what} {status}: {why}")
        }
    };
    events::record(node, term, "operator", subject, message, &figures);
}
