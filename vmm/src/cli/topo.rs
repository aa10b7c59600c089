//! `pathvm topo`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use vmm::topo::Topo;

/// Test-host topologies.
#[derive(Debug, Subcommand)]
pub enum TopoCommand {
    /// Create the hosts, links, addresses and routes of FILE and write a
    /// node configuration per host under /run/pathvm/NAME/.
    Up(TopoArgs),
    /// Remove the hosts of FILE and end the processes in them (idempotent;
    /// also cleans up after a crashed run).
    Down(TopoArgs),
}

/// Arguments of `topo up` and `topo down`.
#[derive(Debug, Args)]
pub struct TopoArgs {
    /// Topology file (TOML), e.g. tests/topologies/line3.toml.
    file: PathBuf,
    /// Namespace prefix instead of the file's `name` (1-8 letters/digits).
    #[arg(long)]
    name: Option<String>,
}

/// Runs the subcommand.
pub fn run(cmd: TopoCommand) -> Result<i32, Box<dyn std::error::Error>> {
    match cmd {
        TopoCommand::Up(a) => {
            let t = Topo::load(&a.file, a.name.as_deref())?;
            t.up()?;
            for h in &t.file.hosts {
                println!(
                    "host {:<6} node {:<5} netns {:<16} config {}",
                    h.name,
                    h.id,
                    t.netns(&h.name),
                    t.node_config_path(&h.name).display()
                );
            }
            Ok(0)
        }
        TopoCommand::Down(a) => {
            Topo::load(&a.file, a.name.as_deref())?.down();
            Ok(0)
        }
    }
}
