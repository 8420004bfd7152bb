//! The clock leader services go by, handed to them rather than read inline, so that what they
//! decide from time (a lease expired, a node went silent) can be driven by a test.
//!
//! [`TokioClock`] is tokio's clock: real time in production, and the simulated time of the
//! deterministic simulation, which runs under tokio's paused clock. [`ManualClock`] stands still
//! until a test moves it.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A source of "now" for leader decisions.
pub trait Clock: Send + Sync + Debug {
    fn now(&self) -> Instant;
}

/// A shared clock handle.
pub type SharedClock = Arc<dyn Clock>;

/// tokio's clock (see the module documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct TokioClock;

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Instant>,
}

impl ManualClock {
    /// A clock standing at the current instant.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            now: Mutex::new(Instant::now()),
        })
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}
/// Sleeps `delay`, or less if the node is stopping; true when it is (the caller returns).
pub async fn sleep_unless_stopped(
    stop: &mut tokio::sync::watch::Receiver<bool>,
    delay: Duration,
) -> bool {
    tokio::select! {
        biased;
        _ = stop.changed() => {}
        () = tokio::time::sleep(delay) => {}
    }
    *stop.borrow()
}
