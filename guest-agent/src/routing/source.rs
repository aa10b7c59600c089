//! Source routes: the path chosen at the origin, carried in the packet.
//!
//! `multipath` and `redundant` pick whole paths at the source, so relays
//! do not decide, they follow. The path travels in the overlay header's
//! per-protocol state:
//!
//! ```text
//! 0      1      2       6              6+2n
//! +------+------+-------+--------------+
//! | hop  |  n   | pkt id| n node ids   |
//! +------+------+-------+--------------+
//! ```
//! `hop` is the index of the node that holds the packet now; `pkt id`
//! numbers the origin's packets so a destination can deliver each once
//! when copies come over several paths. Decoding is total: a state that
//! does not describe a path through this node is an error, not a panic.

use alloc::vec::Vec;

use super::NodeId;

/// Most nodes in a source route.
pub const MAX_PATH: usize = 16;
const HDR: usize = 6;

/// A source route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRoute {
    /// Index in `path` of the node holding the packet.
    pub hop: u8,
    /// The origin's packet number (deduplication at the destination).
    pub packet_id: u32,
    /// The whole path, origin first, destination last.
    pub path: Vec<NodeId>,
}

/// Why a source route was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// Malformed state.
    Malformed,
    /// The path does not pass through this node at `hop`.
    NotOnPath,
}

impl SourceRoute {
    /// Bytes `encode` writes.
    pub fn encoded_len(&self) -> usize {
        HDR + 2 * self.path.len()
    }

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        Self::encode_parts(self.hop, self.packet_id, &self.path, out);
    }

    /// Appends the encoding of a route given by its parts (no route value
    /// needed, so a source does not copy its path per packet).
    pub fn encode_parts(hop: u8, packet_id: u32, path: &[NodeId], out: &mut Vec<u8>) {
        out.push(hop);
        out.push(path.len() as u8);
        out.extend_from_slice(&packet_id.to_be_bytes());
        for n in path {
            out.extend_from_slice(&n.to_be_bytes());
        }
    }

    /// Decodes a state.
    pub fn decode(b: &[u8]) -> Result<Self, RouteError> {
        let h = b.get(..HDR).ok_or(RouteError::Malformed)?;
        let (hop, n) = (h[0], h[1] as usize);
        if !(2..=MAX_PATH).contains(&n) || hop as usize >= n || b.len() != HDR + 2 * n {
            return Err(RouteError::Malformed);
        }
        let packet_id = u32::from_be_bytes([h[2], h[3], h[4], h[5]]);
        let path = b[HDR..].chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
        Ok(Self { hop, packet_id, path })
    }

    /// At node `me` holding the packet: the next node, with the route
    /// advanced to it. `None` when `me` is the destination.
    pub fn advance(&self, me: NodeId) -> Result<Option<(NodeId, SourceRoute)>, RouteError> {
        let i = self.hop as usize;
        if self.path.get(i) != Some(&me) {
            return Err(RouteError::NotOnPath);
        }
        match self.path.get(i + 1) {
            None => Ok(None),
            Some(&next) => Ok(Some((next, SourceRoute { hop: self.hop + 1, ..self.clone() }))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn golden_encoding_round_trips() {
        let r = SourceRoute { hop: 1, packet_id: 0x0a0b_0c0d, path: vec![1, 13, 3] };
        let mut b = Vec::new();
        r.encode(&mut b);
        assert_eq!(b, [1, 3, 0x0a, 0x0b, 0x0c, 0x0d, 0, 1, 0, 13, 0, 3]);
        assert_eq!(b.len(), r.encoded_len());
        assert_eq!(SourceRoute::decode(&b), Ok(r));
    }

    #[test]
    fn relays_follow_and_the_destination_stops() {
        let r = SourceRoute { hop: 0, packet_id: 1, path: vec![1, 13, 14, 3] };
        let (next, r) = r.advance(1).unwrap().unwrap();
        assert_eq!((next, r.hop), (13, 1));
        let (next, r) = r.advance(13).unwrap().unwrap();
        assert_eq!(next, 14);
        let (_, r) = r.advance(14).unwrap().unwrap();
        assert_eq!(r.advance(3), Ok(None));
    }

    #[test]
    fn a_route_not_through_this_node_is_refused() {
        let r = SourceRoute { hop: 1, packet_id: 1, path: vec![1, 13, 3] };
        assert_eq!(r.advance(11), Err(RouteError::NotOnPath));
    }

    #[test]
    fn malformed_states_are_errors() {
        let mut b = Vec::new();
        SourceRoute { hop: 0, packet_id: 1, path: vec![1, 2, 3] }.encode(&mut b);
        for n in 0..b.len() {
            assert_eq!(SourceRoute::decode(&b[..n]), Err(RouteError::Malformed), "prefix {n}");
        }
        let mut bad = b.clone();
        bad[0] = 3; // hop past the end
        assert_eq!(SourceRoute::decode(&bad), Err(RouteError::Malformed));
        let mut bad = b.clone();
        bad[1] = 1; // a path of one node
        assert!(SourceRoute::decode(&bad).is_err());
    }
}
