//! What a scheduler sees: a snapshot of the cluster ([`ClusterSnapshot`]) the leader builds from
//! its node registry, the stored routes and the smoothed stats, and the per-pass tally
//! ([`Tally`]) the schedulers of one pass share, so that each sees the moves the ones before it
//! planned and no pass undoes itself.
//!
//! The snapshot is plain data; time comes in as `now_ms`. Nothing here reads a clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use crate::operator::{MoveKind, Operator};
use crate::regions::Regions;

/// The datanode label holding a node's relative capacity (`"2"`: twice an unlabelled node's
/// share of regions and load). Missing, unparsable or non-positive values count as 1.
pub const CAPACITY_LABEL: &str = "capacity";
/// The largest capacity a label may claim; larger values are clamped, so one mistyped label
/// cannot pull every region onto one node.
pub const NODE_CAPACITY_MAX: f64 = 1_000.0;

/// How far above the mean load (in hot tolerances) a count move (balance-region, label-spread)
/// may leave its target; see [`Tally::load_fits`].
pub const COUNT_MOVE_LOAD_BANDS: f64 = 2.0;

/// A hasher for ids (node, region, table): one pass of splitmix64's finaliser. The default
/// SipHash is made to resist adversarial keys, which ids chosen by the leader are not, and costs
/// a pass over a million regions tens of milliseconds.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = self.0.rotate_left(32) ^ n;
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A hash map keyed by ids, with [`IdHasher`].
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
/// A hash set of ids, with [`IdHasher`].
pub type IdSet<K> = HashSet<K, BuildHasherDefault<IdHasher>>;

/// Each table's region count and leaders per zone, when spread rules apply. Tables are
/// numbered in order of first appearance and their counts kept flat (table × zone), so a pass
/// over a million regions allocates nothing per table.
#[derive(Debug, Default)]
pub(crate) struct TableSpreads {
    zones: usize,
    /// Table id to number; built only once a table comes out of order: the leader lists
    /// regions in table order, and a sorted `ids` is searched instead (a map of 250,000 tables
    /// costs a cache miss per region).
    index: IdMap<u64, u32>,
    /// Table ids by number.
    ids: Vec<u64>,
    regions: Vec<u32>,
    /// `leaders[table * zones + zone]`.
    leaders: Vec<u32>,
}

/// A region that may not be planned: busy, or already planned this pass.
const FROZEN: u8 = 1;
/// A region that moved recently (the spread repair may still move it; balancing may not).
const COOLING: u8 = 2;
/// A region no balancing scheduler may plan: held by a node unknown to the snapshot, or led by a
/// node that may not take regions (failover or a drain moves it; the drain schedulers may).
const STUCK: u8 = 4;
/// A region a balancing operator waits, queued, to move: balancing schedulers leave it; an
/// urgent one (a repair) may take it over, and the queued operator is then cancelled.
const QUEUED: u8 = 8;
/// A follower slot emptied by a planned move (a leader handed to a follower that the drain closes
/// behind it).
const NO_SLOT: u32 = u32::MAX;
/// The leader of a region held by a node the snapshot lacks.
pub(crate) const NO_NODE: usize = usize::MAX;

/// No table number: spread rules are off, or the region's leader is unknown.
pub(crate) const NO_TABLE: u32 = u32::MAX;

impl TableSpreads {
    fn new(zones: usize) -> Self {
        TableSpreads {
            zones,
            ..TableSpreads::default()
        }
    }

    /// The number of `table`, added if new.
    fn number(&mut self, table: u64) -> u32 {
        let next = self.ids.len() as u32;
        let k = if !self.index.is_empty() {
            *self.index.entry(table).or_insert(next)
        } else if self.ids.last().is_none_or(|last| *last < table) {
            next
        } else if let Ok(k) = self.ids.binary_search(&table) {
            k as u32
        } else {
            // Out of order: from now on, a map.
            self.index = self
                .ids
                .iter()
                .enumerate()
                .map(|(k, id)| (*id, k as u32))
                .collect();
            self.index.insert(table, next);
            next
        };
        if k == next {
            self.ids.push(table);
            self.regions.push(0);
            self.leaders.extend(std::iter::repeat_n(0, self.zones));
        }
        k
    }

    /// How many tables are numbered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// The id of table number `k`.
    pub fn id(&self, k: u32) -> u64 {
        self.ids[k as usize]
    }

    /// Regions of table number `k` (led by known nodes).
    pub fn regions(&self, k: u32) -> u32 {
        self.regions[k as usize]
    }

    /// Leaders of table number `k` in `zone`.
    pub fn leaders(&self, k: u32, zone: usize) -> u32 {
        self.leaders[k as usize * self.zones + zone]
    }

    fn leaders_mut(&mut self, k: u32, zone: usize) -> &mut u32 {
        &mut self.leaders[k as usize * self.zones + zone]
    }
}

/// The largest node id [`NodeIndex`] finds by a table indexed by id (4 bytes an id): the
/// leader numbers nodes from a sequence, so ids stay small; larger ones go to a hash map.
pub const NODE_INDEX_DENSE_IDS_MAX: u64 = 1 << 16;

/// Node ids to their index in a snapshot, asked for every holder of every region a pass: a
/// table indexed by id where ids are small, a few nanoseconds less a lookup than hashing, which
/// is milliseconds at a million regions.
#[derive(Debug, Default)]
pub struct NodeIndex {
    /// `dense[id]`: the index of node `id` plus one; 0 for none.
    dense: Vec<u32>,
    /// Ids of [`NODE_INDEX_DENSE_IDS_MAX`] and above.
    sparse: IdMap<u64, usize>,
}

impl NodeIndex {
    /// The index of each id is its place in `ids`.
    pub fn new(ids: impl IntoIterator<Item = u64>) -> Self {
        let mut index = NodeIndex::default();
        for (i, id) in ids.into_iter().enumerate() {
            index.insert(id, i);
        }
        index
    }

    /// Gives `id` index `i`; whether it had none.
    pub fn insert(&mut self, id: u64, i: usize) -> bool {
        if id < NODE_INDEX_DENSE_IDS_MAX {
            let at = id as usize;
            if self.dense.len() <= at {
                self.dense.resize(at + 1, 0);
            }
            let had = self.dense[at] > 0;
            self.dense[at] = i as u32 + 1;
            !had
        } else {
            self.sparse.insert(id, i).is_none()
        }
    }

    #[inline]
    pub fn get(&self, id: u64) -> Option<usize> {
        if id < NODE_INDEX_DENSE_IDS_MAX {
            let i = *self.dense.get(id as usize)?;
            (i > 0).then(|| i as usize - 1)
        } else {
            self.sparse.get(&id).copied()
        }
    }
}

/// A datanode as the leader sees it when the pass starts.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub node_id: u64,
    /// Failure-domain labels (`zone`, `rack`) and [`CAPACITY_LABEL`].
    pub labels: BTreeMap<String, String>,
    /// Alive, connected and not draining: it may receive regions. Nodes that may not still count
    /// for what they hold (a region on a drained node is somebody else's business).
    pub schedulable: bool,
    /// Not schedulable, and its leaders are on their way to the schedulable nodes (it is
    /// judged failed, cut off, or drained): they count toward those nodes' shares, so nothing
    /// evens out the rest only for their arrival to undo it. False for a node that keeps its
    /// copies (evicting leaders only, or merely suspect).
    pub going: bool,
    /// An operator asked for the node to be emptied ([`DrainKind`]), and it is reachable (a
    /// drained node judged failed is failover's): the drain schedulers move its copies off.
    pub drain: Option<DrainKind>,
    /// Judged failed by the failure detector (or never heard from since this leader took over,
    /// past the grace): replica-repair replaces its follower copies. A node merely cut off a
    /// moment, or one still reconnecting after a leader change, is not.
    pub failed: bool,
    /// The node's own recent stats reports (its whole load per second, follower copies'
    /// included), newest first, at most [`NODE_LOAD_REPORTS_MAX`]: its stats history as the
    /// leader keeps it (a previous leader's restored reports included). Empty where none is
    /// known; hot-region then goes by region loads alone (see [`Tally::sustained`]).
    pub reported: Vec<ReportedLoad>,
}

/// Node reports a snapshot carries per node ([`NodeView::reported`]): about as long as the
/// region load windows, so a node's own history and its regions' smoothed loads cover the same
/// stretch of time.
pub const NODE_LOAD_REPORTS_MAX: usize = 6;

/// One node stats report's load, in capacity units per second.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ReportedLoad {
    pub wcus: f64,
    pub rcus: f64,
}

impl ReportedLoad {
    fn get(&self, write: bool) -> f64 {
        if write {
            self.wcus
        } else {
            self.rcus
        }
    }
}

/// What a drain of a node moves off it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DrainKind {
    /// Only leadership, each region's to one of its live followers (the node stays a follower).
    Leaders,
    /// Every copy: leaders (to a live follower, else a node the placement rules pick) and
    /// follower copies.
    All,
}

impl NodeView {
    /// A schedulable node with no labels and no load.
    pub fn new(node_id: u64) -> Self {
        NodeView {
            node_id,
            labels: BTreeMap::new(),
            schedulable: true,
            going: false,
            drain: None,
            failed: false,
            reported: Vec::new(),
        }
    }

    /// The same node with one more label.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// The node's relative capacity, from [`CAPACITY_LABEL`].
    pub fn capacity(&self) -> f64 {
        match self.labels.get(CAPACITY_LABEL).map(|v| v.parse::<f64>()) {
            Some(Ok(c)) if c.is_finite() && c > 0.0 => c.min(NODE_CAPACITY_MAX),
            _ => 1.0,
        }
    }
}

/// Nodes remembered per region in [`ClusterSnapshot::last_left`]: a region that left more
/// nodes than this in the memory's span was moved that often, and the oldest are forgotten.
pub const LEFT_NODES_MAX: usize = 3;

/// The nodes balancing moves took a copy of one region off, latest first (0: none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeftNodes([u64; LEFT_NODES_MAX]);

impl LeftNodes {
    /// Records that a copy left `node` (kept once, as the latest).
    pub fn push(&mut self, node: u64) {
        // Where it was, or the oldest slot: everything before it moves one back.
        let at = self
            .0
            .iter()
            .position(|n| *n == node)
            .unwrap_or(LEFT_NODES_MAX - 1);
        self.0[..=at].rotate_right(1);
        self.0[0] = node;
    }

    /// Nodes given latest first (a stored list), the first [`LEFT_NODES_MAX`] distinct kept.
    pub fn from_latest_first(nodes: impl IntoIterator<Item = u64>) -> Self {
        let mut left = LeftNodes::default();
        let mut len = 0;
        for n in nodes {
            if len == LEFT_NODES_MAX {
                break;
            }
            if n != 0 && !left.0[..len].contains(&n) {
                left.0[len] = n;
                len += 1;
            }
        }
        left
    }

    pub fn contains(&self, node: u64) -> bool {
        node != 0 && self.0.contains(&node)
    }

    /// The nodes, latest first.
    pub fn nodes(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().copied().filter(|n| *n != 0)
    }
}

/// Everything one scheduling pass decides from.
#[derive(Debug, Clone, Default)]
pub struct ClusterSnapshot {
    /// Unix ms the snapshot was taken; cool-downs are measured against it.
    pub now_ms: u64,
    pub nodes: Vec<NodeView>,
    /// In region order where a source is shared (the leader's); any order where listed.
    pub regions: Regions,
    /// Regions some operator or procedure is moving now: nobody plans for them.
    pub busy: Vec<u64>,
    /// Regions a balancing operator waits (queued, behind the rate limit) to move: the balancing
    /// schedulers leave them; replica-repair may take them over.
    pub queued: Vec<u64>,
    /// When each recently moved region last moved (Unix ms), for the cool-down.
    pub last_moved_ms: HashMap<u64, u64>,
    /// Region → the nodes balancing moves last took a copy of it off (the latest
    /// [`LEFT_NODES_MAX`]), while the leader remembers those moves
    /// (`--scheduler-region-return-ms`): no balancing scheduler sends a copy of the region back
    /// to one of them, so a region moved for balance never moves back without a change of
    /// cluster (the memory lapses) and two schedulers cannot trade it to and fro.
    pub last_left: HashMap<u64, LeftNodes>,
    /// The label whose values are failure domains (`"zone"`); empty: no spread rules.
    pub spread_label: String,
    /// Operators the limits still allow: cluster-wide, and per node (a node absent from the map
    /// has the default, `node_moves_left_default`).
    pub moves_left: usize,
    pub node_moves_left: HashMap<u64, usize>,
    pub node_moves_left_default: usize,
    /// A region moved within this long is not moved again by a balancing scheduler.
    pub region_cooldown_ms: u64,
    /// Urgent operators the limits still allow: drains and evictions (an operator's request) and
    /// replica repairs (a region short of copies) have a budget of their own and must not wait on
    /// the balancing limits.
    pub urgent_moves_left: usize,
    /// Follower copies every region should have (the placement's `region_followers`):
    /// replica-repair adds what a region lacks. 0: nothing is added.
    pub followers_per_region: usize,
}

impl ClusterSnapshot {
    /// Records that `op` was carried out now: the region's cool-down starts, and the node a
    /// balancing move took a copy off is remembered ([`ClusterSnapshot::last_left`]). The
    /// model's and the tests' bookkeeping; the leader keeps its own with time bounds.
    pub fn note_done(&mut self, op: &Operator) {
        self.last_moved_ms.insert(op.region_id, self.now_ms);
        if let Some(node) = op.leaves() {
            self.last_left.entry(op.region_id).or_default().push(node);
        }
    }

    /// The ids of the nodes `keep` keeps, in snapshot order.
    pub fn node_ids(&self, keep: impl Fn(&NodeView) -> bool) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| keep(n))
            .map(|n| n.node_id)
            .collect()
    }
}

/// Per-node figures while a pass plans, moves applied.
#[derive(Debug, Clone)]
pub(crate) struct NodeTally {
    pub id: u64,
    pub capacity: f64,
    pub schedulable: bool,
    /// See [`NodeView::failed`].
    pub failed: bool,
    /// Index into `Tally::zones`; a node without the spread label is in the zone `""`.
    pub zone: usize,
    pub leaders: usize,
    pub followers: usize,
    /// The regions it leads, by size.
    pub led_bytes: HeldBytes,
    /// The regions it holds follower copies of (a follower copy holds the region's data too).
    pub followed_bytes: HeldBytes,
    pub wcus: f64,
    pub rcus: f64,
    /// Regions it led when the pass began (indexes into the snapshot's regions).
    pub led: Vec<u32>,
    /// Regions it followed when the pass began.
    pub followed: Vec<u32>,
    pub moves_left: usize,
}

impl NodeTally {
    /// The regions it holds in `kind`'s role, by size.
    pub fn held_bytes(&self, kind: MoveKind) -> HeldBytes {
        match kind {
            MoveKind::Leader => self.led_bytes,
            MoveKind::Follower | MoveKind::AddFollower | MoveKind::RemoveFollower => {
                self.followed_bytes
            }
        }
    }
}

/// The bytes of the regions a node holds in one role, and how many of them have no size
/// reported (0 bytes: not heard of from their leader yet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HeldBytes {
    pub bytes: u64,
    pub unknown: usize,
}

impl HeldBytes {
    /// One more region of `bytes` bytes.
    fn add(&mut self, bytes: u64) {
        self.bytes += bytes;
        self.unknown += usize::from(bytes == 0);
    }

    /// One region of `bytes` bytes fewer.
    fn remove(&mut self, bytes: u64) {
        self.bytes = self.bytes.saturating_sub(bytes);
        self.unknown = self.unknown.saturating_sub(usize::from(bytes == 0));
    }
}

/// The shared working state of one pass: the snapshot with the planned operators applied.
pub(crate) struct Tally<'a> {
    pub snap: &'a ClusterSnapshot,
    pub nodes: Vec<NodeTally>,
    /// Current leader of each region (a node index; `u32::MAX` for a node the snapshot lacks),
    /// planned moves applied. Per-region state is kept narrow and flat: a pass over a million
    /// regions touches a few bytes of fresh memory per region, not a vector each.
    leader: Vec<u32>,
    /// Each region's followers (node indexes, planned moves applied), flat: region `r`'s are
    /// `follower_nodes[follower_at[r]..follower_at[r + 1]]`, with [`NO_SLOT`] where a region has
    /// fewer than `followers_per_region` (room for the copies replica-repair adds).
    follower_at: Vec<u32>,
    follower_nodes: Vec<u32>,
    /// [`FROZEN`] and [`COOLING`] bits per region.
    flags: Vec<u8>,
    pub zones: Vec<String>,
    /// Zones holding a schedulable node.
    pub live_zones: usize,
    /// Each table's leaders per zone, only when spread rules apply.
    pub tables: TableSpreads,
    /// Each region's table number in `tables` ([`NO_TABLE`] when spread rules are off).
    pub region_table: Vec<u32>,
    pub moves_left: usize,
    pub urgent_moves_left: usize,
    pub planned: Vec<Operator>,
    /// Regions with fewer follower copies than `followers_per_region`, and with more, when the
    /// pass began: replica-repair skips its walk over the regions when it has nothing to do.
    pub followers_short: usize,
    pub followers_extra: usize,
    /// A node is hot above `(1 + load_tolerance)` times the mean load per capacity, in a
    /// dimension whose mean is at least `load_floor` (below it, load is noise).
    pub load_tolerance: f64,
    pub load_floor: f64,
    /// Mean (wcus, rcus) per unit of capacity over the schedulable nodes.
    pub mean_load: (f64, f64),
    /// Mean (bytes, wcus, rcus) of one region.
    pub mean_region: (f64, f64, f64),
    /// Mean bytes of one region with a size reported (0 when none has).
    pub mean_sized_region: f64,
    /// Leaders the schedulable nodes share (theirs and those of going nodes), follower copies
    /// they share (theirs), and their capacity: see [`Tally::share`].
    leader_total: usize,
    follower_total: usize,
    cap_sum: f64,
}

impl<'a> Tally<'a> {
    pub fn new(snap: &'a ClusterSnapshot) -> Self {
        let label = snap.spread_label.as_str();
        let mut zones: Vec<String> = Vec::new();
        let mut zone_of = |v: &str| match zones.iter().position(|z| z == v) {
            Some(i) => i,
            None => {
                zones.push(v.to_string());
                zones.len() - 1
            }
        };
        let mut nodes: Vec<NodeTally> = snap
            .nodes
            .iter()
            .map(|n| NodeTally {
                id: n.node_id,
                capacity: n.capacity(),
                schedulable: n.schedulable,
                failed: n.failed,
                zone: zone_of(if label.is_empty() {
                    ""
                } else {
                    n.labels.get(label).map_or("", String::as_str)
                }),
                leaders: 0,
                followers: 0,
                led_bytes: HeldBytes::default(),
                followed_bytes: HeldBytes::default(),
                wcus: 0.0,
                rcus: 0.0,
                led: Vec::new(),
                followed: Vec::new(),
                moves_left: snap
                    .node_moves_left
                    .get(&n.node_id)
                    .copied()
                    .unwrap_or(snap.node_moves_left_default),
            })
            .collect();
        let index = NodeIndex::new(nodes.iter().map(|n| n.id));
        let mut live: Vec<bool> = vec![false; zones.len()];
        for n in &nodes {
            live[n.zone] |= n.schedulable;
        }
        let live_zones = live.iter().filter(|l| **l).count();
        let spread = !label.is_empty() && live_zones >= 2;
        let busy: IdSet<u64> = snap.busy.iter().copied().collect();
        let queued: IdSet<u64> = snap.queued.iter().copied().collect();
        let recent: IdSet<u64> = snap
            .last_moved_ms
            .iter()
            .filter(|(_, at)| snap.now_ms.saturating_sub(**at) < snap.region_cooldown_ms)
            .map(|(r, _)| *r)
            .collect();
        let zone_count = zones.len();
        let count = snap.regions.len();
        let mut leader: Vec<u32> = Vec::with_capacity(count);
        let mut follower_at: Vec<u32> = Vec::with_capacity(count + 1);
        let mut follower_nodes: Vec<u32> = Vec::new();
        let mut flags = vec![0u8; count];
        let mut tables = TableSpreads::new(if spread { zone_count } else { 0 });
        let mut region_table = vec![NO_TABLE; if spread { count } else { 0 }];
        // The regions of a table usually come together: number a table once per run of them.
        let mut last_table = (u64::MAX, NO_TABLE);
        let (mut followers_short, mut followers_extra) = (0, 0);
        // Summed over every region, for the mean region.
        let mut sums = (0.0, 0.0, 0.0);
        let mut sized = 0usize;
        snap.regions.walk(|i, r| {
            let l = index.get(r.leader);
            let size = r.load.approximate_bytes;
            follower_at.push(follower_nodes.len() as u32);
            // A region led by a node that may not take regions (down, failed, draining) is the
            // failover's or the drain's to move; a scheduler moving it too would race them.
            let mut unknown = l.is_none_or(|l| !nodes[l].schedulable);
            for f in r.followers {
                match index.get(*f) {
                    Some(fi) => {
                        nodes[fi].followers += 1;
                        nodes[fi].followed_bytes.add(size);
                        nodes[fi].followed.push(i as u32);
                        follower_nodes.push(fi as u32);
                    }
                    None => unknown = true,
                }
            }
            let short = snap.followers_per_region.saturating_sub(r.followers.len());
            follower_nodes.extend(std::iter::repeat_n(NO_SLOT, short));
            followers_short += usize::from(short > 0);
            followers_extra += usize::from(r.followers.len() > snap.followers_per_region);
            if unknown {
                flags[i] |= STUCK;
            }
            if !busy.is_empty() && busy.contains(&r.region_id) {
                flags[i] |= FROZEN;
            }
            if !queued.is_empty() && queued.contains(&r.region_id) {
                flags[i] |= QUEUED;
            }
            if !recent.is_empty() && recent.contains(&r.region_id) {
                flags[i] |= COOLING;
            }
            let load = r.load;
            sums.0 += load.approximate_bytes as f64;
            sized += usize::from(load.approximate_bytes > 0);
            sums.1 += load.wcus;
            sums.2 += load.rcus;
            leader.push(l.map_or(u32::MAX, |l| l as u32));
            if let Some(l) = l {
                let n = &mut nodes[l];
                n.leaders += 1;
                n.led_bytes.add(load.approximate_bytes);
                n.wcus += load.wcus;
                n.rcus += load.rcus;
                n.led.push(i as u32);
                if spread {
                    let table = r.table_id();
                    if last_table.0 != table {
                        last_table = (table, tables.number(table));
                    }
                    let k = last_table.1;
                    region_table[i] = k;
                    tables.regions[k as usize] += 1;
                    *tables.leaders_mut(k, n.zone) += 1;
                }
            }
        });
        follower_at.push(follower_nodes.len() as u32);
        // A node's load is what its leaders carry; the mean is per unit of capacity.
        let (mut cap_sum, mut load_sum) = (0.0, (0.0, 0.0));
        let (mut leader_total, mut follower_total) = (0, 0);
        for (n, view) in nodes.iter().zip(&snap.nodes) {
            if n.schedulable {
                cap_sum += n.capacity;
                load_sum.0 += n.wcus;
                load_sum.1 += n.rcus;
                leader_total += n.leaders;
                follower_total += n.followers;
            } else if view.going {
                leader_total += n.leaders;
            }
        }
        let n = snap.regions.len().max(1) as f64;
        let mean_region = (sums.0 / n, sums.1 / n, sums.2 / n);
        let mean_sized_region = sums.0 / sized.max(1) as f64;
        let mean_load = if cap_sum > 0.0 {
            (load_sum.0 / cap_sum, load_sum.1 / cap_sum)
        } else {
            (0.0, 0.0)
        };
        Tally {
            snap,
            nodes,
            leader,
            follower_at,
            follower_nodes,
            flags,
            zones,
            live_zones: if spread { live_zones } else { 0 },
            tables,
            region_table,
            moves_left: snap.moves_left,
            urgent_moves_left: snap.urgent_moves_left,
            planned: Vec::new(),
            followers_short,
            followers_extra,
            load_tolerance: f64::INFINITY,
            load_floor: 0.0,
            mean_load,
            mean_region,
            mean_sized_region,
            leader_total,
            follower_total,
            cap_sum,
        }
    }

    pub fn set_load_limits(&mut self, tolerance: f64, floor: f64) {
        (self.load_tolerance, self.load_floor) = (tolerance, floor);
    }

    /// Node `i`'s share of `kind` copies: the copies the schedulable nodes share (leaders of
    /// going nodes included) in proportion to capacity. Planned moves keep the totals.
    pub fn share(&self, i: usize, kind: MoveKind) -> f64 {
        let total = match kind {
            MoveKind::Leader => self.leader_total,
            MoveKind::Follower | MoveKind::AddFollower | MoveKind::RemoveFollower => {
                self.follower_total
            }
        };
        if self.cap_sum > 0.0 {
            total as f64 * self.nodes[i].capacity / self.cap_sum
        } else {
            0.0
        }
    }

    /// Node `i`'s load per capacity in one dimension (`write`: wcus, else rcus).
    pub fn load(&self, i: usize, write: bool) -> f64 {
        let n = &self.nodes[i];
        (if write { n.wcus } else { n.rcus }) / n.capacity
    }

    /// Whether node `i`'s own reports show its load in one dimension has lasted: every one of
    /// its recent reports ([`NodeView::reported`]) at least `share` of the highest. Region
    /// loads are smoothed, but a node whose own account jumped within the window has only just
    /// heated up: hot-region waits until the heat lasts. Each node is held to its own reports
    /// alone, so follower load, which a node's totals include and region loads do not, cannot
    /// skew one node against another. True where reports say nothing
    /// ([`Tally::reported_range`]), and with `share` 0.
    pub fn sustained(&self, i: usize, write: bool, share: f64) -> bool {
        self.reported_range(i, write)
            .is_none_or(|(low, high)| low >= share * high)
    }

    /// The lowest and highest load per second over node `i`'s recent reports in one dimension.
    /// None where they say nothing: fewer than two reports, or none above zero (a datanode that
    /// reports no totals).
    pub fn reported_range(&self, i: usize, write: bool) -> Option<(f64, f64)> {
        let reports = &self.snap.nodes[i].reported;
        let loads = reports.iter().map(|r| r.get(write));
        let (low, high) = loads.fold((f64::INFINITY, 0.0f64), |(l, h), x| (l.min(x), h.max(x)));
        (reports.len() >= 2 && high > 0.0).then_some((low, high))
    }

    /// The load per capacity above which a node is hot in one dimension; infinite when that
    /// dimension's mean is below the floor.
    pub fn hot_limit(&self, write: bool) -> f64 {
        self.load_limit(write, 1.0)
    }

    /// The mean load per capacity times `1 + bands × tolerance` (infinite below the floor).
    fn load_limit(&self, write: bool, bands: f64) -> f64 {
        let mean = if write {
            self.mean_load.0
        } else {
            self.mean_load.1
        };
        if mean < self.load_floor || mean <= 0.0 {
            f64::INFINITY
        } else {
            mean * (1.0 + bands * self.load_tolerance)
        }
    }

    /// Whether leading `region` too would leave node `to` at most `bands` hot tolerances above
    /// the mean load in both dimensions (a region without load always fits). Hot-region keeps
    /// its targets below the hot limit itself (1 band), so its moves cannot be reversed; count
    /// moves may go up to 2 bands: a node that took the hottest regions while it was empty must
    /// still be able to take its share of regions, and hot-region then trades load back, cold
    /// region for hot, keeping the counts.
    pub fn load_fits(&self, region: usize, to: usize, bands: f64) -> bool {
        self.load_fits_in(region, to, bands, true) && self.load_fits_in(region, to, bands, false)
    }

    /// [`Tally::load_fits`] in one dimension (`write`: wcus, else rcus).
    pub fn load_fits_in(&self, region: usize, to: usize, bands: f64, write: bool) -> bool {
        let r = self.snap.regions.load(region);
        let (load, add) = if write {
            (self.nodes[to].wcus, r.wcus)
        } else {
            (self.nodes[to].rcus, r.rcus)
        };
        add <= 0.0 || (load + add) / self.nodes[to].capacity <= self.load_limit(write, bands)
    }

    /// The node index of `id`.
    #[cfg(test)]
    pub fn node(&self, id: u64) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .expect("a node of the snapshot")
    }

    /// Schedulable node indexes.
    pub fn schedulable(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].schedulable)
    }

    /// Whether `region` may be planned by a balancing scheduler (`repair`: a spread repair,
    /// which ignores the cool-down).
    pub fn movable(&self, region: usize, repair: bool) -> bool {
        let f = self.flags[region];
        f & (FROZEN | STUCK | QUEUED) == 0 && (repair || f & COOLING == 0)
    }

    /// Whether replica-repair may plan `region`: neither busy, planned, nor stuck; a queued
    /// balancing operator's region it takes over (a region short of copies comes first).
    pub fn repairable(&self, region: usize) -> bool {
        self.flags[region] & (FROZEN | STUCK) == 0
    }

    fn frozen(&self, region: usize) -> bool {
        self.flags[region] & (FROZEN | STUCK | QUEUED) != 0
    }

    /// Whether `region` is busy or planned already this pass (a drain may move any other).
    pub fn claimed(&self, region: usize) -> bool {
        self.flags[region] & FROZEN != 0
    }

    /// The node index leading `region` now ([`NO_NODE`] for a node the snapshot lacks).
    pub fn leader_of(&self, region: usize) -> usize {
        match self.leader[region] {
            u32::MAX => NO_NODE,
            l => l as usize,
        }
    }

    fn follower_slots(&self, region: usize) -> std::ops::Range<usize> {
        self.follower_at[region] as usize..self.follower_at[region + 1] as usize
    }

    /// The node indexes following `region` now (nodes the snapshot lacks left out).
    pub fn followers_of(&self, region: usize) -> impl Iterator<Item = usize> + '_ {
        self.follower_nodes[self.follower_slots(region)]
            .iter()
            .filter(|f| **f != NO_SLOT)
            .map(|f| *f as usize)
    }

    /// Whether node `node` leads or follows `region` now.
    pub fn holds(&self, region: usize, node: usize) -> bool {
        self.leader_of(region) == node || self.followers_of(region).any(|f| f == node)
    }

    /// Whether a balancing scheduler may move `region`'s `kind` copy from `from` to `to`: it
    /// is neither cooling down nor waiting ([`Tally::movable`]), the move is allowed
    /// ([`Tally::can_move`]), and it does not send the copy back to a node a balancing move
    /// took a copy of the region off ([`ClusterSnapshot::last_left`]).
    pub fn may_balance(&self, region: usize, kind: MoveKind, from: usize, to: usize) -> bool {
        self.movable(region, false)
            && !self.returns(region, to)
            && self.can_move(region, kind, from, to)
    }

    /// Whether moving a copy of `region` to `to` would send it back to a node a balancing move
    /// took a copy of it off.
    pub fn returns(&self, region: usize, to: usize) -> bool {
        let left = &self.snap.last_left;
        !left.is_empty()
            && left
                .get(&self.snap.regions.region_id(region))
                .is_some_and(|l| l.contains(self.nodes[to].id))
    }

    /// Whether the limits allow one more move from `from` to `to`.
    pub fn has_budget(&self, from: usize, to: usize) -> bool {
        self.moves_left > 0 && self.nodes[from].moves_left > 0 && self.nodes[to].moves_left > 0
    }

    /// Whether moving `region`'s `kind` copy from `from` to `to` is allowed: `to` schedulable
    /// and not holding it, the region not frozen, and no spread rule broken that holds now.
    pub fn can_move(&self, region: usize, kind: MoveKind, from: usize, to: usize) -> bool {
        if !self.nodes[to].schedulable || self.holds(region, to) || self.frozen(region) {
            return false;
        }
        holder_of(self, region, kind, from) && self.spread_allows(region, kind, from, to)
    }

    /// Whether a drain may move `region`'s `kind` copy from `from` to `to`: `to` schedulable and
    /// holding no copy (leadership may go to a follower), the region neither busy nor planned
    /// (a drained leader is not schedulable, so [`Tally::can_move`] would refuse every region),
    /// and, with `spread`, no spread rule broken.
    pub fn can_drain(
        &self,
        region: usize,
        kind: MoveKind,
        from: usize,
        to: usize,
        spread: bool,
    ) -> bool {
        if !self.nodes[to].schedulable || self.claimed(region) {
            return false;
        }
        let handover = kind == MoveKind::Leader && self.followers_of(region).any(|f| f == to);
        if !holder_of(self, region, kind, from) || (self.holds(region, to) && !handover) {
            return false;
        }
        !spread
            || (handover || self.replicas_spread(region, from, to))
                && self.leaders_spread(region, kind, from, to)
    }

    /// The spread rules a move must not break (it may leave an existing violation as it is):
    /// a region's replicas in distinct zones while zones enough hold schedulable nodes, and no
    /// zone leading more than its share (`ceil(regions / zones)`) of a table.
    fn spread_allows(&self, region: usize, kind: MoveKind, from: usize, to: usize) -> bool {
        self.replicas_spread(region, from, to) && self.leaders_spread(region, kind, from, to)
    }

    /// Whether the region's copy on `from` may go to `to` with its copies kept in distinct zones.
    fn replicas_spread(&self, region: usize, from: usize, to: usize) -> bool {
        let (zf, zt) = (self.nodes[from].zone, self.nodes[to].zone);
        if self.live_zones < 2 || zf == zt {
            return true;
        }
        let mut others = std::iter::once(self.leader_of(region))
            .chain(self.followers_of(region))
            .filter(|n| *n != from);
        !others.any(|n| self.nodes[n].zone == zt)
    }

    /// Whether moving the region's `kind` copy from `from` to `to` keeps `to`'s zone within its
    /// share of the table's leaders.
    fn leaders_spread(&self, region: usize, kind: MoveKind, from: usize, to: usize) -> bool {
        let (zf, zt) = (self.nodes[from].zone, self.nodes[to].zone);
        if self.live_zones < 2 || zf == zt {
            return true;
        }
        if kind == MoveKind::Leader {
            let k = self.region_table[region];
            if k != NO_TABLE && self.tables.leaders(k, zt) + 1 > self.share_of(k) {
                return false;
            }
        }
        true
    }

    /// The most leaders of table number `k` one zone should hold.
    pub fn share_of(&self, k: u32) -> u32 {
        self.tables
            .regions(k)
            .div_ceil(self.live_zones.max(1) as u32)
    }

    /// Records `op` as planned and applies it to the tally (`from` is not read for an added
    /// follower, nor `to` for a dropped one).
    pub fn apply(&mut self, op: Operator, region: usize, from: usize, to: usize) {
        let r = self.snap.regions.load(region);
        match op.kind {
            MoveKind::Leader => {
                self.leader[region] = to as u32;
                let f = &mut self.nodes[from];
                f.leaders -= 1;
                f.led_bytes.remove(r.approximate_bytes);
                f.wcus -= r.wcus;
                f.rcus -= r.rcus;
                let t = &mut self.nodes[to];
                t.leaders += 1;
                t.led_bytes.add(r.approximate_bytes);
                t.wcus += r.wcus;
                t.rcus += r.rcus;
                let k = self.region_table.get(region).copied().unwrap_or(NO_TABLE);
                if k != NO_TABLE {
                    let (zf, zt) = (self.nodes[from].zone, self.nodes[to].zone);
                    let f = self.tables.leaders_mut(k, zf);
                    *f = f.saturating_sub(1);
                    *self.tables.leaders_mut(k, zt) += 1;
                }
            }
            MoveKind::Follower => {
                let slots = self.follower_slots(region);
                for f in self.follower_nodes[slots].iter_mut() {
                    if *f as usize == from {
                        *f = to as u32;
                    }
                }
                self.nodes[from].followers -= 1;
                self.nodes[from].followed_bytes.remove(r.approximate_bytes);
                self.nodes[to].followers += 1;
                self.nodes[to].followed_bytes.add(r.approximate_bytes);
            }
            MoveKind::AddFollower => {
                let slots = self.follower_slots(region);
                let free = self.follower_nodes[slots]
                    .iter_mut()
                    .find(|f| **f == NO_SLOT);
                if let Some(f) = free {
                    *f = to as u32;
                }
                self.nodes[to].followers += 1;
                self.nodes[to].followed_bytes.add(r.approximate_bytes);
                self.follower_total += 1;
            }
            MoveKind::RemoveFollower => {
                let slots = self.follower_slots(region);
                for f in self.follower_nodes[slots].iter_mut() {
                    if *f as usize == from {
                        *f = NO_SLOT;
                    }
                }
                self.nodes[from].followers -= 1;
                self.nodes[from].followed_bytes.remove(r.approximate_bytes);
                if self.nodes[from].schedulable {
                    self.follower_total -= 1;
                }
            }
        }
        self.flags[region] |= FROZEN;
        self.moves_left = self.moves_left.saturating_sub(1);
        if op.kind != MoveKind::AddFollower {
            self.nodes[from].moves_left = self.nodes[from].moves_left.saturating_sub(1);
        }
        if op.kind != MoveKind::RemoveFollower {
            self.nodes[to].moves_left = self.nodes[to].moves_left.saturating_sub(1);
        }
        self.planned.push(op);
    }

    /// Records an urgent `op` (a drain's, an eviction's, a repair's) and applies it: within the
    /// urgent budget, not the balancing ones (per-node limits included). A leader handed to a follower `to` leaves `from` following in its place when
    /// `keep_source` (evicting leaders), else the follower slot is emptied (the drain closes the
    /// old leader's copy).
    pub fn apply_urgent(
        &mut self,
        op: Operator,
        region: usize,
        from: usize,
        to: usize,
        keep_source: bool,
    ) {
        let handover = op.kind == MoveKind::Leader && self.followers_of(region).any(|f| f == to);
        if handover {
            let slots = self.follower_slots(region);
            for f in self.follower_nodes[slots].iter_mut() {
                if *f as usize == to {
                    *f = if keep_source { from as u32 } else { NO_SLOT };
                }
            }
            let size = self.snap.regions.load(region).approximate_bytes;
            self.nodes[to].followers -= 1;
            self.nodes[to].followed_bytes.remove(size);
            if keep_source {
                self.nodes[from].followers += 1;
                self.nodes[from].followed_bytes.add(size);
            }
        }
        let (moves_left, from_left, to_left) = (
            self.moves_left,
            self.nodes[from].moves_left,
            self.nodes[to].moves_left,
        );
        self.apply(op, region, from, to);
        (self.moves_left, self.nodes[from].moves_left) = (moves_left, from_left);
        self.nodes[to].moves_left = to_left;
        self.urgent_moves_left = self.urgent_moves_left.saturating_sub(1);
    }

    /// Regions at node `i` in `kind`'s role now (planned moves off it skipped; moves onto it are
    /// frozen anyway, so never listed).
    pub fn held(&self, i: usize, kind: MoveKind) -> impl Iterator<Item = usize> + '_ {
        self.held_from(i, kind, 0)
    }

    /// [`Tally::held`], starting at the `start`-th region (modulo their number) and wrapping
    /// around: a scan that examines only the first regions rotates through all of them over
    /// successive passes instead of looking at the same ones forever.
    pub fn held_from(
        &self,
        i: usize,
        kind: MoveKind,
        start: usize,
    ) -> impl Iterator<Item = usize> + '_ {
        let list = match kind {
            MoveKind::Leader => &self.nodes[i].led,
            MoveKind::Follower | MoveKind::AddFollower | MoveKind::RemoveFollower => {
                &self.nodes[i].followed
            }
        };
        let start = if list.is_empty() {
            0
        } else {
            start % list.len()
        };
        list[start..]
            .iter()
            .chain(&list[..start])
            .map(|r| *r as usize)
            .filter(move |r| self.holds(*r, i) && !self.frozen(*r))
    }

    /// The region count of node `i` in `kind`'s role.
    pub fn count(&self, i: usize, kind: MoveKind) -> usize {
        match kind {
            MoveKind::Leader => self.nodes[i].leaders,
            MoveKind::Follower | MoveKind::AddFollower | MoveKind::RemoveFollower => {
                self.nodes[i].followers
            }
        }
    }

    /// The id of node index `i`.
    pub fn id(&self, i: usize) -> u64 {
        self.nodes[i].id
    }

    /// Whether a node id is in the snapshot.
    #[cfg(test)]
    pub fn knows(&self, id: u64) -> bool {
        self.nodes.iter().any(|n| n.id == id)
    }
}

/// Whether node `from` holds `region`'s `kind` copy now (an added follower has no holder).
fn holder_of(t: &Tally, region: usize, kind: MoveKind, from: usize) -> bool {
    match kind {
        MoveKind::Leader => t.leader_of(region) == from,
        MoveKind::Follower | MoveKind::RemoveFollower => t.followers_of(region).any(|f| f == from),
        MoveKind::AddFollower => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regions::RegionView;

    #[test]
    fn follower_bytes_follow_every_kind_of_move() {
        use crate::operator::{Operator, Priority, EVICT_LEADERS_SCHEDULER};
        const MIB: u64 = 1 << 20;
        // Region 0 led by node 1 and followed by 2 (10 MiB); region 1 led by 2, followed by 3,
        // no size reported yet; region 2 led by 3, followed by 1 (4 MiB).
        let mut snap = crate::test_support::snapshot(4, &[(1, 1), (2, 1), (3, 1)]);
        for (r, (follower, mib)) in
            snap.regions
                .list_mut()
                .iter_mut()
                .zip([(2, 10), (3, 0), (1, 4)])
        {
            r.followers = vec![follower].into();
            r.approximate_bytes = mib * MIB;
        }
        let ids: Vec<u64> = snap.regions.iter().map(|r| r.region_id).collect();
        let op = |region: usize, kind: MoveKind, from: u64, to: u64| Operator {
            region_id: ids[region],
            kind,
            from,
            to,
            to_follows: false,
            scheduler: EVICT_LEADERS_SCHEDULER,
            priority: Priority::High,
            reason: String::new(),
            figures: Vec::new(),
        };
        let mut t = Tally::new(&snap);
        let followed = |t: &Tally| -> Vec<(u64, usize)> {
            let held = t.nodes.iter().map(|n| n.held_bytes(MoveKind::Follower));
            held.map(|h| (h.bytes / MIB, h.unknown)).collect()
        };
        assert_eq!(followed(&t), [(4, 0), (10, 0), (0, 1), (0, 0)]);
        // Region 0's follower copy moves from node 2 to node 4.
        t.apply(op(0, MoveKind::Follower, 2, 4), 0, 1, 3);
        assert_eq!(followed(&t), [(4, 0), (0, 0), (0, 1), (10, 0)]);
        // Node 2 takes a copy of region 2; node 1 gives its copy up.
        t.apply(op(2, MoveKind::AddFollower, 0, 2), 2, 0, 1);
        t.apply(op(2, MoveKind::RemoveFollower, 1, 0), 2, 0, 0);
        assert_eq!(followed(&t), [(0, 0), (4, 0), (0, 1), (10, 0)]);
        // Region 1's leadership goes to its follower, node 3, and node 2 follows in its place.
        t.apply_urgent(op(1, MoveKind::Leader, 2, 3), 1, 1, 2, true);
        assert_eq!(followed(&t), [(0, 0), (4, 1), (0, 0), (10, 0)]);
        // Region 0's goes to node 4, and node 1's copy closes: node 4 leads its 10 MiB.
        t.apply_urgent(op(0, MoveKind::Leader, 1, 4), 0, 0, 3, false);
        assert_eq!(followed(&t), [(0, 0), (4, 1), (0, 0), (0, 0)]);
        let led: Vec<u64> = t
            .nodes
            .iter()
            .map(|n| n.held_bytes(MoveKind::Leader).bytes / MIB)
            .collect();
        assert_eq!(led, [0, 0, 4, 10]);
    }

    #[test]
    fn capacity_label_is_parsed_clamped_and_defaults_to_one() {
        let n = |v: &str| NodeView::new(1).with_label(CAPACITY_LABEL, v).capacity();
        assert_eq!(NodeView::new(1).capacity(), 1.0);
        assert_eq!(n("2.5"), 2.5);
        assert_eq!(n("-1"), 1.0);
        assert_eq!(n("NaN"), 1.0);
        assert_eq!(n("lots"), 1.0);
        assert_eq!(n("1e9"), NODE_CAPACITY_MAX);
    }

    #[test]
    fn tables_are_numbered_once_in_order_or_out_of_it() {
        let mut t = TableSpreads::new(2);
        let order = [3, 3, 5, 9, 5, 3, 9, 1, 5, 7, 1];
        let numbers: Vec<u32> = order.iter().map(|id| t.number(*id)).collect();
        assert_eq!(numbers, [0, 0, 1, 2, 1, 0, 2, 3, 1, 4, 3]);
        assert_eq!(t.len(), 5);
        assert_eq!((0..5).map(|k| t.id(k)).collect::<Vec<_>>(), [3, 5, 9, 1, 7]);
        assert_eq!(t.leaders.len(), 10);
    }

    #[test]
    fn a_node_index_finds_small_and_large_ids_and_nothing_else() {
        let big = NODE_INDEX_DENSE_IDS_MAX + 7;
        let index = NodeIndex::new([5, big, 0, 3]);
        assert_eq!(index.get(5), Some(0));
        assert_eq!(index.get(big), Some(1));
        assert_eq!(index.get(0), Some(2));
        assert_eq!(index.get(3), Some(3));
        for absent in [1, 4, 6, big + 1, u64::MAX] {
            assert_eq!(index.get(absent), None, "{absent}");
        }
        let mut index = index;
        assert!(index.insert(4, 9) && !index.insert(4, 8) && !index.insert(big, 2));
        assert_eq!((index.get(4), index.get(big)), (Some(8), Some(2)));
    }

    #[test]
    fn regions_on_unknown_nodes_busy_or_cooling_are_not_movable() {
        let snap = ClusterSnapshot {
            now_ms: 10_000,
            nodes: vec![NodeView::new(1), NodeView::new(2)],
            regions: vec![
                RegionView::new(1 << 32, 1),
                RegionView::new((1 << 32) | 1, 9),
                RegionView::new((1 << 32) | 2, 1),
                RegionView::new((1 << 32) | 3, 1),
            ]
            .into(),
            busy: vec![(1 << 32) | 2],
            last_moved_ms: [((1 << 32) | 3, 9_000)].into(),
            region_cooldown_ms: 5_000,
            ..ClusterSnapshot::default()
        };
        let t = Tally::new(&snap);
        assert!(t.movable(0, false));
        assert!(!t.movable(1, true), "held by a node the snapshot lacks");
        assert!(!t.movable(2, true), "busy");
        assert!(!t.movable(3, false), "cooling down");
        assert!(t.movable(3, true), "a repair ignores the cool-down");
        assert_eq!(t.nodes[t.node(1)].leaders, 3);
        assert!(!t.knows(9));
        let mut down = snap.clone();
        down.nodes[0].schedulable = false;
        let t = Tally::new(&down);
        assert!(
            !t.movable(0, true),
            "led by a node failover or a drain is moving off"
        );
    }

    #[test]
    fn left_nodes_keep_the_latest_few_once_each() {
        let mut l = LeftNodes::default();
        assert!(!l.contains(0) && l.nodes().next().is_none());
        for n in [1, 2, 1, 3, 4] {
            l.push(n);
        }
        assert_eq!(l.nodes().collect::<Vec<_>>(), [4, 3, 1]);
        assert!(!l.contains(2), "the oldest forgotten");
    }
}
