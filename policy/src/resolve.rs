//! Claim step (c), once: an app's criteria from what it sent, over its
//! manifest, over the defaults, with a record of where they came from.
//! The edge resolves every request with it and `pathvm explain` shows the
//! same resolution to a person.

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::criteria::{Criteria, CriteriaError};
use crate::manifest::{ManifestDir, ManifestError};

/// One layer the criteria were taken from, most specific first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// What the app sent (the SOCKS5 username, `--criteria`).
    Sent(Criteria),
    /// The app's manifest.
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// Its criteria.
        criteria: Criteria,
    },
    /// pathvm's defaults.
    Defaults,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sent(c) => write!(f, "sent ({c})"),
            Self::Manifest { path, criteria } => write!(f, "manifest {} ({criteria})", path.display()),
            Self::Defaults => f.write_str("defaults"),
        }
    }
}

/// The criteria in force for one app, and the layers they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The merged criteria.
    pub criteria: Criteria,
    /// Every layer that took part, most specific first (always ending
    /// with [`Source::Defaults`]).
    pub sources: Vec<Source>,
}

impl Resolved {
    /// `sent (…) > manifest … (…) > defaults`.
    pub fn sources_line(&self) -> String {
        self.sources.iter().map(Source::to_string).collect::<Vec<_>>().join(" > ")
    }
}

/// Why an app's criteria could not be resolved.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ResolveError {
    /// What the app sent does not parse.
    #[error(transparent)]
    Sent(#[from] CriteriaError),
    /// The app's manifest is broken.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// The criteria for the app running `exe` that sent `sent` (if anything):
/// sent > manifest (looked up in `manifests`) > defaults.
pub fn resolve(sent: Option<&str>, exe: &Path, manifests: &ManifestDir) -> Result<Resolved, ResolveError> {
    let sent = sent.map(Criteria::parse).transpose()?;
    let manifest = manifests.lookup(exe)?;
    let mut sources = Vec::new();
    let mut criteria = Criteria::default();
    if let Some(s) = sent {
        criteria = s.clone();
        sources.push(Source::Sent(s));
    }
    if let Some(m) = manifest {
        criteria = criteria.over(&m.criteria);
        sources.push(Source::Manifest { path: m.path, criteria: m.criteria });
    }
    criteria = criteria.over(&Criteria::default());
    sources.push(Source::Defaults);
    Ok(Resolved { criteria, sources })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(name: &str, text: &str) -> (PathBuf, ManifestDir) {
        let d = std::env::temp_dir().join(format!("policy-resolve-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("{name}.toml")), text).unwrap();
        (d.clone(), ManifestDir::new(d))
    }

    #[test]
    fn sent_criteria_override_the_manifest_which_fills_the_rest() {
        let (d, m) = dir_with("app1", "[criteria]\nlatency = \"avoid\"\nbandwidth = \"prefer\"\n");
        let r = resolve(Some("latency=require"), Path::new("/usr/bin/app1"), &m).unwrap();
        assert_eq!(r.criteria, Criteria::parse("latency=require,bandwidth=prefer").unwrap());
        assert_eq!(r.sources.len(), 3);
        assert!(matches!(&r.sources[0], Source::Sent(_)));
        assert!(matches!(&r.sources[1], Source::Manifest { path, .. } if path.ends_with("app1.toml")));
        assert!(r.sources_line().starts_with("sent (latency=require) > manifest "), "{}", r.sources_line());
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn nothing_sent_and_no_manifest_is_the_defaults_alone() {
        let r = resolve(None, Path::new("/usr/bin/x"), &ManifestDir::new("/nonexistent")).unwrap();
        assert_eq!((r.criteria, r.sources), (Criteria::default(), vec![Source::Defaults]));
    }

    #[test]
    fn unparsable_sent_criteria_and_broken_manifests_are_errors() {
        let none = ManifestDir::new("/nonexistent");
        assert!(matches!(resolve(Some("speed=require"), Path::new("x"), &none), Err(ResolveError::Sent(_))));
        let (d, m) = dir_with("app2", "[criteria]\nlatency = 3\n");
        assert!(matches!(resolve(None, Path::new("app2"), &m), Err(ResolveError::Manifest(_))));
        let _ = std::fs::remove_dir_all(d);
    }
}
