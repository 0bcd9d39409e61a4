//! Instances made ahead of their activations.
//!
//! Instantiating a plugin is a large part of what activating an actor
//! costs: a store and its instances built, a memory slot reset, the guest's
//! start code run (`docs/benchmarks.md`, "Instances made ahead"). None of
//! it depends on which actor the instance will run, so each plugin version
//! keeps up to [`crate::limits::Limits::warm_activations`] instances made
//! ahead in a [`WarmPool`]. An activation that finds one names its store
//! after its actor and runs `on-activate`. Each activation that starts has
//! a task top its version's pool up, one task per pool at a time, off the
//! path of the call; on the other core when one is free. The task waits
//! [`DEFER`] first, unless the pool is or runs empty: making an instance
//! maps and protects memory in the process the activation runs in, and
//! done alongside the activation's first turns it doubled their time on a
//! host whose cores had been idle. A task on a timer alone did not keep
//! pace with activations back to back, which is why an empty pool starts
//! it at once (`docs/benchmarks.md`). Before each instance the task checks
//! that no more than [`QUIET_TURNS`] turns run: a burst of activations
//! would take the pool at once, and making instances competes with the
//! burst for the cores.
//!
//! An instance in the pool runs no actor: its fiber stack is given back,
//! but it holds one of the engine's slots. An activation that finds every
//! slot taken makes the pools give theirs up, and none are made for a while
//! ([`HOLD_OFF`]); a version's pool is closed when a deploy (or a rollback)
//! replaces it, opened again if a rollback brings it back, and closed when
//! the host shuts down.
//!
//! The pool also prepares slots: up to
//! [`crate::limits::Limits::prepared_slots`] of the engine's memory slots
//! per plugin version, each made ready as an activation would leave it.
//! An activation on a slot no instance of its plugin used before pays the
//! kernel for it: the plugin's image mapped over the slot, its memory made
//! accessible, and a copy-on-write fault on each page the first turns
//! write, which on a machine with several cores interrupts the others
//! (`docs/benchmarks.md`, "Slots prepared while the host is idle"). A slot
//! an activation left has all that done and is reset in place. Once an
//! activation of the version has shown which pages its first turns write
//! (`prefault.rs`), a task makes instances as for the pool, those pages
//! written ahead, holds them until it has made them all, then drops them:
//! their slots go back to the engine, kept for this plugin. They must all
//! be held first: the engine gives an instance the slot its plugin left
//! last, so made and dropped one by one they would all prepare the same
//! slot. The task works only while the host is idle, no activation started
//! for [`IDLE`] and few turns running: preparing competes with activations
//! for the cores and the address space, and run beside 1,000 activations
//! back to back it made them 3–4× slower at the median
//! (`docs/benchmarks.md`). It pauses when one starts; an activation that
//! finds no instance ready takes one the task holds. A slot taken by
//! another plugin's activation, or prepared again after an activation
//! found every slot taken, is not prepared twice over: the count is of
//! slots made ready, not of slots still ready.
//!
//! The component's start code runs before the instance is named: a
//! component whose start functions call the host would see its actor type
//! with an empty key. Components built with wit-bindgen or componentize-py
//! run no such code.

use std::pin::pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use wasmtime::component::Instance;
use wasmtime::Store;

use crate::imports::ActivationState;

/// How long no instance is made ahead after an activation found every slot
/// taken.
pub(crate) const HOLD_OFF: Duration = Duration::from_secs(1);

/// Running turns above which the host counts as busy: no instance is made
/// ahead then.
pub(crate) const QUIET_TURNS: usize = 8;

/// How long the task topping a pool up waits before making an instance,
/// unless the pool runs dry: the activation that drew on it runs its first
/// turns meanwhile.
pub(crate) const DEFER: Duration = Duration::from_millis(1);

/// How long no activation must start before slots are prepared: making
/// instances maps and protects memory in the process the activations run
/// in, and interrupts the other cores.
pub(crate) const IDLE: Duration = Duration::from_millis(10);

/// The longest a task preparing slots waits, on a busy host, before it
/// looks for an idle moment again.
pub(crate) const LOOK_AGAIN_AT_MOST: Duration = Duration::from_secs(1);

/// A plugin's instance, instantiated for no actor yet.
pub(crate) struct Warm {
    pub(crate) store: Store<ActivationState>,
    pub(crate) instance: Instance,
}

/// One plugin version's instances made ahead.
#[derive(Default)]
pub(crate) struct WarmPool {
    inner: Mutex<Pool>,
    /// Told when an activation takes the last instance ready, and when the
    /// pool is cleared or closed.
    ran_dry: Notify,
}

#[derive(Default)]
struct Pool {
    ready: Vec<Warm>,
    /// Instances held while slots are prepared, dropped together.
    preparing: Vec<Warm>,
    /// Slots prepared so far: dropped from `preparing`, or taken from it
    /// by an activation.
    prepared: usize,
    /// A task prepares slots, or has.
    preparer: bool,
    /// Set when an activation of this version starts; cleared by the task
    /// topping the pool up once it has looked.
    drawn: bool,
    /// A task tops the pool up now.
    topping: bool,
    /// Set when the version is replaced or the host shuts down: instances
    /// handed in are dropped.
    closed: bool,
}

impl WarmPool {
    /// An instance made ahead, if one is ready.
    /// One held while slots are prepared serves as well.
    pub(crate) fn take(&self) -> Option<Warm> {
        let mut pool = self.pool();
        let warm = pool.ready.pop();
        if warm.is_some() && pool.ready.is_empty() {
            self.ran_dry.notify_waiters();
        }
        warm.or_else(|| {
            let held = pool.preparing.pop();
            pool.prepared += usize::from(held.is_some());
            held
        })
    }

    /// Waits [`DEFER`] (up to a millisecond more: tokio's timers tick in
    /// milliseconds), unless the pool is empty, or until an activation
    /// takes the last instance ready or the pool is cleared or closed.
    pub(crate) async fn defer_unless_dry(&self) {
        let mut dry = pin!(self.ran_dry.notified());
        // Registered before looking, so a take in between is not missed.
        dry.as_mut().enable();
        if self.len() == 0 {
            return;
        }
        tokio::select! {
            () = dry => {}
            () = tokio::time::sleep(DEFER) => {}
        }
    }

    /// Notes that an activation of this version started; whether a task
    /// topping the pool up is to be started (none runs now).
    pub(crate) fn draw(&self) -> bool {
        let mut pool = self.pool();
        pool.drawn = true;
        !std::mem::replace(&mut pool.topping, true)
    }

    /// How many instances the pool lacks to hold `target` (none once it is
    /// closed); the task topping it up has now looked.
    pub(crate) fn missing(&self, target: usize) -> usize {
        let mut pool = self.pool();
        pool.drawn = false;
        if pool.closed {
            0
        } else {
            target.saturating_sub(pool.ready.len())
        }
    }

    /// The task topping the pool up stops before the pool is full.
    pub(crate) fn stop_topping(&self) {
        self.pool().topping = false;
    }

    /// The task topping the pool up is done, unless an activation drew on
    /// the pool since it last looked: then it looks again (`true`).
    pub(crate) fn done_topping(&self) -> bool {
        let mut pool = self.pool();
        if pool.drawn && !pool.closed {
            return true;
        }
        pool.topping = false;
        false
    }

    /// Adds an instance made ahead, unless the pool was closed meanwhile.
    pub(crate) fn put(&self, warm: Warm) {
        let mut pool = self.pool();
        if !pool.closed {
            pool.ready.push(warm);
        }
    }

    /// Whether a task preparing slots is to be started (none has been).
    pub(crate) fn start_preparing(&self) -> bool {
        !std::mem::replace(&mut self.pool().preparer, true)
    }

    /// How many slots are left to prepare to reach `target` (none once
    /// the pool is closed), those held counted as prepared.
    pub(crate) fn unprepared(&self, target: usize) -> usize {
        let pool = self.pool();
        if pool.closed {
            0
        } else {
            target.saturating_sub(pool.prepared())
        }
    }

    /// Holds an instance made to prepare its slot, unless the pool was
    /// closed meanwhile.
    pub(crate) fn hold(&self, warm: Warm) {
        let mut pool = self.pool();
        if !pool.closed {
            pool.preparing.push(warm);
        }
    }

    /// The instances held to prepare slots, to drop: their slots are
    /// prepared.
    pub(crate) fn release_prepared(&self) -> Vec<Warm> {
        self.pool().release_prepared()
    }

    /// Slots prepared so far, and being prepared.
    pub(crate) fn prepared(&self) -> usize {
        self.pool().prepared()
    }

    /// Drops the instances ready and those held to prepare slots, giving
    /// their slots back to the engine's pool; how many there were.
    pub(crate) fn clear(&self) -> usize {
        let (ready, held) = {
            let mut pool = self.pool();
            let held = pool.release_prepared();
            (std::mem::take(&mut pool.ready), held)
        };
        self.ran_dry.notify_waiters();
        ready.len() + held.len()
    }

    /// Clears the pool for good: instances made later are dropped. The
    /// instances it held are returned, for the caller to drop once it
    /// holds no lock: each drop resets a slot, and there may be hundreds.
    #[must_use = "dropping the instances resets their slots: drop them outside locks"]
    pub(crate) fn close(&self) -> Vec<Warm> {
        let instances = {
            let mut pool = self.pool();
            pool.closed = true;
            let mut instances = std::mem::take(&mut pool.ready);
            instances.append(&mut pool.preparing);
            instances
        };
        self.ran_dry.notify_waiters();
        instances
    }

    /// Opens a closed pool again: its version serves again after a
    /// rollback. (Slots it left unprepared stay so.)
    pub(crate) fn reopen(&self) {
        self.pool().closed = false;
    }

    /// Instances ready now.
    pub(crate) fn len(&self) -> usize {
        self.pool().ready.len()
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Pool {
    /// Slots prepared, those held to prepare included.
    fn prepared(&self) -> usize {
        self.prepared + self.preparing.len()
    }

    /// The instances held to prepare slots, counted as prepared.
    fn release_prepared(&mut self) -> Vec<Warm> {
        let held = std::mem::take(&mut self.preparing);
        self.prepared += held.len();
        held
    }
}
