//! The checker must accept what a correct register can produce and reject what it cannot.

use super::*;

const BUDGET: u64 = 1_000_000;

fn write(key: &str, value: &str, invoke_ns: u64, complete_ns: Option<u64>) -> Op {
    Op {
        key: key.into(),
        action: Action::Write {
            value: value.into(),
        },
        invoke_ns,
        complete_ns,
    }
}

fn read(key: &str, observed: Option<&str>, invoke_ns: u64, complete_ns: u64) -> Op {
    Op {
        key: key.into(),
        action: Action::Read {
            observed: observed.map(String::from),
        },
        invoke_ns,
        complete_ns: Some(complete_ns),
    }
}

fn assert_rejected(history: &[Op], key: &str) {
    match check_history(history, BUDGET) {
        Verdict::NotLinearizable {
            key: k,
            explanation,
        } => {
            assert_eq!(k, key);
            assert!(!explanation.is_empty());
        }
        other => panic!("expected a violation on {key}, got {other:?}"),
    }
}

#[test]
fn accepts_sequential_history() {
    let h = [
        read("k", None, 0, 1),
        write("k", "a", 2, Some(3)),
        read("k", Some("a"), 4, 5),
        write("k", "b", 6, Some(7)),
        read("k", Some("b"), 8, 9),
        read("k", Some("b"), 10, 11),
    ];
    assert_eq!(check_history(&h, BUDGET), Verdict::Linearizable);
}

#[test]
fn accepts_concurrent_overlapping_ops() {
    // Two overlapping writes: a read after both may see either, depending on their order; a
    // read overlapping a write may see the old or the new value.
    for observed in ["a", "b"] {
        let h = [
            write("k", "a", 0, Some(10)),
            write("k", "b", 5, Some(15)),
            read("k", None, 1, 4),
            read("k", Some(observed), 16, 20),
            read("k", Some(observed), 21, 22),
        ];
        assert_eq!(
            check_history(&h, BUDGET),
            Verdict::Linearizable,
            "final value {observed}"
        );
    }
    let h = [
        write("k", "a", 0, Some(1)),
        write("k", "b", 2, Some(10)),
        read("k", Some("a"), 3, 4),
        read("k", Some("b"), 5, 6),
        read("k", Some("b"), 11, 12),
    ];
    assert_eq!(check_history(&h, BUDGET), Verdict::Linearizable);
}

#[test]
fn ops_that_only_touch_are_concurrent() {
    // A read invoked at the very instant a write completed may be ordered either way.
    let h = [write("k", "a", 0, Some(5)), read("k", None, 5, 6)];
    assert_eq!(check_history(&h, BUDGET), Verdict::Linearizable);
}

#[test]
fn rejects_stale_read() {
    let h = [
        write("k", "a", 0, Some(1)),
        write("k", "b", 2, Some(3)),
        read("k", Some("a"), 4, 5),
    ];
    assert_rejected(&h, "k");
}

#[test]
fn rejects_read_of_missing_key_after_acked_write() {
    let h = [write("k", "a", 0, Some(1)), read("k", None, 2, 3)];
    assert_rejected(&h, "k");
}

#[test]
fn rejects_read_that_goes_back_in_time() {
    // Once a read saw "b", a later read may not see "a" again.
    let h = [
        write("k", "a", 0, Some(1)),
        write("k", "b", 2, Some(20)),
        read("k", Some("b"), 3, 4),
        read("k", Some("a"), 5, 6),
    ];
    assert_rejected(&h, "k");
}

#[test]
fn rejects_read_of_value_never_written() {
    let h = [write("k", "a", 0, Some(1)), read("k", Some("zzz"), 2, 3)];
    assert_rejected(&h, "k");
    // A value written to another key does not count.
    let h = [write("other", "a", 0, Some(1)), read("k", Some("a"), 2, 3)];
    assert_rejected(&h, "k");
}

#[test]
fn unknown_outcome_write_may_have_taken_effect_or_not() {
    let base = [write("k", "a", 0, Some(1)), write("k", "b", 2, None)];
    for observed in ["a", "b"] {
        let mut h = base.to_vec();
        h.push(read("k", Some(observed), 10, 11));
        assert_eq!(
            check_history(&h, BUDGET),
            Verdict::Linearizable,
            "read {observed}"
        );
    }
    // It may even take effect after later acknowledged writes, as its request may still be in
    // flight.
    let mut h = base.to_vec();
    h.push(write("k", "c", 5, Some(6)));
    h.push(read("k", Some("c"), 7, 8));
    h.push(read("k", Some("b"), 9, 10));
    assert_eq!(check_history(&h, BUDGET), Verdict::Linearizable);
    // But it takes effect at most once: "b" then "a" then "b" again is impossible.
    let mut h = base.to_vec();
    h.push(read("k", Some("b"), 10, 11));
    h.push(read("k", Some("a"), 12, 13));
    assert_rejected(&h, "k");
    // And it cannot take effect before it was invoked.
    let h = [
        write("k", "a", 0, Some(1)),
        read("k", Some("b"), 2, 3),
        write("k", "b", 4, None),
    ];
    assert_rejected(&h, "k");
}

#[test]
fn unknown_outcome_read_is_ignored() {
    let h = [
        write("k", "a", 0, Some(1)),
        Op {
            key: "k".into(),
            action: Action::Read {
                observed: Some("bogus".into()),
            },
            invoke_ns: 2,
            complete_ns: None,
        },
    ];
    assert_eq!(check_history(&h, BUDGET), Verdict::Linearizable);
}

#[test]
fn keys_are_checked_independently() {
    let h = [
        write("a", "1", 0, Some(1)),
        write("b", "1", 0, Some(1)),
        write("b", "2", 2, Some(3)),
        read("a", Some("1"), 4, 5),
        read("b", Some("1"), 4, 5),
    ];
    assert_rejected(&h, "b");
}

/// Random executions of a correct register, seen through random client-side delays, must
/// all be accepted; the same executions with one read made stale must all be rejected.
#[test]
fn random_executions_accepted_and_stale_mutants_rejected() {
    use rand::{Rng, SeedableRng};
    let mut stale_reads_rejected = 0;
    for seed in 0..300u64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        // (linearization point, op index); ops of one client never overlap.
        let mut ops = Vec::new();
        let mut points = Vec::new();
        for client in 0..4u64 {
            let mut clock = rng.random_range(0..20);
            for seq in 0..15 {
                let invoke_ns = clock;
                let point = invoke_ns + rng.random_range(1..10) * 4 + client;
                let complete_ns = point + rng.random_range(1..10);
                clock = complete_ns + rng.random_range(1..5);
                let action = if rng.random_bool(0.5) {
                    Action::Write {
                        value: format!("c{client}-{seq}"),
                    }
                } else {
                    Action::Read { observed: None }
                };
                // Some writes time out: applied or not, the client cannot tell.
                let unknown = matches!(action, Action::Write { .. }) && rng.random_bool(0.1);
                let applied = !unknown || rng.random_bool(0.5);
                if applied {
                    points.push((point, ops.len()));
                }
                ops.push(Op {
                    key: "k".into(),
                    action,
                    invoke_ns,
                    complete_ns: (!unknown).then_some(complete_ns),
                });
                if unknown {
                    break; // a client that lost an answer stops, as its clock is now unknown
                }
            }
        }
        points.sort_unstable();
        let mut register = None;
        for &(_, i) in &points {
            match &mut ops[i].action {
                Action::Write { value } => register = Some(value.clone()),
                Action::Read { observed } => *observed = register.clone(),
            }
        }
        assert_eq!(
            check_history(&ops, BUDGET),
            Verdict::Linearizable,
            "seed {seed}: {ops:#?}"
        );

        // Make one read return a value overwritten before the read began: always a violation.
        let acked = |op: &Op| matches!(op.action, Action::Write { .. }) && op.complete_ns.is_some();
        let stale = ops.iter().enumerate().find_map(|(r, read)| {
            let Action::Read { .. } = read.action else {
                return None;
            };
            let newer = ops
                .iter()
                .filter(|w| acked(w))
                .find(|w| w.complete_ns < Some(read.invoke_ns))?;
            let older = ops
                .iter()
                .filter(|w| acked(w))
                .find(|w| w.complete_ns < Some(newer.invoke_ns))?;
            Some((r, older.action.clone()))
        });
        if let Some((r, Action::Write { value })) = stale {
            ops[r].action = Action::Read {
                observed: Some(value),
            };
            assert_rejected(&ops, "k");
            stale_reads_rejected += 1;
        }
    }
    assert!(
        stale_reads_rejected > 100,
        "only {stale_reads_rejected} mutated histories"
    );
}

#[test]
fn exhausted_budget_answers_unknown() {
    // Many mutually concurrent writes of unknown outcome and reads that pin no order force a
    // large search; a tiny budget must stop it.
    let mut h: Vec<Op> = (0..40)
        .map(|i| write("k", &format!("v{i}"), i, None))
        .collect();
    h.extend((0..40).map(|i| read("k", Some(&format!("v{}", 39 - i)), 100 + 2 * i, 101 + 2 * i)));
    assert!(matches!(check_history(&h, 50), Verdict::Unknown { .. }));
}

#[test]
fn large_linearizable_history_is_decided_within_budget() {
    // One writer, one reader, long overlapping runs, as in the fault tests.
    let mut h = Vec::new();
    for i in 0..2_000u64 {
        h.push(write("k", &format!("v{i}"), i * 10, Some(i * 10 + 7)));
        let seen = if i == 0 {
            None
        } else {
            Some(format!("v{}", i - 1))
        };
        h.push(read("k", seen.as_deref(), i * 10 + 1, i * 10 + 12));
    }
    assert_eq!(
        check_history(&h, SEARCH_STEPS_PER_KEY_MAX),
        Verdict::Linearizable
    );
}
