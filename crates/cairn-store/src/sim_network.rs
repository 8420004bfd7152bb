//! The simulated Raft network of the deterministic simulation: openraft's RPCs delivered between
//! nodes of one process, through links the simulation cuts, delays and makes lossy, with every
//! choice drawn from a seeded generator.
//!
//! A message crosses a link in a delay drawn from the configured range (tokio's paused clock
//! measures it), or is lost: then the sender sees its RPC fail, after the delay, as it would see
//! a timeout. A request and its answer cross the link separately, so an answer can be lost after
//! the request took effect. Payloads are encoded and decoded as on the wire.

use crate::network::{decode, encode};
use crate::{Raft, TypeConfig};
use cairn_types::NodeAddrs;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{OptionalSend, RaftNetworkV2};
use rand10::rngs::SmallRng;
use rand10::{RngExt, SeedableRng};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Called on a node when an AppendEntries reaches it (the server notes the leader's contact).
pub type ContactHook = Arc<dyn Fn() + Send + Sync>;

struct Link {
    /// One-way delay range, milliseconds.
    delay_ms: (u64, u64),
    /// Chance that a message is lost, per thousand.
    loss_per_mille: u32,
}

struct State {
    nodes: BTreeMap<u64, (Raft, ContactHook)>,
    /// Hosts on the network that are not Raft nodes (simulated datanodes).
    hosts: BTreeSet<u64>,
    /// Directed links that are down (from, to).
    cut: BTreeSet<(u64, u64)>,
    link: Link,
    rng: SmallRng,
}

/// The network shared by every node of a simulated cluster.
pub struct SimNet {
    state: Mutex<State>,
}

impl SimNet {
    /// A network with no faults, 1–5 ms links, whose choices follow `seed`.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                nodes: BTreeMap::new(),
                hosts: BTreeSet::new(),
                cut: BTreeSet::new(),
                link: Link {
                    delay_ms: (1, 5),
                    loss_per_mille: 0,
                },
                rng: SmallRng::seed_from_u64(seed),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A node joins the network (started or restarted); `contact` runs on every AppendEntries
    /// it receives.
    pub fn attach(&self, id: u64, raft: Raft, contact: ContactHook) {
        self.state().nodes.insert(id, (raft, contact));
    }

    /// A node leaves the network (crashed): messages to it are lost.
    pub fn detach(&self, id: u64) {
        self.state().nodes.remove(&id);
    }

    /// A host that is not a Raft node (a simulated datanode) joins the network: messages
    /// between it and attached nodes travel like any others.
    pub fn add_host(&self, id: u64) {
        self.state().hosts.insert(id);
    }

    /// Cuts every link between `side` and the other nodes of `all`, both ways.
    pub fn partition(&self, side: &[u64], all: &[u64]) {
        let mut s = self.state();
        for a in side {
            for b in all.iter().filter(|b| !side.contains(b)) {
                s.cut.insert((*a, *b));
                s.cut.insert((*b, *a));
            }
        }
    }

    /// Cuts the link from `from` to `to` only (an asymmetric fault).
    pub fn cut_one_way(&self, from: u64, to: u64) {
        self.state().cut.insert((from, to));
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.state().cut.clear();
    }

    /// Sets the one-way delay range and the loss rate of every link.
    pub fn set_links(&self, delay_ms: (u64, u64), loss_per_mille: u32) {
        let mut s = self.state();
        s.link = Link {
            delay_ms: (delay_ms.0, delay_ms.1.max(delay_ms.0)),
            loss_per_mille: loss_per_mille.min(1000),
        };
    }

    /// Whether `from` can reach `to` now (both attached, link up).
    pub fn reachable(&self, from: u64, to: u64) -> bool {
        let s = self.state();
        let present = |id: u64| s.nodes.contains_key(&id) || s.hosts.contains(&id);
        present(from) && present(to) && !s.cut.contains(&(from, to))
    }

    /// Sends one message from `from` to `to`: waits the link's delay and says whether it
    /// arrived (the link was up when it left and when it landed, and it was not lost).
    pub async fn transit(&self, from: u64, to: u64) -> bool {
        let (delay, lost) = {
            let mut s = self.state();
            let (lo, hi) = s.link.delay_ms;
            let delay = s.rng.random_range(lo..=hi);
            let lost = s.rng.random_range(0..1000) < s.link.loss_per_mille;
            (delay, lost)
        };
        let up_at_send = self.reachable(from, to);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        up_at_send && !lost && self.reachable(from, to)
    }

    fn node(&self, id: u64) -> Option<(Raft, ContactHook)> {
        self.state().nodes.get(&id).cloned()
    }
}

/// The network of one node: its RPC clients to the others.
#[derive(Clone)]
pub struct SimNetwork {
    from: u64,
    net: Arc<SimNet>,
}

impl SimNetwork {
    /// Node `from`'s side of `net`.
    pub fn new(from: u64, net: Arc<SimNet>) -> Self {
        Self { from, net }
    }
}

impl RaftNetworkFactory<TypeConfig> for SimNetwork {
    type Network = SimPeer;

    async fn new_client(&mut self, target: u64, _node: &NodeAddrs) -> SimPeer {
        SimPeer {
            from: self.from,
            to: target,
            net: self.net.clone(),
        }
    }
}

/// Node `from`'s client for node `to`.
pub struct SimPeer {
    from: u64,
    to: u64,
    net: Arc<SimNet>,
}

fn wire<T: Serialize + DeserializeOwned>(v: &T) -> Result<T, NetworkError<TypeConfig>> {
    encode(v)
        .and_then(|b| decode(&b))
        .map_err(NetworkError::from_string)
}

impl SimPeer {
    /// Delivers `req` to the target's Raft with `serve`, and its answer back, within the RPC's
    /// hard deadline; `from_leader` when the message is the leader's replication (the target
    /// notes the contact).
    async fn call<Req, Resp, E, F, Fut>(
        &self,
        from_leader: bool,
        req: &Req,
        ttl: Duration,
        serve: F,
    ) -> Result<Resp, RPCError<TypeConfig>>
    where
        Req: Serialize + DeserializeOwned,
        Resp: Serialize + DeserializeOwned,
        E: std::fmt::Display,
        F: FnOnce(Raft, Req) -> Fut,
        Fut: Future<Output = Result<Resp, E>>,
    {
        let round_trip = async {
            if !self.net.transit(self.from, self.to).await {
                return Err(RPCError::Unreachable(Unreachable::from_string(format!(
                    "simulated network: message {} -> {} lost",
                    self.from, self.to
                ))));
            }
            let Some((raft, contact)) = self.net.node(self.to) else {
                return Err(RPCError::Unreachable(Unreachable::from_string(
                    "simulated network: target down",
                )));
            };
            let req = wire(req).map_err(RPCError::Network)?;
            if from_leader {
                contact();
            }
            let resp = serve(raft, req)
                .await
                .map_err(|e| RPCError::Network(NetworkError::from_string(e.to_string())))?;
            let resp = wire(&resp).map_err(RPCError::Network)?;
            if !self.net.transit(self.to, self.from).await {
                return Err(RPCError::Network(NetworkError::from_string(format!(
                    "simulated network: answer {} -> {} lost",
                    self.to, self.from
                ))));
            }
            Ok(resp)
        };
        match tokio::time::timeout(ttl, round_trip).await {
            Ok(r) => r,
            Err(_) => Err(RPCError::Network(NetworkError::from_string(
                "simulated network: timed out",
            ))),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for SimPeer {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(true, &rpc, option.hard_ttl(), |raft, r| async move {
            raft.append_entries(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(false, &rpc, option.hard_ttl(), |raft, r| async move {
            raft.vote(r).await
        })
        .await
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(false, &rpc, option.hard_ttl(), |raft, r| async move {
            raft.pre_vote(r).await
        })
        .await
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(false, &req, option.hard_ttl(), |raft, r| async move {
            raft.handle_transfer_leader(r).await
        })
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<TypeConfig>,
        snapshot: SnapshotOf<TypeConfig, Vec<u8>>,
        cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = (vote, snapshot.meta, snapshot.snapshot);
        let send = self.call(
            true,
            &req,
            option.hard_ttl(),
            |raft, (vote, meta, data)| async move {
                raft.install_full_snapshot(
                    vote,
                    openraft::Snapshot {
                        meta,
                        snapshot: data,
                    },
                )
                .await
            },
        );
        tokio::select! {
            biased;
            closed = cancel => Err(StreamingError::Closed(closed)),
            resp = send => resp.map_err(|e| match e {
                RPCError::Unreachable(u) => StreamingError::Unreachable(u),
                RPCError::Network(n) => StreamingError::Network(n),
                other => StreamingError::Network(NetworkError::from_string(other.to_string())),
            }),
        }
    }
}
