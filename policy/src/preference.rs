//! TAPS-style preference levels (RFC 9622 §6.2).

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// How much an application cares about a property (RFC 9622 §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preference {
    /// The property must hold, or the connection is refused.
    Require,
    /// The property should hold if possible.
    Prefer,
    /// No preference (the default).
    Ignore,
    /// The property should not hold if possible.
    Avoid,
    /// The property must not hold, or the connection is refused.
    Prohibit,
}

/// A preference level that could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("unknown preference {0:?}: use require, prefer, ignore, avoid or prohibit")]
pub struct UnknownPreference(pub String);

impl Preference {
    /// The name used in criteria strings and manifests.
    pub fn name(self) -> &'static str {
        match self {
            Self::Require => "require",
            Self::Prefer => "prefer",
            Self::Ignore => "ignore",
            Self::Avoid => "avoid",
            Self::Prohibit => "prohibit",
        }
    }
}

impl std::str::FromStr for Preference {
    type Err = UnknownPreference;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "require" => Self::Require,
            "prefer" => Self::Prefer,
            "ignore" => Self::Ignore,
            "avoid" => Self::Avoid,
            "prohibit" => Self::Prohibit,
            _ => return Err(UnknownPreference(s.to_string())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_level_and_rejects_others() {
        for (s, p) in [
            ("require", Preference::Require),
            ("prefer", Preference::Prefer),
            ("ignore", Preference::Ignore),
            ("avoid", Preference::Avoid),
            ("prohibit", Preference::Prohibit),
        ] {
            assert_eq!(s.parse::<Preference>(), Ok(p));
        }
        assert_eq!("maybe".parse::<Preference>(), Err(UnknownPreference("maybe".into())));
    }
}
