//! The leader's answer to `GetRegion`: a region's route, its write lease as this leader's record
//! has it, and the migration moving it, if any.

use crate::errors;
use crate::leader::node::Node;
use crate::leader::procedure::migrate_region::{self, MigrateRegion};
use crate::replica::meta::convert;
use crate::replica::meta::store::{self, layout};
use cairn_meta::route::{region_number_of, table_id_of};
use cairn_meta::{codec, ProcedureRecord, ProcedureState, TableInfo, TableRoute};
use cairn_proto::cairnpb::{RegionMigration, RegionView};
use tonic::Status;

/// Answers GetRegion on the leader ("leader changed", retried by the caller, while its heartbeat
/// hub does not serve this term yet: the lease record would be empty).
pub async fn region_as_leader(node: &Node, region_id: u64) -> Result<RegionView, Status> {
    if !node.raft.is_leader() || !node.heartbeats.is_active() {
        return Err(errors::leader_changed());
    }
    node.read_barrier().await?;
    let table_id = table_id_of(region_id);
    let not_found = || Status::not_found(format!("region {region_id} not found"));
    let table = store::get::<TableInfo>(node, &layout().table(table_id))?.ok_or_else(not_found)?;
    let route = store::get::<TableRoute>(node, &layout().route(table_id))?.ok_or_else(not_found)?;
    let region = route.value.region(region_id).ok_or_else(not_found)?;
    let now = node.heartbeats.now();
    let holder = node.heartbeats.region_leases().holder(region_id, now);
    Ok(RegionView {
        region_id,
        table_id,
        region_number: region_number_of(region_id),
        table: Some(convert::table_name_to_proto(&table.value.name)),
        route: Some(convert::region_route_to_proto(region)),
        route_version: route.value.version,
        lease_holder: holder.map(|(n, _)| n),
        lease_remaining_ms: holder.map(|(_, over)| over.duration_since(now).as_millis() as u64),
        migration: migration_of(node, region_id)?,
    })
}

/// The running migration of `region_id`, from the stored procedure records.
fn migration_of(node: &Node, region_id: u64) -> Result<Option<RegionMigration>, Status> {
    let found = running_migration(node, region_id)?;
    Ok(found.and_then(|(record, m)| {
        let one = m.moves.iter().find(|m| m.region_id == region_id)?;
        Some(RegionMigration {
            procedure_id: record.id,
            from_node: one.from,
            to_node: one.to,
            step: record.step.clone(),
            reason: m.reason.clone(),
            started_ms: record.created_ms,
        })
    }))
}

/// The record of the running migration moving `region_id`, and its data (the region's lock
/// lets one run at a time).
pub fn running_migration(
    node: &Node,
    region_id: u64,
) -> Result<Option<(ProcedureRecord, MigrateRegion)>, Status> {
    let mut found = None;
    store::scan_all(node, &layout().procedures_prefix(), |kv| {
        let Ok(record) = codec::decode::<ProcedureRecord>(&kv.key, &kv.value) else {
            return Ok(());
        };
        if record.state != ProcedureState::Running || record.kind != migrate_region::KIND {
            return Ok(());
        }
        let Ok(m) = record.data.decode::<MigrateRegion>() else {
            return Ok(());
        };
        if m.moves.iter().any(|m| m.region_id == region_id) {
            found = Some((record, m));
        }
        Ok(())
    })?;
    Ok(found)
}
