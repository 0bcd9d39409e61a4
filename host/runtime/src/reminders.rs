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

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use grove_core::reminders::{Firing, Outcome, Schedule, Timing};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify};

use crate::directory::Directory;
use crate::error::{CallError, Unavailable};
use crate::mailbox::Envelope;
use crate::state::{RowKey, StateError, StateStore};
use crate::ActorRef;

/// The state namespace Grove keeps its own rows in.
pub const NAMESPACE: &str = crate::state::GROVE_NAMESPACE;
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

/// Picks, among hosts sharing the reminders' rows (a cluster), the one that
/// runs each firing: every host schedules every reminder, and claims a
/// firing before it runs it.
pub(crate) trait FiringGate: Send + Sync + 'static {
    /// Claims the firing at `at_ms` of `actor`'s reminder `name` for this
    /// host: `Ok(false)` if another live host has it.
    fn claim<'a>(
        &'a self,
        actor: &'a ActorRef,
        name: &'a str,
        at_ms: u64,
    ) -> Pin<Box<dyn Future<Output = Result<bool, String>> + Send + 'a>>;
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
    /// One-shot reminders given up, by actor type.
    dead_letters: Mutex<BTreeMap<Arc<str>, u64>>,
    /// Set when the host joins a cluster.
    gate: OnceLock<Weak<dyn FiringGate>>,
    /// The wall clock in Unix ms: reminders are stored against it, so they
    /// survive restarts. Tests give it virtual time.
    clock: Clock,
}

type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn unix_ms() -> u64 {
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
        Self::with_clock(state, directory, turn_timeout, Arc::new(unix_ms))
    }

    fn with_clock(
        state: StateStore,
        directory: Weak<Directory>,
        turn_timeout: Duration,
        clock: Clock,
    ) -> Arc<Reminders> {
        Arc::new(Reminders {
            schedule: Mutex::default(),
            changed: Notify::new(),
            state,
            directory,
            turn_timeout,
            running: AtomicBool::new(false),
            dead_letters: Mutex::default(),
            gate: OnceLock::new(),
            clock,
        })
    }

    fn schedule(&self) -> MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One-shot reminders given up after failing every try, since start.
    pub(crate) fn dead_letters(&self) -> u64 {
        self.dead_letters_by_type().values().sum()
    }

    /// One-shot reminders given up after failing every try, since start,
    /// by actor type.
    pub(crate) fn dead_letters_by_type(&self) -> BTreeMap<Arc<str>, u64> {
        self.dead_letters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stores and schedules a reminder for `actor`.
    ///
    /// An actor holding `max` other reminders is refused with
    /// [`StateError::QuotaExceeded`].
    pub(crate) async fn set(
        self: &Arc<Self>,
        actor: &ActorRef,
        name: &str,
        due: Duration,
        period: Option<Duration>,
        max: usize,
    ) -> Result<(), StateError> {
        {
            let schedule = self.schedule();
            let key = (actor.clone(), name.to_owned());
            if !schedule.contains(&key) && schedule.held_by(actor) >= max {
                return Err(StateError::QuotaExceeded(format!(
                    "an actor may hold at most {max} reminders"
                )));
            }
        }
        if let Some(p) = period.filter(|p| *p < MIN_PERIOD) {
            return Err(StateError::TooLarge(format!(
                "a reminder period of {p:?} is too short; the minimum is {MIN_PERIOD:?}"
            )));
        }
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let stored = Stored {
            due_ms: (self.clock)().saturating_add(millis(due)),
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

    /// From now on, claims each firing through `gate` before running it.
    pub(crate) fn set_gate(&self, gate: Weak<dyn FiringGate>) {
        let _ = self.gate.set(gate);
    }

    /// Whether `firing`'s reminder is still stored as this host scheduled
    /// it; if it was cancelled or set again meanwhile, the schedule is
    /// brought in line with its row and the firing is dropped.
    async fn still_set(&self, firing: &Firing) -> bool {
        let (actor, name) = &firing.key;
        let key2 = row_key2(actor, name);
        let stored = match self.state.get(row(actor, &key2)).await {
            Ok(row) => row.and_then(|value| serde_json::from_slice::<Stored>(&value).ok()),
            // Unknown: the claim decides, as without the check.
            Err(_) => return true,
        };
        let mut schedule = self.schedule();
        match stored {
            Some(stored) if schedule.timing(&firing.key) == Some(Timing::from(stored)) => true,
            Some(stored) => {
                schedule.insert(firing.key.clone(), stored.into());
                false
            }
            None => {
                schedule.passed(firing);
                schedule.remove(&firing.key);
                false
            }
        }
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
                let due = self.schedule().take_due((self.clock)());
                for firing in due {
                    tokio::spawn(self.clone().fire(directory.clone(), firing));
                }
            }
            let wait = self
                .schedule()
                .next_due()
                .map(|at| Duration::from_millis(at.saturating_sub((self.clock)())))
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
        if let Some(gate) = self.gate.get().and_then(Weak::upgrade) {
            // Another host may have cancelled or set it again since this
            // one loaded it: the row says.
            if !self.still_set(&firing).await {
                self.changed.notify_one();
                return;
            }
            match gate.claim(actor, name, firing.at_ms).await {
                Ok(true) => {}
                Ok(false) => {
                    self.schedule().passed(&firing);
                    self.changed.notify_one();
                    return;
                }
                Err(error) => {
                    tracing::warn!(%actor, reminder = %name, %error, "cannot claim a reminder's firing");
                    self.schedule().finished(&firing, false, (self.clock)());
                    self.changed.notify_one();
                    return;
                }
            }
        }
        let (done, finished) = oneshot::channel();
        // tokio's clock, which tests may pause.
        let deadline = tokio::time::Instant::now() + self.turn_timeout;
        let envelope = Envelope::Reminder {
            name: name.clone(),
            deadline: deadline.into_std(),
            done,
        };
        // An undelivered firing is answered with the error.
        let _ = directory.deliver(actor, envelope, true).await;
        let outcome = match tokio::time::timeout_at(deadline, finished).await {
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
        let next = self
            .schedule()
            .finished(&firing, outcome.is_ok(), (self.clock)());
        let delete = match next {
            Outcome::Keep | Outcome::Retry { .. } => false,
            Outcome::Done => true,
            Outcome::GaveUp { tries } => {
                *self
                    .dead_letters
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(actor.actor_type.clone())
                    .or_default() += 1;
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
    //! The reminder service on virtual time: a paused tokio clock drives
    //! both its sleeps and the wall clock reminders are stored against, so
    //! hours of schedule run in milliseconds and never flake.

    use super::*;
    use crate::directory::{Activator, Slot};
    use crate::error::ActorFailure;
    use tokio::task::AbortHandle;
    use tokio::time::Instant;

    /// Activations that run every reminder at once, record when (since the
    /// test started) and succeed or fail as told.
    struct Model {
        fail: bool,
        start: Instant,
        fired: Arc<Mutex<Vec<(String, Duration)>>>,
    }

    impl Activator for Model {
        fn check(&self, _: &ActorRef) -> Result<(), CallError> {
            Ok(())
        }

        fn start(&self, slot: Slot) -> AbortHandle {
            let (fail, start, fired) = (self.fail, self.start, self.fired.clone());
            tokio::spawn(async move {
                while let Some(envelope) = slot.recv().await {
                    let Envelope::Reminder { name, done, .. } = envelope else {
                        continue;
                    };
                    fired.lock().unwrap().push((name, start.elapsed()));
                    let _ = done.send(if fail {
                        Err(CallError::Failed(ActorFailure::Trapped {
                            actor: slot.actor().to_string(),
                            function: "on-reminder".into(),
                            reason: "always".into(),
                            backtrace: None,
                        }))
                    } else {
                        Ok(())
                    });
                }
                slot.leave();
            })
            .abort_handle()
        }
    }

    struct Setup {
        reminders: Arc<Reminders>,
        state: StateStore,
        fired: Arc<Mutex<Vec<(String, Duration)>>>,
        // Kept alive: the directory holds the activator weakly.
        _activator: Arc<dyn Activator>,
        _directory: Arc<Directory>,
    }

    fn setup(fail: bool) -> Setup {
        let start = Instant::now();
        let fired = Arc::default();
        let activator: Arc<dyn Activator> = Arc::new(Model {
            fail,
            start,
            fired: Arc::clone(&fired),
        });
        let mut limits = crate::limits::Limits::default();
        limits.actor.mailbox_capacity = 16;
        let directory = Directory::new(Arc::new(limits));
        directory.set_activator(Arc::downgrade(&activator));
        let state = StateStore::memory();
        // The wall clock: some fixed Unix time plus the virtual time passed.
        let clock: Clock = Arc::new(move || {
            1_800_000_000_000 + u64::try_from(start.elapsed().as_millis()).unwrap()
        });
        let reminders = Reminders::with_clock(
            state.clone(),
            Arc::downgrade(&directory),
            Duration::from_secs(60),
            clock,
        );
        Setup {
            reminders,
            state,
            fired,
            _activator: activator,
            _directory: directory,
        }
    }

    fn seconds(fired: &Mutex<Vec<(String, Duration)>>) -> Vec<u64> {
        let fired = fired.lock().unwrap();
        fired.iter().map(|(_, at)| at.as_secs()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_one_shot_reminder_backs_off_then_becomes_a_dead_letter() {
        let s = setup(true);
        let actor = ActorRef::new("model", "a");
        s.reminders
            .set(&actor, "once", Duration::from_secs(5), None, 1)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3600)).await;
        // Due at 5 s, then retried after 1, 2, 4 ... s, at most 60 s apart,
        // eight tries in all.
        assert_eq!(seconds(&s.fired), [5, 6, 8, 12, 20, 36, 68, 128]);
        assert_eq!(s.reminders.dead_letters(), 1);
        let rows = s.state.list(NAMESPACE, TABLE, "model").await.unwrap();
        assert!(rows.is_empty(), "the dead letter's row is deleted");
    }

    #[tokio::test(start_paused = true)]
    async fn a_periodic_reminder_fires_on_its_grid_until_cancelled() {
        let s = setup(false);
        let actor = ActorRef::new("model", "b");
        let ten_minutes = Duration::from_secs(600);
        s.reminders
            .set(&actor, "tick", ten_minutes, Some(ten_minutes), 1)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(3650)).await;
        assert_eq!(seconds(&s.fired), [600, 1200, 1800, 2400, 3000, 3600]);
        assert!(s.reminders.cancel(&actor, "tick").await.unwrap());
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(s.fired.lock().unwrap().len(), 6, "no firing after cancel");
        assert_eq!(s.reminders.dead_letters(), 0);
    }

    #[test]
    fn reminder_rows_name_the_actor_key_and_the_reminder() {
        let actor = ActorRef::new("player", "4:2");
        let key2 = row_key2(&actor, "daily");
        assert_eq!(parse_key2(&key2), Some(("4:2", "daily")));
        assert_eq!(parse_key2("x"), None);
        assert_eq!(parse_key2("9:ab"), None);
    }
}
