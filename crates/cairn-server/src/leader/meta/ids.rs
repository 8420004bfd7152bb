//! Replicated id sequences handed out in batches.
//!
//! The sequence key holds the next id no one has been given. The leader reserves a batch with one
//! compare-and-swap write and hands ids out of it from memory, so creating a table is not a Raft
//! write for its id. Ids left in a batch when leadership moves are skipped, never reused: ids may
//! have gaps, never duplicates.

use crate::errors;
use crate::leader::node::Node;
use crate::replica::meta::store::{self, put_op, unchanged_since};
use tonic::Status;

/// Table ids start here; lower ones are reserved for the system.
pub const TABLE_ID_START: u64 = 1024;
/// Table ids reserved per sequence write.
pub const TABLE_ID_BATCH: u64 = 1000;
/// Procedure ids reserved per sequence write.
pub const PROCEDURE_ID_BATCH: u64 = 1000;
/// Compare-and-swap attempts before reserving a batch gives up.
const RESERVE_ATTEMPTS_MAX: usize = 8;

#[derive(Default)]
struct Batch {
    next: u64,
    end: u64,
    /// The Raft term the batch was reserved in; a new term reserves afresh.
    term: u64,
}

/// One id sequence.
pub struct IdSequence {
    key: String,
    start: u64,
    batch: u64,
    state: tokio::sync::Mutex<Batch>,
}

impl IdSequence {
    pub fn new(key: String, start: u64, batch: u64) -> Self {
        assert!(batch > 0, "an id batch holds at least one id");
        Self {
            key,
            start,
            batch,
            state: tokio::sync::Mutex::new(Batch::default()),
        }
    }

    /// The next id, for a decision of leader term `term`.
    pub async fn next(&self, node: &Node, term: u64) -> Result<u64, Status> {
        let mut b = self.state.lock().await;
        if b.term != term || b.next >= b.end {
            let (next, end) = self.reserve(node, term).await?;
            *b = Batch { next, end, term };
        }
        let id = b.next;
        b.next += 1;
        Ok(id)
    }

    async fn reserve(&self, node: &Node, term: u64) -> Result<(u64, u64), Status> {
        for _ in 0..RESERVE_ATTEMPTS_MAX {
            let (current, revision) = match store::get_raw(node, &self.key)? {
                Some(kv) => {
                    let text = std::str::from_utf8(&kv.value).unwrap_or("");
                    let v: u64 = text.parse().map_err(|_| {
                        errors::internal(format!(
                            "id sequence {} holds {text:?}, not a number",
                            self.key
                        ))
                    })?;
                    (v.max(self.start), kv.mod_revision)
                }
                None => (self.start, 0),
            };
            let end = current
                .checked_add(self.batch)
                .ok_or_else(|| errors::internal(format!("id sequence {} exhausted", self.key)))?;
            let (ok, _, _) = store::txn_here(
                node,
                term,
                vec![unchanged_since(&self.key, revision)],
                vec![put_op(&self.key, end.to_string().into_bytes())],
            )
            .await?;
            if ok {
                return Ok((current, end));
            }
            // Our applied state was behind; wait for it and try again.
            node.read_barrier().await?;
        }
        Err(errors::internal(format!(
            "id sequence {}: could not reserve a batch",
            self.key
        )))
    }
}
