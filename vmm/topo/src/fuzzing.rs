//! The body of the topology fuzz target (`fuzz/`): a topology file is
//! what a user writes first, so a broken one must be refused with a
//! message. What `Topo::parse` accepts, the rest must handle: routing over
//! it, and every host's generated node file, which `pathvm node` must
//! read back, accept and hand to an agent that decodes it unchanged.

use std::path::Path;

use guest_agent::node::NodeConfig;
use guest_agent::routing::Shortest;
use node::NodeFile;

use crate::Topo;

/// A target's body.
pub type Body = fn(&[u8]);

/// The targets by name, as `fuzz/` and the regression replay know them.
pub const TARGETS: [(&str, Body); 1] = [("topology", topology)];

/// A topology file's text.
pub fn topology(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(topo) = Topo::parse(Path::new("fuzz.toml"), text, Some("fuzz")) else { return };
    let routing = topo.file.routing_topology();
    for h in &topo.file.hosts {
        let table = Shortest::compute(&routing, h.id);
        for o in &topo.file.hosts {
            if let Some(next) = table.next_hop(o.id) {
                assert!(topo.file.link_between(&h.name, next).is_some(), "next hop {next} is not a neighbour");
            }
        }
    }
    for (host, file) in topo.node_files() {
        let text = toml::to_string(&file).expect("node file serialises");
        let cfg = NodeFile::parse(Path::new("fuzz.toml"), &text)
            .and_then(|f| f.node_config())
            .unwrap_or_else(|e| panic!("topology accepted, but host {host}'s node file is refused: {e}"));
        let mut block = Vec::new();
        cfg.encode(&mut block);
        assert_eq!(NodeConfig::decode(&block), Ok(cfg), "host {host}'s agent reads back its config");
    }
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

    /// Writes `fuzz/seeds/topology/` (the test topologies) and
    /// `fuzz/seeds/node_file/` (line3's generated node files). Run by hand
    /// when a format changes: `cargo test -p topo --lib -- --ignored write_fuzz_seeds`.
    #[test]
    #[ignore = "writes fuzz/seeds; run by hand when a format changes"]
    fn write_fuzz_seeds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let seeds = root.join("fuzz/seeds");
        for dir in ["topology", "node_file"] {
            std::fs::create_dir_all(seeds.join(dir)).unwrap();
        }
        for e in std::fs::read_dir(root.join("tests/topologies")).unwrap().flatten() {
            std::fs::copy(e.path(), seeds.join("topology").join(e.file_name())).unwrap();
        }
        let line3 = Topo::load(&root.join("tests/topologies/line3.toml"), None).unwrap();
        for (host, file) in line3.node_files() {
            std::fs::write(seeds.join(format!("node_file/line3-{host}.toml")), toml::to_string(&file).unwrap())
                .unwrap();
        }
    }
}
