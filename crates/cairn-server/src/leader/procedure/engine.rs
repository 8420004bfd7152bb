//! The step engine: runs every procedure kind as a sequence of persisted steps.
//!
//! A kind (one file each) says only what its steps are ([`Step`]), what each step does and what
//! comes next ([`Kind::run`] returning a [`Next`]), what giving up on a step means, and its
//! rollback. The engine does the rest the same way for every kind:
//! - it stores the record at a step, with the kind's writes for that transition, before the
//!   step's effects start, comparing the record's revision so a deposed leader's copy never
//!   writes over a newer leader's;
//! - it retries a failed step after a backoff, at most [`PROCEDURE_STEP_ATTEMPTS_MAX`] times,
//!   recording each attempt, then asks the kind what giving up means (by default: roll back
//!   where the kind has a rollback step, else end as failed);
//! - it resumes a stored procedure from its step on a new leader ([`resume`]).
//!
//! Crash hooks (`--test-crash-at kind:hook`) fire when a step is entered: after it is stored,
//! before its effects, and before the transaction that ends the procedure.

use super::PROCEDURE_STEP_ATTEMPTS_MAX;
use super::{Ctx, PROCEDURE_RETRY_BACKOFF_MAX_MS, PROCEDURE_RETRY_BACKOFF_MS};
use crate::errors;
use cairn_meta::ProcedureData;
use cairn_proto::cairnpb::DdlResponse;
use cairn_proto::etcdserverpb::{Compare, RequestOp};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::time::Duration;
use tonic::{Code, Status};

/// A step of one procedure kind: an enum whose names are stored in `ProcedureRecord.step` and
/// parsed back on resume, so a name, once released, never changes meaning.
pub trait Step: Copy + Eq + fmt::Debug + Send + Sync + 'static {
    /// Every step of the kind.
    const ALL: &'static [Self];

    /// The stored name.
    fn name(self) -> &'static str;

    /// The crash hook fired when the step is entered; its stored name unless the hook predates
    /// the name.
    fn hook(self) -> &'static str {
        self.name()
    }
}

/// The step of `kind` stored as `name`.
pub fn parse_step<S: Step>(kind: &str, name: &str) -> Result<S, ProcedureError> {
    S::ALL
        .iter()
        .copied()
        .find(|s| s.name() == name)
        .ok_or_else(|| ProcedureError::UnknownStep {
            kind: kind.to_string(),
            step: name.to_string(),
        })
}

/// Why a stored procedure cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProcedureError {
    /// Written by a newer Cairn, or edited by hand.
    #[error("procedure kind {kind} has no step {step:?}")]
    UnknownStep { kind: String, step: String },
    #[error("unknown procedure kind {kind:?}")]
    UnknownKind { kind: String },
    /// The step only names how the procedure ended; a running record is never stored at it.
    #[error("step {step} of procedure kind {kind} ends the procedure; it is not run")]
    NotRunnable { kind: String, step: String },
    #[error("procedure {id}: unreadable data: {why}")]
    BadData { id: u64, why: String },
}

impl From<ProcedureError> for Status {
    fn from(e: ProcedureError) -> Self {
        errors::internal(e.to_string())
    }
}

/// Writes stored in the same transaction as the record, and what it means when `compares`
/// fail. With no compares a failed write can only mean a newer leader wrote the record.
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<RequestOp>,
    pub otherwise: Conflict,
}

impl Txn {
    /// The record alone.
    pub fn none() -> Self {
        Self::ops(Vec::new())
    }

    /// `ops` with the record, unconditionally.
    pub fn ops(ops: Vec<RequestOp>) -> Self {
        Self {
            compares: Vec::new(),
            ops,
            otherwise: Conflict::Superseded,
        }
    }

    /// `ops` with the record if `compares` hold; `otherwise` says what failing them means.
    pub fn guarded(compares: Vec<Compare>, ops: Vec<RequestOp>, otherwise: Conflict) -> Self {
        Self {
            compares,
            ops,
            otherwise,
        }
    }
}

/// What a failed compare of a [`Txn`] means.
pub enum Conflict {
    /// Someone else (a newer leader) owns the procedure now.
    Superseded,
    /// End the procedure as failed.
    Fail { error: String, status: Status },
    /// Roll back with this reason.
    Rollback(String),
}

/// What comes after a step.
pub enum Next<S> {
    /// Store the record at this step (with the txn), then run it. The same step again stores
    /// progress: each run starts from what was stored.
    Step(S, Txn),
    /// This attempt of the step failed; retry it after a backoff, or give up.
    Retry(String),
    /// Store the procedure as done at this step (with the txn); [`Kind::done`] then answers.
    Done(S, Txn),
    /// Stop: run the kind's rollback step with this reason, or end as failed if it has none.
    Rollback(String),
    /// End the procedure as failed: `error` is recorded, `status` answers the client.
    Fail { error: String, status: Status },
}

/// One procedure kind. Its value is the procedure's data, stored with the record at every step
/// and read back on resume.
pub trait Kind: Serialize + DeserializeOwned + Send + 'static {
    /// The kind's stored name.
    const KIND: &'static str;
    type Step: Step;
    /// The step that undoes what was done, if the kind can undo.
    const ROLLBACK: Option<Self::Step> = None;

    /// Does `step` (stored already, or being retried) and says what comes next. `Err` leaves
    /// the procedure stored as it is, for the next leader to resume.
    fn run(
        &mut self,
        ctx: &mut Ctx,
        step: Self::Step,
    ) -> impl Future<Output = Result<Next<Self::Step>, Status>> + Send;

    /// What to do once `step` failed [`PROCEDURE_STEP_ATTEMPTS_MAX`] times with `error`.
    fn gave_up(&mut self, _ctx: &mut Ctx, _step: Self::Step, error: String) -> Next<Self::Step> {
        Next::Rollback(error)
    }

    /// After the procedure was stored as done at `revision`: tell caches, and the answer.
    fn done(&mut self, ctx: &Ctx, revision: i64) -> DdlResponse;
}

/// Runs a procedure whose preparation (under its locks, nothing stored yet) said `first`.
pub async fn start<K: Kind>(
    ctx: Ctx,
    kind: K,
    first: Next<K::Step>,
) -> Result<DdlResponse, Status> {
    drive(ctx, kind, Action::Next(first)).await
}

/// Resumes a stored procedure of kind `K` from its step.
pub async fn resume<K: Kind>(ctx: Ctx) -> Result<DdlResponse, Status> {
    let step = parse_step::<K::Step>(K::KIND, &ctx.record.step)?;
    let kind: K = ctx
        .record
        .data
        .decode()
        .map_err(|e| ProcedureError::BadData {
            id: ctx.record.id,
            why: e.to_string(),
        })?;
    drive(ctx, kind, Action::Enter(step)).await
}

/// The engine's next move.
enum Action<S> {
    Next(Next<S>),
    /// Run a stored step, firing its hook.
    Enter(S),
}

async fn drive<K: Kind>(
    mut ctx: Ctx,
    mut kind: K,
    first: Action<K::Step>,
) -> Result<DdlResponse, Status> {
    let mut action = first;
    // The step last entered: where attempts are counted and failures recorded.
    let mut current: Option<K::Step> = None;
    loop {
        action = match action {
            Action::Enter(step) => {
                ctx.hook(step.hook());
                current = Some(step);
                Action::Next(run(&mut kind, &mut ctx, step).await?)
            }
            Action::Next(Next::Step(step, txn)) => {
                ctx.record.data = data_of(&ctx, &kind)?;
                if current != Some(step) {
                    ctx.record.attempts = 0;
                }
                let guarded = !txn.compares.is_empty();
                let stored = ctx.persist(step.name(), txn.compares, txn.ops).await?;
                current = Some(step);
                if stored {
                    Action::Enter(step)
                } else {
                    conflict(&ctx, guarded, txn.otherwise)?
                }
            }
            Action::Next(Next::Retry(error)) => {
                let step = current.ok_or_else(|| {
                    errors::internal(format!(
                        "procedure {}: a retry before any step ran",
                        ctx.record.id
                    ))
                })?;
                ctx.record.data = data_of(&ctx, &kind)?;
                Action::Next(match failed_attempt(&mut ctx, error).await? {
                    Attempt::Again => run(&mut kind, &mut ctx, step).await?,
                    Attempt::GaveUp(error) => kind.gave_up(&mut ctx, step, error),
                })
            }
            Action::Next(Next::Done(step, txn)) => {
                ctx.hook(step.hook());
                current = Some(step);
                let guarded = !txn.compares.is_empty();
                let (ok, revision) = ctx.finish(step.name(), txn.compares, txn.ops).await?;
                if ok {
                    return Ok(kind.done(&ctx, revision));
                }
                conflict(&ctx, guarded, txn.otherwise)?
            }
            Action::Next(Next::Rollback(why)) => Action::Next(match K::ROLLBACK {
                Some(rollback) if current != Some(rollback) => {
                    ctx.record.last_error = why;
                    Next::Step(rollback, Txn::none())
                }
                _ => Next::Fail {
                    status: Status::new(Code::Unavailable, why.clone()),
                    error: why,
                },
            }),
            Action::Next(Next::Fail { error, status }) => {
                // Never stored: nothing happened, nothing to record.
                if ctx.revision != 0 {
                    let step = current.map_or_else(|| ctx.record.step.clone(), |s| s.name().into());
                    ctx.fail(&step, &error).await?;
                }
                return Err(status);
            }
        };
    }
}

async fn run<K: Kind>(kind: &mut K, ctx: &mut Ctx, step: K::Step) -> Result<Next<K::Step>, Status> {
    ctx.check_term()?;
    kind.run(ctx, step).await
}

fn data_of<K: Kind>(ctx: &Ctx, kind: &K) -> Result<ProcedureData, Status> {
    ProcedureData::of(kind).map_err(|e| {
        errors::internal(format!(
            "procedure {}: cannot encode its data: {e}",
            ctx.record.id
        ))
    })
}

/// What a failed compare of a stored transition means for the procedure.
fn conflict<S>(ctx: &Ctx, guarded: bool, otherwise: Conflict) -> Result<Action<S>, Status> {
    ctx.check_term()?;
    match otherwise {
        _ if !guarded => Err(ctx.superseded()),
        Conflict::Superseded => Err(ctx.superseded()),
        Conflict::Fail { error, status } => Ok(Action::Next(Next::Fail { error, status })),
        Conflict::Rollback(why) => Ok(Action::Next(Next::Rollback(why))),
    }
}

enum Attempt {
    /// Backed off; run the step again.
    Again,
    /// Attempts are used up (or could not be recorded): why.
    GaveUp(String),
}

/// Records a failed attempt of the current step and sleeps the backoff, or says it gave up.
async fn failed_attempt(ctx: &mut Ctx, error: String) -> Result<Attempt, Status> {
    ctx.record.attempts += 1;
    tracing::info!(
        procedure = ctx.record.id,
        kind = %ctx.record.kind,
        step = %ctx.record.step,
        attempt = ctx.record.attempts,
        "procedure step failed: {error}"
    );
    ctx.record.last_error = error.clone();
    let step = ctx.record.step.clone();
    match ctx.persist(&step, Vec::new(), Vec::new()).await {
        Ok(true) => {}
        Ok(false) => return Err(ctx.superseded()),
        Err(e) => {
            return Ok(Attempt::GaveUp(format!(
                "{error}; recording the attempt failed: {}",
                e.message()
            )))
        }
    }
    if ctx.record.attempts >= PROCEDURE_STEP_ATTEMPTS_MAX {
        return Ok(Attempt::GaveUp(format!(
            "{error} (gave up after {} attempts, procedure_step_attempts_max)",
            ctx.record.attempts
        )));
    }
    tokio::time::sleep(backoff(ctx.record.attempts)).await;
    Ok(Attempt::Again)
}

/// The pause after `attempts` failed attempts: doubling from [`PROCEDURE_RETRY_BACKOFF_MS`],
/// at most [`PROCEDURE_RETRY_BACKOFF_MAX_MS`].
pub fn backoff(attempts: u32) -> Duration {
    let shift = attempts.min(10);
    Duration::from_millis((PROCEDURE_RETRY_BACKOFF_MS << shift).min(PROCEDURE_RETRY_BACKOFF_MAX_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Demo {
        First,
        Last,
    }

    impl Step for Demo {
        const ALL: &'static [Self] = &[Demo::First, Demo::Last];
        fn name(self) -> &'static str {
            match self {
                Demo::First => "first",
                Demo::Last => "last",
            }
        }
    }

    #[test]
    fn steps_parse_back_and_unknown_names_are_errors() {
        for s in Demo::ALL {
            assert_eq!(parse_step::<Demo>("demo", s.name()), Ok(*s));
        }
        let e = parse_step::<Demo>("demo", "middle").unwrap_err();
        assert_eq!(
            e,
            ProcedureError::UnknownStep {
                kind: "demo".into(),
                step: "middle".into()
            }
        );
        assert_eq!(e.to_string(), "procedure kind demo has no step \"middle\"");
    }

    #[test]
    fn backoff_doubles_up_to_its_max() {
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(2), Duration::from_millis(400));
        assert_eq!(backoff(5), Duration::from_millis(2_000));
        assert_eq!(backoff(u32::MAX), Duration::from_millis(2_000));
    }
}
