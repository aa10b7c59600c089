//! What a virtio-console device counts.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters of one console device.
#[derive(Debug, Default)]
pub struct ConsoleMetrics {
    /// Bytes delivered to the guest.
    pub rx_bytes: AtomicU64,
    /// Bytes the guest wrote to the host side.
    pub tx_bytes: AtomicU64,
    /// Receive chains refused (outside memory, wrong direction).
    pub rx_bad_descriptors: AtomicU64,
    /// Transmit chains refused (outside memory, wrong direction, too long).
    pub tx_bad_descriptors: AtomicU64,
    /// Writes to the host side that failed; their bytes are lost.
    pub output_errors: AtomicU64,
}

/// A plain copy of [`ConsoleMetrics`].
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct ConsoleMetricsSnapshot {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_bad_descriptors: u64,
    pub tx_bad_descriptors: u64,
    pub output_errors: u64,
}

impl ConsoleMetrics {
    /// Current values.
    pub fn snapshot(&self) -> ConsoleMetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ConsoleMetricsSnapshot {
            rx_bytes: g(&self.rx_bytes),
            tx_bytes: g(&self.tx_bytes),
            rx_bad_descriptors: g(&self.rx_bad_descriptors),
            tx_bad_descriptors: g(&self.tx_bad_descriptors),
            output_errors: g(&self.output_errors),
        }
    }
}
