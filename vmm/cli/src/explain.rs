//! `pathvm explain`.

use std::path::{Path, PathBuf};

use clap::Args;
use policy::{resolve, select, ManifestDir};

/// Where manifests live unless `--manifests` says otherwise.
pub const DEFAULT_MANIFESTS: &str = "/etc/pathvm/manifests";

/// Arguments of `pathvm explain`.
#[derive(Debug, Args)]
#[command(after_help = "Criteria come, in this order, from what the app sends (--criteria here; the SOCKS5 \
username for a real app), from the app's manifest (MANIFESTS/<app>.toml), then defaults.\n\n\
With --to (and the edge's node config, --config), it also says where a request to that destination \
goes: the host of the topology it names, or the exit chosen for it and what every exit said.\n\n\
Example:\n  pathvm explain --app curl --criteria latency=require,anonymity=prefer\n  \
pathvm explain --app curl --to svc.test:443 --config /run/pathvm/exit6/a.toml\n\n\
Exit status: 0 when a protocol is chosen (and, with --to, a place), 2 when the criteria refuse every \
protocol or no node takes the destination, 1 on errors (a broken manifest or config among them).")]
pub struct ExplainArgs {
    /// The application (executable name or path).
    #[arg(long)]
    app: String,
    /// Criteria as the app would send them, e.g. latency=require,anonymity=prefer,avoid=12+13,hops=4
    #[arg(long)]
    criteria: Option<String>,
    /// Manifest directory.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_MANIFESTS)]
    manifests: PathBuf,
    /// A destination, HOST:PORT or [IPV6]:PORT: say where it goes.
    #[arg(long, value_name = "HOST:PORT", requires = "config")]
    to: Option<String>,
    /// The edge's node configuration (its topology, hosts and exits).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `HOST:PORT` or `[IPV6]:PORT` as the edge would get it from SOCKS5.
fn parse_target(s: &str) -> Result<edge::socks::Target, String> {
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return Ok(edge::socks::Target::Addr(a));
    }
    let bad = || format!("--to {s:?}: write HOST:PORT or [IPV6]:PORT");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() || host.contains(':') {
        return Err(bad());
    }
    Ok(edge::socks::Target::Domain(host.to_string(), port))
}

/// Prints the decision table for an app.
pub fn run(a: ExplainArgs) -> Result<i32, Box<dyn std::error::Error>> {
    let resolved = resolve(a.criteria.as_deref(), Path::new(&a.app), &ManifestDir::new(&a.manifests))?;
    println!("app: {}", a.app);
    println!("criteria from: {}", resolved.sources_line());
    let criteria = resolved.criteria;
    match select(&criteria) {
        Ok(d) => {
            println!("{d}");
            let (Some(to), Some(config)) = (&a.to, &a.config) else { return Ok(0) };
            let target = parse_target(to)?;
            let file = node::NodeFile::load(config)?;
            let exits = file.exits()?;
            let onion = d.chosen.name == "onion";
            match edge::exit::place(&file, &exits, &target, &criteria.avoid_nodes, onion) {
                Ok(p) => {
                    match &p.exit {
                        None => {
                            println!("destination: {to}: a host of the topology, node {} connects {}", p.node, p.target)
                        }
                        Some(x) => {
                            println!("destination: {to}: outside the topology; {}", x.why);
                            for r in &x.rows {
                                println!("  {r}");
                            }
                        }
                    }
                    Ok(0)
                }
                Err(e) => {
                    println!("destination: {to}: {e}");
                    Ok(2)
                }
            }
        }
        Err(r) => {
            println!("{r}");
            Ok(2)
        }
    }
}
