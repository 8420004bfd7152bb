//! A linearizability checker for histories of reads and writes on independent registers (keys).
//!
//! Fault tests record every client operation with the instant it was invoked and the instant its
//! answer arrived, then ask this checker whether some total order of the operations exists that
//! (a) respects real time — an operation that completed before another began comes first — and
//! (b) makes every read return the value of the latest write before it. Registers are independent,
//! so each key is checked alone (linearizability is compositional).
//!
//! The search is Wing & Gong's, with Lowe's memoisation (as in Porcupine): walk the history as a
//! list of call/return events, try to linearise a pending call next, backtrack when a return is
//! reached whose operation has not been linearised, and never revisit a (linearised set, register
//! value) configuration. It is exponential in the worst case, so it is bounded by a step budget and
//! answers `Unknown` when the budget runs out instead of hanging.
//!
//! An operation whose outcome is unknown (timeout, connection error) has no completion instant. A
//! write of that kind may or may not have taken effect: it is treated as pending forever, which lets
//! the search place it anywhere after its invocation, including after every observation (which is
//! the same as "never happened"). A read of unknown outcome observed nothing and is ignored.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

/// Search steps allowed per key before the checker gives up with `Verdict::Unknown`. A decided
/// history stops early; the bound only matters for hard ones (many writes of unknown outcome
/// under partitions). 20M left seed 189 of the simulation undecided once issue 11's extra log
/// entry (the cluster id) moved its schedule; with this bound it is decided linearizable, its
/// whole run taking 14 s.
pub const SEARCH_STEPS_PER_KEY_MAX: u64 = 400_000_000;

/// How many operations a failure explanation lists at most.
const EXPLANATION_OPS_MAX: usize = 30;

/// What one client operation did to one register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Set the register to `value`. Values should be unique per key so reads identify their write.
    Write { value: String },
    /// Read the register; `None` means the key was absent.
    Read { observed: Option<String> },
}

/// One client operation as the client saw it.
#[derive(Clone, Debug)]
pub struct Op {
    pub key: String,
    pub action: Action,
    /// When the request was sent, in nanoseconds since the history began.
    pub invoke_ns: u64,
    /// When the answer arrived; `None` when the outcome is unknown (timeout, connection error).
    pub complete_ns: Option<u64>,
}

/// The checker's answer for a whole history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable {
        key: String,
        explanation: String,
    },
    /// The search budget ran out on `key` before an answer was found.
    Unknown {
        key: String,
        steps: u64,
    },
}

/// Collects operations from concurrent client tasks against one monotonic clock.
pub struct HistoryRecorder {
    start: Instant,
    ops: Mutex<Vec<Op>>,
}

impl Default for HistoryRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl HistoryRecorder {
    pub fn new() -> Self {
        HistoryRecorder {
            start: Instant::now(),
            ops: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the history began; take it just before sending and just after receiving.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).expect("a test runs for less than 584 years")
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().expect("recorder lock").push(op);
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().expect("recorder lock").clone()
    }
}

/// Checks every key's sub-history; the first violation found wins over `Unknown`.
pub fn check_history(ops: &[Op], search_steps_per_key_max: u64) -> Verdict {
    let mut by_key: HashMap<&str, Vec<&Op>> = HashMap::new();
    for op in ops {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let mut keys: Vec<&str> = by_key.keys().copied().collect();
    keys.sort_unstable();
    let mut unknown = None;
    for key in keys {
        match check_register(key, &by_key[key], search_steps_per_key_max) {
            Verdict::Linearizable => {}
            bad @ Verdict::NotLinearizable { .. } => return bad,
            u @ Verdict::Unknown { .. } => {
                unknown.get_or_insert(u);
            }
        }
    }
    unknown.unwrap_or(Verdict::Linearizable)
}

/// A register operation with values interned to small integers.
#[derive(Clone, Copy, Debug)]
enum RegisterOp {
    Write(u32),
    Read(Option<u32>),
}

struct Event {
    op: usize,
    is_call: bool,
    /// For a call event: the index of its return event.
    partner: usize,
    prev: usize,
    next: usize,
}

/// Doubly linked list of events with a sentinel at index 0, so that lifting an operation out and
/// putting it back (in reverse order) are O(1), as in Knuth's dancing links.
struct EventList {
    events: Vec<Event>,
}

const HEAD: usize = 0;
const NIL: usize = usize::MAX;

impl EventList {
    fn lift(&mut self, call: usize) {
        let ret = self.events[call].partner;
        for e in [call, ret] {
            let (prev, next) = (self.events[e].prev, self.events[e].next);
            self.events[prev].next = next;
            if next != NIL {
                self.events[next].prev = prev;
            }
        }
    }

    fn unlift(&mut self, call: usize) {
        let ret = self.events[call].partner;
        for e in [ret, call] {
            let (prev, next) = (self.events[e].prev, self.events[e].next);
            self.events[prev].next = e;
            if next != NIL {
                self.events[next].prev = e;
            }
        }
    }
}

fn check_register(key: &str, ops: &[&Op], steps_max: u64) -> Verdict {
    let mut values: HashMap<&str, u32> = HashMap::new();
    let mut kept: Vec<&Op> = Vec::new();
    let mut register_ops = Vec::new();
    for op in ops {
        if let Action::Write { value } = &op.action {
            let next_id = values.len() as u32;
            values.entry(value.as_str()).or_insert(next_id);
        }
    }
    for op in ops {
        let rop = match &op.action {
            Action::Write { value } => RegisterOp::Write(values[value.as_str()]),
            // A read whose answer never came observed nothing.
            Action::Read { .. } if op.complete_ns.is_none() => continue,
            Action::Read { observed: None } => RegisterOp::Read(None),
            Action::Read { observed: Some(v) } => match values.get(v.as_str()) {
                Some(id) => RegisterOp::Read(Some(*id)),
                None => {
                    return Verdict::NotLinearizable {
                        key: key.to_string(),
                        explanation: format!(
                            "{} read a value that no operation wrote",
                            describe(op)
                        ),
                    }
                }
            },
        };
        kept.push(op);
        register_ops.push(rop);
    }
    if kept.is_empty() {
        return Verdict::Linearizable;
    }

    // Events sorted by time; at equal instants calls come first, so operations that merely touch
    // are treated as concurrent (the lenient reading: never a false alarm from clock granularity).
    let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(kept.len() * 2);
    for (i, op) in kept.iter().enumerate() {
        order.push((op.invoke_ns, false, i));
        order.push((op.complete_ns.unwrap_or(u64::MAX), true, i));
    }
    order.sort_unstable();
    let mut events = vec![Event {
        op: 0,
        is_call: false,
        partner: NIL,
        prev: NIL,
        next: NIL,
    }];
    let mut call_event = vec![NIL; kept.len()];
    for (pos, &(_, is_return, op)) in order.iter().enumerate() {
        let idx = pos + 1;
        events.push(Event {
            op,
            is_call: !is_return,
            partner: NIL,
            prev: idx - 1,
            next: if pos + 1 < order.len() { idx + 1 } else { NIL },
        });
        if is_return {
            events[call_event[op]].partner = idx;
        } else {
            call_event[op] = idx;
        }
    }
    events[HEAD].next = 1;
    let mut list = EventList { events };

    let words = kept.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Option<u32>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u32>)> = Vec::new();
    let mut state: Option<u32> = None;
    let mut entry = list.events[HEAD].next;
    let mut steps = 0u64;
    // The deepest dead end, for the explanation: (depth, op that could not be placed, state).
    let mut deepest: Option<(usize, usize, Option<u32>)> = None;

    while list.events[HEAD].next != NIL {
        steps += 1;
        if steps > steps_max {
            return Verdict::Unknown {
                key: key.to_string(),
                steps,
            };
        }
        let ev = &list.events[entry];
        let op = ev.op;
        if ev.is_call {
            let (ok, next_state) = match register_ops[op] {
                RegisterOp::Write(v) => (true, Some(v)),
                RegisterOp::Read(observed) => (observed == state, state),
            };
            if ok {
                linearized[op / 64] |= 1 << (op % 64);
                if seen.insert((linearized.clone(), next_state)) {
                    stack.push((entry, state));
                    state = next_state;
                    list.lift(entry);
                    entry = list.events[HEAD].next;
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = list.events[entry].next;
        } else {
            // This operation returned before anything let it be linearised: undo the last choice.
            if deepest.is_none_or(|(depth, _, _)| stack.len() > depth) {
                deepest = Some((stack.len(), op, state));
            }
            let Some((call, prev_state)) = stack.pop() else {
                return Verdict::NotLinearizable {
                    key: key.to_string(),
                    explanation: explain(&kept, &values, deepest),
                };
            };
            state = prev_state;
            let undone = list.events[call].op;
            linearized[undone / 64] &= !(1 << (undone % 64));
            list.unlift(call);
            entry = list.events[call].next;
        }
    }
    Verdict::Linearizable
}

fn describe(op: &Op) -> String {
    let end = match op.complete_ns {
        Some(ns) => format!("{:.3}ms", ns as f64 / 1e6),
        None => "unknown outcome".to_string(),
    };
    let what = match &op.action {
        Action::Write { value } => format!("write {value:?}"),
        Action::Read { observed } => format!("read -> {observed:?}"),
    };
    format!("[{:.3}ms .. {end}] {what}", op.invoke_ns as f64 / 1e6)
}

fn explain(
    ops: &[&Op],
    values: &HashMap<&str, u32>,
    deepest: Option<(usize, usize, Option<u32>)>,
) -> String {
    let name_of = |id: Option<u32>| {
        id.map(|id| {
            values
                .iter()
                .find(|(_, v)| **v == id)
                .map(|(k, _)| k.to_string())
                .unwrap_or_default()
        })
    };
    let mut sorted: Vec<&Op> = ops.to_vec();
    sorted.sort_by_key(|op| op.invoke_ns);
    let mut out = String::new();
    let mut focus_invoke = 0;
    if let Some((depth, op, state)) = deepest {
        focus_invoke = ops[op].invoke_ns;
        out.push_str(&format!(
            "no linearization exists; the longest partial one places {depth} of {} ops and then cannot place {} \
             (register holds {:?} at that point).\n",
            ops.len(),
            describe(ops[op]),
            name_of(state),
        ));
    }
    // Show the operations around the one that could not be placed.
    let centre = sorted
        .iter()
        .position(|op| op.invoke_ns >= focus_invoke)
        .unwrap_or(0);
    let from = centre.saturating_sub(EXPLANATION_OPS_MAX * 2 / 3);
    let to = (from + EXPLANATION_OPS_MAX).min(sorted.len());
    out.push_str(&format!(
        "operations {from}..{to} of {} by invocation time:\n",
        sorted.len()
    ));
    for op in &sorted[from..to] {
        out.push_str(&format!("  {}\n", describe(op)));
    }
    out
}

#[cfg(test)]
mod tests;
