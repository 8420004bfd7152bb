//! When to try another endpoint and how long to wait first. Pure functions of the attempt
//! number, so the schedule can be tested without a network or a clock.
//!
//! The schedule: the first pass over the endpoints runs back to back (a down node should not slow
//! a call that another node can serve); once every endpoint has failed, each further attempt waits
//! an exponentially growing delay, capped, which covers a leader election.

use tonic::Code;

/// How many attempts one call makes and how long it waits between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per call, counting the first; raised to the number of endpoints so that each
    /// endpoint is tried at least once.
    pub attempts_max: u32,
    /// Delay before the first attempt after a full failed pass over the endpoints.
    pub backoff_initial_ms: u64,
    /// Upper bound of any single delay.
    pub backoff_max_ms: u64,
}

impl RetryPolicy {
    /// Attempts one call makes against `endpoint_count` endpoints.
    pub fn attempts(&self, endpoint_count: usize) -> u32 {
        let endpoints = u32::try_from(endpoint_count).unwrap_or(u32::MAX);
        self.attempts_max.max(endpoints).max(1)
    }

    /// Milliseconds to wait before attempt `attempt` (0-based) when `endpoint_count` endpoints
    /// are in rotation.
    pub fn delay_before_attempt_ms(&self, attempt: u32, endpoint_count: usize) -> u64 {
        let first_pass = u32::try_from(endpoint_count.max(1)).unwrap_or(u32::MAX);
        if attempt < first_pass {
            return 0;
        }
        // Doublings are capped at 63 so the shift cannot overflow; the delay is capped anyway.
        let doublings = (attempt - first_pass).min(63);
        self.backoff_initial_ms
            .checked_shl(doublings)
            .filter(|d| d >> doublings == self.backoff_initial_ms)
            .unwrap_or(u64::MAX)
            .min(self.backoff_max_ms)
    }
}

/// Whether a failed attempt may be repeated on the next endpoint (the policy of etcd's own Go
/// client).
///
/// A request that never left the client (no connection could be made) is always retried. An
/// `Unavailable` answer (node shutting down, no leader, request timed out in the server) or a
/// timeout is retried only for `idempotent` calls: a write may already have been applied, and
/// repeating it would create a second revision, add a member twice, or fail a compare that the
/// first attempt made true.
pub fn is_retryable(failure: Failure, idempotent: bool) -> bool {
    match failure {
        Failure::NotSent => true,
        Failure::Status(Code::Unavailable) | Failure::Timeout => idempotent,
        Failure::Status(_) => false,
    }
}

/// What went wrong in one attempt, as far as the retry decision cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection to the endpoint could be made, so the request was not sent.
    NotSent,
    /// The server or the transport answered with this gRPC code.
    Status(Code),
    /// No answer within the request timeout.
    Timeout,
}

/// Classifies a failed call: `NotSent` when the transport reports it could not connect (a
/// `tonic::ConnectError` in the status' source chain), else the status' code.
pub fn classify(status: &tonic::Status) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(err) = source {
        if err.downcast_ref::<tonic::ConnectError>().is_some() {
            return Failure::NotSent;
        }
        source = err.source();
    }
    Failure::Status(status.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        attempts_max: 10,
        backoff_initial_ms: 50,
        backoff_max_ms: 1_000,
    };

    #[test]
    fn first_pass_over_endpoints_does_not_wait() {
        for attempt in 0..3 {
            assert_eq!(POLICY.delay_before_attempt_ms(attempt, 3), 0);
        }
        assert_eq!(POLICY.delay_before_attempt_ms(0, 1), 0);
    }

    #[test]
    fn later_attempts_back_off_exponentially_up_to_the_cap() {
        let delays: Vec<u64> = (0..10)
            .map(|a| POLICY.delay_before_attempt_ms(a, 3))
            .collect();
        assert_eq!(delays, vec![0, 0, 0, 50, 100, 200, 400, 800, 1_000, 1_000]);
        let single: Vec<u64> = (0..5)
            .map(|a| POLICY.delay_before_attempt_ms(a, 1))
            .collect();
        assert_eq!(single, vec![0, 50, 100, 200, 400]);
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        assert_eq!(POLICY.delay_before_attempt_ms(u32::MAX, 1), 1_000);
        assert_eq!(POLICY.delay_before_attempt_ms(70, 1), 1_000);
        assert_eq!(POLICY.delay_before_attempt_ms(5, 0), 800);
    }

    #[test]
    fn every_endpoint_gets_at_least_one_attempt() {
        assert_eq!(POLICY.attempts(3), 10);
        assert_eq!(POLICY.attempts(12), 12);
        let zero = RetryPolicy {
            attempts_max: 0,
            ..POLICY
        };
        assert_eq!(zero.attempts(0), 1);
    }

    #[test]
    fn unsent_requests_are_always_retried_others_only_when_idempotent() {
        assert!(is_retryable(Failure::NotSent, false));
        assert!(is_retryable(Failure::NotSent, true));
        assert!(!is_retryable(Failure::Status(Code::Unavailable), false));
        assert!(is_retryable(Failure::Status(Code::Unavailable), true));
        assert!(is_retryable(Failure::Timeout, true));
        assert!(!is_retryable(Failure::Timeout, false));
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::OutOfRange,
            Code::Internal,
            Code::DeadlineExceeded,
        ] {
            assert!(!is_retryable(Failure::Status(code), true), "{code:?}");
        }
    }

    #[test]
    fn connect_errors_are_recognised_by_type() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let status = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(classify(&status), Failure::NotSent);

        let answered = tonic::Status::unavailable("etcdserver: no leader");
        assert_eq!(classify(&answered), Failure::Status(Code::Unavailable));
    }
}
