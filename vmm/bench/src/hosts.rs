//! Test hosts and daemons for benchmarks: started in their namespaces,
//! ended (by PID) and the hosts taken down when the benchmark is done.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;

use topo::Topo;

/// How long a daemon gets to say it is ready.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// How long a daemon gets to exit after SIGTERM before SIGKILL.
const EXIT_WITHIN: Duration = Duration::from_secs(10);
/// Lines of a daemon's stderr kept (older ones are dropped).
const LOG_LINES_KEPT: usize = 20_000;

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

/// A daemon's stderr lines, as far as they have been read.
#[derive(Debug, Default)]
struct LogLines {
    lines: VecDeque<String>,
    /// Lines dropped from the front to bound memory.
    dropped: usize,
}

/// A daemon we started: ended (SIGTERM, then SIGKILL if it lingers) and
/// reaped on drop. Its stderr is kept, line by line.
pub struct Reaped {
    child: Child,
    log: Arc<Mutex<LogLines>>,
}

impl Reaped {
    /// Its process id (of the daemon itself: `ip netns exec` and `taskset`
    /// exec, they do not fork).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Number of stderr lines read so far: a mark for [`Reaped::log_since`].
    pub fn log_mark(&self) -> usize {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.dropped + log.lines.len()
    }

    /// The stderr lines read since `mark` (those still kept).
    pub fn log_since(&self, mark: usize) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.lines.iter().skip(mark.saturating_sub(log.dropped)).cloned().collect()
    }

    /// Kills it at once (SIGKILL, as a crash would) and reaps it.
    pub fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // Child::kill signals our own unreaped child by PID.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        // try_wait also reports a child already reaped (by `kill`), whose
        // PID may belong to someone else by now: never signal that.
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SAFETY: signals our own child, not yet reaped (checked above), by PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + EXIT_WITHIN;
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                tracing::warn!("daemon {} ignored SIGTERM for {EXIT_WITHIN:?}: killing it", self.child.id());
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
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
    let daemon = Reaped { child, log: Arc::default() };
    let (tx, rx) = std::sync::mpsc::channel();
    let ready = ready.to_string();
    let log = daemon.log.clone();
    std::thread::spawn(move || {
        let Some(err) = err else { return };
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if line.contains(&ready) {
                let _ = tx.send(Ok(()));
            } else if line.contains("error") {
                let _ = tx.send(Err(line.clone()));
            }
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            log.lines.push_back(line);
            if log.lines.len() > LOG_LINES_KEPT {
                log.lines.pop_front();
                log.dropped += 1;
            }
        }
    });
    match rx.recv_timeout(READY_WITHIN) {
        Ok(Ok(())) => Ok(daemon),
        Ok(Err(line)) => Err(DaemonError::NotReady { what, why: line }),
        Err(_) => Err(DaemonError::NotReady { what, why: format!("no ready line within {READY_WITHIN:?}") }),
    }
}

/// Starts `host`'s node.
pub fn start_node(exe: &Path, image: &Path, t: &Topo, host: &str, pin: bool) -> Result<Reaped, DaemonError> {
    let config = t.node_config_path(host);
    let (image, config) = (image.to_string_lossy(), config.to_string_lossy());
    start_daemon(t, host, pin, exe, &["node", "--image", &image, "--config", &config], " up: ")
}

/// The address of `host` on its first link (what kernel routes and the
/// edge both reach it by), if the topology has that host on a link.
pub fn host_addr(t: &Topo, host: &str) -> Option<std::net::Ipv4Addr> {
    t.file.links.iter().enumerate().find_map(|(i, l)| {
        let end = if l.a == host {
            1
        } else if l.b == host {
            2
        } else {
            return None;
        };
        Topo::addr(i, end).parse().ok()
    })
}
