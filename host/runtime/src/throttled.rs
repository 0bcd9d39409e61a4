//! Warnings that can fire far more often than anybody can read them.
//!
//! A host that is overloaded, or that shuts down with full mailboxes, can
//! fail tens of thousands of one-way messages and session events within a
//! second (54,146 in 0.7 s when a host serving 5,000 world clients was
//! stopped). A line for each buries everything else in the log and costs
//! the host its time while it writes them. Such a warning is written at
//! most once per interval, with how many like it were held back since the
//! last one written; [`Host::shutdown`](crate::Host::shutdown) writes the
//! count still held back when it is done. The budget is the process's,
//! shared by every host in it (`grove run` has one). The warning that turns
//! wait for the running-turn limit uses the same helper, at most every ten
//! seconds, without a count: it tells of a state, not of lost messages.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Messages and session events that could not be delivered: one line a
/// second at most.
pub(crate) static UNDELIVERED: Throttled = Throttled::new(Duration::from_secs(1));

/// A warning written at most once per interval.
pub(crate) struct Throttled {
    every: Duration,
    state: Mutex<State>,
}

struct State {
    /// When the last line was written.
    written: Option<Instant>,
    /// Occurrences since then that were not written.
    held_back: u64,
}

impl Throttled {
    pub(crate) const fn new(every: Duration) -> Throttled {
        Throttled {
            every,
            state: Mutex::new(State {
                written: None,
                held_back: 0,
            }),
        }
    }

    /// Whether to write this occurrence: `Some(n)` with the `n` held back
    /// before it, or `None` to hold it back too.
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state
            .written
            .is_some_and(|at| now.saturating_duration_since(at) < self.every)
        {
            state.held_back += 1;
            return None;
        }
        state.written = Some(now);
        Some(std::mem::take(&mut state.held_back))
    }

    /// The occurrences held back since the last line written, which count
    /// as reported from now on.
    pub(crate) fn take_held_back(&self) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::take(&mut state.held_back)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_line_and_the_next_line_counts_the_rest() {
        let warning = Throttled::new(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(warning.admit_at(start), Some(0));
        for i in 1..1_000 {
            assert_eq!(warning.admit_at(start + Duration::from_micros(i)), None);
        }
        let later = start + Duration::from_secs(1);
        assert_eq!(warning.admit_at(later), Some(999));
        assert_eq!(warning.admit_at(later), None);
        assert_eq!(warning.take_held_back(), 1);
        assert_eq!(warning.take_held_back(), 0);
        assert_eq!(warning.admit_at(later + Duration::from_secs(5)), Some(0));
    }
}
