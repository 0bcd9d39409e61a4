//! Grove: a host for virtual actors written as WebAssembly components.
//!
//! Actor logic lives in plugins — components whose world includes
//! `grove:actor/actor` and exports one actor interface. A [`Host`] loads
//! plugins, activates an actor on its first call, runs one turn at a time per
//! actor, keeps actor state in a [`state::StateStore`], and deactivates idle
//! actors. Calls arrive as [`wasmtime::component::Val`]s from the Rust API, as
//! JSON over HTTP or as WAVE text from the `grove` CLI (crate `grove-cli`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
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
mod bindings;
mod catalog;
pub mod cluster;
mod compat;
mod directory;
pub mod engine;
pub mod error;
pub mod gateway;
mod guest_output;
pub mod host;
mod imports;
mod incidents;
pub mod limits;
mod mailbox;
mod metrics;
pub mod plugin;
mod prefault;
pub mod proxy;
pub mod proxy_wit;
pub mod reminders;
pub mod state;
mod throttled;
pub mod trace;
pub mod values;
mod warm;
pub mod wit_text;

pub use engine::HostError;
pub use error::CallError;
pub use grove_core::{chain, timers, ActorRef, BadActorRef};
pub use host::{DeployError, DeployOptions, Deployed, Host, HostConfig, Settled};
pub use imports::{DeadlineExceeded, LimitExceeded, MemoryLimitExceeded};
pub use plugin::{InspectError, Plugin, PluginDirError, PluginError};

#[cfg(test)]
mod tests {
    /// Every public error can cross threads and be boxed or wrapped by a
    /// caller's own error type.
    #[test]
    fn public_errors_are_send_sync_and_static() {
        fn check<E: std::error::Error + Send + Sync + 'static>() {}
        check::<crate::CallError>();
        check::<crate::error::RejectedCall>();
        check::<crate::error::ActorFailure>();
        check::<crate::error::Unavailable>();
        check::<crate::HostError>();
        check::<crate::engine::CompileError>();
        check::<crate::InspectError>();
        check::<crate::PluginDirError>();
        check::<crate::PluginError>();
        check::<crate::state::OpenStateError>();
        check::<crate::state::StateError>();
        check::<crate::proxy_wit::ProxyWitError>();
        check::<crate::gateway::AuthenticatorError>();
        check::<crate::gateway::GatewayStartError>();
    }
}
