//! The systemd units in contrib/systemd: each one's ExecStart is a
//! command line `pathvm` accepts (every flag and value parses), and the
//! units name what the daemons need.

use std::process::Command;

use pathvm_tests::*;

/// The ExecStart of a unit, continuation lines joined, as arguments.
fn exec_start(unit: &str) -> Vec<String> {
    let text = std::fs::read_to_string(workspace().join("contrib/systemd").join(unit)).unwrap();
    let joined = text.replace("\\\n", " ");
    let line = joined.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("an ExecStart");
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn every_units_command_line_is_one_pathvm_accepts() {
    for (unit, sub) in [("pathvm-node.service", "node"), ("pathvm-edge.service", "edge")] {
        let args = exec_start(unit);
        assert_eq!((args[0].as_str(), args[1].as_str()), ("/usr/local/bin/pathvm", sub), "{unit}");
        // --help after the unit's own arguments: clap parses them all first,
        // so an unknown flag or a bad value fails here.
        let out = Command::new(pathvm_bin()).args(&args[1..]).arg("--help").output().unwrap();
        assert!(out.status.success(), "{unit}: {}", String::from_utf8_lossy(&out.stderr));
        let text = std::fs::read_to_string(workspace().join("contrib/systemd").join(unit)).unwrap();
        for need in ["DeviceAllow=/dev/kvm rw", "CAP_NET_ADMIN", "--metrics-listen 127.0.0.1:", "NoNewPrivileges=yes"] {
            assert!(text.contains(need), "{unit} lacks {need}");
        }
    }
}
