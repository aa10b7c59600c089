//! `pathvm explain`: the application interface and protocol selection as a
//! user sees them.

use std::process::Command;

use pathvm_tests::*;

fn explain(args: &[&str], manifests: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(pathvm_bin()).arg("explain").args(args).arg("--manifests").arg(manifests).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sent_criteria_override_the_manifest_and_the_table_says_why() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("curl.toml"), "[criteria]\nlatency = \"avoid\"\nencryption = \"prefer\"\n").unwrap();
    let (code, out, err) = explain(&["--app", "/usr/bin/curl", "--criteria", "pathvm:latency=require"], &dir.0);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("criteria: latency=require,encryption=prefer"), "{out}");
    assert!(out.contains("curl.toml"), "manifest not named: {out}");
    let chosen = out.lines().find(|l| l.contains("CHOSEN")).expect("a chosen row");
    assert!(chosen.starts_with("shortest"), "{out}");
}

#[test]
fn an_unmet_requirement_refuses_with_reasons() {
    let dir = TempDir::new();
    let (code, out, _) = explain(&["--app", "x", "--criteria", "anonymity=require"], &dir.0);
    assert_eq!(code, Some(2));
    assert!(out.contains("no routing protocol meets the criteria"), "{out}");
    assert!(out.contains("shortest: anonymity is required, it offers none"), "{out}");
}

#[test]
fn a_broken_manifest_is_an_error_naming_file_and_line_for_its_app_only() {
    let dir = TempDir::new();
    std::fs::write(dir.0.join("bad.toml"), "[criteria]\n\nbandwidth = \"often\"\n").unwrap();
    let (code, _, err) = explain(&["--app", "bad"], &dir.0);
    assert_eq!(code, Some(1));
    assert!(err.contains("bad.toml, line 3"), "{err}");
    let (code, out, _) = explain(&["--app", "good"], &dir.0);
    assert_eq!(code, Some(0), "another app's broken manifest must not matter: {out}");
}

#[test]
fn malformed_criteria_are_a_clear_error() {
    let dir = TempDir::new();
    let (code, _, err) = explain(&["--app", "x", "--criteria", "speed=fast"], &dir.0);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown criterion \"speed\""), "{err}");
}
