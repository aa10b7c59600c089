//! pathvm's guest agent library.
//!
//! Everything here is `no_std` and free of global state, so the same code
//! runs in the unikernel image (`images/agent`), in host unit tests and in
//! fuzz targets. The image crate adds what only a guest can have: the entry
//! point, the allocator, port I/O and the roles.
//!
//! - [`boot`]: the boot-parameter block the VMM writes at a fixed address;
//! - [`ports`]: the I/O ports the agent uses to talk to the VMM;
//! - [`virtio`]: polled virtio-mmio drivers over split virtqueues;
//! - [`net`]: the minimal packet code the `ping` role needs;
//! - [`node`]: a node VM's configuration, console records and counters;
//! - [`wire`]: the overlay wire format, its authentication and replay window;
//! - [`transport`]: a reliable byte stream over overlay datagrams;
//! - [`router`]: the overlay router every packet crosses, sans-I/O;
//! - [`routing`]: the routing protocols that pick a packet's next node;
//! - [`socks`]: SOCKS5 messages, sans-I/O, for the edge and its clients.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod boot;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod net;
pub mod node;
pub mod onion;
pub mod ports;
pub mod router;
pub mod routing;
pub mod socks;
pub mod transport;
pub mod virtio;
pub mod wire;
