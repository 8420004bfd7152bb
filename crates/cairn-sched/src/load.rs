//! How busy a datanode is, as one comparable number, and the bookkeeping of what one placement
//! request has already put where. Shared by the load-based selector (which ranks all nodes by it)
//! and the label-aware selector (which ranks nodes within one label value by it).
//!
//! # The score
//! For candidate `n` among the candidates `C` of one request that places `R` replicas in total:
//!
//! ```text
//! score(n) = w_regions * (region_count(n) + placed(n)) / (max_C region_count + R)
//!          + w_wcus    * wcus(n)      / max_C wcus
//!          + w_rcus    * rcus(n)      / max_C rcus
//!          + w_cpu     * cpu_usage(n) / max_C cpu_usage
//! ```
//!
//! Lower is better. Each term is normalised by the largest value among the candidates, so the
//! weights compare like with like whatever the units (a term whose maximum is 0 contributes 0).
//! `placed(n)` counts the replicas this request already put on `n`, so one call spreads instead of
//! piling every region onto the node that looked idlest before the call started. The region
//! denominator is fixed for the whole request (it already includes `R`), so the score grows
//! strictly with each replica placed: among equally loaded nodes the one with the fewest regions
//! always wins, which is what keeps the spread even. New regions carry no traffic yet, so placing
//! one moves only the region term.

use crate::placement::Candidate;

/// How much each signal counts in a node's load score; see the module docs for the formula.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadWeights {
    /// Regions held: the long-run measure of what a node carries (memory, files, recovery time).
    pub region_count: f64,
    /// Write capacity units: ingest is what saturates a time-series datanode first.
    pub wcus: f64,
    /// Read capacity units: reads are burstier and often served from cache, so they count less.
    pub rcus: f64,
    /// Cores busy: a noisy short-term signal, used to steer away from hot nodes, not to decide alone.
    pub cpu_usage: f64,
}

impl Default for LoadWeights {
    fn default() -> Self {
        LoadWeights {
            region_count: 1.0,
            wcus: 0.5,
            rcus: 0.25,
            cpu_usage: 0.25,
        }
    }
}

impl LoadWeights {
    /// Weights must be finite and non-negative; a negative weight would make load attractive.
    pub fn is_valid(&self) -> bool {
        [self.region_count, self.wcus, self.rcus, self.cpu_usage]
            .iter()
            .all(|w| w.is_finite() && *w >= 0.0)
    }
}

/// Whether a replica being chosen leads its region or follows; leaders and followers are balanced
/// separately because a leader costs a node more (it takes the writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Leader,
    Follower,
}

/// Scores and in-request tallies for the candidates of one request, indexed by position in the
/// prepared (sorted, deduplicated) candidate list.
pub(crate) struct LoadBook {
    node_ids: Vec<u64>,
    region_counts: Vec<u64>,
    /// The traffic terms of the score; they do not change during a request.
    traffic_score: Vec<f64>,
    /// `w_regions / (max region_count + R)`: what one region adds to a score.
    region_weight: f64,
    placed: Vec<usize>,
    leaders: Vec<usize>,
    followers: Vec<usize>,
}

/// A reported value as a usable number: a NaN or negative cpu reading from a confused datanode
/// must not make that node look like the best home.
fn sane(x: f64) -> f64 {
    if x.is_finite() && x > 0.0 {
        x
    } else {
        0.0
    }
}

/// `value / max`, or 0 when every candidate reports 0 for this signal.
fn ratio(value: f64, max: f64) -> f64 {
    if max > 0.0 {
        value / max
    } else {
        0.0
    }
}

impl LoadBook {
    /// `replicas_to_place` is the request's total replica count (regions × replicas per region).
    pub(crate) fn new(
        nodes: &[&Candidate],
        weights: &LoadWeights,
        replicas_to_place: usize,
    ) -> Self {
        debug_assert!(weights.is_valid());
        let max_regions = nodes.iter().map(|c| c.region_count).max().unwrap_or(0);
        let max_wcus = nodes.iter().map(|c| c.wcus).max().unwrap_or(0) as f64;
        let max_rcus = nodes.iter().map(|c| c.rcus).max().unwrap_or(0) as f64;
        let max_cpu = nodes.iter().map(|c| sane(c.cpu_usage)).fold(0.0, f64::max);
        let region_denom = max_regions.saturating_add(replicas_to_place as u64).max(1) as f64;
        LoadBook {
            node_ids: nodes.iter().map(|c| c.node_id).collect(),
            region_counts: nodes.iter().map(|c| c.region_count).collect(),
            traffic_score: nodes
                .iter()
                .map(|c| {
                    weights.wcus * ratio(c.wcus as f64, max_wcus)
                        + weights.rcus * ratio(c.rcus as f64, max_rcus)
                        + weights.cpu_usage * ratio(sane(c.cpu_usage), max_cpu)
                })
                .collect(),
            region_weight: weights.region_count / region_denom,
            placed: vec![0; nodes.len()],
            leaders: vec![0; nodes.len()],
            followers: vec![0; nodes.len()],
        }
    }

    pub(crate) fn node_id(&self, i: usize) -> u64 {
        self.node_ids[i]
    }

    /// The node's score including what this request has placed on it so far.
    pub(crate) fn score(&self, i: usize) -> f64 {
        let regions = self.region_counts[i].saturating_add(self.placed[i] as u64) as f64;
        self.region_weight * regions + self.traffic_score[i]
    }

    pub(crate) fn record(&mut self, i: usize, role: Role) {
        self.placed[i] += 1;
        match role {
            Role::Leader => self.leaders[i] += 1,
            Role::Follower => self.followers[i] += 1,
        }
    }

    fn role_count(&self, i: usize, role: Role) -> usize {
        match role {
            Role::Leader => self.leaders[i],
            Role::Follower => self.followers[i],
        }
    }

    /// The best of `eligible` for `role`: lowest score; among equal scores the node that took this
    /// role least often in this request (so leaders rotate even when every node holds a replica of
    /// every region); then the lowest node id, so the choice replays identically.
    pub(crate) fn best(
        &self,
        role: Role,
        eligible: impl IntoIterator<Item = usize>,
    ) -> Option<usize> {
        eligible.into_iter().min_by(|&a, &b| {
            self.score(a)
                .total_cmp(&self.score(b))
                .then_with(|| self.role_count(a, role).cmp(&self.role_count(b, role)))
                .then_with(|| self.node_ids[a].cmp(&self.node_ids[b]))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_weights_are_valid_and_bad_ones_are_not() {
        assert!(LoadWeights::default().is_valid());
        let negative = LoadWeights {
            wcus: -1.0,
            ..LoadWeights::default()
        };
        assert!(!negative.is_valid());
        let nan = LoadWeights {
            cpu_usage: f64::NAN,
            ..LoadWeights::default()
        };
        assert!(!nan.is_valid());
    }

    #[test]
    fn score_rises_with_each_placed_replica_and_with_traffic() {
        let mut busy = Candidate::new(2);
        busy.wcus = 100;
        busy.cpu_usage = 4.0;
        let nodes = [Candidate::new(1), busy];
        let refs: Vec<&Candidate> = nodes.iter().collect();
        let mut book = LoadBook::new(&refs, &LoadWeights::default(), 4);
        assert!(book.score(0) < book.score(1));
        let before = book.score(0);
        book.record(0, Role::Leader);
        assert!(book.score(0) > before);
    }

    #[test]
    fn nonsense_cpu_reading_counts_as_idle_not_as_better_than_idle() {
        let mut nan = Candidate::new(1);
        nan.cpu_usage = f64::NAN;
        let mut negative = Candidate::new(2);
        negative.cpu_usage = -3.0;
        let idle = Candidate::new(3);
        let nodes = [nan, negative, idle];
        let refs: Vec<&Candidate> = nodes.iter().collect();
        let book = LoadBook::new(&refs, &LoadWeights::default(), 1);
        assert_eq!(book.score(0), book.score(2));
        assert_eq!(book.score(1), book.score(2));
    }
}
