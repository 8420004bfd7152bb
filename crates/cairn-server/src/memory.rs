//! Keeping memory the allocator holds but no longer uses from counting against the node.
//!
//! A Cairn node frees a lot in bursts: heartbeat requests of datanodes with tens of thousands of
//! region stats (megabytes each, every interval), snapshot encoding, compaction of old
//! versions, pruned procedure records. glibc's malloc keeps freed memory in per-thread arenas
//! and raises its mmap threshold after each large free, so those megabyte buffers end up in the
//! arenas too; resident memory then stays far above what is live. On glibc this module:
//! - caps the number of arenas at [`MALLOC_ARENAS_MAX`] (default is 8 per core);
//! - fixes the mmap threshold at [`MALLOC_MMAP_THRESHOLD_BYTES`], so large buffers are mapped
//!   and unmapped rather than parked in an arena;
//! - returns free pages to the kernel every [`MEMORY_TRIM_INTERVAL_MS`] (`malloc_trim`).
//!
//! Elsewhere (musl, other systems) it does nothing.

use std::time::Duration;
use tokio::sync::watch;

/// Arenas glibc may create; fewer arenas hold less freed memory at a little lock contention.
pub const MALLOC_ARENAS_MAX: i32 = 4;
/// Allocations at least this large are mapped on their own and unmapped when freed.
pub const MALLOC_MMAP_THRESHOLD_BYTES: i32 = 256 * 1024;
/// How often free pages are handed back to the kernel.
pub const MEMORY_TRIM_INTERVAL_MS: u64 = 10_000;

/// Sets the allocator options above; call once, early, before threads start.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; both are documented, valid options.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS_MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES);
    }
}

/// Returns free allocator pages to the kernel; true when some memory was released.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is safe to call at any time.
    unsafe {
        libc::malloc_trim(0) == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Calls [`release_free_memory`] every [`MEMORY_TRIM_INTERVAL_MS`] until `stop` turns true.
pub async fn trim_periodically(mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(MEMORY_TRIM_INTERVAL_MS);
    while !crate::clock::sleep_unless_stopped(&mut stop, interval).await {
        // Walks every arena: off the async workers.
        let _ = tokio::task::spawn_blocking(release_free_memory).await;
    }
}
