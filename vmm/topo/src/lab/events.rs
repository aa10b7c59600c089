//! Reading a daemon's `--events` file (one JSON object a line, written by
//! `node::events`), tailed until an event matching a predicate arrives or
//! a deadline passes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;
use thiserror::Error;

/// How often the file is read again while waiting.
const POLL: Duration = Duration::from_millis(20);

/// Events that did not come in time.
#[derive(Debug, Error)]
#[error("{found} of {wanted} matching events within {timeout:?}; all events:\n{all}")]
pub struct EventsTimeout {
    /// How many matched.
    pub found: usize,
    /// How many were awaited.
    pub wanted: usize,
    /// How long we waited.
    pub timeout: Duration,
    /// Every event seen, a line each.
    pub all: String,
}

/// A daemon's events file.
#[derive(Debug, Clone)]
pub struct Events {
    /// The file the daemon writes (`--events PATH`).
    pub path: PathBuf,
}

impl Events {
    /// Events of the daemon that writes `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Every complete event so far (a line still being written is left for
    /// the next read; a line that is not JSON is skipped: the writer owns
    /// the format, see `node::events`).
    pub fn all(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.split_inclusive('\n').filter(|l| l.ends_with('\n')).filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The events of kind `kind` so far.
    pub fn of(&self, kind: &str) -> Vec<Value> {
        self.all().into_iter().filter(|e| is(e, kind)).collect()
    }

    /// Waits until `n` events match `pred`; returns them.
    pub fn try_wait_n(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Vec<Value>, EventsTimeout> {
        self.wait_while(n, timeout, pred, || true)
    }

    /// As [`Events::try_wait_n`], giving up early once `alive` says the
    /// writer is gone.
    pub fn wait_while(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
        mut alive: impl FnMut() -> bool,
    ) -> Result<Vec<Value>, EventsTimeout> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<Value> = self.all().into_iter().filter(|e| pred(e)).collect();
            if found.len() >= n {
                return Ok(found);
            }
            if Instant::now() > deadline || !alive() {
                return Err(EventsTimeout { found: found.len(), wanted: n, timeout, all: self.dump() });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until `n` events match `pred`; panics with every event seen
    /// when the deadline passes first (for tests).
    pub fn wait_n(&self, n: usize, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        self.try_wait_n(n, timeout, pred).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits for the first event matching `pred` (panics as
    /// [`Events::wait_n`]).
    pub fn wait(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_n(1, timeout, pred).swap_remove(0)
    }

    /// Every event, a line each (for failure messages).
    pub fn dump(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }
}

/// `event` is of kind `kind`.
pub fn is(event: &Value, kind: &str) -> bool {
    event["event"] == kind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_last_line_waits_for_its_end() {
        let path = std::env::temp_dir().join(format!("pathvm-lab-events-{}", std::process::id()));
        std::fs::write(&path, "{\"event\":\"edge_up\"}\n{\"event\":\"vm").unwrap();
        let ev = Events::new(path.clone());
        assert_eq!(ev.all().len(), 1);
        assert!(ev.try_wait_n(2, Duration::from_millis(50), |_| true).is_err());
        std::fs::write(&path, "{\"event\":\"edge_up\"}\n{\"event\":\"vm_up\"}\n").unwrap();
        assert_eq!(ev.of("vm_up").len(), 1);
        let _ = std::fs::remove_file(&path);
    }
}
