//! An in-process datanode for tests that create tables: it holds the regions it is told to
//! open (reporting each as leader in its heartbeats) and forgets those it is told to close. It
//! records the TRUNCATE epochs each region applied, skipping a repeat as a real datanode must.
//! Declared only by the tests that use it (`#[path = "common/datanode.rs"] mod datanode;`).

use cairn_client::meta::{
    HeartbeatHandle, HeartbeatOptions, InstructionHandler, MetaClient, StatsSource,
};
use cairn_proto::cairnpb::instruction::Kind;
use cairn_proto::cairnpb::{
    Instruction, NodeIdentity, NodeRole, NodeStats, RegionRole, RegionStat,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Datanode {
    pub regions: Mutex<BTreeSet<u64>>,
    /// Per region, the TRUNCATE epochs applied (a repeat of the last one, or an older one, is not).
    pub truncated_epochs: Mutex<BTreeMap<u64, Vec<u64>>>,
}

/// A datanode per id in `ids`, reachable (by name) at `address(id)`, heartbeating every 200 ms
/// through `client`; keep the handles for as long as they should live.
pub fn start(
    client: &MetaClient,
    ids: impl IntoIterator<Item = u64>,
    address: impl Fn(u64) -> String,
) -> Vec<(Arc<Datanode>, HeartbeatHandle)> {
    ids.into_iter()
        .map(|id| {
            let dn = Arc::new(Datanode::default());
            let identity = NodeIdentity {
                id,
                role: NodeRole::Datanode as i32,
                address: address(id),
                ..Default::default()
            };
            let opts = HeartbeatOptions {
                interval_ms: 200,
                ..Default::default()
            };
            let h = client.run_heartbeat_with(identity, dn.clone(), dn.clone(), opts);
            (dn, h)
        })
        .collect()
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
            Some(Kind::TruncateRegions(t)) => {
                if let Some(id) = t.region_ids.iter().find(|id| !regions.contains(id)) {
                    return Err(format!("region {id} is not open here"));
                }
                let mut applied = self.truncated_epochs.lock().unwrap();
                for id in t.region_ids {
                    let epochs = applied.entry(id).or_default();
                    if t.epoch == 0 || epochs.last().is_none_or(|last| t.epoch > *last) {
                        epochs.push(t.epoch);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
