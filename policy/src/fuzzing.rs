//! Bodies of the policy fuzz targets (`fuzz/`): criteria arrive from any
//! app (a SOCKS5 username, `PATHVM_CRITERIA`) and manifests from files an
//! operator or a package wrote, so both parsers meet arbitrary text. Beyond
//! "no panic", each body checks what the rest of pathvm relies on: what
//! parsed prints back to the same criteria (the edge logs and `pathvm
//! explain` show them), and selection either picks a usable protocol or
//! says why every one was refused.

use std::path::Path;

use crate::criteria::Criteria;
use crate::manifest::Manifest;
use crate::select::select;

/// A target's body.
pub type Body = fn(&[u8]);

/// The targets by name, as `fuzz/` and the regression replay know them.
pub const TARGETS: [(&str, Body); 2] = [("criteria", criteria), ("manifest", manifest)];

/// A criteria string, as an app sends it.
pub fn criteria(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = Criteria::parse(text) {
        holds(&c);
    }
}

/// A manifest file's text.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Manifest::parse(Path::new("fuzz.toml"), text) {
        Ok(m) => holds(&m.criteria),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

/// What parsed criteria promise: they print back to themselves, and
/// selection decides with reasons.
fn holds(c: &Criteria) {
    if *c != Criteria::default() {
        assert_eq!(Criteria::parse(&c.to_string()).as_ref(), Ok(c), "criteria print back as parsed");
    }
    match select(c) {
        Ok(d) => {
            let row = d.rows.iter().find(|r| r.protocol == d.chosen).expect("chosen protocol has a row");
            assert!(row.refused.is_none(), "chose a refused protocol");
            assert!(d.rows.iter().all(|r| r.refused.is_some() || r.score <= row.score), "chose a lower score");
        }
        Err(r) => assert!(!r.reasons.is_empty(), "a refusal says why"),
    }
}

#[cfg(test)]
#[path = "../../fuzz/replay.rs"]
mod replay;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_committed_fuzz_input_runs_clean() {
        super::replay::committed_inputs_run_clean(&TARGETS);
    }

    #[test]
    fn odd_spacing_and_empty_items_still_print_back() {
        // The body's property on a string that does not print back byte
        // for byte, yet must parse back to the same criteria.
        criteria(b" pathvm:hops=3 , latency = require,avoid=1++2,");
        let c = Criteria::parse("hops=3,latency=require,avoid=1+2").unwrap();
        assert_eq!(Criteria::parse(&c.to_string()), Ok(c));
    }
}
