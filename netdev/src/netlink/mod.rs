//! rtnetlink requests for links, ingress qdiscs and tc filters, so the
//! request path and the node change the host's interfaces without spawning
//! `ip`, `tc` or `sysctl` (each process start costs milliseconds, and a
//! host need not have iproute2 installed).
//!
//! One [`Netlink`] is a synchronous `NETLINK_ROUTE` socket. Every request
//! asks for an acknowledgement and waits for it, so an error comes back
//! from the call that caused it, named for the operation and the
//! interface. Messages are built by `netlink-packet-route`; the builders
//! are plain functions so their bytes are tested without a kernel.
//!
//! - [`link`]: looking interfaces up, bringing them up, queue length,
//!   deleting them, IPv6 off;
//! - [`tc`]: the ingress qdisc and `u32` filters with a `mirred egress
//!   redirect` action, the only tc the data path uses (this kernel has no
//!   `matchall` classifier).

pub mod link;
pub mod tc;

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use thiserror::Error;

pub use link::{disable_ipv6, Interface};
pub use tc::U32Match;

/// Why a netlink request failed.
#[derive(Debug, Error)]
pub enum NetlinkError {
    /// The socket could not be opened.
    #[error("cannot open a NETLINK_ROUTE socket: {0}")]
    Socket(#[source] io::Error),
    /// No interface has that name in this network namespace.
    #[error("no interface {iface:?} in this network namespace: {source}")]
    NoSuchInterface {
        /// The name looked up.
        iface: String,
        /// What the lookup said.
        #[source]
        source: io::Error,
    },
    /// The kernel refused the request (or the socket failed carrying it).
    #[error("{op} on {iface} failed: {source}")]
    Request {
        /// What was asked, in words (`"adding the ingress qdisc"`).
        op: &'static str,
        /// The interface it was asked of.
        iface: String,
        /// The errno the kernel answered.
        #[source]
        source: io::Error,
    },
}

impl NetlinkError {
    /// The errno behind a refused request, if that is what this is.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Request { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// Flags of a request that creates something and must not replace an
/// existing one (what `tc ... add` sends).
const CREATE: u16 = NLM_F_CREATE | NLM_F_EXCL;

/// A synchronous rtnetlink socket.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("seq", &self.seq).finish_non_exhaustive()
    }
}

/// Room for one answer: acknowledgements carry the request's header (and
/// with extended acks a message), far below this.
const RECV_BUF: usize = 16 << 10;

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        Ok(Self { socket, seq: 0, buf: Vec::with_capacity(RECV_BUF) })
    }

    /// Sends `msg` with `flags` (besides REQUEST and ACK) and waits for the
    /// kernel's acknowledgement.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &'static str,
        iface: &str,
    ) -> Result<(), NetlinkError> {
        let fail = |source| NetlinkError::Request { op, iface: iface.to_string(), source };
        self.seq = self.seq.wrapping_add(1);
        let packet = encode(msg, flags, self.seq);
        let sent = self.socket.send(&packet, 0).map_err(fail)?;
        if sent != packet.len() {
            return Err(fail(io::Error::new(io::ErrorKind::WriteZero, "netlink request sent in part")));
        }
        loop {
            self.buf.clear();
            self.socket.recv(&mut self.buf, 0).map_err(fail)?;
            if let Some(result) = ack_of(&self.buf, self.seq) {
                return result.map_err(fail);
            }
        }
    }
}

/// The bytes of one request: `msg` with REQUEST, ACK and `flags`, numbered `seq`.
fn encode(msg: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    header.sequence_number = seq;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

/// The outcome the datagram `buf` reports for request `seq`: `None` when it
/// holds no acknowledgement of it (a stale answer, a notification).
fn ack_of(buf: &[u8], seq: u32) -> Option<io::Result<()>> {
    let mut rest = buf;
    while !rest.is_empty() {
        let msg = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest) {
            Ok(m) => m,
            // Unparseable is an answer too: never wait forever on it.
            Err(e) => return Some(Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string()))),
        };
        let len = (msg.header.length as usize).next_multiple_of(4);
        if msg.header.sequence_number == seq {
            if let NetlinkPayload::Error(e) = &msg.payload {
                return Some(match e.code {
                    None => Ok(()),
                    Some(_) => Err(e.to_io()),
                });
            }
        }
        if len == 0 || len > rest.len() {
            break;
        }
        rest = &rest[len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::ErrorMessage;
    use netlink_packet_route::tc::TcMessage;

    /// `NLMSG_ERROR` for `seq` with `code`.
    fn error_reply(seq: u32, code: i32) -> Vec<u8> {
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut e = ErrorMessage::default();
        e.code = std::num::NonZeroI32::new(code);
        e.header = vec![0; 16];
        let mut msg = NetlinkMessage::<RouteNetlinkMessage>::new(header, NetlinkPayload::Error(e));
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        buf
    }

    #[test]
    fn a_request_header_asks_for_an_ack_and_carries_its_flags_and_sequence() {
        let bytes = encode(RouteNetlinkMessage::NewQueueDiscipline(TcMessage::default()), CREATE, 7);
        // struct nlmsghdr: len u32, type u16, flags u16, seq u32, pid u32.
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize, bytes.len());
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), libc::RTM_NEWQDISC);
        assert_eq!(u16::from_ne_bytes([bytes[6], bytes[7]]), 0x0605, "REQUEST | ACK | EXCL | CREATE");
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 7);
    }

    #[test]
    fn an_ack_for_our_sequence_is_success_and_a_nack_is_its_errno() {
        assert!(matches!(ack_of(&error_reply(3, 0), 3), Some(Ok(()))));
        let err = ack_of(&error_reply(3, -libc::EEXIST), 3).unwrap().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EEXIST));
    }

    #[test]
    fn an_answer_to_another_sequence_is_not_our_ack() {
        assert!(ack_of(&error_reply(2, 0), 3).is_none());
        // Two answers in one datagram: ours second.
        let mut both = error_reply(2, -libc::ENOENT);
        both.extend(error_reply(3, 0));
        assert!(matches!(ack_of(&both, 3), Some(Ok(()))));
    }

    /// Flags and queue length of `name`, read back with the ioctls `ip`
    /// does not use (so the check is independent of the code under test).
    fn flags_and_qlen(name: &str) -> (libc::c_short, libc::c_int) {
        #[repr(C)]
        struct IfReq {
            name: [u8; 16],
            value: libc::c_int,
            _pad: [u8; 20],
        }
        // SAFETY: a plain datagram socket, closed below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        let mut req = IfReq { name: [0; 16], value: 0, _pad: [0; 20] };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: both ioctls read and write an ifreq we own; the short
        // flags field sits where `value` starts.
        let flags = unsafe {
            assert_eq!(libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req), 0);
            let flags = req.value as libc::c_short;
            assert_eq!(libc::ioctl(fd, libc::SIOCGIFTXQLEN, &mut req), 0);
            libc::close(fd);
            flags
        };
        (flags, req.value)
    }

    /// Every operation against the real kernel, in a network namespace of
    /// this test's own (root only; says so and passes elsewhere).
    #[test]
    fn every_operation_works_on_persistent_taps_in_a_private_namespace() {
        let run = std::thread::spawn(|| {
            // SAFETY: unshare moves only this thread into a new namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                eprintln!("NOT RUN: cannot unshare a network namespace: {}", io::Error::last_os_error());
                return;
            }
            crate::Tap::create_persistent("nl0").expect("create nl0");
            crate::Tap::create_persistent("nl1").expect("create nl1");
            let (a, b) = (Interface::by_name("nl0").unwrap(), Interface::by_name("nl1").unwrap());
            let mut nl = Netlink::open().unwrap();
            disable_ipv6("nl0").unwrap();
            assert_eq!(std::fs::read_to_string("/proc/sys/net/ipv6/conf/nl0/disable_ipv6").unwrap(), "1\n");
            nl.set_txqueuelen(&a, 10_000).unwrap();
            nl.set_link_up(&a).unwrap();
            let (flags, qlen) = flags_and_qlen("nl0");
            assert!(flags & libc::IFF_UP as libc::c_short != 0);
            assert_eq!(qlen, 10_000);

            nl.add_ingress_qdisc(&a).unwrap();
            nl.add_ingress_qdisc(&a).expect("an existing ingress qdisc is fine");
            nl.add_redirect(&a, U32Match { value: 0xabcd, mask: !0, offset: 4 }, 5, &b).unwrap();
            nl.add_redirect(&a, U32Match::ANY, 0, &b).unwrap();
            nl.add_ingress_qdisc(&b).unwrap();
            nl.add_redirect(&b, U32Match::ANY, 0, &a).unwrap();
            nl.del_filters(&a, 5).unwrap();
            let again = nl.del_filters(&a, 5).expect_err("priority 5 is gone");
            assert_eq!(again.errno(), Some(libc::ENOENT), "{again}");
            assert!(again.to_string().contains("deleting ingress filters on nl0"), "{again}");

            nl.del_ingress_qdisc(&a).unwrap();
            assert!(nl.del_ingress_qdisc(&a).is_err(), "nothing left to delete");
            let no_qdisc = nl.add_redirect(&a, U32Match::ANY, 0, &b).expect_err("no ingress qdisc");
            assert!(matches!(no_qdisc, NetlinkError::Request { .. }));
            nl.del_link(&a).unwrap();
            assert!(Interface::by_name("nl0").is_err(), "nl0 deleted");
        });
        run.join().expect("namespace thread");
    }

    #[test]
    fn a_truncated_answer_is_an_error_not_a_wait() {
        let reply = error_reply(3, 0);
        assert!(matches!(ack_of(&reply[..10], 3), Some(Err(_))));
    }
}
