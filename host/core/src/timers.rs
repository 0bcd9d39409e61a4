//! Per-activation timers as a plain state machine: the activation asks it what
//! is due at `now` and when to wake next, so tests drive it with virtual time.
//!
//! Timers are fixed-rate: tick `n` of a periodic timer is due at
//! `first + n * period`, however late the previous tick ran. A tick that is
//! delivered late does not pile up: the next due time is the first one
//! strictly after the moment of delivery, so missed ticks are merged into one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Timer {
    first: Instant,
    next: Instant,
    period: Option<Duration>,
    keep_alive: bool,
}

/// One tick to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick {
    /// The timer's name.
    pub name: String,
    /// Whether the tick counts as activity for idle deactivation.
    pub keep_alive: bool,
}

/// The timers of one activation.
#[derive(Debug)]
pub struct Timers {
    timers: HashMap<String, Timer>,
    /// Most timers held at once.
    max: usize,
}

/// Why a timer could not be set: the activation holds as many as it may.
#[derive(Debug, thiserror::Error)]
#[error("an activation may hold at most {0} timers")]
pub struct TooManyTimers(pub usize);

impl Timers {
    /// No timers; at most `max` at once.
    pub fn new(max: usize) -> Timers {
        Timers {
            timers: HashMap::new(),
            max,
        }
    }

    /// Starts or replaces the timer `name`: first tick at `now + due`, then
    /// every `period` if one is given.
    pub fn set(
        &mut self,
        name: &str,
        now: Instant,
        due: Duration,
        period: Option<Duration>,
        keep_alive: bool,
    ) -> Result<(), TooManyTimers> {
        if self.timers.len() >= self.max && !self.timers.contains_key(name) {
            return Err(TooManyTimers(self.max));
        }
        // A due time past what the clock can hold never comes.
        let first = now
            .checked_add(due)
            .unwrap_or(now + Duration::from_secs(100 * 365 * 86_400));
        let period = period.map(|p| p.max(Duration::from_millis(1)));
        self.timers.insert(
            name.to_owned(),
            Timer {
                first,
                next: first,
                period,
                keep_alive,
            },
        );
        Ok(())
    }

    /// Cancels the timer `name`; returns whether it existed.
    pub fn cancel(&mut self, name: &str) -> bool {
        self.timers.remove(name).is_some()
    }

    /// Cancels every timer.
    pub fn clear(&mut self) {
        self.timers.clear();
    }

    /// When the earliest timer is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.timers.values().map(|t| t.next).min()
    }

    /// Takes the earliest tick due at `now`, if any, and schedules that
    /// timer's next tick (a one-shot timer is removed). Ticks are taken one at
    /// a time so that a tick's turn can still cancel the timers due after it.
    pub fn take_next_due(&mut self, now: Instant) -> Option<Tick> {
        let (name, timer) = self
            .timers
            .iter_mut()
            .filter(|(_, t)| t.next <= now)
            .min_by_key(|(_, t)| t.next)?;
        let tick = Tick {
            name: name.clone(),
            keep_alive: timer.keep_alive,
        };
        match timer.period {
            Some(period) => {
                let elapsed = now.duration_since(timer.first).as_nanos();
                let n = elapsed / period.as_nanos() + 1;
                timer.next =
                    timer.first + period.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
            }
            None => {
                self.timers.remove(&tick.name);
            }
        }
        Some(tick)
    }

    /// Whether no timer is set.
    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn periodic_ticks_stay_on_the_grid_when_delivered_late() {
        let t0 = Instant::now();
        let mut timers = Timers::new(1024);
        timers.set("tick", t0, ms(10), Some(ms(10)), false).unwrap();
        assert!(timers.take_next_due(t0 + ms(9)).is_none());
        assert!(timers.take_next_due(t0 + ms(13)).is_some());
        assert!(timers.take_next_due(t0 + ms(13)).is_none());
        // Delivered 3 ms late, the next tick is still due at 20 ms, not 23 ms.
        assert_eq!(timers.next_due(), Some(t0 + ms(20)));
        // Far behind: the missed ticks merge into one, and the grid holds.
        assert!(timers.take_next_due(t0 + ms(55)).is_some());
        assert!(timers.take_next_due(t0 + ms(55)).is_none());
        assert_eq!(timers.next_due(), Some(t0 + ms(60)));
    }

    #[test]
    fn one_shot_fires_once_and_cancel_stops_a_due_timer() {
        let t0 = Instant::now();
        let mut timers = Timers::new(1024);
        timers.set("once", t0, ms(5), None, true).unwrap();
        timers.set("never", t0, ms(1), Some(ms(1)), false).unwrap();
        assert!(timers.cancel("never"));
        let tick = timers.take_next_due(t0 + ms(10));
        assert_eq!(
            tick,
            Some(Tick {
                name: "once".into(),
                keep_alive: true
            })
        );
        assert!(timers.take_next_due(t0 + ms(100)).is_none());
        assert!(timers.is_empty());
        assert!(!timers.cancel("never"));
    }

    #[test]
    fn ticks_come_out_earliest_first_and_replacing_resets_the_grid() {
        let t0 = Instant::now();
        let mut timers = Timers::new(1024);
        timers.set("b", t0, ms(2), None, false).unwrap();
        timers.set("a", t0, ms(3), None, false).unwrap();
        assert_eq!(timers.take_next_due(t0 + ms(5)).unwrap().name, "b");
        // A turn may cancel a timer that is already due: it never fires.
        assert!(timers.cancel("a"));
        assert!(timers.take_next_due(t0 + ms(5)).is_none());

        timers.set("p", t0, ms(10), Some(ms(10)), false).unwrap();
        timers
            .set("p", t0 + ms(4), ms(10), Some(ms(10)), false)
            .unwrap();
        assert_eq!(timers.next_due(), Some(t0 + ms(14)));
    }

    #[test]
    fn the_number_of_timers_is_bounded() {
        let t0 = Instant::now();
        let mut timers = Timers::new(1024);
        for i in 0..1024 {
            timers.set(&i.to_string(), t0, ms(1), None, false).unwrap();
        }
        assert!(timers.set("one-more", t0, ms(1), None, false).is_err());
        // Replacing an existing timer is still allowed.
        timers.set("0", t0, ms(2), None, false).unwrap();
    }
}
