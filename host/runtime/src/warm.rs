//! Instances made ahead of their activations.
//!
//! Instantiating a plugin is a large part of what activating an actor
//! costs: a store and its instances built, a memory slot reset, the guest's
//! start code run (`docs/benchmarks.md`, "Instances made ahead"). None of
//! it depends on which actor the instance will run, so each plugin version
//! keeps up to [`crate::limits::Limits::warm_activations`] instances made
//! ahead in a [`WarmPool`]. An activation that finds one names its store
//! after its actor and runs `on-activate`. Each activation that starts
//! tops its version's pool up again, in a task of its own, off the path of
//! the call that activated the actor.
//!
//! An instance in the pool runs no actor: its fiber stack is given back,
//! but it holds one of the engine's slots. An activation that finds every
//! slot taken makes the pools give theirs up, and none are made for a while
//! ([`HOLD_OFF`]); a version's pool is closed when a deploy replaces it or
//! the host shuts down.
//!
//! The component's start code runs before the instance is named: a
//! component whose start functions call the host would see its actor type
//! with an empty key. Components built with wit-bindgen or componentize-py
//! run no such code.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use wasmtime::component::Instance;
use wasmtime::Store;

use crate::imports::ActivationState;

/// How long no instance is made ahead after an activation found every slot
/// taken.
pub(crate) const HOLD_OFF: Duration = Duration::from_secs(1);

/// A plugin's instance, instantiated for no actor yet.
pub(crate) struct Warm {
    pub(crate) store: Store<ActivationState>,
    pub(crate) instance: Instance,
}

/// One plugin version's instances made ahead.
#[derive(Default)]
pub(crate) struct WarmPool {
    inner: Mutex<Pool>,
}

#[derive(Default)]
struct Pool {
    ready: Vec<Warm>,
    /// Instances reserved by [`WarmPool::reserve`] and not yet handed in.
    making: usize,
    /// Set when the version is replaced or the host shuts down: instances
    /// handed in are dropped.
    closed: bool,
}

impl WarmPool {
    /// An instance made ahead, if one is ready.
    pub(crate) fn take(&self) -> Option<Warm> {
        self.pool().ready.pop()
    }

    /// How many more instances to make for the pool to hold `target`,
    /// counting those being made; the caller makes them and hands each to
    /// [`WarmPool::made`].
    pub(crate) fn reserve(&self, target: usize) -> usize {
        let mut pool = self.pool();
        if pool.closed {
            return 0;
        }
        let wanted = target.saturating_sub(pool.ready.len() + pool.making);
        pool.making += wanted;
        wanted
    }

    /// `n` reserved instances are done: `made` holds those that were made.
    pub(crate) fn made(&self, n: usize, made: Option<Warm>) {
        let mut pool = self.pool();
        pool.making = pool.making.saturating_sub(n);
        if let Some(warm) = made.filter(|_| !pool.closed) {
            pool.ready.push(warm);
        }
    }

    /// Drops the instances ready, giving their slots back to the engine's
    /// pool; how many there were.
    pub(crate) fn clear(&self) -> usize {
        let ready = std::mem::take(&mut self.pool().ready);
        ready.len()
    }

    /// Clears the pool for good: instances being made are dropped when
    /// handed in.
    pub(crate) fn close(&self) {
        let ready = {
            let mut pool = self.pool();
            pool.closed = true;
            std::mem::take(&mut pool.ready)
        };
        drop(ready);
    }

    /// Instances ready now.
    pub(crate) fn len(&self) -> usize {
        self.pool().ready.len()
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
