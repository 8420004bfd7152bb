//! A datanode's latest region report as the leader keeps it between heartbeats: what the
//! scheduling pass, the reconciler and the operators' views read of it, and nothing more.
//!
//! The wire form of a region stat is 48 bytes in memory (id, role, four counters). The leader
//! reads the load only of the regions a node leads (a follower's copy serves no writes and is
//! not scheduled by its load) and only the ids of the others, so it keeps the led regions at
//! 24 bytes and the rest at 8: at a million regions reported, 24 MB instead of 48.

use cairn_proto::cairnpb::{RegionRole, RegionStat};

/// A region the node reports leading, with its load. Capacity units beyond `u32::MAX` per
/// interval read as `u32::MAX` (the scheduler's load samples keep no more).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedRegion {
    pub region_id: u64,
    pub approximate_bytes: u64,
    pub wcus: u32,
    pub rcus: u32,
}

/// The regions of one report, by the role the node gave each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportedRegions {
    pub led: Vec<LedRegion>,
    pub followed: Vec<u64>,
    /// Reported with a role the leader does not know (none, or one from a newer node): held,
    /// so the reconciler does not take them for regions the node lacks, but neither led nor
    /// followed.
    pub other: Vec<u64>,
}

fn clamp(v: u64) -> u32 {
    v.min(u32::MAX as u64) as u32
}

impl ReportedRegions {
    pub fn of(stats: &[RegionStat]) -> Self {
        let leader = RegionRole::Leader as i32;
        let follower = RegionRole::Follower as i32;
        // Sized exactly before filling: a report of 50,000 regions grows no vector.
        let (mut led, mut followed) = (0, 0);
        for s in stats {
            led += usize::from(s.role == leader);
            followed += usize::from(s.role == follower);
        }
        let mut out = ReportedRegions {
            led: Vec::with_capacity(led),
            followed: Vec::with_capacity(followed),
            other: Vec::with_capacity(stats.len() - led - followed),
        };
        for s in stats {
            match s.role {
                r if r == leader => out.led.push(LedRegion {
                    region_id: s.region_id,
                    approximate_bytes: s.approximate_bytes,
                    wcus: clamp(s.wcus),
                    rcus: clamp(s.rcus),
                }),
                r if r == follower => out.followed.push(s.region_id),
                _ => out.other.push(s.region_id),
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.led.len() + self.followed.len() + self.other.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every reported region's id, whatever its role.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        let led = self.led.iter().map(|r| r.region_id);
        led.chain(self.followed.iter().copied())
            .chain(self.other.iter().copied())
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
    fn keeps_the_led_regions_load_and_every_region_by_role() {
        let leader = RegionRole::Leader as i32;
        let follower = RegionRole::Follower as i32;
        let stats = [
            stat(1, leader, 40),
            stat(2, follower, 7),
            stat(3, 0, 1),
            stat(4, 9, 1),
            stat(5, leader, u64::MAX),
        ];
        let r = ReportedRegions::of(&stats);
        assert_eq!(
            r.led,
            [
                LedRegion {
                    region_id: 1,
                    approximate_bytes: 10,
                    wcus: 40,
                    rcus: 20
                },
                LedRegion {
                    region_id: 5,
                    approximate_bytes: 50,
                    wcus: u32::MAX,
                    rcus: u32::MAX
                },
            ]
        );
        assert_eq!(r.followed, [2]);
        assert_eq!(r.other, [3, 4]);
        assert_eq!(r.len(), 5);
        let mut ids: Vec<u64> = r.ids().collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        assert!(ReportedRegions::of(&[]).is_empty());
    }

    #[test]
    fn a_led_region_is_24_bytes() {
        // The point of the type: half the wire form's size.
        assert_eq!(std::mem::size_of::<LedRegion>(), 24);
        assert!(std::mem::size_of::<RegionStat>() >= 48);
    }
}
