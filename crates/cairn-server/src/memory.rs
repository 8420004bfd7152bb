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

/// Bytes the allocator has handed out and not had back: close to the live data (glibc counts
/// the small freed blocks it caches per thread as in use), without the freed memory it keeps in
/// its arenas or the program's own pages that resident memory counts. glibc's own count, in its
/// arenas plus mapped on their own; None elsewhere, and on a glibc older than 2.33, which lacks
/// `mallinfo2` (looked up when first asked for, so such a system still runs Cairn).
pub fn heap_in_use_bytes() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        type MallInfo2 = unsafe extern "C" fn() -> libc::mallinfo2;
        static MALLINFO2: std::sync::OnceLock<Option<MallInfo2>> = std::sync::OnceLock::new();
        let mallinfo2 = MALLINFO2.get_or_init(|| {
            // SAFETY: dlsym with a NUL-terminated name only looks the symbol up.
            let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"mallinfo2".as_ptr()) };
            // SAFETY: the symbol glibc exports under this name is `struct mallinfo2
            // mallinfo2(void)`, which is `MallInfo2`.
            (!found.is_null())
                .then(|| unsafe { std::mem::transmute::<*mut libc::c_void, MallInfo2>(found) })
        });
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { (*mallinfo2)?() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_heap_in_use_counts_a_live_allocation_and_not_a_freed_one() {
        const BIG: usize = 512 * 1024 * 1024;
        tune_allocator();
        let before = heap_in_use_bytes().unwrap();
        // Mapped on its own (above the mmap threshold); untouched, so it costs no memory.
        let buffer: Vec<u8> = std::hint::black_box(Vec::with_capacity(BIG));
        let during = heap_in_use_bytes().unwrap();
        drop(buffer);
        let after = heap_in_use_bytes().unwrap();
        // Other tests allocate and free meanwhile: far less than the margin.
        let margin = (BIG / 4) as u64;
        assert!(
            during >= before + BIG as u64 - margin,
            "{before} -> {during}"
        );
        assert!(
            after + (BIG as u64) - margin <= during,
            "{during} -> {after}"
        );
    }
}
