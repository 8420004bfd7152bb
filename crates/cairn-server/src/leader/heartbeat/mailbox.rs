//! The mailbox: instructions from leader code to nodes, delivered on heartbeat responses, with
//! replies coming back on later heartbeat requests.
//!
//! Delivery is at least once: an instruction is re-sent on every regular response to its node
//! until the reply arrives or its timeout passes (nodes handle an id they have seen as done).
//! Between heartbeats the node's stream pushes only what it has not sent yet
//! ([`Outbox::outbound_after`]: ids grow, so "not sent yet" is "above the highest id sent").
//! [`Outbox`] is the pure part (ids, queues, deadlines given `now`); [`Mailbox`] adds the waiting
//! senders.

use cairn_proto::cairnpb::{instruction, Instruction, InstructionReply};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Instructions awaiting a reply from one node.
pub const OUTBOUND_INSTRUCTIONS_PER_NODE_MAX: usize = 256;
/// Instructions awaiting a reply from all nodes together.
pub const PENDING_INSTRUCTIONS_MAX: usize = 65_536;

/// Why an instruction got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailboxError {
    #[error("node {0} is not registered")]
    NodeUnknown(u64),
    #[error("node {0} has no open heartbeat stream")]
    NotConnected(u64),
    #[error("too many instructions pending ({what} reached)")]
    QueueFull { what: &'static str },
    #[error("no reply within {after_ms} ms")]
    Timeout { after_ms: u64 },
    #[error("this node stopped leading before the reply came")]
    LeadershipLost,
}

#[derive(Debug)]
struct Pending {
    node_id: u64,
    kind: instruction::Kind,
    deadline: Instant,
    timeout_ms: u64,
}

/// Queues of unreplied instructions, per node, in id order.
#[derive(Debug, Default)]
pub struct Outbox {
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    per_node: HashMap<u64, VecDeque<u64>>,
}

impl Outbox {
    /// Queues an instruction for `node_id`; returns its id.
    pub fn enqueue(
        &mut self,
        node_id: u64,
        kind: instruction::Kind,
        timeout: Duration,
        now: Instant,
    ) -> Result<u64, MailboxError> {
        if self.pending.len() >= PENDING_INSTRUCTIONS_MAX {
            return Err(MailboxError::QueueFull {
                what: "pending_instructions_max",
            });
        }
        let queue = self.per_node.entry(node_id).or_default();
        if queue.len() >= OUTBOUND_INSTRUCTIONS_PER_NODE_MAX {
            return Err(MailboxError::QueueFull {
                what: "outbound_instructions_per_node_max",
            });
        }
        self.next_id += 1;
        let id = self.next_id;
        queue.push_back(id);
        self.pending.insert(
            id,
            Pending {
                node_id,
                kind,
                deadline: now + timeout,
                timeout_ms: timeout.as_millis() as u64,
            },
        );
        Ok(id)
    }

    /// What to put on the next response to `node_id`: every unreplied, unexpired instruction,
    /// each with the time it has left.
    pub fn outbound(&self, node_id: u64, now: Instant) -> Vec<Instruction> {
        self.outbound_after(node_id, 0, now)
    }

    /// Like [`Outbox::outbound`], but only instructions with an id above `after_id`: those a
    /// stream that already sent every id up to `after_id` has not sent yet.
    pub fn outbound_after(&self, node_id: u64, after_id: u64, now: Instant) -> Vec<Instruction> {
        let Some(queue) = self.per_node.get(&node_id) else {
            return Vec::new();
        };
        // Queues are in id order, so the unsent ones are a suffix.
        let first_unsent = queue.partition_point(|id| *id <= after_id);
        queue
            .range(first_unsent..)
            .filter_map(|id| self.pending.get(id).map(|p| (id, p)))
            .filter(|(_, p)| p.deadline > now)
            .map(|(id, p)| Instruction {
                id: *id,
                timeout_ms: p.deadline.duration_since(now).as_millis() as u64,
                kind: Some(p.kind.clone()),
            })
            .collect()
    }

    /// Takes a reply from `node_id`; returns the id it answers, or None for an unknown id (a
    /// duplicate, a late reply, or an id meant for another node).
    pub fn on_reply(&mut self, node_id: u64, reply: &InstructionReply) -> Option<u64> {
        let id = reply.instruction_id;
        if self.pending.get(&id).map(|p| p.node_id) != Some(node_id) {
            return None;
        }
        self.remove(id);
        Some(id)
    }

    /// Removes an instruction; returns its timeout when it was pending.
    pub fn remove(&mut self, id: u64) -> Option<u64> {
        let p = self.pending.remove(&id)?;
        if let Some(q) = self.per_node.get_mut(&p.node_id) {
            q.retain(|x| *x != id);
            if q.is_empty() {
                self.per_node.remove(&p.node_id);
            }
        }
        Some(p.timeout_ms)
    }

    /// Removes instructions whose deadline passed; returns (id, timeout_ms) of each.
    pub fn expire(&mut self, now: Instant) -> Vec<(u64, u64)> {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        expired
            .into_iter()
            .filter_map(|id| self.remove(id).map(|t| (id, t)))
            .collect()
    }

    /// Drops everything (leadership ended); returns the ids dropped.
    /// Numbers this term's instructions from `term << 32` on. Nodes remember the ids they
    /// handled and answer a repeat with the old reply, so ids must never repeat across leaders;
    /// a Raft term has one leader, and no term sends 2^32 instructions.
    pub fn start_term(&mut self, term: u64) {
        self.next_id = self.next_id.max(term << 32);
    }

    pub fn clear(&mut self) -> Vec<u64> {
        self.per_node.clear();
        std::mem::take(&mut self.pending).into_keys().collect()
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }
}

type Waiter = oneshot::Sender<Result<InstructionReply, MailboxError>>;

/// The outbox plus the senders waiting for replies.
#[derive(Default)]
pub struct Mailbox {
    inner: Mutex<(Outbox, HashMap<u64, Waiter>)>,
}

impl Mailbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Outbox, HashMap<u64, Waiter>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an instruction and returns a receiver for its outcome. The caller has checked that
    /// the node is registered and connected.
    pub fn post(
        &self,
        node_id: u64,
        kind: instruction::Kind,
        timeout: Duration,
        now: Instant,
    ) -> Result<
        (
            u64,
            oneshot::Receiver<Result<InstructionReply, MailboxError>>,
        ),
        MailboxError,
    > {
        let (tx, rx) = oneshot::channel();
        let mut g = self.lock();
        let id = g.0.enqueue(node_id, kind, timeout, now)?;
        g.1.insert(id, tx);
        Ok((id, rx))
    }

    /// Waits for the outcome of a posted instruction, enforcing its timeout even if the leader's
    /// periodic expiry is late.
    pub async fn wait(
        &self,
        id: u64,
        timeout: Duration,
        rx: oneshot::Receiver<Result<InstructionReply, MailboxError>>,
    ) -> Result<InstructionReply, MailboxError> {
        let after_ms = timeout.as_millis() as u64;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            // The waiter was dropped without an answer: the mailbox was cleared.
            Ok(Err(_)) => Err(MailboxError::LeadershipLost),
            Err(_) => {
                let mut g = self.lock();
                g.0.remove(id);
                g.1.remove(&id);
                Err(MailboxError::Timeout { after_ms })
            }
        }
    }

    pub fn outbound(&self, node_id: u64, now: Instant) -> Vec<Instruction> {
        self.lock().0.outbound(node_id, now)
    }

    pub fn outbound_after(&self, node_id: u64, after_id: u64, now: Instant) -> Vec<Instruction> {
        self.lock().0.outbound_after(node_id, after_id, now)
    }

    /// Hands replies from `node_id` to their senders.
    pub fn on_replies(&self, node_id: u64, replies: &[InstructionReply]) {
        if replies.is_empty() {
            return;
        }
        let mut g = self.lock();
        for r in replies {
            if let Some(id) = g.0.on_reply(node_id, r) {
                if let Some(tx) = g.1.remove(&id) {
                    let _ = tx.send(Ok(r.clone()));
                }
            }
        }
    }

    /// Fails instructions whose timeout passed.
    pub fn expire(&self, now: Instant) {
        let mut g = self.lock();
        for (id, after_ms) in g.0.expire(now) {
            if let Some(tx) = g.1.remove(&id) {
                let _ = tx.send(Err(MailboxError::Timeout { after_ms }));
            }
        }
    }

    /// Fails every pending instruction: this node no longer leads.
    /// See [`Outbox::start_term`].
    pub fn start_term(&self, term: u64) {
        self.lock().0.start_term(term);
    }

    pub fn clear(&self) {
        let mut g = self.lock();
        g.0.clear();
        for (_, tx) in g.1.drain() {
            let _ = tx.send(Err(MailboxError::LeadershipLost));
        }
    }

    pub fn pending_count(&self) -> usize {
        self.lock().0.pending_count()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_of_a_later_term_never_repeat_an_earlier_terms() {
        let now = Instant::now();
        let mut a = Outbox::default();
        a.start_term(1);
        let first = a.enqueue(7, flush(1), Duration::from_secs(1), now).unwrap();
        // Another node leads term 2 with a fresh outbox.
        let mut b = Outbox::default();
        b.start_term(2);
        let second = b.enqueue(7, flush(1), Duration::from_secs(1), now).unwrap();
        assert!(second > first, "{second} <= {first}");
    }

    use super::*;
    use cairn_proto::cairnpb::FlushRegion;

    fn flush(r: u64) -> instruction::Kind {
        instruction::Kind::FlushRegion(FlushRegion { region_id: r })
    }

    fn reply(id: u64) -> InstructionReply {
        InstructionReply {
            instruction_id: id,
            ok: true,
            error: String::new(),
        }
    }

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn instructions_are_resent_until_replied() {
        let now = Instant::now();
        let mut o = Outbox::default();
        let a = o.enqueue(1, flush(10), T, now).unwrap();
        let b = o.enqueue(1, flush(11), T, now).unwrap();
        assert!(b > a, "ids increase");
        assert!(o.outbound(2, now).is_empty());
        let out = o.outbound(1, now);
        assert_eq!(out.iter().map(|i| i.id).collect::<Vec<_>>(), vec![a, b]);
        assert_eq!(out[0].timeout_ms, 1000);
        // Sent again on the next response.
        assert_eq!(o.outbound(1, now).len(), 2);
        assert_eq!(o.on_reply(1, &reply(a)), Some(a));
        assert_eq!(
            o.on_reply(1, &reply(a)),
            None,
            "a duplicate reply is ignored"
        );
        assert_eq!(o.on_reply(2, &reply(b)), None, "another node cannot answer");
        let out = o.outbound(1, now + T / 2);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].timeout_ms, 500);
    }

    #[test]
    fn outbound_after_holds_only_instructions_not_sent_yet() {
        let now = Instant::now();
        let mut o = Outbox::default();
        let a = o.enqueue(1, flush(1), T, now).unwrap();
        let b = o.enqueue(1, flush(2), T, now).unwrap();
        let c = o.enqueue(1, flush(3), T, now).unwrap();
        let ids = |v: Vec<Instruction>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
        assert_eq!(ids(o.outbound_after(1, 0, now)), vec![a, b, c]);
        assert_eq!(ids(o.outbound_after(1, a, now)), vec![b, c]);
        assert!(o.outbound_after(1, c, now).is_empty());
        // A reply in the middle leaves a hole; the order still holds.
        o.on_reply(1, &reply(b));
        assert_eq!(ids(o.outbound_after(1, a, now)), vec![c]);
        assert_eq!(ids(o.outbound(1, now)), vec![a, c]);
    }

    #[test]
    fn expired_instructions_are_not_sent_and_are_reported() {
        let now = Instant::now();
        let mut o = Outbox::default();
        let a = o.enqueue(1, flush(1), T, now).unwrap();
        assert!(o.outbound(1, now + T).is_empty());
        assert_eq!(o.expire(now + T), vec![(a, 1000)]);
        assert_eq!(o.pending_count(), 0);
    }

    #[test]
    fn per_node_queue_is_bounded() {
        let now = Instant::now();
        let mut o = Outbox::default();
        for i in 0..OUTBOUND_INSTRUCTIONS_PER_NODE_MAX as u64 {
            o.enqueue(1, flush(i), T, now).unwrap();
        }
        assert_eq!(
            o.enqueue(1, flush(0), T, now),
            Err(MailboxError::QueueFull {
                what: "outbound_instructions_per_node_max"
            })
        );
        assert!(
            o.enqueue(2, flush(0), T, now).is_ok(),
            "other nodes unaffected"
        );
        assert_eq!(o.clear().len(), OUTBOUND_INSTRUCTIONS_PER_NODE_MAX + 1);
        assert!(o.outbound(1, now).is_empty());
    }

    #[tokio::test]
    async fn sender_gets_reply_timeout_or_leadership_lost() {
        let mb = Mailbox::default();
        let now = Instant::now();
        let (id, rx) = mb.post(1, flush(1), T, now).unwrap();
        mb.on_replies(1, &[reply(id)]);
        assert_eq!(mb.wait(id, T, rx).await, Ok(reply(id)));

        let short = Duration::from_millis(20);
        let (id, rx) = mb.post(1, flush(1), short, now).unwrap();
        assert_eq!(
            mb.wait(id, short, rx).await,
            Err(MailboxError::Timeout { after_ms: 20 })
        );
        assert_eq!(mb.pending_count(), 0);

        let (id, rx) = mb.post(1, flush(1), T, now).unwrap();
        mb.expire(now + T);
        assert_eq!(
            mb.wait(id, T, rx).await,
            Err(MailboxError::Timeout { after_ms: 1000 })
        );

        let (id, rx) = mb.post(1, flush(1), T, now).unwrap();
        mb.clear();
        assert_eq!(mb.wait(id, T, rx).await, Err(MailboxError::LeadershipLost));
    }
}
