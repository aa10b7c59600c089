//! What a virtio-net data plane counts, wherever it runs (in the VMM or
//! in a vhost-user backend).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Counters of one virtio-net device; updated by its event handler.
#[derive(Debug, Default)]
pub struct NetMetrics {
    /// Frames delivered to the guest.
    pub rx_frames: AtomicU64,
    /// Bytes delivered to the guest (headers included).
    pub rx_bytes: AtomicU64,
    /// Frames the guest sent out through the tap.
    pub tx_frames: AtomicU64,
    /// Bytes the guest sent (headers included).
    pub tx_bytes: AtomicU64,
    /// Receive chains refused: outside memory, wrong direction, too small.
    pub rx_bad_descriptors: AtomicU64,
    /// Transmit chains refused: outside memory, wrong direction, too long.
    pub tx_bad_descriptors: AtomicU64,
    /// Transmit frames shorter than the virtio-net header.
    pub tx_malformed: AtomicU64,
    /// Frames the tap would not take (queue full or interface down).
    pub tx_tap_errors: AtomicU64,
    /// Reads from the tap that failed other than with EAGAIN.
    pub rx_tap_errors: AtomicU64,
}

/// A plain copy of [`NetMetrics`], for reports.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct NetMetricsSnapshot {
    pub rx_frames: u64,
    pub rx_bytes: u64,
    pub tx_frames: u64,
    pub tx_bytes: u64,
    pub rx_bad_descriptors: u64,
    pub tx_bad_descriptors: u64,
    pub tx_malformed: u64,
    pub tx_tap_errors: u64,
    pub rx_tap_errors: u64,
}

impl NetMetrics {
    /// Adds one to `c`.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Current values.
    pub fn snapshot(&self) -> NetMetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetMetricsSnapshot {
            rx_frames: g(&self.rx_frames),
            rx_bytes: g(&self.rx_bytes),
            tx_frames: g(&self.tx_frames),
            tx_bytes: g(&self.tx_bytes),
            rx_bad_descriptors: g(&self.rx_bad_descriptors),
            tx_bad_descriptors: g(&self.tx_bad_descriptors),
            tx_malformed: g(&self.tx_malformed),
            tx_tap_errors: g(&self.tx_tap_errors),
            rx_tap_errors: g(&self.rx_tap_errors),
        }
    }
}
