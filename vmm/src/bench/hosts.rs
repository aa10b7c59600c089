//! Test hosts and daemons for benchmarks: started in their namespaces,
//! ended (by PID) and the hosts taken down when the benchmark is done.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use thiserror::Error;

use crate::topo::Topo;

/// A daemon that did not come up.
#[derive(Debug, Error)]
pub enum DaemonError {
    /// It could not be started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// Which daemon.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// It did not say it was ready.
    #[error("{what} did not start: {why}")]
    NotReady {
        /// Which daemon.
        what: String,
        /// What it said, or that it said nothing.
        why: String,
    },
}

/// Kills and reaps a child on drop.
pub struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        // SAFETY: signals our own child by PID, then reaps it.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// Takes the topology down on drop.
pub struct Down<'a>(pub &'a Topo);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        self.0.down();
    }
}

/// Starts `args` inside `host`'s namespace (pinned to CPU 0 if `pin`) and
/// waits for a stderr line containing `ready`.
pub fn start_daemon(
    t: &Topo,
    host: &str,
    pin: bool,
    exe: &Path,
    args: &[&str],
    ready: &str,
) -> Result<Reaped, DaemonError> {
    let what = format!("{} on {host}", args.first().copied().unwrap_or("daemon"));
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &t.netns(host)]);
    if pin {
        cmd.args(["taskset", "-c", "0"]);
    }
    let mut child = cmd
        .arg(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| DaemonError::Spawn { what: what.clone(), source })?;
    let err = child.stderr.take();
    let daemon = Reaped(child);
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        let Some(err) = err else { return };
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains(&ready) {
                let _ = tx.send(Ok(()));
            } else if line.contains("error") {
                let _ = tx.send(Err(line));
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(())) => Ok(daemon),
        Ok(Err(line)) => Err(DaemonError::NotReady { what, why: line }),
        Err(_) => Err(DaemonError::NotReady { what, why: "no ready line within 20 s".into() }),
    }
}

/// Starts `host`'s node.
pub fn start_node(exe: &Path, image: &Path, t: &Topo, host: &str, pin: bool) -> Result<Reaped, DaemonError> {
    let config = t.node_config_path(host);
    let (image, config) = (image.to_string_lossy(), config.to_string_lossy());
    start_daemon(t, host, pin, exe, &["node", "--image", &image, "--config", &config], " up: ")
}
