//! The harness tests and benchmarks share: test hosts brought up under a
//! name of their own and taken down on drop ([`Lab`]), and the daemons
//! started in them ([`Daemon`]), whose readiness and outcomes are read
//! from their structured events ([`Events`]), never from log text.

mod daemon;
pub mod events;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

pub use daemon::{Daemon, DaemonError};
pub use events::{is, Events, EventsTimeout};

use crate::{Topo, TopoError};

/// How long a node or edge gets to report that it is up.
pub const READY_WITHIN: Duration = Duration::from_secs(20);

/// Test hosts that are up; taken down (with every process in them) on drop.
pub struct Lab {
    topo: Topo,
    pathvm: PathBuf,
    image: PathBuf,
}

impl Lab {
    /// Brings up the topology in `file` under `name` (1-8 letters or
    /// digits, unique per run); `pathvm` and `image` are what daemons run.
    pub fn up(file: &Path, name: &str, pathvm: &Path, image: &Path) -> Result<Self, TopoError> {
        let topo = Topo::load(file, Some(name))?.with_pathvm(pathvm);
        topo.up()?;
        Ok(Self { topo, pathvm: pathvm.to_path_buf(), image: image.to_path_buf() })
    }

    /// The topology.
    pub fn topo(&self) -> &Topo {
        &self.topo
    }

    /// The namespace prefix.
    pub fn name(&self) -> &str {
        &self.topo.name
    }

    /// The namespace of `host`.
    pub fn netns(&self, host: &str) -> String {
        self.topo.netns(host)
    }

    /// The node configuration `up` wrote for `host`.
    pub fn node_config(&self, host: &str) -> PathBuf {
        self.topo.node_config_path(host)
    }

    /// The address of `host` on its first link (what kernel routes and the
    /// edge both reach it by), if the topology has that host on a link.
    pub fn host_addr(&self, host: &str) -> Option<Ipv4Addr> {
        host_addr(&self.topo, host)
    }

    /// `program args…` inside `host`'s namespace (pinned to CPU 0 if
    /// `pin`), stdio null, for the caller to adjust.
    pub fn command_in(&self, host: &str, pin: bool, program: &Path) -> Command {
        let mut c = Command::new(ip_bin());
        c.args(["netns", "exec", &self.netns(host)]);
        if pin {
            c.args(["taskset", "-c", "0"]);
        }
        c.arg(program).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        c
    }

    /// `pathvm node` for `host`, for the caller to adjust (e.g. `--metrics`,
    /// piped stdio, its PATH) before [`Lab::start_node_from`].
    pub fn node_command(&self, host: &str, pin: bool) -> Command {
        let mut c = self.command_in(host, pin, &self.pathvm);
        c.arg("node").arg("--image").arg(&self.image).arg("--config").arg(self.node_config(host));
        c
    }

    /// Starts a [`Lab::node_command`] and waits for its `node_up` event.
    pub fn start_node_from(&self, host: &str, cmd: Command) -> Result<Daemon, DaemonError> {
        Daemon::start(&format!("node on {host}"), cmd, "node_up", READY_WITHIN)
    }

    /// Starts `host`'s node as it is configured.
    pub fn start_node(&self, host: &str, pin: bool) -> Result<Daemon, DaemonError> {
        self.start_node_from(host, self.node_command(host, pin))
    }

    /// `pathvm edge` on `host` (the topology's edge host), for the caller
    /// to adjust before [`Lab::start_edge_from`].
    pub fn edge_command(&self, host: &str) -> Command {
        let mut c = self.command_in(host, false, &self.pathvm);
        c.arg("edge").arg("--image").arg(&self.image).arg("--config").arg(self.node_config(host));
        c
    }

    /// Starts an [`Lab::edge_command`] and waits for its `edge_up` event.
    pub fn start_edge_from(&self, host: &str, cmd: Command) -> Result<Daemon, DaemonError> {
        Daemon::start(&format!("edge on {host}"), cmd, "edge_up", READY_WITHIN)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.topo.down();
    }
}

/// The address of `host` on its first link, if it is on one.
pub fn host_addr(t: &Topo, host: &str) -> Option<Ipv4Addr> {
    t.file.links.iter().enumerate().find_map(|(i, l)| {
        let end = if l.a == host {
            1
        } else if l.b == host {
            2
        } else {
            return None;
        };
        Topo::addr(i, end).parse().ok()
    })
}

/// `ip` by its absolute path where iproute2 puts it, so a daemon can be
/// given a PATH of its own (a test proves the daemons spawn no `ip`).
pub fn ip_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).map(|d| d.join("ip")).collect::<Vec<_>>());
    on_path
        .into_iter()
        .flatten()
        .chain(["/usr/sbin/ip", "/sbin/ip"].map(PathBuf::from))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("ip"))
}
