//! Operators: what a scheduler decides, as data. One operator moves one copy of one region
//! (its leadership, or one follower copy) from one datanode to another, or adds or drops a
//! follower copy to bring a region to its replica count; the leader's executor
//! runs it as the migration procedure's step list, under the limits, and records it in the
//! event log with the scheduler, reason and figures given here.

use std::fmt;

/// The scheduler that empties drained nodes (`node drain`).
pub const DRAIN_SCHEDULER: &str = "drain";
/// The scheduler that hands the leadership of a node's regions to their followers (`node
/// evict-leaders`).
pub const EVICT_LEADERS_SCHEDULER: &str = "evict-leaders";
/// The scheduler that keeps every region at its replica count.
pub const REPLICA_REPAIR_SCHEDULER: &str = "replica-repair";

/// Which copy of a region moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MoveKind {
    /// The leader copy: the candidate opens the region, the old leader is downgraded, the
    /// candidate upgraded, the route published, the old copy closed.
    Leader,
    /// A follower copy: the candidate opens it as a follower, the route is published, the old
    /// copy closed. Nothing is downgraded or leased.
    Follower,
    /// A new follower copy for a region short of its replica count (its operator's `from` is
    /// 0: nothing gives a copy up): the candidate opens it as a follower, the route is published.
    AddFollower,
    /// A follower copy beyond the region's replica count, dropped (its operator's `to` is 0):
    /// the route is published without it, then the copy closed.
    RemoveFollower,
}

impl MoveKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MoveKind::Leader => "leader",
            MoveKind::Follower => "follower",
            MoveKind::AddFollower => "add-follower",
            MoveKind::RemoveFollower => "remove-follower",
        }
    }
}

/// How urgent an operator is: higher first when the limits cannot run them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Evening out count or load.
    Low,
    /// Moving load off a hot node.
    Normal,
    /// Repairing a broken spread rule, or emptying a drained node.
    High,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }
}

/// One step of an operator, in the order the migration procedure runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    OpenRegion { node: u64, as_leader: bool },
    DowngradeLeader { node: u64 },
    UpgradeToLeader { node: u64 },
    PublishRoute,
    CloseRegion { node: u64 },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::OpenRegion { node, as_leader } => {
                let role = if *as_leader { "candidate" } else { "follower" };
                write!(f, "open on node {node} as {role}")
            }
            Step::DowngradeLeader { node } => write!(f, "downgrade node {node}"),
            Step::UpgradeToLeader { node } => write!(f, "upgrade node {node} to leader"),
            Step::PublishRoute => f.write_str("publish route"),
            Step::CloseRegion { node } => write!(f, "close on node {node}"),
        }
    }
}

/// A move a scheduler wants.
#[derive(Debug, Clone, PartialEq)]
pub struct Operator {
    pub region_id: u64,
    pub kind: MoveKind,
    /// The node giving the copy up; 0 for [`MoveKind::AddFollower`].
    pub from: u64,
    /// The node taking the copy; 0 for [`MoveKind::RemoveFollower`].
    pub to: u64,
    /// The scheduler's name (`balance-region`, `hot-region`, ...).
    pub scheduler: &'static str,
    pub priority: Priority,
    /// Why, in a sentence.
    pub reason: String,
    /// The figures behind it (counts, loads, thresholds), as the event log stores them.
    pub figures: Vec<(&'static str, String)>,
}

impl Operator {
    /// Whether it carries out an operator's request (a drain or a leader eviction) rather than
    /// evening something out: it has a budget of its own, is not rate-limited, and runs in
    /// maintenance mode too.
    pub fn requested(&self) -> bool {
        matches!(self.scheduler, DRAIN_SCHEDULER | EVICT_LEADERS_SCHEDULER)
    }

    /// Whether it must not wait on the balancing limits: an operator's request, or a repair of
    /// a region short of copies (after a failover, a thousand at once). Urgent operators share a
    /// budget of their own, are not rate-limited and are logged in batches; only requested ones
    /// run in maintenance mode.
    pub fn urgent(&self) -> bool {
        self.requested() || self.scheduler == REPLICA_REPAIR_SCHEDULER
    }

    /// Whether the source keeps its copy as a follower (a leader eviction hands leadership to a
    /// follower and stays one).
    pub fn keeps_source(&self) -> bool {
        self.kind == MoveKind::Leader && self.scheduler == EVICT_LEADERS_SCHEDULER
    }

    /// The steps the migration procedure runs for it.
    pub fn steps(&self) -> Vec<Step> {
        if self.keeps_source() {
            return vec![
                Step::DowngradeLeader { node: self.from },
                Step::UpgradeToLeader { node: self.to },
                Step::PublishRoute,
            ];
        }
        match self.kind {
            MoveKind::Leader => vec![
                Step::OpenRegion {
                    node: self.to,
                    as_leader: true,
                },
                Step::DowngradeLeader { node: self.from },
                Step::UpgradeToLeader { node: self.to },
                Step::PublishRoute,
                Step::CloseRegion { node: self.from },
            ],
            MoveKind::Follower => vec![
                Step::OpenRegion {
                    node: self.to,
                    as_leader: false,
                },
                Step::PublishRoute,
                Step::CloseRegion { node: self.from },
            ],
            MoveKind::AddFollower => vec![
                Step::OpenRegion {
                    node: self.to,
                    as_leader: false,
                },
                Step::PublishRoute,
            ],
            MoveKind::RemoveFollower => {
                vec![Step::PublishRoute, Step::CloseRegion { node: self.from }]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_move_downgrades_before_it_upgrades_and_closes_last() {
        let op = Operator {
            region_id: 1 << 32,
            kind: MoveKind::Leader,
            from: 1,
            to: 2,
            scheduler: "balance-region",
            priority: Priority::Low,
            reason: String::new(),
            figures: Vec::new(),
        };
        let steps: Vec<String> = op.steps().iter().map(Step::to_string).collect();
        assert_eq!(
            steps,
            [
                "open on node 2 as candidate",
                "downgrade node 1",
                "upgrade node 2 to leader",
                "publish route",
                "close on node 1"
            ]
        );
        let follower = Operator {
            kind: MoveKind::Follower,
            ..op
        };
        assert!(!follower
            .steps()
            .iter()
            .any(|s| matches!(s, Step::DowngradeLeader { .. })));
        let added = Operator {
            kind: MoveKind::AddFollower,
            from: 0,
            ..follower
        };
        let steps: Vec<String> = added.steps().iter().map(Step::to_string).collect();
        assert_eq!(steps, ["open on node 2 as follower", "publish route"]);
        let removed = Operator {
            kind: MoveKind::RemoveFollower,
            from: 1,
            to: 0,
            ..added
        };
        let steps: Vec<String> = removed.steps().iter().map(Step::to_string).collect();
        assert_eq!(steps, ["publish route", "close on node 1"]);
        assert!(Priority::High > Priority::Normal && Priority::Normal > Priority::Low);
    }
}
