//! `pathvm status`: a live view of this host's daemons from their metrics.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use guest_agent::routing::NodeId;
use node::status::Snapshot;

/// Arguments of `pathvm status`.
#[derive(Debug, Args)]
#[command(after_help = "Reads the daemons' --metrics-listen pages (an edge's, a node's, or both), \
never their memory, every --interval seconds: this node's links (up, latency, loss), each \
protocol's path to every node over the topology the node routes on, request VMs and flows, \
and rates since the last read.\n\nExample:\n  ip netns exec line3-b pathvm status --metrics \
http://127.0.0.1:9464/metrics --config /run/pathvm/line3/b.toml")]
pub struct StatusArgs {
    /// A daemon's metrics page; repeat for several (edge and node).
    #[arg(long, value_name = "URL", required = true)]
    metrics: Vec<String>,
    /// This host's node configuration: names hosts, and routes start at its node.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Seconds between reads.
    #[arg(long, default_value_t = 1.0, value_parser = parse_interval)]
    interval: f64,
    /// Frames to show, then exit (default: until interrupted).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// One JSON object per frame instead of the terminal view.
    #[arg(long)]
    json: bool,
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.1..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: seconds between reads, 0.1 to 3600")),
    }
}

/// Shows frames until `--count` or interrupted.
pub fn run(a: StatusArgs) -> Result<i32, Box<dyn std::error::Error>> {
    let file = a.config.as_deref().map(node::NodeFile::load).transpose()?;
    let me = file.as_ref().map(|f| f.id);
    let name = |n: NodeId| file.as_ref().map_or_else(|| format!("n{n}"), |f| f.host_label(n));
    let clear = !a.json && std::io::stdout().is_terminal();
    let mut before: Option<(Snapshot, Instant)> = None;
    let mut shown = 0u64;
    loop {
        let pages = a
            .metrics
            .iter()
            .map(|u| node::metrics::fetch(u).map_err(|e| format!("cannot read {u}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let now = Snapshot::from_pages(&pages);
        let frame = now.frame(me, before.as_ref().map(|(s, t)| (s, t.elapsed().as_secs_f64())));
        if a.json {
            println!("{}", serde_json::to_string(&frame)?);
        } else {
            if clear {
                print!("\x1b[H\x1b[2J");
            }
            print!("{}", frame.render(name));
        }
        shown += 1;
        if a.count.is_some_and(|c| shown >= c) {
            return Ok(0);
        }
        before = Some((now, Instant::now()));
        std::thread::sleep(Duration::from_secs_f64(a.interval));
    }
}
