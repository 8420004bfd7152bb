//! The regions a simulated datanode holds, how instructions change them, and which writes and
//! reads the node accepts for them. Pure: the node wraps this in a lock and calls it from its
//! instruction handler and its write entry.

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

/// Why a node refused a write or read of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionRefusal {
    /// The node does not hold the region at all.
    NotHeld,
    /// The node holds the region as a follower; writes go to the leader.
    NotLeader,
}

/// Region id → role, for the regions a node holds, and the rows written to each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionSet {
    regions: BTreeMap<u64, RegionRole>,
    /// Rows written through this node while it led the region (absent: none).
    rows: BTreeMap<u64, u64>,
    /// The highest TRUNCATE epoch applied to each region (absent: none).
    truncated_epochs: BTreeMap<u64, u64>,
}

impl RegionSet {
    /// `count` invented regions of node `node`, all led by it.
    pub fn invented(node: u64, count: u32) -> Self {
        let regions = (0..count)
            .map(|r| (sim_region_id(node, r), RegionRole::Leader))
            .collect();
        RegionSet {
            regions,
            rows: BTreeMap::new(),
            truncated_epochs: BTreeMap::new(),
        }
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

    /// Rows written to `region_id` through this node.
    pub fn rows(&self, region_id: u64) -> u64 {
        self.rows.get(&region_id).copied().unwrap_or(0)
    }

    /// Accepts a write of `rows` rows to `region_id` if this node leads it.
    pub fn write(&mut self, region_id: u64, rows: u64) -> Result<(), RegionRefusal> {
        match self.regions.get(&region_id) {
            Some(RegionRole::Leader) => {
                let held = self.rows.entry(region_id).or_insert(0);
                *held = held.saturating_add(rows);
                Ok(())
            }
            Some(_) => Err(RegionRefusal::NotLeader),
            None => Err(RegionRefusal::NotHeld),
        }
    }

    /// Accepts a read of `region_id` if this node holds it, as leader or follower; answers the
    /// rows written through this node (replication is not simulated: a follower has none).
    pub fn read(&self, region_id: u64) -> Result<u64, RegionRefusal> {
        if self.regions.contains_key(&region_id) {
            Ok(self.rows(region_id))
        } else {
            Err(RegionRefusal::NotHeld)
        }
    }

    fn close(&mut self, region_id: u64) {
        self.regions.remove(&region_id);
        self.rows.remove(&region_id);
        self.truncated_epochs.remove(&region_id);
    }

    /// Gives every region of `ids` `role`, if all are held (otherwise changes nothing).
    fn set_roles(&mut self, ids: &[u64], role: RegionRole) -> Result<(), String> {
        if let Some(missing) = ids.iter().find(|id| !self.regions.contains_key(id)) {
            return Err(format!("region {missing} is not held by this node"));
        }
        for id in ids {
            self.regions.insert(*id, role);
        }
        Ok(())
    }

    /// Obeys `instruction`. Repeating an instruction that succeeded succeeds again: opening an
    /// open region, flushing, and closing too (a region not held is closed already; a procedure
    /// resumed by a new leader may close twice).
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
                self.close(close.region_id);
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
            Some(Kind::DowngradeRegionLeaders(down)) => {
                self.set_roles(&down.region_ids, RegionRole::Follower)
            }
            Some(Kind::UpgradeRegionsToLeader(up)) => {
                self.set_roles(&up.region_ids, RegionRole::Leader)
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
                    self.close(*id);
                }
                Ok(())
            }
            Some(Kind::TruncateRegions(t)) => {
                for id in &t.region_ids {
                    held(self, *id)?;
                }
                for id in &t.region_ids {
                    // A repeat of a truncate already applied (a retried or resumed procedure)
                    // must not drop the rows written since.
                    let last = self.truncated_epochs.get(id).copied().unwrap_or(0);
                    if t.epoch != 0 && t.epoch <= last {
                        continue;
                    }
                    self.rows.remove(id);
                    if t.epoch != 0 {
                        self.truncated_epochs.insert(*id, t.epoch);
                    }
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
        CloseRegion, CloseRegions, DowngradeRegionLeader, DowngradeRegionLeaders, FlushRegion,
        InvalidateCaches, OpenRegion, OpenRegions, TruncateRegions, UpgradeRegionToLeader,
        UpgradeRegionsToLeader,
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
            lease_ms: 0,
        })))
        .unwrap();
        assert_eq!(set.role(new), Some(RegionRole::Follower));
        set.apply(&instr(Kind::UpgradeRegionToLeader(UpgradeRegionToLeader {
            region_id: new,
            lease_ms: 0,
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
    fn closing_twice_succeeds_single_or_batched() {
        let mut set = RegionSet::invented(1, 3);
        let (r0, r1) = (sim_region_id(1, 0), sim_region_id(1, 1));
        let single = instr(Kind::CloseRegion(CloseRegion { region_id: r0 }));
        set.apply(&single).unwrap();
        set.apply(&single).unwrap();
        let batch = instr(Kind::CloseRegions(CloseRegions {
            region_ids: vec![r0, r1, 999 << 32],
        }));
        set.apply(&batch).unwrap();
        set.apply(&batch).unwrap();
        assert_eq!(set.len(), 1);
        assert_eq!(set.role(r1), None);
    }

    #[test]
    fn only_the_leader_takes_writes_and_any_holder_serves_reads() {
        let mut set = RegionSet::default();
        let (led, followed, absent) = (5 << 32, (5 << 32) | 1, (5 << 32) | 2);
        set.apply(&instr(Kind::OpenRegions(OpenRegions {
            regions: vec![
                OpenRegion {
                    region_id: led,
                    as_leader: true,
                    lease_ms: 0,
                },
                OpenRegion {
                    region_id: followed,
                    as_leader: false,
                    lease_ms: 0,
                },
            ],
        })))
        .unwrap();
        set.write(led, 10).unwrap();
        set.write(led, 5).unwrap();
        assert_eq!(set.write(followed, 1), Err(RegionRefusal::NotLeader));
        assert_eq!(set.write(absent, 1), Err(RegionRefusal::NotHeld));
        assert_eq!(set.read(led), Ok(15));
        assert_eq!(set.read(followed), Ok(0));
        assert_eq!(set.read(absent), Err(RegionRefusal::NotHeld));

        // A downgraded leader refuses writes; the upgraded one takes them.
        set.apply(&instr(Kind::DowngradeRegionLeader(DowngradeRegionLeader {
            region_id: led,
        })))
        .unwrap();
        assert_eq!(set.write(led, 1), Err(RegionRefusal::NotLeader));
        set.apply(&instr(Kind::UpgradeRegionToLeader(UpgradeRegionToLeader {
            region_id: followed,
            lease_ms: 0,
        })))
        .unwrap();
        set.write(followed, 2).unwrap();

        // Truncating drops the rows and keeps the region; closing forgets both.
        set.apply(&instr(Kind::TruncateRegions(TruncateRegions {
            region_ids: vec![led],
            epoch: 0,
        })))
        .unwrap();
        assert_eq!(set.read(led), Ok(0));
        set.apply(&instr(Kind::CloseRegion(CloseRegion {
            region_id: followed,
        })))
        .unwrap();
        assert_eq!(set.read(followed), Err(RegionRefusal::NotHeld));
        assert_eq!(set.rows(followed), 0);
    }

    #[test]
    fn unknown_regions_are_refused_and_nothing_changes() {
        let mut set = RegionSet::invented(1, 2);
        let before = set.clone();
        let missing = 999 << 32;
        for kind in [
            Kind::DowngradeRegionLeader(DowngradeRegionLeader { region_id: missing }),
            Kind::UpgradeRegionToLeader(UpgradeRegionToLeader {
                region_id: missing,
                lease_ms: 0,
            }),
            Kind::FlushRegion(FlushRegion { region_id: missing }),
            Kind::DowngradeRegionLeaders(DowngradeRegionLeaders {
                region_ids: vec![missing],
            }),
            Kind::UpgradeRegionsToLeader(UpgradeRegionsToLeader {
                region_ids: vec![missing],
                lease_ms: 0,
            }),
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
            lease_ms: 0,
        }));
        set.apply(&open).unwrap();
        set.apply(&open).unwrap();
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn a_repeated_truncate_keeps_rows_written_after_the_first() {
        let mut set = RegionSet::invented(1, 1);
        let region = sim_region_id(1, 0);
        let truncate = |epoch| {
            instr(Kind::TruncateRegions(TruncateRegions {
                region_ids: vec![region],
                epoch,
            }))
        };
        set.write(region, 5).unwrap();
        set.apply(&truncate(7)).unwrap();
        assert_eq!(set.read(region), Ok(0));
        set.write(region, 3).unwrap();
        // The same TRUNCATE again (resumed by a new leader), or an older one: nothing dropped.
        set.apply(&truncate(7)).unwrap();
        set.apply(&truncate(6)).unwrap();
        assert_eq!(set.read(region), Ok(3));
        // A later TRUNCATE drops them.
        set.apply(&truncate(8)).unwrap();
        assert_eq!(set.read(region), Ok(0));
    }
}
