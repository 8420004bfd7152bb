//! A running procedure as the engine and its kind see it: the record, its revision in the store,
//! the leader term it runs in, and the writes that move it on (each comparing the record's
//! revision, so a deposed leader's copy never writes over a newer one).

use super::lock::Held;
use crate::errors;
use crate::leader::meta::regions::reconnect_wait;
use crate::leader::node::Node;
use crate::leader::LeaderTerm;
use crate::replica::meta::store::{self, layout, put_op, unchanged_since};
use cairn_meta::{codec, ProcedureRecord, ProcedureState};
use cairn_proto::etcdserverpb::{Compare, RequestOp};
use std::sync::Arc;
use tonic::Status;

/// A running procedure: its record, the record's revision in the store (0 before it is
/// stored) and the term it runs in.
pub struct Ctx {
    pub node: Arc<Node>,
    pub record: ProcedureRecord,
    pub revision: i64,
    /// The Raft term of `leader`, which every write carries.
    pub term: u64,
    /// The run of leader services this procedure belongs to. A node cut off from its quorum
    /// ends its services and may start them again in the same Raft term once it is back; a
    /// procedure of the earlier run stops then (the new run resumes it from its record).
    leader: LeaderTerm,
    /// Until when datanodes that have no stream to this leader yet are waited for (see
    /// [`crate::leader::meta::regions::RegionInstructions::send`]): set when this leader takes the
    /// procedure up.
    pub reconnect_deadline: tokio::time::Instant,
    _held: Held,
}

impl Ctx {
    /// A procedure `record` stored at `revision` (0: not yet), run in `leader` holding `held`.
    pub(super) fn new(
        node: Arc<Node>,
        record: ProcedureRecord,
        revision: i64,
        leader: LeaderTerm,
        held: Held,
    ) -> Self {
        let reconnect_deadline = node.clock.now() + reconnect_wait(&node);
        node.procedures.active().insert(record.id);
        Self {
            node,
            record,
            revision,
            term: leader.term(),
            leader,
            reconnect_deadline,
            _held: held,
        }
    }

    fn key(&self) -> String {
        layout().procedure(self.record.id)
    }

    /// Fails when this node no longer leads the term the procedure started in. Before the
    /// procedure is stored nothing happened, so the caller may retry on the new leader ("leader
    /// changed"); after, the new leader finishes it, and a blind retry could run the DDL twice,
    /// so the caller is told the outcome is unknown ("request timed out"), as for any write.
    pub fn check_term(&self) -> Result<(), Status> {
        if self.leader.is_current() && self.node.leads_term(self.term) {
            Ok(())
        } else if self.revision == 0 {
            Err(errors::leader_changed())
        } else {
            Err(errors::timeout())
        }
    }

    /// The error for a write of ours that found the record changed by someone else (a newer
    /// leader): see [`Ctx::check_term`].
    pub fn superseded(&self) -> Status {
        if self.revision == 0 {
            errors::leader_changed()
        } else {
            errors::timeout()
        }
    }

    /// The test hook: crash the process at `step` when configured to (see
    /// [`crate::ServerConfig::test_crash_at`]).
    pub fn hook(&self, step: &str) {
        crash_hook(&self.node, &self.record.kind, step);
    }

    /// Writes the record at `step` together with `ops`, if `compares` hold and the record is
    /// unchanged since we last wrote it. Returns whether it was written.
    pub async fn persist(
        &mut self,
        step: &str,
        compares: Vec<Compare>,
        ops: Vec<RequestOp>,
    ) -> Result<bool, Status> {
        self.check_term()?;
        // Written in place and put back unless stored: no copy of the record (its data may be
        // a whole table) per step.
        let before = (
            std::mem::replace(&mut self.record.step, step.to_string()),
            self.record.updated_ms,
        );
        self.record.updated_ms = self.node.clock.unix_ms();
        let key = self.key();
        let mut compares = compares;
        compares.push(unchanged_since(&key, self.revision));
        let mut ops = ops;
        ops.push(put_op(&key, codec::encode(&self.record)));
        let outcome = store::txn_here(&self.node, self.term, compares, ops).await;
        match outcome {
            Ok((true, _, revision)) => {
                self.revision = revision;
                Ok(true)
            }
            other => {
                (self.record.step, self.record.updated_ms) = before;
                other.map(|_| false)
            }
        }
    }

    /// Ends the procedure as done (with `ops` in the same transaction); the record keeps its
    /// summary and drops its data.
    pub async fn finish(
        &mut self,
        step: &str,
        compares: Vec<Compare>,
        ops: Vec<RequestOp>,
    ) -> Result<(bool, i64), Status> {
        self.finish_as(ProcedureState::Done, step, compares, ops)
            .await
    }

    /// Ends the procedure as failed with `error`.
    pub async fn fail(&mut self, step: &str, error: &str) -> Result<(), Status> {
        self.record.last_error = error.to_string();
        self.finish_as(ProcedureState::Failed, step, Vec::new(), Vec::new())
            .await?;
        Ok(())
    }

    async fn finish_as(
        &mut self,
        state: ProcedureState,
        step: &str,
        compares: Vec<Compare>,
        ops: Vec<RequestOp>,
    ) -> Result<(bool, i64), Status> {
        let saved = (self.record.state, std::mem::take(&mut self.record.data));
        self.record.state = state;
        let ok = self.persist(step, compares, ops).await;
        match ok {
            Ok(true) => {
                self.node.procedures.finished().push_back(self.record.id);
                Ok((true, self.revision))
            }
            other => {
                (self.record.state, self.record.data) = saved;
                other.map(|ok| (ok, self.revision))
            }
        }
    }
}

impl Drop for Ctx {
    /// A stored procedure that stops while still running (an error ended its task) is picked up
    /// again by this leader's procedure runner, or by the next leader.
    fn drop(&mut self) {
        let procedures = &self.node.procedures;
        procedures.active().remove(&self.record.id);
        if self.revision != 0 && self.record.state == ProcedureState::Running {
            procedures.mark_stalled();
        }
    }
}

/// Crashes the process when the test hook names `kind:step`. With a marker file configured, only
/// the first node to get there crashes (it creates the marker); the others carry on, so the
/// resuming leader does not crash too.
pub fn crash_hook(node: &Node, kind: &str, step: &str) {
    let Some(at) = node.config.test_crash_at.as_deref() else {
        return;
    };
    if at != format!("{kind}:{step}") {
        return;
    }
    if let Some(marker) = &node.config.test_crash_marker {
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(marker);
        if created.is_err() {
            return;
        }
    }
    eprintln!("cairn: test hook test_crash_at={at}: aborting the process");
    std::process::abort();
}
