//! A region's follower nodes as the leader holds them: one list shared by the decoded route and
//! every pass's view of the region, 8 bytes in each, none for a region without followers.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Follower node ids, shared and immutable: cloning one counts a reference, copies nothing.
/// An empty list holds no allocation. Changing one (`push`, `retain`, `replace`) gives this
/// holder its own copy when the list is shared.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Followers(Option<Arc<Vec<u64>>>);

impl Followers {
    /// Whether `other` is this very list (not merely equal): nothing to copy.
    pub fn same(&self, other: &Followers) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    fn edit(&mut self, f: impl FnOnce(&mut Vec<u64>)) {
        let mut list = self.0.take().map_or_else(Vec::new, Arc::unwrap_or_clone);
        f(&mut list);
        *self = list.into();
    }

    pub fn push(&mut self, node: u64) {
        self.edit(|l| l.push(node));
    }

    pub fn retain(&mut self, keep: impl FnMut(&u64) -> bool) {
        self.edit(|l| l.retain(keep));
    }

    /// Puts `to` wherever `from` is.
    pub fn replace(&mut self, from: u64, to: u64) {
        self.edit(|l| l.iter_mut().filter(|f| **f == from).for_each(|f| *f = to));
    }
}

impl From<Vec<u64>> for Followers {
    fn from(list: Vec<u64>) -> Self {
        Followers((!list.is_empty()).then(|| Arc::new(list)))
    }
}

impl<const N: usize> From<[u64; N]> for Followers {
    fn from(list: [u64; N]) -> Self {
        Vec::from(list).into()
    }
}

impl FromIterator<u64> for Followers {
    fn from_iter<I: IntoIterator<Item = u64>>(nodes: I) -> Self {
        nodes.into_iter().collect::<Vec<u64>>().into()
    }
}

impl Deref for Followers {
    type Target = [u64];

    // Read for every region of every pass, from the leader's crate too.
    #[inline]
    fn deref(&self) -> &[u64] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }
}

impl<'a> IntoIterator for &'a Followers {
    type Item = &'a u64;
    type IntoIter = std::slice::Iter<'a, u64>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl fmt::Debug for Followers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl PartialEq<[u64]> for Followers {
    fn eq(&self, other: &[u64]) -> bool {
        **self == *other
    }
}

impl<const N: usize> PartialEq<[u64; N]> for Followers {
    fn eq(&self, other: &[u64; N]) -> bool {
        **self == *other
    }
}

impl PartialEq<Vec<u64>> for Followers {
    fn eq(&self, other: &Vec<u64>) -> bool {
        **self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_lists_are_8_bytes_and_copied_only_when_changed() {
        assert_eq!(std::mem::size_of::<Followers>(), 8);
        // So a pass's view of a region is 48 bytes (it was 64 with a vector).
        assert_eq!(std::mem::size_of::<crate::RegionView>(), 48);
        let none = Followers::default();
        assert!(none.is_empty());
        assert_eq!(Followers::from(Vec::new()), none);
        let a: Followers = vec![2, 3].into();
        let mut b = a.clone();
        assert!(a.same(&b), "a clone shares the list");
        b.push(4);
        assert!(!a.same(&b));
        assert_eq!(a, [2, 3], "the shared list is unchanged");
        assert_eq!(b, [2, 3, 4]);
        b.replace(3, 9);
        b.retain(|f| *f != 2);
        assert_eq!(b, [9, 4]);
        b.retain(|_| false);
        assert!(b.same(&none), "emptied: no allocation");
        assert_eq!(format!("{a:?}"), "[2, 3]");
    }
}
