//! Polled virtio drivers over the virtio-mmio transport (virtio 1.x).
//!
//! The agent has no interrupts (PLATFORM.md: `sti` faults at CPL3), so every
//! driver is polled: the agent looks at the used rings in its main loop and,
//! when nothing moves, parks the vCPU through the `WAIT` port. Buffers are
//! single descriptors whose index never changes, which keeps the drivers
//! free of descriptor free lists: descriptor `i` always points at buffer `i`.

mod buffers;
pub mod console;
pub mod mmio;
pub mod net;
pub mod queue;

pub use buffers::DmaBuffers;
pub use mmio::MmioTransport;
pub use queue::SplitQueue;

/// "virt": the value of the MagicValue register.
pub const MMIO_MAGIC: u32 = 0x7472_6976;

/// virtio-mmio register offsets (virtio 1.x, 4.2.2), shared by the agent's
/// drivers and the VMM's transport so the two cannot disagree.
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

/// Feature bits shared by every device type.
pub mod features {
    /// Virtio 1.x semantics (bit 32).
    pub const VERSION_1: u64 = 1 << 32;
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
            Self::FeaturesRejected => write!(f, "device rejected the negotiated features"),
            Self::QueueUnavailable(q) => write!(f, "virtqueue {q} unavailable"),
            Self::OutOfMemory => write!(f, "out of memory for virtqueues"),
        }
    }
}
