//! Link authentication and sealing: which sender on a link may speak, and
//! the keys and replay windows that decide it.
//!
//! Each side of a link owns a span of directed link ids (its node takes
//! the first, each request VM on an edge host one more). Every frame is
//! sealed with the key derived for its sender's id and numbered in that
//! id's sequence, so senders sharing a link never share a nonce or a
//! window.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use crate::node::{KeyScope, PortConfig};
use crate::wire::{
    seal_built, LinkKey, OverlayPacket, OverlayRepr, ReplayWindow, ETH_HDR_LEN, HEADER_LEN, RESERVED_LINK_ID,
};

use super::drop::DropReason;

/// Sender ids per link whose keys and replay windows are kept; beyond, the
/// least recently authenticated is forgotten (its floor stays).
pub const MAX_RX_SENDERS: usize = 1024;

/// Ids per side of a link that may send (the topology gives each side
/// 2^16: its node, then request VMs); ids further into a configured span
/// are refused, which bounds the per-id floors a link keeps.
pub const MAX_LINK_SPAN: u32 = 1 << 16;

/// The flow id of node VMs' control messages; never a request's (the
/// edge's request flows are odd).
pub const NODE_CONTROL_FLOW: u32 = 0;

/// The link id the edge gives request slot `slot` on the side whose span
/// starts at `first` and holds `span` ids: offset 0 is the edge host's
/// node, requests take offsets 1 to `span - 1` in turn, so an id is
/// recycled every `span - 1` requests. One definition for the edge that
/// allocates and the tests that check relays accept every one.
///
/// Recycling cannot replay: a request VM's sequence numbers start at its
/// boot's wall clock (µs), the same rule that makes a restarted node newer
/// than its last run, so a later VM on a recycled id numbers above every
/// frame of the earlier one (which sent fewer frames than µs passed before
/// its id came round again), and a relay refuses every number up to the
/// highest it accepted under the id, held in the window or, once the
/// window is forgotten, in the id's floor ([`LinkAuth`]).
pub fn request_link_id(first: u32, span: u32, slot: u32) -> u32 {
    let requests = span.min(MAX_LINK_SPAN).saturating_sub(1).max(1);
    first.wrapping_add(1 + slot % requests)
}

/// How far below its own boot's clock a request VM still hears its
/// relay. A relay's clock may lag a VM booted a moment ago (the relay's
/// boot took a while after its clock was read; TSCs drift), and the VM
/// speaks first, so it cannot wait for a Lamport catch-up. What it must
/// refuse is replies recorded for an earlier VM on its recycled id, which
/// booted at least `MAX_LINK_SPAN - 1` requests (minutes at the edge's
/// spawn rate) before it.
pub const REQUEST_GRACE_US: u64 = 10_000_000;

/// The wall clock from router time: the host's reading at this boot plus
/// the router time since. Link numbers and link-state advertisements are
/// stamped with it.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    epoch_us: u64,
    boot_now: u64,
}

impl WallClock {
    /// The clock that read `epoch_us` (µs since the Unix epoch) at router
    /// time `now`.
    pub fn new(epoch_us: u64, now: u64) -> Self {
        Self { epoch_us: epoch_us.max(1), boot_now: now }
    }

    /// µs since the Unix epoch at router time `now`.
    pub fn at(&self, now: u64) -> u64 {
        self.epoch_us.saturating_add(now.saturating_sub(self.boot_now))
    }
}

/// Who sent a frame that authenticated: the neighbour's node, or one of
/// the request VMs its side holds ids for. Relays take link state and
/// control that changes state from nodes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderKind {
    /// The first id of the neighbour's span: its node.
    Node,
    /// A further id: a request VM on the neighbour's host.
    Request,
}

/// What a receiver holds for one sender it authenticated.
struct Sender {
    /// The sender id's key (derived once, when it first authenticated).
    key: LinkKey,
    window: ReplayWindow,
    /// When it last authenticated, in [`LinkAuth::tick`]s.
    heard: u64,
    /// For a request VM: the key this node seals its frames with
    /// ([`LinkKey::reply`] of its own), and the flow it speaks for.
    reply: Option<(LinkKey, Option<u32>)>,
}

/// The keys one port holds.
enum Keys {
    /// A node's: the link key, from which every id's key derives.
    Link(LinkKey),
    /// A request VM's: the key frames from the neighbour's node come
    /// under (the reply key of its own id).
    Own(LinkKey),
    /// None yet ([`KeyScope::Certified`] before the neighbour's hello):
    /// nothing authenticates.
    None,
}

/// One link's keys and windows, both directions.
///
/// Receiving authenticates first and creates state after: a frame whose
/// tag fails (or whose number is refused) changes nothing here. The key of
/// an id is derived from the link key without any state, so an id not in
/// the table is checked with a key derived for the one frame, and only a
/// frame that verifies adds its sender. The table holds
/// [`MAX_RX_SENDERS`]; a new sender evicts the least recently
/// authenticated one, never by id order, so frames without a key cannot
/// evict anyone and a key holder (a request VM holds its own ids' keys)
/// can hold one entry per id it has, pushing out only senders quieter than
/// every other one on the link.
///
/// Numbers are wall-clock stamps: a frame leaves numbered with the
/// sender's clock in µs (its host's wall clock at boot plus the time since),
/// or one above its last number when frames leave faster than one per µs.
/// That makes restarts safe both ways without a handshake on the request
/// path:
/// - a restarted sender (or a request VM on a recycled id) numbers above
///   everything it sent before, so its neighbour hears it at once;
/// - a restarted receiver refuses every number below its own boot's clock
///   ([`DropReason::Stale`]): what was recorded before it restarted was
///   stamped before it booted, so a captured link replayed after the
///   restart is refused whole; a request VM refuses what is older than
///   its boot by more than [`REQUEST_GRACE_US`], so replies recorded for
///   the VM that held its recycled id before are refused too.
///
/// The second needs the two hosts' clocks to agree to better than a
/// restart takes (a VM boot, milliseconds): one host's clock in the lab,
/// NTP across hosts. A sender whose clock runs behind its neighbour's is
/// not locked out: it takes the neighbour's node's numbers as a floor for
/// its own (a Lamport clock), so its frames are heard from the first probe
/// of the restarted neighbour on.
///
/// A forgotten sender's replays stay refused: eviction keeps its highest
/// accepted number as a floor for its id (8 bytes per id of the span,
/// allocated once the link first evicts), and a sender coming back starts
/// from a window that refuses every number up to it. No id is ever
/// refused for good, and no floor depends on another sender's numbers.
///
/// Least key: a request VM's port holds only its own id's key
/// ([`KeyScope::Own`]); the neighbour's node seals the frames of that VM's
/// flow with the key's [`LinkKey::reply`], learnt from the VM's own
/// authenticated frames (one flow per request id, first come), so the VM
/// can verify its relay but cannot seal as any other sender, the relay
/// included.
pub struct LinkAuth {
    /// Link id this node sends under.
    tx_link_id: u32,
    rx_link_id: u32,
    /// Ids the other side may send under (at most [`MAX_LINK_SPAN`]).
    rx_link_span: u32,
    keys: Keys,
    /// The key this node seals with (its own link id's).
    tx_key: LinkKey,
    /// The lowest number the next frame may carry.
    next_seq: u64,
    /// Numbers are stamped from it.
    clock: WallClock,
    /// Numbers below this are [`DropReason::Stale`]: this boot's clock
    /// (a request VM's, less [`REQUEST_GRACE_US`]).
    stale_below: u64,
    /// Senders on the other side heard lately, by id.
    rx: BTreeMap<u32, Sender>,
    /// The senders by when they were last authenticated, oldest first:
    /// one entry per sender, updated lazily (an entry's time may be older
    /// than the sender's `heard`; eviction moves such an entry up before
    /// it evicts), so a frame from a known sender costs no index update.
    lru: BTreeMap<u64, u32>,
    /// Authentications so far on this link (orders `heard`).
    tick: u64,
    /// Per id offset in the span: the highest number accepted from it
    /// before its window was forgotten (0: none). Empty until the first
    /// eviction.
    floors: Vec<u64>,
    /// Flows of request VMs held in `rx`, to the VM's id: frames of such a
    /// flow leave sealed with that VM's reply key.
    flows: BTreeMap<u32, u32>,
}

impl LinkAuth {
    /// Keys for one port as configured, at router time `now`, which is
    /// wall-clock time `epoch_us` (µs since the Unix epoch, read by the
    /// host at this boot): see [`LinkAuth`] on how numbers follow it.
    pub fn new(pc: &PortConfig, epoch_us: u64, now: u64) -> Self {
        let given = LinkKey::new(&pc.key);
        let (keys, tx_key) = match pc.scope {
            KeyScope::Link => (Keys::Link(given.clone()), given.derive(pc.tx_link_id)),
            KeyScope::Own => (Keys::Own(given.reply()), given),
            // What it seals no one can open (the neighbour has the real
            // key), and it opens nothing.
            KeyScope::Certified => (Keys::None, given),
        };
        Self {
            tx_link_id: pc.tx_link_id,
            rx_link_id: pc.rx_link_id,
            rx_link_span: pc.rx_link_span.clamp(1, MAX_LINK_SPAN),
            keys,
            tx_key,
            next_seq: epoch_us.max(1),
            clock: WallClock::new(epoch_us, now),
            stale_below: match pc.scope {
                KeyScope::Link | KeyScope::Certified => epoch_us,
                KeyScope::Own => epoch_us.saturating_sub(REQUEST_GRACE_US),
            },
            rx: BTreeMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            floors: Vec::new(),
            flows: BTreeMap::new(),
        }
    }

    /// The link id this node's frames carry.
    pub fn tx_link_id(&self) -> u32 {
        self.tx_link_id
    }

    /// Sender ids whose windows are held now.
    pub fn senders(&self) -> usize {
        self.rx.len()
    }

    /// The sender ids held now, least recently authenticated first (for
    /// tests and diagnostics).
    pub fn sender_ids(&self) -> Vec<u32> {
        let mut ids: Vec<(u64, u32)> = self.rx.iter().map(|(&id, s)| (s.heard, id)).collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// Checks a packet from the neighbour side: a sender id in its span,
    /// not replayed, sealed with that id's key. State (a new sender, an
    /// eviction, a window's movement, a request VM's flow) follows only a
    /// verified tag.
    pub fn open(&mut self, p: &OverlayPacket<&[u8]>, repr: &OverlayRepr) -> Result<SenderKind, DropReason> {
        let id = repr.link_id;
        let seq = repr.link_seq;
        let offset = id.wrapping_sub(self.rx_link_id);
        if matches!(self.keys, Keys::None) {
            return Err(DropReason::UnknownLink);
        }
        let own = matches!(self.keys, Keys::Own(_));
        // A request VM hears only the neighbour's node.
        if offset >= self.rx_link_span || id == RESERVED_LINK_ID || (own && offset != 0) {
            return Err(DropReason::UnknownLink);
        }
        let kind = if offset == 0 { SenderKind::Node } else { SenderKind::Request };
        let heard = self.tick;
        if let Some(s) = self.rx.get_mut(&id) {
            // The window first: it is cheaper than the tag and moves nothing.
            if !s.window.check(seq) {
                return Err(DropReason::Replayed);
            }
            s.key.open(p).map_err(DropReason::from)?;
            s.window.accept(seq);
            s.heard = heard;
            self.tick += 1;
            self.heard_from(kind, id, repr.flow_id, seq);
            return Ok(kind);
        }
        // Nothing sent before this boot is heard: an honest sender stamps
        // at least its clock, so what is older was recorded.
        if seq < self.stale_below {
            return Err(DropReason::Stale);
        }
        let mut window = ReplayWindow::above(self.floors.get(offset as usize).copied().unwrap_or(0));
        if !window.check(seq) {
            return Err(DropReason::Replayed);
        }
        // Derived for this frame alone; kept only if the tag verifies.
        let key = match &self.keys {
            Keys::Link(link) => link.derive(id),
            Keys::Own(reply) => reply.clone(),
            Keys::None => return Err(DropReason::UnknownLink),
        };
        key.open(p).map_err(DropReason::from)?;
        window.accept(seq);
        if self.rx.len() >= MAX_RX_SENDERS {
            self.evict_least_recent();
        }
        let reply = (kind == SenderKind::Request).then(|| (key.reply(), None));
        self.rx.insert(id, Sender { key, window, heard, reply });
        self.lru.insert(heard, id);
        self.tick += 1;
        self.heard_from(kind, id, repr.flow_id, seq);
        Ok(kind)
    }

    /// After sender `id` authenticated number `seq` on `flow`: a request
    /// VM speaks for its flow; the neighbour's node's number pulls this
    /// side's up (a Lamport clock), so a node whose clock runs behind its
    /// neighbour's (a slow TSC) is heard at once after the neighbour
    /// restarts instead of once its own clock passes the neighbour's boot.
    fn heard_from(&mut self, kind: SenderKind, id: u32, flow: u32, seq: u64) {
        match kind {
            SenderKind::Request => self.bind_flow(id, flow),
            SenderKind::Node => self.next_seq = self.next_seq.max(seq.saturating_add(1)),
        }
    }

    /// Request VM `id` speaks for `flow`: frames of that flow leave sealed
    /// for it. A flow another held VM speaks for stays that VM's (first
    /// come; a compromised VM cannot take a neighbour's replies), and a VM
    /// speaks for one flow at a time (its stream's), so the table is never
    /// larger than the sender table.
    fn bind_flow(&mut self, id: u32, flow: u32) {
        let Some(Sender { reply: Some((_, bound)), .. }) = self.rx.get_mut(&id) else { return };
        // Flow 0 carries the nodes' own control (probes, acks, floods): a
        // request VM claiming it would cut its host's node off the link.
        if flow == NODE_CONTROL_FLOW || *bound == Some(flow) || self.flows.contains_key(&flow) {
            return;
        }
        if let Some(old) = bound.replace(flow) {
            self.flows.remove(&old);
        }
        self.flows.insert(flow, id);
    }

    /// Forgets the sender authenticated least recently, keeping its
    /// highest number as its id's floor.
    fn evict_least_recent(&mut self) {
        while let Some((at, id)) = self.lru.pop_first() {
            let Some(s) = self.rx.get(&id) else { continue };
            if s.heard != at {
                // Heard since this entry was made: move it to when.
                self.lru.insert(s.heard, id);
                continue;
            }
            let top = s.window.top();
            if let Some((_, Some(flow))) = s.reply {
                self.flows.remove(&flow);
            }
            self.rx.remove(&id);
            if self.floors.is_empty() {
                self.floors = vec![0; self.rx_link_span as usize];
            }
            // In the span: only ids in it were ever added.
            if let Some(floor) = self.floors.get_mut(id.wrapping_sub(self.rx_link_id) as usize) {
                *floor = top;
            }
            return;
        }
    }

    /// Numbers and seals a frame `wire::build_frame` made, as it leaves at
    /// router time `now`: with the reply key of the request VM whose flow
    /// it carries, else with this node's own key.
    pub fn seal(&mut self, frame: &mut [u8], now: u64) {
        // No lookup on links without request VMs (relays between nodes).
        let reply = if self.flows.is_empty() {
            None
        } else {
            frame_flow(frame).and_then(|flow| self.flows.get(&flow)).and_then(|id| self.rx.get(id))
        };
        let key = reply.and_then(|s| s.reply.as_ref()).map_or(&self.tx_key, |(k, _)| k);
        // The wall clock now, or one above the last number if frames
        // leave faster than one per µs.
        let seq = self.next_seq.max(self.clock.at(now));
        seal_built(frame, seq, key);
        self.next_seq = seq.saturating_add(1);
    }
}

/// The overlay flow id of a built frame.
fn frame_flow(frame: &[u8]) -> Option<u32> {
    let overlay = frame.get(ETH_HDR_LEN..).filter(|o| o.len() >= HEADER_LEN)?;
    Some(OverlayPacket::new_unchecked(overlay).flow_id())
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::wire::{build_frame, EthAddrs, Protocol, ETH_HDR_LEN};

    fn port(tx: u32, rx: u32, span: u32) -> PortConfig {
        PortConfig {
            peer: 2,
            peer_mac: [2; 6],
            tx_link_id: tx,
            rx_link_id: rx,
            rx_link_span: span,
            scope: KeyScope::Link,
            key: [7; 32],
        }
    }

    /// A request VM's port as the edge host configures it: its own id's
    /// key only.
    fn request_port(tx: u32, rx: u32) -> PortConfig {
        let own = LinkKey::new(&[7; 32]).derive_bytes(tx);
        PortConfig { scope: KeyScope::Own, key: own, ..port(tx, rx, 1) }
    }

    fn frame_from(sender: &mut LinkAuth) -> Vec<u8> {
        frame_on(sender, 1)
    }

    fn frame_on(sender: &mut LinkAuth, flow_id: u32) -> Vec<u8> {
        frame_at(sender, flow_id, 0)
    }

    /// A frame on `flow_id` sealed by `sender` at its router time `now`.
    fn frame_at(sender: &mut LinkAuth, flow_id: u32, now: u64) -> Vec<u8> {
        let repr = OverlayRepr {
            protocol: Protocol::Shortest,
            flags: 0,
            hop_limit: 4,
            flow_id,
            src: 1,
            dst: 2,
            state_len: 0,
            payload_len: 2,
            link_id: sender.tx_link_id(),
            link_seq: 0,
        };
        let mut f = Vec::new();
        build_frame(&mut f, EthAddrs { dst: [1; 6], src: [2; 6] }, &repr, &[], b"hi").unwrap();
        sender.seal(&mut f, now);
        f
    }

    fn check(rx: &mut LinkAuth, f: &[u8]) -> Result<(), DropReason> {
        open(rx, f).map(|_| ())
    }

    fn open(rx: &mut LinkAuth, f: &[u8]) -> Result<SenderKind, DropReason> {
        let p = OverlayPacket::new_checked(&f[ETH_HDR_LEN..]).unwrap();
        let repr = OverlayRepr::parse(&p).unwrap();
        rx.open(&p, &repr)
    }

    #[test]
    fn a_request_vm_with_its_own_key_only_talks_to_its_relay_both_ways() {
        // The edge side spans 10..14: its node is 10, request VMs 11 to 13.
        let mut relay = LinkAuth::new(&port(20, 10, 4), 100, 0);
        let mut vm = LinkAuth::new(&request_port(12, 20), 200, 0);
        let mut edge_node = LinkAuth::new(&port(10, 20, 1), 100, 0);
        assert_eq!(open(&mut relay, &frame_on(&mut vm, 0xabc)), Ok(SenderKind::Request));
        assert_eq!(open(&mut relay, &frame_on(&mut edge_node, 5)), Ok(SenderKind::Node));
        // The relay answers the VM's flow under the VM's reply key: the VM
        // verifies it, the edge host's node (whose flow it is not) cannot.
        let reply = frame_on(&mut relay, 0xabc);
        assert_eq!(check(&mut vm, &reply), Ok(()));
        assert_eq!(check(&mut edge_node, &reply), Err(DropReason::BadMac));
        // Other flows go under the relay's own key, for the edge's node.
        let other = frame_on(&mut relay, 5);
        assert_eq!(check(&mut edge_node, &other), Ok(()));
        assert_eq!(check(&mut vm, &other), Err(DropReason::BadMac));
    }

    #[test]
    fn a_request_vm_cannot_seal_as_the_edge_node_or_another_vm() {
        let mut relay = LinkAuth::new(&port(20, 10, 4), 100, 0);
        // A compromised VM relabels its frames as the node's id or a
        // neighbour VM's: its key is not theirs.
        let mut vm = LinkAuth::new(&request_port(12, 20), 200, 0);
        for id in [10, 11, 13] {
            let mut f = frame_from(&mut vm);
            OverlayPacket::new_unchecked(&mut f[ETH_HDR_LEN..]).set_link_id(id);
            assert_eq!(check(&mut relay, &f), Err(DropReason::BadMac), "as id {id}");
        }
        assert_eq!(relay.senders(), 0);
        // And it hears only the relay's node id, not other senders there.
        let mut relay_vm = LinkAuth::new(&port(21, 10, 1), 100, 0);
        let mut vm2 = LinkAuth::new(&PortConfig { rx_link_span: 4, ..request_port(12, 20) }, 200, 0);
        assert_eq!(check(&mut vm2, &frame_from(&mut relay_vm)), Err(DropReason::UnknownLink));
    }

    #[test]
    fn a_vm_cannot_take_another_vms_flow() {
        let mut relay = LinkAuth::new(&port(20, 10, 4_000), 100, 0);
        let mut vm1 = LinkAuth::new(&request_port(11, 20), 200, 0);
        let mut vm2 = LinkAuth::new(&request_port(12, 20), 200, 0);
        assert_eq!(check(&mut relay, &frame_on(&mut vm1, 7)), Ok(()));
        // VM 2 claims VM 1's flow: the replies stay VM 1's.
        assert_eq!(check(&mut relay, &frame_on(&mut vm2, 7)), Ok(()));
        let reply = frame_on(&mut relay, 7);
        assert_eq!(check(&mut vm1, &reply), Ok(()));
        assert_eq!(check(&mut vm2, &reply), Err(DropReason::BadMac));
        // Nor the nodes' control flow: the edge's node keeps its replies.
        assert_eq!(check(&mut relay, &frame_on(&mut vm2, NODE_CONTROL_FLOW)), Ok(()));
        let mut edge_node = LinkAuth::new(&port(10, 20, 1), 100, 0);
        assert_eq!(check(&mut edge_node, &frame_on(&mut relay, NODE_CONTROL_FLOW)), Ok(()));
        // Once VM 1 is forgotten its flow is free again.
        fill(&mut relay, 1_000..1_000 + MAX_RX_SENDERS as u32);
        assert!(relay.flows.len() <= relay.senders());
        assert!(!relay.flows.contains_key(&7));
    }

    #[test]
    fn a_sealed_frame_opens_once_and_its_replay_is_refused() {
        let mut a = LinkAuth::new(&port(10, 20, 1), 100, 0);
        let mut b = LinkAuth::new(&port(20, 10, 4), 100, 0);
        let f = frame_from(&mut a);
        assert_eq!(check(&mut b, &f), Ok(()));
        assert_eq!(check(&mut b, &f), Err(DropReason::Replayed));
        assert_eq!(check(&mut b, &frame_from(&mut a)), Ok(()));
    }

    #[test]
    fn a_forged_tag_moves_no_window() {
        let mut a = LinkAuth::new(&port(10, 20, 1), 100, 0);
        let mut b = LinkAuth::new(&port(20, 10, 4), 100, 0);
        let good = frame_from(&mut a);
        let mut forged = good.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(check(&mut b, &forged), Err(DropReason::BadMac));
        // The genuine frame with the same number still opens.
        assert_eq!(check(&mut b, &good), Ok(()));
    }

    #[test]
    fn ids_outside_the_span_and_the_reserved_id_are_unknown() {
        let mut outside = LinkAuth::new(&port(14, 20, 1), 100, 0);
        let mut b = LinkAuth::new(&port(20, 10, 4), 100, 0);
        assert_eq!(check(&mut b, &frame_from(&mut outside)), Err(DropReason::UnknownLink));
        let mut reserved = LinkAuth::new(&port(RESERVED_LINK_ID, 20, 1), 100, 0);
        let mut c = LinkAuth::new(&port(20, RESERVED_LINK_ID - 1, 4), 100, 0);
        assert_eq!(check(&mut c, &frame_from(&mut reserved)), Err(DropReason::UnknownLink));
    }

    #[test]
    fn senders_in_one_span_have_keys_and_windows_of_their_own() {
        let mut s1 = LinkAuth::new(&port(11, 20, 1), 100, 0);
        let mut s2 = LinkAuth::new(&port(12, 20, 1), 100, 0);
        let mut b = LinkAuth::new(&port(20, 10, 4), 100, 0);
        // The same sequence number from two senders: both new.
        assert_eq!(check(&mut b, &frame_from(&mut s1)), Ok(()));
        assert_eq!(check(&mut b, &frame_from(&mut s2)), Ok(()));
        assert_eq!(b.senders(), 2);
        // A frame of s1 relabelled as s2's fails s2's key.
        let mut f = frame_from(&mut s1);
        let mut p = OverlayPacket::new_unchecked(&mut f[ETH_HDR_LEN..]);
        p.set_link_id(12);
        assert_eq!(check(&mut b, &f), Err(DropReason::BadMac));
    }

    #[test]
    fn a_restarted_sender_is_heard_because_it_counts_from_a_later_epoch() {
        let mut b = LinkAuth::new(&port(20, 10, 1), 100, 0);
        let mut before = LinkAuth::new(&port(10, 20, 1), 100, 0);
        for _ in 0..3 {
            assert_eq!(check(&mut b, &frame_from(&mut before)), Ok(()));
        }
        let mut after = LinkAuth::new(&port(10, 20, 1), 1_000, 0);
        assert_eq!(check(&mut b, &frame_from(&mut after)), Ok(()));
    }

    #[test]
    fn frames_recorded_before_a_receiver_restarted_are_all_refused_after_it() {
        let mut a = LinkAuth::new(&port(10, 20, 1), 1_000_000, 0);
        let mut b = LinkAuth::new(&port(20, 10, 4), 1_000_000, 0);
        // 1,000 frames over A's next 2 ms, some faster than one per µs.
        let captured: Vec<Vec<u8>> = (0..1_000).map(|i| frame_at(&mut a, 1, i * 2 / 3)).collect();
        for f in &captured {
            assert_eq!(check(&mut b, f), Ok(()));
        }
        // B restarts 5 ms later: its new boot reads the clock then.
        let mut b = LinkAuth::new(&port(20, 10, 4), 1_005_000, 0);
        for f in &captured {
            assert_eq!(check(&mut b, f), Err(DropReason::Stale));
        }
        assert_eq!(b.senders(), 0, "a stale frame adds no sender");
        // A, still running, is heard again with its next frame.
        assert_eq!(check(&mut b, &frame_at(&mut a, 1, 5_001)), Ok(()));
    }

    #[test]
    fn a_sender_whose_clock_runs_behind_catches_up_from_its_neighbours_numbers() {
        let mut b = LinkAuth::new(&port(20, 10, 1), 5_000_000, 0);
        let mut a = LinkAuth::new(&port(10, 20, 1), 1_000_000, 0);
        assert_eq!(check(&mut b, &frame_at(&mut a, 1, 10)), Err(DropReason::Stale));
        // B's first probe reaches A: A numbers above it from then on.
        assert_eq!(check(&mut a, &frame_at(&mut b, 0, 10)), Ok(()));
        assert_eq!(check(&mut b, &frame_at(&mut a, 1, 20)), Ok(()));
    }

    #[test]
    fn a_request_vm_refuses_replies_recorded_for_the_last_vm_on_its_id() {
        let t0 = 100_000_000;
        let mut relay = LinkAuth::new(&port(20, 10, 4), t0, 0);
        let mut old_vm = LinkAuth::new(&request_port(12, 20), t0, 0);
        assert_eq!(check(&mut relay, &frame_at(&mut old_vm, 7, 0)), Ok(()));
        let recorded = frame_at(&mut relay, 7, 0);
        assert_eq!(check(&mut old_vm, &recorded), Ok(()));
        // The id comes round again a minute later (relay time 60 s).
        let later = 60_000_000;
        let mut new_vm = LinkAuth::new(&request_port(12, 20), t0 + later, 0);
        assert_eq!(check(&mut relay, &frame_at(&mut new_vm, 9, 0)), Ok(()));
        assert_eq!(check(&mut new_vm, &recorded), Err(DropReason::Stale));
        // The relay's live replies are heard even though its clock lags
        // the VM's boot by a few ms.
        assert_eq!(check(&mut new_vm, &frame_at(&mut relay, 9, later - 3_000)), Ok(()));
    }

    /// Senders `first..first + n` on the side at 10 (one frame each, in
    /// order), heard by a receiver at 20 spanning 4,000 ids.
    fn fill(b: &mut LinkAuth, ids: core::ops::Range<u32>) -> Vec<LinkAuth> {
        ids.map(|id| {
            let mut s = LinkAuth::new(&port(id, 20, 1), 100, 0);
            assert_eq!(check(b, &frame_from(&mut s)), Ok(()), "id {id}");
            s
        })
        .collect()
    }

    #[test]
    fn forged_frames_from_unknown_ids_add_no_sender_and_evict_none() {
        let mut b = LinkAuth::new(&port(20, 10, 4_000), 100, 0);
        let mut neighbour = fill(&mut b, 10..11).remove(0);
        for id in 11..3_011 {
            let mut f = frame_from(&mut LinkAuth::new(&port(id, 20, 1), 100, 0));
            let last = f.len() - 1;
            f[last] ^= 1;
            assert_eq!(check(&mut b, &f), Err(DropReason::BadMac));
        }
        assert_eq!(b.sender_ids(), [10]);
        assert!(b.floors.is_empty(), "a forgery evicted");
        assert_eq!(check(&mut b, &frame_from(&mut neighbour)), Ok(()));
    }

    #[test]
    fn the_least_recently_authenticated_sender_is_evicted_not_the_lowest_id() {
        let mut b = LinkAuth::new(&port(20, 10, 4_000), 100, 0);
        let mut senders = fill(&mut b, 10..10 + MAX_RX_SENDERS as u32);
        // The lowest id speaks again: now 11 is the least recent.
        assert_eq!(check(&mut b, &frame_from(&mut senders[0])), Ok(()));
        fill(&mut b, 2_000..2_003);
        let held = b.sender_ids();
        assert_eq!(held.len(), MAX_RX_SENDERS);
        assert!(held.contains(&10));
        for gone in 11..14 {
            assert!(!held.contains(&gone), "{gone} held");
        }
        assert_eq!(held[..2], [14, 15]);
        assert_eq!(held[held.len() - 4..], [10, 2_000, 2_001, 2_002]);
    }

    #[test]
    fn an_evicted_senders_old_frames_stay_refused_and_it_is_heard_again() {
        let mut b = LinkAuth::new(&port(20, 10, 4_000), 100, 0);
        let mut s = LinkAuth::new(&port(10, 20, 1), 100, 0);
        let old: Vec<Vec<u8>> = (0..5).map(|_| frame_from(&mut s)).collect();
        // The second is lost on the way: never accepted, but older than
        // what the receiver forgot, so refused too.
        for (i, f) in old.iter().enumerate().filter(|(i, _)| *i != 1) {
            assert_eq!(check(&mut b, f), Ok(()), "frame {i}");
        }
        fill(&mut b, 11..11 + MAX_RX_SENDERS as u32);
        assert!(!b.sender_ids().contains(&10));
        for f in &old {
            assert_eq!(check(&mut b, f), Err(DropReason::Replayed));
        }
        // Its next frame is heard (no id is locked out), and then refused
        // as a replay like any other.
        let next = frame_from(&mut s);
        assert_eq!(check(&mut b, &next), Ok(()));
        assert_eq!(check(&mut b, &next), Err(DropReason::Replayed));
        assert_eq!(check(&mut b, &old[4]), Err(DropReason::Replayed));
        assert!(b.sender_ids().contains(&10));
    }

    #[test]
    fn ids_beyond_the_largest_span_are_unknown() {
        let mut b = LinkAuth::new(&port(20, 10, u32::MAX - 20), 100, 0);
        let mut far = LinkAuth::new(&port(10 + MAX_LINK_SPAN, 20, 1), 100, 0);
        assert_eq!(check(&mut b, &frame_from(&mut far)), Err(DropReason::UnknownLink));
        let mut last = LinkAuth::new(&port(10 + MAX_LINK_SPAN - 1, 20, 1), 100, 0);
        assert_eq!(check(&mut b, &frame_from(&mut last)), Ok(()));
    }

    #[test]
    fn request_ids_take_every_offset_but_the_nodes_in_turn() {
        assert_eq!(request_link_id(100, 4, 0), 101);
        assert_eq!(request_link_id(100, 4, 1), 102);
        assert_eq!(request_link_id(100, 4, 2), 103);
        assert_eq!(request_link_id(100, 4, 3), 101);
        // Spans beyond the largest recycle within it.
        assert_eq!(request_link_id(0, u32::MAX, MAX_LINK_SPAN - 1), 1);
    }
}
