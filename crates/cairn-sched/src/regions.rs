//! A snapshot's regions ([`Regions`]): either listed, one [`RegionView`] each (tests, the
//! simulator, failover's plans), or read in place from a [`RegionSource`] the caller keeps
//! anyway. The leader keeps a million regions' routes and load samples between passes; a view
//! of each for the pass (48 bytes a region, kept between passes because allocating them anew
//! cost a pass tens of milliseconds) was the second largest thing it held for a region, so a
//! pass reads them where they lie.

use std::fmt;
use std::sync::Arc;

use crate::followers::Followers;

/// A region's last reported size and smoothed load.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RegionLoad {
    pub approximate_bytes: u64,
    pub wcus: f64,
    pub rcus: f64,
}

/// One region as a walk over them all sees it ([`Regions::walk`]).
#[derive(Debug, Clone, Copy)]
pub struct RegionRef<'a> {
    pub region_id: u64,
    pub leader: u64,
    pub followers: &'a [u64],
    pub load: RegionLoad,
}

impl RegionRef<'_> {
    /// The table the region belongs to (`region_id >> 32`).
    pub fn table_id(&self) -> u64 {
        self.region_id >> 32
    }
}

/// A region and where it lives, with its smoothed load (negative or non-finite figures from a
/// confused datanode must be cleaned by the caller; the leader's stats history does).
#[derive(Debug, Clone, PartialEq)]
pub struct RegionView {
    pub region_id: u64,
    pub leader: u64,
    pub followers: Followers,
    pub approximate_bytes: u64,
    pub wcus: f64,
    pub rcus: f64,
}

impl RegionView {
    /// A region of no size and no load led by `leader`.
    pub fn new(region_id: u64, leader: u64) -> Self {
        RegionView {
            region_id,
            leader,
            followers: Followers::default(),
            approximate_bytes: 0,
            wcus: 0.0,
            rcus: 0.0,
        }
    }

    /// The table the region belongs to (`region_id >> 32`).
    pub fn table_id(&self) -> u64 {
        self.region_id >> 32
    }

    /// Its size and load.
    pub fn load(&self) -> RegionLoad {
        RegionLoad {
            approximate_bytes: self.approximate_bytes,
            wcus: self.wcus,
            rcus: self.rcus,
        }
    }

    /// The view as a walk over regions sees it.
    pub fn to_ref(&self) -> RegionRef<'_> {
        RegionRef {
            region_id: self.region_id,
            leader: self.leader,
            followers: &self.followers,
            load: self.load(),
        }
    }
}

/// Regions read in place. Region `i` is the same region for every method, for as long as the
/// source lives; sources list regions in ascending id (the leader's route order).
pub trait RegionSource: fmt::Debug + Send + Sync {
    /// How many regions.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Region `i`'s id.
    fn region_id(&self, i: usize) -> u64;
    /// Region `i`'s size and load.
    fn load(&self, i: usize) -> RegionLoad;
    /// Region `i`'s leader and followers.
    fn holders(&self, i: usize) -> (u64, &[u64]);
    /// Calls `f` on every region in order: one walk, cheaper than asking region by region.
    fn walk(&self, f: &mut dyn FnMut(usize, RegionRef<'_>));
}

/// The regions of a [`ClusterSnapshot`](crate::ClusterSnapshot), each known by its index.
#[derive(Debug, Clone, Default)]
pub struct Regions {
    /// The regions, when listed (empty when `shared` holds them).
    listed: Vec<RegionView>,
    shared: Option<Arc<dyn RegionSource>>,
}

impl From<Vec<RegionView>> for Regions {
    fn from(listed: Vec<RegionView>) -> Self {
        Regions {
            listed,
            shared: None,
        }
    }
}

impl FromIterator<RegionView> for Regions {
    fn from_iter<I: IntoIterator<Item = RegionView>>(iter: I) -> Self {
        iter.into_iter().collect::<Vec<_>>().into()
    }
}

/// Region `i` of `s` as a view of its own.
fn view_of(s: &dyn RegionSource, i: usize) -> RegionView {
    let (leader, followers) = s.holders(i);
    let load = s.load(i);
    RegionView {
        region_id: s.region_id(i),
        leader,
        followers: followers.to_vec().into(),
        approximate_bytes: load.approximate_bytes,
        wcus: load.wcus,
        rcus: load.rcus,
    }
}

impl Regions {
    /// Regions read in place from `source`.
    pub fn shared(source: Arc<dyn RegionSource>) -> Self {
        Regions {
            listed: Vec::new(),
            shared: Some(source),
        }
    }

    pub fn len(&self) -> usize {
        match &self.shared {
            Some(s) => s.len(),
            None => self.listed.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Region `i`'s id.
    pub fn region_id(&self, i: usize) -> u64 {
        match &self.shared {
            Some(s) => s.region_id(i),
            None => self.listed[i].region_id,
        }
    }

    /// Region `i`'s size and load.
    pub fn load(&self, i: usize) -> RegionLoad {
        match &self.shared {
            Some(s) => s.load(i),
            None => self.listed[i].load(),
        }
    }

    /// Region `i`'s leader and followers.
    pub fn holders(&self, i: usize) -> (u64, &[u64]) {
        match &self.shared {
            Some(s) => s.holders(i),
            None => (self.listed[i].leader, &self.listed[i].followers),
        }
    }

    /// Calls `f` on every region in order.
    pub fn walk(&self, mut f: impl FnMut(usize, RegionRef<'_>)) {
        match &self.shared {
            Some(s) => s.walk(&mut f),
            None => {
                for (i, r) in self.listed.iter().enumerate() {
                    f(i, r.to_ref());
                }
            }
        }
    }

    /// Region `i` as a view of its own.
    pub fn get(&self, i: usize) -> RegionView {
        match &self.shared {
            Some(s) => view_of(s.as_ref(), i),
            None => self.listed[i].clone(),
        }
    }

    /// Every region as a view of its own, in order.
    pub fn iter(&self) -> impl Iterator<Item = RegionView> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// The index of region `region_id`: a binary search of a shared source (in id order), a
    /// scan of listed regions (in any order).
    pub fn position(&self, region_id: u64) -> Option<usize> {
        let Some(s) = &self.shared else {
            return self.listed.iter().position(|r| r.region_id == region_id);
        };
        let (mut lo, mut hi) = (0, s.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match s.region_id(mid).cmp(&region_id) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The regions as a list to change (a shared source is copied into one first: for tests
    /// and models, not for the leader's pass).
    pub fn list_mut(&mut self) -> &mut Vec<RegionView> {
        if let Some(s) = self.shared.take() {
            self.listed = (0..s.len()).map(|i| view_of(s.as_ref(), i)).collect();
        }
        &mut self.listed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three regions kept as a source would keep them: columns, not views.
    #[derive(Debug)]
    struct Columns {
        ids: Vec<u64>,
        leaders: Vec<u64>,
        followers: Vec<Vec<u64>>,
        wcus: Vec<f64>,
    }

    impl RegionSource for Columns {
        fn len(&self) -> usize {
            self.ids.len()
        }
        fn region_id(&self, i: usize) -> u64 {
            self.ids[i]
        }
        fn load(&self, i: usize) -> RegionLoad {
            RegionLoad {
                approximate_bytes: 10 * i as u64,
                wcus: self.wcus[i],
                rcus: 0.0,
            }
        }
        fn holders(&self, i: usize) -> (u64, &[u64]) {
            (self.leaders[i], &self.followers[i])
        }
        fn walk(&self, f: &mut dyn FnMut(usize, RegionRef<'_>)) {
            for i in 0..self.len() {
                let (leader, followers) = self.holders(i);
                let r = RegionRef {
                    region_id: self.ids[i],
                    leader,
                    followers,
                    load: self.load(i),
                };
                f(i, r);
            }
        }
    }

    fn columns() -> Columns {
        Columns {
            ids: vec![3, 7, 9],
            leaders: vec![1, 2, 1],
            followers: vec![vec![2], vec![], vec![2, 3]],
            wcus: vec![1.0, 2.5, 4.0],
        }
    }

    #[test]
    fn a_shared_source_reads_as_the_same_regions_listed() {
        let shared = Regions::shared(Arc::new(columns()));
        let listed: Regions = shared.iter().collect::<Vec<_>>().into();
        for r in [&shared, &listed] {
            assert_eq!(r.len(), 3);
            assert_eq!(r.region_id(1), 7);
            assert_eq!(r.holders(2), (1, &[2, 3][..]));
            assert_eq!(r.load(2).wcus, 4.0);
            assert_eq!(r.load(1).approximate_bytes, 10);
            assert_eq!(r.position(9), Some(2));
            assert_eq!(r.position(8), None);
            let mut walked = Vec::new();
            r.walk(|i, v| walked.push((i, v.region_id, v.leader, v.followers.len())));
            assert_eq!(walked, [(0, 3, 1, 1), (1, 7, 2, 0), (2, 9, 1, 2)]);
        }
        assert_eq!(shared.get(0), listed.get(0));
    }

    #[test]
    fn changing_a_shared_source_lists_it_first() {
        let mut regions = Regions::shared(Arc::new(columns()));
        regions.list_mut()[0].wcus = 100.0;
        assert_eq!(regions.load(0).wcus, 100.0);
        assert_eq!(regions.load(1).wcus, 2.5, "the rest as they were");
        assert_eq!(regions.holders(2), (1, &[2, 3][..]));
    }
}
