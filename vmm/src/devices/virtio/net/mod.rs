//! virtio-net with a tap backend.
//!
//! Only `VERSION_1` and `MAC` are offered: frames carry the 12-byte
//! `virtio_net_hdr_v1` and the tap is opened with the same header size, so
//! a frame crosses between a virtqueue and the tap as one copy.

mod device;
mod event_handler;

pub use device::Net;
pub use netdev::{NetMetrics, NetMetricsSnapshot};

/// Receive queue index.
pub const RX_INDEX: usize = 0;
/// Transmit queue index.
pub const TX_INDEX: usize = 1;
/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 256;

/// The virtio_net_config space: the MAC, then status LINK_UP.
pub fn config_space(mac: [u8; 6]) -> [u8; 8] {
    let mut cfg = [0u8; 8];
    cfg[..6].copy_from_slice(&mac);
    cfg[6] = 1;
    cfg
}
