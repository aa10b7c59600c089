//! A sliding replay window over per-link sequence numbers (as in IPsec and
//! WireGuard): accepts each number once, tolerates reordering within the
//! window, refuses anything older.

/// Width of the window in sequence numbers.
pub const WINDOW: u64 = 128;

/// What one receiver has seen from one sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest sequence number accepted (0: none yet).
    top: u64,
    /// Bit i set: `top - i` was accepted.
    seen: u128,
}

impl ReplayWindow {
    /// An empty window.
    pub const fn new() -> Self {
        Self { top: 0, seen: 0 }
    }

    /// A window that refuses every number up to `floor` as if it had
    /// seen them all: for a sender whose window was forgotten with `floor`
    /// as its highest number, so that coming back it is heard again but
    /// none of its old frames is.
    pub const fn above(floor: u64) -> Self {
        Self { top: floor, seen: u128::MAX }
    }

    /// The highest number accepted (or the floor it started above).
    pub const fn top(&self) -> u64 {
        self.top
    }

    /// Whether `seq` would be accepted, without recording it (check before
    /// authenticating, record after, so forgeries cannot move the window).
    pub fn check(&self, seq: u64) -> bool {
        if seq == 0 {
            return false;
        }
        if seq > self.top {
            return true;
        }
        let age = self.top - seq;
        age < WINDOW && self.seen & (1u128 << age) == 0
    }

    /// Records `seq`; returns false (and records nothing) if it is a replay.
    pub fn accept(&mut self, seq: u64) -> bool {
        if !self.check(seq) {
            return false;
        }
        if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= WINDOW { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.top = seq;
        } else {
            self.seen |= 1u128 << (self.top - seq);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_above_a_floor_refuses_the_floor_and_below_and_nothing_above() {
        let mut w = ReplayWindow::above(1_000);
        assert!(!w.check(1_000));
        assert!(!w.check(999));
        assert!(!w.check(1_000 - WINDOW));
        assert!(!w.check(1));
        assert!(w.accept(1_010));
        // Numbers between the floor and the new top were never seen.
        assert!(w.accept(1_001));
        assert!(w.accept(1_009));
        assert!(!w.accept(1_000));
        assert!(!w.accept(995));
        assert_eq!(w.top(), 1_010);
        // A floor of 0 is an empty window.
        assert_eq!(ReplayWindow::above(0).check(1), ReplayWindow::new().check(1));
    }

    #[test]
    fn each_number_once() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(1));
        assert!(!w.accept(1));
        assert!(w.accept(2));
        assert!(!w.accept(2));
    }

    #[test]
    fn zero_is_never_valid() {
        assert!(!ReplayWindow::new().check(0));
    }

    #[test]
    fn reordering_inside_the_window_is_fine() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(200));
        assert!(w.accept(150));
        assert!(w.accept(199));
        assert!(!w.accept(150));
        assert!(w.accept(200 - (WINDOW - 1)));
        assert!(!w.accept(200 - WINDOW));
    }

    #[test]
    fn older_than_the_window_is_refused() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(1000));
        assert!(!w.accept(1000 - WINDOW));
        assert!(!w.check(1));
    }

    #[test]
    fn big_jump_clears_history() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(1));
        assert!(w.accept(1 + 10 * WINDOW));
        assert!(!w.accept(1));
        assert!(w.accept(WINDOW * 10));
    }

    #[test]
    fn check_does_not_record() {
        let mut w = ReplayWindow::new();
        assert!(w.check(3));
        assert!(w.accept(3));
    }
}
