//! Typed calls of the stats history part of `cairn.v1.Meta` on [`MetaClient`]: a node's last
//! stats reports and a region's load as the leader's schedulers see it.

use cairn_proto::cairnpb::{
    GetNodeStatsRequest, GetRegionStatsRequest, NodeStatsHistory, RegionStatsHistory,
};

use super::ddl::meta_rpc;
use super::MetaClient;
use crate::ClientError;

impl MetaClient {
    /// Node `node_id`'s stats history, oldest first (at most 64 reports); `NotFound` when the
    /// leader does not know the node.
    pub async fn get_node_stats(&self, node_id: u64) -> Result<NodeStatsHistory, ClientError> {
        self.etcd
            .call(true, |ch| async move {
                Ok(meta_rpc(ch)
                    .get_node_stats(GetNodeStatsRequest { node_id })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Region `region_id`'s load history (at most 6 samples) and smoothed load; `NotFound`
    /// when no table route names the region.
    pub async fn get_region_stats(
        &self,
        region_id: u64,
    ) -> Result<RegionStatsHistory, ClientError> {
        self.etcd
            .call(true, |ch| async move {
                Ok(meta_rpc(ch)
                    .get_region_stats(GetRegionStatsRequest { region_id })
                    .await?
                    .into_inner())
            })
            .await
    }
}
