//! Application manifests: per-app criteria in a directory of TOML files.
//!
//! The manifest of an app is `<executable name>.toml` in the manifests
//! directory; other files may claim more executables with `match`. A
//! broken manifest is an error naming its file and line, and it affects
//! only the app it belongs to: others' lookups skip it.
//!
//! ```toml
//! [app]
//! match = ["/usr/local/bin/fetcher"]   # optional: more executables
//!
//! [criteria]
//! latency = "require"                  # require|prefer|ignore|avoid|prohibit
//! anonymity = "prefer"
//! avoid = [12, 13]                     # relay node ids
//! hops = 5
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::criteria::{Criteria, Property};
use crate::preference::Preference;

/// A manifest that could not be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ManifestError {
    /// Unreadable.
    #[error("manifest {path}: {msg}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        msg: String,
    },
    /// Invalid content.
    #[error("manifest {path}, line {line}: {msg}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        msg: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    app: AppSection,
    #[serde(default)]
    criteria: CriteriaSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppSection {
    #[serde(default, rename = "match")]
    matches: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CriteriaSection {
    latency: Option<Preference>,
    bandwidth: Option<Preference>,
    anonymity: Option<Preference>,
    reliability: Option<Preference>,
    encryption: Option<Preference>,
    #[serde(default)]
    avoid: Vec<u16>,
    hops: Option<u8>,
}

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Where it came from.
    pub path: PathBuf,
    /// Extra executables it claims.
    pub matches: Vec<String>,
    /// Its criteria.
    pub criteria: Criteria,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Manifest {
    /// Parses manifest text from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ManifestError> {
        let f: File = toml::from_str(text).map_err(|e| ManifestError::Invalid {
            path: path.into(),
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            msg: e.message().to_string(),
        })?;
        let c = f.criteria;
        let prefs: BTreeMap<Property, Preference> = [
            (Property::Latency, c.latency),
            (Property::Bandwidth, c.bandwidth),
            (Property::Anonymity, c.anonymity),
            (Property::Reliability, c.reliability),
            (Property::Encryption, c.encryption),
        ]
        .into_iter()
        .filter_map(|(p, v)| Some((p, v?)))
        .collect();
        if c.hops == Some(0) {
            let line = text.lines().position(|l| l.trim_start().starts_with("hops")).map_or(1, |i| i + 1);
            return Err(ManifestError::Invalid { path: path.into(), line, msg: "hops must be 1-255".into() });
        }
        Ok(Self {
            path: path.into(),
            matches: f.app.matches,
            criteria: Criteria { prefs, avoid_nodes: c.avoid, max_hops: c.hops },
        })
    }

    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ManifestError::Read { path: path.into(), msg: e.to_string() })?;
        Self::parse(path, &text)
    }
}

/// A directory of manifests.
#[derive(Debug, Clone)]
pub struct ManifestDir {
    dir: PathBuf,
}

impl ManifestDir {
    /// Manifests in `dir` (which need not exist: then no app has one).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The manifest of the app running `exe`, if any.
    pub fn lookup(&self, exe: &Path) -> Result<Option<Manifest>, ManifestError> {
        let name = exe.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.is_empty() {
            let own = self.dir.join(format!("{name}.toml"));
            if own.exists() {
                return Manifest::load(&own).map(Some);
            }
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Ok(None) };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        let exe_str = exe.to_string_lossy();
        for f in files {
            // Others' broken manifests are theirs to report, not this app's.
            let Ok(m) = Manifest::load(&f) else { continue };
            if m.matches.iter().any(|x| x == name || *x == exe_str) {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(files: &[(&str, &str)]) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pathvm-manifests-{}-{}", std::process::id(), files.len()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        for (n, t) in files {
            std::fs::write(d.join(n), t).unwrap();
        }
        d
    }

    #[test]
    fn parses_full_manifest() {
        let m = Manifest::parse(
            Path::new("curl.toml"),
            "[app]\nmatch = [\"/opt/curl\"]\n[criteria]\nlatency = \"require\"\navoid = [12]\nhops = 4\n",
        )
        .unwrap();
        assert_eq!(m.criteria.get(Property::Latency), Preference::Require);
        assert_eq!((m.criteria.avoid_nodes.clone(), m.criteria.max_hops), (vec![12], Some(4)));
    }

    #[test]
    fn broken_manifest_names_file_and_line() {
        let e = Manifest::parse(Path::new("/m/curl.toml"), "[criteria]\n\nlatency = \"sometimes\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("manifest /m/curl.toml, line 3:"), "{msg}");
        let e = Manifest::parse(Path::new("x.toml"), "[criteria]\nspeed = \"require\"\n").unwrap_err();
        assert!(matches!(e, ManifestError::Invalid { line: 2, .. }), "{e}");
    }

    #[test]
    fn lookup_by_name_then_by_match_and_broken_others_do_not_matter() {
        let d = tmp(&[
            ("curl.toml", "[criteria]\nlatency = \"require\"\n"),
            ("tools.toml", "[app]\nmatch = [\"wget\"]\n[criteria]\nbandwidth = \"prefer\"\n"),
            ("broken.toml", "[criteria\n"),
        ]);
        let dir = ManifestDir::new(&d);
        let curl = dir.lookup(Path::new("/usr/bin/curl")).unwrap().unwrap();
        assert_eq!(curl.criteria.get(Property::Latency), Preference::Require);
        let wget = dir.lookup(Path::new("/usr/bin/wget")).unwrap().unwrap();
        assert_eq!(wget.criteria.get(Property::Bandwidth), Preference::Prefer);
        assert_eq!(dir.lookup(Path::new("/bin/true")).unwrap(), None);
        assert!(dir.lookup(Path::new("/x/broken")).is_err(), "an app's own broken manifest is its error");
        assert_eq!(ManifestDir::new("/nonexistent").lookup(Path::new("curl")).unwrap(), None);
        let _ = std::fs::remove_dir_all(&d);
    }
}
