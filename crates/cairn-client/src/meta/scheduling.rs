//! Typed calls of the schedulers' part of `cairn.v1.Meta` on [`MetaClient`]: scheduler settings,
//! dry-run plans and the leader's operators.

use std::collections::BTreeMap;

use cairn_proto::cairnpb::{
    CancelOperatorRequest, DdlResponse, GetOperatorRequest, ListOperatorsRequest,
    ListOperatorsResponse, ListSchedulersRequest, ListSchedulersResponse, OperatorView,
    PlanScheduleRequest, SetSchedulerRequest,
};

use super::ddl::meta_rpc;
use super::MetaClient;
use crate::ClientError;

impl MetaClient {
    /// Every scheduler, on or off, with its parameters (a linearizable read, retried).
    pub async fn list_schedulers(&self) -> Result<ListSchedulersResponse, ClientError> {
        self.etcd
            .call(true, |ch| async move {
                let request = ListSchedulersRequest {
                    serializable: false,
                };
                Ok(meta_rpc(ch).list_schedulers(request).await?.into_inner())
            })
            .await
    }

    /// Switches scheduler `name` on or off (`None`: leaves it) and sets `params`. Setting the
    /// same values again is harmless, so this is retried like a read.
    pub async fn set_scheduler(
        &self,
        name: &str,
        enabled: Option<bool>,
        params: BTreeMap<String, String>,
    ) -> Result<DdlResponse, ClientError> {
        let request = SetSchedulerRequest {
            name: name.to_string(),
            enabled,
            params: params.into_iter().collect(),
        };
        self.etcd
            .call(true, |ch| {
                let request = request.clone();
                async move { Ok(meta_rpc(ch).set_scheduler(request).await?.into_inner()) }
            })
            .await
    }

    /// What one scheduling pass would plan now; moves nothing.
    pub async fn plan_schedule(&self) -> Result<ListOperatorsResponse, ClientError> {
        self.etcd
            .call(true, |ch| async move {
                let request = PlanScheduleRequest {};
                Ok(meta_rpc(ch).plan_schedule(request).await?.into_inner())
            })
            .await
    }

    /// The leader's queued and running operators, and with `finished` the recently finished.
    pub async fn list_operators(
        &self,
        finished: bool,
    ) -> Result<ListOperatorsResponse, ClientError> {
        self.etcd
            .call(true, |ch| async move {
                let request = ListOperatorsRequest { finished };
                Ok(meta_rpc(ch).list_operators(request).await?.into_inner())
            })
            .await
    }

    /// One operator; `NotFound` when the leader does not know it.
    pub async fn get_operator(&self, id: u64) -> Result<OperatorView, ClientError> {
        self.etcd
            .call(true, |ch| async move {
                Ok(meta_rpc(ch)
                    .get_operator(GetOperatorRequest { id })
                    .await?
                    .into_inner())
            })
            .await
    }

    /// Cancels a queued operator; `FailedPrecondition` once it runs or has finished.
    pub async fn cancel_operator(&self, id: u64) -> Result<OperatorView, ClientError> {
        self.etcd
            .call(true, |ch| async move {
                Ok(meta_rpc(ch)
                    .cancel_operator(CancelOperatorRequest { id })
                    .await?
                    .into_inner())
            })
            .await
    }
}
