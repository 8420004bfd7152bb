//! The node's memory of the instructions it has been sent, which makes at-least-once delivery
//! safe: an instruction id seen before is never run twice. Pure bookkeeping, no I/O.

use std::collections::{HashMap, HashSet, VecDeque};

use cairn_proto::cairnpb::InstructionReply;

/// Replies remembered after they were sent, so a redelivered instruction is answered again
/// without running it again. The leader redelivers only within an instruction's timeout, so a
/// few thousand ids cover many intervals of traffic.
pub const HANDLED_INSTRUCTION_IDS_MAX: usize = 4_096;
/// Instruction replies one request carries at most; more are split over the next requests. The
/// leader refuses a request with more (its `instruction_replies_per_request_max`, the same
/// number), so this must never exceed the leader's bound.
pub const INSTRUCTION_REPLIES_PER_REQUEST_MAX: usize = 1024;
/// Instructions the node runs at once; more are not started (the leader redelivers or times
/// them out), so a flood of instructions cannot spawn without bound.
pub const INSTRUCTIONS_IN_FLIGHT_MAX: usize = 256;

/// What to do with an instruction that just arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// New: run it, then call [`InstructionLedger::finish`].
    Run,
    /// Running already: its reply goes out when it finishes.
    AlreadyRunning,
    /// Handled before: send this reply again.
    Reply(InstructionReply),
    /// Too many instructions running; ignore it for now.
    Busy,
}

/// Instruction ids in flight and the last [`HANDLED_INSTRUCTION_IDS_MAX`] replies.
#[derive(Debug)]
pub struct InstructionLedger {
    running: HashSet<u64>,
    replies: HashMap<u64, InstructionReply>,
    /// Ids of `replies`, oldest first, for eviction.
    order: VecDeque<u64>,
    handled_max: usize,
    in_flight_max: usize,
}

impl Default for InstructionLedger {
    fn default() -> Self {
        Self::with_limits(HANDLED_INSTRUCTION_IDS_MAX, INSTRUCTIONS_IN_FLIGHT_MAX)
    }
}

impl InstructionLedger {
    /// A ledger with explicit bounds (both at least 1).
    pub fn with_limits(handled_max: usize, in_flight_max: usize) -> Self {
        assert!(
            handled_max > 0 && in_flight_max > 0,
            "ledger bounds must be positive"
        );
        InstructionLedger {
            running: HashSet::new(),
            replies: HashMap::new(),
            order: VecDeque::new(),
            handled_max,
            in_flight_max,
        }
    }

    /// Records that instruction `id` arrived and says what to do with it.
    pub fn receive(&mut self, id: u64) -> Disposition {
        if let Some(reply) = self.replies.get(&id) {
            return Disposition::Reply(reply.clone());
        }
        if self.running.contains(&id) {
            return Disposition::AlreadyRunning;
        }
        if self.running.len() >= self.in_flight_max {
            return Disposition::Busy;
        }
        self.running.insert(id);
        Disposition::Run
    }

    /// Records the reply of an instruction that finished, forgetting the oldest reply when the
    /// ledger is full.
    pub fn finish(&mut self, reply: InstructionReply) {
        let id = reply.instruction_id;
        self.running.remove(&id);
        if self.replies.insert(id, reply).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > self.handled_max {
            if let Some(old) = self.order.pop_front() {
                self.replies.remove(&old);
            }
        }
        debug_assert_eq!(self.order.len(), self.replies.len());
    }

    /// Instructions running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Replies remembered now.
    pub fn remembered(&self) -> usize {
        self.replies.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: u64, ok: bool) -> InstructionReply {
        InstructionReply {
            instruction_id: id,
            ok,
            error: if ok { String::new() } else { "no".into() },
        }
    }

    #[test]
    fn a_new_id_runs_once_and_a_redelivery_gets_the_same_reply() {
        let mut ledger = InstructionLedger::default();
        assert_eq!(ledger.receive(7), Disposition::Run);
        assert_eq!(ledger.receive(7), Disposition::AlreadyRunning);
        ledger.finish(reply(7, false));
        assert_eq!(ledger.receive(7), Disposition::Reply(reply(7, false)));
        assert_eq!(ledger.running(), 0);
        assert_eq!(ledger.remembered(), 1);
    }

    #[test]
    fn remembered_replies_are_bounded_oldest_forgotten_first() {
        let mut ledger = InstructionLedger::with_limits(3, 10);
        for id in 1..=5 {
            assert_eq!(ledger.receive(id), Disposition::Run);
            ledger.finish(reply(id, true));
        }
        assert_eq!(ledger.remembered(), 3);
        // 1 and 2 were forgotten: they would run again.
        assert_eq!(ledger.receive(1), Disposition::Run);
        assert_eq!(ledger.receive(3), Disposition::Reply(reply(3, true)));
        assert_eq!(ledger.receive(5), Disposition::Reply(reply(5, true)));
    }

    #[test]
    fn in_flight_instructions_are_bounded() {
        let mut ledger = InstructionLedger::with_limits(10, 2);
        assert_eq!(ledger.receive(1), Disposition::Run);
        assert_eq!(ledger.receive(2), Disposition::Run);
        assert_eq!(ledger.receive(3), Disposition::Busy);
        ledger.finish(reply(1, true));
        assert_eq!(ledger.receive(3), Disposition::Run);
    }

    #[test]
    fn finishing_twice_keeps_one_entry() {
        let mut ledger = InstructionLedger::with_limits(2, 2);
        ledger.receive(1);
        ledger.finish(reply(1, true));
        ledger.finish(reply(1, true));
        assert_eq!(ledger.remembered(), 1);
    }
}
