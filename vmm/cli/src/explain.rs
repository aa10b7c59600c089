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
Example:\n  pathvm explain --app curl --criteria latency=require,anonymity=prefer\n\n\
Exit status: 0 when a protocol is chosen, 2 when the criteria refuse every protocol, 1 on errors \
(a broken manifest among them).")]
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
            Ok(0)
        }
        Err(r) => {
            println!("{r}");
            Ok(2)
        }
    }
}
