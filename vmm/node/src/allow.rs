//! Which services a stream ending at this node may be connected to.
//!
//! The OPEN a stream carries names its target; the node connects that
//! target and nothing else, and only when every address it resolves to
//! that is used lies within the node's `allow` list. Without a list a node
//! connects services on its own host only: its addresses in the topology
//! and loopback, any port. An exit to the rest of the network is a
//! separate, explicit policy ([`crate::exit_policy`]), checked beside it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;

use crate::exit_policy::ExitPolicy;

/// One `allow` entry: `ADDR/PREFIX:PORTS`, where PORTS is `N`, `LOW-HIGH`
/// or `*` (e.g. `10.0.0.0/8:80`, `127.0.0.1/32:*`, `[::1]/128:1-1023`);
/// ADDR/PREFIX may be `*`, every IPv4 and IPv6 address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    /// `None`: every address of both families.
    net: Option<IpAddr>,
    prefix: u8,
    ports: RangeInclusive<u16>,
}

impl AllowRule {
    /// Parses one entry; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("entry {s:?}: {why} (write ADDR/PREFIX:PORT, ADDR/PREFIX:LOW-HIGH or ADDR/PREFIX:*; ADDR/PREFIX may be *)")
        };
        let (net, ports) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
        let (net, prefix) = if net == "*" {
            (None, 0)
        } else {
            let (addr, prefix) = net.split_once('/').ok_or_else(|| bad("no /PREFIX"))?;
            let addr = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(addr);
            let net: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            let prefix: u8 = prefix.parse().ok().filter(|p| *p <= max).ok_or_else(|| bad("prefix out of range"))?;
            (Some(net), prefix)
        };
        let port = |p: &str| p.parse::<u16>().map_err(|_| bad("not a port"));
        let ports = match ports {
            "*" => 0..=u16::MAX,
            p => match p.split_once('-') {
                Some((lo, hi)) => port(lo)?..=port(hi)?,
                None => port(p)?..=port(p)?,
            },
        };
        if ports.is_empty() {
            return Err(bad("empty port range"));
        }
        Ok(Self { net, prefix, ports })
    }

    /// Any port of `addr` alone.
    pub fn host(addr: IpAddr) -> Self {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Self { net: Some(addr), prefix, ports: 0..=u16::MAX }
    }

    /// Whether `to` lies within the rule.
    pub fn allows(&self, to: &SocketAddr) -> bool {
        self.covers_port(to.port()) && self.covers_addr(to.ip())
    }

    /// Whether the rule's ports include `port`.
    pub fn covers_port(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }

    /// Whether the rule holds for every address (so, for a name not yet
    /// resolved, its verdict on a port is final).
    pub fn every_address(&self) -> bool {
        self.net.is_none()
    }

    fn covers_addr(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (None, _) => true,
            (Some(IpAddr::V4(n)), IpAddr::V4(a)) => {
                masked(u32::from(n).into(), self.prefix, 32) == masked(u32::from(a).into(), self.prefix, 32)
            }
            (Some(IpAddr::V6(n)), IpAddr::V6(a)) => {
                masked(u128::from(n), self.prefix, 128) == masked(u128::from(a), self.prefix, 128)
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for AllowRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.net {
            None => f.write_str("*")?,
            Some(IpAddr::V4(n)) => write!(f, "{n}/{}", self.prefix)?,
            Some(IpAddr::V6(n)) => write!(f, "[{n}]/{}", self.prefix)?,
        }
        match (*self.ports.start(), *self.ports.end()) {
            (0, u16::MAX) => f.write_str(":*"),
            (lo, hi) if lo == hi => write!(f, ":{lo}"),
            (lo, hi) => write!(f, ":{lo}-{hi}"),
        }
    }
}

/// Loopback, unspecified, link-local or multicast (IPv4-mapped included).
fn is_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback() || a.is_unspecified() || a.is_link_local() || a.is_multicast(),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => is_local(IpAddr::V4(v4)),
            None => a.is_loopback() || a.is_unspecified() || a.is_multicast() || (a.segments()[0] & 0xffc0) == 0xfe80,
        },
    }
}

fn masked(v: u128, prefix: u8, bits: u32) -> u128 {
    let keep = u32::from(prefix).min(bits);
    if keep == 0 {
        0
    } else {
        v >> (bits - keep)
    }
}

/// The node's rules; a target is connected if any rule allows it, or,
/// on an exit, if its exit policy accepts it.
#[derive(Debug, Clone, Default)]
pub struct AllowPolicy {
    rules: Vec<AllowRule>,
    exit: ExitPolicy,
}

impl AllowPolicy {
    /// From the config's entries, or, when there are none, this host's
    /// own `addrs` and loopback.
    pub fn from_config(entries: &[String], own: &[String]) -> Result<Self, String> {
        if !entries.is_empty() {
            let rules = entries.iter().map(|e| AllowRule::parse(e).map_err(|m| format!("allow {m}")));
            return Ok(Self { rules: rules.collect::<Result<_, _>>()?, exit: ExitPolicy::default() });
        }
        let mut rules = vec![
            AllowRule { net: Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0))), prefix: 8, ports: 0..=u16::MAX },
            AllowRule::host(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ];
        for a in own {
            let ip: IpAddr = a.parse().map_err(|_| format!("host address {a:?} is not an IP address"))?;
            rules.push(AllowRule::host(ip));
        }
        Ok(Self { rules, exit: ExitPolicy::default() })
    }

    /// The same policy on an exit: targets its `exit` policy accepts are
    /// connected too.
    pub fn with_exit(self, exit: ExitPolicy) -> Self {
        Self { exit, ..self }
    }

    /// `Ok` if a stream that named its target by a host name (so came
    /// to this node as an exit) may be connected to `to`, which the name
    /// resolved to: only the exit policy decides, and never for this
    /// host's loopback, unspecified, link-local or multicast addresses,
    /// whatever the policy says (as Tor's ExitPolicyRejectPrivate): a name
    /// anyone can point at 127.0.0.1 must not open the exit's own
    /// services.
    pub fn check_named(&self, to: &SocketAddr) -> Result<(), String> {
        if !self.exit.is_exit() {
            return Err(format!("{to}: this node is no exit, and names are for exits to resolve"));
        }
        if is_local(to.ip()) {
            return Err(format!("{to}: a name resolved to a local address, which an exit never connects"));
        }
        self.exit.verdict(to).map(|_| ()).map_err(|rule| format!("{to} is refused by this exit's policy ({rule})"))
    }

    /// Whether this node is an exit (it also answers name lookups).
    pub fn is_exit(&self) -> bool {
        self.exit.is_exit()
    }

    /// Whether streams may be connected to `to`.
    pub fn allows(&self, to: &SocketAddr) -> bool {
        self.check(to).is_ok()
    }

    /// `Ok` if streams may be connected to `to`; else why not, for the
    /// node's events.
    pub fn check(&self, to: &SocketAddr) -> Result<(), String> {
        if self.rules.iter().any(|r| r.allows(to)) {
            return Ok(());
        }
        match self.exit.verdict(to) {
            Ok(_) => Ok(()),
            Err(rule) if self.exit.is_exit() => Err(format!("{to} is refused by this exit's policy ({rule})")),
            Err(_) => Err(format!("{to} is not in this node's allow list (and this node is no exit)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn rules_match_by_prefix_and_port() {
        let r = AllowRule::parse("10.1.0.0/16:80-81").unwrap();
        assert!(r.allows(&sa("10.1.200.3:80")) && r.allows(&sa("10.1.0.1:81")));
        assert!(!r.allows(&sa("10.2.0.1:80")) && !r.allows(&sa("10.1.0.1:82")));
        assert!(!r.allows(&sa("[::1]:80")));
        let any = AllowRule::parse("0.0.0.0/0:*").unwrap();
        assert!(any.allows(&sa("192.0.2.1:1")));
        let v6 = AllowRule::parse("[fd00::]/8:443").unwrap();
        assert!(v6.allows(&sa("[fd12::5]:443")) && !v6.allows(&sa("[fe80::1]:443")));
        let every = AllowRule::parse("*:22").unwrap();
        assert!(every.allows(&sa("192.0.2.1:22")) && every.allows(&sa("[2001:db8::1]:22")));
        assert!(!every.allows(&sa("192.0.2.1:23")) && every.every_address());
        for s in ["10.1.0.0/16:80-81", "*:*", "[fd00::]/8:443"] {
            assert_eq!(AllowRule::parse(s).unwrap().to_string(), s, "a rule prints as it is written");
        }
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        for (s, why) in [
            ("10.0.0.0:80", "no /PREFIX"),
            ("10.0.0.0/8", "no port"),
            ("10.0.0.0/33:80", "prefix out of range"),
            ("ten/8:80", "not an IP address"),
            ("10.0.0.0/8:90-80", "empty port range"),
            ("10.0.0.0/8:http", "not a port"),
            ("*/8:80", "not an IP address"),
        ] {
            let e = AllowRule::parse(s).unwrap_err();
            assert!(e.contains(why), "{s}: {e}");
        }
    }

    #[test]
    fn a_named_target_is_the_exit_policys_alone_and_never_local() {
        let every = ExitPolicy::parse(&["accept *:*".into()]).unwrap();
        let p = AllowPolicy::from_config(&[], &["10.231.1.2".into()]).unwrap().with_exit(every);
        assert!(p.check(&sa("127.0.0.1:22")).is_ok(), "an address literal keeps the allow list");
        for local in
            ["127.0.0.1:22", "[::1]:22", "[::ffff:127.0.0.1]:22", "169.254.1.1:80", "0.0.0.0:80", "[fe80::1]:80"]
        {
            let e = p.check_named(&sa(local)).unwrap_err();
            assert!(e.contains("local address"), "{local}: {e}");
        }
        assert!(p.check_named(&sa("192.0.2.7:80")).is_ok());
        let only = ExitPolicy::parse(&["accept 10.232.0.0/16:*".into()]).unwrap();
        let p = AllowPolicy::from_config(&[], &["10.231.1.2".into()]).unwrap().with_exit(only);
        assert!(
            p.check_named(&sa("10.231.1.2:80")).unwrap_err().contains("policy"),
            "own services are not the policy's"
        );
        let none = AllowPolicy::from_config(&[], &["10.231.1.2".into()]).unwrap();
        assert!(none.check_named(&sa("10.231.1.2:80")).unwrap_err().contains("no exit"));
    }

    #[test]
    fn without_rules_only_the_own_host_and_loopback_are_allowed() {
        let p = AllowPolicy::from_config(&[], &["10.231.1.2".into()]).unwrap();
        assert!(p.allows(&sa("10.231.1.2:8080")) && p.allows(&sa("127.0.0.1:22")) && p.allows(&sa("[::1]:1")));
        assert!(!p.allows(&sa("10.231.1.1:8080")) && !p.allows(&sa("192.0.2.1:80")));
        let p = AllowPolicy::from_config(&["192.0.2.0/24:80".into()], &["10.231.1.2".into()]).unwrap();
        assert!(p.allows(&sa("192.0.2.9:80")) && !p.allows(&sa("10.231.1.2:80")), "a list replaces the default");
    }
}
