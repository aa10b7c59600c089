//! A monotonic clock from the TSC (rdtsc runs natively at CPL3).

use core::sync::atomic::{AtomicU64, Ordering};

static TSC_KHZ: AtomicU64 = AtomicU64::new(1_000_000);
/// [`now_us`] when the clock was set up, at the agent's entry.
static ENTRY_US: AtomicU64 = AtomicU64::new(0);

pub fn init(tsc_khz: u64) {
    if tsc_khz > 0 {
        TSC_KHZ.store(tsc_khz, Ordering::Relaxed);
    }
    ENTRY_US.store(now_us(), Ordering::Relaxed);
}

/// Microseconds since the agent's entry (its boot so far).
pub fn since_entry_us() -> u64 {
    now_us().saturating_sub(ENTRY_US.load(Ordering::Relaxed))
}

fn rdtsc() -> u64 {
    // SAFETY: rdtsc reads a counter; no memory effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Microseconds since an arbitrary start.
pub fn now_us() -> u64 {
    let khz = TSC_KHZ.load(Ordering::Relaxed);
    (rdtsc() as u128 * 1000 / khz as u128) as u64
}
