//! The durable-reminder schedule, as a state machine over Unix milliseconds.
//!
//! The runtime stores each reminder as a row and keeps this schedule of all
//! of them in memory; it asks the schedule what is due at `now_ms`, runs each
//! firing as a turn of its actor, and reports how the turn went. The schedule
//! decides what happens next:
//!
//! * a periodic reminder fires on the grid `due + n * period`; firings missed
//!   while the host was down or while the previous firing still ran merge
//!   into one;
//! * a one-shot reminder is done once its turn succeeded;
//! * a one-shot reminder whose turn failed is retried with exponential
//!   backoff ([`RETRY_FIRST`] doubling up to [`RETRY_MAX`]) and given up after
//!   [`MAX_TRIES`] tries: a dead letter the runtime logs and counts.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use crate::ActorRef;

/// First wait before a failed one-shot reminder is tried again.
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// Longest wait between tries of a failed one-shot reminder.
pub const RETRY_MAX: Duration = Duration::from_secs(60);
/// Tries of a one-shot reminder before it is given up as a dead letter.
pub const MAX_TRIES: u32 = 8;

/// A reminder's timing, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The first (or only) firing, in ms since the Unix epoch.
    pub due_ms: u64,
    /// The period, for a periodic reminder.
    pub period_ms: Option<u64>,
}

/// A reminder: its actor and its name.
pub type Key = (ActorRef, String);

/// One firing to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    /// Whose reminder, and which.
    pub key: Key,
    /// Identifies this setting of the reminder: a reminder set again while a
    /// firing runs gets a new generation, and the old firing's outcome no
    /// longer touches it.
    pub generation: u64,
    /// The moment (Unix ms) this firing is for: a slot of a periodic
    /// reminder's grid, a one-shot's due time or retry time. Hosts sharing
    /// the reminders agree on it, so it names the firing among them.
    pub at_ms: u64,
}

/// What to do once a firing's turn has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing: the reminder stays scheduled (periodic), or it was set again
    /// or cancelled meanwhile.
    Keep,
    /// The one-shot reminder has fired: delete its row.
    Done,
    /// The one-shot reminder failed; it fires again at `at_ms`.
    Retry {
        /// When it fires again (Unix ms).
        at_ms: u64,
        /// Tries so far.
        tries: u32,
    },
    /// The one-shot reminder failed [`MAX_TRIES`] times and is given up:
    /// delete its row and record a dead letter.
    GaveUp {
        /// Tries made.
        tries: u32,
    },
}

#[derive(Debug)]
struct Entry {
    timing: Timing,
    /// When it fires next (Unix ms).
    next_ms: u64,
    generation: u64,
    firing: bool,
    /// Failed tries of a one-shot reminder.
    failures: u32,
}

/// Every reminder a host serves, ordered by when each fires next.
#[derive(Debug, Default)]
pub struct Schedule {
    entries: HashMap<Key, Entry>,
    /// `(next_ms, generation)` of every entry waiting to fire.
    queue: BTreeSet<(u64, u64)>,
    by_generation: HashMap<u64, Key>,
    next_generation: u64,
    /// How many reminders each actor holds.
    per_actor: HashMap<ActorRef, usize>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The wait before try `tries + 1` of a failed one-shot reminder.
pub fn retry_delay(tries: u32) -> Duration {
    let doublings = tries.saturating_sub(1).min(16);
    RETRY_FIRST.saturating_mul(1 << doublings).min(RETRY_MAX)
}

impl Schedule {
    /// Schedules `key` (replacing any reminder of that name); returns its
    /// generation.
    pub fn insert(&mut self, key: Key, timing: Timing) -> u64 {
        self.remove(&key);
        *self.per_actor.entry(key.0.clone()).or_default() += 1;
        self.next_generation += 1;
        let generation = self.next_generation;
        self.queue.insert((timing.due_ms, generation));
        self.by_generation.insert(generation, key.clone());
        self.entries.insert(
            key,
            Entry {
                timing,
                next_ms: timing.due_ms,
                generation,
                firing: false,
                failures: 0,
            },
        );
        generation
    }

    /// Unschedules `key`; returns whether it was scheduled.
    pub fn remove(&mut self, key: &Key) -> bool {
        match self.entries.remove(key) {
            Some(entry) => {
                self.queue.remove(&(entry.next_ms, entry.generation));
                self.by_generation.remove(&entry.generation);
                if let Some(held) = self.per_actor.get_mut(&key.0) {
                    *held -= 1;
                    if *held == 0 {
                        self.per_actor.remove(&key.0);
                    }
                }
                true
            }
            None => false,
        }
    }

    /// The timing `key` is scheduled with.
    pub fn timing(&self, key: &Key) -> Option<Timing> {
        self.entries.get(key).map(|entry| entry.timing)
    }

    /// Whether `key` is scheduled.
    pub fn contains(&self, key: &Key) -> bool {
        self.entries.contains_key(key)
    }

    /// How many reminders `actor` holds.
    pub fn held_by(&self, actor: &ActorRef) -> usize {
        self.per_actor.get(actor).copied().unwrap_or(0)
    }

    /// How many reminders are scheduled.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no reminder is scheduled.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Takes the firings due at `now_ms`, moving periodic reminders to their
    /// next slot on the grid. A reminder whose previous firing still runs is
    /// not fired twice.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<Firing> {
        let mut due = Vec::new();
        while let Some(&(at, generation)) = self.queue.first() {
            if at > now_ms {
                break;
            }
            self.queue.pop_first();
            let mut slot = at;
            let Some(key) = self.by_generation.get(&generation) else {
                continue;
            };
            let Some(entry) = self.entries.get_mut(key) else {
                continue;
            };
            match entry.timing.period_ms {
                Some(period) => {
                    let period = period.max(1);
                    let behind = now_ms.saturating_sub(entry.timing.due_ms) / period + 1;
                    entry.next_ms = entry
                        .timing
                        .due_ms
                        .saturating_add(behind.saturating_mul(period));
                    // Missed slots merge into the latest one passed.
                    slot = entry.next_ms.saturating_sub(period).max(at);
                    self.queue.insert((entry.next_ms, generation));
                }
                None => entry.next_ms = u64::MAX,
            }
            if !entry.firing {
                entry.firing = true;
                due.push(Firing {
                    key: key.clone(),
                    generation,
                    at_ms: slot,
                });
            }
        }
        due
    }

    /// Records how `firing`'s turn went at `now_ms` and says what to do.
    pub fn finished(&mut self, firing: &Firing, succeeded: bool, now_ms: u64) -> Outcome {
        let Some(entry) = self
            .entries
            .get_mut(&firing.key)
            .filter(|e| e.generation == firing.generation)
        else {
            return Outcome::Keep;
        };
        entry.firing = false;
        if entry.timing.period_ms.is_some() {
            return Outcome::Keep;
        }
        if succeeded {
            self.remove(&firing.key);
            return Outcome::Done;
        }
        entry.failures += 1;
        let tries = entry.failures;
        if tries >= MAX_TRIES {
            self.remove(&firing.key);
            return Outcome::GaveUp { tries };
        }
        let at_ms = now_ms.saturating_add(millis(retry_delay(tries)));
        entry.next_ms = at_ms;
        self.queue.insert((at_ms, firing.generation));
        Outcome::Retry { at_ms, tries }
    }

    /// Records that another host ran `firing` (hosts sharing reminders each
    /// schedule them, and one of them runs each firing): a periodic
    /// reminder stays on its grid; a one-shot one leaves this schedule, and
    /// the host that ran it deletes its row.
    pub fn passed(&mut self, firing: &Firing) {
        let Some(entry) = self
            .entries
            .get_mut(&firing.key)
            .filter(|e| e.generation == firing.generation)
        else {
            return;
        };
        entry.firing = false;
        if entry.timing.period_ms.is_none() {
            self.remove(&firing.key);
        }
    }

    /// When the earliest reminder fires (Unix ms).
    pub fn next_due(&self) -> Option<u64> {
        self.queue.first().map(|&(at, _)| at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        (ActorRef::new("a", "1"), "r".to_owned())
    }

    #[test]
    fn firings_are_named_by_their_slot_and_another_host_s_firing_passes() {
        let mut s = Schedule::default();
        let periodic = (ActorRef::new("a", "1"), "tick".to_owned());
        s.insert(
            periodic.clone(),
            Timing {
                due_ms: 1_000,
                period_ms: Some(100),
            },
        );
        s.insert(
            key(),
            Timing {
                due_ms: 1_050,
                period_ms: None,
            },
        );
        // A host that looks late fires the latest slot it missed, as one
        // that looked in time would have at that slot.
        let due = s.take_due(1_375);
        let at: Vec<(String, u64)> = due.iter().map(|f| (f.key.1.clone(), f.at_ms)).collect();
        assert_eq!(at, vec![("tick".into(), 1_300), ("r".into(), 1_050)]);
        for firing in &due {
            s.passed(firing);
        }
        // The periodic one stays on its grid; the one-shot is gone here.
        assert!(s.contains(&periodic));
        assert!(!s.contains(&key()));
        assert_eq!(s.next_due(), Some(1_400));
    }

    #[test]
    fn periodic_reminders_stay_on_their_grid_and_merge_missed_firings() {
        let mut s = Schedule::default();
        s.insert(
            key(),
            Timing {
                due_ms: 1_000,
                period_ms: Some(100),
            },
        );
        assert!(s.take_due(999).is_empty());
        // Far behind: one firing, the next on the grid after now.
        let due = s.take_due(1_550);
        assert_eq!(due.len(), 1);
        assert_eq!(s.next_due(), Some(1_600));
        // Still firing: the next slot is skipped, not queued twice.
        assert!(s.take_due(1_600).is_empty());
        assert_eq!(s.finished(&due[0], false, 1_650), Outcome::Keep);
        assert_eq!(s.take_due(1_700).len(), 1);
    }

    #[test]
    fn a_failing_one_shot_reminder_backs_off_and_is_given_up() {
        let mut s = Schedule::default();
        s.insert(
            key(),
            Timing {
                due_ms: 0,
                period_ms: None,
            },
        );
        let mut now = 0;
        let mut waits = Vec::new();
        loop {
            let due = s.take_due(now);
            assert_eq!(due.len(), 1, "due at {now}");
            match s.finished(&due[0], false, now) {
                Outcome::Retry { at_ms, tries } => {
                    waits.push(at_ms - now);
                    assert_eq!(tries as usize, waits.len());
                    // Nothing fires before the backoff is over.
                    assert!(s.take_due(at_ms - 1).is_empty());
                    now = at_ms;
                }
                Outcome::GaveUp { tries } => {
                    assert_eq!(tries, MAX_TRIES);
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            waits,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000],
            "doubling from 1 s, capped at 60 s"
        );
        assert!(s.is_empty());
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn a_one_shot_reminder_is_done_after_one_good_turn_and_a_reset_wins() {
        let mut s = Schedule::default();
        let timing = Timing {
            due_ms: 10,
            period_ms: None,
        };
        s.insert(key(), timing);
        let due = s.take_due(10);
        // Set again while the firing ran: the old firing no longer owns it.
        s.insert(
            key(),
            Timing {
                due_ms: 50,
                ..timing
            },
        );
        assert_eq!(s.finished(&due[0], true, 20), Outcome::Keep);
        assert_eq!(s.next_due(), Some(50));
        let due = s.take_due(50);
        assert_eq!(s.finished(&due[0], true, 60), Outcome::Done);
        assert!(s.is_empty());
    }

    #[test]
    fn the_reminders_each_actor_holds_are_counted() {
        let mut s = Schedule::default();
        let one = ActorRef::new("a", "1");
        let timing = Timing {
            due_ms: 10,
            period_ms: None,
        };
        for name in ["x", "y", "x"] {
            s.insert((one.clone(), name.to_owned()), timing);
        }
        s.insert((ActorRef::new("a", "2"), "x".to_owned()), timing);
        assert_eq!(s.held_by(&one), 2, "setting a reminder again replaces it");
        // A one-shot reminder that fired is no longer held.
        let due = s.take_due(10);
        for firing in due.iter().filter(|f| f.key.0 == one) {
            assert_eq!(s.finished(firing, true, 11), Outcome::Done);
        }
        assert_eq!(s.held_by(&one), 0);
        assert_eq!(s.held_by(&ActorRef::new("a", "2")), 1);
    }
}
