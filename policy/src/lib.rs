//! Application connection criteria and routing-protocol selection.
//!
//! Claim steps (c) and (d): the application interface answers "what does
//! this app need from its connection?" ([`criteria`], from what the app
//! sends, its [`manifest`], or defaults), and [`select`] scores every
//! available routing protocol's [`protocols`] properties against those
//! criteria, picks one, and explains why; [`resolve`] layers the criteria
//! (sent > manifest > defaults) once for the edge and `pathvm explain`.
//! `fuzzing` (feature `fuzzing`) holds the bodies of the `fuzz/` targets
//! for criteria and manifests.

pub mod criteria;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod manifest;
pub mod preference;
pub mod protocols;
pub mod resolve;
pub mod select;

pub use criteria::{Criteria, CriteriaError, Property};
pub use manifest::{ManifestDir, ManifestError};
pub use preference::{Preference, UnknownPreference};
pub use protocols::{ProtocolProfile, PROTOCOLS};
pub use resolve::{resolve, ResolveError, Resolved, Source};
pub use select::{select, Decision, Refusal};
