//! A daemon (`pathvm node`, `pathvm edge`, a service) started in a test
//! host's namespace: its stderr kept for people reading a failure, its
//! events file for programs, ended by PID and reaped on drop.

use std::collections::VecDeque;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::events::{is, Events};

/// How long a daemon gets to exit after SIGTERM before SIGKILL on drop.
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
    /// It did not report that it was ready.
    #[error("{what} did not start: {why}")]
    NotReady {
        /// Which daemon.
        what: String,
        /// Its last stderr lines, or that it said nothing.
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

/// A private directory for a daemon's events file, removed on drop.
#[derive(Debug)]
struct EventsDir(PathBuf);

impl EventsDir {
    fn new() -> std::io::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "pathvm-lab-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p)?;
        Ok(Self(p))
    }
}

impl Drop for EventsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A daemon we started: ended (SIGTERM, then SIGKILL if it lingers) and
/// reaped on drop.
pub struct Daemon {
    what: String,
    child: Child,
    log: Arc<Mutex<LogLines>>,
    events: Events,
    _dir: EventsDir,
}

impl Daemon {
    /// Spawns `cmd` with `--events FILE` appended and its stderr piped, and
    /// waits up to `within` for an event of kind `ready` (`node_up`,
    /// `edge_up`). Fails early, with its last stderr lines, if it exits.
    pub fn start(what: &str, mut cmd: Command, ready: &str, within: Duration) -> Result<Self, DaemonError> {
        let spawn_err = |source| DaemonError::Spawn { what: what.to_string(), source };
        let dir = EventsDir::new().map_err(spawn_err)?;
        let events = Events::new(dir.0.join("events.jsonl"));
        cmd.arg("--events").arg(&events.path).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(spawn_err)?;
        let err = child.stderr.take();
        let log: Arc<Mutex<LogLines>> = Arc::default();
        let sink = log.clone();
        std::thread::spawn(move || {
            let Some(err) = err else { return };
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
                log.lines.push_back(line);
                if log.lines.len() > LOG_LINES_KEPT {
                    log.lines.pop_front();
                    log.dropped += 1;
                }
            }
        });
        let mut d = Self { what: what.to_string(), child, log, events, _dir: dir };
        let waited = {
            let child = &mut d.child;
            d.events.wait_while(1, within, |e| is(e, ready), || matches!(child.try_wait(), Ok(None)))
        };
        match waited {
            Ok(_) => Ok(d),
            Err(_) => {
                // Give the drain thread a moment to read what a dying daemon said.
                std::thread::sleep(Duration::from_millis(100));
                let all = d.log_since(0);
                let tail = &all[all.len().saturating_sub(20)..];
                let why = if tail.is_empty() {
                    format!("no {ready} event within {within:?}, nothing on stderr")
                } else {
                    format!("no {ready} event within {within:?}; it said:\n{}", tail.join("\n"))
                };
                Err(DaemonError::NotReady { what: what.to_string(), why })
            }
        }
    }

    /// What it is (for messages).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Its process id (of the daemon itself: `ip netns exec` and `taskset`
    /// exec, they do not fork).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process, for its piped stdin and stdout.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Its events.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Number of stderr lines read so far: a mark for [`Daemon::log_since`].
    pub fn log_mark(&self) -> usize {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.dropped + log.lines.len()
    }

    /// The stderr lines read since `mark` (those still kept).
    pub fn log_since(&self, mark: usize) -> Vec<String> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.lines.iter().skip(mark.saturating_sub(log.dropped)).cloned().collect()
    }

    /// Its stderr so far (the lines still kept), for people.
    pub fn log_text(&self) -> String {
        let mut s = self.log_since(0).join("\n");
        s.push('\n');
        s
    }

    /// Sends SIGTERM and waits up to `timeout` (then SIGKILL); its exit
    /// code (None if killed) and its stderr.
    pub fn terminate(mut self, timeout: Duration) -> (Option<i32>, String) {
        let code = self.stop(timeout);
        // The drain thread ends with the pipe; give it a moment.
        std::thread::sleep(Duration::from_millis(50));
        (code, self.log_text())
    }

    /// Kills it at once (SIGKILL, as a crash would) and reaps it.
    pub fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // Child::kill signals our own unreaped child by PID.
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    fn stop(&mut self, timeout: Duration) -> Option<i32> {
        // try_wait also reports a child already reaped (by `kill`), whose
        // PID may belong to someone else by now: never signal that.
        match self.child.try_wait() {
            Ok(None) => {}
            Ok(Some(s)) => return s.code(),
            Err(_) => return None,
        }
        // SAFETY: signals our own child, not yet reaped (checked above), by PID.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            if Instant::now() > deadline {
                tracing::warn!("{} (pid {}) ignored SIGTERM for {timeout:?}: killing it", self.what, self.child.id());
                self.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop(EXIT_WITHIN);
    }
}
