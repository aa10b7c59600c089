//! The intake: frames on a link interface go to the node's tap before the
//! host stack sees them, and frames the VM sends go out of the link.
//!
//! tc ingress with a catch-all `u32` filter and `mirred egress redirect`,
//! in both directions (this kernel has no `matchall` classifier), set up
//! over rtnetlink and tun ioctls: a node spawns no `ip`, `tc` or `sysctl`.
//! Undone on drop, so a node that exits leaves its host as it found it.

use netdev::netlink::{self, Interface, Netlink, NetlinkError, U32Match};
use netdev::{Tap, TapError};
use thiserror::Error;

use super::PortSpec;

/// Why the intake could not be set up.
#[derive(Debug, Error)]
pub enum IntakeError {
    /// No netlink socket.
    #[error("cannot set up the intake: {0}")]
    Open(#[source] NetlinkError),
    /// A netlink request (or the IPv6 switch) failed; the source names the
    /// operation and the interface.
    #[error("cannot set up the intake on {iface}: {source}")]
    Netlink {
        /// The port's link interface.
        iface: String,
        /// What failed.
        #[source]
        source: NetlinkError,
    },
    /// The port's tap could not be created.
    #[error("cannot set up the intake on {iface}: creating tap {tap}: {source}")]
    CreateTap {
        /// The port's link interface.
        iface: String,
        /// The tap.
        tap: String,
        /// Why.
        #[source]
        source: TapError,
    },
}

/// Tap queue length: frames wait here while the VM is parked.
const TAP_QUEUE: u32 = 10_000;

/// Taps and redirects of a node's ports; removed on drop.
pub struct Intake {
    netlink: Netlink,
    /// Each port's link interface and tap.
    ports: Vec<(Interface, Interface)>,
}

/// Every frame arriving on `from` leaves through `to`.
fn redirect(netlink: &mut Netlink, from: &Interface, to: &Interface) -> Result<(), NetlinkError> {
    netlink.add_ingress_qdisc(from)?;
    netlink.add_redirect(from, U32Match::ANY, 0, to)
}

impl Intake {
    /// Creates a tap per port and redirects both ways.
    pub fn up(ports: &[PortSpec]) -> Result<Self, IntakeError> {
        let netlink = Netlink::open().map_err(IntakeError::Open)?;
        let mut intake = Self { netlink, ports: Vec::new() };
        for p in ports {
            let err = |source| IntakeError::Netlink { iface: p.iface.clone(), source };
            let iface = Interface::by_name(&p.iface).map_err(err)?;
            // Leftovers of a crashed node on this host (absent is fine).
            let _ = intake.netlink.del_ingress_qdisc(&iface);
            if let Ok(old) = Interface::by_name(&p.tap) {
                let _ = intake.netlink.del_link(&old);
            }
            Tap::create_persistent(&p.tap).map_err(|source| IntakeError::CreateTap {
                iface: p.iface.clone(),
                tap: p.tap.clone(),
                source,
            })?;
            let tap = Interface::by_name(&p.tap).map_err(err)?;
            intake.ports.push((iface.clone(), tap.clone()));
            netlink::disable_ipv6(&p.tap).map_err(err)?;
            intake.netlink.set_txqueuelen(&tap, TAP_QUEUE).map_err(err)?;
            intake.netlink.set_link_up(&tap).map_err(err)?;
            redirect(&mut intake.netlink, &iface, &tap).map_err(err)?;
            redirect(&mut intake.netlink, &tap, &iface).map_err(err)?;
        }
        Ok(intake)
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        for (iface, tap) in &self.ports {
            // Best effort: the host may be going away with us.
            let _ = self.netlink.del_ingress_qdisc(iface);
            let _ = self.netlink.del_link(tap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_intake_error_names_the_port_and_what_failed() {
        let e = IntakeError::CreateTap {
            iface: "ln0".into(),
            tap: "tap0".into(),
            source: TapError::InvalidName("tap0".into()),
        };
        let text = e.to_string();
        assert!(text.contains("ln0") && text.contains("creating tap tap0"), "{text}");
    }
}
