//! virtio-console, port 0: the one byte stream of a per-request VM.
//!
//! In pathvm the console carries the application's stream (the VM is the
//! request's connection), so it is a data path, not a log. The host side is
//! a [`ConsoleBackend`]: stdio, a Unix socket, or a socket handed over by
//! the edge daemon. When the host side closes, the device completes one
//! receive buffer with length 0, pathvm's end-of-stream signal.

mod backend;
mod device;
mod event_handler;
mod metrics;

pub use backend::ConsoleBackend;
pub use device::Console;
pub use metrics::{ConsoleMetrics, ConsoleMetricsSnapshot};

/// Receive queue (host to guest).
pub const RX_INDEX: usize = 0;
/// Transmit queue (guest to host).
pub const TX_INDEX: usize = 1;
/// Queue size offered to the driver.
pub const QUEUE_SIZE: u16 = 64;
/// Most bytes read from the host side at once.
pub const READ_CHUNK: usize = 64 * 1024;
/// Most bytes one transmit chain may carry.
pub const MAX_TX_CHAIN: usize = 64 * 1024;
