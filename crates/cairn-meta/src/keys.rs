//! Where metadata lives in the key-value store. Every key is under `/cairn/<cluster>`:
//!
//! ```text
//! /cairn/default/database/<catalog>/<schema>             DatabaseInfo (JSON)
//! /cairn/default/table_name/<catalog>/<schema>/<table>   table id (decimal text)
//! /cairn/default/table/<id, 20 digits>                   TableInfo (JSON)
//! /cairn/default/route/<id, 20 digits>                   TableRoute (JSON)
//! /cairn/default/procedure/<id, 20 digits>               ProcedureRecord (JSON)
//! /cairn/default/sequence/<name>                         next id (decimal text)
//! ```
//!
//! Ids are zero-padded so a prefix scan returns them in numeric order. Names are validated to
//! the name set, which has no '/', so a key splits back into its parts unambiguously.

use crate::names::validate_name;
use crate::table::TableName;

/// Digits of a zero-padded id: enough for any u64.
const ID_DIGITS: usize = 20;

/// The key layout of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLayout {
    root: String,
}

/// What a metadata key refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaKey {
    Database { catalog: String, schema: String },
    TableName(TableName),
    Table(u64),
    Route(u64),
    Procedure(u64),
    Sequence(String),
}

impl KeyLayout {
    /// The layout under `/cairn/<cluster>`.
    ///
    /// Panics if `cluster` is empty or contains '/': keys would then be ambiguous, and the
    /// cluster name is configuration, checked before the server starts.
    pub fn new(cluster: &str) -> Self {
        assert!(
            !cluster.is_empty() && !cluster.contains('/'),
            "cluster name {cluster:?} must be non-empty and free of '/'"
        );
        KeyLayout {
            root: format!("/cairn/{cluster}"),
        }
    }

    /// `/cairn/<cluster>`, with no trailing '/'.
    pub fn root(&self) -> &str {
        &self.root
    }

    pub fn database(&self, catalog: &str, schema: &str) -> String {
        format!("{}/database/{catalog}/{schema}", self.root)
    }

    pub fn databases_prefix(&self, catalog: &str) -> String {
        format!("{}/database/{catalog}/", self.root)
    }

    /// The name → id index of a table; the name is normalized (empty catalog = default).
    pub fn table_name(&self, name: &TableName) -> String {
        let n = name.normalized();
        format!(
            "{}/table_name/{}/{}/{}",
            self.root, n.catalog, n.schema, n.name
        )
    }

    pub fn table_names_prefix(&self, catalog: &str, schema: &str) -> String {
        format!("{}/table_name/{catalog}/{schema}/", self.root)
    }

    pub fn table(&self, id: u64) -> String {
        format!("{}/table/{id:0ID_DIGITS$}", self.root)
    }

    pub fn tables_prefix(&self) -> String {
        format!("{}/table/", self.root)
    }

    pub fn route(&self, id: u64) -> String {
        format!("{}/route/{id:0ID_DIGITS$}", self.root)
    }

    pub fn routes_prefix(&self) -> String {
        format!("{}/route/", self.root)
    }

    pub fn table_id_sequence(&self) -> String {
        format!("{}/sequence/table_id", self.root)
    }

    pub fn procedure_id_sequence(&self) -> String {
        format!("{}/sequence/procedure_id", self.root)
    }

    pub fn procedure(&self, id: u64) -> String {
        format!("{}/procedure/{id:0ID_DIGITS$}", self.root)
    }

    pub fn procedures_prefix(&self) -> String {
        format!("{}/procedure/", self.root)
    }

    /// One entry of the event log ([`crate::Event`]).
    pub fn event(&self, id: u64) -> String {
        format!("{}/event/{id:0ID_DIGITS$}", self.root)
    }

    pub fn events_prefix(&self) -> String {
        format!("{}/event/", self.root)
    }

    pub fn event_id_sequence(&self) -> String {
        format!("{}/sequence/event_id", self.root)
    }

    /// A datanode being drained ([`crate::Drain`]).
    pub fn drain(&self, node_id: u64) -> String {
        format!("{}/drain/{node_id:0ID_DIGITS$}", self.root)
    }

    pub fn drains_prefix(&self) -> String {
        format!("{}/drain/", self.root)
    }

    /// An operator's setting of one scheduler ([`crate::SchedulerSetting`]).
    pub fn scheduler(&self, name: &str) -> String {
        format!("{}/scheduler/{name}", self.root)
    }

    pub fn schedulers_prefix(&self) -> String {
        format!("{}/scheduler/", self.root)
    }

    /// What a new leader's schedulers start from (recent moves, region loads).
    pub fn scheduling_state(&self) -> String {
        format!("{}/scheduling/state", self.root)
    }

    /// Whether the cluster is in maintenance mode ([`crate::Maintenance`]).
    pub fn maintenance(&self) -> String {
        format!("{}/maintenance", self.root)
    }

    /// What `key` refers to, or `None` for keys this layout does not write (other clusters,
    /// user keys, malformed names or ids).
    pub fn parse(&self, key: &[u8]) -> Option<MetaKey> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(self.root.as_str())?.strip_prefix('/')?;
        let (kind, rest) = rest.split_once('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let name = |s: &str| validate_name("", s).is_ok().then(|| s.to_string());
        match (kind, parts.as_slice()) {
            ("database", [catalog, schema]) => Some(MetaKey::Database {
                catalog: name(catalog)?,
                schema: name(schema)?,
            }),
            ("table_name", [catalog, schema, table]) => Some(MetaKey::TableName(TableName::new(
                name(catalog)?,
                name(schema)?,
                name(table)?,
            ))),
            ("table", [id]) => parse_id(id).map(MetaKey::Table),
            ("route", [id]) => parse_id(id).map(MetaKey::Route),
            ("procedure", [id]) => parse_id(id).map(MetaKey::Procedure),
            ("sequence", [seq]) => name(seq).map(MetaKey::Sequence),
            _ => None,
        }
    }
}

fn parse_id(s: &str) -> Option<u64> {
    if s.len() != ID_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The etcd `range_end` that, with `key = prefix`, selects every key starting with `prefix`:
/// the prefix with its last byte below 0xff incremented and what follows dropped. A prefix of
/// only 0xff bytes (or none) has no such key, and etcd's "\0" (to the end of the keyspace) is
/// returned.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|b| *b != 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_documented_keys() {
        let k = KeyLayout::new("default");
        let name = TableName::new("", "public", "cpu");
        assert_eq!(k.root(), "/cairn/default");
        assert_eq!(
            k.database("default", "public"),
            "/cairn/default/database/default/public"
        );
        assert_eq!(
            k.databases_prefix("default"),
            "/cairn/default/database/default/"
        );
        assert_eq!(
            k.table_name(&name),
            "/cairn/default/table_name/default/public/cpu"
        );
        assert_eq!(
            k.table_names_prefix("default", "public"),
            "/cairn/default/table_name/default/public/"
        );
        assert_eq!(k.table(42), "/cairn/default/table/00000000000000000042");
        assert_eq!(k.tables_prefix(), "/cairn/default/table/");
        assert_eq!(
            k.route(u64::MAX),
            "/cairn/default/route/18446744073709551615"
        );
        assert_eq!(k.routes_prefix(), "/cairn/default/route/");
        assert_eq!(k.table_id_sequence(), "/cairn/default/sequence/table_id");
        assert_eq!(
            k.procedure_id_sequence(),
            "/cairn/default/sequence/procedure_id"
        );
        assert_eq!(
            k.procedure(7),
            "/cairn/default/procedure/00000000000000000007"
        );
        assert_eq!(k.procedures_prefix(), "/cairn/default/procedure/");
    }

    #[test]
    fn padded_ids_sort_numerically() {
        let k = KeyLayout::new("default");
        assert!(k.table(9) < k.table(10));
        assert!(k.route(99_999) < k.route(100_000));
    }

    #[test]
    fn every_key_parses_back() {
        let k = KeyLayout::new("c1");
        let name = TableName::new("default", "public", "cpu-2");
        let cases = [
            (
                k.database("default", "public"),
                MetaKey::Database {
                    catalog: "default".into(),
                    schema: "public".into(),
                },
            ),
            (k.table_name(&name), MetaKey::TableName(name.clone())),
            (k.table(0), MetaKey::Table(0)),
            (k.table(u64::MAX), MetaKey::Table(u64::MAX)),
            (k.route(12), MetaKey::Route(12)),
            (k.procedure(3), MetaKey::Procedure(3)),
            (k.table_id_sequence(), MetaKey::Sequence("table_id".into())),
            (
                k.procedure_id_sequence(),
                MetaKey::Sequence("procedure_id".into()),
            ),
        ];
        for (key, want) in cases {
            assert_eq!(k.parse(key.as_bytes()), Some(want), "{key}");
        }
    }

    #[test]
    fn foreign_and_malformed_keys_do_not_parse() {
        let k = KeyLayout::new("default");
        let other = KeyLayout::new("other");
        for key in [
            other.table(1),
            "/cairn/defaultx/table/00000000000000000001".to_string(),
            "/cairn/default/table/1".to_string(),
            "/cairn/default/table/0000000000000000000x".to_string(),
            "/cairn/default/table/".to_string(),
            "/cairn/default/table_name/default/public".to_string(),
            "/cairn/default/table_name/default/public/cpu/x".to_string(),
            "/cairn/default/database/default/1bad".to_string(),
            "/cairn/default/unknown/x".to_string(),
            "/cairn/default".to_string(),
            "user/key".to_string(),
        ] {
            assert_eq!(k.parse(key.as_bytes()), None, "{key}");
        }
        assert_eq!(k.parse(&[0xff, 0xfe]), None);
    }

    #[test]
    fn prefix_end_follows_etcd() {
        assert_eq!(
            prefix_end(b"/cairn/default/table/"),
            b"/cairn/default/table0".to_vec()
        );
        assert_eq!(prefix_end(b"a\xff\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    #[should_panic(expected = "free of '/'")]
    fn cluster_with_slash_is_refused() {
        KeyLayout::new("a/b");
    }
}
