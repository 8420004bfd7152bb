//! Lookups of many ids in a sorted list of ids, in ascending order: the per-region tables the
//! leader keeps sorted by region id (load samples, lease grants) are read a whole report at a
//! time, and a walk finds each next id a few places after the last.

/// Walks sorted ids front to back, finding each asked-for id after the last one found (or, for
/// an id before it, by a search from the start).
#[derive(Debug, Default)]
pub struct Cursor {
    at: usize,
}

impl Cursor {
    pub fn find(&mut self, ids: &[u64], id: u64) -> Result<usize, usize> {
        if self.at > ids.len() || ids.get(self.at.wrapping_sub(1)).is_some_and(|p| *p > id) {
            self.at = 0;
        }
        // Gallop from the last place, then search the span found.
        let mut step = 1;
        let mut hi = self.at;
        while hi < ids.len() && ids[hi] < id {
            self.at = hi;
            hi += step;
            step *= 2;
        }
        let hi = hi.min(ids.len());
        let found = match ids[self.at..hi].binary_search(&id) {
            Ok(i) => Ok(self.at + i),
            Err(i) => {
                let at = self.at + i;
                if at < ids.len() && ids[at] == id {
                    Ok(at)
                } else {
                    Err(at)
                }
            }
        };
        self.at = match found {
            Ok(i) | Err(i) => i,
        };
        found
    }
}

/// Adds `new` (sorted by id, none of them in `ids`) to sorted `ids` and the values parallel to
/// them, in one merge; both end sized exactly.
pub fn merge_sorted<T>(ids: &mut Vec<u64>, values: &mut Vec<T>, new: Vec<(u64, T)>) {
    if new.is_empty() {
        return;
    }
    let total = ids.len() + new.len();
    let old_ids = std::mem::replace(ids, Vec::with_capacity(total));
    let old_values = std::mem::replace(values, Vec::with_capacity(total));
    let mut old = old_ids.into_iter().zip(old_values).peekable();
    for (id, v) in new {
        while let Some((o, ov)) = old.next_if(|(o, _)| *o < id) {
            ids.push(o);
            values.push(ov);
        }
        ids.push(id);
        values.push(v);
    }
    for (o, ov) in old {
        ids.push(o);
        values.push(ov);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_finds_ids_walking_forward_and_searching_back() {
        let ids: Vec<u64> = (0..1000).map(|i| i * 2).collect();
        let mut c = Cursor::default();
        for i in 0..1000u64 {
            assert_eq!(c.find(&ids, i * 2), Ok(i as usize));
        }
        assert_eq!(c.find(&ids, 5000), Err(1000), "past the end");
        assert_eq!(c.find(&ids, 10), Ok(5), "behind the cursor");
        assert_eq!(c.find(&ids, 11), Err(6), "absent");
        assert_eq!(c.find(&ids, 1998), Ok(999));
        assert_eq!(c.find(&[], 3), Err(0));
    }

    #[test]
    fn a_merge_keeps_ids_sorted_and_values_beside_them() {
        let mut ids = vec![2, 4, 8];
        let mut values = vec!['b', 'd', 'h'];
        merge_sorted(&mut ids, &mut values, vec![(1, 'a'), (5, 'e'), (9, 'i')]);
        assert_eq!(ids, [1, 2, 4, 5, 8, 9]);
        assert_eq!(values, ['a', 'b', 'd', 'e', 'h', 'i']);
        assert_eq!(ids.capacity(), 6);
        merge_sorted(&mut ids, &mut values, Vec::new());
        assert_eq!(ids.len(), 6);
    }
}
