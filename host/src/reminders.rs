//! Durable reminders: named, persisted wake-ups for actors.
//!
//! A reminder is a row in the state backend (namespace `$grove`, table
//! `reminders`, `key1` = the actor type, `key2` = `<key length>:<key><name>`,
//! value = JSON `{"due_ms": <Unix ms>, "period_ms": <ms or null>}`), so it
//! survives deactivation and host restarts. The host keeps every reminder of
//! its loaded actor types in memory, ordered by due time; when one falls due
//! it is delivered to its actor — activating it if needed — as an
//! `on-reminder` turn.
//!
//! * Periodic reminders fire on the grid `first + n * period`; the row is not
//!   rewritten per firing. Firings missed while the host was down, or while a
//!   previous firing was still running, are merged into one.
//! * A one-shot reminder's row is deleted once it has fired, unless the actor
//!   set it again meanwhile.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};

use crate::activation::Envelope;
use crate::host::Host;
use crate::state::{RowKey, StateError, StateStore};
use crate::ActorRef;

/// The state namespace Grove keeps its own rows in. Actor types are WIT
/// identifiers, so no plugin can own it.
pub const NAMESPACE: &str = "$grove";
/// The table holding reminders.
pub const TABLE: &str = "reminders";
/// Shortest period a periodic reminder may have.
pub const MIN_PERIOD: Duration = Duration::from_millis(100);

/// A reminder as stored.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct Stored {
    /// The first (or only) firing, in ms since the Unix epoch.
    due_ms: u64,
    /// The period, for a periodic reminder.
    period_ms: Option<u64>,
}

type Key = (ActorRef, String);

struct Entry {
    stored: Stored,
    /// When it fires next (Unix ms).
    next_ms: u64,
    /// Changes whenever the reminder is set again.
    generation: u64,
    firing: bool,
}

#[derive(Default)]
struct Schedule {
    entries: HashMap<Key, Entry>,
    /// `(next_ms, generation)` of every entry waiting to fire.
    queue: BTreeSet<(u64, u64)>,
    by_generation: HashMap<u64, Key>,
    next_generation: u64,
}

impl Schedule {
    fn insert(&mut self, key: Key, stored: Stored) -> u64 {
        self.remove(&key);
        self.next_generation += 1;
        let generation = self.next_generation;
        let next_ms = stored.due_ms;
        self.queue.insert((next_ms, generation));
        self.by_generation.insert(generation, key.clone());
        self.entries.insert(
            key,
            Entry {
                stored,
                next_ms,
                generation,
                firing: false,
            },
        );
        generation
    }

    fn remove(&mut self, key: &Key) -> bool {
        match self.entries.remove(key) {
            Some(entry) => {
                self.queue.remove(&(entry.next_ms, entry.generation));
                self.by_generation.remove(&entry.generation);
                true
            }
            None => false,
        }
    }

    /// Takes the reminders due at `now_ms`, rescheduling periodic ones.
    fn take_due(&mut self, now_ms: u64) -> Vec<(Key, u64, bool)> {
        let mut due = Vec::new();
        while let Some(&(at, generation)) = self.queue.first() {
            if at > now_ms {
                break;
            }
            self.queue.pop_first();
            let Some(key) = self.by_generation.get(&generation).cloned() else {
                continue;
            };
            let Some(entry) = self.entries.get_mut(&key) else {
                continue;
            };
            let skip = entry.firing;
            match entry.stored.period_ms {
                Some(period) => {
                    let period = period.max(1);
                    let behind = now_ms.saturating_sub(entry.stored.due_ms) / period + 1;
                    entry.next_ms = entry.stored.due_ms + behind * period;
                    self.queue.insert((entry.next_ms, generation));
                }
                None => entry.next_ms = u64::MAX,
            }
            if !skip {
                entry.firing = true;
                due.push((key, generation, entry.stored.period_ms.is_none()));
            }
        }
        due
    }

    fn next_due(&self) -> Option<u64> {
        self.queue.first().map(|&(at, _)| at)
    }
}

/// The reminders of one host: the schedule. The rows are in the host's state
/// store, passed in by the host.
#[derive(Default)]
pub(crate) struct Reminders {
    schedule: Mutex<Schedule>,
    changed: Notify,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `key2` of a reminder row: the actor key, length-prefixed, then the name.
fn row_key2(actor: &ActorRef, name: &str) -> String {
    format!("{}:{}{}", actor.key.len(), actor.key, name)
}

fn parse_key2(key2: &str) -> Option<(&str, &str)> {
    let (len, rest) = key2.split_once(':')?;
    let len: usize = len.parse().ok()?;
    (rest.is_char_boundary(len) && len <= rest.len()).then(|| rest.split_at(len))
}

impl Reminders {
    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stores and schedules a reminder for `actor`.
    pub(crate) async fn set(
        &self,
        store: &StateStore,
        actor: &ActorRef,
        name: &str,
        due: Duration,
        period: Option<Duration>,
    ) -> Result<(), StateError> {
        if let Some(p) = period.filter(|p| *p < MIN_PERIOD) {
            return Err(StateError::TooLarge(format!(
                "a reminder period of {p:?} is too short; the minimum is {MIN_PERIOD:?}"
            )));
        }
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let now = now_ms();
        let stored = Stored {
            due_ms: now.saturating_add(millis(due)),
            period_ms: period.map(millis),
        };
        let key2 = row_key2(actor, name);
        let value = serde_json::to_vec(&stored).expect("a reminder serializes");
        store.put(row(actor, &key2), value).await?;
        self.schedule()
            .insert((actor.clone(), name.to_owned()), stored);
        self.changed.notify_one();
        Ok(())
    }

    /// Deletes a reminder; returns whether it existed.
    pub(crate) async fn cancel(
        &self,
        store: &StateStore,
        actor: &ActorRef,
        name: &str,
    ) -> Result<bool, StateError> {
        let key2 = row_key2(actor, name);
        let existed = store.delete(row(actor, &key2)).await?;
        let scheduled = self.schedule().remove(&(actor.clone(), name.to_owned()));
        Ok(existed || scheduled)
    }

    /// Loads the stored reminders of `actor_type` into the schedule.
    pub(crate) async fn load(
        &self,
        store: &StateStore,
        actor_type: &str,
    ) -> Result<usize, StateError> {
        let rows = store.list(NAMESPACE, TABLE, actor_type).await?;
        let mut loaded = 0;
        let mut schedule = self.schedule();
        for row in rows {
            let parsed = row
                .key2
                .as_deref()
                .and_then(parse_key2)
                .zip(serde_json::from_slice::<Stored>(&row.value).ok());
            let Some(((key, name), stored)) = parsed else {
                tracing::warn!(actor_type, key2 = ?row.key2, "skipping an unreadable reminder row");
                continue;
            };
            let key = (ActorRef::new(actor_type, key), name.to_owned());
            if !schedule.entries.contains_key(&key) {
                schedule.insert(key, stored);
                loaded += 1;
            }
        }
        drop(schedule);
        self.changed.notify_one();
        Ok(loaded)
    }

    /// Wakes the schedule, e.g. to let it see that the host shuts down.
    pub(crate) fn wake(&self) {
        self.changed.notify_one();
    }

    /// Runs the schedule until the host shuts down or is gone, delivering
    /// due reminders. Holds the host only while delivering.
    pub(crate) async fn run(self: Arc<Self>, host: Weak<crate::host::Inner>) {
        loop {
            let changed = self.changed.notified();
            {
                let Some(host) = host.upgrade().map(Host::from_inner) else {
                    return;
                };
                if host.is_shutting_down() {
                    return;
                }
                let due = self.schedule().take_due(now_ms());
                for (key, generation, one_shot) in due {
                    tokio::spawn(fire(host.clone(), key, generation, one_shot));
                }
            }
            let wait = self
                .schedule()
                .next_due()
                .map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
                .unwrap_or(Duration::from_secs(1))
                .min(Duration::from_secs(1));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = changed => {}
            }
        }
    }
}

fn row<'a>(actor: &'a ActorRef, key2: &'a str) -> RowKey<'a> {
    RowKey {
        namespace: NAMESPACE,
        table: TABLE,
        key1: &actor.actor_type,
        key2: Some(key2),
    }
}

/// Delivers one firing and waits for its turn to end.
async fn fire(host: Host, (actor, name): Key, generation: u64, one_shot: bool) {
    let (done, finished) = oneshot::channel();
    host.deliver(
        &actor,
        Envelope::Reminder {
            name: name.clone(),
            done,
        },
    )
    .await;
    let outcome = finished.await.unwrap_or_else(|_| {
        Err(crate::CallError::ActivationFailed {
            actor: actor.to_string(),
            message: "the activation ended before the reminder ran".into(),
        })
    });
    if let Err(error) = &outcome {
        tracing::warn!(%actor, reminder = %name, %error, "reminder turn failed");
    }
    let reminders = host.reminders();
    let key = (actor, name);
    let finished_one_shot = {
        let mut schedule = reminders.schedule();
        match schedule.entries.get_mut(&key) {
            Some(entry) if entry.generation == generation => {
                entry.firing = false;
                // A one-shot reminder is done once its turn ran; one whose
                // actor could not be reached fires again a second later.
                match (one_shot, &outcome) {
                    (true, Ok(())) => {
                        schedule.remove(&key);
                        true
                    }
                    (true, Err(_)) => {
                        let retry = now_ms() + 1000;
                        entry.next_ms = retry;
                        schedule.queue.insert((retry, generation));
                        false
                    }
                    (false, _) => false,
                }
            }
            _ => false,
        }
    };
    if finished_one_shot {
        let key2 = row_key2(&key.0, &key.1);
        if let Err(error) = host.state().delete(row(&key.0, &key2)).await {
            tracing::warn!(actor = %key.0, reminder = %key.1, %error, "could not delete a fired reminder");
        }
    }
    reminders.changed.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reminder_rows_name_the_actor_key_and_the_reminder() {
        let actor = ActorRef::new("player", "4:2");
        let key2 = row_key2(&actor, "daily");
        assert_eq!(parse_key2(&key2), Some(("4:2", "daily")));
        assert_eq!(parse_key2("x"), None);
        assert_eq!(parse_key2("9:ab"), None);
    }

    #[test]
    fn periodic_reminders_stay_on_their_grid_and_merge_missed_firings() {
        let mut s = Schedule::default();
        let key = (ActorRef::new("a", "1"), "r".to_owned());
        let stored = Stored {
            due_ms: 1_000,
            period_ms: Some(100),
        };
        s.insert(key.clone(), stored);
        assert!(s.take_due(999).is_empty());
        // Far behind: one firing, the next on the grid after now.
        assert_eq!(s.take_due(1_550).len(), 1);
        assert_eq!(s.next_due(), Some(1_600));
        // Still firing: the next slot is skipped, not queued twice.
        assert!(s.take_due(1_600).is_empty());
        s.entries.get_mut(&key).unwrap().firing = false;
        assert_eq!(s.take_due(1_700).len(), 1);
    }
}
