//! What an application asks of its connection.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::preference::Preference;

/// A property of a routed connection an application can care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Property {
    /// Low latency.
    Latency,
    /// High bandwidth.
    Bandwidth,
    /// The path hides who talks to whom.
    Anonymity,
    /// Survives a relay or link failing.
    Reliability,
    /// Payload encrypted on the way.
    Encryption,
}

impl Property {
    /// Every property, in report order.
    pub const ALL: [Property; 5] =
        [Self::Latency, Self::Bandwidth, Self::Anonymity, Self::Reliability, Self::Encryption];

    /// The name used in criteria strings and manifests.
    pub fn name(self) -> &'static str {
        match self {
            Self::Latency => "latency",
            Self::Bandwidth => "bandwidth",
            Self::Anonymity => "anonymity",
            Self::Reliability => "reliability",
            Self::Encryption => "encryption",
        }
    }

    /// Parses a property name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == s)
    }
}

impl fmt::Display for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An application's connection criteria. Unset properties are `Ignore`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Criteria {
    /// Preference per property.
    pub prefs: BTreeMap<Property, Preference>,
    /// Relay node ids the connection must not cross.
    pub avoid_nodes: Vec<u16>,
    /// Most hops the path may have.
    pub max_hops: Option<u8>,
}

/// A criteria string that could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CriteriaError {
    /// Not `key=value`.
    #[error("{0:?} is not key=value (e.g. latency=require)")]
    NotKeyValue(String),
    /// An unknown key.
    #[error("unknown criterion {0:?}: use latency, bandwidth, anonymity, reliability, encryption, avoid or hops")]
    UnknownKey(String),
    /// A bad level.
    #[error(transparent)]
    Level(#[from] crate::preference::UnknownPreference),
    /// A bad node list or hop count.
    #[error("{key}={value:?}: {why}")]
    BadValue {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What is wrong.
        why: &'static str,
    },
}

impl Criteria {
    /// The preference for `p` (`Ignore` if unset).
    pub fn get(&self, p: Property) -> Preference {
        self.prefs.get(&p).copied().unwrap_or(Preference::Ignore)
    }

    /// Parses `latency=require,anonymity=prefer,avoid=12+13,hops=4`; an
    /// optional `pathvm:` prefix (as in a SOCKS5 username) is skipped.
    pub fn parse(s: &str) -> Result<Self, CriteriaError> {
        let s = s.strip_prefix("pathvm:").unwrap_or(s);
        let mut c = Criteria::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (k, v) = item.split_once('=').ok_or_else(|| CriteriaError::NotKeyValue(item.to_string()))?;
            let (k, v) = (k.trim(), v.trim());
            let bad = |why| CriteriaError::BadValue { key: k.to_string(), value: v.to_string(), why };
            match k {
                "avoid" => {
                    for n in v.split('+').filter(|n| !n.is_empty()) {
                        c.avoid_nodes.push(n.parse().map_err(|_| bad("node ids are numbers joined by +"))?);
                    }
                }
                "hops" => {
                    c.max_hops = Some(v.parse().ok().filter(|h| *h > 0).ok_or_else(|| bad("a hop limit is 1-255"))?)
                }
                _ => {
                    let p = Property::from_name(k).ok_or_else(|| CriteriaError::UnknownKey(k.to_string()))?;
                    c.prefs.insert(p, v.parse()?);
                }
            }
        }
        Ok(c)
    }

    /// These criteria where set, `fallback`'s elsewhere: what the app sent
    /// overrides its manifest, which overrides the defaults.
    pub fn over(mut self, fallback: &Criteria) -> Criteria {
        for (p, v) in &fallback.prefs {
            self.prefs.entry(*p).or_insert(*v);
        }
        if self.avoid_nodes.is_empty() {
            self.avoid_nodes = fallback.avoid_nodes.clone();
        }
        if self.max_hops.is_none() {
            self.max_hops = fallback.max_hops;
        }
        self
    }
}

impl fmt::Display for Criteria {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self.prefs.iter().map(|(p, v)| format!("{p}={}", v.name())).collect();
        if !self.avoid_nodes.is_empty() {
            parts.push(format!("avoid={}", self.avoid_nodes.iter().map(u16::to_string).collect::<Vec<_>>().join("+")));
        }
        if let Some(h) = self.max_hops {
            parts.push(format!("hops={h}"));
        }
        if parts.is_empty() {
            return f.write_str("(none)");
        }
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_socks_username() {
        let c = Criteria::parse("pathvm:latency=require,anonymity=prefer,avoid=12+13,hops=4").unwrap();
        assert_eq!(c.get(Property::Latency), Preference::Require);
        assert_eq!(c.get(Property::Anonymity), Preference::Prefer);
        assert_eq!(c.get(Property::Bandwidth), Preference::Ignore);
        assert_eq!(c.avoid_nodes, vec![12, 13]);
        assert_eq!(c.max_hops, Some(4));
        assert_eq!(c.to_string(), "latency=require,anonymity=prefer,avoid=12+13,hops=4");
    }

    #[test]
    fn errors_say_what_to_write() {
        assert!(Criteria::parse("latency").unwrap_err().to_string().contains("key=value"));
        assert!(Criteria::parse("speed=require").unwrap_err().to_string().contains("unknown criterion"));
        assert!(Criteria::parse("latency=maybe").unwrap_err().to_string().contains("require, prefer"));
        assert!(Criteria::parse("avoid=x").is_err());
        assert!(Criteria::parse("hops=0").is_err());
        assert_eq!(Criteria::parse(""), Ok(Criteria::default()));
    }

    #[test]
    fn what_the_app_sends_overrides_the_manifest() {
        let sent = Criteria::parse("latency=avoid").unwrap();
        let manifest = Criteria::parse("latency=require,encryption=require,hops=3").unwrap();
        let c = sent.over(&manifest);
        assert_eq!(c.get(Property::Latency), Preference::Avoid);
        assert_eq!(c.get(Property::Encryption), Preference::Require);
        assert_eq!(c.max_hops, Some(3));
    }
}
