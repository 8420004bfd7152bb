//! `WatchMetadata`: typed metadata changes (database created/dropped, table created/altered/
//! dropped, route changed) from a revision on, built on the store's watch over the metadata
//! prefix. Resumable: a client that reconnects asks for its last revision + 1; if that history
//! was compacted it is told so (`compact_revision`) and must reload.

use crate::leader::node::Node;
use crate::replica::meta::store::layout;
use cairn_meta::{codec, MetaKey, TableInfo, TableRoute};
use cairn_proto::cairnpb::{
    MetadataEvent, MetadataEventKind, TableName as PbTableName, WatchMetadataResponse,
};
use cairn_proto::etcdserverpb::WatchResponse;
use cairn_proto::mvccpb::event::EventType;
use cairn_proto::mvccpb::Event;
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tonic::Status;

/// Metadata watch streams one node serves at once.
pub const METADATA_WATCH_STREAMS_MAX: usize = 10_000;
/// Responses buffered per metadata watch stream; a client that lets more pile up is slow and
/// the stream waits for it (the store-side watcher re-reads history if it falls behind).
pub const METADATA_WATCH_BUFFER_MAX: usize = 64;

pub type Out = Result<WatchMetadataResponse, Status>;

/// Starts a metadata watch from `start_revision` (0: from now); responses arrive on the
/// returned receiver.
pub fn start(
    node: Arc<Node>,
    start_revision: i64,
    permit: OwnedSemaphorePermit,
) -> mpsc::Receiver<Out> {
    let (etcd_tx, mut etcd_rx) =
        mpsc::channel::<Result<WatchResponse, Status>>(METADATA_WATCH_BUFFER_MAX);
    let (tx, rx) = mpsc::channel::<Out>(METADATA_WATCH_BUFFER_MAX);
    let prefix = format!("{}/", layout().root());
    let end = cairn_meta::keys::prefix_end(prefix.as_bytes());
    let watcher = crate::api::services::watch::spawn_range_watch(
        node,
        prefix.into_bytes(),
        end,
        start_revision,
        etcd_tx,
    );
    tokio::spawn(async move {
        let _permit = permit;
        loop {
            let msg = tokio::select! {
                m = etcd_rx.recv() => m,
                _ = tx.closed() => break,
            };
            let Some(msg) = msg else { break };
            let resp = match msg {
                Ok(r) => r,
                Err(s) => {
                    let _ = tx.send(Err(s)).await;
                    break;
                }
            };
            let revision = resp.header.as_ref().map_or(0, |h| h.revision);
            if resp.canceled {
                let _ = tx
                    .send(Ok(WatchMetadataResponse {
                        events: Vec::new(),
                        revision,
                        compact_revision: resp.compact_revision,
                    }))
                    .await;
                break;
            }
            let events: Vec<MetadataEvent> = resp.events.iter().filter_map(to_metadata).collect();
            if events.is_empty() {
                continue;
            }
            let out = WatchMetadataResponse {
                events,
                revision,
                compact_revision: 0,
            };
            if tx.send(Ok(out)).await.is_err() {
                break;
            }
        }
        watcher.abort();
    });
    rx
}

fn pb_name(n: &cairn_meta::TableName) -> PbTableName {
    PbTableName {
        catalog: n.catalog.clone(),
        schema: n.schema.clone(),
        name: n.name.clone(),
    }
}

/// The metadata event a store event stands for, if any.
pub fn to_metadata(e: &Event) -> Option<MetadataEvent> {
    let kv = e.kv.as_ref()?;
    let put = e.r#type == EventType::Put as i32;
    let created = put && kv.version == 1;
    let mut out = MetadataEvent {
        revision: kv.mod_revision,
        ..Default::default()
    };
    match layout().parse(&kv.key)? {
        MetaKey::Database { catalog, schema } => {
            if put && !created {
                return None;
            }
            out.kind = if put {
                MetadataEventKind::DatabaseCreated
            } else {
                MetadataEventKind::DatabaseDropped
            } as i32;
            out.name = Some(PbTableName {
                catalog,
                schema,
                name: String::new(),
            });
        }
        MetaKey::Table(id) => {
            out.table_id = id;
            let info = if put {
                codec::decode::<TableInfo>(&kv.key, &kv.value).ok()
            } else {
                e.prev_kv
                    .as_ref()
                    .and_then(|p| codec::decode::<TableInfo>(&p.key, &p.value).ok())
            };
            if let Some(info) = info {
                out.name = Some(pb_name(&info.name));
                out.version = info.version;
            }
            out.kind = match (put, created) {
                (true, true) => MetadataEventKind::TableCreated,
                (true, false) => MetadataEventKind::TableAltered,
                (false, _) => MetadataEventKind::TableDropped,
            } as i32;
        }
        MetaKey::Route(id) => {
            if !put {
                // The table's drop event says it all.
                return None;
            }
            out.table_id = id;
            out.kind = MetadataEventKind::RouteChanged as i32;
            out.version = codec::decode::<TableRoute>(&kv.key, &kv.value)
                .map(|r| r.version)
                .unwrap_or(0);
        }
        _ => return None,
    }
    Some(out)
}
