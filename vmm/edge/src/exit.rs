//! Where a request goes: a host of the overlay, or an exit for a
//! destination outside it.
//!
//! A target that names a host of the topology (by name or address) goes to
//! that host's node, as before. Any other target goes to an exit: a node
//! whose exit policy may accept it, that the app does not avoid, reachable
//! from here. Host names are never resolved on this host (that lookup
//! would leak the destination to the local resolver); the name travels to
//! the exit, which resolves it and checks its policy on every address.
//! Among the candidates the nearest (lowest path latency) is taken, except
//! for an onion request, whose exit is drawn at random: an exit an
//! observer can predict from the topology would undo the circuit.

use guest_agent::routing::{NodeId, Shortest, Topology};
use node::exit_policy::{ExitPolicy, PortVerdict};
use node::NodeFile;

use crate::socks::Target;

/// The node a request goes to, and the `host:port` that node connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The destination node (a host of the overlay, or an exit).
    pub node: NodeId,
    /// What that node connects: an address, or a name it resolves.
    pub target: String,
    /// Set when the node is an exit: which, and why.
    pub exit: Option<ExitChoice>,
}

/// The exit taken for a destination outside the overlay, with reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitChoice {
    /// Its node id.
    pub node: NodeId,
    /// One line: why this exit.
    pub why: String,
    /// Every exit of the topology and what it said (`node N: ...`).
    pub rows: Vec<String>,
}

/// Why no node can take a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPlace {
    /// Not a host of the overlay, and the overlay has no exit.
    NoExit,
    /// Every exit refused it (policy, the app's avoid list, no path);
    /// one reason per exit.
    Refused(Vec<String>),
}

impl std::fmt::Display for NoPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoExit => f.write_str("not a host of this topology, and no node of it is an exit"),
            Self::Refused(rows) => write!(f, "no exit takes it: {}", rows.join("; ")),
        }
    }
}

/// The request's place: its host's node, or an exit chosen for it.
pub fn place(
    file: &NodeFile,
    exits: &[(NodeId, ExitPolicy)],
    target: &Target,
    avoid: &[NodeId],
    onion: bool,
) -> Result<Place, NoPlace> {
    // An address sent as a name (curl's socks5h does) is an address: its
    // policy verdict is final, and a bare IPv6 name would not parse as
    // `host:port` at the exit.
    let literal = match target {
        Target::Domain(d, p) => d.parse::<std::net::IpAddr>().ok().map(|ip| Target::Addr((ip, *p).into())),
        Target::Addr(_) => None,
    };
    let target = literal.as_ref().unwrap_or(target);
    if let Some((node, target)) = overlay_host(file, target) {
        return Ok(Place { node, target, exit: None });
    }
    let exit = choose(file, exits, avoid, onion, |policy| match target {
        Target::Addr(a) => policy.verdict(a),
        Target::Domain(_, port) => match policy.for_port(*port) {
            PortVerdict::Maybe(line) => Ok(format!("{line}, once the exit has resolved the name")),
            PortVerdict::Refused(line) => Err(line),
        },
    })?;
    // `[v6]:port` or `name:port`, as the exit's connector parses it.
    Ok(Place { node: exit.node, target: target.to_string(), exit: Some(exit) })
}

/// The exit that answers a name lookup (every exit answers them): the
/// nearest the app does not avoid, or for onion one drawn at random.
pub fn lookup_exit(
    file: &NodeFile,
    exits: &[(NodeId, ExitPolicy)],
    avoid: &[NodeId],
    onion: bool,
) -> Result<ExitChoice, NoPlace> {
    choose(file, exits, avoid, onion, |_| Ok("every exit answers lookups".into()))
}

/// The exit for a request that `verdict` judges per exit policy (`Ok`:
/// the accepting line).
fn choose(
    file: &NodeFile,
    exits: &[(NodeId, ExitPolicy)],
    avoid: &[NodeId],
    onion: bool,
    verdict: impl Fn(&ExitPolicy) -> Result<String, String>,
) -> Result<ExitChoice, NoPlace> {
    if exits.is_empty() {
        return Err(NoPlace::NoExit);
    }
    let table = Shortest::compute(&Topology::new(file.links()), file.id);
    let mut rows = Vec::with_capacity(exits.len());
    let mut candidates: Vec<(NodeId, u64, String)> = Vec::new();
    for (node, policy) in exits {
        let row = match (verdict(policy), avoid.contains(node), table.latency_to(*node)) {
            (Err(line), _, _) => format!("node {node}: its policy refuses it ({line})"),
            (Ok(_), true, _) => format!("node {node}: the app avoids it"),
            (Ok(_), false, None) => format!("node {node}: no path to it"),
            (Ok(line), false, Some(us)) => {
                candidates.push((*node, us, line.clone()));
                format!("node {node}: accepts ({line}), {us} µs away")
            }
        };
        rows.push(row);
    }
    if candidates.is_empty() {
        return Err(NoPlace::Refused(rows));
    }
    let n = candidates.len();
    let (node, us, line) = if onion {
        let pick = u64::from_le_bytes(vmm::random::bytes::<8>()) % n as u64;
        candidates.swap_remove(pick as usize)
    } else {
        candidates.into_iter().min_by_key(|(node, us, _)| (*us, *node)).expect("not empty")
    };
    let why = if onion {
        format!("exit node {node}, drawn at random among {n} that accept it (onion: an unpredictable exit); {line}")
    } else {
        format!("exit node {node}, the nearest of {n} that accept it ({us} µs); {line}")
    };
    Ok(ExitChoice { node, why, rows })
}

/// The host of the overlay a target names, and the `host:port` its node
/// connects.
pub fn overlay_host(file: &NodeFile, target: &Target) -> Option<(NodeId, String)> {
    let (host, port) = match target {
        Target::Addr(a) => (a.ip().to_string(), a.port()),
        Target::Domain(d, p) => (d.clone(), *p),
    };
    file.host.iter().find_map(|h| {
        if h.name == host {
            Some((h.node, format!("{}:{port}", h.addrs.first()?)))
        } else if h.addrs.contains(&host) {
            Some((h.node, format!("{host}:{port}")))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// a(1) - b(2) - c(3), b - d(4) farther; c and d exits.
    fn file() -> NodeFile {
        toml::from_str(
            r#"
            id = 1
            hop_limit = 8
            mem_mib = 64
            port = []
            [[link]]
            a = 1
            b = 2
            latency_us = 100
            bandwidth_mbps = 1000
            [[link]]
            a = 2
            b = 3
            latency_us = 100
            bandwidth_mbps = 1000
            [[link]]
            a = 2
            b = 4
            latency_us = 300
            bandwidth_mbps = 1000
            [[host]]
            name = "c"
            node = 3
            addrs = ["10.231.1.2"]
            "#,
        )
        .unwrap()
    }

    fn exits() -> Vec<(NodeId, ExitPolicy)> {
        let p = |l: &[&str]| ExitPolicy::parse(&l.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        vec![
            (3, p(&["accept 10.232.0.0/16:1024-65535", "reject *:*"])),
            (4, p(&["reject *:22", "accept 10.232.0.0/16:*", "accept *:443"])),
        ]
    }

    fn at(s: &str) -> Target {
        Target::Addr(s.parse().unwrap())
    }

    #[test]
    fn hosts_of_the_overlay_go_to_their_node_by_name_and_by_address() {
        let f = file();
        let by_name = place(&f, &exits(), &Target::Domain("c".into(), 80), &[], false).unwrap();
        assert_eq!((by_name.node, by_name.target.as_str(), by_name.exit), (3, "10.231.1.2:80", None));
        let by_addr = place(&f, &[], &at("10.231.1.2:8080"), &[], false).unwrap();
        assert_eq!((by_addr.node, by_addr.target.as_str()), (3, "10.231.1.2:8080"));
    }

    #[test]
    fn the_nearest_accepting_exit_is_taken_unless_avoided() {
        let f = file();
        let p = place(&f, &exits(), &at("10.232.0.2:8080"), &[], false).unwrap();
        assert_eq!(p.node, 3, "{p:?}");
        assert!(p.exit.as_ref().unwrap().why.contains("nearest of 2"), "{p:?}");
        let p = place(&f, &exits(), &at("10.232.0.2:8080"), &[3], false).unwrap();
        assert_eq!(p.node, 4);
        assert!(p.exit.unwrap().rows[0].contains("avoids"));
        // Only d takes a low port.
        assert_eq!(place(&f, &exits(), &at("10.232.0.2:80"), &[], false).unwrap().node, 4);
    }

    #[test]
    fn names_travel_unresolved_to_an_exit_that_may_take_the_port() {
        let f = file();
        let p = place(&f, &exits(), &Target::Domain("svc.test".into(), 443), &[], false).unwrap();
        assert_eq!((p.node, p.target.as_str()), (4, "svc.test:443"), "only d may accept port 443");
        let p = place(&f, &exits(), &Target::Domain("svc.test".into(), 8080), &[], false).unwrap();
        assert_eq!(p.node, 3);
        let v6 = place(&f, &exits(), &Target::Domain("fd00:232::2".into(), 443), &[], false).unwrap();
        assert_eq!((v6.node, v6.target.as_str()), (4, "[fd00:232::2]:443"), "a literal is an address");
    }

    #[test]
    fn refusals_say_why_per_exit() {
        let f = file();
        let Err(NoPlace::Refused(rows)) = place(&f, &exits(), &at("10.232.0.2:22"), &[], false) else {
            panic!("port 22 is refused by both");
        };
        assert!(rows[0].contains("node 3") && rows[0].contains("reject *:*"), "{rows:?}");
        assert!(rows[1].contains("node 4") && rows[1].contains("reject *:22"), "{rows:?}");
        assert_eq!(place(&f, &[], &at("192.0.2.1:80"), &[], false), Err(NoPlace::NoExit));
        let Err(NoPlace::Refused(rows)) = place(&f, &exits(), &at("10.232.0.2:8080"), &[3, 4], false) else {
            panic!("both avoided");
        };
        assert!(rows.iter().all(|r| r.contains("avoids")));
    }

    #[test]
    fn any_exit_answers_a_lookup_whatever_its_policy() {
        let f = file();
        assert_eq!(lookup_exit(&f, &exits(), &[], false).unwrap().node, 3);
        assert_eq!(lookup_exit(&f, &exits(), &[3], false).unwrap().node, 4);
        assert_eq!(lookup_exit(&f, &[], &[], false), Err(NoPlace::NoExit));
    }

    #[test]
    fn an_onion_exit_is_drawn_among_all_that_accept() {
        let f = file();
        let seen: std::collections::BTreeSet<NodeId> =
            (0..64).map(|_| place(&f, &exits(), &at("10.232.0.2:8080"), &[], true).unwrap().node).collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![3, 4]);
    }
}
