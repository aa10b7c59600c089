//! An exit's policy: which destinations outside the overlay it connects.
//!
//! Written as Tor's ExitPolicy is: an ordered list of `accept RULE` and
//! `reject RULE` lines, RULE as in [`crate::allow::AllowRule`]
//! (`ADDR/PREFIX:PORTS`, `*` for every address); the first line that
//! matches decides, and a destination no line matches is refused. A node
//! with no policy is no exit. The exit checks every address a name
//! resolves to; an edge, which never resolves names (that would leak the
//! lookup on its own host), asks [`ExitPolicy::for_port`] whether the
//! exit may accept a name on that port at all.

use std::net::SocketAddr;

use crate::allow::AllowRule;

/// What one line does with the destinations it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Connect them.
    Accept,
    /// Refuse them.
    Reject,
}

/// One line: an action and the destinations it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitRule {
    /// Accept or reject.
    pub action: Action,
    /// Which addresses and ports.
    pub rule: AllowRule,
}

impl std::fmt::Display for ExitRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let a = match self.action {
            Action::Accept => "accept",
            Action::Reject => "reject",
        };
        write!(f, "{a} {}", self.rule)
    }
}

/// An exit's ordered rules (empty: not an exit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitPolicy {
    rules: Vec<ExitRule>,
}

/// What a policy can say about a port before the name is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortVerdict {
    /// Some address on the port may be accepted (the exit decides after
    /// resolving); the first accepting line.
    Maybe(String),
    /// Every address on the port is refused, by this line (or by the end
    /// of the list).
    Refused(String),
}

/// What the end of a policy says: everything it did not accept.
const IMPLICIT_REJECT: &str = "reject *:* (the end of the policy)";

impl ExitPolicy {
    /// Parses the lines of a config; the error names the line.
    pub fn parse(lines: &[String]) -> Result<Self, String> {
        let rules = lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let bad = |why: String| format!("exit_policy line {} {l:?}: {why}", i + 1);
                let (action, rule) = l
                    .trim()
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| bad("write `accept ADDR/PREFIX:PORTS` or `reject ADDR/PREFIX:PORTS`".into()))?;
                let action = match action {
                    "accept" => Action::Accept,
                    "reject" => Action::Reject,
                    other => return Err(bad(format!("{other:?} is neither accept nor reject"))),
                };
                Ok(ExitRule { action, rule: AllowRule::parse(rule.trim()).map_err(bad)? })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// Whether this node is an exit at all.
    pub fn is_exit(&self) -> bool {
        !self.rules.is_empty()
    }

    /// `Ok(line)` if the policy accepts `to`, else `Err` with the line
    /// that refuses it.
    pub fn verdict(&self, to: &SocketAddr) -> Result<String, String> {
        match self.rules.iter().find(|r| r.rule.allows(to)) {
            Some(r) if r.action == Action::Accept => Ok(r.to_string()),
            Some(r) => Err(r.to_string()),
            None => Err(IMPLICIT_REJECT.into()),
        }
    }

    /// What the policy says about a host name on `port`, unresolved: a
    /// line for every address decides; an accepting line for some
    /// addresses makes it a maybe; a rejecting one for some addresses
    /// leaves the question to the lines after it.
    pub fn for_port(&self, port: u16) -> PortVerdict {
        for r in self.rules.iter().filter(|r| r.rule.covers_port(port)) {
            match r.action {
                Action::Accept => return PortVerdict::Maybe(r.to_string()),
                Action::Reject if r.rule.every_address() => return PortVerdict::Refused(r.to_string()),
                Action::Reject => {}
            }
        }
        PortVerdict::Refused(IMPLICIT_REJECT.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(lines: &[&str]) -> ExitPolicy {
        ExitPolicy::parse(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn the_first_matching_line_decides_and_the_end_refuses() {
        let p = policy(&["reject 10.9.0.0/16:*", "accept 10.0.0.0/8:80", "accept *:443"]);
        assert_eq!(p.verdict(&"10.1.2.3:80".parse().unwrap()), Ok("accept 10.0.0.0/8:80".into()));
        assert_eq!(p.verdict(&"10.9.2.3:80".parse().unwrap()), Err("reject 10.9.0.0/16:*".into()));
        assert_eq!(p.verdict(&"[2001:db8::1]:443".parse().unwrap()), Ok("accept *:443".into()));
        assert_eq!(p.verdict(&"10.1.2.3:22".parse().unwrap()), Err(IMPLICIT_REJECT.into()));
        assert!(p.is_exit() && !ExitPolicy::default().is_exit());
    }

    #[test]
    fn a_name_on_a_port_is_a_maybe_until_a_line_for_every_address_refuses() {
        let p = policy(&["reject 10.9.0.0/16:*", "accept 10.0.0.0/8:80", "reject *:22", "accept *:*"]);
        assert_eq!(p.for_port(80), PortVerdict::Maybe("accept 10.0.0.0/8:80".into()));
        assert_eq!(p.for_port(22), PortVerdict::Refused("reject *:22".into()));
        assert_eq!(p.for_port(25), PortVerdict::Maybe("accept *:*".into()));
        assert_eq!(policy(&["accept 10.0.0.0/8:80"]).for_port(81), PortVerdict::Refused(IMPLICIT_REJECT.into()));
    }

    #[test]
    fn bad_lines_name_themselves() {
        for (line, why) in [
            ("allow *:80", "neither accept nor reject"),
            ("accept", "write `accept"),
            ("accept 10.0.0.0:80", "no /PREFIX"),
            ("reject *:http", "not a port"),
        ] {
            let e = ExitPolicy::parse(&["accept *:443".into(), line.into()]).unwrap_err();
            assert!(e.contains("line 2") && e.contains(why), "{line}: {e}");
        }
    }
}
