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

/// Whether a failed attempt may be repeated on the next endpoint.
///
/// `Unavailable` means the node could not be reached or cannot serve (down, no leader); it is
/// retried for every call. A timeout is retried only for `idempotent` calls, since the first
/// attempt may still be applied and a repeated write would create a second revision.
pub fn is_retryable(failure: Failure, idempotent: bool) -> bool {
    match failure {
        Failure::Status(Code::Unavailable) => true,
        Failure::Status(_) => false,
        Failure::Timeout => idempotent,
    }
}

/// What went wrong in one attempt, as far as the retry decision cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server or the transport answered with this gRPC code.
    Status(Code),
    /// No answer within the request timeout.
    Timeout,
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
    fn only_unavailable_and_idempotent_timeouts_are_retried() {
        assert!(is_retryable(Failure::Status(Code::Unavailable), false));
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
}
