//! The topology file.

use serde::{Deserialize, Serialize};

use guest_agent::routing::{Link, NodeId, Topology};

/// A topology as written in TOML.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    /// Short name: namespaces are `NAME-HOST`.
    pub name: String,
    /// Seconds a stream may go unheard before its destination resets it
    /// (every node gets the same; request VMs keep theirs alive at a
    /// third of it). Default: `node::DEFAULT_IDLE_TIMEOUT_S`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_idle_timeout_s: Option<u32>,
    /// The hosts.
    #[serde(rename = "host")]
    pub hosts: Vec<HostSpec>,
    /// The links.
    #[serde(rename = "link")]
    pub links: Vec<LinkSpec>,
    /// Hosts that run no pathvm, each reached only through the host it
    /// hangs off: destinations outside the overlay, for exits.
    #[serde(rename = "service", default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceSpec>,
}

/// One host.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Host name (letters and digits).
    pub name: String,
    /// Overlay node id.
    pub id: NodeId,
    /// Makes the host an exit: its node connects destinations outside
    /// the overlay that these lines accept (`accept RULE` / `reject
    /// RULE`, first match decides; see `node::exit_policy`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_policy: Vec<String>,
}

/// A host that runs no pathvm: a namespace joined by a plain veth link to
/// one host of the overlay (`via`), which is its only way in or out. It
/// gets `10.232.J.2/24` and `fd00:232:J::2/64` for service link J, `via`
/// gets `.1` / `::1` and routes to it; the other hosts have no route to
/// it, so only an exit on `via` reaches it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Host name (letters and digits, unique among hosts and services).
    pub name: String,
    /// The overlay host it hangs off.
    pub via: String,
    /// Names `via`'s resolver answers with this host's addresses (its
    /// `/etc/hosts` under `ip netns exec`): how remote DNS is tested.
    #[serde(default)]
    pub names: Vec<String>,
}

/// One link between two hosts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// One end.
    pub a: String,
    /// The other end.
    pub b: String,
    /// One-way latency the routing metric assumes, µs.
    #[serde(default = "default_latency")]
    pub latency_us: u32,
    /// Capacity the routing metric assumes, Mbit/s.
    #[serde(default = "default_bandwidth")]
    pub bandwidth_mbps: u32,
    /// Shape the link to this rate with tbf (0: unshaped).
    #[serde(default)]
    pub rate_mbit: u32,
    /// Emulated one-way delay, ms. Present (even 0) means the link runs
    /// through the link emulator, so `pathvm topo set` can change it later.
    #[serde(default)]
    pub delay_ms: Option<u32>,
    /// Emulated random loss, percent (0-100); present means emulated.
    #[serde(default)]
    pub loss_percent: Option<u32>,
}

impl LinkSpec {
    /// Whether the link runs through the link emulator.
    pub fn emulated(&self) -> bool {
        self.delay_ms.is_some() || self.loss_percent.is_some()
    }
}

fn default_latency() -> u32 {
    100
}
fn default_bandwidth() -> u32 {
    1000
}

impl TopologyFile {
    /// Checks names, ids and links; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.hosts.len() < 2 {
            return Err("needs at least two hosts".into());
        }
        if let Some(t) = self.stream_idle_timeout_s.filter(|t| !node::IDLE_TIMEOUT_RANGE_S.contains(t)) {
            return Err(format!(
                "stream_idle_timeout_s = {t} must be {}-{} seconds",
                node::IDLE_TIMEOUT_RANGE_S.start(),
                node::IDLE_TIMEOUT_RANGE_S.end()
            ));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            if h.name.is_empty() || h.name.len() > 6 || !h.name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("host name {:?} must be 1-6 letters or digits", h.name));
            }
            if guest_agent::router::is_reserved_source(h.id) {
                return Err(format!(
                    "host {:?}: id {:#x} is reserved for console records; node ids go up to {:#x}",
                    h.name,
                    h.id,
                    guest_agent::node::RECORD_STREAM - 1
                ));
            }
            if self.hosts[..i].iter().any(|o| o.name == h.name || o.id == h.id) {
                return Err(format!("host {:?} (id {}) is listed twice", h.name, h.id));
            }
        }
        if self.links.len() > 255 {
            return Err("at most 255 links".into());
        }
        for (i, l) in self.links.iter().enumerate() {
            for end in [&l.a, &l.b] {
                if !self.hosts.iter().any(|h| &h.name == end) {
                    return Err(format!("link {i} names unknown host {end:?}"));
                }
            }
            if l.a == l.b {
                return Err(format!("link {i} joins {:?} to itself", l.a));
            }
            if self.links[..i].iter().any(|o| (o.a == l.a && o.b == l.b) || (o.a == l.b && o.b == l.a)) {
                return Err(format!("link {i} duplicates an earlier link between {:?} and {:?}", l.a, l.b));
            }
            if l.loss_percent.is_some_and(|p| p > 100) {
                return Err(format!("link {i}: loss_percent must be 0-100"));
            }
        }
        for h in &self.hosts {
            node::exit_policy::ExitPolicy::parse(&h.exit_policy).map_err(|e| format!("host {:?}: {e}", h.name))?;
        }
        for (i, s) in self.services.iter().enumerate() {
            if s.name.is_empty() || s.name.len() > 6 || !s.name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(format!("service name {:?} must be 1-6 letters or digits", s.name));
            }
            if self.hosts.iter().any(|h| h.name == s.name) || self.services[..i].iter().any(|o| o.name == s.name) {
                return Err(format!("service {:?} is named like another host or service", s.name));
            }
            if !self.hosts.iter().any(|h| h.name == s.via) {
                return Err(format!("service {:?} hangs off unknown host {:?}", s.name, s.via));
            }
            if let Some(n) = s
                .names
                .iter()
                .find(|n| n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'))
            {
                return Err(format!("service {:?}: {n:?} is not a host name", s.name));
            }
        }
        if self.services.len() > 255 {
            return Err("at most 255 services".into());
        }
        let ports_per_host = |n: &str| self.links.iter().filter(|l| l.a == n || l.b == n).count();
        if let Some(h) = self.hosts.iter().find(|h| ports_per_host(&h.name) > guest_agent::node::MAX_PORTS) {
            return Err(format!("host {:?} has more than {} links", h.name, guest_agent::node::MAX_PORTS));
        }
        // Found by fuzzing: a host on no link got a node config with no
        // port, which every node refuses to boot.
        if let Some(h) = self.hosts.iter().find(|h| ports_per_host(&h.name) == 0) {
            return Err(format!("host {:?} is on no link (every host needs at least one)", h.name));
        }
        Ok(())
    }

    /// The node id of host `name` (validated to exist).
    pub fn host_id(&self, name: &str) -> NodeId {
        self.hosts.iter().find(|h| h.name == name).map_or(0, |h| h.id)
    }

    /// The index of the link between hosts `a` and `b`, either way round.
    pub fn link_index(&self, a: &str, b: &str) -> Option<usize> {
        self.links.iter().position(|l| (l.a == a && l.b == b) || (l.a == b && l.b == a))
    }

    /// The link index between host `name` and node `peer`, and `name`'s end.
    pub fn link_between(&self, name: &str, peer: NodeId) -> Option<(usize, u8)> {
        self.links.iter().enumerate().find_map(|(i, l)| {
            if l.a == name && self.host_id(&l.b) == peer {
                Some((i, 1))
            } else if l.b == name && self.host_id(&l.a) == peer {
                Some((i, 2))
            } else {
                None
            }
        })
    }

    /// The topology routing sees.
    pub fn routing_topology(&self) -> Topology {
        Topology::new(
            self.links
                .iter()
                .map(|l| Link {
                    a: self.host_id(&l.a),
                    b: self.host_id(&l.b),
                    latency_us: l.latency_us,
                    bandwidth_mbps: l.bandwidth_mbps,
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<TopologyFile, String> {
        let f: TopologyFile = toml::from_str(s).map_err(|e| e.to_string())?;
        f.validate()?;
        Ok(f)
    }

    const LINE: &str = r#"
        name = "t"
        [[host]]
        name = "a"
        id = 1
        [[host]]
        name = "b"
        id = 2
        [[link]]
        a = "a"
        b = "b"
    "#;

    #[test]
    fn the_console_record_ids_are_no_host_ids() {
        for id in [0xfffe, 0xffff] {
            let err = parse(&LINE.replace("id = 2", &format!("id = {id}"))).unwrap_err();
            assert!(err.contains("reserved for console records"), "{err}");
        }
        assert!(parse(&LINE.replace("id = 2", "id = 65533")).is_ok());
    }

    #[test]
    fn minimal_file_parses_with_defaults() {
        let f = parse(LINE).unwrap();
        assert_eq!(f.links[0].latency_us, 100);
        assert_eq!(f.link_between("a", 2), Some((0, 1)));
        assert_eq!(f.link_between("b", 1), Some((0, 2)));
    }

    #[test]
    fn unknown_keys_and_hosts_are_errors_that_say_where() {
        let e = parse(&LINE.replace("id = 2", "id = 2\ncolour = 1")).unwrap_err();
        assert!(e.contains("colour") && e.contains("line"), "{e}");
        let e = parse(&LINE.replace("b = \"b\"", "b = \"z\"")).unwrap_err();
        assert!(e.contains("unknown host \"z\""), "{e}");
    }

    #[test]
    fn duplicates_and_self_links_are_errors() {
        assert!(parse(&LINE.replace("id = 2", "id = 1")).unwrap_err().contains("twice"));
        assert!(parse(&LINE.replace("b = \"b\"", "b = \"a\"")).unwrap_err().contains("itself"));
    }

    #[test]
    fn emulation_is_chosen_by_presence_and_checked() {
        let f = parse(&format!("{LINE}\ndelay_ms = 0")).unwrap();
        assert!(f.links[0].emulated());
        assert!(!parse(LINE).unwrap().links[0].emulated());
        let e = parse(&format!("{LINE}\nloss_percent = 150")).unwrap_err();
        assert!(e.contains("0-100"), "{e}");
        assert_eq!(f.link_index("b", "a"), Some(0));
    }
}
