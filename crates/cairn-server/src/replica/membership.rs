//! Membership changes, served on the leader: add (the leader assigns the id), remove, promote
//! a learner that has caught up, and update a member's peer address.

use crate::errors;
use crate::replica::node::{write_error, Replica};
use crate::replica::peer_request::LeaderResponse;
use cairn_types::NodeAddrs;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::ChangeMembers;
use std::collections::BTreeSet;
use tonic::{Code, Status};

/// A learner may be promoted only when it is at most this many log entries behind the leader.
const LEARNER_SYNC_LAG_MAX: u64 = 1000;

impl Replica {
    pub(super) async fn member_add(
        &self,
        peer_addr: String,
        learner: bool,
    ) -> Result<LeaderResponse, Status> {
        self.require_leader()?;
        let (id, exists) = {
            let s = self.sm.read();
            let m = s.membership.membership();
            let exists = m.nodes().any(|(_, n)| n.peer == peer_addr);
            // Ids are never reused: nodes that ever announced themselves count too.
            let max = m
                .nodes()
                .map(|(id, _)| *id)
                .chain(s.node_addrs.keys().copied())
                .max()
                .unwrap_or(0);
            (max + 1, exists)
        };
        if exists {
            return Err(Status::new(
                Code::FailedPrecondition,
                "etcdserver: Peer URLs already exists",
            ));
        }
        let node = NodeAddrs {
            peer: peer_addr,
            ..Default::default()
        };
        self.raft
            .add_learner(id, node, false)
            .await
            .map_err(write_error)?;
        if !learner {
            self.raft
                .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
                .await
                .map_err(write_error)?;
        }
        Ok(LeaderResponse::MemberAdded { id })
    }

    pub(super) async fn member_remove(&self, id: u64) -> Result<LeaderResponse, Status> {
        self.require_leader()?;
        let (is_voter, exists, voters) = {
            let s = self.sm.read();
            let m = s.membership.membership();
            let r = (
                m.voter_ids().any(|v| v == id),
                m.get_node(&id).is_some(),
                m.voter_ids().count(),
            );
            r
        };
        if !exists {
            return Err(errors::member_not_found());
        }
        if is_voter && voters == 1 {
            return Err(Status::new(
                Code::FailedPrecondition,
                "cairn: cannot remove the last voter",
            ));
        }
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(write_error)?;
        if is_voter {
            // A voter removed from the config stays a learner until removed as a node too.
            let still_node = self
                .sm
                .read()
                .membership
                .membership()
                .get_node(&id)
                .is_some();
            if still_node {
                self.raft
                    .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                    .await
                    .map_err(write_error)?;
            }
        }
        Ok(LeaderResponse::Done)
    }

    pub(super) async fn member_promote(&self, id: u64) -> Result<LeaderResponse, Status> {
        self.require_leader()?;
        let (is_voter, exists) = {
            let s = self.sm.read();
            let m = s.membership.membership();
            let r = (m.voter_ids().any(|v| v == id), m.get_node(&id).is_some());
            r
        };
        if !exists {
            return Err(errors::member_not_found());
        }
        if is_voter {
            return Err(Status::new(
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member",
            ));
        }
        let in_sync = {
            let m = self.raft.metrics().borrow_watched().clone();
            let last = m.last_log_index.unwrap_or(0);
            m.replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned())
                .flatten()
                .map(|matched| last.saturating_sub(matched.index) <= LEARNER_SYNC_LAG_MAX)
                .unwrap_or(false)
        };
        if !in_sync {
            return Err(Status::new(
                Code::FailedPrecondition,
                "etcdserver: can only promote a learner member which is in sync with leader",
            ));
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(write_error)?;
        Ok(LeaderResponse::Done)
    }

    /// etcd's MemberUpdate: the member keeps its id and role; Raft reaches it at `peer_addr`
    /// from the next membership entry on (the member itself must listen there: restart it with
    /// the new `--listen-peer`).
    pub(super) async fn member_update(
        &self,
        id: u64,
        peer_addr: String,
    ) -> Result<LeaderResponse, Status> {
        self.require_leader()?;
        let current = {
            let s = self.sm.read();
            let m = s.membership.membership();
            if m.nodes()
                .any(|(other, n)| *other != id && n.peer == peer_addr)
            {
                return Err(Status::new(
                    Code::FailedPrecondition,
                    "etcdserver: Peer URLs already exists",
                ));
            }
            m.get_node(&id).cloned()
        };
        let Some(mut node) = current else {
            return Err(errors::member_not_found());
        };
        if node.peer != peer_addr {
            node.peer = peer_addr;
            self.raft
                .change_membership(
                    ChangeMembers::SetNodes(std::collections::BTreeMap::from([(id, node)])),
                    false,
                )
                .await
                .map_err(write_error)?;
        }
        Ok(LeaderResponse::Done)
    }
}
