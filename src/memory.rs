//! Giving memory back to the system after start-up and after a flood of connections.
//!
//! Loading the store builds the registry and the name table from a transient copy of every
//! record (the decoded records, the checker's first view, growing hash tables). glibc's
//! allocator keeps what was freed inside its heap for later use, so without a trim that
//! memory stays resident for the life of the process: tens of megabytes at 100,000
//! instances. `malloc_trim` hands the free pages back; it runs once, after the first
//! snapshot is built, and is a no-op with other C libraries.
//!
//! A flood of HTTP connections leaves the same kind of memory behind: each one buffered its
//! request (up to the body limit) and it was all freed at once when they closed, but stayed
//! resident (3,000 half-sent bodies: 8 → 115 MB, still 110 MB after they closed). `Reclaim`
//! counts open connections and trims once after the count has fallen from a flood's peak;
//! ordinary loads never reach `FLOOD`, so they never pay for a trim.

/// Returns freed heap pages to the system (glibc only).
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Open connections at once that count as a flood worth a trim afterwards: well above what
/// keep-alive clients hold in normal use (the benchmarks' 64 and 100).
const FLOOD: usize = 256;

/// Counts open connections and trims the heap once a flood has drained (the count back to a
/// quarter of its peak).
#[derive(Debug, Default)]
pub(crate) struct Reclaim {
    open: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

impl Reclaim {
    /// A connection was accepted.
    pub(crate) fn opened(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.open.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(n, Relaxed);
    }

    /// A connection closed: after a flood has drained, the freed buffers go back to the system
    /// (on the blocking pool: a trim of a large heap takes milliseconds). The first trim comes
    /// when a quarter of the peak is left; while more than a quarter of `FLOOD` is still open
    /// then, one more comes when that many are left, so the buffers of the flood's last
    /// quarter are handed back too (they were still held at the first trim).
    pub(crate) fn closed(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.open.fetch_sub(1, Relaxed).saturating_sub(1);
        let peak = self.peak.load(Relaxed);
        // Armed again at `FLOOD` (its next trim at `FLOOD / 4` open) or disarmed at `n`.
        let next = if n > FLOOD / 4 { FLOOD } else { n };
        if peak >= FLOOD
            && n <= peak / 4
            && self
                .peak
                .compare_exchange(peak, next, Relaxed, Relaxed)
                .is_ok()
        {
            tracing::debug!(peak, "connection flood drained; returning freed memory");
            tokio::task::spawn_blocking(release_free_memory);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    /// A flood of 800 is trimmed at 200 open (a quarter of its peak), then once more at 64 (a
    /// quarter of `FLOOD`), and no more after that: the peak is what arms it.
    #[tokio::test]
    async fn a_flood_is_trimmed_when_a_quarter_is_left_and_again_near_its_end() {
        let r = Reclaim::default();
        for _ in 0..800 {
            r.opened();
        }
        let mut armed = Vec::new();
        for _ in 0..800 {
            r.closed();
            armed.push(r.peak.load(Relaxed));
        }
        // `armed[k]`: the peak after k + 1 closes (n = 799 - k open).
        assert_eq!(armed[598], 800, "no trim before a quarter is left");
        assert_eq!(armed[599], FLOOD, "the first trim, at 200 open, re-arms");
        assert_eq!(armed[734], FLOOD);
        assert_eq!(armed[735], 64, "the second, at 64 open, disarms");
        assert_eq!(armed[799], 64, "and nothing more");
    }
}
