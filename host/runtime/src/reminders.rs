//! Durable reminders: named, persisted wake-ups for actors.
//!
//! A reminder is a row in the state backend (namespace `$grove`, table
//! `reminders`, `key1` = the actor type, `key2` = `<key length>:<key><name>`,
//! value = JSON `{"due_ms": <Unix ms>, "period_ms": <ms or null>}`), so it
//! survives deactivation and host restarts. The host keeps every reminder of
//! its loaded actor types in a [`Schedule`] (see `grove_core::reminders` for
//! the rules: the periodic grid, merged firings, retries with backoff and
//! dead letters); when one falls due it is delivered to its actor —
//! activating it if needed — as an `on-reminder` turn.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use grove_core::reminders::{Firing, Outcome, Schedule, Timing};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};

use crate::directory::Directory;
use crate::error::{CallError, Unavailable};
use crate::mailbox::Envelope;
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

impl From<Stored> for Timing {
    fn from(s: Stored) -> Timing {
        Timing {
            due_ms: s.due_ms,
            period_ms: s.period_ms,
        }
    }
}

/// The reminders of one host: their schedule, the store holding their rows,
/// and the directory their firings are delivered through.
pub(crate) struct Reminders {
    schedule: Mutex<Schedule>,
    changed: Notify,
    state: StateStore,
    directory: Weak<Directory>,
    /// How long a firing may wait for its actor's turn.
    turn_timeout: Duration,
    running: AtomicBool,
    dead_letters: AtomicU64,
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

fn row<'a>(actor: &'a ActorRef, key2: &'a str) -> RowKey<'a> {
    RowKey {
        namespace: NAMESPACE,
        table: TABLE,
        key1: &actor.actor_type,
        key2: Some(key2),
    }
}

impl Reminders {
    pub(crate) fn new(
        state: StateStore,
        directory: Weak<Directory>,
        turn_timeout: Duration,
    ) -> Arc<Reminders> {
        Arc::new(Reminders {
            schedule: Mutex::default(),
            changed: Notify::new(),
            state,
            directory,
            turn_timeout,
            running: AtomicBool::new(false),
            dead_letters: AtomicU64::new(0),
        })
    }

    fn schedule(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One-shot reminders given up after failing every try, since start.
    pub(crate) fn dead_letters(&self) -> u64 {
        self.dead_letters.load(Ordering::Relaxed)
    }

    /// Stores and schedules a reminder for `actor`.
    pub(crate) async fn set(
        self: &Arc<Self>,
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
        let stored = Stored {
            due_ms: now_ms().saturating_add(millis(due)),
            period_ms: period.map(millis),
        };
        let key2 = row_key2(actor, name);
        let value = serde_json::to_vec(&stored)
            .map_err(|e| StateError::TooLarge(format!("reminder {name}: {e}")))?;
        self.state.put(row(actor, &key2), value).await?;
        self.schedule()
            .insert((actor.clone(), name.to_owned()), stored.into());
        self.run();
        self.changed.notify_one();
        Ok(())
    }

    /// Deletes a reminder; returns whether it existed.
    pub(crate) async fn cancel(&self, actor: &ActorRef, name: &str) -> Result<bool, StateError> {
        let key2 = row_key2(actor, name);
        let existed = self.state.delete(row(actor, &key2)).await?;
        let scheduled = self.schedule().remove(&(actor.clone(), name.to_owned()));
        Ok(existed || scheduled)
    }

    /// Loads the stored reminders of `actor_type` into the schedule.
    pub(crate) async fn load(self: &Arc<Self>, actor_type: &str) -> Result<usize, StateError> {
        let rows = self.state.list(NAMESPACE, TABLE, actor_type).await?;
        let mut loaded = 0;
        {
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
                if !schedule.contains(&key) {
                    schedule.insert(key, stored.into());
                    loaded += 1;
                }
            }
        }
        self.run();
        self.changed.notify_one();
        Ok(loaded)
    }

    /// Wakes the schedule, e.g. to let it see that the host shuts down.
    pub(crate) fn wake(&self) {
        self.changed.notify_one();
    }

    /// Starts the task firing reminders, unless it runs already.
    fn run(self: &Arc<Self>) {
        if !self.running.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.clone().fire_due());
        }
    }

    /// Delivers due reminders until the host shuts down or is gone.
    async fn fire_due(self: Arc<Self>) {
        loop {
            let changed = self.changed.notified();
            {
                let Some(directory) = self.directory.upgrade() else {
                    return;
                };
                if directory.is_stopping() {
                    return;
                }
                let due = self.schedule().take_due(now_ms());
                for firing in due {
                    tokio::spawn(self.clone().fire(directory.clone(), firing));
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

    /// Delivers one firing, waits for its turn to end, and does what the
    /// schedule says next.
    async fn fire(self: Arc<Self>, directory: Arc<Directory>, firing: Firing) {
        let (actor, name) = &firing.key;
        let (done, finished) = oneshot::channel();
        let deadline = Instant::now() + self.turn_timeout;
        let envelope = Envelope::Reminder {
            name: name.clone(),
            deadline,
            done,
        };
        // An undelivered firing is answered with the error.
        let _ = directory.deliver(actor, envelope, true).await;
        let outcome = match tokio::time::timeout_at(deadline.into(), finished).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(CallError::Unavailable(Unavailable::ActivationFailed {
                actor: actor.to_string(),
                message: "the activation ended before the reminder ran".into(),
            })),
            Err(_) => Err(CallError::Unavailable(Unavailable::Timeout {
                actor: actor.to_string(),
                function: "on-reminder".into(),
                timeout: self.turn_timeout,
            })),
        };
        if let Err(error) = &outcome {
            tracing::warn!(%actor, reminder = %name, %error, "reminder turn failed");
        }
        let next = self.schedule().finished(&firing, outcome.is_ok(), now_ms());
        let delete = match next {
            Outcome::Keep | Outcome::Retry { .. } => false,
            Outcome::Done => true,
            Outcome::GaveUp { tries } => {
                self.dead_letters.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%actor, reminder = %name, tries, "reminder given up after failing every try (dead letter)");
                true
            }
        };
        if delete {
            let key2 = row_key2(actor, name);
            if let Err(error) = self.state.delete(row(actor, &key2)).await {
                tracing::warn!(%actor, reminder = %name, %error, "could not delete a finished reminder");
            }
        }
        self.changed.notify_one();
    }
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
}
