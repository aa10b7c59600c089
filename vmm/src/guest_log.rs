//! Log lines a guest can cause: rate-limited and escaped.
//!
//! A guest chooses how often it touches a register the wrong way or
//! writes a log line, and what bytes that line holds. Unlimited, one VM
//! could fill the host's disk or drown every other line; unescaped, its
//! bytes could move a terminal's cursor or forge lines of the host's own.
//! So every such line passes a [`LogLimiter`] (a token bucket per VM or
//! device: a burst, then a steady rate, with a count of what was held
//! back) and [`escape`].

use std::fmt::Write;
use std::time::Instant;

/// Lines let through at once before the rate applies.
pub const BURST: f64 = 20.0;
/// Lines per second after the burst.
pub const PER_SECOND: f64 = 5.0;

/// A token bucket for one source of guest-triggered lines.
#[derive(Debug)]
pub struct LogLimiter {
    tokens: f64,
    at: Instant,
    held_back: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        Self { tokens: BURST, at: Instant::now(), held_back: 0 }
    }
}

impl LogLimiter {
    /// Whether a line may go out now; if it may after some were held
    /// back, how many (to say so on the line).
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * PER_SECOND).min(BURST);
        self.at = now;
        if self.tokens < 1.0 {
            self.held_back += 1;
            return None;
        }
        self.tokens -= 1.0;
        Some(std::mem::take(&mut self.held_back))
    }
}

/// `line` with every control character and backslash written as an
/// escape (`\n`, `\x1b`, `\\`), so a guest's bytes print as one inert line.
pub fn escape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Logs a guest-triggered warning through `limiter`, noting how many
/// were held back before it.
#[macro_export]
macro_rules! guest_warn {
    ($limiter:expr, $($arg:tt)+) => {
        if let Some(held_back) = $limiter.allow() {
            if held_back > 0 {
                tracing::warn!(held_back, $($arg)+);
            } else {
                tracing::warn!($($arg)+);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_gets_its_burst_then_the_rate_and_a_count() {
        let mut l = LogLimiter::default();
        let passed = (0..1_000_000).filter(|_| l.allow().is_some()).count();
        assert!(passed <= BURST as usize + 2, "{passed} of a million lines passed");
        std::thread::sleep(std::time::Duration::from_millis(250));
        let held = l.allow().expect("the rate lets one through after a pause");
        assert!(held >= 999_000, "held back {held}");
        assert_eq!(l.allow(), None);
    }

    #[test]
    fn control_characters_print_inert() {
        assert_eq!(escape("a\x1b[2Jb\nc\\d\u{7}"), "a\\u{1b}[2Jb\\nc\\\\d\\u{7}");
        assert_eq!(escape("plain line: ok"), "plain line: ok");
    }
}
