//! Instances made ahead of their activations.
//!
//! Instantiating a plugin is a large part of what activating an actor
//! costs: a store and its instances built, a memory slot reset, the guest's
//! start code run (`docs/benchmarks.md`, "Instances made ahead"). None of
//! it depends on which actor the instance will run, so each plugin version
//! keeps up to [`crate::limits::Limits::warm_activations`] instances made
//! ahead in a [`WarmPool`]. An activation that finds one names its store
//! after its actor and runs `on-activate`; taking one starts making
//! another in a task of its own, off the path of the call that activated
//! the actor.
//!
//! An instance in the pool runs no actor: its fiber stack is given back,
//! but it holds one of the engine's slots. At the limit of activations the
//! pools give their slots up to an activation that needs one, and a
//! version's pool is emptied when a deploy replaces it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use wasmtime::component::Instance;
use wasmtime::Store;

use crate::imports::ActivationState;

/// A plugin's instance, instantiated for no actor yet.
pub(crate) struct Warm {
    pub(crate) store: Store<ActivationState>,
    pub(crate) instance: Instance,
}

/// One plugin version's instances made ahead, and the count of those being
/// made.
#[derive(Default)]
pub(crate) struct WarmPool {
    ready: Mutex<Vec<Warm>>,
    /// Instances being made now, reserved by [`WarmPool::reserve`].
    making: AtomicUsize,
}

impl WarmPool {
    /// An instance made ahead, if one is ready.
    pub(crate) fn take(&self) -> Option<Warm> {
        self.ready().pop()
    }

    /// How many more instances to make for the pool to hold `target`,
    /// counting those being made; the caller makes them and hands each to
    /// [`WarmPool::made`].
    pub(crate) fn reserve(&self, target: usize) -> usize {
        let ready = self.ready().len();
        let mut making = self.making.load(Ordering::Acquire);
        loop {
            let wanted = target.saturating_sub(ready + making);
            if wanted == 0 {
                return 0;
            }
            match self.making.compare_exchange(
                making,
                making + wanted,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return wanted,
                Err(now) => making = now,
            }
        }
    }

    /// One reserved instance is done: `made`, or `None` if it could not be
    /// made.
    pub(crate) fn made(&self, made: Option<Warm>) {
        if let Some(warm) = made {
            self.ready().push(warm);
        }
        self.making.fetch_sub(1, Ordering::AcqRel);
    }

    /// Drops the instances ready, giving their slots back to the engine's
    /// pool; how many there were.
    pub(crate) fn clear(&self) -> usize {
        let ready = std::mem::take(&mut *self.ready());
        ready.len()
    }

    /// Instances ready now.
    pub(crate) fn len(&self) -> usize {
        self.ready().len()
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, Vec<Warm>> {
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
