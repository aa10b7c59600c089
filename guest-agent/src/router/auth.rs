//! Link authentication and sealing: which sender on a link may speak, and
//! the keys and replay windows that decide it.
//!
//! Each side of a link owns a span of directed link ids (its node takes
//! the first, each request VM on an edge host one more). Every frame is
//! sealed with the key derived for its sender's id and numbered in that
//! id's sequence, so senders sharing a link never share a nonce or a
//! window.

use alloc::collections::BTreeMap;

use crate::node::PortConfig;
use crate::wire::{seal_built, LinkKey, OverlayPacket, OverlayRepr, ReplayWindow, RESERVED_LINK_ID};

use super::drop::DropReason;

/// Sender ids per link whose replay windows are kept; beyond, the lowest
/// is forgotten and every id below it refused from then on.
pub const MAX_RX_SENDERS: usize = 1024;

/// One link's keys and windows, both directions.
pub struct LinkAuth {
    /// Link id this node sends under.
    tx_link_id: u32,
    rx_link_id: u32,
    rx_link_span: u32,
    /// The link's key: derives one key per link id; never seals itself.
    link_key: LinkKey,
    /// The key this node seals with (its own link id's).
    tx_key: LinkKey,
    next_seq: u64,
    /// Per sender id on the other side: its key and replay window.
    rx: BTreeMap<u32, (LinkKey, ReplayWindow)>,
    /// Ids below this are refused (their windows were forgotten).
    rx_low_water: u32,
}

impl LinkAuth {
    /// Keys for one port as configured; sequence numbers start at
    /// `epoch_us` (the boot's wall clock), so a restarted sender is newer
    /// than anything its neighbour saw from it before.
    pub fn new(pc: &PortConfig, epoch_us: u64) -> Self {
        let link_key = LinkKey::new(&pc.key);
        Self {
            tx_link_id: pc.tx_link_id,
            rx_link_id: pc.rx_link_id,
            rx_link_span: pc.rx_link_span.max(1),
            tx_key: link_key.derive(pc.tx_link_id),
            link_key,
            next_seq: epoch_us.max(1),
            rx: BTreeMap::new(),
            rx_low_water: 0,
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

    /// Checks a packet from the neighbour side: a sender id in its span,
    /// not replayed, sealed with that id's key. Records the sequence number
    /// only after the tag checks, so forgeries move no window.
    pub fn open(&mut self, p: &OverlayPacket<&[u8]>, repr: &OverlayRepr) -> Result<(), DropReason> {
        let id = repr.link_id;
        let offset = id.wrapping_sub(self.rx_link_id);
        if offset >= self.rx_link_span || id < self.rx_low_water || id == RESERVED_LINK_ID {
            return Err(DropReason::UnknownLink);
        }
        if !self.rx.contains_key(&id) && self.rx.len() >= MAX_RX_SENDERS {
            if let Some((oldest, _)) = self.rx.pop_first() {
                self.rx_low_water = self.rx_low_water.max(oldest.wrapping_add(1));
            }
            if id < self.rx_low_water {
                return Err(DropReason::UnknownLink);
            }
        }
        let link_key = &self.link_key;
        let (key, window) = self.rx.entry(id).or_insert_with(|| (link_key.derive(id), ReplayWindow::new()));
        if !window.check(repr.link_seq) {
            return Err(DropReason::Replayed);
        }
        key.open(p).map_err(DropReason::from)?;
        window.accept(repr.link_seq);
        Ok(())
    }

    /// Numbers and seals a frame `wire::build_frame` made, as it leaves.
    pub fn seal(&mut self, frame: &mut [u8]) {
        seal_built(frame, self.next_seq, &self.tx_key);
        self.next_seq += 1;
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::*;
    use crate::wire::{build_frame, EthAddrs, Protocol, ETH_HDR_LEN};

    fn port(tx: u32, rx: u32, span: u32) -> PortConfig {
        PortConfig { peer: 2, peer_mac: [2; 6], tx_link_id: tx, rx_link_id: rx, rx_link_span: span, key: [7; 32] }
    }

    fn frame_from(sender: &mut LinkAuth) -> Vec<u8> {
        let repr = OverlayRepr {
            protocol: Protocol::Shortest,
            flags: 0,
            hop_limit: 4,
            flow_id: 1,
            src: 1,
            dst: 2,
            state_len: 0,
            payload_len: 2,
            link_id: sender.tx_link_id(),
            link_seq: 0,
        };
        let mut f = Vec::new();
        build_frame(&mut f, EthAddrs { dst: [1; 6], src: [2; 6] }, &repr, &[], b"hi").unwrap();
        sender.seal(&mut f);
        f
    }

    fn check(rx: &mut LinkAuth, f: &[u8]) -> Result<(), DropReason> {
        let p = OverlayPacket::new_checked(&f[ETH_HDR_LEN..]).unwrap();
        let repr = OverlayRepr::parse(&p).unwrap();
        rx.open(&p, &repr)
    }

    #[test]
    fn a_sealed_frame_opens_once_and_its_replay_is_refused() {
        let mut a = LinkAuth::new(&port(10, 20, 1), 100);
        let mut b = LinkAuth::new(&port(20, 10, 4), 100);
        let f = frame_from(&mut a);
        assert_eq!(check(&mut b, &f), Ok(()));
        assert_eq!(check(&mut b, &f), Err(DropReason::Replayed));
        assert_eq!(check(&mut b, &frame_from(&mut a)), Ok(()));
    }

    #[test]
    fn a_forged_tag_moves_no_window() {
        let mut a = LinkAuth::new(&port(10, 20, 1), 100);
        let mut b = LinkAuth::new(&port(20, 10, 4), 100);
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
        let mut outside = LinkAuth::new(&port(14, 20, 1), 100);
        let mut b = LinkAuth::new(&port(20, 10, 4), 100);
        assert_eq!(check(&mut b, &frame_from(&mut outside)), Err(DropReason::UnknownLink));
        let mut reserved = LinkAuth::new(&port(RESERVED_LINK_ID, 20, 1), 100);
        let mut c = LinkAuth::new(&port(20, RESERVED_LINK_ID - 1, 4), 100);
        assert_eq!(check(&mut c, &frame_from(&mut reserved)), Err(DropReason::UnknownLink));
    }

    #[test]
    fn senders_in_one_span_have_keys_and_windows_of_their_own() {
        let mut s1 = LinkAuth::new(&port(11, 20, 1), 100);
        let mut s2 = LinkAuth::new(&port(12, 20, 1), 100);
        let mut b = LinkAuth::new(&port(20, 10, 4), 100);
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
        let mut b = LinkAuth::new(&port(20, 10, 1), 100);
        let mut before = LinkAuth::new(&port(10, 20, 1), 100);
        for _ in 0..3 {
            assert_eq!(check(&mut b, &frame_from(&mut before)), Ok(()));
        }
        let mut after = LinkAuth::new(&port(10, 20, 1), 1_000);
        assert_eq!(check(&mut b, &frame_from(&mut after)), Ok(()));
    }
}
