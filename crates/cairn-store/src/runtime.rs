//! Cairn's async runtime for openraft: tokio, with the randomness openraft draws (election
//! timeouts, tick jitter) and Cairn's own (lease ids) taken from a per-thread generator that the
//! deterministic simulation seeds.
//!
//! In production each thread's generator is seeded from the operating system, so nothing
//! changes. The simulation runs a whole cluster on one thread under tokio's paused clock and
//! calls [`seed_thread_rng`] first: every random choice then follows from its seed, and a seed
//! replays the same run.

use openraft::async_runtime::{Select2, Select3, Select4};
use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};
use rand10::rngs::SmallRng;
#[cfg(test)]
use rand10::RngExt;
use rand10::{Rng, SeedableRng};
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::io;
use std::time::Duration;

thread_local! {
    static THREAD_RNG: RefCell<(SmallRng, u64)> =
        RefCell::new((SmallRng::seed_from_u64(os_seed()), 0));
}

fn os_seed() -> u64 {
    rand10::rng().next_u64()
}

/// Makes every random choice on this thread follow from `seed` (the simulation's first step).
pub fn seed_thread_rng(seed: u64) {
    THREAD_RNG.with(|r| *r.borrow_mut() = (SmallRng::seed_from_u64(seed), 0));
}

/// How many numbers this thread's generator gave out since it was seeded: the simulation
/// notes it with every fault, so two runs of one seed can be compared step by step.
pub fn draws() -> u64 {
    THREAD_RNG.with(|r| r.borrow().1)
}

/// A random number from this thread's generator.
pub fn random_u64() -> u64 {
    THREAD_RNG.with(|r| {
        let mut r = r.borrow_mut();
        r.1 += 1;
        r.0.next_u64()
    })
}

/// Tokio, with seedable randomness; see the module documentation.
pub struct CairnRuntime {
    inner: TokioRuntime,
}

impl fmt::Debug for CairnRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CairnRuntime").finish()
    }
}

impl AsyncRuntime for CairnRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> =
        <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SmallRng;
    type Mpsc = <TokioRuntime as AsyncRuntime>::Mpsc;
    type Watch = <TokioRuntime as AsyncRuntime>::Watch;
    type Oneshot = <TokioRuntime as AsyncRuntime>::Oneshot;
    type Mutex<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::Mutex<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        TokioRuntime::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn select2<A, B>(
        a: A,
        b: B,
    ) -> impl Future<Output = Select2<A::Output, B::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
    {
        TokioRuntime::select2(a, b)
    }

    fn select3<A, B, C>(
        a: A,
        b: B,
        c: C,
    ) -> impl Future<Output = Select3<A::Output, B::Output, C::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
        C: Future + OptionalSend,
    {
        TokioRuntime::select3(a, b, c)
    }

    fn select4<A, B, C, D>(
        a: A,
        b: B,
        c: C,
        d: D,
    ) -> impl Future<Output = Select4<A::Output, B::Output, C::Output, D::Output>> + OptionalSend
    where
        A: Future + OptionalSend,
        B: Future + OptionalSend,
        C: Future + OptionalSend,
        D: Future + OptionalSend,
    {
        TokioRuntime::select4(a, b, c, d)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        SmallRng::seed_from_u64(random_u64())
    }

    fn new(threads: usize) -> Self {
        Self {
            inner: TokioRuntime::new(threads),
        }
    }

    fn block_on<F, T>(&mut self, future: F) -> T
    where
        F: Future<Output = T>,
    {
        self.inner.block_on(future)
    }

    fn spawn_blocking<F, T>(f: F) -> impl Future<Output = Result<T, io::Error>> + Send
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        TokioRuntime::spawn_blocking(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_choices_and_other_seeds_differ() {
        let draw = |seed| {
            seed_thread_rng(seed);
            let mut rng = CairnRuntime::thread_rng();
            (random_u64(), rng.next_u64(), rng.random_range(150u64..300))
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }
}
