//! A router's link ports: the device behind a small trait, and what the
//! router keeps per port (its neighbour, keys, transmit queue, probing).

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use crate::node::{KeyScope, PortConfig};
use crate::routing::linkstate::LinkMonitor;
use crate::routing::lsa_sign::VerifyBudget;
use crate::routing::NodeId;
use crate::virtio::net::VirtioNet;
use crate::wire::{build_frame, EthAddrs, OverlayRepr};

use super::auth::LinkAuth;
use super::drop::DropReason;

/// What the router needs of a link's device: take frames that arrived,
/// hand frames over. A VM's virtio-net in the guest; an in-memory pipe in
/// host tests and benchmarks ([`super::MemoryLink`]).
pub trait LinkPort {
    /// Passes each frame that arrived to `f`; returns how many.
    fn receive(&mut self, f: &mut dyn FnMut(&[u8])) -> usize;
    /// Whether [`LinkPort::send`] would take a frame now.
    fn can_send(&mut self) -> bool;
    /// Hands one whole Ethernet frame to the link; false if it had no room.
    fn send(&mut self, frame: &[u8]) -> bool;
    /// Makes what [`LinkPort::send`] took visible to the other side (one
    /// notification for a batch).
    fn flush(&mut self) {}
}

impl LinkPort for VirtioNet {
    fn receive(&mut self, f: &mut dyn FnMut(&[u8])) -> usize {
        VirtioNet::receive(self, f)
    }
    fn can_send(&mut self) -> bool {
        VirtioNet::can_send(self)
    }
    fn send(&mut self, frame: &[u8]) -> bool {
        VirtioNet::send(self, frame).is_ok()
    }
    fn flush(&mut self) {
        VirtioNet::flush(self)
    }
}

/// Frames queued per port before new ones are dropped.
pub const MAX_QUEUED: usize = 4096;

/// One port of the router: a link to one neighbour.
pub struct Port<L> {
    pub(super) link: L,
    pub(super) mac: [u8; 6],
    pub(super) peer: NodeId,
    pub(super) peer_mac: [u8; 6],
    pub(super) auth: LinkAuth,
    /// Built frames waiting for room on the link; numbered and sealed as
    /// they leave, so frames put at the front (probes) keep the link
    /// sequence in order.
    pub(super) queue: VecDeque<Vec<u8>>,
    /// Probing of this link.
    pub(super) monitor: LinkMonitor,
    /// Link-state signature checks this neighbour may still cost us.
    pub(super) lsa_budget: VerifyBudget,
    /// Where the link's key came from.
    pub(super) keying: Keying,
    /// The port as configured, without its key (to key it again).
    pub(super) config: PortConfig,
    /// When this node next tells the neighbour its certificate.
    pub(super) next_hello: u64,
}

/// Where a port's key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keying {
    /// The host's configuration.
    Configured,
    /// Nowhere yet: it waits for the neighbour's certificate hello.
    Pending,
    /// The neighbour's hello: the certificate's serial and start, so a
    /// newer certificate keys it again.
    Hello {
        /// The certificate's serial.
        serial: [u8; crate::routing::member::SERIAL_LEN],
        /// Its start (Unix seconds).
        not_before: u64,
    },
}

impl<L: LinkPort> Port<L> {
    pub(super) fn new(link: L, mac: [u8; 6], pc: &PortConfig, epoch_us: u64, now: u64) -> Self {
        Self {
            link,
            mac,
            peer: pc.peer,
            peer_mac: pc.peer_mac,
            auth: LinkAuth::new(pc, epoch_us, now),
            queue: VecDeque::new(),
            monitor: LinkMonitor::new(pc.peer, now),
            lsa_budget: VerifyBudget::new(now),
            keying: if pc.scope == KeyScope::Certified { Keying::Pending } else { Keying::Configured },
            config: PortConfig { key: [0; 32], ..*pc },
            next_hello: now,
        }
    }

    /// Builds a frame for the neighbour and queues it (at the front if
    /// `urgent`); `Ok(false)` if the queue is full.
    pub(super) fn enqueue(
        &mut self,
        mut repr: OverlayRepr,
        state: &[u8],
        payload: &[u8],
        urgent: bool,
    ) -> Result<bool, DropReason> {
        if self.queue.len() >= MAX_QUEUED {
            return Ok(false);
        }
        repr.link_id = self.auth.tx_link_id();
        let mut frame = Vec::new();
        let eth = EthAddrs { dst: self.peer_mac, src: self.mac };
        build_frame(&mut frame, eth, &repr, state, payload)?;
        if urgent {
            self.queue.push_front(frame);
        } else {
            self.queue.push_back(frame);
        }
        Ok(true)
    }

    /// Hands queued frames to the link while it has room, at time `now`;
    /// whether any went.
    pub(super) fn flush(&mut self, now: u64) -> bool {
        let mut worked = false;
        while let Some(f) = self.queue.front_mut() {
            // Sealing numbers the frame: only for one that goes now.
            if !self.link.can_send() {
                break;
            }
            self.auth.seal(f, now);
            if !self.link.send(f) {
                // Not after can_send; if it happens the frame waits and is
                // sealed again, under a newer number, when it goes.
                break;
            }
            self.queue.pop_front();
            worked = true;
        }
        self.link.flush();
        worked
    }

    /// The neighbour this port leads to.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// Where its key came from.
    pub fn keying(&self) -> Keying {
        self.keying
    }

    /// The port's keys and senders (for tests, fuzzing and diagnostics).
    pub fn auth(&self) -> &LinkAuth {
        &self.auth
    }

    /// The device.
    pub fn link(&mut self) -> &mut L {
        &mut self.link
    }
}
