//! [`FifoMap`]: a map with a fixed capacity that, when full, evicts the entry inserted longest
//! ago. A hit does not reorder entries, so lookups need no write access; for a route cache that
//! is the right trade, because the oldest route is also the one most likely to be stale.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// A map of at most `capacity` entries, evicting in insertion order.
#[derive(Debug)]
pub(super) struct FifoMap<K, V> {
    capacity: usize,
    /// Key → (insertion sequence, value).
    entries: HashMap<K, (u64, V)>,
    /// Insertion sequence → key, oldest first.
    order: BTreeMap<u64, K>,
    next_sequence: u64,
}

impl<K: Eq + Hash + Clone, V> FifoMap<K, V> {
    /// An empty map holding at most `capacity` (at least 1) entries.
    pub(super) fn new(capacity: usize) -> Self {
        assert!(capacity >= 1, "a FifoMap must hold at least one entry");
        FifoMap {
            capacity,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next_sequence: 0,
        }
    }

    pub(super) fn get(&self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(_, v)| v)
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Inserts or replaces `key` (a replaced entry counts as newest). Returns the entry evicted
    /// to make room, if any.
    pub(super) fn insert(&mut self, key: K, value: V) -> Option<(K, V)> {
        self.remove(&key);
        let evicted = if self.entries.len() >= self.capacity {
            self.pop_oldest()
        } else {
            None
        };
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        self.order.insert(sequence, key.clone());
        self.entries.insert(key, (sequence, value));
        debug_assert_eq!(self.entries.len(), self.order.len());
        debug_assert!(self.entries.len() <= self.capacity);
        evicted
    }

    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let (sequence, value) = self.entries.remove(key)?;
        self.order.remove(&sequence);
        Some(value)
    }

    /// Keeps only the entries for which `keep` is true; returns how many were removed.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&K, &V) -> bool) -> usize {
        let before = self.entries.len();
        let order = &mut self.order;
        self.entries.retain(|k, (sequence, v)| {
            let kept = keep(k, v);
            if !kept {
                order.remove(sequence);
            }
            kept
        });
        before - self.entries.len()
    }

    /// Removes everything; returns how many entries there were.
    pub(super) fn clear(&mut self) -> usize {
        let count = self.entries.len();
        self.entries.clear();
        self.order.clear();
        count
    }

    fn pop_oldest(&mut self) -> Option<(K, V)> {
        let (_, key) = self.order.pop_first()?;
        let (_, value) = self
            .entries
            .remove(&key)
            .expect("every ordered key has an entry");
        Some((key, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_map_evicts_the_oldest_insert_and_hits_do_not_reorder() {
        let mut map = FifoMap::new(3);
        for k in 1..=3 {
            assert_eq!(map.insert(k, k * 10), None);
        }
        assert_eq!(map.get(&1), Some(&10));
        assert_eq!(map.insert(4, 40), Some((1, 10)));
        assert_eq!(map.insert(5, 50), Some((2, 20)));
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(&1), None);
        assert_eq!(map.get(&5), Some(&50));
    }

    #[test]
    fn replacing_makes_an_entry_newest_without_evicting() {
        let mut map = FifoMap::new(2);
        map.insert("a", 1);
        map.insert("b", 2);
        assert_eq!(map.insert("a", 3), None);
        assert_eq!(map.insert("c", 4), Some(("b", 2)));
        assert_eq!(map.get(&"a"), Some(&3));
    }

    #[test]
    fn remove_retain_and_clear_keep_the_order_consistent() {
        let mut map = FifoMap::new(4);
        for k in 0..4 {
            map.insert(k, k);
        }
        assert_eq!(map.remove(&0), Some(0));
        assert_eq!(map.remove(&0), None);
        assert_eq!(map.retain(|k, _| k % 2 == 1), 1);
        assert_eq!(map.len(), 2);
        // Room for two more before anything is evicted, then 1 (the oldest left) goes.
        assert_eq!(map.insert(10, 10), None);
        assert_eq!(map.insert(11, 11), None);
        assert_eq!(map.insert(12, 12), Some((1, 1)));
        assert_eq!(map.clear(), 4);
        assert_eq!(map.len(), 0);
        assert_eq!(map.insert(1, 1), None);
    }
}
