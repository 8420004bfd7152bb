//! `cairn ctl kv`: put, get, del and watch over the etcd KV and Watch services.

use cairn_client::keys::{prefix_range, RANGE_END_UNBOUNDED};
use cairn_client::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_client::proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, WatchCreateRequest,
};
use cairn_client::proto::mvccpb::event::EventType;
use cairn_client::proto::mvccpb::Event;
use cairn_client::EtcdClient;
use clap::{Subcommand, ValueEnum};
use serde::Serialize;

use super::output::{
    self, display_bytes, header_revision, key_value_table, print_json, print_json_line, HeaderJson,
    KeyValueJson, OutputFormat,
};
use super::CtlError;

/// `cairn ctl kv` verbs.
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Write a value.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Attach the key to this lease (decimal, or hex with 0x).
        #[arg(long, value_parser = output::parse_lease_id)]
        lease: Option<i64>,
        /// Also print the previous key-value.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Read one key or a range.
    Get {
        /// The key, or the prefix with --prefix, or the start with --from-key.
        key: String,
        #[command(flatten)]
        range: RangeFlags,
        /// Return at most N keys (0: no limit).
        #[arg(long, default_value_t = 0)]
        limit: i64,
        /// Read at this revision (0: latest).
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Return keys and metadata, not values.
        #[arg(long)]
        keys_only: bool,
        /// Return only the number of keys.
        #[arg(long)]
        count_only: bool,
        /// Serve the read from the answering node's state, without confirming leadership.
        #[arg(long)]
        serializable: bool,
        /// Sort by this field (ascending unless --order says otherwise).
        #[arg(long, value_enum)]
        sort_by: Option<SortBy>,
        /// Sort order (by key unless --sort-by says otherwise).
        #[arg(long, value_enum)]
        order: Option<Order>,
    },
    /// Delete one key or a range.
    Del {
        /// The key, or the prefix with --prefix, or the start with --from-key.
        key: String,
        #[command(flatten)]
        range: RangeFlags,
        /// Also print the deleted key-values.
        #[arg(long)]
        prev_kv: bool,
    },
    /// Print changes to a key or prefix until Ctrl-C (or --max-events).
    Watch {
        /// The key, or the prefix with --prefix.
        key: String,
        /// Watch every key with this prefix.
        #[arg(long)]
        prefix: bool,
        /// Start from this revision (0: from now); older events are replayed.
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Include the previous key-value in each event.
        #[arg(long)]
        prev_kv: bool,
        /// Stop after this many events.
        #[arg(long)]
        max_events: Option<u64>,
    },
}

/// How KEY selects keys.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct RangeFlags {
    /// Every key with KEY as prefix.
    #[arg(long, conflicts_with = "from_key")]
    prefix: bool,
    /// Every key >= KEY.
    #[arg(long)]
    from_key: bool,
}

/// `--sort-by` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortBy {
    /// The key.
    Key,
    /// The create revision.
    Create,
    /// The modification revision.
    Modify,
    /// The version.
    Version,
    /// The value.
    Value,
}

/// `--order` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Order {
    /// Smallest first.
    Ascend,
    /// Largest first.
    Descend,
}

/// `(key, range_end)` for KEY and the range flags, as etcdctl computes them.
fn key_range(key: &str, flags: RangeFlags) -> (Vec<u8>, Vec<u8>) {
    let key = key.as_bytes();
    if flags.prefix {
        prefix_range(key)
    } else if flags.from_key {
        let start = if key.is_empty() {
            RANGE_END_UNBOUNDED
        } else {
            key
        };
        (start.to_vec(), RANGE_END_UNBOUNDED.to_vec())
    } else {
        (key.to_vec(), Vec::new())
    }
}

/// The request's sort fields: with only an order, sort by key; with only a target, ascend.
fn sort_fields(sort_by: Option<SortBy>, order: Option<Order>) -> (SortTarget, SortOrder) {
    let target = match sort_by.unwrap_or(SortBy::Key) {
        SortBy::Key => SortTarget::Key,
        SortBy::Create => SortTarget::Create,
        SortBy::Modify => SortTarget::Mod,
        SortBy::Version => SortTarget::Version,
        SortBy::Value => SortTarget::Value,
    };
    let order = match (sort_by, order) {
        (_, Some(Order::Ascend)) => SortOrder::Ascend,
        (_, Some(Order::Descend)) => SortOrder::Descend,
        (Some(_), None) => SortOrder::Ascend,
        (None, None) => SortOrder::None,
    };
    (target, order)
}

pub async fn run(
    client: &EtcdClient,
    out: OutputFormat,
    command: KvCommand,
) -> Result<(), CtlError> {
    match command {
        KvCommand::Put {
            key,
            value,
            lease,
            prev_kv,
        } => put(client, out, key, value, lease.unwrap_or(0), prev_kv).await,
        KvCommand::Get {
            key,
            range,
            limit,
            rev,
            keys_only,
            count_only,
            serializable,
            sort_by,
            order,
        } => {
            if limit < 0 {
                return Err(CtlError::Usage("--limit must be >= 0".to_string()));
            }
            let (key_bytes, range_end) = key_range(&key, range);
            let (target, order) = sort_fields(sort_by, order);
            let request = RangeRequest {
                key: key_bytes,
                range_end,
                limit,
                revision: rev,
                sort_order: order as i32,
                sort_target: target as i32,
                serializable,
                keys_only,
                count_only,
                ..Default::default()
            };
            get(client, out, &key, request).await
        }
        KvCommand::Del {
            key,
            range,
            prev_kv,
        } => {
            let (key_bytes, range_end) = key_range(&key, range);
            let request = DeleteRangeRequest {
                key: key_bytes,
                range_end,
                prev_kv,
            };
            del(client, out, &key, request).await
        }
        KvCommand::Watch {
            key,
            prefix,
            rev,
            prev_kv,
            max_events,
        } => {
            let (key_bytes, range_end) = key_range(
                &key,
                RangeFlags {
                    prefix,
                    from_key: false,
                },
            );
            let request = WatchCreateRequest {
                key: key_bytes,
                range_end,
                start_revision: rev,
                prev_kv,
                ..Default::default()
            };
            watch(client, out, &key, request, max_events).await
        }
    }
}

#[derive(Serialize)]
struct PutJson {
    header: HeaderJson,
    prev_kv: Option<KeyValueJson>,
}

async fn put(
    client: &EtcdClient,
    out: OutputFormat,
    key: String,
    value: String,
    lease: i64,
    prev_kv: bool,
) -> Result<(), CtlError> {
    let what = format!("kv put {key:?}");
    let request = PutRequest {
        key: key.into_bytes(),
        value: value.into_bytes(),
        lease,
        prev_kv,
        ..Default::default()
    };
    let response = client
        .put_request(request)
        .await
        .map_err(CtlError::call(what))?;
    match out {
        OutputFormat::Json => print_json(&PutJson {
            header: HeaderJson::new(response.header.as_ref()),
            prev_kv: response.prev_kv.as_ref().map(KeyValueJson::new),
        }),
        OutputFormat::Table => {
            println!(
                "OK (revision {})",
                header_revision(response.header.as_ref())
            );
            if prev_kv {
                match &response.prev_kv {
                    Some(prev) => println!(
                        "previous:\n{}",
                        key_value_table(std::slice::from_ref(prev), true)
                    ),
                    None => println!("previous: none (the key was new)"),
                }
            }
            Ok(())
        }
    }
}

#[derive(Serialize)]
struct GetJson {
    header: HeaderJson,
    kvs: Vec<KeyValueJson>,
    count: i64,
    more: bool,
}

async fn get(
    client: &EtcdClient,
    out: OutputFormat,
    key: &str,
    request: RangeRequest,
) -> Result<(), CtlError> {
    let count_only = request.count_only;
    let keys_only = request.keys_only;
    let response = client
        .range(request)
        .await
        .map_err(CtlError::call(format!("kv get {key:?}")))?;
    let revision = header_revision(response.header.as_ref());
    match out {
        OutputFormat::Json => print_json(&GetJson {
            header: HeaderJson::new(response.header.as_ref()),
            kvs: response.kvs.iter().map(KeyValueJson::new).collect(),
            count: response.count,
            more: response.more,
        }),
        OutputFormat::Table => {
            if count_only {
                println!("{} keys (revision {revision})", response.count);
                return Ok(());
            }
            if response.kvs.is_empty() {
                println!("no keys found (revision {revision})");
                return Ok(());
            }
            println!("{}", key_value_table(&response.kvs, !keys_only));
            let shown = response.kvs.len();
            print!("{shown} of {} keys (revision {revision})", response.count);
            if response.more {
                print!("; more keys match, raise --limit to see them");
            }
            println!();
            Ok(())
        }
    }
}

#[derive(Serialize)]
struct DelJson {
    header: HeaderJson,
    deleted: i64,
    prev_kvs: Vec<KeyValueJson>,
}

async fn del(
    client: &EtcdClient,
    out: OutputFormat,
    key: &str,
    request: DeleteRangeRequest,
) -> Result<(), CtlError> {
    let prev_kv = request.prev_kv;
    let response = client
        .delete_range(request)
        .await
        .map_err(CtlError::call(format!("kv del {key:?}")))?;
    match out {
        OutputFormat::Json => print_json(&DelJson {
            header: HeaderJson::new(response.header.as_ref()),
            deleted: response.deleted,
            prev_kvs: response.prev_kvs.iter().map(KeyValueJson::new).collect(),
        }),
        OutputFormat::Table => {
            println!(
                "deleted {} keys (revision {})",
                response.deleted,
                header_revision(response.header.as_ref())
            );
            if prev_kv && !response.prev_kvs.is_empty() {
                println!("{}", key_value_table(&response.prev_kvs, true));
            }
            Ok(())
        }
    }
}

#[derive(Serialize)]
struct EventJson {
    r#type: &'static str,
    revision: i64,
    kv: Option<KeyValueJson>,
    prev_kv: Option<KeyValueJson>,
}

fn event_type_name(event: &Event) -> &'static str {
    match EventType::try_from(event.r#type) {
        Ok(EventType::Put) => "put",
        Ok(EventType::Delete) => "delete",
        Err(_) => "unknown",
    }
}

fn print_event(out: OutputFormat, event: &Event) -> Result<(), CtlError> {
    let kind = event_type_name(event);
    let revision = event.kv.as_ref().map_or(0, |kv| kv.mod_revision);
    match out {
        OutputFormat::Json => print_json_line(&EventJson {
            r#type: kind,
            revision,
            kv: event.kv.as_ref().map(KeyValueJson::new),
            prev_kv: event.prev_kv.as_ref().map(KeyValueJson::new),
        }),
        OutputFormat::Table => {
            let kv = event.kv.clone().unwrap_or_default();
            let mut line = format!(
                "{} rev={revision} {}",
                kind.to_uppercase(),
                display_bytes(&kv.key)
            );
            if kind == "put" {
                line.push_str(&format!(" = {}", display_bytes(&kv.value)));
            }
            if let Some(prev) = &event.prev_kv {
                line.push_str(&format!(" (previous: {})", display_bytes(&prev.value)));
            }
            println!("{line}");
            Ok(())
        }
    }
}

async fn watch(
    client: &EtcdClient,
    out: OutputFormat,
    key: &str,
    request: WatchCreateRequest,
    max_events: Option<u64>,
) -> Result<(), CtlError> {
    let what = format!("kv watch {key:?}");
    let mut stream = client
        .watch_stream(request)
        .await
        .map_err(CtlError::call(what.clone()))?;
    if out == OutputFormat::Table {
        eprintln!(
            "watching {key:?} on {} from revision {}; Ctrl-C stops",
            stream.endpoint(),
            header_revision(stream.created().header.as_ref())
        );
    }
    let limit = max_events.unwrap_or(u64::MAX);
    let mut seen: u64 = 0;
    if limit == 0 {
        return Ok(());
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let response = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            next = stream.next() => next.map_err(CtlError::call(what.clone()))?,
        };
        for event in &response.events {
            print_event(out, event)?;
            seen += 1;
            if seen >= limit {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: RangeFlags = RangeFlags {
        prefix: false,
        from_key: false,
    };

    #[test]
    fn key_range_follows_etcdctl() {
        assert_eq!(key_range("a", NONE), (b"a".to_vec(), vec![]));
        let prefix = RangeFlags {
            prefix: true,
            ..NONE
        };
        assert_eq!(key_range("a", prefix), (b"a".to_vec(), b"b".to_vec()));
        assert_eq!(key_range("", prefix), (b"\0".to_vec(), b"\0".to_vec()));
        let from = RangeFlags {
            from_key: true,
            ..NONE
        };
        assert_eq!(key_range("a", from), (b"a".to_vec(), b"\0".to_vec()));
        assert_eq!(key_range("", from), (b"\0".to_vec(), b"\0".to_vec()));
    }

    #[test]
    fn sort_defaults_follow_etcdctl() {
        assert_eq!(sort_fields(None, None), (SortTarget::Key, SortOrder::None));
        assert_eq!(
            sort_fields(Some(SortBy::Modify), None),
            (SortTarget::Mod, SortOrder::Ascend)
        );
        assert_eq!(
            sort_fields(None, Some(Order::Descend)),
            (SortTarget::Key, SortOrder::Descend)
        );
    }
}
