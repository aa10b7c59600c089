//! The DNS that an app under `pathvm run` gets: every query is answered
//! here, none leaves the host. A and AAAA questions get a virtual address
//! (as Tor's VirtualAddrNetwork and Clash's fake-ip): the name is only
//! resolved later, at the exit, when the app connects that address and
//! the relay asks the edge for the name instead. PTR questions for a
//! virtual address get its name back; every other question is answered
//! NOTIMP (the app then knows no answer will come, and waits for none).
//!
//! Sans-I/O: [`Resolver::answer`] turns a query datagram into a response
//! datagram.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// Where virtual IPv4 addresses come from: 198.18.0.0/15 (RFC 2544, for
/// benchmarks, so no real destination has one).
pub const VIRTUAL_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 18, 0, 0), 15);
/// Where virtual IPv6 addresses come from (a unique local /64).
pub const VIRTUAL_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd70, 0x7061, 0x7468, 0x766d, 0, 0, 0, 0), 64);
/// Names held at once; beyond, the oldest mapping is reused (bounded
/// memory; an app holding an address that old reaches the newer name).
pub const MAX_NAMES: usize = 65_536;
/// TTL of virtual answers, s: short, so an app asks again and keeps a
/// mapping fresh.
const TTL: u32 = 60;

/// Why a datagram got no answer.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DnsError {
    /// Shorter than a header, or not a query.
    #[error("not a DNS query")]
    NotAQuery,
}

const TYPE_A: u16 = 1;
const TYPE_PTR: u16 = 12;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
const RCODE_FORMERR: u8 = 1;
const RCODE_NXDOMAIN: u8 = 3;
const RCODE_NOTIMP: u8 = 4;

/// What one answered query was, for the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    /// The name asked for (lower case), if the question parsed.
    pub name: Option<String>,
    /// Its type (1 A, 28 AAAA, 12 PTR, ...).
    pub qtype: u16,
    /// The address or name given, if any.
    pub answer: Option<String>,
}

/// The virtual-address resolver and its name map.
#[derive(Debug, Default)]
pub struct Resolver {
    by_name: HashMap<String, u32>,
    names: Vec<String>,
    next: u32,
}

impl Resolver {
    /// The name behind a virtual address, if it is one.
    pub fn name_of(&self, ip: IpAddr) -> Option<&str> {
        let i = match ip {
            IpAddr::V4(a) => offset_v4(a)?,
            IpAddr::V6(a) => offset_v6(a)?,
        };
        self.names.get(i as usize).map(String::as_str)
    }

    /// The index of `name`'s mapping, made if new.
    fn index_of(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.by_name.get(name) {
            return i;
        }
        let i = self.next;
        self.next = (self.next + 1) % MAX_NAMES as u32;
        if let Some(old) = self.names.get_mut(i as usize) {
            self.by_name.remove(old);
            *old = name.to_string();
        } else {
            self.names.push(name.to_string());
        }
        self.by_name.insert(name.to_string(), i);
        i
    }

    /// The response to `query`, and what it answered.
    pub fn answer(&mut self, query: &[u8]) -> Result<(Vec<u8>, Answered), DnsError> {
        if query.len() < 12 || query[2] & 0x80 != 0 {
            return Err(DnsError::NotAQuery);
        }
        let (id, rd) = ([query[0], query[1]], query[2] & 0x01);
        let opcode = (query[2] >> 3) & 0x0f;
        let qdcount = u16::from_be_bytes([query[4], query[5]]);
        let parsed = (opcode == 0 && qdcount == 1).then(|| question(&query[12..])).flatten();
        let Some((name, qtype, qclass, qlen)) = parsed else {
            let code = if opcode == 0 { RCODE_FORMERR } else { RCODE_NOTIMP };
            return Ok((header(id, rd, code, 0, 0), Answered { name: None, qtype: 0, answer: None }));
        };
        let q = &query[12..12 + qlen];
        let (code, record): (u8, Option<(Vec<u8>, String)>) = match (qtype, qclass) {
            (TYPE_A, CLASS_IN) => {
                let a = v4_at(self.index_of(&name));
                (0, Some((a.octets().to_vec(), a.to_string())))
            }
            (TYPE_AAAA, CLASS_IN) => {
                let a = v6_at(self.index_of(&name));
                (0, Some((a.octets().to_vec(), a.to_string())))
            }
            (TYPE_PTR, CLASS_IN) => match ptr_address(&name).and_then(|ip| self.name_of(ip)) {
                Some(n) => {
                    let n = n.to_string();
                    (0, Some((encode_name(&n), n)))
                }
                None => (RCODE_NXDOMAIN, None),
            },
            _ => (RCODE_NOTIMP, None),
        };
        let mut out = header(id, rd, code, 1, u16::from(record.is_some()));
        out.extend_from_slice(q);
        let answer = record.map(|(rdata, text)| {
            // The name by pointer to the question (offset 12).
            out.extend_from_slice(&[0xc0, 12]);
            out.extend_from_slice(&qtype.to_be_bytes());
            out.extend_from_slice(&CLASS_IN.to_be_bytes());
            out.extend_from_slice(&TTL.to_be_bytes());
            out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            out.extend_from_slice(&rdata);
            text
        });
        Ok((out, Answered { name: Some(name), qtype, answer }))
    }
}

/// A response header: `id`, QR and RA set, RD echoed.
fn header(id: [u8; 2], rd: u8, rcode: u8, qd: u16, an: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(512);
    h.extend_from_slice(&id);
    h.push(0x80 | rd);
    h.push(0x80 | rcode);
    h.extend_from_slice(&qd.to_be_bytes());
    h.extend_from_slice(&an.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// The question at the start of `b`: name (lower case, no trailing dot),
/// type, class, and its length in bytes. Compression is refused (a
/// question has nothing to point back to).
fn question(b: &[u8]) -> Option<(String, u16, u16, usize)> {
    let mut name = String::new();
    let mut i = 0;
    loop {
        let len = *b.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        let label = b.get(i..i + len)?;
        if !label.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_') {
            return None;
        }
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(&String::from_utf8_lossy(label).to_ascii_lowercase());
        i += len;
        if name.len() > 253 {
            return None;
        }
    }
    if name.is_empty() {
        return None;
    }
    let t = b.get(i..i + 4)?;
    Some((name, u16::from_be_bytes([t[0], t[1]]), u16::from_be_bytes([t[2], t[3]]), i + 4))
}

fn encode_name(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

fn v4_at(i: u32) -> Ipv4Addr {
    // Offset 0 is the network's own address; start at .1.
    Ipv4Addr::from(u32::from(VIRTUAL_V4.0) + 1 + i)
}

fn v6_at(i: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(VIRTUAL_V6.0) + 1 + u128::from(i))
}

fn offset_v4(a: Ipv4Addr) -> Option<u32> {
    let base = u32::from(VIRTUAL_V4.0);
    let off = u32::from(a).checked_sub(base + 1)?;
    (off < MAX_NAMES as u32).then_some(off)
}

fn offset_v6(a: Ipv6Addr) -> Option<u32> {
    let off = u128::from(a).checked_sub(u128::from(VIRTUAL_V6.0) + 1)?;
    (off < MAX_NAMES as u128).then_some(off as u32)
}

/// The address a PTR name (`4.3.2.1.in-addr.arpa`, nibbles in
/// `ip6.arpa`) stands for.
fn ptr_address(name: &str) -> Option<IpAddr> {
    if let Some(v4) = name.strip_suffix(".in-addr.arpa") {
        let mut o: Vec<u8> = v4.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
        if o.len() != 4 {
            return None;
        }
        o.reverse();
        return Some(IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])));
    }
    let v6 = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> =
        v6.split('.').map(|p| u8::from_str_radix(p, 16).ok().filter(|_| p.len() == 1)).collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let v = nibbles.iter().rev().fold(0u128, |acc, n| (acc << 4) | u128::from(*n));
    Some(IpAddr::V6(Ipv6Addr::from(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0x01, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        q.extend_from_slice(&encode_name(name));
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&CLASS_IN.to_be_bytes());
        q
    }

    #[test]
    fn a_and_aaaa_get_virtual_addresses_that_lead_back_to_the_name() {
        let mut r = Resolver::default();
        let (resp, a) = r.answer(&query(7, "Svc.Test", TYPE_A)).unwrap();
        assert_eq!(a.answer.as_deref(), Some("198.18.0.1"));
        assert_eq!((&resp[..2], resp[2] & 0x80, resp[3] & 0x0f), (&[0, 7][..], 0x80, 0));
        assert_eq!(u16::from_be_bytes([resp[6], resp[7]]), 1, "one answer");
        assert_eq!(&resp[resp.len() - 4..], &[198, 18, 0, 1]);
        let (_, six) = r.answer(&query(8, "svc.test", TYPE_AAAA)).unwrap();
        assert_eq!(six.answer.as_deref(), Some("fd70:7061:7468:766d::1"), "the same name keeps its index");
        let (_, other) = r.answer(&query(9, "c", TYPE_A)).unwrap();
        assert_eq!(other.answer.as_deref(), Some("198.18.0.2"));
        assert_eq!(r.name_of("198.18.0.1".parse().unwrap()), Some("svc.test"));
        assert_eq!(r.name_of("fd70:7061:7468:766d::2".parse().unwrap()), Some("c"));
        assert_eq!(r.name_of("10.0.0.1".parse().unwrap()), None);
        let (_, ptr) = r.answer(&query(10, "1.0.18.198.in-addr.arpa", TYPE_PTR)).unwrap();
        assert_eq!(ptr.answer.as_deref(), Some("svc.test"));
    }

    #[test]
    fn other_questions_are_refused_in_the_reply_and_garbage_gets_none() {
        let mut r = Resolver::default();
        let (resp, a) = r.answer(&query(1, "svc.test", 15)).unwrap();
        assert_eq!((resp[3] & 0x0f, a.answer), (RCODE_NOTIMP, None));
        let (resp, _) = r.answer(&query(1, "9.9.9.9.in-addr.arpa", TYPE_PTR)).unwrap();
        assert_eq!(resp[3] & 0x0f, RCODE_NXDOMAIN);
        let mut compressed = query(1, "x", TYPE_A);
        compressed[12] = 0xc0;
        assert_eq!(r.answer(&compressed).unwrap().0[3] & 0x0f, RCODE_FORMERR);
        assert_eq!(r.answer(&[0; 5]), Err(DnsError::NotAQuery));
        let mut response = query(1, "x", TYPE_A);
        response[2] |= 0x80;
        assert_eq!(r.answer(&response), Err(DnsError::NotAQuery), "a response is never answered");
    }

    #[test]
    fn the_map_is_bounded_and_reuses_its_oldest_places() {
        let mut r = Resolver::default();
        for i in 0..MAX_NAMES + 1 {
            r.index_of(&format!("n{i}"));
        }
        assert_eq!(r.names.len(), MAX_NAMES);
        assert_eq!(r.by_name.len(), MAX_NAMES);
        assert_eq!(r.name_of(v4_at(0).into()), Some(format!("n{MAX_NAMES}").as_str()));
        assert_eq!(r.name_of(v4_at(1).into()), Some("n1"));
    }
}
