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
pub const TARGETS: [(&str, Body); 1] = [("node_file", node_file)];

/// A node file's text.
pub fn node_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(file) = NodeFile::parse(Path::new("fuzz.toml"), text) else { return };
    accepted_configs_boot(&file);
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
