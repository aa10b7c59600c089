//! `onion`: a source-chosen circuit of at least three relays with one layer
//! of encryption per hop, in fixed-size cells.
//!
//! A circuit is set up by one create cell, Sphinx-style ([`header`]): the
//! source agrees a key with every hop at once (X25519 with each node's
//! current onion key, [`rotation`], one fresh ephemeral key per hop) and wraps the routing
//! instructions so that each hop, peeling its layer, learns only the next
//! node, while a filler keeps the header the same length at every hop (no
//! hop learns its position). Each hop then keeps only the pair of links
//! the circuit uses and its keys; data cells ([`cell`]) carry one
//! ChaCha20 layer per hop plus an end-to-end ChaCha20-Poly1305 seal that
//! the exit (forward) or the source (backward) checks. Cell nonces are
//! re-permuted at every hop ([`keys::permute`]), so nothing in a cell is
//! the same on two links.
//!
//! What a relay sees of a circuit: the previous node, the next node, and
//! cells of [`cell::CELL_LEN`] bytes. It never sees the source and the
//! destination together, nor what the stream carries.

pub mod cell;
pub mod circuit;
pub mod header;
pub mod keys;
pub mod rotation;

pub use cell::{CellError, CELL_LEN, MAX_CREATE_DATA, MAX_DATA};
pub use circuit::{ExitHop, RelayHop, SourceCircuit};
pub use header::{Hop, Processed, EXIT, HEADER_LEN, MAX_HOPS};
pub use keys::{public_key, Drbg, HopKeys};
pub use rotation::OnionKeyRing;
