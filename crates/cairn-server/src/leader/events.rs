//! Writing the event log ([`cairn_meta::Event`]): each decision is recorded in the background
//! by the leader that made it, fenced by its term (a deposed leader's record is refused), and at
//! most [`EVENTS_KEPT_MAX`] are kept (the procedure housekeeping deletes the oldest).
//! Best effort: the decision stands whether or not its record is written.

use crate::leader::meta::ids::IdSequence;
use crate::leader::node::Node;
use crate::replica::meta::store::{self, delete_op, layout, put_op};
use cairn_meta::{codec, Event};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tonic::Status;

/// Events kept; older ones are deleted.
pub const EVENTS_KEPT_MAX: usize = 10_000;
/// Event writes in flight at once; beyond it an event is dropped (and logged).
pub const EVENT_WRITES_INFLIGHT_MAX: usize = 256;
/// Event ids reserved per sequence write.
const EVENT_ID_BATCH: u64 = 1_000;

/// The leader's event writer.
pub struct EventLog {
    ids: IdSequence,
    writes: Arc<Semaphore>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self {
            ids: IdSequence::new(layout().event_id_sequence(), 1, EVENT_ID_BATCH),
            writes: Arc::new(Semaphore::new(EVENT_WRITES_INFLIGHT_MAX)),
        }
    }
}

/// Records an event of `kind` about `subject`, decided in leader term `term`.
pub fn record(
    node: &Arc<Node>,
    term: u64,
    kind: &str,
    subject: String,
    message: String,
    figures: &[(&str, String)],
) {
    let Ok(permit) = node.events.writes.clone().try_acquire_owned() else {
        tracing::info!(kind, %subject, "event not recorded: event_writes_inflight_max reached");
        return;
    };
    let mut event = Event {
        id: 0,
        at_ms: node.clock.unix_ms(),
        kind: kind.to_string(),
        subject,
        message,
        figures: figures
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>(),
    };
    let node = node.clone();
    tokio::spawn(async move {
        let written = async {
            event.id = node.events.ids.next(&node, term).await?;
            let put = put_op(&layout().event(event.id), codec::encode(&event));
            store::txn_here(&node, term, Vec::new(), vec![put]).await
        };
        if let Err(e) = written.await {
            tracing::debug!(kind = %event.kind, "event not recorded: {}", e.message());
        }
        drop(permit);
    });
}

/// Deletes the oldest events beyond [`EVENTS_KEPT_MAX`], at most `txn_ops_max` per transaction.
pub async fn forget_old(node: &Node, term: u64) -> Result<(), Status> {
    let prefix = layout().events_prefix();
    loop {
        let stored = store::count(node, &prefix)? as usize;
        let excess = stored.saturating_sub(EVENTS_KEPT_MAX);
        if excess == 0 {
            return Ok(());
        }
        let batch = excess.min(node.config.txn_ops_max);
        let (oldest, _) = store::scan(node, &prefix, None, batch, true)?;
        let ops = oldest
            .iter()
            .map(|kv| delete_op(&String::from_utf8_lossy(&kv.key)))
            .collect();
        store::txn_here(node, term, Vec::new(), ops).await?;
    }
}
