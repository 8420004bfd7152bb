//! SET MAINTENANCE: switch maintenance mode on or off. One transaction stores the new state and
//! the finished procedure record (so `ctl procedure list` shows who switched it when, until the
//! event log does); nothing is resumed.

use super::engine::{self, Kind, Next, Step, Txn};
use super::{begin, detached, lock, Ctx};
use crate::leader::node::Node;
use crate::replica::meta::store::{self, layout, put_op};
use cairn_meta::{codec, Maintenance, MAINTENANCE_REASON_BYTES_MAX};
use cairn_proto::cairnpb::{DdlResponse, SetMaintenanceRequest};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tonic::Status;

pub const KIND: &str = "set_maintenance";
/// The lock every change of the maintenance state takes.
const LOCK: &str = "maintenance";

/// The one step: stored only as it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMaintenanceStep {
    Commit,
}

impl Step for SetMaintenanceStep {
    const ALL: &'static [Self] = &[Self::Commit];

    fn name(self) -> &'static str {
        "commit"
    }
}

/// The state written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetMaintenance {
    state: Maintenance,
}

impl Kind for SetMaintenance {
    const KIND: &'static str = KIND;
    type Step = SetMaintenanceStep;

    async fn run(
        &mut self,
        _ctx: &mut Ctx,
        step: SetMaintenanceStep,
    ) -> Result<Next<SetMaintenanceStep>, Status> {
        Err(engine::ProcedureError::NotRunnable {
            kind: KIND.into(),
            step: step.name().into(),
        }
        .into())
    }

    fn done(&mut self, ctx: &Ctx, revision: i64) -> DdlResponse {
        tracing::info!(
            on = self.state.on,
            reason = %self.state.reason,
            "maintenance mode {}",
            if self.state.on { "on" } else { "off" }
        );
        DdlResponse {
            procedure_id: ctx.record.id,
            revision,
            ..Default::default()
        }
    }
}

/// The stored maintenance state (off when never set), from this node's applied state.
pub fn current(node: &crate::replica::node::Replica) -> Result<Maintenance, Status> {
    Ok(store::get::<Maintenance>(node, &layout().maintenance())?
        .map(|r| r.value)
        .unwrap_or_default())
}

/// Runs SetMaintenance on the leader.
pub async fn run(node: &Arc<Node>, req: SetMaintenanceRequest) -> Result<DdlResponse, Status> {
    if req.reason.len() > MAINTENANCE_REASON_BYTES_MAX {
        return Err(Status::invalid_argument(format!(
            "reason: at most {MAINTENANCE_REASON_BYTES_MAX} bytes (maintenance_reason_bytes_max), \
             got {}",
            req.reason.len()
        )));
    }
    let node2 = node.clone();
    detached(node, async move {
        let node = node2;
        let locks = vec![(LOCK.to_string(), lock::Mode::Exclusive)];
        let target = if req.on { "on" } else { "off" };
        let ctx = begin(&node, KIND, format!("maintenance {target}"), locks).await?;
        let state = Maintenance {
            on: req.on,
            reason: req.reason,
            since_ms: node.clock.unix_ms(),
        };
        let ops = vec![put_op(&layout().maintenance(), codec::encode(&state))];
        let last = Next::Done(SetMaintenanceStep::Commit, Txn::ops(ops));
        engine::start(ctx, SetMaintenance { state }, last).await
    })
    .await
}
