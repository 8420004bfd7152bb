//! What `cairn bench leader-failover` prints: every round and a summary, as tables or as one
//! JSON document (shape in `leader_failover.rs`).
//!
//! Percentiles are exact nearest-rank values of the rounds, not [`super::histogram`] buckets:
//! with 20 samples the p99 *is* the slowest round, and a bucket's 1.6 % rounding (16 ms at 1 s)
//! would blur the comparison this bench exists for.

use serde::Serialize;

use super::local_cluster::ServerKind;
use super::BenchError;
use crate::ctl::output::{new_table, OutputFormat};

/// The whole report.
#[derive(Debug, Serialize)]
pub struct FailoverReport {
    pub target: ServerKind,
    pub binary: String,
    pub version: String,
    pub attempt_timeout_ms: u64,
    pub settle_ms: u64,
    pub failover_ms: Summary,
    pub rounds: Vec<RoundReport>,
}

/// One leader kill.
#[derive(Debug, Serialize)]
pub struct RoundReport {
    pub round: u64,
    pub killed_node: u64,
    pub killed_at_unix_ms: u64,
    pub written_via_node: u64,
    pub failover_ms: f64,
    pub attempts: u64,
    pub ready_ms: f64,
    pub errors: Vec<ErrorCount>,
}

/// How often a failed attempt gave one answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorCount {
    pub error: String,
    pub count: u64,
}

/// The answers of a round's failed attempts, in order of first appearance, at most `distinct_max`
/// kinds (a flood of distinct messages must not grow the report without bound).
#[derive(Debug)]
pub struct RoundErrors {
    distinct_max: usize,
    counts: Vec<ErrorCount>,
}

impl RoundErrors {
    pub fn new(distinct_max: usize) -> Self {
        assert!(distinct_max > 0, "at least one kind of error must be kept");
        RoundErrors {
            distinct_max,
            counts: Vec::new(),
        }
    }

    /// Counts one failed attempt; once `distinct_max` kinds are kept, new kinds are counted
    /// under an "other errors" entry.
    pub fn add(&mut self, error: String) {
        const OTHER: &str = "other errors";
        let error = if self.counts.iter().any(|c| c.error == error)
            || self.counts.len() + 1 < self.distinct_max
        {
            error
        } else {
            OTHER.to_string()
        };
        match self.counts.iter_mut().find(|c| c.error == error) {
            Some(c) => c.count += 1,
            None => self.counts.push(ErrorCount { error, count: 1 }),
        }
    }

    /// `3 x no answer within 300 ms, 1 x Unavailable: ...`, or `none`.
    pub fn summary(&self) -> String {
        summarize(&self.counts)
    }

    pub fn into_list(self) -> Vec<ErrorCount> {
        self.counts
    }
}

fn summarize(counts: &[ErrorCount]) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|c| format!("{} x {}", c.count, c.error))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Failover times over all rounds, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub min: f64,
    pub mean: f64,
}

impl Summary {
    /// `None` when there are no samples.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Summary {
            p50: nearest_rank(&sorted, 0.5)?,
            p99: nearest_rank(&sorted, 0.99)?,
            max: *sorted.last()?,
            min: *sorted.first()?,
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
        })
    }
}

/// The smallest sample with at least `ceil(q * n)` samples at or below it (`sorted` ascending).
fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    assert!((0.0..=1.0).contains(&q), "quantile {q} outside [0, 1]");
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n.max(1));
    sorted.get(rank - 1).copied()
}

/// Prints the report on stdout.
pub fn print(report: &FailoverReport, out: OutputFormat) -> Result<(), BenchError> {
    match out {
        OutputFormat::Json => {
            let text = serde_json::to_string_pretty(report).map_err(BenchError::Json)?;
            println!("{text}");
        }
        OutputFormat::Table => {
            let mut rounds = new_table([
                "ROUND",
                "KILLED",
                "WRITTEN VIA",
                "FAILOVER (ms)",
                "ATTEMPTS",
                "READY BEFORE (ms)",
                "FAILED ATTEMPTS",
            ]);
            for r in &report.rounds {
                rounds.add_row(vec![
                    r.round.to_string(),
                    format!("node {}", r.killed_node),
                    format!("node {}", r.written_via_node),
                    format!("{:.1}", r.failover_ms),
                    r.attempts.to_string(),
                    format!("{:.0}", r.ready_ms),
                    summarize(&r.errors),
                ]);
            }
            println!("{rounds}");
            let s = &report.failover_ms;
            let mut summary = new_table([
                "TARGET",
                "ROUNDS",
                "P50 (ms)",
                "P99 (ms)",
                "MAX (ms)",
                "MIN (ms)",
                "MEAN (ms)",
            ]);
            summary.add_row(vec![
                format!("{} ({})", report.target.name(), report.version),
                report.rounds.len().to_string(),
                format!("{:.1}", s.p50),
                format!("{:.1}", s.p99),
                format!("{:.1}", s.max),
                format!("{:.1}", s.min),
                format!("{:.1}", s.mean),
            ]);
            println!("{summary}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        let s = Summary::of(&samples).unwrap();
        // 20 samples: p50 is the 10th smallest, p99 the 20th (ceil(19.8) = 20).
        assert_eq!(s.p50, 10.0);
        assert_eq!(s.p99, 20.0);
        assert_eq!((s.min, s.max), (1.0, 20.0));
        assert_eq!(s.mean, 10.5);
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(Summary::of(&hundred).unwrap().p99, 99.0);
        assert_eq!(Summary::of(&[7.0]).unwrap().p50, 7.0);
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn error_kinds_are_counted_and_bounded() {
        let mut errors = RoundErrors::new(3);
        assert_eq!(errors.summary(), "none");
        errors.add("timeout".into());
        errors.add("no leader".into());
        errors.add("timeout".into());
        errors.add("refused".into());
        errors.add("reset".into());
        errors.add("no leader".into());
        assert_eq!(
            errors.summary(),
            "2 x timeout, 2 x no leader, 2 x other errors"
        );
        assert_eq!(errors.into_list().len(), 3);
    }
}
