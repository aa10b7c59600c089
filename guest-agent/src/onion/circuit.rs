//! The three roles on a circuit: the source that built it, the relays that
//! add or remove one layer, and the exit where it ends.

use alloc::vec::Vec;
use core::ops::Range;

use super::cell::{open_region, seal_region, CellError, BODY_LEN, CELL_LEN, NONCE_LEN};
use super::header::{build, HeaderError, Hop, HEADER_LEN};
use super::keys::{permute, unpermute, xor_keystream, Drbg, HopKeys};
use crate::routing::NodeId;

fn nonce_of(cell: &[u8]) -> [u8; 12] {
    let mut n = [0u8; 12];
    n.copy_from_slice(&cell[..NONCE_LEN]);
    n
}

fn counter_nonce(c: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&c.to_be_bytes());
    n
}

fn region_start(create: bool) -> usize {
    NONCE_LEN + if create { HEADER_LEN } else { 0 }
}

/// A circuit at its source.
#[derive(Debug)]
pub struct SourceCircuit {
    nodes: Vec<NodeId>,
    keys: Vec<HopKeys>,
    header: [u8; HEADER_LEN],
    /// Permutes the cell counter into the first hop's nonces.
    nonce_key: [u8; 32],
    sent: u64,
}

impl SourceCircuit {
    /// A circuit through `hops` (the last is the exit), keys drawn from
    /// `rng`.
    pub fn new(hops: &[Hop], rng: &mut Drbg) -> Result<Self, HeaderError> {
        let ephemeral: Vec<[u8; 32]> = hops.iter().map(|_| rng.bytes32()).collect();
        let (header, keys) = build(hops, &ephemeral)?;
        Ok(Self { nodes: hops.iter().map(|h| h.node).collect(), keys, header, nonce_key: rng.bytes32(), sent: 0 })
    }

    /// The hops, first relay to exit.
    pub fn hops(&self) -> &[NodeId] {
        &self.nodes
    }

    /// The keys this circuit shares with its exit.
    pub fn exit_keys(&self) -> &HopKeys {
        &self.keys[self.keys.len() - 1]
    }

    /// Appends one cell carrying `data` to `out`: a create cell (the
    /// header, then the data) or a data cell.
    pub fn seal(&mut self, create: bool, cmd: u8, data: &[u8], out: &mut Vec<u8>) -> Result<(), CellError> {
        self.sent += 1;
        let last = self.keys.len() - 1;
        let mut nonces = Vec::with_capacity(self.keys.len());
        nonces.push(permute(&self.nonce_key, &counter_nonce(self.sent)));
        for k in &self.keys[..last] {
            let n = permute(&k.fwd_nonce, &nonces[nonces.len() - 1]);
            nonces.push(n);
        }
        let at = out.len();
        out.resize(at + CELL_LEN, 0);
        let cell = &mut out[at..];
        cell[..NONCE_LEN].copy_from_slice(&nonces[0]);
        if create {
            cell[NONCE_LEN..NONCE_LEN + HEADER_LEN].copy_from_slice(&self.header);
        }
        let region = &mut cell[region_start(create)..];
        if let Err(e) = seal_region(&self.keys[last].fwd, &nonces[last], cmd, data, region) {
            out.truncate(at);
            return Err(e);
        }
        for i in (0..last).rev() {
            xor_keystream(&self.keys[i].fwd, &nonces[i], region);
        }
        Ok(())
    }

    /// Opens a backward cell in place: its command and the data's range in
    /// `cell`.
    pub fn open(&self, cell: &mut [u8]) -> Result<(u8, Range<usize>), CellError> {
        if cell.len() != CELL_LEN {
            return Err(CellError::BadLength);
        }
        let last = self.keys.len() - 1;
        let mut m = nonce_of(cell);
        let body = &mut cell[NONCE_LEN..];
        for k in &self.keys[..last] {
            xor_keystream(&k.bwd, &m, body);
            m = unpermute(&k.bwd_nonce, &m);
        }
        let (cmd, r) = open_region(&self.keys[last].bwd, &m, body)?;
        Ok((cmd, r.start + NONCE_LEN..r.end + NONCE_LEN))
    }
}

/// A relay's part of a circuit: its keys.
#[derive(Debug, Clone)]
pub struct RelayHop {
    keys: HopKeys,
}

impl RelayHop {
    /// The relay's part, with the keys its header gave it.
    pub fn new(keys: HopKeys) -> Self {
        Self { keys }
    }

    /// Peels this relay's layer off a forward cell in place; a create cell
    /// gets `next_header` (what the relay's header processing produced).
    pub fn forward(&self, cell: &mut [u8], next_header: Option<&[u8; HEADER_LEN]>) -> Result<(), CellError> {
        if cell.len() != CELL_LEN {
            return Err(CellError::BadLength);
        }
        let n = nonce_of(cell);
        xor_keystream(&self.keys.fwd, &n, &mut cell[region_start(next_header.is_some())..]);
        cell[..NONCE_LEN].copy_from_slice(&permute(&self.keys.fwd_nonce, &n));
        if let Some(h) = next_header {
            cell[NONCE_LEN..NONCE_LEN + HEADER_LEN].copy_from_slice(h);
        }
        Ok(())
    }

    /// Adds this relay's layer to a backward cell in place.
    pub fn backward(&self, cell: &mut [u8]) -> Result<(), CellError> {
        if cell.len() != CELL_LEN {
            return Err(CellError::BadLength);
        }
        let m = permute(&self.keys.bwd_nonce, &nonce_of(cell));
        xor_keystream(&self.keys.bwd, &m, &mut cell[NONCE_LEN..]);
        cell[..NONCE_LEN].copy_from_slice(&m);
        Ok(())
    }
}

/// The exit's part of a circuit.
#[derive(Debug, Clone)]
pub struct ExitHop {
    keys: HopKeys,
    sent: u64,
}

impl ExitHop {
    /// The exit's part, with the keys its header gave it.
    pub fn new(keys: HopKeys) -> Self {
        Self { keys, sent: 0 }
    }

    /// The keys this circuit shares with its source.
    pub fn keys(&self) -> &HopKeys {
        &self.keys
    }

    /// Opens a forward cell in place: command and data range in `cell`.
    pub fn open(&self, cell: &mut [u8], create: bool) -> Result<(u8, Range<usize>), CellError> {
        if cell.len() != CELL_LEN {
            return Err(CellError::BadLength);
        }
        let n = nonce_of(cell);
        let start = region_start(create);
        let (cmd, r) = open_region(&self.keys.fwd, &n, &mut cell[start..])?;
        Ok((cmd, r.start + start..r.end + start))
    }

    /// Appends one backward cell carrying `data` to `out`.
    pub fn seal(&mut self, cmd: u8, data: &[u8], out: &mut Vec<u8>) -> Result<(), CellError> {
        self.sent += 1;
        let m = permute(&self.keys.bwd_nonce, &counter_nonce(self.sent));
        let at = out.len();
        out.resize(at + CELL_LEN, 0);
        out[at..at + NONCE_LEN].copy_from_slice(&m);
        let r = seal_region(&self.keys.bwd, &m, cmd, data, &mut out[at + NONCE_LEN..at + NONCE_LEN + BODY_LEN]);
        if r.is_err() {
            out.truncate(at);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::super::cell::{CMD_STREAM, MAX_CREATE_DATA, MAX_DATA};
    use super::super::header::{process, Processed};
    use super::super::keys::public_key;
    use super::*;
    use alloc::vec;

    /// A source, relays and an exit wired back to back, as a circuit
    /// through `n` hops (the last is the exit).
    struct Line {
        src: SourceCircuit,
        relays: Vec<RelayHop>,
        exit: ExitHop,
        /// Every cell as it crossed each link, forward.
        seen: Vec<Vec<u8>>,
    }

    fn line(n: usize, payload: &[u8]) -> (Line, Vec<u8>) {
        let secrets: Vec<[u8; 32]> = (0..n).map(|i| [40 + i as u8; 32]).collect();
        let hops: Vec<Hop> =
            secrets.iter().enumerate().map(|(i, s)| Hop { node: 20 + i as u16, public: public_key(s) }).collect();
        let mut rng = Drbg::new([1; 32]);
        let mut src = SourceCircuit::new(&hops, &mut rng).unwrap();
        let mut cell = Vec::new();
        src.seal(true, CMD_STREAM, payload, &mut cell).unwrap();
        let mut seen = vec![cell.clone()];
        let mut relays = Vec::new();
        for i in 0..n {
            match process(&secrets[i], &hops[i].public, &cell[NONCE_LEN..]).unwrap() {
                Processed::Forward { next, header, keys } => {
                    assert_eq!(next, hops[i + 1].node);
                    let r = RelayHop::new(keys);
                    r.forward(&mut cell, Some(&*header)).unwrap();
                    seen.push(cell.clone());
                    relays.push(r);
                }
                Processed::Exit { keys } => {
                    let exit = ExitHop::new(keys);
                    let (cmd, range) = exit.open(&mut cell, true).unwrap();
                    assert_eq!(cmd, CMD_STREAM);
                    let got = cell[range].to_vec();
                    return (Line { src, relays, exit, seen }, got);
                }
            }
        }
        unreachable!("no exit")
    }

    #[test]
    fn a_create_then_data_both_ways_through_four_relays() {
        let (mut l, got) = line(5, b"open 10.0.0.3:80");
        assert_eq!(got, b"open 10.0.0.3:80");
        // Forward data.
        let data: Vec<u8> = (0..MAX_DATA).map(|i| i as u8).collect();
        let mut cell = Vec::new();
        l.src.seal(false, CMD_STREAM, &data, &mut cell).unwrap();
        for r in &l.relays {
            r.forward(&mut cell, None).unwrap();
        }
        let (_, range) = l.exit.open(&mut cell, false).unwrap();
        assert_eq!(&cell[range], &data[..]);
        // Backward data.
        let mut back = Vec::new();
        l.exit.seal(CMD_STREAM, b"HTTP/1.1 200 OK", &mut back).unwrap();
        for r in l.relays.iter().rev() {
            r.backward(&mut back).unwrap();
        }
        let (_, range) = l.src.open(&mut back).unwrap();
        assert_eq!(&back[range], b"HTTP/1.1 200 OK");
    }

    #[test]
    fn every_link_sees_one_size_and_nothing_in_common() {
        let (l, _) = line(4, b"GET /secret HTTP/1.1");
        for c in &l.seen {
            assert_eq!(c.len(), CELL_LEN);
            assert!(!c.windows(6).any(|w| w == b"secret"), "plaintext on a link");
        }
        for (a, b) in l.seen.iter().zip(&l.seen[1..]) {
            assert_ne!(a[..NONCE_LEN], b[..NONCE_LEN], "a nonce repeats across links");
            let same = a.iter().zip(b.iter()).filter(|(x, y)| x == y).count();
            assert!(same < CELL_LEN / 32, "{same} bytes equal on consecutive links");
        }
    }

    #[test]
    fn an_altered_cell_fails_the_seal_at_the_end() {
        let (mut l, _) = line(3, b"x");
        let mut cell = Vec::new();
        l.src.seal(false, CMD_STREAM, b"data", &mut cell).unwrap();
        cell[500] ^= 0x80;
        for r in &l.relays {
            r.forward(&mut cell, None).unwrap();
        }
        assert_eq!(l.exit.open(&mut cell, false), Err(CellError::BadSeal));
        let mut back = Vec::new();
        l.exit.seal(CMD_STREAM, b"data", &mut back).unwrap();
        back[3] ^= 1;
        assert_eq!(l.src.open(&mut back), Err(CellError::BadSeal));
    }

    #[test]
    fn oversized_data_and_cells_are_refused() {
        let (mut l, _) = line(3, b"x");
        let mut out = Vec::new();
        assert_eq!(l.src.seal(true, CMD_STREAM, &[0; MAX_CREATE_DATA + 1], &mut out), Err(CellError::BadLength));
        assert!(out.is_empty());
        assert_eq!(l.relays[0].forward(&mut [0u8; 10], None), Err(CellError::BadLength));
        assert_eq!(l.src.open(&mut [0u8; CELL_LEN + 1]), Err(CellError::BadLength));
    }
}
