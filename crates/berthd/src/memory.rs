//! The daemon's heap: glibc's allocator keeps what a burst of requests freed (in one arena
//! per thread that ever allocated, up to 8 per core) instead of returning it to the kernel, so
//! the resident size after many pods or image pushes stays at its peak. [`limit_arenas`]
//! caps the arenas (the blocking pool's threads share them), and [`trim_when_idle`] gives
//! the free pages back once the heap holds more than a little free memory, as dockerd's
//! runtime does (Go's scavenger). Without glibc (musl) both do nothing.

use std::time::Duration;

/// Free heap bytes above which [`trim_when_idle`] returns them to the kernel.
const TRIM_ABOVE: usize = 1 << 20;

/// How often the heap is looked at.
const PERIOD: Duration = Duration::from_secs(2);

/// Caps glibc's arenas at two (the tokio workers); call before any thread starts.
pub fn limit_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The allocator's statistics: (free bytes, bytes in use, heap size, mmapped bytes).
fn heap_stats() -> (usize, usize, usize, usize) {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallinfo2 reads the allocator's statistics; it takes the arenas' locks.
        let mi = unsafe { libc::mallinfo2() };
        (mi.fordblks, mi.uordblks, mi.arena, mi.hblkhd)
    }
    #[cfg(not(target_env = "gnu"))]
    (0, 0, 0, 0)
}

/// Returns the allocator's free pages to the kernel; true when some were.
pub fn trim() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    false
}

/// Every [`PERIOD`], trims the heap when it holds more than [`TRIM_ABOVE`] free bytes and
/// changed since the last trim (an idle daemon is left alone); until `stop` changes.
pub async fn trim_when_idle(mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = heap_stats();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = heap_stats();
                if now.0 > TRIM_ABOVE && now != last {
                    let _ = tokio::task::spawn_blocking(trim).await;
                    last = heap_stats();
                }
            }
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rss_kb() -> u64 {
        let s = std::fs::read_to_string("/proc/self/status").unwrap();
        let l = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        l.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[cfg(target_env = "gnu")]
    #[test]
    fn trim_returns_freed_memory() {
        // 32 MB in small blocks (below the mmap threshold: they stay in the heap when freed),
        // with a live block after each other one so that the heap's top cannot just shrink.
        let mut blocks: Vec<Vec<u8>> = (0..32_000).map(|i| vec![i as u8; 1000]).collect();
        let full = rss_kb();
        let kept: Vec<Vec<u8>> = blocks.drain(..).step_by(64).collect();
        assert!(heap_stats().0 > TRIM_ABOVE, "{:?}", heap_stats());
        trim();
        let trimmed = rss_kb();
        assert!(
            trimmed + 16_000 < full,
            "RSS {full} kB with the blocks, {trimmed} kB after freeing and trimming"
        );
        drop(kept);
    }
}
