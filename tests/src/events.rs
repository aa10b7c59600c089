//! Reading a daemon's `--events` file: one JSON object a line, tailed
//! until an event matching a predicate arrives or a deadline passes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How often the file is read again while waiting.
const POLL: Duration = Duration::from_millis(20);

/// A daemon's events file.
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
    /// the next read).
    pub fn all(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event {l:?} is not JSON: {e}")))
            .collect()
    }

    /// The events of kind `kind` so far.
    pub fn of(&self, kind: &str) -> Vec<Value> {
        self.all().into_iter().filter(|e| e["event"] == kind).collect()
    }

    /// Waits until `n` events match `pred`; returns them. Panics with
    /// every event seen when the deadline passes first.
    pub fn wait_n(&self, n: usize, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let found: Vec<Value> = self.all().into_iter().filter(|e| pred(e)).collect();
            if found.len() >= n {
                return found;
            }
            if Instant::now() > deadline {
                panic!("{} of {n} matching events within {timeout:?}; all events:\n{}", found.len(), self.dump());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for the first event matching `pred`.
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
        let path = std::env::temp_dir().join(crate::unique("events-"));
        std::fs::write(&path, "{\"event\":\"edge_up\"}\n{\"event\":\"vm").unwrap();
        let ev = Events::new(path.clone());
        assert_eq!(ev.all().len(), 1);
        assert!(is(&ev.wait(Duration::from_secs(1), |e| is(e, "edge_up")), "edge_up"));
        let _ = std::fs::remove_file(path);
    }
}
