//! Test hosts: network namespaces joined by veth links, from a TOML file.
//!
//! `pathvm topo up FILE` creates one namespace per host (`NAME-HOST`), one
//! veth pair per link (both ends named `lnI` for link I), addresses
//! `10.231.I.1/24` and `.2/24`, kernel routes along the lowest-latency
//! paths (the forwarding baseline), and writes one node configuration per
//! host (ports, link keys, topology) for `pathvm node`. `down` removes the
//! namespaces and ends the processes in them; it is idempotent and also
//! cleans up after a crashed run.

pub mod emulator;
mod file;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod lab;
pub mod shell;

use std::fs;
use std::path::{Path, PathBuf};

use guest_agent::routing::Shortest;
use thiserror::Error;

pub use file::{HostSpec, LinkSpec, ServiceSpec, TopologyFile};

use node::{ExitSpec, HostAddrs, NodeFile, PortSpec, TopoLinkSpec};

/// Each side of a link may send under 2^16 directed link ids.
const LINK_SPAN_BITS: u32 = 16;

/// Where `up` writes node configurations: `STATE_DIR/NAME/HOST.toml`.
pub const STATE_DIR: &str = "/run/pathvm";

/// Why a topology could not be brought up or down.
#[derive(Debug, Error)]
pub enum TopoError {
    /// The file could not be read.
    #[error("cannot read topology {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for a topology.
    #[error("topology {path} is invalid: {msg}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        msg: String,
    },
    /// A host or link makes no sense.
    #[error("topology {path}: {msg}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// The hosts exist already.
    #[error("topology {name} is already up (namespace {netns} exists): run `pathvm topo down` first")]
    AlreadyUp {
        /// The topology name.
        name: String,
        /// A namespace that exists.
        netns: String,
    },
    /// A command failed.
    #[error("`{cmd}` failed: {msg}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its stderr.
        msg: String,
    },
    /// Writing node configurations failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// A loaded, validated topology with the name its namespaces carry.
#[derive(Debug, Clone)]
pub struct Topo {
    /// Namespace prefix.
    pub name: String,
    /// The file's contents.
    pub file: TopologyFile,
    /// The `pathvm` binary that runs link emulators (default: this one).
    pathvm: Option<PathBuf>,
}

impl Topo {
    /// Loads `path`; `name` overrides the file's name (tests use unique
    /// names so runs never collide).
    pub fn load(path: &Path, name: Option<&str>) -> Result<Self, TopoError> {
        let text = fs::read_to_string(path).map_err(|source| TopoError::Read { path: path.to_path_buf(), source })?;
        Self::parse(path, &text, name)
    }

    /// Parses and validates `text`, read from `path` (named in errors).
    pub fn parse(path: &Path, text: &str, name: Option<&str>) -> Result<Self, TopoError> {
        let file: TopologyFile =
            toml::from_str(text).map_err(|e| TopoError::Parse { path: path.to_path_buf(), msg: e.to_string() })?;
        file.validate().map_err(|msg| TopoError::Invalid { path: path.to_path_buf(), msg })?;
        let name = name.map(str::to_string).unwrap_or_else(|| file.name.clone());
        if name.is_empty() || name.len() > 8 || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(TopoError::Invalid {
                path: path.to_path_buf(),
                msg: format!("name {name:?} must be 1-8 letters or digits"),
            });
        }
        Ok(Self { name, file, pathvm: None })
    }

    /// Has `pathvm` (not the calling program) run the link emulators: for
    /// callers that are not the `pathvm` binary, such as tests.
    pub fn with_pathvm(mut self, pathvm: &Path) -> Self {
        self.pathvm = Some(pathvm.to_path_buf());
        self
    }

    /// The namespace of host `host`.
    pub fn netns(&self, host: &str) -> String {
        format!("{}-{host}", self.name)
    }

    /// Where the node configuration of `host` is written.
    pub fn node_config_path(&self, host: &str) -> PathBuf {
        Path::new(STATE_DIR).join(&self.name).join(format!("{host}.toml"))
    }

    /// The interface of link `i` (same name at both ends).
    pub fn iface(i: usize) -> String {
        format!("ln{i}")
    }

    /// The MAC of link `i` at end `end` (1: host `a`, 2: host `b`).
    pub fn mac(i: usize, end: u8) -> [u8; 6] {
        [0x02, 0x50, (i >> 8) as u8, i as u8, 0, end]
    }

    /// The address of link `i` at end `end`.
    pub fn addr(i: usize, end: u8) -> String {
        format!("10.231.{i}.{end}")
    }

    /// The interface of service link `j` (same name at both ends).
    pub fn service_iface(j: usize) -> String {
        format!("sv{j}")
    }

    /// The IPv4 and IPv6 address of service link `j` at end `end` (1: the
    /// overlay host, 2: the service host).
    pub fn service_addrs(j: usize, end: u8) -> (String, String) {
        (format!("10.232.{j}.{end}"), format!("fd00:232:{j:x}::{end}"))
    }

    /// Where `ip netns exec` finds host `host`'s own /etc files.
    fn etc_dir(&self, host: &str) -> PathBuf {
        Path::new("/etc/netns").join(self.netns(host))
    }

    /// Creates the namespaces, links, addresses, routes and node configs.
    /// Refuses if the topology is already up; on failure, removes what it
    /// made.
    pub fn up(&self) -> Result<(), TopoError> {
        if let Some(h) = self.file.hosts.iter().find(|h| Path::new("/var/run/netns").join(self.netns(&h.name)).exists())
        {
            return Err(TopoError::AlreadyUp { name: self.name.clone(), netns: self.netns(&h.name) });
        }
        let r = self.try_up();
        if r.is_err() {
            self.down();
        }
        r
    }

    fn try_up(&self) -> Result<(), TopoError> {
        for h in &self.file.hosts {
            let ns = self.netns(&h.name);
            shell::run(&["ip", "netns", "add", &ns])?;
            shell::in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
            // No IPv6 chatter (router solicitations, DAD) on overlay links.
            shell::in_ns(&ns, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
            shell::in_ns(&ns, &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
            shell::in_ns(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        }
        for (i, l) in self.file.links.iter().enumerate() {
            let (na, nb, ifc) = (self.netns(&l.a), self.netns(&l.b), Self::iface(i));
            if l.emulated() {
                self.add_emulated_link(i, l)?;
            } else {
                shell::run(&[
                    "ip", "link", "add", &ifc, "netns", &na, "type", "veth", "peer", "name", &ifc, "netns", &nb,
                ])?;
            }
            for (ns, end) in [(&na, 1u8), (&nb, 2u8)] {
                let mac = fmt_mac(&Self::mac(i, end));
                shell::in_ns(ns, &["ip", "link", "set", &ifc, "address", &mac])?;
                shell::in_ns(ns, &["ip", "addr", "add", &format!("{}/24", Self::addr(i, end)), "dev", &ifc])?;
                shell::in_ns(ns, &["ip", "link", "set", &ifc, "up"])?;
            }
            if l.rate_mbit > 0 {
                for ns in [&na, &nb] {
                    let rate = format!("{}mbit", l.rate_mbit);
                    shell::in_ns(
                        ns,
                        &[
                            "tc", "qdisc", "add", "dev", &ifc, "root", "tbf", "rate", &rate, "burst", "64kb",
                            "latency", "50ms",
                        ],
                    )?;
                }
            }
        }
        self.add_routes()?;
        self.add_services()?;
        self.write_node_configs()
    }

    /// The hosts that run no pathvm: a namespace each, a plain veth link
    /// to its `via` host (IPv4 and IPv6), a default route back, and its
    /// names in `via`'s hosts file.
    fn add_services(&self) -> Result<(), TopoError> {
        let mut hosts_files: Vec<(String, String)> = Vec::new();
        for (j, s) in self.file.services.iter().enumerate() {
            let (ns, via, ifc) = (self.netns(&s.name), self.netns(&s.via), Self::service_iface(j));
            shell::run(&["ip", "netns", "add", &ns])?;
            shell::in_ns(&ns, &["ip", "link", "set", "lo", "up"])?;
            shell::run(&[
                "ip", "link", "add", &ifc, "netns", &via, "type", "veth", "peer", "name", &ifc, "netns", &ns,
            ])?;
            // The overlay hosts run without IPv6; this one link has it.
            shell::in_ns(&via, &["sysctl", "-qw", &format!("net.ipv6.conf.{ifc}.disable_ipv6=0")])?;
            for (n, end) in [(&via, 1u8), (&ns, 2u8)] {
                let (v4, v6) = Self::service_addrs(j, end);
                shell::in_ns(n, &["ip", "addr", "add", &format!("{v4}/24"), "dev", &ifc])?;
                shell::in_ns(n, &["ip", "-6", "addr", "add", &format!("{v6}/64"), "dev", &ifc, "nodad"])?;
                shell::in_ns(n, &["ip", "link", "set", &ifc, "up"])?;
            }
            let (v4, v6) = Self::service_addrs(j, 1);
            shell::in_ns(&ns, &["ip", "route", "add", "default", "via", &v4])?;
            shell::in_ns(&ns, &["ip", "-6", "route", "add", "default", "via", &v6])?;
            let (v4, v6) = Self::service_addrs(j, 2);
            let lines: String = s.names.iter().map(|n| format!("{v4} {n}\n{v6} {n}\n")).collect();
            match hosts_files.iter_mut().find(|(h, _)| *h == s.via) {
                Some((_, text)) => text.push_str(&lines),
                None => hosts_files.push((s.via.clone(), format!("127.0.0.1 localhost\n::1 localhost\n{lines}"))),
            }
        }
        for (host, text) in hosts_files {
            let dir = self.etc_dir(&host);
            let path = dir.join("hosts");
            fs::create_dir_all(&dir)
                .and_then(|_| fs::write(&path, text))
                .map_err(|source| TopoError::Write { path, source })?;
        }
        Ok(())
    }

    /// The wire namespace of emulated link `i`.
    pub fn wire_netns(&self, i: usize) -> String {
        format!("{}-w{i}", self.name)
    }

    /// The control file of emulated link `i`.
    pub fn link_control_path(&self, i: usize) -> PathBuf {
        Path::new(STATE_DIR).join(&self.name).join(format!("link{i}.shape"))
    }

    /// Joins both hosts of link `i` to a wire namespace where the link
    /// emulator forwards between them with the link's delay and loss.
    fn add_emulated_link(&self, i: usize, l: &LinkSpec) -> Result<(), TopoError> {
        let (na, nb, wire, ifc) = (self.netns(&l.a), self.netns(&l.b), self.wire_netns(i), Self::iface(i));
        shell::run(&["ip", "netns", "add", &wire])?;
        shell::in_ns(&wire, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        shell::in_ns(&wire, &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
        shell::run(&[
            "ip", "link", "add", &ifc, "netns", &na, "type", "veth", "peer", "name", "end-a", "netns", &wire,
        ])?;
        shell::run(&[
            "ip", "link", "add", &ifc, "netns", &nb, "type", "veth", "peer", "name", "end-b", "netns", &wire,
        ])?;
        for end in ["end-a", "end-b"] {
            shell::in_ns(&wire, &["ip", "link", "set", "dev", end, "promisc", "on", "up"])?;
        }
        // The emulator carries frames as they are: the hosts must send
        // them complete (checksums filled in) and MTU-sized, as onto a wire,
        // or kernel TCP across the link breaks.
        for ns in [&na, &nb] {
            let iface = ifc.clone();
            netdev::netns::in_netns(ns, move || netdev::ethtool::wire_like(&iface)).and_then(|r| r).map_err(|e| {
                TopoError::Command {
                    cmd: format!("ethtool -K {ifc} tso off gso off tx off in {ns}"),
                    msg: e.to_string(),
                }
            })?;
        }
        let control = self.link_control_path(i);
        let dir = control.parent().unwrap_or(Path::new(STATE_DIR));
        fs::create_dir_all(dir).map_err(|source| TopoError::Write { path: dir.into(), source })?;
        let shape =
            emulator::LinkShape { delay_ms: l.delay_ms.unwrap_or(0), loss_percent: l.loss_percent.unwrap_or(0) };
        fs::write(&control, shape.render()).map_err(|source| TopoError::Write { path: control.clone(), source })?;
        let exe = match &self.pathvm {
            Some(p) => p.clone(),
            None => std::env::current_exe().map_err(|source| TopoError::Write { path: "pathvm".into(), source })?,
        };
        let spawn = std::process::Command::new("ip")
            .args(["netns", "exec", &wire])
            .arg(&exe)
            .args(["topo", "emulate-link", "--a", "end-a", "--b", "end-b", "--control"])
            .arg(&control)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if let Err(e) = spawn {
            return Err(TopoError::Command { cmd: format!("{} topo emulate-link", exe.display()), msg: e.to_string() });
        }
        let ready = emulator::ready_path(&control);
        for _ in 0..300 {
            if ready.exists() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(TopoError::Command {
            cmd: "topo emulate-link".into(),
            msg: format!("link {i} emulator not ready within 3 s"),
        })
    }

    /// Changes the delay and loss of the emulated link between hosts `a`
    /// and `b` while it runs.
    pub fn set_link(&self, a: &str, b: &str, shape: emulator::LinkShape) -> Result<(), TopoError> {
        let invalid = |msg: String| TopoError::Invalid { path: PathBuf::from(&self.name), msg };
        let i = self.file.link_index(a, b).ok_or_else(|| invalid(format!("no link between {a:?} and {b:?}")))?;
        let control = self.link_control_path(i);
        if !self.file.links[i].emulated() || !control.exists() {
            return Err(invalid(format!(
                "link {a}-{b} is not emulated (give it delay_ms or loss_percent in the file) or the topology is not up"
            )));
        }
        fs::write(&control, shape.render()).map_err(|source| TopoError::Write { path: control, source })
    }

    /// Kernel routes along `shortest` paths: the plain-forwarding baseline.
    fn add_routes(&self) -> Result<(), TopoError> {
        let topo = self.file.routing_topology();
        for h in &self.file.hosts {
            let ns = self.netns(&h.name);
            let table = Shortest::compute(&topo, h.id);
            for (i, l) in self.file.links.iter().enumerate() {
                if l.a == h.name || l.b == h.name {
                    continue;
                }
                // Reach link i through the neighbour on the way to its nearer end.
                let (ida, idb) = (self.file.host_id(&l.a), self.file.host_id(&l.b));
                let target = match (table.latency_to(ida), table.latency_to(idb)) {
                    (Some(x), Some(y)) if y < x => idb,
                    (Some(_), _) => ida,
                    (None, Some(_)) => idb,
                    (None, None) => continue,
                };
                let Some(next) = table.next_hop(target) else { continue };
                let Some((j, end)) = self.file.link_between(&h.name, next) else { continue };
                let via = Self::addr(j, 3 - end);
                shell::in_ns(&ns, &["ip", "route", "add", &format!("10.231.{i}.0/24"), "via", &via])?;
            }
        }
        Ok(())
    }

    /// One node configuration per host, with fresh link keys, written
    /// where [`Topo::node_config_path`] says (0600 in a 0700 directory).
    fn write_node_configs(&self) -> Result<(), TopoError> {
        let dir = Path::new(STATE_DIR).join(&self.name);
        fs::create_dir_all(&dir)
            .and_then(|_| {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            })
            .map_err(|source| TopoError::Write { path: dir.clone(), source })?;
        self.issue_identities(&dir)?;
        for (host, mut node) in self.node_files() {
            node.identity = Some(identity_spec(&host));
            // Written as a person would: interface and neighbour; the
            // MACs (the veth's own, broadcast for the neighbour), link ids
            // (from the node ids) and each link's key (agreed from the two
            // certificates) are filled in when the node loads the file.
            for p in &mut node.port {
                p.leave_to_defaults();
            }
            let path = self.node_config_path(&host);
            let text = toml::to_string(&node).expect("node config serialises");
            write_secret(&path, &text).map_err(|source| TopoError::Write { path: path.clone(), source })?;
        }
        Ok(())
    }

    /// The topology's network identity, made as a person would with
    /// `pathvm ca init`, `pathvm cert keygen` and `pathvm cert issue` (the
    /// same library calls): a CA in `DIR/identity/ca`, each host's keys
    /// in `DIR/identity/HOST.key` (0600) and its certificate among the
    /// members in `DIR/identity/members`.
    fn issue_identities(&self, dir: &Path) -> Result<(), TopoError> {
        let root = dir.join("identity");
        let fail = |e: node::identity::IdentityError| TopoError::Command {
            cmd: "issue identities".into(),
            msg: e.to_string(),
        };
        let _ = fs::remove_dir_all(&root);
        node::identity::ca_init(&root.join("ca"), &self.name).map_err(fail)?;
        let members = root.join("members");
        for h in &self.file.hosts {
            let public = node::identity::keygen(&root, &h.name).map_err(fail)?;
            let addrs = self.host_addrs(&h.name);
            let what = node::identity::Issue { node: h.id, name: &h.name, addrs: &addrs, keys: public, days: 30 };
            let cert = node::identity::issue(&root.join("ca"), what).map_err(fail)?;
            fs::create_dir_all(&members).map_err(|source| TopoError::Write { path: members.clone(), source })?;
            node::identity::write_cert(&members.join(format!("{}.crt.toml", h.name)), &cert).map_err(fail)?;
        }
        Ok(())
    }

    /// Host `host`'s addresses on its links.
    fn host_addrs(&self, host: &str) -> Vec<String> {
        self.file
            .links
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                (l.a == host).then(|| Self::addr(i, 1)).or_else(|| (l.b == host).then(|| Self::addr(i, 2)))
            })
            .collect()
    }

    /// Every host's node configuration, by host name, with fresh link
    /// keys for use in memory (the configs `write_node_configs` writes
    /// carry none: their link and link-state keys come from the
    /// certificates it issues).
    pub fn node_files(&self) -> Vec<(String, NodeFile)> {
        let keys: Vec<String> = self.file.links.iter().map(|_| random_key_hex()).collect();
        let links: Vec<TopoLinkSpec> = self
            .file
            .links
            .iter()
            .map(|l| TopoLinkSpec {
                a: self.file.host_id(&l.a),
                b: self.file.host_id(&l.b),
                latency_us: l.latency_us,
                bandwidth_mbps: l.bandwidth_mbps,
            })
            .collect();
        let hosts: Vec<HostAddrs> = self
            .file
            .hosts
            .iter()
            .map(|h| HostAddrs { name: h.name.clone(), node: h.id, addrs: self.host_addrs(&h.name) })
            .collect();
        let exits: Vec<ExitSpec> = self
            .file
            .hosts
            .iter()
            .filter(|h| !h.exit_policy.is_empty())
            .map(|h| ExitSpec { node: h.id, policy: h.exit_policy.clone() })
            .collect();
        let mut files = Vec::with_capacity(self.file.hosts.len());
        for h in &self.file.hosts {
            let mut ports = Vec::new();
            for (i, l) in self.file.links.iter().enumerate() {
                let (end, peer) = if l.a == h.name {
                    (1u8, &l.b)
                } else if l.b == h.name {
                    (2u8, &l.a)
                } else {
                    continue;
                };
                // Directed link id spans: (2i+1) << 16 onwards for a->b,
                // (2i+2) << 16 for b->a, 65536 ids each (the node takes the
                // first; request VMs on an edge host take one each).
                let (tx, rx) = if end == 1 { (2 * i + 1, 2 * i + 2) } else { (2 * i + 2, 2 * i + 1) };
                let (tx, rx) = ((tx as u32) << LINK_SPAN_BITS, (rx as u32) << LINK_SPAN_BITS);
                ports.push(PortSpec {
                    iface: Self::iface(i),
                    tap: format!("tap{i}"),
                    mac: fmt_mac(&Self::mac(i, end)),
                    peer: self.file.host_id(peer),
                    peer_mac: fmt_mac(&Self::mac(i, 3 - end)),
                    tx_link_id: tx,
                    tx_link_span: 1 << LINK_SPAN_BITS,
                    rx_link_id: rx,
                    rx_link_span: 1 << LINK_SPAN_BITS,
                    key: keys[i].clone(),
                });
            }
            let node = NodeFile {
                id: h.id,
                hop_limit: 16,
                mem_mib: 64,
                backend: Default::default(),
                protocol: "shortest".into(),
                host: hosts.clone(),
                port: ports,
                link: links.clone(),
                onion_key_period_s: guest_agent::onion::rotation::DEFAULT_PERIOD_S,
                stream_idle_timeout_s: self.file.stream_idle_timeout_s.unwrap_or(node::DEFAULT_IDLE_TIMEOUT_S),
                // From the certificates `write_node_configs` issues.
                lsa_secret: String::new(),
                lsa_key: Vec::new(),
                allow: Vec::new(),
                exit_policy: h.exit_policy.clone(),
                exit: exits.clone(),
                identity: None,
                path: None,
                refused_ports: Vec::new(),
                certified: Default::default(),
                source: String::new(),
            };
            files.push((h.name.clone(), node));
        }
        files
    }

    /// Removes every namespace of this topology, ending the processes in
    /// them first, and the node configurations. Never fails: what is not
    /// there is already down.
    pub fn down(&self) {
        let mut namespaces: Vec<String> = self.file.hosts.iter().map(|h| self.netns(&h.name)).collect();
        namespaces.extend(self.file.services.iter().map(|s| self.netns(&s.name)));
        // Wire namespaces of emulated links, also those of an older file.
        let wire_prefix = format!("{}-w", self.name);
        if let Some(list) = shell::output(&["ip", "netns", "list"]) {
            namespaces.extend(
                list.lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .filter(|n| n.strip_prefix(&wire_prefix).is_some_and(|r| r.chars().all(|c| c.is_ascii_digit())))
                    .map(str::to_string),
            );
        }
        for ns in namespaces {
            if let Some(pids) = shell::output(&["ip", "netns", "pids", &ns]) {
                for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                    // SAFETY: kill(2) on a PID that lives in our own test
                    // namespace; no memory is involved.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
                for _ in 0..50 {
                    if shell::output(&["ip", "netns", "pids", &ns]).is_none_or(|p| p.trim().is_empty()) {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                if let Some(pids) = shell::output(&["ip", "netns", "pids", &ns]) {
                    for pid in pids.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                        // SAFETY: as above; SIGKILL for what ignored SIGTERM.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            shell::quiet(&["ip", "netns", "del", &ns]);
        }
        let _ = fs::remove_dir_all(Path::new(STATE_DIR).join(&self.name));
        for h in &self.file.hosts {
            let _ = fs::remove_dir_all(self.etc_dir(&h.name));
        }
    }
}

/// Where `write_node_configs` puts host `host`'s identity files, as its
/// node config names them (relative to the configuration's directory).
fn identity_spec(host: &str) -> node::identity::IdentitySpec {
    let root = Path::new("identity");
    node::identity::IdentitySpec {
        ca: root.join("ca/ca.toml"),
        crl: Some(root.join("ca/crl.toml")),
        cert: root.join(format!("members/{host}.crt.toml")),
        key: root.join(format!("{host}.key")),
        members: root.join("members"),
    }
}

/// `aa:bb:..` form of a MAC.
pub fn fmt_mac(m: &[u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Writes a file only its owner may read (it holds link keys and the
/// node's secrets), whatever the umask, replacing any earlier one.
fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())
}

fn random_key_hex() -> String {
    vmm::random::hex(&vmm::random::bytes::<32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_are_stable() {
        assert_eq!(Topo::iface(3), "ln3");
        assert_eq!(fmt_mac(&Topo::mac(3, 2)), "02:50:00:03:00:02");
        assert_eq!(Topo::addr(3, 1), "10.231.3.1");
    }

    #[test]
    fn shipped_topologies_load() {
        for f in ["line3.toml", "mesh6.toml", "exit6.toml"] {
            let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/topologies").join(f);
            let t = Topo::load(&p, None).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(t.file.hosts.len() >= 3);
        }
    }

    #[test]
    fn bad_names_are_refused() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/topologies/line3.toml");
        assert!(Topo::load(&p, Some("has-dash")).is_err());
        assert!(Topo::load(&p, Some("waytoolongname")).is_err());
    }

    #[test]
    fn every_node_signs_with_its_own_key_and_every_node_knows_all_of_them() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/topologies/line3.toml");
        let t = Topo::load(&p, Some(&format!("k{}", std::process::id() % 10_000_000))).unwrap();
        t.write_node_configs().unwrap();
        let configs: Vec<_> = t
            .file
            .hosts
            .iter()
            .map(|h| NodeFile::load(&t.node_config_path(&h.name)).unwrap().node_config().unwrap())
            .collect();
        let _ = fs::remove_dir_all(t.node_config_path("x").parent().unwrap());
        let publics: Vec<_> =
            configs.iter().map(|c| (c.me, guest_agent::routing::lsa_sign::public_key(&c.lsa_secret))).collect();
        for c in &configs {
            assert_eq!(c.lsa_keys, publics, "node {} knows every origin's key", c.me);
        }
        let mut secrets: Vec<_> = configs.iter().map(|c| c.lsa_secret).collect();
        secrets.sort();
        secrets.dedup();
        assert_eq!(secrets.len(), configs.len(), "one secret per node");
    }
}
