//! Operators: what a scheduler decides, as data. One operator moves one copy of one region
//! (its leadership, or one follower copy) from one datanode to another, or adds or drops a
//! follower copy to bring a region to its replica count; the leader's executor
//! runs it as the migration procedure's step list ([`Move::steps`]), under the limits, and records it in the
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
    /// The leader copy: the candidate opens the region (unless it follows it already), the old
    /// leader is downgraded, the candidate upgraded and named leader in the route, the old copy
    /// closed (or kept as a follower).
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

/// The stored steps of the migration procedure that act on regions, in the order it runs them
/// (`open_candidate`, `downgrade_leader`, `upgrade_candidate`, `close_old`). A batch passes
/// through every phase; each region's move does in each at most its one [`Step`] of that phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Open,
    Downgrade,
    Upgrade,
    Close,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Open, Phase::Downgrade, Phase::Upgrade, Phase::Close];
}

/// One step of a region's move: what the migration procedure does for it in one [`Phase`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Open the region on `node` as a follower (the candidate, or a new follower copy).
    OpenRegion { node: u64 },
    /// Mark the route downgrading, downgrade the leader on `node`, wait until its lease is over.
    DowngradeLeader { node: u64 },
    /// Upgrade `node`, leased, and write the route naming it the active leader.
    UpgradeToLeader { node: u64 },
    /// Write the route with the follower copies changed.
    PublishRoute,
    /// Close the region on `node`.
    CloseRegion { node: u64 },
    /// Downgrade `node` again rather than close it: it stays a follower (evict-leaders).
    KeepFollower { node: u64 },
}

impl Step {
    pub fn phase(self) -> Phase {
        match self {
            Step::OpenRegion { .. } => Phase::Open,
            Step::DowngradeLeader { .. } => Phase::Downgrade,
            Step::UpgradeToLeader { .. } | Step::PublishRoute => Phase::Upgrade,
            Step::CloseRegion { .. } | Step::KeepFollower { .. } => Phase::Close,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::OpenRegion { node } => write!(f, "open on node {node} as follower"),
            Step::DowngradeLeader { node } => write!(f, "downgrade node {node}"),
            Step::UpgradeToLeader { node } => {
                write!(f, "upgrade node {node} to leader and publish the route")
            }
            Step::PublishRoute => f.write_str("publish the route"),
            Step::CloseRegion { node } => write!(f, "close on node {node}"),
            Step::KeepFollower { node } => write!(f, "keep node {node} as follower"),
        }
    }
}

/// One region's move as the migration procedure runs it: all that decides its steps. The
/// procedure walks [`Move::step`] phase by phase; an operator's view shows [`Move::steps`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub kind: MoveKind,
    /// 0 for [`MoveKind::AddFollower`].
    pub from: u64,
    /// 0 for [`MoveKind::RemoveFollower`].
    pub to: u64,
    /// `to` already follows the region: nothing is opened.
    pub to_follows: bool,
    /// `from` stays a follower: downgraded at the end, not closed.
    pub keeps_source: bool,
}

impl Move {
    /// Its steps, in the order of their phases.
    pub fn steps(&self) -> Vec<Step> {
        Phase::ALL.iter().filter_map(|p| self.step(*p)).collect()
    }

    /// What it does in `phase`, if anything.
    pub fn step(&self, phase: Phase) -> Option<Step> {
        let leader = self.kind == MoveKind::Leader;
        match phase {
            Phase::Open => (self.kind != MoveKind::RemoveFollower && !self.to_follows)
                .then_some(Step::OpenRegion { node: self.to }),
            Phase::Downgrade => leader.then_some(Step::DowngradeLeader { node: self.from }),
            Phase::Upgrade if leader => Some(Step::UpgradeToLeader { node: self.to }),
            Phase::Upgrade => Some(Step::PublishRoute),
            Phase::Close if self.kind == MoveKind::AddFollower => None,
            Phase::Close if self.keeps_source => Some(Step::KeepFollower { node: self.from }),
            Phase::Close => Some(Step::CloseRegion { node: self.from }),
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
    /// `to` already follows the region (a leadership handed to a follower): nothing is opened.
    pub to_follows: bool,
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

    /// The node a balancing move takes a copy off, for [`crate::ClusterSnapshot::last_left`]:
    /// none for an urgent operator (a drain, an eviction, a repair of missing copies answer a
    /// change of cluster, and a copy may go back once it is over) or an added copy.
    pub fn leaves(&self) -> Option<u64> {
        (!self.urgent() && self.from != 0).then_some(self.from)
    }

    /// Whether the source keeps its copy as a follower (a leader eviction hands leadership to a
    /// follower and stays one).
    pub fn keeps_source(&self) -> bool {
        self.kind == MoveKind::Leader && self.scheduler == EVICT_LEADERS_SCHEDULER
    }

    /// The move the migration procedure runs for it.
    pub fn as_move(&self) -> Move {
        Move {
            kind: self.kind,
            from: self.from,
            to: self.to,
            to_follows: self.to_follows,
            keeps_source: self.keeps_source(),
        }
    }

    /// The steps the migration procedure runs for it (see [`Move::steps`]).
    pub fn steps(&self) -> Vec<Step> {
        self.as_move().steps()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: MoveKind, from: u64, to: u64) -> Operator {
        Operator {
            region_id: 1 << 32,
            kind,
            from,
            to,
            to_follows: false,
            scheduler: "balance-region",
            priority: Priority::Low,
            reason: String::new(),
            figures: Vec::new(),
        }
    }

    fn shown(op: &Operator) -> Vec<String> {
        op.steps().iter().map(Step::to_string).collect()
    }

    #[test]
    fn each_kind_of_move_has_its_steps_in_phase_order() {
        assert_eq!(
            shown(&op(MoveKind::Leader, 1, 2)),
            [
                "open on node 2 as follower",
                "downgrade node 1",
                "upgrade node 2 to leader and publish the route",
                "close on node 1"
            ]
        );
        // A drain handing the leadership to a follower opens nothing.
        let handover = Operator {
            to_follows: true,
            scheduler: DRAIN_SCHEDULER,
            ..op(MoveKind::Leader, 1, 2)
        };
        assert_eq!(
            shown(&handover),
            [
                "downgrade node 1",
                "upgrade node 2 to leader and publish the route",
                "close on node 1"
            ]
        );
        // Evicting leaders keeps the old leader as a follower.
        let evict = Operator {
            scheduler: EVICT_LEADERS_SCHEDULER,
            ..handover
        };
        assert_eq!(
            shown(&evict),
            [
                "downgrade node 1",
                "upgrade node 2 to leader and publish the route",
                "keep node 1 as follower"
            ]
        );
        assert_eq!(
            shown(&op(MoveKind::Follower, 1, 2)),
            [
                "open on node 2 as follower",
                "publish the route",
                "close on node 1"
            ]
        );
        assert_eq!(
            shown(&op(MoveKind::AddFollower, 0, 2)),
            ["open on node 2 as follower", "publish the route"]
        );
        assert_eq!(
            shown(&op(MoveKind::RemoveFollower, 1, 0)),
            ["publish the route", "close on node 1"]
        );
        for kind in [
            MoveKind::Leader,
            MoveKind::Follower,
            MoveKind::AddFollower,
            MoveKind::RemoveFollower,
        ] {
            let m = op(kind, 1, 2).as_move();
            let phases: Vec<Phase> = m.steps().iter().map(|s| s.phase()).collect();
            assert!(
                phases.windows(2).all(|w| w[0] < w[1]),
                "{kind:?}: {phases:?}"
            );
            assert!(
                m.step(Phase::Upgrade).is_some(),
                "every move changes the route"
            );
        }
        assert!(Priority::High > Priority::Normal && Priority::Normal > Priority::Low);
    }
}
