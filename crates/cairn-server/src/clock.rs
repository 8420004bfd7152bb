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
    /// The monotonic instant deadlines are measured from.
    fn now(&self) -> Instant;

    /// Wall-clock milliseconds since the Unix epoch, for timestamps stored in records (never for
    /// deadlines: the wall clock can jump).
    fn unix_ms(&self) -> u64;

    /// [`Clock::now`] as a std instant (the pure registries take those).
    fn now_std(&self) -> std::time::Instant {
        self.now().into_std()
    }
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

    fn unix_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Instant>,
    started: Instant,
    started_unix_ms: u64,
}

impl ManualClock {
    /// A clock standing at the current instant.
    pub fn new() -> Arc<Self> {
        let started = Instant::now();
        Arc::new(Self {
            now: Mutex::new(started),
            started,
            started_unix_ms: TokioClock.unix_ms(),
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

    fn unix_ms(&self) -> u64 {
        self.started_unix_ms + self.now().duration_since(self.started).as_millis() as u64
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
