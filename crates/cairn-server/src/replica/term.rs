//! A leader term: the handle every leader service holds for the Raft term it was started in.
//! It lives in the replica layer because the replica fences writes with it
//! ([`crate::replica::node::Replica::propose_in_term`]).
//!
//! The leader lifecycle (`leader::lifecycle`) makes one when this node becomes leader of term T and has
//! applied everything committed before T, and ends it when T ends. A service checks
//! [`LeaderTerm::is_current`] before it decides, waits on [`LeaderTerm::ended`] to stop, and
//! passes [`LeaderTerm::term`] with every write, which the state machine refuses once another
//! leader appended it (see `cairn_store::Command::Fenced`).

use tokio::sync::watch;

/// One term of this node's leadership, shared by the services running in it.
#[derive(Clone, Debug)]
pub struct LeaderTerm {
    term: u64,
    ended: watch::Receiver<bool>,
}

/// Ends a [`LeaderTerm`]; held by the lifecycle. Dropping it ends the term too, so a lifecycle
/// that panics or is aborted never leaves services running.
#[derive(Debug)]
pub struct TermEnder {
    ended: watch::Sender<bool>,
}

impl LeaderTerm {
    /// A new term `term`, and what ends it.
    pub fn start(term: u64) -> (LeaderTerm, TermEnder) {
        assert!(term > 0, "Raft terms start at 1");
        let (tx, rx) = watch::channel(false);
        (LeaderTerm { term, ended: rx }, TermEnder { ended: tx })
    }

    /// The Raft term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// Whether the term is still on. A decision taken while this holds may still be carried
    /// out after it ends; the write that carries it out is refused then (it is fenced).
    pub fn is_current(&self) -> bool {
        !*self.ended.borrow()
    }

    /// Resolves when the term ends.
    pub async fn ended(&self) {
        let mut rx = self.ended.clone();
        // An error means the ender is gone, which ends the term as well.
        let _ = rx.wait_for(|ended| *ended).await;
    }

    /// Sleeps `delay`, or less if the term ends first; true when it has ended (the caller stops).
    pub async fn sleep(&self, delay: std::time::Duration) -> bool {
        tokio::select! {
            biased;
            () = self.ended() => {}
            () = tokio::time::sleep(delay) => {}
        }
        !self.is_current()
    }
}

impl TermEnder {
    /// Ends the term: every service holding it sees [`LeaderTerm::ended`] resolve.
    pub fn end(&self) {
        self.ended.send_replace(true);
    }
}

impl Drop for TermEnder {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn services_see_the_end_of_their_term() {
        let (term, ender) = LeaderTerm::start(4);
        assert_eq!(term.term(), 4);
        assert!(term.is_current());
        let held = term.clone();
        let waiter = tokio::spawn(async move { held.ended().await });
        assert!(!term.sleep(Duration::from_millis(5)).await);
        ender.end();
        waiter.await.unwrap();
        assert!(!term.is_current());
        assert!(term.sleep(Duration::from_secs(3600)).await);
    }

    #[tokio::test]
    async fn a_dropped_ender_ends_the_term() {
        let (term, ender) = LeaderTerm::start(1);
        drop(ender);
        term.ended().await;
        assert!(!term.is_current());
    }
}
