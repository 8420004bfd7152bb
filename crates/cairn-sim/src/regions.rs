//! The regions a simulated datanode holds and how instructions change them. Pure: the node
//! wraps this in a lock and calls it from its instruction handler.

use std::collections::BTreeMap;

use cairn_proto::cairnpb::instruction::Kind;
use cairn_proto::cairnpb::{Instruction, RegionRole};

/// Most regions one simulated node holds; an open beyond it fails.
pub const REGIONS_PER_NODE_MAX: usize = 100_000;
/// Added to a node id to make the table id of its invented regions.
pub const SIM_TABLE_ID_OFFSET: u64 = 1_000;

/// The id of region `r` of node `node`'s invented table: `(1000 + node) << 32 | r`.
pub fn sim_region_id(node: u64, r: u32) -> u64 {
    ((SIM_TABLE_ID_OFFSET + node) << 32) | u64::from(r)
}

/// Region id → role, for the regions a node holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionSet {
    regions: BTreeMap<u64, RegionRole>,
}

impl RegionSet {
    /// `count` invented regions of node `node`, all led by it.
    pub fn invented(node: u64, count: u32) -> Self {
        let regions = (0..count)
            .map(|r| (sim_region_id(node, r), RegionRole::Leader))
            .collect();
        RegionSet { regions }
    }

    /// The regions held, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, RegionRole)> + '_ {
        self.regions.iter().map(|(id, role)| (*id, *role))
    }

    /// Regions held.
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    /// Whether no region is held.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Distinct tables among the regions held.
    pub fn table_count(&self) -> u64 {
        let mut tables: Vec<u64> = self.regions.keys().map(|id| id >> 32).collect();
        tables.dedup();
        tables.len() as u64
    }

    /// The role of `region_id`, if held.
    pub fn role(&self, region_id: u64) -> Option<RegionRole> {
        self.regions.get(&region_id).copied()
    }

    /// Obeys `instruction`. Repeating an instruction that succeeded succeeds again (opening an
    /// open region, flushing), except closing: a region closed is no longer held.
    pub fn apply(&mut self, instruction: &Instruction) -> Result<(), String> {
        let held = |set: &Self, id: u64| {
            if set.regions.contains_key(&id) {
                Ok(())
            } else {
                Err(format!("region {id} is not held by this node"))
            }
        };
        match &instruction.kind {
            Some(Kind::OpenRegion(open)) => {
                let role = if open.as_leader {
                    RegionRole::Leader
                } else {
                    RegionRole::Follower
                };
                if !self.regions.contains_key(&open.region_id)
                    && self.regions.len() >= REGIONS_PER_NODE_MAX
                {
                    return Err(format!(
                        "cannot open region {}: node holds {REGIONS_PER_NODE_MAX} regions already",
                        open.region_id
                    ));
                }
                self.regions.insert(open.region_id, role);
                Ok(())
            }
            Some(Kind::CloseRegion(close)) => {
                held(self, close.region_id)?;
                self.regions.remove(&close.region_id);
                Ok(())
            }
            Some(Kind::DowngradeRegionLeader(down)) => {
                held(self, down.region_id)?;
                self.regions.insert(down.region_id, RegionRole::Follower);
                Ok(())
            }
            Some(Kind::UpgradeRegionToLeader(up)) => {
                held(self, up.region_id)?;
                self.regions.insert(up.region_id, RegionRole::Leader);
                Ok(())
            }
            Some(Kind::FlushRegion(flush)) => held(self, flush.region_id),
            Some(Kind::InvalidateCaches(_)) => Ok(()),
            Some(Kind::OpenRegions(open)) => {
                let new = open
                    .regions
                    .iter()
                    .filter(|o| !self.regions.contains_key(&o.region_id))
                    .count();
                if self.regions.len() + new > REGIONS_PER_NODE_MAX {
                    return Err(format!(
                        "cannot open {new} regions: node would hold more than {REGIONS_PER_NODE_MAX}"
                    ));
                }
                for o in &open.regions {
                    let role = if o.as_leader {
                        RegionRole::Leader
                    } else {
                        RegionRole::Follower
                    };
                    self.regions.insert(o.region_id, role);
                }
                Ok(())
            }
            // Closing what is not held is done already: a resumed procedure may close twice.
            Some(Kind::CloseRegions(close)) => {
                for id in &close.region_ids {
                    self.regions.remove(id);
                }
                Ok(())
            }
            Some(Kind::TruncateRegions(t)) => {
                for id in &t.region_ids {
                    held(self, *id)?;
                }
                Ok(())
            }
            None => Err("instruction has no kind (unknown to this node)".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_proto::cairnpb::{
        CloseRegion, DowngradeRegionLeader, FlushRegion, InvalidateCaches, OpenRegion,
        UpgradeRegionToLeader,
    };

    fn instr(kind: Kind) -> Instruction {
        Instruction {
            id: 1,
            timeout_ms: 1_000,
            kind: Some(kind),
        }
    }

    #[test]
    fn invented_regions_use_the_node_table() {
        let set = RegionSet::invented(1001, 3);
        let ids: Vec<u64> = set.iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![2001 << 32, (2001 << 32) | 1, (2001 << 32) | 2]);
        assert_eq!(set.table_count(), 1);
        assert!(set.iter().all(|(_, role)| role == RegionRole::Leader));
    }

    #[test]
    fn open_close_upgrade_downgrade_flush() {
        let mut set = RegionSet::invented(1, 1);
        let r = sim_region_id(1, 0);
        let new = 77 << 32;
        set.apply(&instr(Kind::OpenRegion(OpenRegion {
            region_id: new,
            as_leader: false,
        })))
        .unwrap();
        assert_eq!(set.role(new), Some(RegionRole::Follower));
        set.apply(&instr(Kind::UpgradeRegionToLeader(UpgradeRegionToLeader {
            region_id: new,
        })))
        .unwrap();
        assert_eq!(set.role(new), Some(RegionRole::Leader));
        set.apply(&instr(Kind::DowngradeRegionLeader(DowngradeRegionLeader {
            region_id: r,
        })))
        .unwrap();
        assert_eq!(set.role(r), Some(RegionRole::Follower));
        set.apply(&instr(Kind::FlushRegion(FlushRegion { region_id: r })))
            .unwrap();
        set.apply(&instr(Kind::CloseRegion(CloseRegion { region_id: r })))
            .unwrap();
        assert_eq!(set.role(r), None);
        assert_eq!(set.len(), 1);
        assert_eq!(set.table_count(), 1);
    }

    #[test]
    fn unknown_regions_are_refused_and_nothing_changes() {
        let mut set = RegionSet::invented(1, 2);
        let before = set.clone();
        let missing = 999 << 32;
        for kind in [
            Kind::CloseRegion(CloseRegion { region_id: missing }),
            Kind::DowngradeRegionLeader(DowngradeRegionLeader { region_id: missing }),
            Kind::UpgradeRegionToLeader(UpgradeRegionToLeader { region_id: missing }),
            Kind::FlushRegion(FlushRegion { region_id: missing }),
        ] {
            let err = set.apply(&instr(kind)).unwrap_err();
            assert!(err.contains("not held"), "{err}");
        }
        assert_eq!(set, before);
        assert!(set
            .apply(&Instruction {
                id: 2,
                timeout_ms: 0,
                kind: None
            })
            .is_err());
    }

    #[test]
    fn invalidate_and_repeated_open_succeed() {
        let mut set = RegionSet::default();
        assert!(set.is_empty());
        set.apply(&instr(Kind::InvalidateCaches(InvalidateCaches {
            keys: vec!["a".into()],
        })))
        .unwrap();
        let open = instr(Kind::OpenRegion(OpenRegion {
            region_id: 5,
            as_leader: true,
        }));
        set.apply(&open).unwrap();
        set.apply(&open).unwrap();
        assert_eq!(set.len(), 1);
    }
}
