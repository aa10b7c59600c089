//! `pathvm paths`: each protocol's current path between two nodes, from a
//! running node's metrics.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use clap::{Args, ValueEnum};
use guest_agent::routing::{Link, NodeId};

/// What to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// One line per protocol: its path(s).
    Text,
    /// Graphviz DOT.
    Dot,
    /// SVG, rendered by Graphviz's `dot`.
    Svg,
}

/// Arguments of `pathvm paths`.
#[derive(Debug, Args)]
#[command(after_help = "The topology is the one the node behind --metrics routes on now (its flooded \
link state: links reported down are left out, measured latency applied), read from its \
`--metrics-listen` page. Paths are computed with the protocols' own code: hop by hop for \
shortest and widest, the source's choice for multipath, redundant and onion (onion's relays \
are one random draw). With --config, nodes are named by host and links the live topology lacks \
are drawn dashed red.\n\nExample:\n  ip netns exec mesh6-r4 pathvm paths --metrics \
http://127.0.0.1:9464/metrics --config /run/pathvm/mesh6/r4.toml --from a --to c --format svg > paths.svg")]
pub struct PathsArgs {
    /// A node's metrics page (`pathvm node --metrics-listen`).
    #[arg(long, value_name = "URL")]
    metrics: String,
    /// Source node: id, or host name with --config.
    #[arg(long)]
    from: String,
    /// Destination node: id, or host name with --config.
    #[arg(long)]
    to: String,
    /// A node configuration of the topology (names, configured links).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Prints the paths; exit 2 when some protocol has none.
pub fn run(a: PathsArgs) -> Result<i32, Box<dyn std::error::Error>> {
    let file = a.config.as_deref().map(node::NodeFile::load).transpose()?;
    let id_of = |s: &str| -> Result<NodeId, String> {
        s.parse::<NodeId>()
            .ok()
            .or_else(|| file.as_ref()?.node_of_host(s))
            .ok_or_else(|| format!("{s:?} is neither a node id nor a host of the config (give --config to name hosts)"))
    };
    let (src, dst) = (id_of(&a.from)?, id_of(&a.to)?);
    let page = node::metrics::fetch(&a.metrics).map_err(|e| format!("cannot read {}: {e}", a.metrics))?;
    let topo = node::paths::topology_from_metrics(&page)?;
    let configured: Vec<Link> = file.as_ref().map(node::NodeFile::links).unwrap_or_default();
    let name = |n: NodeId| file.as_ref().map_or_else(|| format!("n{n}"), |f| f.host_label(n));
    let (dot, found) = node::paths::dot(&configured, &topo, src, dst, name);
    let missing = found.iter().any(|(_, p)| p.is_empty());
    match a.format {
        Format::Text => {
            for (protocol, ps) in &found {
                let shown: Vec<String> =
                    ps.iter().map(|p| p.iter().map(|n| name(*n)).collect::<Vec<_>>().join(" -> ")).collect();
                let shown = if shown.is_empty() { "no path".to_string() } else { shown.join("  |  ") };
                println!("{protocol:<10} {shown}");
            }
        }
        Format::Dot => print!("{dot}"),
        Format::Svg => {
            let mut child = Command::new("dot")
                .arg("-Tsvg")
                .stdin(Stdio::piped())
                .stdout(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("cannot run Graphviz's dot ({e}): `make deps` installs graphviz"))?;
            child.stdin.take().ok_or("dot has no stdin")?.write_all(dot.as_bytes())?;
            let status = child.wait()?;
            if !status.success() {
                return Err(format!("dot failed: {status}").into());
            }
        }
    }
    Ok(if missing { 2 } else { 0 })
}
