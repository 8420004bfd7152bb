//! Operator switches: maintenance mode on or off, and draining a datanode (or cancelling it).
//! Each is one transaction that stores the new state with the finished procedure record (kind
//! `operator_change`, so `ctl procedure list` shows who switched what when); nothing is resumed.

use super::engine::{self, Kind, Next, Step, Txn};
use super::{begin, detached, lock, Ctx};
use crate::leader::node::Node;
use crate::replica::meta::store::{self, delete_op, layout, put_op};
use cairn_meta::{
    codec, Drain, DrainMode, Maintenance, SchedulerSetting, MAINTENANCE_REASON_BYTES_MAX,
    SCHEDULER_PARAMS_MAX, SCHEDULER_PARAM_BYTES_MAX,
};
use cairn_proto::cairnpb::{
    self as pb, DdlResponse, DrainNodeRequest, SetMaintenanceRequest, SetSchedulerRequest,
};
use cairn_proto::etcdserverpb::RequestOp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use tonic::Status;

pub const KIND: &str = "operator_change";

/// The one step: stored only as it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorChangeStep {
    Commit,
}

impl Step for OperatorChangeStep {
    const ALL: &'static [Self] = &[Self::Commit];

    fn name(self) -> &'static str {
        "commit"
    }
}

/// What was switched, for the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorChange {
    what: String,
    /// The event log entry: kind, subject, figures.
    event: (String, String, Vec<(String, String)>),
}

impl Kind for OperatorChange {
    const KIND: &'static str = KIND;
    type Step = OperatorChangeStep;

    async fn run(
        &mut self,
        _ctx: &mut Ctx,
        step: OperatorChangeStep,
    ) -> Result<Next<OperatorChangeStep>, Status> {
        Err(engine::ProcedureError::NotRunnable {
            kind: KIND.into(),
            step: step.name().into(),
        }
        .into())
    }

    fn done(&mut self, ctx: &Ctx, revision: i64) -> DdlResponse {
        tracing::info!(procedure = ctx.record.id, "operator change: {}", self.what);
        let (kind, subject, figures) = &self.event;
        let figures: Vec<(&str, String)> = figures
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        crate::leader::events::record(
            &ctx.node,
            ctx.term,
            kind,
            subject.clone(),
            self.what.clone(),
            &figures,
        );
        DdlResponse {
            procedure_id: ctx.record.id,
            revision,
            ..Default::default()
        }
    }
}

/// Stores `ops` as the change `what`, under the lock `lock_name`.
async fn change(
    node: &Arc<Node>,
    lock_name: String,
    what: String,
    event: (String, String, Vec<(String, String)>),
    ops: impl FnOnce(&Node) -> Result<Vec<RequestOp>, Status> + Send + 'static,
) -> Result<DdlResponse, Status> {
    let node2 = node.clone();
    detached(node, async move {
        let node = node2;
        let locks = vec![(lock_name, lock::Mode::Exclusive)];
        let ctx = begin(&node, KIND, what.clone(), locks).await?;
        let last = Next::Done(OperatorChangeStep::Commit, Txn::ops(ops(&node)?));
        engine::start(ctx, OperatorChange { what, event }, last).await
    })
    .await
}

/// The stored maintenance state (off when never set), from this node's applied state.
pub fn current(node: &crate::replica::node::Replica) -> Result<Maintenance, Status> {
    Ok(store::get::<Maintenance>(node, &layout().maintenance())?
        .map(|r| r.value)
        .unwrap_or_default())
}

/// Every stored drain, in node id order.
pub fn drains(node: &crate::replica::node::Replica) -> Result<Vec<Drain>, Status> {
    let mut out = Vec::new();
    store::scan_all(node, &layout().drains_prefix(), |kv| {
        if let Ok(d) = codec::decode::<Drain>(&kv.key, &kv.value) {
            out.push(d);
        }
        Ok(())
    })?;
    Ok(out)
}

/// Runs SetMaintenance on the leader.
pub async fn set_maintenance(
    node: &Arc<Node>,
    req: SetMaintenanceRequest,
) -> Result<DdlResponse, Status> {
    if req.reason.len() > MAINTENANCE_REASON_BYTES_MAX {
        return Err(Status::invalid_argument(format!(
            "reason: at most {MAINTENANCE_REASON_BYTES_MAX} bytes (maintenance_reason_bytes_max), \
             got {}",
            req.reason.len()
        )));
    }
    let what = format!("maintenance {}", if req.on { "on" } else { "off" });
    let event = (
        "maintenance".to_string(),
        "cluster".to_string(),
        vec![
            ("on".to_string(), req.on.to_string()),
            ("reason".to_string(), req.reason.clone()),
        ],
    );
    change(node, "maintenance".into(), what, event, move |node| {
        let state = Maintenance {
            on: req.on,
            reason: req.reason,
            since_ms: node.clock.unix_ms(),
        };
        Ok(vec![put_op(&layout().maintenance(), codec::encode(&state))])
    })
    .await
}

/// Runs DrainNode on the leader: the node must be a datanode the leader knows (heard from, or
/// stored).
pub async fn drain_node(node: &Arc<Node>, req: DrainNodeRequest) -> Result<DdlResponse, Status> {
    let id = req.node_id;
    if id == 0 {
        return Err(Status::invalid_argument("node_id: must be set"));
    }
    let mode = match pb::DrainMode::try_from(req.mode) {
        Ok(pb::DrainMode::Drain) => Some(DrainMode::Drain),
        Ok(pb::DrainMode::EvictLeaders) => Some(DrainMode::EvictLeaders),
        Ok(pb::DrainMode::Cancel) => None,
        _ => {
            return Err(Status::invalid_argument(
                "mode: one of DRAIN, EVICT_LEADERS, CANCEL",
            ))
        }
    };
    let role = node.heartbeats.registry().get(id).map(|e| e.identity.role);
    match role {
        None => {
            return Err(Status::not_found(format!(
                "node_id: node {id} is not a known datanode"
            )))
        }
        Some(r) if r != pb::NodeRole::Datanode as i32 => {
            return Err(Status::invalid_argument(format!(
                "node_id: node {id} is not a datanode"
            )))
        }
        Some(_) => {}
    }
    let what = match mode {
        Some(m) => format!("{} node {id}", m.as_str()),
        None => format!("cancel drain of node {id}"),
    };
    let kind = match mode {
        Some(DrainMode::EvictLeaders) => "evict_leaders",
        _ => "drain",
    };
    let figures = vec![(
        "mode".to_string(),
        mode.map_or("cancel", |m| m.as_str()).to_string(),
    )];
    let event = (kind.to_string(), format!("node {id}"), figures);
    let done = change(node, format!("drain/{id}"), what, event, move |node| {
        let key = layout().drain(id);
        Ok(vec![match mode {
            Some(mode) => put_op(
                &key,
                codec::encode(&Drain {
                    node_id: id,
                    mode,
                    since_ms: node.clock.unix_ms(),
                }),
            ),
            None => delete_op(&key),
        }])
    })
    .await?;
    // The drain schedulers start on it now rather than at the next interval.
    node.scheduling.wake();
    Ok(done)
}

/// Runs SetScheduler on the leader: switches a scheduler and sets parameters, checked against
/// the scheduler itself (an unknown name, parameter or a bad value is refused, naming it).
pub async fn set_scheduler(
    node: &Arc<Node>,
    req: SetSchedulerRequest,
) -> Result<DdlResponse, Status> {
    if req.params.len() > SCHEDULER_PARAMS_MAX {
        return Err(Status::invalid_argument(format!(
            "params: at most {SCHEDULER_PARAMS_MAX} (scheduler_params_max), got {}",
            req.params.len()
        )));
    }
    if let Some((k, v)) = req
        .params
        .iter()
        .find(|(k, v)| k.len() > SCHEDULER_PARAM_BYTES_MAX || v.len() > SCHEDULER_PARAM_BYTES_MAX)
    {
        return Err(Status::invalid_argument(format!(
            "params: names and values at most {SCHEDULER_PARAM_BYTES_MAX} bytes \
             (scheduler_param_bytes_max), got {} and {}",
            k.len(),
            v.len()
        )));
    }
    // Checked against what is stored now, so the result is a valid whole.
    let mut schedulers = crate::leader::scheduling::configured(node)?;
    let invalid = |e: cairn_sched::ConfigError| Status::invalid_argument(e.to_string());
    if let Some(on) = req.enabled {
        schedulers.set_enabled(&req.name, on).map_err(invalid)?;
    }
    for (k, v) in &req.params {
        schedulers.configure(&req.name, k, v).map_err(invalid)?;
    }
    let info = schedulers
        .list()
        .into_iter()
        .find(|i| i.name == req.name)
        .ok_or_else(|| {
            invalid(cairn_sched::ConfigError::UnknownScheduler {
                name: req.name.clone(),
                known: cairn_sched::scheduler_names().join(", "),
            })
        })?;
    let mut stored = crate::leader::scheduling::settings(node)?
        .into_iter()
        .find(|s| s.name == req.name)
        .unwrap_or_default();
    stored.name = req.name.clone();
    stored.enabled = info.enabled;
    stored.params.extend(req.params.clone());
    let what = format!(
        "scheduler {} {}{}",
        req.name,
        if info.enabled { "on" } else { "off" },
        req.params
            .iter()
            .map(|(k, v)| format!(" {k}={v}"))
            .collect::<String>()
    );
    let mut figures = vec![("enabled".to_string(), info.enabled.to_string())];
    figures.extend(req.params.iter().map(|(k, v)| (k.clone(), v.clone())));
    let event = (
        "scheduler".to_string(),
        format!("scheduler {}", req.name),
        figures,
    );
    let lock = format!("scheduler/{}", req.name);
    change(node, lock, what, event, move |node| {
        stored.since_ms = node.clock.unix_ms();
        let key = layout().scheduler(&stored.name);
        Ok(vec![put_op(
            &key,
            codec::encode::<SchedulerSetting>(&stored),
        )])
    })
    .await
}
