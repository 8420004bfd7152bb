//! The CPU scheduling policy of `cairn serve`'s threads.
//!
//! By default a node runs its threads under Linux's `SCHED_BATCH`: the same share of the CPU
//! as any other process at the same nice level, but a thread that wakes does not preempt the
//! one running. A write wakes several threads on each node (the request's worker, Raft's
//! core, the log writer once the disk answers, the follower's worker and writer); where the
//! cores are shared (several nodes on one host, or a node beside its datanodes), each of those
//! wake-ups would otherwise push the running thread off its core, and the thread switches and
//! cold caches cost more CPU than the writes themselves (BENCHMARKS.md, issue 12, twenty-first
//! session: three nodes on two cores put 8–21% more a second at 256 clients, for 9–19% less
//! CPU per put). A woken thread still runs at once on an idle core, so a node with cores to spare
//! answers as soon as before; on a saturated host it waits at most the running thread's slice
//! (a few milliseconds), far below any Raft or lease timeout. `normal` keeps the default
//! policy.
//!
//! The policy is set on the starting thread before the runtime and every other thread are
//! created; threads inherit it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How `cairn serve`'s threads are scheduled ([`crate::ServerConfig::cpu_policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuPolicy {
    /// `SCHED_BATCH`: a waking thread does not preempt the running one.
    #[default]
    Batch,
    /// The system's default policy (`SCHED_OTHER`).
    Normal,
}

impl CpuPolicy {
    const ALL: [Self; 2] = [Self::Batch, Self::Normal];

    /// The name in flags and files (serde's lowercase of the variant).
    fn as_str(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Normal => "normal",
        }
    }
}

impl FromStr for CpuPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("cpu-policy: must be batch or normal, got {s:?}"))
    }
}

impl fmt::Display for CpuPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sets `policy` on the calling thread, which the threads it starts from then on inherit. Call
/// it before the runtime is built. Elsewhere than Linux there is nothing to set.
pub fn apply(policy: CpuPolicy) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let policy = match policy {
            CpuPolicy::Batch => libc::SCHED_BATCH,
            CpuPolicy::Normal => libc::SCHED_OTHER,
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for either
        // policy, whose only priority is 0.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = policy;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_read_as_written() {
        for p in CpuPolicy::ALL {
            assert_eq!(p.to_string().parse::<CpuPolicy>(), Ok(p));
        }
        let err = "fifo".parse::<CpuPolicy>().unwrap_err();
        assert_eq!(err, "cpu-policy: must be batch or normal, got \"fifo\"");
    }
}
