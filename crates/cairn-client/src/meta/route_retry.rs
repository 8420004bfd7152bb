//! What [`RouteCache::with_route`] needs from its caller and tells it back: an attempt
//! reports a stale route as [`RouteAttemptError::InvalidRoute`]; the cache refreshes and
//! retries on the bounded, pure schedule of [`route_retry_delay_ms`], and gives up with a
//! typed [`RouteRetryError`].

use super::MetadataError;
#[cfg(doc)]
use super::RouteCache;

/// Times [`RouteCache::with_route`] refreshes a route a datanode refused before it gives up.
pub const ROUTE_RETRIES_MAX: u32 = 3;
/// Wait before the second refresh of a refused route; the first is immediate, because the
/// route has usually changed already. Later waits double, up to [`ROUTE_RETRY_BACKOFF_MAX_MS`],
/// leaving time for a leader change in progress to reach the metadata.
pub const ROUTE_RETRY_BACKOFF_INITIAL_MS: u64 = 50;
/// Longest wait between two refreshes of a refused route.
pub const ROUTE_RETRY_BACKOFF_MAX_MS: u64 = 500;

/// Milliseconds [`RouteCache::with_route`] waits before refresh number `retry` (1-based).
pub fn route_retry_delay_ms(retry: u32) -> u64 {
    if retry <= 1 {
        return 0;
    }
    let doublings = (retry - 2).min(63);
    ROUTE_RETRY_BACKOFF_INITIAL_MS
        .checked_shl(doublings)
        .filter(|d| d >> doublings == ROUTE_RETRY_BACKOFF_INITIAL_MS)
        .unwrap_or(u64::MAX)
        .min(ROUTE_RETRY_BACKOFF_MAX_MS)
}

/// How one attempt of [`RouteCache::with_route`] failed.
#[derive(Debug)]
pub enum RouteAttemptError<E> {
    /// The node the route named does not lead (or hold) the region: the route is stale.
    InvalidRoute {
        /// The region the request was for.
        region_id: u64,
        /// The node that refused it.
        node_id: u64,
    },
    /// Anything else; returned to the caller at once, without a retry.
    Other(E),
}

/// Why [`RouteCache::with_route`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum RouteRetryError<E> {
    /// The route could not be looked up.
    #[error(transparent)]
    Lookup(MetadataError),
    /// Every route fetched was refused, [`ROUTE_RETRIES_MAX`] refreshes included.
    #[error(
        "table {table_id}: node {node_id} still refuses region {region_id} after {retries} route refreshes"
    )]
    InvalidRouteRetriesExhausted {
        /// The table.
        table_id: u64,
        /// Refreshes made.
        retries: u32,
        /// The region of the last refusal.
        region_id: u64,
        /// The node of the last refusal.
        node_id: u64,
    },
    /// The attempt failed for another reason.
    #[error("{0}")]
    Attempt(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_refresh_is_immediate_then_backoff_doubles_to_the_cap() {
        let delays: Vec<u64> = (1..=6).map(route_retry_delay_ms).collect();
        assert_eq!(delays, vec![0, 50, 100, 200, 400, 500]);
        assert_eq!(route_retry_delay_ms(0), 0);
        assert_eq!(route_retry_delay_ms(u32::MAX), ROUTE_RETRY_BACKOFF_MAX_MS);
    }
}
