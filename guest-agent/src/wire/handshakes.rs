//! A replay cache for the first message of a key agreement (a stream's
//! end-to-end key share, an onion create at its exit).
//!
//! Such a message creates state from nothing, so a sequence window cannot
//! guard it: a recorded one, played again after its stream ended, would
//! open the stream again (and repeat the app's request to the service).
//! Each carries its sender's wall-clock stamp under the agreed key; a
//! receiver refuses stamps outside [`HANDSHAKE_WINDOW_US`] of its own
//! clock and remembers, per accepted handshake, a tag of its key for as
//! long as its stamp is inside the window. The memory is bounded
//! ([`MAX_HANDSHAKES`]): when full, the entry with the oldest stamp goes
//! and every stamp up to it is refused from then on, so eviction never
//! re-opens a replay.

use alloc::collections::{BTreeMap, BTreeSet};

/// How far a handshake's stamp may lie from the receiver's clock, either
/// way (the hosts' clocks must agree within this).
pub const HANDSHAKE_WINDOW_US: u64 = 30_000_000;
/// Handshakes remembered at once.
pub const MAX_HANDSHAKES: usize = 16_384;

/// A tag naming one handshake (a digest of its agreed key).
pub type HandshakeTag = [u8; 16];

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeRefusal {
    /// Its stamp lies outside the window (or at or below the eviction
    /// floor).
    Stale,
    /// Seen before.
    Replayed,
}

/// The handshakes a receiver accepted lately.
#[derive(Debug, Clone, Default)]
pub struct HandshakeCache {
    by_stamp: BTreeSet<(u64, HandshakeTag)>,
    tags: BTreeMap<HandshakeTag, u64>,
    /// Stamps at or below this are refused (raised by eviction).
    floor: u64,
}

impl HandshakeCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a handshake `tag` stamped `stamp_us` would be accepted at
    /// wall-clock `wall_us` (check before spending on it; record with
    /// [`insert`](Self::insert) once it authenticated).
    pub fn check(&self, tag: &HandshakeTag, stamp_us: u64, wall_us: u64) -> Result<(), HandshakeRefusal> {
        let early = wall_us.saturating_sub(HANDSHAKE_WINDOW_US);
        if stamp_us < early || stamp_us > wall_us.saturating_add(HANDSHAKE_WINDOW_US) || stamp_us <= self.floor {
            return Err(HandshakeRefusal::Stale);
        }
        if self.tags.contains_key(tag) {
            return Err(HandshakeRefusal::Replayed);
        }
        Ok(())
    }

    /// Records an authenticated handshake that [`check`](Self::check)
    /// passed, forgetting those whose stamps left the window.
    pub fn insert(&mut self, tag: HandshakeTag, stamp_us: u64, wall_us: u64) {
        let early = wall_us.saturating_sub(HANDSHAKE_WINDOW_US);
        while let Some(&(s, t)) = self.by_stamp.first() {
            if s >= early && self.by_stamp.len() < MAX_HANDSHAKES {
                break;
            }
            self.by_stamp.pop_first();
            self.tags.remove(&t);
            if s >= early {
                // Evicted while still inside the window: refuse its
                // stamp and older from now on.
                self.floor = self.floor.max(s);
            }
        }
        if self.tags.insert(tag, stamp_us).is_none() {
            self.by_stamp.insert((stamp_us, tag));
        }
    }

    /// Handshakes remembered now.
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WALL: u64 = 1_700_000_000_000_000;

    fn tag(n: u32) -> HandshakeTag {
        let mut t = [0u8; 16];
        t[..4].copy_from_slice(&n.to_be_bytes());
        t
    }

    #[test]
    fn a_handshake_is_taken_once_and_only_within_the_window() {
        let mut c = HandshakeCache::new();
        assert_eq!(c.check(&tag(1), WALL, WALL), Ok(()));
        c.insert(tag(1), WALL, WALL);
        assert_eq!(c.check(&tag(1), WALL, WALL + 1), Err(HandshakeRefusal::Replayed));
        let late = WALL + HANDSHAKE_WINDOW_US + 1;
        assert_eq!(c.check(&tag(1), WALL, late), Err(HandshakeRefusal::Stale), "recorded too long ago");
        assert_eq!(c.check(&tag(2), late + HANDSHAKE_WINDOW_US + 1, late), Err(HandshakeRefusal::Stale));
        // Out of the window, the entry goes; its stamp is refused anyway.
        c.insert(tag(3), late, late);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_full_cache_evicts_the_oldest_and_refuses_its_stamp_from_then_on() {
        let mut c = HandshakeCache::new();
        for n in 0..MAX_HANDSHAKES as u32 {
            c.insert(tag(n), WALL + u64::from(n), WALL);
        }
        c.insert(tag(1 << 30), WALL + 1_000_000, WALL);
        assert_eq!(c.len(), MAX_HANDSHAKES);
        // Tag 0 is forgotten, but its stamp is at the floor: no replay.
        assert_eq!(c.check(&tag(0), WALL, WALL), Err(HandshakeRefusal::Stale));
        assert_eq!(c.check(&tag(1), WALL + 1, WALL), Err(HandshakeRefusal::Replayed));
        assert_eq!(c.check(&tag(1 << 31), WALL + 2_000_000, WALL), Ok(()), "fresh handshakes still pass");
    }
}
