//! etcd `Cluster` service: MemberList, MemberAdd, MemberRemove, MemberPromote.
//!
//! Members are the Raft membership; ids are Cairn node ids. Changes run on the leader.

use crate::errors;
use crate::leader::node::Node;
use crate::replica::peer_request::{LeaderRequest, LeaderResponse};
use cairn_proto::etcdserverpb::cluster_server::Cluster;
use cairn_proto::etcdserverpb::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse,
    MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse,
    MemberUpdateRequest, MemberUpdateResponse,
};
use std::sync::Arc;
use tonic::{Code, Request, Response, Status};

/// The etcd Cluster service of one node.
pub struct ClusterService {
    node: Arc<Node>,
}

impl ClusterService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

fn url(addr: &str) -> String {
    if addr.starts_with("http://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

/// All members as etcd reports them, from this node's applied membership.
pub fn members(node: &Node) -> Vec<Member> {
    let s = node.sm.read();
    let m = s.membership.membership();
    let voters: std::collections::BTreeSet<u64> = m.voter_ids().collect();
    m.nodes()
        .map(|(id, addrs)| {
            let (client, _) = s.node_addrs.get(id).cloned().unwrap_or_default();
            Member {
                id: *id,
                name: if client.is_empty() {
                    String::new()
                } else {
                    format!("cairn-{id}")
                },
                peer_ur_ls: vec![url(&addrs.peer)],
                client_ur_ls: if client.is_empty() {
                    vec![]
                } else {
                    vec![url(&client)]
                },
                is_learner: !voters.contains(id),
            }
        })
        .collect()
}

fn peer_addr_of(urls: &[String]) -> Result<String, Status> {
    let first = urls.first().ok_or_else(|| {
        Status::new(
            Code::InvalidArgument,
            "cairn: peerURLs must name one peer address",
        )
    })?;
    let addr = first
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    if !addr.contains(':') || urls.len() > 1 {
        return Err(Status::new(
            Code::InvalidArgument,
            format!("cairn: peerURLs must be exactly one HOST:PORT, got {urls:?}"),
        ));
    }
    Ok(addr)
}

// etcd's Cluster answers carry no revision in their header: membership is not in the MVCC
// store. So do Cairn's.
#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        request: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("MemberAdd", async {
                let req = request.into_inner();
                let peer_addr = peer_addr_of(&req.peer_ur_ls)?;
                let id = match node
                    .leader_call(LeaderRequest::MemberAdd {
                        peer_addr: peer_addr.clone(),
                        learner: req.is_learner,
                    })
                    .await?
                {
                    LeaderResponse::MemberAdded { id } => id,
                    other => return Err(errors::internal(format!("unexpected answer {other:?}"))),
                };
                node.read_barrier().await?;
                Ok(Response::new(MemberAddResponse {
                    header: node.header(0),
                    member: Some(Member {
                        id,
                        name: String::new(),
                        peer_ur_ls: vec![url(&peer_addr)],
                        client_ur_ls: vec![],
                        is_learner: req.is_learner,
                    }),
                    members: members(node),
                }))
            })
            .await
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("MemberRemove", async {
                let id = request.into_inner().id;
                node.leader_call(LeaderRequest::MemberRemove { id }).await?;
                node.read_barrier().await?;
                Ok(Response::new(MemberRemoveResponse {
                    header: node.header(0),
                    members: members(node),
                }))
            })
            .await
    }

    async fn member_update(
        &self,
        request: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("MemberUpdate", async {
                let req = request.into_inner();
                let peer_addr = peer_addr_of(&req.peer_ur_ls)?;
                node.leader_call(LeaderRequest::MemberUpdate {
                    id: req.id,
                    peer_addr,
                })
                .await?;
                node.read_barrier().await?;
                Ok(Response::new(MemberUpdateResponse {
                    header: node.header(0),
                    members: members(node),
                }))
            })
            .await
    }

    async fn member_list(
        &self,
        request: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("MemberList", async {
                if request.into_inner().linearizable {
                    node.read_barrier().await?;
                }
                Ok(Response::new(MemberListResponse {
                    header: node.header(0),
                    members: members(node),
                }))
            })
            .await
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let node = &self.node;
        node.metrics
            .track("MemberPromote", async {
                let id = request.into_inner().id;
                node.leader_call(LeaderRequest::MemberPromote { id })
                    .await?;
                node.read_barrier().await?;
                Ok(Response::new(MemberPromoteResponse {
                    header: node.header(0),
                    members: members(node),
                }))
            })
            .await
    }
}
