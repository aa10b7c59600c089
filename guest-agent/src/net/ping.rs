//! ARP and ICMP echo responder, on smoltcp's wire types.
//!
//! [`answer`] parses totally: any frame, however short or malformed, yields
//! either a reply or a [`Ignored`] reason for the caller to count. smoltcp's
//! `new_checked` constructors check every length field against the buffer
//! before any accessor runs, and its `Repr::parse` checks meaning (version,
//! checksum, fragments); the replies are emitted from `Repr`s, which fill in
//! the checksums.

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4Packet,
    Icmpv4Repr, IpProtocol, Ipv4Address, Ipv4Packet, Ipv4Repr, ETHERNET_HEADER_LEN, IPV4_HEADER_LEN,
};

/// Hop limit of our replies (Linux's default TTL).
const REPLY_TTL: u8 = 64;

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
    let frame = EthernetFrame::new_checked(frame).map_err(|_| Ignored::Truncated)?;
    match frame.ethertype() {
        EthernetProtocol::Arp => answer_arp(&frame, me, out),
        EthernetProtocol::Ipv4 => answer_icmp(&frame, me, out),
        _ => Err(Ignored::OtherEthertype),
    }
}

/// Writes the Ethernet header of a reply to `frame` (back to its sender)
/// and returns the frame, `payload_len` bytes after the header.
fn reply_frame<'o>(
    frame: &EthernetFrame<&[u8]>,
    me: &Iface,
    out: &'o mut [u8],
    payload_len: usize,
) -> Result<EthernetFrame<&'o mut [u8]>, Ignored> {
    let out = out.get_mut(..ETHERNET_HEADER_LEN + payload_len).ok_or(Ignored::NoRoom)?;
    let mut reply = EthernetFrame::new_unchecked(out);
    let repr =
        EthernetRepr { src_addr: EthernetAddress(me.mac), dst_addr: frame.src_addr(), ethertype: frame.ethertype() };
    repr.emit(&mut reply);
    Ok(reply)
}

fn answer_arp(frame: &EthernetFrame<&[u8]>, me: &Iface, out: &mut [u8]) -> Result<usize, Ignored> {
    let arp = ArpPacket::new_checked(frame.payload()).map_err(|_| Ignored::Truncated)?;
    let Ok(ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr,
        source_protocol_addr,
        target_protocol_addr,
        ..
    }) = ArpRepr::parse(&arp)
    else {
        return Err(Ignored::OtherArp);
    };
    if target_protocol_addr != Ipv4Address::from(me.ip) {
        return Err(Ignored::OtherArp);
    }
    let repr = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Reply,
        source_hardware_addr: EthernetAddress(me.mac),
        source_protocol_addr: Ipv4Address::from(me.ip),
        target_hardware_addr: source_hardware_addr,
        target_protocol_addr: source_protocol_addr,
    };
    let mut reply = reply_frame(frame, me, out, repr.buffer_len())?;
    repr.emit(&mut ArpPacket::new_unchecked(reply.payload_mut()));
    Ok(ETHERNET_HEADER_LEN + repr.buffer_len())
}

fn answer_icmp(frame: &EthernetFrame<&[u8]>, me: &Iface, out: &mut [u8]) -> Result<usize, Ignored> {
    let ip = Ipv4Packet::new_checked(frame.payload()).map_err(|_| Ignored::Truncated)?;
    // smoltcp's length check takes any header length up to the total; a
    // header shorter than the fixed 20 bytes is malformed.
    if usize::from(ip.header_len()) < IPV4_HEADER_LEN {
        return Err(Ignored::Truncated);
    }
    let caps = ChecksumCapabilities::default();
    // Fragments are refused here rather than by `parse`, which accepts
    // them when smoltcp's reassembly feature is on anywhere in the build.
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(Ignored::OtherIp);
    }
    let ip_repr = Ipv4Repr::parse(&ip, &caps).map_err(|_| Ignored::OtherIp)?;
    if ip_repr.next_header != IpProtocol::Icmp || ip_repr.dst_addr != Ipv4Address::from(me.ip) {
        return Err(Ignored::OtherIp);
    }
    let icmp = Icmpv4Packet::new_checked(ip.payload()).map_err(|_| Ignored::Truncated)?;
    let Ok(Icmpv4Repr::EchoRequest { ident, seq_no, data }) = Icmpv4Repr::parse(&icmp, &caps) else {
        return Err(Ignored::OtherIp);
    };
    let icmp_repr = Icmpv4Repr::EchoReply { ident, seq_no, data };
    let ip_reply = Ipv4Repr {
        src_addr: Ipv4Address::from(me.ip),
        dst_addr: ip_repr.src_addr,
        next_header: IpProtocol::Icmp,
        payload_len: icmp_repr.buffer_len(),
        hop_limit: REPLY_TTL,
    };
    let ip_len = ip_reply.buffer_len() + icmp_repr.buffer_len();
    let mut reply = reply_frame(frame, me, out, ip_len)?;
    let mut ip_out = Ipv4Packet::new_unchecked(reply.payload_mut());
    ip_reply.emit(&mut ip_out, &caps);
    icmp_repr.emit(&mut Icmpv4Packet::new_unchecked(ip_out.payload_mut()), &caps);
    Ok(ETHERNET_HEADER_LEN + ip_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ICMP_ECHO_REPLY: u8 = 0;

    /// RFC 1071 checksum, written out here so the tests check smoltcp's
    /// output against something other than smoltcp.
    fn internet_checksum(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            sum += u16::from_be_bytes([c[0], c[1]]) as u32;
        }
        if let [last] = chunks.remainder() {
            sum += (*last as u32) << 8;
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn test_checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: words 0001 f203 f4f5 f6f7 sum to ddf2.
        assert_eq!(internet_checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), !0xddf2);
        assert_eq!(internet_checksum(&[0xff]), !0xff00);
    }

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
    fn ip_header_shorter_than_twenty_bytes_is_truncation() {
        let mut req = echo_request(b"abc");
        req[14] = 0x44; // ihl 16: within the total length, but no IPv4 header
        req[24..26].fill(0);
        let c = internet_checksum(&req[14..30]);
        req[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(answer(&req, &ME, &mut [0u8; 128]), Err(Ignored::Truncated));
    }

    #[test]
    fn fragments_are_ignored() {
        let mut req = echo_request(b"abc");
        req[20] |= 0x20; // more fragments
        req[24..26].fill(0);
        let c = internet_checksum(&req[14..34]);
        req[24..26].copy_from_slice(&c.to_be_bytes());
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
