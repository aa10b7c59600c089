//! `pathvm topo`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use topo::emulator::{self, LinkShape};
use topo::Topo;

/// Test-host topologies.
#[derive(Debug, Subcommand)]
pub enum TopoCommand {
    /// Create the hosts, links, addresses and routes of FILE and write a
    /// node configuration per host under /run/pathvm/NAME/.
    Up(TopoArgs),
    /// Remove the hosts of FILE and end the processes in them (idempotent;
    /// also cleans up after a crashed run).
    Down(TopoArgs),
    /// Change the delay and loss of a running emulated link (one that has
    /// delay_ms or loss_percent in FILE).
    Set(SetArgs),
    /// Run a link emulator between interfaces A and B of this namespace
    /// (started by `topo up`; runs until killed).
    #[command(hide = true)]
    EmulateLink(EmulateArgs),
}

/// Arguments of `topo set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(flatten)]
    topo: TopoArgs,
    /// The link, as HOST-HOST (e.g. a-r1).
    #[arg(long, value_name = "A-B")]
    link: String,
    /// New one-way delay in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u32,
    /// New random loss in percent.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    loss_percent: u32,
}

/// Arguments of `topo emulate-link`.
#[derive(Debug, Args)]
pub struct EmulateArgs {
    /// One end.
    #[arg(long)]
    a: String,
    /// The other end.
    #[arg(long)]
    b: String,
    /// Control file with delay_ms and loss_percent.
    #[arg(long)]
    control: PathBuf,
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
        TopoCommand::Set(a) => {
            let t = Topo::load(&a.topo.file, a.topo.name.as_deref())?;
            let (x, y) = a.link.split_once('-').ok_or("--link takes HOST-HOST, e.g. a-r1")?;
            t.set_link(x, y, LinkShape { delay_ms: a.delay_ms, loss_percent: a.loss_percent })?;
            Ok(0)
        }
        TopoCommand::EmulateLink(a) => {
            emulator::run(&a.a, &a.b, &a.control)?;
            Ok(0)
        }
    }
}
