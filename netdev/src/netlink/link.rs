//! Links: looking interfaces up by name, bringing them up, their transmit
//! queue length, deleting them, and switching IPv6 off on them.

use std::ffi::CString;
use std::io;

use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;

use super::{Netlink, NetlinkError};

/// An interface of this network namespace: its name (for messages) and
/// index (what netlink addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    name: String,
    index: u32,
}

impl Interface {
    /// Looks `name` up in the calling thread's network namespace.
    pub fn by_name(name: &str) -> Result<Self, NetlinkError> {
        let missing = |source| NetlinkError::NoSuchInterface { iface: name.to_string(), source };
        let c = CString::new(name).map_err(|_| missing(io::Error::from(io::ErrorKind::InvalidInput)))?;
        // SAFETY: `c` is a NUL-terminated string that outlives the call.
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if index == 0 {
            return Err(missing(io::Error::last_os_error()));
        }
        Ok(Self { name: name.to_string(), index })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// An interface that need not exist, for message tests.
    #[cfg(test)]
    pub(crate) fn for_tests(name: &str, index: u32) -> Self {
        Self { name: name.to_string(), index }
    }
}

/// A link message addressed to `iface`, with nothing to change yet.
fn addressed(iface: &Interface) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = iface.index;
    msg
}

/// `ip link set IFACE up`.
pub(crate) fn up_message(iface: &Interface) -> LinkMessage {
    let mut msg = addressed(iface);
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg
}

/// `ip link set IFACE txqueuelen LEN`.
pub(crate) fn txqueuelen_message(iface: &Interface, len: u32) -> LinkMessage {
    let mut msg = addressed(iface);
    msg.attributes.push(LinkAttribute::TxQueueLen(len));
    msg
}

impl Netlink {
    /// Brings `iface` up.
    pub fn set_link_up(&mut self, iface: &Interface) -> Result<(), NetlinkError> {
        self.request(RouteNetlinkMessage::SetLink(up_message(iface)), 0, "bringing the link up", &iface.name)
    }

    /// Sets how many frames `iface` queues for transmission.
    pub fn set_txqueuelen(&mut self, iface: &Interface, len: u32) -> Result<(), NetlinkError> {
        self.request(
            RouteNetlinkMessage::SetLink(txqueuelen_message(iface, len)),
            0,
            "setting the transmit queue length",
            &iface.name,
        )
    }

    /// Deletes `iface` (a persistent tap, say).
    pub fn del_link(&mut self, iface: &Interface) -> Result<(), NetlinkError> {
        self.request(RouteNetlinkMessage::DelLink(addressed(iface)), 0, "deleting the link", &iface.name)
    }
}

/// Switches IPv6 off on interface `name` of the calling thread's network
/// namespace, so the host stack sends nothing of its own (router
/// solicitations, DAD) into a port. Written to /proc/sys directly: rtnetlink
/// cannot set IPv6 device configuration, and a `sysctl` process would cost
/// a process start.
pub fn disable_ipv6(name: &str) -> Result<(), NetlinkError> {
    let fail = |source| NetlinkError::Request { op: "disabling IPv6", iface: name.to_string(), source };
    if name.is_empty() || name.contains(['/', '\0']) || name == "." || name == ".." {
        return Err(fail(io::Error::from(io::ErrorKind::InvalidInput)));
    }
    std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), b"1\n").map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;

    fn lo() -> Interface {
        Interface::for_tests("lo", 1)
    }

    #[test]
    fn an_unknown_interface_is_named_in_the_error() {
        let err = Interface::by_name("pathvm-nosuch").unwrap_err();
        assert!(matches!(&err, NetlinkError::NoSuchInterface { iface, .. } if iface == "pathvm-nosuch"), "{err}");
        assert!(Interface::by_name("nul\0inside").is_err());
    }

    #[test]
    fn link_up_sets_only_the_up_flag() {
        let msg = up_message(&lo());
        let mut bytes = vec![0; msg.buffer_len()];
        msg.emit(&mut bytes);
        // struct ifinfomsg: family u8, pad u8, type u16, index i32, flags u32, change u32.
        assert_eq!(bytes.len(), 16, "no attributes");
        assert_eq!(i32::from_ne_bytes(bytes[4..8].try_into().unwrap()), 1);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), libc::IFF_UP as u32);
        assert_eq!(u32::from_ne_bytes(bytes[12..16].try_into().unwrap()), libc::IFF_UP as u32);
    }

    #[test]
    fn txqueuelen_is_one_ifla_txqlen_attribute_and_no_flag_change() {
        let msg = txqueuelen_message(&lo(), 10_000);
        let mut bytes = vec![0; msg.buffer_len()];
        msg.emit(&mut bytes);
        assert_eq!(&bytes[8..16], &[0; 8], "flags and change mask untouched");
        // struct nlattr: len u16 = 8, type u16 = IFLA_TXQLEN (13), then the u32.
        assert_eq!(&bytes[16..20], &[8, 0, 13, 0]);
        assert_eq!(u32::from_ne_bytes(bytes[20..24].try_into().unwrap()), 10_000);
    }

    #[test]
    fn ipv6_paths_that_leave_the_conf_directory_are_refused() {
        for name in ["", "..", "a/b"] {
            assert!(matches!(disable_ipv6(name), Err(NetlinkError::Request { .. })), "{name:?}");
        }
    }
}
