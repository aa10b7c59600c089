//! The body of the node-file fuzz target (`fuzz/`): a node reads its
//! configuration from a file an operator or `pathvm topo up` wrote, and a
//! broken one must be refused with a message, never crash the node or
//! boot a VM the agent cannot decode. What the node accepts, the agent
//! must read back exactly (the boot block carries it across).

use std::path::Path;

use guest_agent::node::NodeConfig;

use crate::config::NodeFile;

/// A target's body.
pub type Body = fn(&[u8]);

/// The targets by name, as `fuzz/` and the regression replay know them.
pub const TARGETS: [(&str, Body); 3] = [("node_file", node_file), ("exit_lookup", exit_lookup), ("identity", identity)];

/// Identity files a node reads (a certificate, a revocation list, as TOML
/// someone else wrote): none panics, and only the CA's own signature
/// makes one hold.
pub fn identity(data: &[u8]) {
    use crate::identity::{CaFile, Certificate, Revocations};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let ca = CaFile { name: "fuzz".into(), public: FUZZ_CA.into(), created: 0 };
    if let Ok(c) = toml::from_str::<Certificate>(text) {
        assert!(c.check(&ca, None, 1_800_000_000).is_err(), "a certificate no CA signed holds");
    }
    if let Ok(r) = toml::from_str::<Revocations>(text) {
        assert!(r.check(&ca).is_err(), "a revocation list no CA signed holds");
    }
}

/// A CA public key whose secret nobody has (the Ed25519 base point's
/// encoding, a valid point).
const FUZZ_CA: &str = "5866666666666666666666666666666666666666666666666666666666666666";

/// A node file's text.
pub fn node_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = NodeFile::parse(Path::new("fuzz.toml"), text) else { return };
    accepted_configs_boot(&file);
}

/// What an exit and an edge read that others wrote: an exit policy's
/// lines (first line of the input), a stream's open info as an exit
/// reads it (second line) and a lookup answer as the edge reads it (the
/// rest). Nothing panics; a policy's verdicts agree with its port
/// verdict; a query that parses round-trips.
pub fn exit_lookup(data: &[u8]) {
    use crate::exit_policy::{ExitPolicy, PortVerdict};
    use crate::lookup::{parse_answer, Query};
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\n');
    let (policy, info, answer) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let lines: Vec<String> = policy.split(';').map(str::to_string).collect();
    if let Ok(p) = ExitPolicy::parse(&lines) {
        for (i, b) in data.chunks(6).take(8).enumerate() {
            let port = u16::from_be_bytes([b[0], *b.get(1).unwrap_or(&0)]);
            let ip = if i % 2 == 0 {
                std::net::IpAddr::from([*b.get(2).unwrap_or(&0), *b.get(3).unwrap_or(&0), 0, 1])
            } else {
                std::net::IpAddr::from([0xfd00, u16::from(*b.get(2).unwrap_or(&0)), 0, 0, 0, 0, 0, 1])
            };
            let accepted = p.verdict(&(ip, port).into()).is_ok();
            if accepted {
                assert!(matches!(p.for_port(port), PortVerdict::Maybe(_)), "accepts {ip}:{port} yet refuses the port");
            }
        }
    }
    if let Some(Ok(q)) = Query::from_open_info(info) {
        assert_eq!(Query::from_open_info(&q.open_info()), Some(Ok(q)));
    }
    if let Ok(lines) = parse_answer(answer.as_bytes()) {
        assert!(!lines.is_empty() && lines.len() <= crate::lookup::MAX_RESULTS);
    }
}

/// What `pathvm node` checks before it boots a VM holds: the agent
/// decodes the config it is handed to the same config, and it fits the
/// boot block.
fn accepted_configs_boot(file: &NodeFile) {
    let _ = file.allow_policy();
    let Ok(cfg) = file.node_config() else { return };
    let mut block = Vec::new();
    cfg.encode(&mut block);
    assert_eq!(block.len(), cfg.encoded_len());
    assert!(block.len() <= guest_agent::boot::ARGS_LEN);
    assert_eq!(NodeConfig::decode(&block), Ok(cfg), "the agent reads back what the node accepted");
}

#[cfg(test)]
#[path = "../../../fuzz/replay.rs"]
mod replay;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_committed_fuzz_input_runs_clean() {
        super::replay::committed_inputs_run_clean(&TARGETS);
    }
}
