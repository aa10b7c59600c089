//! ARP and ICMP echo responder.
//!
//! [`answer`] parses totally: any frame, however short or malformed, yields
//! either a reply or a [`Ignored`] reason for the caller to count. Nothing
//! here indexes a slice without a preceding length check.

use super::checksum::internet_checksum;

const ETH_HDR: usize = 14;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ARP_LEN: usize = 28;
const IP_PROTO_ICMP: u8 = 1;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;

/// The interface the responder answers for.
#[derive(Debug, Clone, Copy)]
pub struct Iface {
    /// Our MAC address.
    pub mac: [u8; 6],
    /// Our IPv4 address.
    pub ip: [u8; 4],
}

/// Why a frame got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Shorter than the headers it claims.
    Truncated,
    /// Neither ARP nor IPv4.
    OtherEthertype,
    /// ARP that is not an IPv4-over-Ethernet request for our address.
    OtherArp,
    /// IPv4 not addressed to us, not ICMP echo, fragmented, or bad checksum.
    OtherIp,
    /// The reply would not fit the output buffer.
    NoRoom,
}

/// Writes the reply to `frame` into `out`; returns its length.
pub fn answer(frame: &[u8], me: &Iface, out: &mut [u8]) -> Result<usize, Ignored> {
    if frame.len() < ETH_HDR {
        return Err(Ignored::Truncated);
    }
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETHERTYPE_ARP => answer_arp(frame, me, out),
        ETHERTYPE_IPV4 => answer_icmp(frame, me, out),
        _ => Err(Ignored::OtherEthertype),
    }
}

fn eth_reply_header(frame: &[u8], me: &Iface, out: &mut [u8], ethertype: u16) {
    out[0..6].copy_from_slice(&frame[6..12]);
    out[6..12].copy_from_slice(&me.mac);
    out[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

fn answer_arp(frame: &[u8], me: &Iface, out: &mut [u8]) -> Result<usize, Ignored> {
    let arp = frame.get(ETH_HDR..ETH_HDR + ARP_LEN).ok_or(Ignored::Truncated)?;
    // htype 1 (Ethernet), ptype IPv4, hlen 6, plen 4, oper 1 (request).
    if arp[0..8] != [0, 1, 8, 0, 6, 4, 0, 1] || arp[24..28] != me.ip {
        return Err(Ignored::OtherArp);
    }
    let len = ETH_HDR + ARP_LEN;
    let out = out.get_mut(..len).ok_or(Ignored::NoRoom)?;
    eth_reply_header(frame, me, out, ETHERTYPE_ARP);
    let r = &mut out[ETH_HDR..];
    r[0..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
    r[6..8].copy_from_slice(&2u16.to_be_bytes());
    r[8..14].copy_from_slice(&me.mac);
    r[14..18].copy_from_slice(&me.ip);
    r[18..28].copy_from_slice(&arp[8..18]); // requester's MAC and IP
    Ok(len)
}

fn answer_icmp(frame: &[u8], me: &Iface, out: &mut [u8]) -> Result<usize, Ignored> {
    let ip = &frame[ETH_HDR..];
    if ip.len() < 20 || ip[0] >> 4 != 4 {
        return Err(Ignored::Truncated);
    }
    let ihl = ((ip[0] & 0x0f) as usize) * 4;
    let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    if ihl < 20 || total < ihl + 8 || total > ip.len() {
        return Err(Ignored::Truncated);
    }
    let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff; // MF + offset
    if ip[9] != IP_PROTO_ICMP || ip[16..20] != me.ip || frag != 0 || internet_checksum(&ip[..ihl]) != 0 {
        return Err(Ignored::OtherIp);
    }
    let icmp = &ip[ihl..total];
    if icmp[0] != ICMP_ECHO_REQUEST || icmp[1] != 0 || internet_checksum(icmp) != 0 {
        return Err(Ignored::OtherIp);
    }
    let len = ETH_HDR + 20 + icmp.len();
    let out = out.get_mut(..len).ok_or(Ignored::NoRoom)?;
    eth_reply_header(frame, me, out, ETHERTYPE_IPV4);
    let h = &mut out[ETH_HDR..ETH_HDR + 20];
    let ip_total = (20 + icmp.len()) as u16;
    h.copy_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, IP_PROTO_ICMP, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    h[2..4].copy_from_slice(&ip_total.to_be_bytes());
    h[12..16].copy_from_slice(&me.ip);
    h[16..20].copy_from_slice(&ip[12..16]);
    let c = internet_checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    let r = &mut out[ETH_HDR + 20..len];
    r.copy_from_slice(icmp);
    r[0] = ICMP_ECHO_REPLY;
    r[2..4].fill(0);
    let c = internet_checksum(r);
    r[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Iface = Iface { mac: [2, 0, 0, 0, 0, 2], ip: [10, 0, 0, 2] };
    const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn arp_request(target: [u8; 4]) -> [u8; 42] {
        let mut f = [0u8; 42];
        f[0..6].fill(0xff);
        f[6..12].copy_from_slice(&PEER_MAC);
        f[12..14].copy_from_slice(&[8, 6]);
        f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f[22..28].copy_from_slice(&PEER_MAC);
        f[28..32].copy_from_slice(&[10, 0, 0, 1]);
        f[38..42].copy_from_slice(&target);
        f
    }

    fn echo_request(payload: &[u8]) -> std::vec::Vec<u8> {
        let mut f = std::vec![0u8; 14 + 20 + 8 + payload.len()];
        f[0..6].copy_from_slice(&ME.mac);
        f[6..12].copy_from_slice(&PEER_MAC);
        f[12..14].copy_from_slice(&[8, 0]);
        let total = (20 + 8 + payload.len()) as u16;
        let ip = &mut f[14..34];
        ip.copy_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        let c = internet_checksum(ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        let icmp = &mut f[34..];
        icmp[0] = 8;
        icmp[4..8].copy_from_slice(&[0, 7, 0, 1]);
        icmp[8..].copy_from_slice(payload);
        let c = internet_checksum(icmp);
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        f
    }

    #[test]
    fn arp_request_for_our_ip_gets_reply() {
        let mut out = [0u8; 64];
        let n = answer(&arp_request(ME.ip), &ME, &mut out).unwrap();
        assert_eq!(n, 42);
        assert_eq!(&out[0..6], &PEER_MAC);
        assert_eq!(&out[20..22], &[0, 2]);
        assert_eq!(&out[22..28], &ME.mac);
        assert_eq!(&out[28..32], &ME.ip);
        assert_eq!(&out[38..42], &[10, 0, 0, 1]);
    }

    #[test]
    fn arp_request_for_other_ip_is_ignored() {
        let mut out = [0u8; 64];
        assert_eq!(answer(&arp_request([10, 0, 0, 9]), &ME, &mut out), Err(Ignored::OtherArp));
    }

    #[test]
    fn echo_request_gets_checksummed_reply_with_same_payload() {
        let req = echo_request(b"hello pathvm");
        let mut out = [0u8; 128];
        let n = answer(&req, &ME, &mut out).unwrap();
        assert_eq!(n, req.len());
        assert_eq!(internet_checksum(&out[14..34]), 0);
        assert_eq!(internet_checksum(&out[34..n]), 0);
        assert_eq!(out[34], ICMP_ECHO_REPLY);
        assert_eq!(&out[26..30], &ME.ip);
        assert_eq!(&out[30..34], &[10, 0, 0, 1]);
        assert_eq!(&out[38..n], &req[38..]);
    }

    #[test]
    fn corrupted_ip_checksum_is_ignored() {
        let mut req = echo_request(b"x");
        req[24] ^= 0xff;
        assert_eq!(answer(&req, &ME, &mut [0u8; 128]), Err(Ignored::OtherIp));
    }

    #[test]
    fn reply_that_does_not_fit_is_refused() {
        let req = echo_request(&[0u8; 100]);
        assert_eq!(answer(&req, &ME, &mut [0u8; 64]), Err(Ignored::NoRoom));
    }

    #[test]
    fn every_truncation_of_valid_frames_is_handled_without_panic() {
        let mut out = [0u8; 256];
        for f in [arp_request(ME.ip).to_vec(), echo_request(b"abcdef")] {
            for n in 0..f.len() {
                assert!(answer(&f[..n], &ME, &mut out).is_err(), "prefix {n} answered");
            }
        }
    }

    #[test]
    fn lying_length_fields_are_truncation_not_panic() {
        let mut req = echo_request(b"abc");
        req[16..18].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(answer(&req, &ME, &mut [0u8; 128]), Err(Ignored::Truncated));
        req[14] = 0x4f; // ihl 60 > total
        assert!(answer(&req, &ME, &mut [0u8; 128]).is_err());
    }
}
