//! The node configuration file `pathvm topo up` writes per host.

use std::path::{Path, PathBuf};

use guest_agent::node::{KeyScope, NodeConfig, PortConfig, MAX_PORTS};
use guest_agent::router::is_reserved_source;
use guest_agent::routing::lsa_sign;
use guest_agent::routing::{Link, NodeId};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::allow::AllowPolicy;
use crate::exit_policy::ExitPolicy;

/// Why a node configuration is unusable.
#[derive(Debug, Error)]
pub enum NodeFileError {
    /// Unreadable.
    #[error("cannot read node config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML for a node.
    #[error("node config {path} is invalid: {msg}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What, with line and column.
        msg: String,
    },
    /// A value out of range.
    #[error("node config: {0}")]
    Invalid(String),
    /// A value out of range, and where it is (before the file is known).
    #[error("node config: {1}")]
    At(Spot, String),
    /// A value out of range in a file, with its line where the file
    /// names the key (a value left to its default has none).
    #[error("node config {}{}: {msg}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Value {
        /// The file.
        path: PathBuf,
        /// The key's line (1-based).
        line: Option<usize>,
        /// What is wrong.
        msg: String,
    },
}

/// Where a value sits in a node configuration, so an error about it can
/// name its line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spot {
    /// A key at the top level.
    Key(&'static str),
    /// A key of the `index`-th entry (0-based) of an array of tables
    /// (`[[port]]`, `[[exit]]`).
    Entry(&'static str, usize, &'static str),
}

impl Spot {
    /// The 1-based line of this key in TOML `text`, if the text has it.
    pub fn line_in(self, text: &str) -> Option<usize> {
        let doc = toml_edit::ImDocument::parse(text).ok()?;
        let key = match self {
            Self::Key(k) => doc.key(k)?.span()?,
            Self::Entry(table, index, k) => doc.get(table)?.as_array_of_tables()?.get(index)?.key(k)?.span()?,
        };
        Some(text[..key.start.min(text.len())].matches('\n').count() + 1)
    }
}

/// One link port of a node. A person writes `iface` and `peer`; the rest
/// has defaults filled in when the file is loaded ([`NodeFile::load`]):
/// the tap `pvIFACE`, the interface's own MAC (when the file is loaded
/// where the interface is), the broadcast address for
/// the neighbour (links are point to point), link ids from the node ids
/// (`ID << 16`, 65,536 each: what request VMs on an edge host take one of
/// each), and with an `[identity]` the key agreed from both certificates.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// The host's interface on the link.
    pub iface: String,
    /// The tap the node creates for it (default `pvIFACE`, at most 15
    /// characters).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tap: String,
    /// This end's MAC, which the VM's port uses too (default: the
    /// interface's own).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    /// Neighbour node id.
    pub peer: NodeId,
    /// Neighbour's MAC (default ff:ff:ff:ff:ff:ff: the link is point to
    /// point and the neighbour's node takes every frame on it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer_mac: String,
    /// Link id this node sends under, the first of its side's span
    /// (default: this node's id << 16).
    #[serde(default = "unset", skip_serializing_if = "is_unset")]
    pub tx_link_id: u32,
    /// How many ids from `tx_link_id` this side may send under (request
    /// VMs on an edge host take one each; default 65,536 with the default
    /// id, else 1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tx_link_span: u32,
    /// First link id the neighbour's side sends under (default: its id <<
    /// 16).
    #[serde(default = "unset", skip_serializing_if = "is_unset")]
    pub rx_link_id: u32,
    /// How many ids from `rx_link_id` the neighbour's side may use.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rx_link_span: u32,
    /// 32-byte link key, hex (packet keys are derived from it per id).
    /// Empty with an `[identity]`: agreed from both ends' certificates.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key: String,
}

/// A link id left to its default (the reserved id, which no side sends).
const UNSET_LINK_ID: u32 = guest_agent::wire::RESERVED_LINK_ID;

fn unset() -> u32 {
    UNSET_LINK_ID
}

fn is_unset(v: &u32) -> bool {
    *v == UNSET_LINK_ID
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// Ids each side of a link gets by default.
pub const DEFAULT_LINK_SPAN: u32 = 1 << 16;

impl PortSpec {
    /// Leaves the MACs, link ids, spans and key to their defaults, as a
    /// person writing the file would (`pathvm topo up` writes them so).
    pub fn leave_to_defaults(&mut self) {
        self.mac.clear();
        self.peer_mac.clear();
        self.key.clear();
        (self.tx_link_id, self.rx_link_id) = (UNSET_LINK_ID, UNSET_LINK_ID);
        (self.tx_link_span, self.rx_link_span) = (0, 0);
    }

    /// Fills in what was left to defaults for node `me` (reading the
    /// interface's MAC from sysfs).
    fn fill_defaults(&mut self, me: NodeId) {
        if self.tap.is_empty() {
            self.tap = format!("pv{}", self.iface).chars().take(15).collect();
        }
        if self.mac.is_empty() {
            // The interface's own, when this namespace has it (a node
            // runs where its interfaces are; its intake says so clearly if
            // one is missing); else one made of the node id and the
            // interface name, locally administered.
            let path = format!("/sys/class/net/{}/address", self.iface);
            self.mac = match std::fs::read_to_string(&path) {
                Ok(m) => m.trim().to_string(),
                Err(_) => {
                    let h = self.iface.bytes().fold(0u16, |h, b| h.wrapping_mul(31).wrapping_add(u16::from(b)));
                    let (i, n) = (me.to_be_bytes(), h.to_be_bytes());
                    format!("02:70:{:02x}:{:02x}:{:02x}:{:02x}", i[0], i[1], n[0], n[1])
                }
            };
        }
        if self.peer_mac.is_empty() {
            self.peer_mac = "ff:ff:ff:ff:ff:ff".into();
        }
        for (id, span, node) in [
            (&mut self.tx_link_id, &mut self.tx_link_span, me),
            (&mut self.rx_link_id, &mut self.rx_link_span, self.peer),
        ] {
            if *id == UNSET_LINK_ID {
                *id = u32::from(node) << 16;
                if *span == 0 {
                    *span = DEFAULT_LINK_SPAN;
                }
            } else if *span == 0 {
                *span = 1;
            }
        }
    }
}

/// A link of the topology, by node id.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopoLinkSpec {
    /// One end.
    pub a: NodeId,
    /// Other end.
    pub b: NodeId,
    /// Latency, µs.
    pub latency_us: u32,
    /// Bandwidth, Mbit/s.
    pub bandwidth_mbps: u32,
}

/// Who serves a node's virtio-net queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortBackend {
    /// A vhost-user-net backend per port (the default).
    #[default]
    VhostUser,
    /// The VMM's own virtio-net device on the tap.
    Tap,
}

/// A host of the topology, by name, node id and addresses (so an edge can
/// tell which node a destination is on).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostAddrs {
    /// Host name.
    pub name: String,
    /// Its node id.
    pub node: NodeId,
    /// Its IPv4 addresses.
    pub addrs: Vec<String>,
}

/// One node's link-state signing key (Ed25519), in `lsa_key`: the one
/// key the topology distributes (onion keys travel signed by it).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeySpec {
    /// The node.
    pub node: NodeId,
    /// The public key, hex.
    pub public: String,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// This node's id.
    pub id: NodeId,
    /// Hop limit of originated packets.
    pub hop_limit: u8,
    /// Guest memory, MiB.
    pub mem_mib: u64,
    /// Who serves the ports' queues.
    #[serde(default)]
    pub backend: PortBackend,
    /// Routing protocol of packets this node originates (shortest, widest).
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Ports.
    pub port: Vec<PortSpec>,
    /// Every host of the topology (for edges resolving destinations).
    #[serde(default)]
    pub host: Vec<HostAddrs>,
    /// Topology.
    pub link: Vec<TopoLinkSpec>,
    /// Seconds between this node's onion key rotations. The node draws
    /// each key itself and advertises it in its signed link state; a key
    /// opens circuits and stream hellos for two periods, then is wiped,
    /// so a compromise of the node opens nothing recorded earlier.
    #[serde(default = "default_onion_period")]
    pub onion_key_period_s: u32,
    /// Seconds a stream ending here may go unheard before it is reset and
    /// its service connection closed; request VMs of an edge with this
    /// file send keepalives at a third of it. One value per topology.
    #[serde(default = "default_idle_timeout")]
    pub stream_idle_timeout_s: u32,
    /// This node's Ed25519 secret for signing its link-state
    /// advertisements, hex; `topo up` makes one. Without it the node
    /// routes on what it measures itself and advertises nothing.
    #[serde(default)]
    pub lsa_secret: String,
    /// Every node's link-state public key: only advertisements signed by
    /// one of these origins are taken in.
    #[serde(default)]
    pub lsa_key: Vec<PublicKeySpec>,
    /// Services streams ending here may be connected to, each
    /// `ADDR/PREFIX:PORTS` (PORTS: `N`, `LOW-HIGH` or `*`). Empty: this
    /// host's own addresses (its `[[host]]` entry) and loopback, any port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// This node's exit policy: streams may also be connected to
    /// destinations outside the overlay that it accepts, one line each,
    /// `accept RULE` or `reject RULE` with RULE as in `allow` (`*` for
    /// every address), first match decides, the end refuses. Empty: this
    /// node is no exit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_policy: Vec<String>,
    /// Every exit of the topology and its policy, so an edge can choose
    /// one for a destination outside the overlay without asking anyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit: Vec<ExitSpec>,
    /// Certificates instead of `lsa_secret` / `lsa_key`: the link-state
    /// secret from this node's key file, the others' keys from the
    /// members' certificates that the CA signed and has not revoked
    /// ([`crate::identity`]). Read when the file is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<crate::identity::IdentitySpec>,
    /// The file this was loaded from (named in errors about its values).
    #[serde(skip)]
    pub path: Option<PathBuf>,
    /// Ports left out when it was loaded, and why (a neighbour without a
    /// valid certificate).
    #[serde(skip)]
    pub refused_ports: Vec<String>,
    /// The text it was loaded from (to find a bad value's line).
    #[serde(skip)]
    pub source: String,
    /// With an `[identity]`: the CA, the revocation list, this node's
    /// certificate and link secret as the agent takes them (filled in at
    /// load, never written).
    #[serde(skip)]
    pub certified: guest_agent::node::IdentityConfig,
}

/// An exit node of the topology and the policy it applies.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExitSpec {
    /// The exit's node id.
    pub node: NodeId,
    /// Its `exit_policy` lines.
    pub policy: Vec<String>,
}

fn default_protocol() -> String {
    "shortest".into()
}

fn default_onion_period() -> u32 {
    guest_agent::onion::rotation::DEFAULT_PERIOD_S
}

/// Five minutes: long enough for an app's own idle connections (SSH,
/// databases) with keepalives every 100 s; short enough that a dead edge's
/// streams do not hold a destination's places for long.
pub const DEFAULT_IDLE_TIMEOUT_S: u32 = 300;
/// Bounds of `stream_idle_timeout_s`.
pub const IDLE_TIMEOUT_RANGE_S: std::ops::RangeInclusive<u32> = 3..=86_400;

fn default_idle_timeout() -> u32 {
    DEFAULT_IDLE_TIMEOUT_S
}

/// Longest onion key period: a week (what a compromise opens reaches back
/// two).
pub const MAX_ONION_PERIOD_S: u32 = 7 * 24 * 3600;

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut m = [0u8; 6];
    if parts.len() != 6 {
        return Err(format!("{s:?} is not a MAC address"));
    }
    for (o, p) in m.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).map_err(|_| format!("{s:?} is not a MAC address"))?;
    }
    Ok(m)
}

fn parse_key(s: &str) -> Result<[u8; 32], String> {
    if s.is_empty() {
        return Err("a port has no link key: give `key`, or an [identity] to agree one from certificates".into());
    }
    vmm::random::parse_hex32(s, "a link key")
}

/// A secret that may be left out (empty: all zero, the agent's "none").
fn optional_secret(hex: &str, name: &str) -> Result<[u8; 32], NodeFileError> {
    match hex {
        "" => Ok([0; 32]),
        s => vmm::random::parse_hex32(s, name).map_err(NodeFileError::Invalid),
    }
}

/// `(node, key)` of hex public keys, each named `what` in errors.
fn public_keys(specs: &[PublicKeySpec], what: &str) -> Result<Vec<(NodeId, [u8; 32])>, String> {
    specs
        .iter()
        .map(|k| Ok((k.node, vmm::random::parse_hex32(&k.public, &format!("{what} of node {}", k.node))?)))
        .collect()
}

impl NodeFile {
    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, NodeFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| NodeFileError::Read { path: path.into(), source })?;
        let mut file = Self::parse(path, &text)?;
        file.path = Some(path.to_path_buf());
        file.source = text;
        let me = file.id;
        for p in &mut file.port {
            p.fill_defaults(me);
        }
        file.take_identity(path)?;
        // Every value is checked now, so a bad one is named with its line
        // before anything starts.
        file.node_config()?;
        file.allow_policy()?;
        file.exits()?;
        Ok(file)
    }

    /// `e` with this file's path and, for a value it can place, its line.
    fn located(&self, e: NodeFileError) -> NodeFileError {
        match (e, &self.path) {
            (NodeFileError::At(spot, msg), Some(p)) => {
                NodeFileError::Value { path: p.clone(), line: spot.line_in(&self.source), msg }
            }
            (NodeFileError::Invalid(m), Some(p)) => NodeFileError::Invalid(format!("{}: {m}", p.display())),
            (e, _) => e,
        }
    }

    /// With an `[identity]`: checks it and fills in the link-state keys
    /// from it; a port to a neighbour without a valid certificate (not a
    /// member, revoked, expired) is an error.
    fn take_identity(&mut self, path: &Path) -> Result<(), NodeFileError> {
        let Some(spec) = &self.identity else { return Ok(()) };
        let invalid = |msg: String| NodeFileError::Invalid(format!("{}: {msg}", path.display()));
        if !self.lsa_secret.is_empty() || !self.lsa_key.is_empty() {
            return Err(invalid("give either [identity] or lsa_secret and lsa_key, not both".into()));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let m = crate::identity::load_membership(spec, base, self.id).map_err(|e| invalid(e.to_string()))?;
        for r in &m.refused {
            tracing::warn!("node {}: member certificate refused: {r}", self.id);
        }
        // A neighbour whose certificate is refused (revoked, expired,
        // another CA's) gets no link: its port is left out (the rest of
        // the node runs on). One of whom there is no certificate here
        // keys the link from its own hello ([`KeyScope::Certified`]).
        let refused = |peer: NodeId| m.refused_nodes.contains(&peer) && !m.members.iter().any(|(n, _, _)| *n == peer);
        for p in self.port.iter().filter(|p| refused(p.peer)) {
            let why = format!(
                "port {}: neighbour {}'s certificate is refused (revoked, expired or another CA's): this node \
                 will not link to it",
                p.iface, p.peer
            );
            tracing::warn!("node {}: {why}", self.id);
            self.refused_ports.push(why);
        }
        self.port.retain(|p| !refused(p.peer));
        if self.port.is_empty() {
            return Err(invalid(format!(
                "no port is left: no neighbour has a valid certificate ({})",
                self.refused_ports.join("; ")
            )));
        }
        for p in self.port.iter_mut().filter(|p| p.key.is_empty()) {
            let Some((_, _, public)) = m.members.iter().find(|(n, _, _)| *n == p.peer) else {
                tracing::info!(
                    "node {}: port {}: no certificate of neighbour {} here; the link is keyed from its hello",
                    self.id,
                    p.iface,
                    p.peer
                );
                continue;
            };
            let key = crate::identity::link_key(&m.link_secret, public, self.id, p.peer).ok_or_else(|| {
                invalid(format!("port {}: neighbour {}'s certified link key yields no shared key", p.iface, p.peer))
            })?;
            p.key = vmm::random::hex(&key);
        }
        // Members the config does not list as hosts are known by their
        // certificates' names and addresses (a node that joined).
        for (node, name, addrs) in &m.hosts {
            if !self.host.iter().any(|h| h.node == *node || h.name == *name) {
                self.host.push(HostAddrs { name: name.clone(), node: *node, addrs: addrs.clone() });
            }
        }
        self.certified = m.agent.clone();
        self.lsa_secret = vmm::random::hex(&m.signing_secret);
        self.lsa_key =
            m.members.iter().map(|(node, k, _)| PublicKeySpec { node: *node, public: vmm::random::hex(k) }).collect();
        Ok(())
    }

    /// Parses `text`, read from `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, NodeFileError> {
        toml::from_str(text).map_err(|e| NodeFileError::Parse { path: path.into(), msg: e.to_string() })
    }

    /// The configured topology's links, as routing takes them.
    pub fn links(&self) -> Vec<Link> {
        self.link
            .iter()
            .map(|l| Link { a: l.a, b: l.b, latency_us: l.latency_us, bandwidth_mbps: l.bandwidth_mbps })
            .collect()
    }

    /// How a person knows node `id`: its host name, else `nID`.
    pub fn host_label(&self, id: NodeId) -> String {
        self.host.iter().find(|h| h.node == id).map_or_else(|| format!("n{id}"), |h| h.name.clone())
    }

    /// The node id of host `name`.
    pub fn node_of_host(&self, name: &str) -> Option<NodeId> {
        self.host.iter().find(|h| h.name == name).map(|h| h.node)
    }

    /// Where this node's streams may be connected ([`NodeFile::allow`]).
    pub fn allow_policy(&self) -> Result<AllowPolicy, NodeFileError> {
        let own = self.host.iter().filter(|h| h.node == self.id).flat_map(|h| h.addrs.iter().cloned());
        let at = |key| move |m| self.located(NodeFileError::At(Spot::Key(key), m));
        let allow = AllowPolicy::from_config(&self.allow, &own.collect::<Vec<_>>()).map_err(at("allow"))?;
        Ok(allow.with_exit(ExitPolicy::parse(&self.exit_policy).map_err(at("exit_policy"))?))
    }

    /// The topology's exits and their policies (what an edge chooses
    /// from for a destination outside the overlay).
    pub fn exits(&self) -> Result<Vec<(NodeId, ExitPolicy)>, NodeFileError> {
        self.exit
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let at = |m: String| self.located(NodeFileError::At(Spot::Entry("exit", i, "policy"), m));
                let p = ExitPolicy::parse(&e.policy).map_err(|m| at(format!("[[exit]] node {}: {m}", e.node)))?;
                if !p.is_exit() {
                    return Err(at(format!("[[exit]] node {}: an empty policy", e.node)));
                }
                Ok((e.node, p))
            })
            .collect()
    }

    /// The agent's view of it.
    pub fn node_config(&self) -> Result<NodeConfig, NodeFileError> {
        self.agent_config().map_err(|e| self.located(e))
    }

    fn agent_config(&self) -> Result<NodeConfig, NodeFileError> {
        let at = |spot: Spot, msg: String| NodeFileError::At(spot, msg);
        if is_reserved_source(self.id) {
            return Err(at(Spot::Key("id"), format!("node id {:#x} is reserved for console records", self.id)));
        }
        if let Some(i) = self.port.iter().position(|p| is_reserved_source(p.peer)) {
            let msg = format!("node id {:#x} is reserved for console records", self.port[i].peer);
            return Err(at(Spot::Entry("port", i, "peer"), msg));
        }
        if self.port.is_empty() || self.port.len() > MAX_PORTS {
            return Err(at(Spot::Key("port"), format!("a node has 1 to {MAX_PORTS} ports, not {}", self.port.len())));
        }
        let ports = self
            .port
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let spot = |key| move |e: String| at(Spot::Entry("port", i, key), format!("port {}: {e}", p.iface));
                let reserved = guest_agent::wire::RESERVED_LINK_ID;
                // An explicit id without a span has one id (as before spans
                // had defaults of their own).
                let (tx_span, rx_span) = (p.tx_link_span.max(1), p.rx_link_span.max(1));
                let span_ok = |first: u32, span: u32| first.checked_add(span - 1).is_some_and(|l| l < reserved);
                for (key, first, span) in [("tx_link_id", p.tx_link_id, tx_span), ("rx_link_id", p.rx_link_id, rx_span)]
                {
                    if !span_ok(first, span) {
                        return Err(spot(key)(format!(
                            "link ids must be given or left to their defaults (a loaded file), and below {reserved:#x}"
                        )));
                    }
                }
                if !p.mac.is_empty() {
                    parse_mac(&p.mac).map_err(spot("mac"))?;
                }
                // Certified and no key: agreed from the neighbour's hello.
                let (scope, key) = if p.key.is_empty() && !self.certified.cert.is_empty() {
                    (KeyScope::Certified, [0; 32])
                } else {
                    (KeyScope::Link, parse_key(&p.key).map_err(spot("key"))?)
                };
                Ok(PortConfig {
                    peer: p.peer,
                    peer_mac: parse_mac(&p.peer_mac).map_err(spot("peer_mac"))?,
                    tx_link_id: p.tx_link_id,
                    rx_link_id: p.rx_link_id,
                    rx_link_span: rx_span,
                    scope,
                    key,
                })
            })
            .collect::<Result<Vec<_>, NodeFileError>>()?;
        let links = self.links();
        let protocol = match policy::protocols::by_name(&self.protocol) {
            Some(p) if p.name == "onion" => {
                return Err(at(
                    Spot::Key("protocol"),
                    "protocol \"onion\" carries streams from an edge (pathvm edge), not datagrams a node \
                     originates: use shortest, widest, multipath or redundant"
                        .into(),
                ))
            }
            Some(p) => p.wire_id,
            None => {
                return Err(at(
                    Spot::Key("protocol"),
                    format!("unknown protocol {:?}: use shortest, widest, multipath or redundant", self.protocol),
                ))
            }
        };
        if !(1..=MAX_ONION_PERIOD_S).contains(&self.onion_key_period_s) {
            return Err(at(
                Spot::Key("onion_key_period_s"),
                format!(
                    "onion_key_period_s = {} must be 1-{MAX_ONION_PERIOD_S} (seconds between onion key rotations; \
                 a key opens what was sealed to it for two periods)",
                    self.onion_key_period_s
                ),
            ));
        }
        if !IDLE_TIMEOUT_RANGE_S.contains(&self.stream_idle_timeout_s) {
            return Err(at(
                Spot::Key("stream_idle_timeout_s"),
                format!(
                    "stream_idle_timeout_s = {} must be {}-{} (seconds a stream may go unheard)",
                    self.stream_idle_timeout_s,
                    IDLE_TIMEOUT_RANGE_S.start(),
                    IDLE_TIMEOUT_RANGE_S.end()
                ),
            ));
        }
        let lsa_secret = optional_secret(&self.lsa_secret, "lsa_secret").map_err(|e| match e {
            NodeFileError::Invalid(m) => at(Spot::Key("lsa_secret"), m),
            e => e,
        })?;
        let keys_at = |i: usize, m| at(Spot::Entry("lsa_key", i, "public"), m);
        let lsa_keys = public_keys(&self.lsa_key, "link-state key").map_err(|m| keys_at(0, m))?;
        if let Some(i) = lsa_keys.iter().position(|(_, k)| !lsa_sign::is_public_key(k)) {
            return Err(keys_at(i, format!("link-state key of node {} is not an Ed25519 public key", lsa_keys[i].0)));
        }
        if lsa_secret != [0; 32] {
            let public = lsa_sign::public_key(&lsa_secret);
            if lsa_keys.iter().any(|&(n, k)| n == self.id && k != public) {
                return Err(at(
                    Spot::Key("lsa_secret"),
                    format!("lsa_secret does not match node {}'s own lsa_key: the file mixes two topologies", self.id),
                ));
            }
        }
        let cfg = NodeConfig {
            me: self.id,
            hop_limit: self.hop_limit,
            protocol,
            ports,
            links,
            epoch_us: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_micros() as u64),
            seed: vmm::random::bytes(),
            onion_period_s: self.onion_key_period_s,
            idle_timeout_s: self.stream_idle_timeout_s,
            lsa_secret,
            lsa_keys,
            identity: self.certified.clone(),
        };
        if cfg.encoded_len() > guest_agent::boot::ARGS_LEN {
            return Err(NodeFileError::Invalid(format!(
                "topology too large for the boot block ({} of {} bytes)",
                cfg.encoded_len(),
                guest_agent::boot::ARGS_LEN
            )));
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_keys_parse_or_say_why() {
        assert_eq!(parse_mac("02:50:00:01:00:02"), Ok([2, 0x50, 0, 1, 0, 2]));
        assert!(parse_mac("02:50").is_err());
        assert!(parse_mac("zz:50:00:01:00:02").is_err());
        assert_eq!(parse_key(&"ab".repeat(32)), Ok([0xab; 32]));
        assert!(parse_key("abc").is_err());
    }

    #[test]
    fn config_converts_to_the_agents_view() {
        let f = NodeFile {
            id: 2,
            hop_limit: 8,
            mem_mib: 64,
            backend: PortBackend::VhostUser,
            protocol: "widest".into(),
            host: vec![],
            port: vec![PortSpec {
                iface: "ln0".into(),
                tap: "tap0".into(),
                mac: "02:50:00:00:00:02".into(),
                peer: 1,
                peer_mac: "02:50:00:00:00:01".into(),
                tx_link_id: 2,
                tx_link_span: 1,
                rx_link_id: 1,
                rx_link_span: 1,
                key: "01".repeat(32),
            }],
            link: vec![TopoLinkSpec { a: 1, b: 2, latency_us: 5, bandwidth_mbps: 10 }],
            onion_key_period_s: 30,
            stream_idle_timeout_s: 45,
            lsa_secret: "04".repeat(32),
            lsa_key: vec![
                PublicKeySpec { node: 1, public: vmm::random::hex(&lsa_sign::public_key(&[5; 32])) },
                PublicKeySpec { node: 2, public: vmm::random::hex(&lsa_sign::public_key(&[4; 32])) },
            ],
            allow: vec![],
            exit_policy: vec![],
            exit: vec![],
            identity: None,
            path: None,
            refused_ports: Vec::new(),
            certified: Default::default(),
            source: String::new(),
        };
        let c = f.node_config().unwrap();
        assert_eq!((c.me, c.ports[0].peer, c.ports[0].key[0], c.links.len(), c.protocol), (2, 1, 1, 1, 2));
        assert_eq!((c.onion_period_s, c.idle_timeout_s), (30, 45));
        let too_short = NodeFile { stream_idle_timeout_s: 1, ..f.clone() };
        assert!(too_short.node_config().unwrap_err().to_string().contains("stream_idle_timeout_s = 1"));
        assert_eq!((c.lsa_secret, c.lsa_keys[0]), ([4; 32], (1, lsa_sign::public_key(&[5; 32]))));
        let other = NodeFile { lsa_secret: "06".repeat(32), ..f.clone() };
        assert!(other.node_config().unwrap_err().to_string().contains("does not match node 2's own lsa_key"));
        let mut no_point = f.clone();
        // y = 2 has no x on the curve.
        no_point.lsa_key[0].public = format!("02{}", "00".repeat(31));
        assert!(
            no_point.node_config().unwrap_err().to_string().contains("not an Ed25519 public key"),
            "{:?}",
            no_point.node_config()
        );
        assert_ne!(c.seed, f.node_config().unwrap().seed, "a fresh seed per boot");
        let bad = NodeFile { protocol: "onion".into(), ..f.clone() };
        assert!(bad.node_config().unwrap_err().to_string().contains("carries streams from an edge"));
        let bad = NodeFile { id: 0xfffe, ..f.clone() };
        assert!(bad.node_config().unwrap_err().to_string().contains("reserved for console records"));
        let bad = NodeFile { onion_key_period_s: 0, ..f.clone() };
        assert!(bad.node_config().unwrap_err().to_string().contains("onion_key_period_s = 0 must be 1-604800"));
        let bad = NodeFile { lsa_secret: "zz".into(), ..f.clone() };
        assert!(bad.node_config().unwrap_err().to_string().contains("lsa_secret must be 64 hex digits"));
        let text = toml::to_string(&f).unwrap();
        let back: NodeFile = toml::from_str(&text).unwrap();
        assert_eq!(back.port[0].tap, "tap0");
    }

    #[test]
    fn a_bad_value_is_named_with_its_file_and_line() {
        let dir = std::env::temp_dir().join(format!("pathvm-config-lines-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = r#"id = 2
hop_limit = 8
mem_mib = 64
protocol = "shortest"

[[port]]
iface = "eth0"
peer = 1
key = "0101010101010101010101010101010101010101010101010101010101010101"

[[port]]
iface = "eth1"
peer = 3
key = "0202020202020202020202020202020202020202020202020202020202020202"

[[link]]
a = 1
b = 2
latency_us = 100
bandwidth_mbps = 1000
"#;
        let path = dir.join("node.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            NodeFile::load(&path).map(|_| ()).map_err(|e| e.to_string())
        };
        assert_eq!(load(good), Ok(()));
        let cases = [
            (good.replace("\"shortest\"", "\"fastest\""), 4, "unknown protocol"),
            (good.replace("peer = 3\n", "peer = 3\npeer_mac = \"02:00\"\n"), 14, "port eth1"),
            (good.replace("0202", "zz02"), 14, "port eth1"),
            (
                good.replace(
                    "protocol = \"shortest\"\n",
                    "protocol = \"shortest\"\nexit_policy = [\"accept nowhere\"]\n",
                ),
                5,
                "nowhere",
            ),
            (good.replace("mem_mib = 64", "mem_mib = 64\nstream_idle_timeout_s = 1"), 4, "stream_idle_timeout_s = 1"),
        ];
        for (text, line, what) in cases {
            let err = load(&text).unwrap_err();
            let at = format!("node config {}, line {line}: ", path.display());
            assert!(err.starts_with(&at) && err.contains(what), "{err}\n--- wanted {at}…{what} in\n{text}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
