//! Waiting for a cluster to settle (after a crash, or while members apply an entry a moment
//! after it was acknowledged): polling with a bound, and "no procedure left running". Declared
//! only by the tests that use it (`#[path = "common/settle.rs"] mod settle;`).

use cairn_proto::cairnpb::meta_client::MetaClient as MetaRpc;
use cairn_proto::cairnpb::ListProceduresRequest;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How long a condition may take to come true.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Polls `f` until it returns Some, failing with `what` after [`SETTLE_TIMEOUT`].
pub async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    match eventually_or_none(f).await {
        Some(v) => v,
        None => panic!("timed out waiting for {what}"),
    }
}

/// Polls `f` until it returns Some, or None after [`SETTLE_TIMEOUT`] (the caller explains).
pub async fn eventually_or_none<T, F, Fut>(mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(v) = f().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Waits until the cluster lists no running procedure.
pub async fn no_running_procedure(meta: &MetaRpc<Channel>) {
    eventually("no running procedure", || {
        let mut m = meta.clone();
        async move {
            let p = m
                .list_procedures(ListProceduresRequest {
                    state: "running".into(),
                    limit: 0,
                })
                .await
                .ok()?
                .into_inner();
            p.procedures.is_empty().then_some(())
        }
    })
    .await;
}
