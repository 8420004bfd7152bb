//! The schedulers as a set: which exist, which are on, their parameters, and one planning pass
//! over a [`ClusterSnapshot`] that runs every enabled one in a fixed order on a shared tally.
//!
//! Order matters and is fixed: an operator's requests first (evict-leaders, drain: they spend a
//! budget of their own and are the only ones that run in maintenance mode), then repairs (a
//! region short of copies, then a broken failure-domain rule: risks, not inefficiencies), then hot-region (load), then balance-region (counts, then sizes). Each later
//! scheduler sees the earlier ones' moves and refuses moves that would break what they keep:
//! balance-region never leaves a node more than two hot tolerances above the mean load and never
//! breaks a spread rule; hot-region leaves nodes short of regions to balance-region, and moves
//! only with a cold region swapped back when its move would unbalance counts. So one pass never undoes itself, and a
//! balanced cluster plans nothing. Across passes, the balancing schedulers never send a copy
//! back to a node a balancing move took a copy of the region off while the leader remembers it
//! ([`ClusterSnapshot::last_left`]): from any start, nothing returns.

use crate::balance_region::BalanceRegion;
use crate::cluster::DrainKind;
use crate::cluster::{ClusterSnapshot, Tally};
use crate::drain::DrainScheduler;
use crate::hot_region::HotRegion;
use crate::label_spread::LabelSpread;
use crate::operator::Operator;
use crate::replica_repair::ReplicaRepair;
pub use crate::schedule::ConfigError;
use crate::schedule::Schedule;

/// What `scheduler list` shows of one scheduler.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerInfo {
    pub name: &'static str,
    pub enabled: bool,
    pub description: &'static str,
    pub params: Vec<(&'static str, String)>,
}

#[derive(Debug)]
struct Entry {
    enabled: bool,
    inner: Box<dyn Schedule>,
}

/// Every scheduler Cairn has, in planning order, each on or off.
#[derive(Debug)]
pub struct Schedulers {
    entries: Vec<Entry>,
}

/// The names of every scheduler, in planning order.
pub fn names() -> Vec<&'static str> {
    Schedulers::default()
        .entries
        .iter()
        .map(|e| e.inner.name())
        .collect()
}

impl Default for Schedulers {
    /// All on, default parameters.
    fn default() -> Self {
        let all: Vec<Box<dyn Schedule>> = vec![
            Box::new(DrainScheduler(DrainKind::Leaders)),
            Box::new(DrainScheduler(DrainKind::All)),
            Box::new(ReplicaRepair::default()),
            Box::new(LabelSpread),
            Box::new(HotRegion::default()),
            Box::new(BalanceRegion::default()),
        ];
        Schedulers {
            entries: all
                .into_iter()
                .map(|inner| Entry {
                    enabled: true,
                    inner,
                })
                .collect(),
        }
    }
}

impl Schedulers {
    fn entry(&mut self, name: &str) -> Result<&mut Entry, ConfigError> {
        self.entries
            .iter_mut()
            .find(|e| e.inner.name() == name)
            .ok_or_else(|| ConfigError::UnknownScheduler {
                name: name.to_string(),
                known: names().join(", "),
            })
    }

    pub fn list(&self) -> Vec<SchedulerInfo> {
        self.entries
            .iter()
            .map(|e| SchedulerInfo {
                name: e.inner.name(),
                enabled: e.enabled,
                description: e.inner.describe(),
                params: e.inner.params(),
            })
            .collect()
    }

    pub fn set_enabled(&mut self, name: &str, enabled: bool) -> Result<(), ConfigError> {
        self.entry(name)?.enabled = enabled;
        Ok(())
    }

    /// Sets one parameter; nothing changes when it is refused.
    pub fn configure(&mut self, name: &str, key: &str, value: &str) -> Result<(), ConfigError> {
        self.entry(name)?.inner.set(key, value)
    }

    /// One pass of every enabled scheduler, in order; the operators in the order planned.
    pub fn plan(&self, snapshot: &ClusterSnapshot) -> Vec<Operator> {
        self.run(snapshot, false)
    }

    /// One pass of the enabled schedulers that carry out an operator's request (drain,
    /// evict-leaders): what runs in maintenance mode.
    pub fn plan_requested(&self, snapshot: &ClusterSnapshot) -> Vec<Operator> {
        self.run(snapshot, true)
    }

    fn run(&self, snapshot: &ClusterSnapshot, requested_only: bool) -> Vec<Operator> {
        let mut tally = Tally::new(snapshot);
        if let Some((tolerance, floor)) = self.entries.iter().find_map(|e| e.inner.load_limits()) {
            tally.set_load_limits(tolerance, floor);
        }
        let run = |e: &&Entry| e.enabled && (!requested_only || e.inner.requested());
        for e in self.entries.iter().filter(run) {
            e.inner.schedule(&mut tally);
        }
        tally.planned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedulers_are_listed_on_by_default_and_can_be_switched_and_configured() {
        let mut s = Schedulers::default();
        let names: Vec<&str> = s.list().iter().map(|i| i.name).collect();
        assert_eq!(
            names,
            [
                "evict-leaders",
                "drain",
                "replica-repair",
                "label-spread",
                "hot-region",
                "balance-region"
            ]
        );
        assert!(s.list().iter().all(|i| i.enabled));
        s.set_enabled("hot-region", false).unwrap();
        assert!(!s.list()[4].enabled);
        s.configure("balance-region", "tolerance", "0.1").unwrap();
        s.configure("balance-region", "size_tolerance", "0.25")
            .unwrap();
        let params = &s.list()[5].params;
        assert!(
            params.contains(&("tolerance", "0.1".to_string()))
                && params.contains(&("size_tolerance", "0.25".to_string())),
            "{params:?}"
        );
    }

    #[test]
    fn bad_names_keys_and_values_are_refused_with_what_is_allowed() {
        let mut s = Schedulers::default();
        let e = s
            .set_enabled("balance-leader", true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("balance-leader") && e.contains("hot-region"),
            "{e}"
        );
        let e = s
            .configure("hot-region", "speed", "1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("speed") && e.contains("tolerance"), "{e}");
        let e = s
            .configure("label-spread", "speed", "1")
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("\"speed\": it takes no parameters"), "{e}");
        let e = s
            .configure("hot-region", "tolerance", "-1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("between"), "{e}");
        let e = s
            .configure("balance-region", "tolerance", "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a number"), "{e}");
        let e = s
            .configure("balance-region", "size_tolerance", "1.5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("size_tolerance") && e.contains("between"), "{e}");
        let before = s.list();
        assert_eq!(before, Schedulers::default().list(), "nothing changed");
    }
}
