//! The little packet code the agent needs before it has a TCP/IP stack.
//!
//! [`ping`] answers ARP requests and ICMP echo for the agent's address, so a
//! host can check a VM's virtio-net path end to end with `ping`. The header
//! parsing and checksums are smoltcp's `wire` module (no stack, no sockets
//! used).

pub mod ping;
