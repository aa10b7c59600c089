//! Replays the committed inputs of fuzz targets through their bodies:
//! `fuzz/seeds/TARGET/*` (valid inputs the fuzzer starts from) and
//! `fuzz/regressions/TARGET/*` (every crash a fuzzer found, kept after its
//! fix), so that `cargo test` guards what fuzzing found. Each crate with
//! fuzz bodies includes this file in its tests (`#[path]`): the crates
//! share no test-support crate, and the guest agent's is `no_std` outside
//! tests.

use std::path::{Path, PathBuf};

/// The repository's `fuzz/` directory, found above the including crate.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("fuzz"))
        .find(|d| d.join("Cargo.toml").exists())
        .expect("a fuzz/ directory above the crate")
}

/// A fuzz target as the replay sees it: its name under `fuzz/` and its body.
pub type Target<'a> = (&'a str, fn(&[u8]));

/// Runs every committed input of each target; a target without one fails
/// (its seeds were never written, so fuzzing it starts blind).
pub fn committed_inputs_run_clean(targets: &[Target<'_>]) {
    let root = fuzz_dir();
    for (name, body) in targets {
        let mut ran = 0;
        for kind in ["regressions", "seeds"] {
            let Ok(dir) = std::fs::read_dir(root.join(kind).join(name)) else { continue };
            for e in dir.flatten() {
                body(&std::fs::read(e.path()).expect("readable fuzz input"));
                ran += 1;
            }
        }
        assert!(ran > 0, "fuzz target {name} has no committed inputs under {}", root.display());
    }
}
