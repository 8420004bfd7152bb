//! An in-process datanode for tests that create tables: it holds the regions it is told to
//! open (reporting each as leader in its heartbeats) and forgets those it is told to close.
//! Declared only by the tests that use it (`#[path = "common/datanode.rs"] mod datanode;`).

use cairn_client::meta::{InstructionHandler, StatsSource};
use cairn_proto::cairnpb::instruction::Kind;
use cairn_proto::cairnpb::{Instruction, NodeStats, RegionRole, RegionStat};
use std::collections::BTreeSet;
use std::sync::Mutex;

#[derive(Default)]
pub struct Datanode {
    pub regions: Mutex<BTreeSet<u64>>,
}

impl StatsSource for Datanode {
    fn collect(&self, _interval_ms: u64) -> (NodeStats, Vec<RegionStat>) {
        let regions = self.regions.lock().unwrap();
        let stats = regions
            .iter()
            .map(|id| RegionStat {
                region_id: *id,
                role: RegionRole::Leader as i32,
                ..Default::default()
            })
            .collect();
        (NodeStats::default(), stats)
    }
}

impl InstructionHandler for Datanode {
    async fn handle(&self, instruction: Instruction) -> Result<(), String> {
        let mut regions = self.regions.lock().unwrap();
        match instruction.kind {
            Some(Kind::OpenRegions(open)) => {
                regions.extend(open.regions.iter().map(|r| r.region_id));
            }
            Some(Kind::CloseRegions(close)) => {
                for id in close.region_ids {
                    regions.remove(&id);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
