//! Polled virtio drivers over the virtio-mmio transport (virtio 1.x).
//!
//! The agent has no interrupts (PLATFORM.md: `sti` faults at CPL3), so every
//! driver is polled: the agent looks at the used rings in its main loop and,
//! when nothing moves, parks the vCPU through the `WAIT` port. Buffers are
//! single descriptors whose index never changes, which keeps the drivers
//! free of descriptor free lists: descriptor `i` always points at buffer `i`.

pub mod batch;
mod buffers;
pub mod console;
pub mod mmio;
pub mod net;
pub mod queue;

pub use buffers::DmaBuffers;
pub use mmio::MmioTransport;
pub use queue::SplitQueue;

// The virtio constants the agent uses, in one place. They are written out
// rather than taken from `virtio-bindings` because that crate links `std`,
// whose panic handler collides with the image's (E0152); the host test at
// the end of this file holds each one to `virtio-bindings`, which the VMM
// uses directly, so the two sides cannot drift apart.

/// "virt": the value of the MagicValue register (not in `virtio-bindings`;
/// the VMM uses this one).
pub const MMIO_MAGIC: u32 = 0x7472_6976;

/// virtio-mmio register offsets (virtio 1.x, 4.2.2).
pub mod reg {
    #![allow(missing_docs)]
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits (virtio 1.x, 2.1).
pub mod status {
    /// The driver noticed the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The driver knows how to drive it.
    pub const DRIVER: u32 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error it cannot recover from.
    pub const DEVICE_NEEDS_RESET: u32 = 64;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 128;
}

/// Feature bits, as masks over the 64-bit feature word.
pub mod features {
    /// Virtio 1.x semantics (bit 32); every device type.
    pub const VERSION_1: u64 = 1 << 32;
    /// virtio-net: the device has a MAC address in its config space (bit 5).
    pub const NET_MAC: u64 = 1 << 5;
}

/// Split-virtqueue flags (virtio 1.x, 2.7.5 and 2.7.8).
pub mod ring {
    /// Descriptor flag: the device writes this buffer.
    pub const DESC_F_WRITE: u16 = 2;
    /// Used-ring flag: the device does not want to be kicked.
    pub const USED_F_NO_NOTIFY: u16 = 1;
}

/// Why a device could not be brought up or used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtioError {
    /// The register window does not hold a virtio-mmio device.
    BadMagic(u32),
    /// Only virtio-mmio version 2 (virtio 1.x) is driven.
    UnsupportedVersion(u32),
    /// The window holds a different device than expected.
    WrongDevice {
        /// The id the driver wanted.
        expected: u32,
        /// The id the device reported.
        found: u32,
    },
    /// The device lacks a feature the driver requires.
    MissingFeatures(u64),
    /// The device refused the negotiated features.
    FeaturesRejected,
    /// A queue the driver needs does not exist.
    QueueUnavailable(u16),
    /// The allocator could not provide ring or buffer memory.
    OutOfMemory,
    /// The VMM stopped a batch of register accesses after this many.
    BatchStopped(u32),
}

impl core::fmt::Display for VirtioError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BadMagic(m) => write!(f, "no virtio-mmio device (magic {m:#x})"),
            Self::UnsupportedVersion(v) => write!(f, "virtio-mmio version {v} unsupported, need 2"),
            Self::WrongDevice { expected, found } => {
                write!(f, "expected virtio device {expected}, found {found}")
            }
            Self::MissingFeatures(m) => write!(f, "device lacks required features {m:#x}"),
            Self::BatchStopped(n) => write!(f, "the VMM stopped a batch of register accesses after {n}"),
            Self::FeaturesRejected => write!(f, "device rejected the negotiated features"),
            Self::QueueUnavailable(q) => write!(f, "virtqueue {q} unavailable"),
            Self::OutOfMemory => write!(f, "out of memory for virtqueues"),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every constant above against `virtio-bindings` (Linux's headers).

    use virtio_bindings::virtio_config::*;
    use virtio_bindings::virtio_ids::{VIRTIO_ID_CONSOLE, VIRTIO_ID_NET};
    use virtio_bindings::virtio_mmio::*;
    use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;
    use virtio_bindings::virtio_ring::{VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY};

    use super::{features, reg, ring, status};
    use crate::boot::device_id;

    #[test]
    fn register_offsets_match_virtio_bindings() {
        let pairs = [
            (reg::MAGIC, VIRTIO_MMIO_MAGIC_VALUE),
            (reg::VERSION, VIRTIO_MMIO_VERSION),
            (reg::DEVICE_ID, VIRTIO_MMIO_DEVICE_ID),
            (reg::VENDOR_ID, VIRTIO_MMIO_VENDOR_ID),
            (reg::DEVICE_FEATURES, VIRTIO_MMIO_DEVICE_FEATURES),
            (reg::DEVICE_FEATURES_SEL, VIRTIO_MMIO_DEVICE_FEATURES_SEL),
            (reg::DRIVER_FEATURES, VIRTIO_MMIO_DRIVER_FEATURES),
            (reg::DRIVER_FEATURES_SEL, VIRTIO_MMIO_DRIVER_FEATURES_SEL),
            (reg::QUEUE_SEL, VIRTIO_MMIO_QUEUE_SEL),
            (reg::QUEUE_NUM_MAX, VIRTIO_MMIO_QUEUE_NUM_MAX),
            (reg::QUEUE_NUM, VIRTIO_MMIO_QUEUE_NUM),
            (reg::QUEUE_READY, VIRTIO_MMIO_QUEUE_READY),
            (reg::QUEUE_NOTIFY, VIRTIO_MMIO_QUEUE_NOTIFY),
            (reg::INTERRUPT_STATUS, VIRTIO_MMIO_INTERRUPT_STATUS),
            (reg::INTERRUPT_ACK, VIRTIO_MMIO_INTERRUPT_ACK),
            (reg::STATUS, VIRTIO_MMIO_STATUS),
            (reg::QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_LOW),
            (reg::QUEUE_DESC_HIGH, VIRTIO_MMIO_QUEUE_DESC_HIGH),
            (reg::QUEUE_DRIVER_LOW, VIRTIO_MMIO_QUEUE_AVAIL_LOW),
            (reg::QUEUE_DRIVER_HIGH, VIRTIO_MMIO_QUEUE_AVAIL_HIGH),
            (reg::QUEUE_DEVICE_LOW, VIRTIO_MMIO_QUEUE_USED_LOW),
            (reg::QUEUE_DEVICE_HIGH, VIRTIO_MMIO_QUEUE_USED_HIGH),
            (reg::CONFIG_GENERATION, VIRTIO_MMIO_CONFIG_GENERATION),
            (reg::CONFIG, VIRTIO_MMIO_CONFIG),
        ];
        for (ours, theirs) in pairs {
            assert_eq!(ours, u64::from(theirs), "register offset {ours:#x}");
        }
    }

    #[test]
    fn status_bits_match_virtio_bindings() {
        assert_eq!(status::ACKNOWLEDGE, VIRTIO_CONFIG_S_ACKNOWLEDGE);
        assert_eq!(status::DRIVER, VIRTIO_CONFIG_S_DRIVER);
        assert_eq!(status::DRIVER_OK, VIRTIO_CONFIG_S_DRIVER_OK);
        assert_eq!(status::FEATURES_OK, VIRTIO_CONFIG_S_FEATURES_OK);
        assert_eq!(status::DEVICE_NEEDS_RESET, VIRTIO_CONFIG_S_NEEDS_RESET);
        assert_eq!(status::FAILED, VIRTIO_CONFIG_S_FAILED);
    }

    #[test]
    fn feature_and_ring_bits_match_virtio_bindings() {
        assert_eq!(features::VERSION_1, 1 << VIRTIO_F_VERSION_1);
        assert_eq!(features::NET_MAC, 1 << VIRTIO_NET_F_MAC);
        assert_eq!(u32::from(ring::DESC_F_WRITE), VRING_DESC_F_WRITE);
        assert_eq!(u32::from(ring::USED_F_NO_NOTIFY), VRING_USED_F_NO_NOTIFY);
    }

    #[test]
    fn device_ids_match_virtio_bindings() {
        assert_eq!(device_id::NET, VIRTIO_ID_NET);
        assert_eq!(device_id::CONSOLE, VIRTIO_ID_CONSOLE);
    }
}
