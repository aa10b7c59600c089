//! Forwarding and originating packets by each protocol, and delivery to
//! this node's host.
//!
//! Hop-by-hop protocols (`shortest`, `widest`) ask the routes at every
//! relay; source-routed ones (`multipath`, `redundant`) follow the path
//! the origin put in the packet's state, and the destination delivers
//! each packet id once. Onion cells never come here ([`super::onion`]).

use alloc::vec::Vec;

use crate::node::Record;
use crate::routing::{NodeId, Route, RouteContext, SourceRoute};
use crate::wire::overlay::MAX_PAYLOAD_LEN;
use crate::wire::{OverlayRepr, Protocol, FLAG_STREAM};

use super::drop::DropReason;
use super::{origin_repr, LinkPort, Router, MAX_SEEN_FLOWS};

impl<L: LinkPort> Router<L> {
    /// Forwards a packet a relay received: hop by hop (`shortest`,
    /// `widest`) or along the path in its state (`multipath`,
    /// `redundant`). Ok(false) if the port's queue was full.
    pub(super) fn forward(&mut self, repr: OverlayRepr, state: &[u8], payload: &[u8]) -> Result<bool, DropReason> {
        let next = match repr.protocol {
            Protocol::Shortest => self.routes.shortest.next_hop(repr.dst),
            Protocol::Widest => self.routes.widest.next_hop(repr.dst),
            Protocol::Multipath | Protocol::Redundant => return self.follow_source_route(repr, state, payload),
            _ => return Err(DropReason::UnsupportedProtocol),
        };
        let j = self.port_to(next.ok_or(DropReason::NoRoute)?).ok_or(DropReason::NoRoute)?;
        Ok(self.send(j, repr, state, payload))
    }

    /// Forwards along the path the origin chose (in the packet's state).
    fn follow_source_route(&mut self, repr: OverlayRepr, state: &[u8], payload: &[u8]) -> Result<bool, DropReason> {
        let route = SourceRoute::decode(state).map_err(|_| DropReason::BadSourceRoute)?;
        let Ok(Some((next, advanced))) = route.advance(self.me) else { return Err(DropReason::NoRoute) };
        let j = self.port_to(next).ok_or(DropReason::NoRoute)?;
        let mut st = Vec::with_capacity(advanced.encoded_len());
        advanced.encode(&mut st);
        Ok(self.send(j, repr, &st, payload))
    }

    /// Sends a packet this node originates (a datagram or a stream's
    /// segment) the way its protocol routes it: to a next hop, or along
    /// source routes chosen here (one weighted path for `multipath`, a copy
    /// on each of two for `redundant`). Onion circuits carry streams only
    /// ([`Router::onion_send_forward`]).
    pub(super) fn send_from_here(&mut self, repr: OverlayRepr, payload: &[u8]) -> Result<bool, DropReason> {
        let avoid = self.request.as_ref().map(|e| e.avoid.as_slice()).unwrap_or(&[]);
        let mut ctx = RouteContext { avoid, rng: &mut self.onion.rng };
        let states = match self.routes.route(repr.protocol, repr.dst, &mut ctx) {
            None => return Err(DropReason::NoRoute),
            Some(Route::NextHop(next)) => {
                let j = self.port_to(next).ok_or(DropReason::NoRoute)?;
                return Ok(self.send(j, repr, &[], payload));
            }
            Some(Route::Path(path)) => route_states(new_packet_id(&mut self.next_packet_id), [path]),
            Some(Route::Copies(paths)) => {
                route_states(new_packet_id(&mut self.next_packet_id), paths.iter().map(Vec::as_slice))
            }
            Some(Route::Circuit(_)) => return Err(DropReason::UnsupportedProtocol),
        };
        self.send_routed(repr, &states, payload)
    }

    /// Sends a packet this node originates along each source route in
    /// `states` (one copy per non-empty state).
    pub(super) fn send_routed(
        &mut self,
        mut repr: OverlayRepr,
        states: &[Vec<u8>; 2],
        payload: &[u8],
    ) -> Result<bool, DropReason> {
        let mut sent = false;
        for st in states.iter().filter(|s| !s.is_empty()) {
            repr.state_len = st.len() as u16;
            sent |= self.follow_source_route(repr, st, payload)?;
        }
        Ok(sent)
    }

    /// Whether a source-routed packet for this node is new (copies of a
    /// `redundant` packet arrive twice; deliver once).
    fn first_copy(&mut self, repr: &OverlayRepr, state: &[u8]) -> bool {
        if !matches!(repr.protocol, Protocol::Multipath | Protocol::Redundant) {
            return true;
        }
        let Ok(route) = SourceRoute::decode(state) else { return false };
        if self.seen.len() >= MAX_SEEN_FLOWS && !self.seen.contains_key(&(repr.src, repr.flow_id)) {
            // Forget the oldest-keyed flow; its late copies may then be
            // delivered twice, never lost.
            self.seen.pop_first();
        }
        let seen = self.seen.entry((repr.src, repr.flow_id)).or_default();
        if seen.accept(route.packet_id as u64) {
            true
        } else {
            self.stats.duplicates += 1;
            false
        }
    }

    /// A packet for this node: a stream's segment, or a datagram for the
    /// host.
    pub(super) fn arrive(
        &mut self,
        repr: &OverlayRepr,
        state: &[u8],
        payload: &[u8],
        now: u64,
    ) -> Result<(), DropReason> {
        let stream = repr.flags & FLAG_STREAM != 0;
        if stream {
            self.learn_reply_path(repr, state, now);
        }
        if !self.first_copy(repr, state) {
            return Ok(());
        }
        if stream {
            self.stream_segment(repr, payload, now)?;
            // A SYN made the flow just now: its path counts too.
            self.learn_reply_path(repr, state, now);
            return Ok(());
        }
        self.deliver(repr.src, repr.flow_id, payload);
        Ok(())
    }

    fn deliver(&mut self, src: NodeId, flow: u32, payload: &[u8]) {
        if self.queue_for_host(src, flow, payload) {
            self.stats.delivered += 1;
        }
    }

    /// Originates one datagram record from the host.
    pub(super) fn originate(&mut self, r: Record<'_>) {
        if r.node == self.me {
            self.deliver(self.me, r.flow, r.payload);
            return;
        }
        if r.payload.len() > MAX_PAYLOAD_LEN {
            self.stats.drops.count(DropReason::Oversized);
            return;
        }
        let repr = origin_repr(self.protocol, 0, self.hop_limit, r.flow, self.me, r.node, r.payload.len());
        match self.send_from_here(repr, r.payload) {
            Ok(true) => self.stats.originated += 1,
            Ok(false) => {}
            Err(e) => self.stats.drops.count(e),
        }
    }
}

/// The next packet id of an origin (the copies of one packet share it,
/// so the destination delivers it once).
pub(super) fn new_packet_id(next: &mut u32) -> u32 {
    *next = next.wrapping_add(1).max(1);
    *next
}

/// Source-route states, from this node, for up to two `paths`, all under
/// `packet_id`.
pub(super) fn route_states<'p>(packet_id: u32, paths: impl IntoIterator<Item = &'p [NodeId]>) -> [Vec<u8>; 2] {
    let mut states = [Vec::new(), Vec::new()];
    for (st, path) in states.iter_mut().zip(paths) {
        SourceRoute::encode_parts(0, packet_id, path, st);
    }
    states
}
