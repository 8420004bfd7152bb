//! Output helpers shared by every `cairn ctl` resource: the `--output` switch, the JSON shapes of
//! etcd's common records, byte strings as text or hex, and tables.
//!
//! The JSON structs here are part of the documented, stable output (see the module docs of
//! `ctl`); rename nothing without updating them.

use cairn_client::proto::etcdserverpb::{Member, ResponseHeader};
use cairn_client::proto::mvccpb::KeyValue;
use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;

use super::CtlError;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Human-readable tables and lines.
    Table,
    /// One JSON document per command (one JSON object per line for streams such as watch).
    Json,
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: Serialize>(value: &T) -> Result<(), CtlError> {
    let text = serde_json::to_string_pretty(value).map_err(CtlError::Json)?;
    println!("{text}");
    Ok(())
}

/// Prints `value` as one line of compact JSON (for streams: JSON Lines).
pub fn print_json_line<T: Serialize>(value: &T) -> Result<(), CtlError> {
    let text = serde_json::to_string(value).map_err(CtlError::Json)?;
    println!("{text}");
    Ok(())
}

/// A table with Cairn's look: ASCII borders (safe in any terminal and in logs), wrapped to the
/// terminal width when there is one.
pub fn new_table<I, S>(headers: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut table = Table::new();
    table
        .load_preset(presets::ASCII_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(headers);
    table
}

/// Lowercase hex of `bytes`, no prefix.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// A byte string for a table cell: the text when it is UTF-8, otherwise `0x` and its hex.
pub fn display_bytes(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_string(),
        Err(_) => format!("0x{}", hex(bytes)),
    }
}

/// A byte string for JSON: exactly one of the pair is set. `text` when the bytes are UTF-8,
/// else `hex` (lowercase, no prefix). Serialised as `<name>` or `<name>_hex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonBytes {
    /// The bytes as a string, when they are valid UTF-8.
    pub text: Option<String>,
    /// The bytes in hex, when they are not.
    pub hex: Option<String>,
}

impl JsonBytes {
    /// Classifies `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => JsonBytes {
                text: Some(text.to_string()),
                hex: None,
            },
            Err(_) => JsonBytes {
                text: None,
                hex: Some(hex(bytes)),
            },
        }
    }
}

/// The header every etcd response carries.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderJson {
    /// Id of the cluster.
    pub cluster_id: u64,
    /// Id of the member that answered.
    pub member_id: u64,
    /// Store revision when the request was served.
    pub revision: i64,
    /// Raft term of the answering member.
    pub raft_term: u64,
}

impl HeaderJson {
    /// From an optional header (absent becomes all zeros).
    pub fn new(header: Option<&ResponseHeader>) -> Self {
        let h = header.cloned().unwrap_or_default();
        HeaderJson {
            cluster_id: h.cluster_id,
            member_id: h.member_id,
            revision: h.revision,
            raft_term: h.raft_term,
        }
    }
}

/// The revision in an optional header (0 when absent).
pub fn header_revision(header: Option<&ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision)
}

/// One key-value. `key`/`key_hex` and `value`/`value_hex`: see [`JsonBytes`].
#[derive(Debug, Clone, Serialize)]
pub struct KeyValueJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_hex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_hex: Option<String>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: i64,
}

impl KeyValueJson {
    /// From the wire record.
    pub fn new(kv: &KeyValue) -> Self {
        let key = JsonBytes::new(&kv.key);
        let value = JsonBytes::new(&kv.value);
        KeyValueJson {
            key: key.text,
            key_hex: key.hex,
            value: value.text,
            value_hex: value.hex,
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            lease: kv.lease,
        }
    }
}

/// A table of key-values; `with_values` false leaves the VALUE column out (for `--keys-only`).
pub fn key_value_table(kvs: &[KeyValue], with_values: bool) -> Table {
    let mut headers = vec!["KEY"];
    if with_values {
        headers.push("VALUE");
    }
    headers.extend(["CREATE REV", "MOD REV", "VERSION", "LEASE"]);
    let mut table = new_table(headers);
    for kv in kvs {
        let mut row = vec![display_bytes(&kv.key)];
        if with_values {
            row.push(display_bytes(&kv.value));
        }
        row.extend([
            kv.create_revision.to_string(),
            kv.mod_revision.to_string(),
            kv.version.to_string(),
            lease_cell(kv.lease),
        ]);
        table.add_row(row);
    }
    table
}

/// A lease id for a table: `-` for none.
pub fn lease_cell(lease: i64) -> String {
    if lease == 0 {
        "-".to_string()
    } else {
        lease.to_string()
    }
}

/// One cluster member.
#[derive(Debug, Clone, Serialize)]
pub struct MemberJson {
    /// Member (node) id.
    pub id: u64,
    /// Member name; empty when the member has not started yet.
    pub name: String,
    /// Raft peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs; empty when the member has not started yet.
    pub client_urls: Vec<String>,
    /// Whether the member is a non-voting learner.
    pub is_learner: bool,
}

impl MemberJson {
    /// From the wire record.
    pub fn new(member: &Member) -> Self {
        MemberJson {
            id: member.id,
            name: member.name.clone(),
            peer_urls: member.peer_ur_ls.clone(),
            client_urls: member.client_ur_ls.clone(),
            is_learner: member.is_learner,
        }
    }
}

/// A table of members.
pub fn member_table(members: &[Member]) -> Table {
    let mut table = new_table(["ID", "NAME", "PEER URLS", "CLIENT URLS", "IS LEARNER"]);
    for m in members {
        table.add_row(vec![
            m.id.to_string(),
            m.name.clone(),
            m.peer_ur_ls.join(", "),
            m.client_ur_ls.join(", "),
            m.is_learner.to_string(),
        ]);
    }
    table
}

/// A byte count for people: `512 B`, `1.5 KiB`, `20.0 MiB`.
pub fn human_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes.unsigned_abs() < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Parses an id given on the command line: decimal, or hex with a `0x` prefix (as etcdctl prints
/// member and lease ids).
pub fn parse_id(raw: &str) -> Result<u64, String> {
    let raw = raw.trim();
    let parsed = match raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => raw.parse::<u64>(),
    };
    parsed.map_err(|e| format!("{raw:?} is not an id (decimal, or hex with 0x): {e}"))
}

/// [`parse_id`] for etcd's signed lease ids.
pub fn parse_lease_id(raw: &str) -> Result<i64, String> {
    let id = parse_id(raw)?;
    i64::try_from(id).map_err(|_| format!("{raw:?} is too large for a lease id"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_bytes_stay_text_and_others_become_hex() {
        assert_eq!(display_bytes(b"a/b"), "a/b");
        assert_eq!(display_bytes(&[0xff, 0x00]), "0xff00");
        let j = JsonBytes::new(&[0xde, 0xad, 0xbe, 0xef]);
        assert_eq!(j.text, None);
        assert_eq!(j.hex.as_deref(), Some("deadbeef"));
    }

    #[test]
    fn key_value_json_uses_hex_suffix_only_for_binary() {
        let kv = KeyValue {
            key: b"k".to_vec(),
            value: vec![0xff],
            create_revision: 2,
            mod_revision: 3,
            version: 1,
            lease: 0,
        };
        let json = serde_json::to_value(KeyValueJson::new(&kv)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"key": "k", "value_hex": "ff", "create_revision": 2,
                "mod_revision": 3, "version": 1, "lease": 0})
        );
    }

    #[test]
    fn ids_parse_as_decimal_or_prefixed_hex() {
        assert_eq!(parse_id("42"), Ok(42));
        assert_eq!(parse_id("0x2a"), Ok(42));
        assert!(parse_id("2a").is_err());
        assert!(parse_lease_id("0xffffffffffffffff").is_err());
        assert_eq!(parse_lease_id("7"), Ok(7));
    }

    #[test]
    fn byte_counts_are_humanised() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(20 * 1024 * 1024), "20.0 MiB");
    }
}
