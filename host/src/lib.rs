//! Grove: a host for virtual actors written as WebAssembly components.
//!
//! Actor logic lives in plugins — components whose world includes
//! `grove:actor/actor` and exports one actor interface. A [`Host`] loads
//! plugins, activates an actor on its first call, runs one turn at a time per
//! actor, keeps actor state in a [`state::StateStore`], and deactivates idle
//! actors. Calls arrive as [`wasmtime::component::Val`]s from the Rust API, as
//! JSON over HTTP ([`http`]) or as WAVE text from the `grove` CLI.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use grove_host::{ActorRef, Host, HostConfig, state::StateStore};
//! use wasmtime::component::Val;
//!
//! let host = Host::new(HostConfig::default(), StateStore::memory())?;
//! host.load_plugin_dir("plugins/dist".as_ref())?;
//! let counter: ActorRef = "counter/7".parse()?;
//! let value = host.call(&counter, "add", vec![Val::U64(5)]).await?;
//! assert_eq!(value, Some(Val::U64(5)));
//! # Ok(()) }
//! ```

mod activation;
pub mod engine;
pub mod error;
pub mod gateway;
mod guest_output;
pub mod host;
pub mod http;
mod imports;
pub mod plugin;
pub mod proxy;
pub mod proxy_wit;
pub mod reminders;
pub mod state;
pub mod timers;
pub mod values;
pub mod wit_text;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use error::CallError;
pub use host::{Host, HostConfig};
pub use imports::{DeadlineExceeded, MemoryLimitExceeded};
pub use plugin::{Plugin, PluginError};

/// The address of a virtual actor, `type/key` (e.g. `player/42`). Valid
/// forever, whether or not the actor is active. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActorRef {
    /// The actor type (the name of its plugin's actor interface).
    pub actor_type: Arc<str>,
    /// The key of one actor of that type.
    pub key: Arc<str>,
}

impl ActorRef {
    /// The ref of actor `key` of type `actor_type`.
    pub fn new(actor_type: &str, key: &str) -> Self {
        ActorRef {
            actor_type: actor_type.into(),
            key: key.into(),
        }
    }
}

impl fmt::Display for ActorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.actor_type, self.key)
    }
}

impl FromStr for ActorRef {
    type Err = CallError;

    /// Parses `type/key`; the key is everything after the first `/`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((t, k)) if !t.is_empty() && !k.is_empty() => Ok(ActorRef::new(t, k)),
            _ => Err(CallError::BadActorRef(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_refs_parse_as_type_slash_key() {
        let r: ActorRef = "room/lobby/3".parse().unwrap();
        assert_eq!((&*r.actor_type, &*r.key), ("room", "lobby/3"));
        assert_eq!(r.to_string(), "room/lobby/3");
        assert!("counter".parse::<ActorRef>().is_err());
        assert!("/7".parse::<ActorRef>().is_err());
        assert!("counter/".parse::<ActorRef>().is_err());
    }
}
