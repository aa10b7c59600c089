//! Choosing a routing protocol for a connection, and saying why.

use std::fmt;

use thiserror::Error;

use crate::criteria::{Criteria, Property};
use crate::preference::Preference;
use crate::protocols::{ProtocolProfile, PROTOCOLS};

/// One protocol's line in the decision table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The protocol.
    pub protocol: &'static ProtocolProfile,
    /// Preferred levels minus avoided levels.
    pub score: i32,
    /// Why it cannot be used, if it cannot.
    pub refused: Option<String>,
}

/// The outcome of a selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What was asked.
    pub criteria: Criteria,
    /// Every protocol, scored or refused.
    pub rows: Vec<Row>,
    /// The choice.
    pub chosen: &'static ProtocolProfile,
}

/// No protocol satisfies the criteria.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("no routing protocol meets the criteria ({criteria}): {}", reasons.join("; "))]
pub struct Refusal {
    /// What was asked.
    pub criteria: Criteria,
    /// Why each protocol was refused.
    pub reasons: Vec<String>,
}

fn word(level: u8) -> &'static str {
    match level {
        0 => "none",
        1 => "weak",
        2 => "good",
        _ => "strong",
    }
}

fn score(p: &'static ProtocolProfile, c: &Criteria) -> Row {
    let mut s = 0i32;
    let mut refused = None;
    for prop in Property::ALL {
        let level = p.level(prop);
        match c.get(prop) {
            Preference::Require if level < 2 && refused.is_none() => {
                refused = Some(format!("{}: {prop} is required, it offers {}", p.name, word(level)));
            }
            Preference::Prohibit if level > 0 && refused.is_none() => {
                refused = Some(format!("{}: {prop} is prohibited, it provides {}", p.name, word(level)));
            }
            Preference::Prefer => s += level as i32,
            Preference::Avoid => s -= level as i32,
            _ => {}
        }
    }
    if !c.avoid_nodes.is_empty() && !p.avoids_relays && refused.is_none() {
        refused = Some(format!("{}: routes hop by hop, so it cannot keep relays out of the path (avoid)", p.name));
    }
    if let Some(h) = c.max_hops {
        if h < p.min_hops && refused.is_none() {
            refused = Some(format!("{}: needs at least {} hops, {h} allowed", p.name, p.min_hops));
        }
    }
    Row { protocol: p, score: s, refused }
}

/// Scores every protocol against `criteria` and picks the best usable one
/// (ties go to the earlier protocol in [`PROTOCOLS`]).
pub fn select(criteria: &Criteria) -> Result<Decision, Refusal> {
    let rows: Vec<Row> = PROTOCOLS.iter().map(|p| score(p, criteria)).collect();
    let best = rows.iter().filter(|r| r.refused.is_none()).fold(None::<&Row>, |best, r| match best {
        Some(b) if b.score >= r.score => Some(b),
        _ => Some(r),
    });
    match best {
        Some(b) => Ok(Decision { criteria: criteria.clone(), chosen: b.protocol, rows }),
        None => {
            Err(Refusal { criteria: criteria.clone(), reasons: rows.into_iter().filter_map(|r| r.refused).collect() })
        }
    }
}

impl Decision {
    /// One line: the choice and the reason.
    pub fn summary(&self) -> String {
        let row = self.rows.iter().find(|r| r.protocol == self.chosen).map_or(0, |r| r.score);
        format!("{} (score {row:+}; {}) for criteria {}", self.chosen.name, self.chosen.summary, self.criteria)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "criteria: {}", self.criteria)?;
        write!(f, "{:<10}", "protocol")?;
        for p in Property::ALL {
            write!(f, " {:<11}", p.name())?;
        }
        writeln!(f, " {:>5}  decision", "score")?;
        for r in &self.rows {
            write!(f, "{:<10}", r.protocol.name)?;
            for p in Property::ALL {
                write!(f, " {:<11}", word(r.protocol.level(p)))?;
            }
            let d = match (&r.refused, r.protocol == self.chosen) {
                (Some(why), _) => format!("refused: {}", why.split_once(": ").map_or(why.as_str(), |x| x.1)),
                (None, true) => "CHOSEN".to_string(),
                (None, false) => "usable".to_string(),
            };
            writeln!(f, " {:>+5}  {d}", r.score)?;
        }
        write!(f, "chosen: {}", self.summary())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Criteria {
        Criteria::parse(s).unwrap()
    }

    #[test]
    fn latency_requirement_picks_shortest() {
        let d = select(&c("latency=require")).unwrap();
        assert_eq!(d.chosen.name, "shortest");
        assert!(d.to_string().contains("CHOSEN"));
    }

    #[test]
    fn no_criteria_picks_the_first_usable() {
        assert_eq!(select(&Criteria::default()).unwrap().chosen.name, "shortest");
    }

    #[test]
    fn unmet_requirement_refuses_with_every_reason() {
        let e = select(&c("anonymity=require,latency=require")).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("shortest: anonymity is required, it offers none"), "{msg}");
        assert!(msg.contains("onion: latency is required, it offers none"), "{msg}");
    }

    #[test]
    fn avoiding_relays_rules_out_hop_by_hop_protocols() {
        let d = select(&c("latency=prefer,avoid=12")).unwrap();
        assert!(d.chosen.avoids_relays, "{}", d.chosen.name);
        let row = d.rows.iter().find(|r| r.protocol.name == "shortest").unwrap();
        assert!(row.refused.as_deref().is_some_and(|r| r.contains("cannot keep relays out")), "{row:?}");
    }

    #[test]
    fn anonymity_requirement_picks_onion() {
        assert_eq!(select(&c("anonymity=require")).unwrap().chosen.name, "onion");
    }

    #[test]
    fn prohibition_refuses_protocols_that_provide_it() {
        let e = select(&c("reliability=prohibit")).unwrap_err();
        assert!(e.to_string().contains("reliability is prohibited"), "{e}");
    }

    #[test]
    fn hop_limit_refuses_too_long_protocols() {
        let row = score(crate::protocols::by_name("onion").unwrap(), &c("hops=3"));
        assert!(row.refused.is_some());
    }

    #[test]
    fn preferences_add_and_avoidances_subtract() {
        let shortest = crate::protocols::by_name("shortest").unwrap();
        assert_eq!(score(shortest, &c("latency=prefer,bandwidth=avoid")).score, 3 - 1);
    }
}
