//! Range reads as etcd answers them: key ranges, historical revisions, `limit`/`more`/`count`,
//! revision filters, sorting, `keys_only` and `count_only`.
//!
//! etcd's order of work is kept on purpose, quirks included: `count` is the number of keys in the
//! range before the revision filters and the limit; with `sort_order` NONE the limit is applied
//! while scanning (so a non-KEY target then sorts only the first `limit + 1` keys); filters and
//! real sorts see the whole range.

use std::cmp::Ordering;

use cairn_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use cairn_proto::etcdserverpb::{RangeRequest, RangeResponse};
use cairn_proto::mvccpb::KeyValue;

use super::keyspace::{KeyRange, Version};
use super::{KvError, KvState};

impl KvState {
    /// Reads a key range at the current revision or at `req.revision`. The header is left
    /// `None` for the server to fill.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        let at = self.read_revision(req.revision)?;
        self.range_at(req, at)
    }

    /// Up to `limit` live keys of `[key, range_end)` at the current revision, in key order, with
    /// their values unless `keys_only`. Unlike [`KvState::range`], which counts every key of the
    /// range as etcd's `count` must, it stops at the limit: a reader paging through a large
    /// prefix pays for each page, not for all the keys after it.
    pub fn scan_page(
        &self,
        key: &[u8],
        range_end: &[u8],
        limit: usize,
        keys_only: bool,
    ) -> Vec<KeyValue> {
        let at = self.revision;
        KeyRange::new(key, range_end)
            .iter(&self.keys)
            .filter_map(|(key, history)| Some(history.visible_at(at)?.to_kv(key, !keys_only)))
            .take(limit)
            .collect()
    }

    /// The mod revision of `key`'s current value, without copying it; None when it has none.
    /// A cheap check of whether something derived from the value is still current.
    pub fn mod_revision(&self, key: &[u8]) -> Option<i64> {
        Some(self.keys.get(key)?.latest_live()?.mod_revision)
    }

    /// The revision a read asking for `requested` sees: the current one for `requested <= 0`.
    pub(super) fn read_revision(&self, requested: i64) -> Result<i64, KvError> {
        if requested <= 0 {
            return Ok(self.revision);
        }
        if requested > self.revision {
            return Err(KvError::FutureRevision);
        }
        if requested < self.compact_revision {
            return Err(KvError::Compacted);
        }
        Ok(requested)
    }

    /// Reads `req` as of revision `at`, already checked against compaction and the future.
    pub(super) fn range_at(&self, req: &RangeRequest, at: i64) -> Result<RangeResponse, KvError> {
        let (requested_order, target) = sort_options(req)?;
        let order = match (requested_order, target) {
            (SortOrder::None, t) if t != SortTarget::Key => SortOrder::Ascend,
            (SortOrder::Ascend, SortTarget::Key) => SortOrder::None,
            (order, _) => order,
        };
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // One extra key tells whether there is `more`; etcd decides this on the requested order.
        let default_order = requested_order == SortOrder::None
            || (requested_order == SortOrder::Ascend && target == SortTarget::Key);
        let fetch_max = if default_order && !filtered && req.limit > 0 {
            usize::try_from(req.limit)
                .unwrap_or(usize::MAX)
                .saturating_add(1)
        } else {
            usize::MAX
        };
        // The versions first; only those returned become key-values (a value held packed is
        // unpacked once, and only if it is sent).
        let mut hits: Vec<Hit<'_>> = Vec::new();
        let mut count: i64 = 0;
        for (key, history) in KeyRange::new(&req.key, &req.range_end).iter(&self.keys) {
            let Some(version) = history.visible_at(at) else {
                continue;
            };
            count += 1;
            if !req.count_only && hits.len() < fetch_max {
                hits.push((key, version));
            }
        }

        if filtered {
            hits.retain(|(_, v)| passes_revision_filters(req, v));
        }
        sort_hits(&mut hits, order, target);
        let mut more = false;
        if let Ok(limit) = usize::try_from(req.limit) {
            if limit > 0 && hits.len() > limit {
                hits.truncate(limit);
                more = true;
            }
        }
        let kvs = hits
            .into_iter()
            .map(|(key, version)| version.to_kv(key, !req.keys_only))
            .collect();
        Ok(RangeResponse {
            header: None,
            kvs,
            more,
            count,
        })
    }
}

/// The sort order and target of `req`, refusing numbers the enums do not define.
pub(super) fn sort_options(req: &RangeRequest) -> Result<(SortOrder, SortTarget), KvError> {
    let order = SortOrder::try_from(req.sort_order).map_err(|_| KvError::InvalidSortOption)?;
    let target = SortTarget::try_from(req.sort_target).map_err(|_| KvError::InvalidSortOption)?;
    Ok((order, target))
}

fn passes_revision_filters(req: &RangeRequest, v: &Version) -> bool {
    !(req.max_mod_revision != 0 && v.mod_revision > req.max_mod_revision
        || req.min_mod_revision != 0 && v.mod_revision < req.min_mod_revision
        || req.max_create_revision != 0 && v.create_revision > req.max_create_revision
        || req.min_create_revision != 0 && v.create_revision < req.min_create_revision)
}

/// A key and the version of it a range sees.
type Hit<'a> = (&'a [u8], &'a Version);

/// Sorts a key-ordered list of hits; the sort is stable, so ties stay in key order.
fn sort_hits<'a>(hits: &mut [Hit<'a>], order: SortOrder, target: SortTarget) {
    let ascending: fn(&Hit<'a>, &Hit<'a>) -> Ordering = match target {
        SortTarget::Key => |a, b| a.0.cmp(b.0),
        SortTarget::Version => |a, b| a.1.version.cmp(&b.1.version),
        SortTarget::Create => |a, b| a.1.create_revision.cmp(&b.1.create_revision),
        SortTarget::Mod => |a, b| a.1.mod_revision.cmp(&b.1.mod_revision),
        SortTarget::Value => {
            // Compared as written: each value unpacked once, not once per comparison.
            let as_written = |h: &Hit<'a>| h.1.value.as_ref().map(|v| v.to_vec());
            match order {
                SortOrder::Ascend => hits.sort_by_cached_key(as_written),
                SortOrder::Descend => hits.sort_by_cached_key(|h| std::cmp::Reverse(as_written(h))),
                SortOrder::None => {}
            }
            return;
        }
    };
    match (order, target) {
        (SortOrder::None, _) => {}
        // The scan yields ascending keys already.
        (SortOrder::Ascend, SortTarget::Key) => {}
        (SortOrder::Descend, SortTarget::Key) => hits.reverse(),
        (SortOrder::Ascend, _) => hits.sort_by(ascending),
        (SortOrder::Descend, _) => hits.sort_by(|a, b| ascending(b, a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::test_util::*;

    fn abc() -> KvState {
        let mut s = KvState::new();
        put(&mut s, b"a", b"3"); // rev 2
        put(&mut s, b"b", b"1"); // rev 3
        put(&mut s, b"c", b"2"); // rev 4
        put(&mut s, b"b", b"4"); // rev 5, b version 2
        put(&mut s, b"d", b"0"); // rev 6
        s
    }

    #[test]
    fn put_get_versions_and_revisions() {
        let mut s = KvState::new();
        assert_eq!(s.revision(), 1);
        assert!(get(&s, b"k").is_none());
        let a = put(&mut s, b"k", b"v1");
        assert_eq!(a.revision, 2);
        put(&mut s, b"other", b"x");
        put(&mut s, b"k", b"v2");
        let kv = get(&s, b"k").unwrap();
        assert_eq!(
            (
                kv.value.as_slice(),
                kv.create_revision,
                kv.mod_revision,
                kv.version
            ),
            (&b"v2"[..], 2, 4, 2)
        );
        delete(&mut s, b"k", b"");
        assert!(get(&s, b"k").is_none());
        put(&mut s, b"k", b"v3");
        let kv = get(&s, b"k").unwrap();
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (6, 6, 1));
        assert_eq!(s.key_count(), 2);
    }

    #[test]
    fn historical_reads_see_the_past() {
        let mut s = KvState::new();
        put(&mut s, b"k", b"v1"); // 2
        put(&mut s, b"k", b"v2"); // 3
        delete(&mut s, b"k", b""); // 4
        put(&mut s, b"k", b"v3"); // 5
        assert!(get_at(&s, b"k", 1).is_none());
        assert_eq!(get_at(&s, b"k", 2).unwrap().value, b"v1");
        assert_eq!(get_at(&s, b"k", 3).unwrap().version, 2);
        assert!(get_at(&s, b"k", 4).is_none());
        assert_eq!(get_at(&s, b"k", 5).unwrap().value, b"v3");
        let future = RangeRequest {
            revision: 6,
            ..range_req(b"k", b"")
        };
        assert_eq!(s.range(&future), Err(KvError::FutureRevision));
    }

    #[test]
    fn range_end_forms() {
        let s = abc();
        let keys = |k: &[u8], e: &[u8]| keys_of(&s.range(&range_req(k, e)).unwrap().kvs);
        assert_eq!(keys(b"b", b""), vec![b"b".to_vec()]);
        assert_eq!(
            keys(b"b", b"\0"),
            vec![b"b".to_vec(), b"c".to_vec(), b"d".to_vec()]
        );
        assert_eq!(keys(b"\0", b"\0").len(), 4);
        assert_eq!(keys(b"b", b"d"), vec![b"b".to_vec(), b"c".to_vec()]);
        assert!(keys(b"d", b"b").is_empty());
        assert!(keys(b"zz", b"").is_empty());
    }

    #[test]
    fn prefix_range() {
        let mut s = KvState::new();
        for k in [&b"/a"[..], b"/a/1", b"/a/2", b"/ab", b"/b"] {
            put(&mut s, k, b"v");
        }
        // The prefix "/a/" ends before "/a0".
        let r = s.range(&range_req(b"/a/", b"/a0")).unwrap();
        assert_eq!(keys_of(&r.kvs), vec![b"/a/1".to_vec(), b"/a/2".to_vec()]);
    }

    #[test]
    fn limit_more_and_count() {
        let s = abc();
        let req = RangeRequest {
            limit: 2,
            ..range_req(b"a", b"\0")
        };
        let r = s.range(&req).unwrap();
        assert_eq!(keys_of(&r.kvs), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(r.more);
        assert_eq!(r.count, 4);

        let req = RangeRequest {
            limit: 4,
            ..range_req(b"a", b"\0")
        };
        let r = s.range(&req).unwrap();
        assert!(!r.more && r.kvs.len() == 4);

        let req = RangeRequest {
            count_only: true,
            limit: 1,
            ..range_req(b"a", b"\0")
        };
        let r = s.range(&req).unwrap();
        assert!(r.kvs.is_empty() && !r.more);
        assert_eq!(r.count, 4);

        let req = RangeRequest {
            keys_only: true,
            ..range_req(b"a", b"")
        };
        let kv = &s.range(&req).unwrap().kvs[0];
        assert!(kv.value.is_empty() && kv.version == 1);
    }

    #[test]
    fn a_page_stops_at_its_limit_and_reads_as_range_does() {
        let mut s = abc();
        delete(&mut s, b"c", b"");
        let page = s.scan_page(b"a", b"\0", 2, false);
        let keys: Vec<&[u8]> = page.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(keys, [&b"a"[..], b"b"]);
        assert_eq!(page, s.range(&range_req(b"a", b"c")).unwrap().kvs);
        let rest = s.scan_page(b"b\0", b"\0", 10, true);
        let keys: Vec<&[u8]> = rest.iter().map(|kv| kv.key.as_slice()).collect();
        assert_eq!(keys, [&b"d"[..]], "the deleted key is not listed");
        assert!(rest[0].value.is_empty() && rest[0].mod_revision == 6);
    }

    #[test]
    fn sorting_by_each_target() {
        let s = abc();
        let sorted = |order: SortOrder, target: SortTarget| {
            let req = RangeRequest {
                sort_order: order as i32,
                sort_target: target as i32,
                ..range_req(b"a", b"\0")
            };
            keys_of(&s.range(&req).unwrap().kvs)
        };
        let k = |ks: &[&[u8]]| ks.iter().map(|k| k.to_vec()).collect::<Vec<_>>();
        assert_eq!(
            sorted(SortOrder::Descend, SortTarget::Key),
            k(&[b"d", b"c", b"b", b"a"])
        );
        assert_eq!(
            sorted(SortOrder::Ascend, SortTarget::Value),
            k(&[b"d", b"c", b"a", b"b"])
        );
        // NONE with a non-KEY target sorts ascending, as etcd does.
        assert_eq!(
            sorted(SortOrder::None, SortTarget::Value),
            k(&[b"d", b"c", b"a", b"b"])
        );
        assert_eq!(
            sorted(SortOrder::Descend, SortTarget::Mod),
            k(&[b"d", b"b", b"c", b"a"])
        );
        assert_eq!(
            sorted(SortOrder::Ascend, SortTarget::Create),
            k(&[b"a", b"b", b"c", b"d"])
        );
        // Ties keep key order.
        assert_eq!(
            sorted(SortOrder::Descend, SortTarget::Version),
            k(&[b"b", b"a", b"c", b"d"])
        );

        // A real sort sees the whole range before the limit.
        let req = RangeRequest {
            sort_order: SortOrder::Descend as i32,
            sort_target: SortTarget::Key as i32,
            limit: 1,
            ..range_req(b"a", b"\0")
        };
        let r = s.range(&req).unwrap();
        assert_eq!(keys_of(&r.kvs), k(&[b"d"]));
        assert!(r.more);

        // keys_only still sorts by the real values.
        let req = RangeRequest {
            sort_order: SortOrder::Ascend as i32,
            sort_target: SortTarget::Value as i32,
            keys_only: true,
            ..range_req(b"a", b"\0")
        };
        let r = s.range(&req).unwrap();
        assert_eq!(keys_of(&r.kvs), k(&[b"d", b"c", b"a", b"b"]));
        assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));

        let bad = RangeRequest {
            sort_target: 9,
            ..range_req(b"a", b"")
        };
        assert_eq!(s.range(&bad), Err(KvError::InvalidSortOption));
    }

    #[test]
    fn revision_filters_keep_count_unfiltered() {
        let s = abc();
        let req = RangeRequest {
            min_mod_revision: 4,
            max_mod_revision: 5,
            ..range_req(b"a", b"\0")
        };
        let r = s.range(&req).unwrap();
        assert_eq!(keys_of(&r.kvs), vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(r.count, 4, "etcd counts before filtering");

        let req = RangeRequest {
            min_create_revision: 3,
            max_create_revision: 4,
            limit: 1,
            ..range_req(b"a", b"\0")
        };
        let r = s.range(&req).unwrap();
        assert_eq!(keys_of(&r.kvs), vec![b"b".to_vec()]);
        assert!(r.more);
    }

    #[test]
    fn values_held_packed_sort_and_read_as_written() {
        // Long records (held packed) whose order as written differs from key order.
        let record = |n: u32| {
            let regions: Vec<String> = (0..8)
                .map(|r| format!("{{\"id\":{},\"l\":{}}}", r, r % 3))
                .collect();
            format!("{{\"n\":{n},\"r\":[{}]}}", regions.join(",")).into_bytes()
        };
        let mut s = KvState::new();
        for (key, n) in [(b"a", 3), (b"b", 1), (b"c", 4), (b"d", 2)] {
            put(&mut s, key, &record(n));
        }
        let by_value = |order: SortOrder, limit: i64, keys_only: bool| {
            let req = RangeRequest {
                sort_order: order as i32,
                sort_target: SortTarget::Value as i32,
                limit,
                keys_only,
                ..range_req(b"a", b"\0")
            };
            s.range(&req).unwrap()
        };
        let r = by_value(SortOrder::Descend, 2, false);
        assert_eq!(keys_of(&r.kvs), vec![b"c".to_vec(), b"a".to_vec()]);
        assert_eq!(r.kvs[0].value, record(4));
        assert!(r.more && r.count == 4);
        let r = by_value(SortOrder::Ascend, 0, true);
        assert_eq!(
            keys_of(&r.kvs),
            [b"b", b"d", b"a", b"c"].map(|k| k.to_vec())
        );
        assert!(r.kvs.iter().all(|kv| kv.value.is_empty()));
        let r = s.range(&range_req(b"b", b"d")).unwrap();
        assert_eq!(
            r.kvs.iter().map(|kv| kv.value.clone()).collect::<Vec<_>>(),
            vec![record(1), record(4)]
        );
    }
}
