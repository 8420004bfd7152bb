//! A datanode's latest region report as the leader keeps it between heartbeats: what the
//! scheduling pass, the reconciler and the operators' views read of it, and nothing more.
//!
//! The wire form of a region stat is 48 bytes in memory (id, role, four counters). The leader
//! keeps each role's region ids in ascending order as the steps between them ([`RegionIds`]:
//! about 2 bytes a region where a `u64` took 8), and the loads of the regions the node leads
//! (a follower's copy serves no writes and is not scheduled by its load) only until the
//! scheduling pass has taken them into its load windows ([`ReportedRegions::take_loads`]). At
//! a million regions reported that is about 2 MB between passes, where ids and loads kept
//! together took 24 MB.

use cairn_proto::cairnpb::{RegionRole, RegionStat};

/// A led region's load as reported. Capacity units beyond `u32::MAX` per interval read as
/// `u32::MAX` (the scheduler's load samples keep no more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedLoad {
    pub approximate_bytes: u64,
    pub wcus: u32,
    pub rcus: u32,
}

/// The regions of one report, by the role the node gave each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportedRegions {
    led: RegionIds,
    /// The led regions' loads in `led`'s order, until the scheduling pass takes them.
    loads: Vec<LedLoad>,
    followed: RegionIds,
    /// Reported with a role the leader does not know (none, or one from a newer node): held,
    /// so the reconciler does not take them for regions the node lacks, but neither led nor
    /// followed.
    other: RegionIds,
}

fn clamp(v: u64) -> u32 {
    v.min(u32::MAX as u64) as u32
}

impl ReportedRegions {
    /// The report of `stats`, or the id of a region reported twice.
    pub fn of(stats: &[RegionStat]) -> Result<Self, u64> {
        let leader = RegionRole::Leader as i32;
        let follower = RegionRole::Follower as i32;
        // By id, so each role's ids come out ascending and a repeat sits beside its twin. A
        // datanode reports in region order, which the sort finds in one walk.
        let mut order: Vec<(u64, u32)> = stats
            .iter()
            .enumerate()
            .map(|(i, s)| (s.region_id, i as u32))
            .collect();
        order.sort_unstable();
        if let Some(w) = order.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(w[0].0);
        }
        // One walk, each id to its role's list.
        let mut led = IdsBuilder::default();
        let mut followed = IdsBuilder::default();
        let mut other = IdsBuilder::default();
        let mut loads = Vec::new();
        for &(id, i) in &order {
            let s = &stats[i as usize];
            match s.role {
                r if r == leader => {
                    led.push(id);
                    loads.push(LedLoad {
                        approximate_bytes: s.approximate_bytes,
                        wcus: clamp(s.wcus),
                        rcus: clamp(s.rcus),
                    });
                }
                r if r == follower => followed.push(id),
                _ => other.push(id),
            }
        }
        Ok(ReportedRegions {
            led: led.finish(),
            loads,
            followed: followed.finish(),
            other: other.finish(),
        })
    }

    pub fn len(&self) -> usize {
        self.led.len() + self.followed.len() + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every reported region's id, whatever its role.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.led
            .iter()
            .chain(self.followed.iter())
            .chain(self.other.iter())
    }

    /// The regions reported led, ascending.
    pub fn led(&self) -> impl Iterator<Item = u64> + '_ {
        self.led.iter()
    }

    /// The regions reported followed, ascending.
    pub fn followed(&self) -> impl Iterator<Item = u64> + '_ {
        self.followed.iter()
    }

    /// The led regions with their loads, ascending, if not taken since the report came in;
    /// nothing after that.
    pub fn take_loads(&mut self) -> impl Iterator<Item = (u64, LedLoad)> + '_ {
        let loads = std::mem::take(&mut self.loads);
        self.led.iter().zip(loads)
    }
}

/// Region ids in ascending order, each held as its step from the one before: the difference
/// of their table ids, then the region's number, or, within one table, the difference of
/// their numbers less one; each a LEB128 varint. A node's regions spread over many tables take
/// about 2 bytes each (table steps and region numbers are small).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionIds {
    steps: Box<[u8]>,
    len: usize,
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn split_id(id: u64) -> (u64, u64) {
    (
        cairn_meta::table_id_of(id),
        u64::from(cairn_meta::region_number_of(id)),
    )
}

impl RegionIds {
    /// `ids` must be ascending with no repeats (checked in debug builds).
    #[cfg(test)]
    pub fn from_ascending(ids: impl Iterator<Item = u64>) -> Self {
        let mut b = IdsBuilder::default();
        ids.for_each(|id| b.push(id));
        b.finish()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn iter(&self) -> RegionIdsIter<'_> {
        RegionIdsIter {
            steps: &self.steps,
            table: 0,
            next: 0,
        }
    }
}

/// Writes a [`RegionIds`] one id at a time.
#[derive(Default)]
struct IdsBuilder {
    steps: Vec<u8>,
    len: usize,
    /// The table of the id before, and the lowest number the next id of it can have.
    table: u64,
    next: u64,
    last: Option<u64>,
}

impl IdsBuilder {
    /// `id` must be above the last one pushed (checked in debug builds).
    fn push(&mut self, id: u64) {
        debug_assert!(
            self.last < Some(id),
            "region ids not ascending: {:?} then {id}",
            self.last
        );
        self.last = Some(id);
        let (t, n) = split_id(id);
        put_varint(&mut self.steps, t - self.table);
        put_varint(
            &mut self.steps,
            if t == self.table { n - self.next } else { n },
        );
        (self.table, self.next) = (t, n + 1);
        self.len += 1;
    }

    fn finish(self) -> RegionIds {
        RegionIds {
            steps: self.steps.into_boxed_slice(),
            len: self.len,
        }
    }
}

pub struct RegionIdsIter<'a> {
    steps: &'a [u8],
    table: u64,
    next: u64,
}

impl RegionIdsIter<'_> {
    fn varint(&mut self) -> u64 {
        let mut v = 0;
        for (i, b) in self.steps.iter().enumerate() {
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.steps = &self.steps[i + 1..];
                return v;
            }
        }
        unreachable!("a RegionIds' steps end with a whole varint")
    }
}

impl Iterator for RegionIdsIter<'_> {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.steps.is_empty() {
            return None;
        }
        let table_step = self.varint();
        let n = if table_step == 0 {
            self.next + self.varint()
        } else {
            self.table += table_step;
            self.varint()
        };
        self.next = n + 1;
        Some(self.table << 32 | n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(id: u64, role: i32, wcus: u64) -> RegionStat {
        RegionStat {
            region_id: id,
            role,
            wcus,
            rcus: wcus / 2,
            approximate_bytes: id * 10,
            ..Default::default()
        }
    }

    #[test]
    fn keeps_every_region_by_role_and_the_led_loads_until_taken() {
        let leader = RegionRole::Leader as i32;
        let follower = RegionRole::Follower as i32;
        let stats = [
            stat(5, leader, u64::MAX),
            stat(2, follower, 7),
            stat(3, 0, 1),
            stat(4, 9, 1),
            stat(1, leader, 40),
        ];
        let mut r = ReportedRegions::of(&stats).unwrap();
        assert_eq!(r.led().collect::<Vec<_>>(), [1, 5]);
        assert_eq!(r.followed().collect::<Vec<_>>(), [2]);
        assert_eq!(r.other.iter().collect::<Vec<_>>(), [3, 4]);
        assert_eq!(r.len(), 5);
        let mut ids: Vec<u64> = r.ids().collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        let loads: Vec<_> = r.take_loads().collect();
        let load = |approximate_bytes, wcus, rcus| LedLoad {
            approximate_bytes,
            wcus,
            rcus,
        };
        assert_eq!(
            loads,
            [(1, load(10, 40, 20)), (5, load(50, u32::MAX, u32::MAX))]
        );
        // Taken once; the ids stay.
        assert_eq!(r.take_loads().count(), 0);
        assert_eq!(r.led().collect::<Vec<_>>(), [1, 5]);
        assert!(ReportedRegions::of(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_region_reported_twice_is_named_whatever_its_roles() {
        let leader = RegionRole::Leader as i32;
        let follower = RegionRole::Follower as i32;
        let twice = [stat(8, leader, 1), stat(3, leader, 1), stat(8, follower, 1)];
        assert_eq!(ReportedRegions::of(&twice), Err(8));
    }

    #[test]
    fn region_ids_read_back_as_written_in_about_two_bytes_each() {
        let region = |table: u64, n: u32| table << 32 | u64::from(n);
        // A node's share of a cluster: one or two regions of each of many tables.
        let spread: Vec<u64> = (1..=50_000u64)
            .flat_map(|t| [region(t * 3, (t % 7) as u32), region(t * 3, 9)])
            .collect();
        let ids = RegionIds::from_ascending(spread.iter().copied());
        assert_eq!(ids.len(), spread.len());
        assert_eq!(ids.iter().collect::<Vec<_>>(), spread);
        assert!(
            ids.steps.len() <= 2 * spread.len(),
            "{} bytes",
            ids.steps.len()
        );
        // The extremes: table 0, the last number of a table, the largest id.
        let edges = [
            0,
            1,
            region(0, u32::MAX),
            region(1, 0),
            region(u32::MAX as u64, u32::MAX),
        ];
        let ids = RegionIds::from_ascending(edges.iter().copied());
        assert_eq!(ids.iter().collect::<Vec<_>>(), edges);
        assert_eq!(RegionIds::default().iter().count(), 0);
    }
}
