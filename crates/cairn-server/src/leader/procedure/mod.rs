//! The procedure runner: every DDL runs as a persistent, step-wise procedure on the leader.
//!
//! A procedure's record (kind, target, step, attempts, last error, its own data) lives in the
//! replicated store under `/cairn/<cluster>/procedure/<id>`; each step that must survive a crash
//! is persisted before its effects start, with a compare on the record's revision so a deposed
//! leader's copy can never write over the new leader's. When a node becomes leader it takes the
//! locks of every running procedure and resumes it from its step before it serves any DDL.
//! Steps that fail are retried a bounded number of times, then rolled back. A procedure that
//! stops with an error while its leader stays (a store write that timed out: its outcome is
//! unknown, so the engine does not guess) is resumed from its stored record by the same leader
//! a moment later, as a new leader would.
//!
//! One file per procedure kind, each saying only its steps (an enum), what each does, what comes
//! next and its rollback; `engine.rs` runs every kind (persist, retry, roll back, resume),
//! `ctx.rs` is a running procedure's record and writes, and this file holds the leader's
//! procedure machinery: starting, resuming and housekeeping.

pub mod alter_table;
pub mod create_table;
mod ctx;
pub mod database;
pub mod drop_table;
pub mod engine;
pub mod lock;
pub mod maintenance;
pub mod migrate_region;
pub mod truncate_table;

pub use ctx::{crash_hook, Ctx};

use crate::errors;
use crate::leader::meta::ids::{IdSequence, PROCEDURE_ID_BATCH, TABLE_ID_BATCH, TABLE_ID_START};
use crate::leader::node::Node;
use crate::leader::LeaderTerm;
use crate::replica::meta::store::{self, layout};
use cairn_meta::{codec, ProcedureRecord, ProcedureState};
use cairn_sched::{Selector, SelectorKind};
use lock::{LockSet, LockTable, Mode};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tonic::Status;

/// Attempts of one step before the procedure gives up (and rolls back where it can).
pub const PROCEDURE_STEP_ATTEMPTS_MAX: u32 = 5;
/// First pause between attempts; doubles up to [`PROCEDURE_RETRY_BACKOFF_MAX_MS`].
pub const PROCEDURE_RETRY_BACKOFF_MS: u64 = 100;
pub const PROCEDURE_RETRY_BACKOFF_MAX_MS: u64 = 2_000;
/// Finished procedure records kept in the store for `ctl procedure list`; older ones are deleted.
pub const PROCEDURES_FINISHED_KEPT_MAX: usize = 1_000;
/// Procedures running at once on the leader; more wait for a slot.
pub const PROCEDURES_RUNNING_MAX: usize = 1_024;
/// Running procedures a new leader resumes; beyond that it fails loudly instead of using
/// unbounded memory (it would take a very broken cluster to get here).
pub const PROCEDURES_RESUMED_MAX: usize = 100_000;
/// Cache invalidations being broadcast to frontends at once; more are skipped (frontends also
/// learn of every change from the metadata watch).
pub const PUBLISH_INFLIGHT_MAX: usize = 64;
/// How long frontends get to confirm an invalidation.
const PUBLISH_TIMEOUT_MS: u64 = 2_000;
/// How often the leader deletes old finished procedure records and compacts history.
const HOUSEKEEPING_INTERVAL_MS: u64 = 5_000;
/// How often leadership is checked.
const DUTIES_TICK_MS: u64 = 100;
/// How soon a procedure that stopped with an error (its leader still leading) is resumed.
const STALLED_RESUME_MS: u64 = 1_000;

/// The leader's procedure machinery; idle on followers.
pub struct Procedures {
    pub locks: Arc<LockTable>,
    pub table_ids: IdSequence,
    procedure_ids: IdSequence,
    selector: Mutex<Box<dyn Selector>>,
    /// Regions placed per datanode since its last report: node -> (reported count then, placed).
    placed: Mutex<HashMap<u64, (usize, u64)>>,
    /// The Raft term whose running procedures were resumed; 0 while not serving DDL.
    serving: watch::Sender<u64>,
    /// Ids of finished records still stored, oldest first.
    finished: Mutex<VecDeque<u64>>,
    slots: Arc<tokio::sync::Semaphore>,
    publishing: Arc<tokio::sync::Semaphore>,
    /// Ids of the procedures a task runs now on this node.
    active: Mutex<std::collections::HashSet<u64>>,
    /// A stored procedure stopped without finishing: resume the running records nobody runs.
    stalled: std::sync::atomic::AtomicBool,
}

impl Procedures {
    pub fn new(selector: SelectorKind, spread_label: &str) -> Self {
        Self {
            locks: Arc::new(LockTable::default()),
            table_ids: IdSequence::new(
                layout().table_id_sequence(),
                TABLE_ID_START,
                TABLE_ID_BATCH,
            ),
            procedure_ids: IdSequence::new(layout().procedure_id_sequence(), 1, PROCEDURE_ID_BATCH),
            selector: Mutex::new(selector.build(spread_label)),
            placed: Mutex::new(HashMap::new()),
            serving: watch::Sender::new(0),
            finished: Mutex::new(VecDeque::new()),
            slots: Arc::new(tokio::sync::Semaphore::new(PROCEDURES_RUNNING_MAX)),
            publishing: Arc::new(tokio::sync::Semaphore::new(PUBLISH_INFLIGHT_MAX)),
            active: Mutex::default(),
            stalled: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn active(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u64>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A procedure stored as running stopped here without finishing.
    pub(crate) fn mark_stalled(&self) {
        self.stalled
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn selector(&self) -> std::sync::MutexGuard<'_, Box<dyn Selector>> {
        self.selector.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn placed(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (usize, u64)>> {
        self.placed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finished(&self) -> std::sync::MutexGuard<'_, VecDeque<u64>> {
        self.finished.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether DDL is being served in `term`.
    pub fn serving(&self, term: u64) -> bool {
        term != 0 && *self.serving.borrow() == term
    }

    /// No DDL is served until the next term resumes its procedures.
    pub(crate) fn stop_serving(&self) {
        self.serving.send_replace(0);
    }
}

/// Tells connected frontends to drop cached entries for `keys`, in the background. Best effort:
/// the committed change is already visible, and the metadata watch reports it too.
pub fn publish(node: &Arc<Node>, keys: Vec<String>) {
    let Ok(permit) = node.procedures.publishing.clone().try_acquire_owned() else {
        tracing::debug!("cache invalidation skipped: publish_inflight_max reached");
        return;
    };
    let node = node.clone();
    tokio::spawn(async move {
        let kind = cairn_proto::cairnpb::instruction::Kind::InvalidateCaches(
            cairn_proto::cairnpb::InvalidateCaches { keys },
        );
        let _ = node
            .heartbeats
            .broadcast(
                cairn_proto::cairnpb::NodeRole::Frontend,
                kind,
                Duration::from_millis(PUBLISH_TIMEOUT_MS),
            )
            .await;
        drop(permit);
    });
}

/// Starts a procedure of `kind` on `target` holding `locks`: waits for DDL to be served in the
/// current term, takes the locks, and allocates its id. Nothing is stored yet: the procedure
/// persists its first step itself.
pub async fn begin(
    node: &Arc<Node>,
    kind: &str,
    target: String,
    locks: LockSet,
) -> Result<Ctx, Status> {
    begin_locked(node, kind, target, locks, Vec::new())
        .await
        .map_err(|e| match e {
            Begin::Busy(name) => errors::internal(format!("lock {name} busy")),
            Begin::Failed(status) => status,
        })
}

/// Why [`begin_locked`] did not start a procedure.
pub enum Begin {
    /// A lock that must be free at once was held by another procedure.
    Busy(String),
    Failed(Status),
}

impl From<Status> for Begin {
    fn from(s: Status) -> Self {
        Begin::Failed(s)
    }
}

/// [`begin`], taking `now` (locks that must be free at once: refused with [`Begin::Busy`]
/// otherwise, never waited for) before `wait` (waited for).
pub async fn begin_locked(
    node: &Arc<Node>,
    kind: &str,
    target: String,
    wait: LockSet,
    now: LockSet,
) -> Result<Ctx, Begin> {
    let leader = wait_serving(node).await?;
    let first = node
        .procedures
        .locks
        .try_acquire(&now)
        .map_err(Begin::Busy)?;
    let held = first.merge(node.procedures.locks.acquire(&wait).await);
    let locks: LockSet = now.into_iter().chain(wait).collect();
    let id = node
        .procedures
        .procedure_ids
        .next(node, leader.term())
        .await?;
    let now = node.clock.unix_ms();
    let record = ProcedureRecord {
        id,
        kind: kind.to_string(),
        target,
        state: ProcedureState::Running,
        step: "prepare".into(),
        attempts: 0,
        last_error: String::new(),
        created_ms: now,
        updated_ms: now,
        locks: locks.iter().map(|(n, m)| lock_text(n, *m)).collect(),
        opening_tables: Vec::new(),
        data: Default::default(),
    };
    let ctx = Ctx::new(node.clone(), record, 0, leader, held);
    ctx.check_term()?;
    Ok(ctx)
}

fn lock_text(name: &str, mode: Mode) -> String {
    match mode {
        Mode::Shared => format!("shared:{name}"),
        Mode::Exclusive => format!("exclusive:{name}"),
    }
}

fn parse_lock(text: &str) -> Option<(String, Mode)> {
    let (mode, name) = text.split_once(':')?;
    let mode = match mode {
        "shared" => Mode::Shared,
        "exclusive" => Mode::Exclusive,
        _ => return None,
    };
    Some((name.to_string(), mode))
}

/// Runs `f` on its own task so a client that goes away does not stop a procedure half-way.
pub async fn detached<T, F>(node: &Arc<Node>, f: F) -> Result<T, Status>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T, Status>> + Send + 'static,
{
    let permit = node
        .procedures
        .slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| errors::internal("procedure slots closed"))?;
    let task = tokio::spawn(async move {
        let out = f.await;
        drop(permit);
        out
    });
    task.await
        .map_err(|e| errors::internal(format!("procedure task failed: {e}")))?
}

/// Waits (bounded by the request timeout) until this node serves DDL in its current term.
async fn wait_serving(node: &Node) -> Result<LeaderTerm, Status> {
    let deadline = node.clock.now() + Duration::from_millis(node.config.request_timeout_ms);
    let mut rx = node.procedures.serving.subscribe();
    loop {
        if !node.raft.is_leader() {
            return Err(errors::leader_changed());
        }
        // The term whose services run here; None while a new term's barrier is pending.
        if let Some(leader) = node.leader_term() {
            if *rx.borrow_and_update() == leader.term() {
                return Ok(leader);
            }
        }
        tokio::select! {
            _ = rx.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(DUTIES_TICK_MS)) => {}
        }
        if node.clock.now() >= deadline {
            return Err(errors::leader_changed());
        }
    }
}

/// The procedure runner for one leader term: once the heartbeat hub serves the term (DDL talks
/// to datanodes), resumes the running procedures, serves DDL, and keeps the finished records and
/// the store's history bounded, until the term ends.
pub async fn run_term(node: Arc<Node>, term: LeaderTerm) {
    let tick = Duration::from_millis(DUTIES_TICK_MS);
    while node.heartbeats.serving_term() != term.term() {
        if term.sleep(tick).await {
            return;
        }
    }
    loop {
        match resume_all(&node, &term).await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(node_id = node.id, resumed = n, "procedures resumed");
                }
                break;
            }
            Err(e) => tracing::warn!("resuming procedures failed, will retry: {e}"),
        }
        if term.sleep(tick).await {
            return;
        }
    }
    node.procedures.serving.send_replace(term.term());
    let mut housekept = node.clock.now();
    while !term.sleep(Duration::from_millis(STALLED_RESUME_MS)).await {
        let stalled = &node.procedures.stalled;
        if stalled.swap(false, std::sync::atomic::Ordering::Relaxed) {
            match resume_stalled(&node, &term).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(node_id = node.id, resumed = n, "stalled procedures resumed")
                }
                Err(e) => {
                    tracing::debug!("resuming stalled procedures failed, will retry: {e}");
                    node.procedures.mark_stalled();
                }
            }
        }
        if housekept.elapsed() < Duration::from_millis(HOUSEKEEPING_INTERVAL_MS) {
            continue;
        }
        housekept = node.clock.now();
        if let Err(e) = forget_finished(&node, term.term()).await {
            tracing::debug!("deleting old procedure records failed: {e}");
        }
        if let Err(e) = crate::leader::events::forget_old(&node, term.term()).await {
            tracing::debug!("deleting old events failed: {e}");
        }
        if let Err(e) = auto_compact(&node, term.term()).await {
            tracing::debug!("auto compaction failed: {e}");
        }
    }
    node.procedures.stop_serving();
}

/// Loads every procedure record, takes the locks of the running ones and resumes them.
async fn resume_all(node: &Arc<Node>, term: &LeaderTerm) -> Result<usize, Status> {
    node.read_barrier().await?;
    let prefix = layout().procedures_prefix();
    let mut finished = VecDeque::new();
    let mut running = Vec::new();
    store::scan_all(node, &prefix, |kv| {
        match codec::decode::<ProcedureRecord>(&kv.key, &kv.value) {
            Ok(r) if r.state == ProcedureState::Running => running.push((r, kv.mod_revision)),
            Ok(r) => finished.push_back(r.id),
            Err(e) => tracing::warn!("ignoring unreadable procedure record: {e}"),
        }
        if running.len() > PROCEDURES_RESUMED_MAX {
            return Err(errors::internal(format!(
                "more than {PROCEDURES_RESUMED_MAX} running procedures (procedures_resumed_max)"
            )));
        }
        Ok(())
    })?;
    *node.procedures.finished() = finished;
    let n = running.len();
    for (record, revision) in running {
        let locks: LockSet = record.locks.iter().filter_map(|l| parse_lock(l)).collect();
        // Taken here, before DDL is served, so no new procedure slips in between.
        let held = node.procedures.locks.acquire(&locks).await;
        tokio::spawn(resume(Ctx::new(
            node.clone(),
            record,
            revision,
            term.clone(),
            held,
        )));
    }
    Ok(n)
}

/// Resumes the running records no task runs on this leader (their procedure stopped with an
/// error while this node kept leading). A record whose locks are busy waits for the next look.
async fn resume_stalled(node: &Arc<Node>, term: &LeaderTerm) -> Result<usize, Status> {
    node.read_barrier().await?;
    let mut ids = Vec::new();
    store::scan_all(node, &layout().procedures_prefix(), |kv| {
        if let Ok(r) = codec::decode::<ProcedureRecord>(&kv.key, &kv.value) {
            if r.state == ProcedureState::Running && !node.procedures.active().contains(&r.id) {
                ids.push(r.id);
            }
        }
        Ok(())
    })?;
    let mut resumed = 0;
    for id in ids {
        let Some(stored) = store::get::<ProcedureRecord>(node, &layout().procedure(id))? else {
            continue;
        };
        let record = stored.value;
        let locks: LockSet = record.locks.iter().filter_map(|l| parse_lock(l)).collect();
        let Ok(held) = node.procedures.locks.try_acquire(&locks) else {
            node.procedures.mark_stalled();
            continue;
        };
        // Under its locks: still running, and nobody took it up meanwhile.
        if record.state != ProcedureState::Running || node.procedures.active().contains(&id) {
            continue;
        }
        if !term.is_current() {
            return Err(errors::leader_changed());
        }
        tracing::info!(procedure = id, kind = %record.kind, "procedure stopped with an error; resuming it");
        let ctx = Ctx::new(
            node.clone(),
            record,
            stored.mod_revision,
            term.clone(),
            held,
        );
        tokio::spawn(resume(ctx));
        resumed += 1;
    }
    Ok(resumed)
}

async fn resume(ctx: Ctx) {
    let id = ctx.record.id;
    let kind = ctx.record.kind.clone();
    tracing::info!(procedure = id, kind = %kind, step = %ctx.record.step, "resuming procedure");
    // Alter table, create database and operator changes are never stored running (they end in the transaction
    // that stores them), so they are not resumed.
    let outcome = match kind.as_str() {
        create_table::KIND => engine::resume::<create_table::CreateTable>(ctx).await,
        migrate_region::KIND => engine::resume::<migrate_region::MigrateRegion>(ctx).await,
        drop_table::KIND => engine::resume::<drop_table::DropTable>(ctx).await,
        truncate_table::KIND => engine::resume::<truncate_table::TruncateTable>(ctx).await,
        database::DROP_KIND => engine::resume::<database::DropDatabase>(ctx).await,
        other => Err(engine::ProcedureError::UnknownKind {
            kind: other.to_string(),
        }
        .into()),
    };
    if let Err(e) = outcome {
        tracing::warn!(procedure = id, kind = %kind, "resumed procedure ended with an error: {e}");
    }
}

/// Deletes the oldest finished records beyond [`PROCEDURES_FINISHED_KEPT_MAX`], one
/// transaction of at most `txn_ops_max` deletes at a time, until under the limit.
async fn forget_finished(node: &Arc<Node>, term: u64) -> Result<(), Status> {
    while forget_finished_batch(node, term).await? {}
    Ok(())
}

/// One batch of [`forget_finished`]; false when nothing was left to delete.
async fn forget_finished_batch(node: &Arc<Node>, term: u64) -> Result<bool, Status> {
    let excess: Vec<u64> = {
        let f = node.procedures.finished();
        let n = f.len().saturating_sub(PROCEDURES_FINISHED_KEPT_MAX);
        f.iter()
            .take(n.min(node.config.txn_ops_max))
            .copied()
            .collect()
    };
    if excess.is_empty() {
        return Ok(false);
    }
    let ops = excess
        .iter()
        .map(|id| store::delete_op(&layout().procedure(*id)))
        .collect();
    store::txn_here(node, term, Vec::new(), ops).await?;
    let mut f = node.procedures.finished();
    f.retain(|id| !excess.contains(id));
    Ok(true)
}

/// Compacts history older than `auto_compaction_retention_revisions`, when set.
async fn auto_compact(node: &Arc<Node>, term: u64) -> Result<(), Status> {
    let keep = node.config.auto_compaction_retention_revisions;
    if keep == 0 {
        return Ok(());
    }
    let (current, compacted) = {
        let s = node.sm.read();
        (s.kv.revision(), s.kv.compact_revision())
    };
    let target = current - keep as i64;
    // Compacting walks every key: only when a tenth of the retention has piled up.
    if target <= compacted + (keep as i64 / 10).max(1) {
        return Ok(());
    }
    node.propose_in_term(term, cairn_store::Command::Compact { revision: target })
        .await?;
    tracing::debug!(revision = target, "auto compaction");
    Ok(())
}
