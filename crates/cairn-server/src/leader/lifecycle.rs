//! The leader lifecycle: the one place that starts and stops leader services.
//!
//! It watches Raft's view of this node. When the node leads term T, it first waits for a read
//! barrier in T (the leader's blank entry of T applied, so everything committed before T is in
//! the state), then starts every leader service with a [`LeaderTerm`] for T. When T ends —
//! another term began, the node stepped down, it has not heard from a quorum for a leader lease
//! (cut off by a partition: it may still believe it leads while the others elect someone else),
//! or the node shuts down — it ends the term, waits a bounded time for the services to stop,
//! aborts what did not, and clears what they left behind. Only then can a next term start, so two
//! terms' services never run at once on one node.

use super::{lease_expiry, LeaderTerm};
use crate::leader::node::Node;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::ReadPolicy;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How often leadership is re-checked when Raft's server metrics do not change (the leader
/// lease runs out without any such event).
const LIFECYCLE_TICK_MS: u64 = 50;
/// How long the services of an ended term get to stop before they are aborted.
const LEADER_SERVICES_STOP_MS: u64 = 2_000;

/// What the lifecycle sees of Raft at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// This node leads `term`, and a quorum acknowledged it within a leader lease.
    Leads { term: u64 },
    /// Anything else: following, electing, or leading without a quorum's recent word.
    Not,
}

/// Runs until `stop`: starts leader services for every term this node leads.
pub async fn run(node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    loop {
        let Some(term) = next_term(&node, &mut stop).await else {
            return;
        };
        let (leader_term, ender) = LeaderTerm::start(term);
        // Every lease clock starts afresh with a term: a lease never expires early because
        // leadership moved (its holder could not reach a leader meanwhile).
        node.leases.clear();
        node.set_leader_term(Some(leader_term.clone()));
        node.metrics
            .leader_terms_started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(node_id = node.id, term, "leader term started");
        let mut services = start_services(&node, &leader_term);
        let stopping = wait_term_over(&node, term, &mut stop).await;
        node.set_leader_term(None);
        ender.end();
        stop_services(&mut services).await;
        // Whatever an aborted service left behind, the next term starts clean.
        node.heartbeats.stop();
        node.procedures.stop_serving();
        tracing::info!(node_id = node.id, term, "leader term ended");
        if stopping {
            return;
        }
    }
}

/// Every leader service, each on its own task, holding `term`.
fn start_services(node: &Arc<Node>, term: &LeaderTerm) -> JoinSet<()> {
    let mut set = JoinSet::new();
    set.spawn(assign_cluster_id(node.clone(), term.clone()));
    set.spawn(lease_expiry::run(node.clone(), term.clone()));
    set.spawn(crate::leader::heartbeat::run_term(
        node.clone(),
        term.clone(),
    ));
    set.spawn(crate::leader::procedure::run_term(
        node.clone(),
        term.clone(),
    ));
    set.spawn(crate::leader::failover::run_term(
        node.clone(),
        term.clone(),
    ));
    set.spawn(crate::leader::scheduling::run_term(
        node.clone(),
        term.clone(),
    ));
    set.spawn(crate::leader::scheduling::routes::follow_routes(
        node.clone(),
        term.clone(),
    ));
    set.spawn(crate::leader::meta::reconcile::run_term(
        node.clone(),
        term.clone(),
    ));
    set
}

/// The first leader of a cluster gives it a random id (etcd's `cluster_id`): written once, in
/// this term; a later leader finds it set. Retried while the term lasts.
async fn assign_cluster_id(node: Arc<Node>, term: LeaderTerm) {
    while node.sm.read().cluster.cluster_id == 0 && term.is_current() {
        let id = cairn_store::runtime::random_u64().max(1);
        let cmd = cairn_store::Command::SetClusterId { id };
        match node.propose_in_term(term.term(), cmd).await {
            Ok(_) => {
                tracing::info!(cluster_id = %format!("{:x}", node.cluster_id()), "cluster id set");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e.message(), "setting the cluster id; retrying");
                if term.sleep(Duration::from_millis(LIFECYCLE_TICK_MS)).await {
                    return;
                }
            }
        }
    }
}

async fn stop_services(services: &mut JoinSet<()>) {
    let all = async { while services.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_millis(LEADER_SERVICES_STOP_MS), all)
        .await
        .is_err()
    {
        tracing::warn!(
            "leader services did not stop within {LEADER_SERVICES_STOP_MS} ms; aborting them"
        );
        services.abort_all();
        while services.join_next().await.is_some() {}
    }
}

/// What Raft says now.
pub fn leadership(node: &Node) -> Leadership {
    // Read in place: a clone copies the replication map, and this runs on every change.
    let metrics = node.raft.server_metrics();
    let (leads, term) = {
        let m = metrics.borrow_watched();
        let leads = m.current_leader == Some(node.id) && m.state.is_leader();
        (leads, m.vote.leader_id().term)
    };
    if leads && !node.quorum_contact_lapsed() {
        Leadership::Leads { term }
    } else {
        Leadership::Not
    }
}

/// Waits until this node leads a term and has applied everything committed before it; None when
/// the node stops first.
async fn next_term(node: &Node, stop: &mut watch::Receiver<bool>) -> Option<u64> {
    // Server metrics change with the vote, the role and the leader only, not with every
    // write as the full metrics do: woken per write, this loop cost the leader 3% of its CPU
    // at 256 clients. The lease running out is caught by the tick.
    let mut metrics = node.raft.server_metrics();
    loop {
        if *stop.borrow() {
            return None;
        }
        if let Leadership::Leads { term } = leadership(node) {
            let barrier = tokio::select! {
                biased;
                ok = barrier_in(node, term) => ok,
                _ = stop.changed() => continue,
            };
            if barrier && leadership(node) == (Leadership::Leads { term }) {
                return Some(term);
            }
        }
        tokio::select! {
            biased;
            _ = metrics.changed() => {}
            _ = stop.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(LIFECYCLE_TICK_MS)) => {}
        }
    }
}

/// A read barrier confirmed in `term`, and this leader's whole log applied here: the blank
/// entry of `term`, so everything committed before `term` is in the state, and every entry
/// appended before the barrier. The latter matters when services start again in a term they
/// ran in before (the node was cut off from its quorum, then reached it again): entries the
/// earlier run proposed may commit only now, and the new run must see them (a procedure record
/// stored then is resumed, not left running with nobody to run it).
async fn barrier_in(node: &Node, term: u64) -> bool {
    let timeout = Duration::from_millis(node.config.request_timeout_ms);
    let appended = node.raft.metrics().borrow_watched().last_log_index;
    match tokio::time::timeout(
        timeout,
        node.raft.ensure_linearizable(ReadPolicy::ReadIndex),
    )
    .await
    {
        Ok(Ok(read)) if read.log_id().leader_id.term == term => {}
        Ok(Ok(_)) => return false,
        Ok(Err(e)) => {
            tracing::debug!(term, "no read barrier in the new term: {e}");
            return false;
        }
        Err(_) => return false,
    }
    let applied = node
        .raft
        .wait(Some(timeout))
        .applied_index_at_least(appended, "the leader's log applied")
        .await;
    applied.is_ok()
}

/// Waits until `term` is over; true when it ended because the node is stopping.
async fn wait_term_over(node: &Node, term: u64, stop: &mut watch::Receiver<bool>) -> bool {
    // Server metrics, not the full ones: see `next_term`.
    let mut metrics = node.raft.server_metrics();
    loop {
        if *stop.borrow() {
            return true;
        }
        if leadership(node) != (Leadership::Leads { term }) {
            return false;
        }
        tokio::select! {
            biased;
            _ = metrics.changed() => {}
            _ = stop.changed() => {}
            () = tokio::time::sleep(Duration::from_millis(LIFECYCLE_TICK_MS)) => {}
        }
    }
}
