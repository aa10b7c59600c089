//! A reliable byte stream over overlay datagrams, between the request's VM
//! on the edge host and the VM on the destination host.
//!
//! The overlay is datagram: packets may be lost (a dead relay, an
//! emulated lossy link), reordered (multipath) or duplicated (redundant).
//! [`Stream`] turns it into an ordered, reliable, flow- and
//! congestion-controlled byte stream: cumulative acknowledgements,
//! out-of-order buffering at the receiver, retransmission on timeout
//! (RFC 6298 estimator) and on three duplicate acknowledgements, and
//! NewReno-style congestion control (slow start, additive increase,
//! halving on loss). It is sans-I/O: the caller feeds it received
//! segments and the time, and sends what it produces, so the same code
//! runs in the agent and in host tests with a simulated lossy network.

pub mod e2e;
pub mod segment;
pub mod stream;

pub use segment::{Kind, Segment, SegmentError, HEADER_LEN};
pub use stream::{Stream, StreamState};
