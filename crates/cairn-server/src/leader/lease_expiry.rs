//! Lease expiry, a leader service: revokes leases whose deadline passed by this leader's clock
//! (the node's [`crate::clock::Clock`], which the keeper reads).
//!
//! Deadlines live in the [`crate::replica::lease_keeper::LeaseKeeper`], renewed by keep-alives that were
//! answered while leadership was confirmed. Each revocation is fenced with the term: a leader
//! deposed while its revocation was in flight cannot revoke a lease the next leader renewed.

use super::LeaderTerm;
use crate::leader::node::Node;
use cairn_store::Command;
use std::sync::Arc;
use std::time::Duration;

/// How often the leader looks for expired leases.
pub const LEASE_EXPIRY_TICK_MS: u64 = 250;

/// Expires leases until `term` ends.
pub async fn run(node: Arc<Node>, term: LeaderTerm) {
    while !term
        .sleep(Duration::from_millis(LEASE_EXPIRY_TICK_MS))
        .await
    {
        let live = node.sm.read().kv.lease_ttls();
        for id in node.leases.sync_and_expired(&live) {
            match node
                .propose_in_term(term.term(), Command::LeaseRevoke { id })
                .await
            {
                Ok(_) => tracing::debug!(lease = id, "lease expired and revoked"),
                Err(e) if !term.is_current() => {
                    tracing::debug!(lease = id, "lease revocation dropped, term over: {e}");
                    return;
                }
                Err(e) => tracing::warn!(lease = id, "revoking expired lease failed: {e}"),
            }
        }
    }
}
