//! Link-local control messages: probes, their acks, link-state
//! advertisements and certificate hellos. They ride in overlay packets
//! flagged [`FLAG_CONTROL`](super::overlay::FLAG_CONTROL), sealed with the
//! link's key like any packet, and are never forwarded: each is for the
//! node at the other end of the link it arrived on. The one exception is
//! the hello, which goes unsealed under the reserved link id: it is sent
//! because the far end may not hold the link's key yet, and what it
//! carries (a CA-signed certificate) needs no link key to be checked.
//!
//! ```text
//! probe, ack:   kind(1) seq(4) sent_us(8)
//! lsa:          kind(1) Lsa (see routing::linkstate)
//! lsa request:  kind(1)
//! hello:        kind(1) certificate (see routing::member)
//! ```

use alloc::vec::Vec;

use crate::routing::linkstate::Lsa;

const PROBE: u8 = 1;
const PROBE_ACK: u8 = 2;
const LSA: u8 = 3;
/// The first payload byte of an advertisement (what filters look for).
pub const LSA_KIND: u8 = LSA;
const LSA_REQUEST: u8 = 4;
const HELLO: u8 = 5;

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// "Echo this": a sequence number and the sender's clock.
    Probe {
        /// Probe number.
        seq: u32,
        /// The sender's clock when sent, µs.
        sent_us: u64,
    },
    /// The echo of a probe.
    ProbeAck {
        /// The probe's number.
        seq: u32,
        /// The probe's send time, as it came.
        sent_us: u64,
    },
    /// A link-state advertisement being flooded (or sent on request).
    LinkState(Lsa),
    /// "Send me every advertisement you hold": a request VM, which takes
    /// no part in flooding, asks its neighbours for the network's state.
    LsaRequest,
    /// "This is who I am": the sender's certificate, wire form, so a
    /// neighbour that was not given it agrees the link's key from it.
    Hello(Vec<u8>),
}

/// A control payload this code does not understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MalformedControl;

impl Control {
    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Probe { seq, sent_us } | Self::ProbeAck { seq, sent_us } => {
                out.push(if matches!(self, Self::Probe { .. }) { PROBE } else { PROBE_ACK });
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&sent_us.to_be_bytes());
            }
            Self::LinkState(lsa) => {
                out.push(LSA);
                lsa.encode(out);
            }
            Self::LsaRequest => out.push(LSA_REQUEST),
            Self::Hello(cert) => {
                out.push(HELLO);
                out.extend_from_slice(cert);
            }
        }
    }

    /// Decodes a control payload.
    pub fn decode(b: &[u8]) -> Result<Self, MalformedControl> {
        let (&kind, rest) = b.split_first().ok_or(MalformedControl)?;
        match kind {
            PROBE | PROBE_ACK => {
                if rest.len() != 12 {
                    return Err(MalformedControl);
                }
                let seq = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let mut t = [0u8; 8];
                t.copy_from_slice(&rest[4..12]);
                let sent_us = u64::from_be_bytes(t);
                Ok(if kind == PROBE { Self::Probe { seq, sent_us } } else { Self::ProbeAck { seq, sent_us } })
            }
            LSA => Lsa::decode(rest).map(Self::LinkState).map_err(|_| MalformedControl),
            LSA_REQUEST if rest.is_empty() => Ok(Self::LsaRequest),
            HELLO if !rest.is_empty() && rest.len() <= crate::routing::member::MAX_CERT_LEN => {
                Ok(Self::Hello(rest.to_vec()))
            }
            _ => Err(MalformedControl),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::linkstate::{LinkReport, LinkStatus};
    use alloc::vec;

    #[test]
    fn every_message_round_trips() {
        let lsa = Lsa {
            origin: 3,
            seq: 9,
            onion_key: [7; 32],
            links: vec![LinkReport { peer: 1, status: LinkStatus::Up, ..Default::default() }],
            sig: [5; 64],
            cert: Vec::new(),
        };
        let with_cert = Lsa { cert: vec![1; 300], ..lsa.clone() };
        for m in [
            Control::Probe { seq: 1, sent_us: 2 },
            Control::ProbeAck { seq: u32::MAX, sent_us: u64::MAX },
            Control::LinkState(lsa),
            Control::LinkState(with_cert),
            Control::LsaRequest,
            Control::Hello(vec![1, 2, 3]),
        ] {
            let mut b = Vec::new();
            m.encode(&mut b);
            assert_eq!(Control::decode(&b), Ok(m));
        }
    }

    #[test]
    fn golden_probe() {
        let mut b = Vec::new();
        Control::Probe { seq: 0x0102_0304, sent_us: 5 }.encode(&mut b);
        assert_eq!(b, [1, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 5]);
    }

    #[test]
    fn garbage_is_refused() {
        for b in [&[][..], &[0], &[1, 0, 0], &[2; 14], &[3, 0], &[4, 0], &[5], &[9; 13]] {
            assert_eq!(Control::decode(b), Err(MalformedControl), "{b:?}");
        }
    }
}
