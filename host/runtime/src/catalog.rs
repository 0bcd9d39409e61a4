//! Which functions each actor type served here has.
//!
//! Proxies need it to tell a one-way `send-f` from a call of a function that
//! is itself named `send-f`: a caller's component imports only the proxy
//! methods it uses, so the proxy's own shape cannot tell.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

/// The prefix of one-way proxy methods: `send-take-hit` queues `take-hit`.
pub const SEND_PREFIX: &str = "send-";

/// The function names of every actor type this host serves. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Catalog {
    types: Arc<RwLock<HashMap<String, Arc<HashSet<String>>>>>,
}

impl Catalog {
    /// Records the functions of `actor_type`.
    pub(crate) fn insert(&self, actor_type: &str, functions: impl IntoIterator<Item = String>) {
        let functions = Arc::new(functions.into_iter().collect());
        self.types
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(actor_type.to_owned(), functions);
    }

    /// The function proxy method `method` runs on `actor_type`, and whether
    /// it is a one-way send of it.
    ///
    /// Only a method named `send-…` needs the catalog, so that a call of
    /// any other takes no lock that every caller on every core shares.
    pub(crate) fn resolve(&self, actor_type: &str, method: &Arc<str>) -> (Arc<str>, bool) {
        let Some(called) = method.strip_prefix(SEND_PREFIX) else {
            return (method.clone(), false);
        };
        let types = self.types.read().unwrap_or_else(PoisonError::into_inner);
        let functions = types.get(actor_type);
        let has = |f: &str| functions.is_some_and(|fs| fs.contains(f));
        if !has(method) && has(called) {
            (called.into(), true)
        } else {
            (method.clone(), false)
        }
    }
}
