//! The intake: frames on a link interface go to the node's tap before the
//! host stack sees them, and frames the VM sends go out of the link.
//!
//! tc ingress with a catch-all `u32` filter and `mirred egress redirect`,
//! in both directions (this kernel has no `matchall` classifier). Undone
//! on drop, so a node that exits leaves its host as it found it.

use thiserror::Error;

use super::PortSpec;
use crate::shell;

/// Why the intake could not be set up.
#[derive(Debug, Error)]
#[error("cannot set up the intake on {iface}: {source}")]
pub struct IntakeError {
    iface: String,
    #[source]
    source: shell::CommandError,
}

/// Tap queue length: frames wait here while the VM is parked.
const TAP_QUEUE: &str = "10000";

/// Taps and redirects of a node's ports; removed on drop.
pub struct Intake {
    ports: Vec<(String, String)>,
}

fn redirect(from: &str, to: &str) -> Result<(), shell::CommandError> {
    shell::run(&["tc", "qdisc", "add", "dev", from, "ingress"])?;
    shell::run(&[
        "tc", "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32", "match", "u32", "0", "0",
        "action", "mirred", "egress", "redirect", "dev", to,
    ])
}

impl Intake {
    /// Creates a tap per port and redirects both ways.
    pub fn up(ports: &[PortSpec]) -> Result<Self, IntakeError> {
        let mut intake = Self { ports: Vec::new() };
        for p in ports {
            let err = |source| IntakeError { iface: p.iface.clone(), source };
            // Leftovers of a crashed node on this host.
            shell::quiet(&["tc", "qdisc", "del", "dev", &p.iface, "ingress"]);
            shell::quiet(&["ip", "link", "del", &p.tap]);
            shell::run(&["ip", "tuntap", "add", &p.tap, "mode", "tap", "vnet_hdr"]).map_err(err)?;
            intake.ports.push((p.iface.clone(), p.tap.clone()));
            shell::run(&["sysctl", "-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", p.tap)]).map_err(err)?;
            shell::run(&["ip", "link", "set", &p.tap, "txqueuelen", TAP_QUEUE, "up"]).map_err(err)?;
            redirect(&p.iface, &p.tap).map_err(err)?;
            redirect(&p.tap, &p.iface).map_err(err)?;
        }
        Ok(intake)
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        for (iface, tap) in &self.ports {
            shell::quiet(&["tc", "qdisc", "del", "dev", iface, "ingress"]);
            shell::quiet(&["ip", "link", "del", tap]);
        }
    }
}
