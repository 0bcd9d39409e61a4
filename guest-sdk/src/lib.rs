//! Grove's SDK for actors written in Rust.
//!
//! An actor author writes a WIT interface, implements the trait that
//! `wit_bindgen::generate!` makes for it, and lets [`export_actor!`] wire up the
//! Grove lifecycle hooks (all optional, through [`Actor`]). Everything an actor
//! asks of its host — its own ref, logging, state rows and timers — is here as
//! plain Rust functions:
//!
//! ```text
//! mod bindings {
//!     wit_bindgen::generate!({
//!         path: ["../../wit/actor", "../../wit/examples/counter.wit"],
//!         world: "grove-example:counter/counter-actor",
//!         with: {
//!             "grove:actor/host@0.1.0": grove_guest::host,
//!             "grove:actor/types@0.1.0": grove_guest::types,
//!         },
//!     });
//! }
//!
//! struct Counter;
//!
//! impl bindings::exports::grove_example::counter::counter::Guest for Counter {
//!     fn add(amount: u64) -> u64 {
//!         let key = grove_guest::self_ref().key;
//!         let value = grove_guest::state::load("counter", &key, None).unwrap().unwrap_or(0) + amount;
//!         grove_guest::state::save("counter", &key, None, &value).unwrap();
//!         value
//!     }
//!     // ...
//! }
//!
//! impl grove_guest::Actor for Counter {}
//! grove_guest::export_actor!(Counter with_types_in bindings);
//! ```
//!
//! The host runs one turn at a time per actor, so nothing here needs locking;
//! the rules of the contract are in the doc comments of `wit/actor/host.wit`.

#[allow(missing_docs, clippy::all)]
mod generated {
    wit_bindgen::generate!({
        path: "../wit/actor",
        world: "imports",
        // `call-error` is used by proxies, not by the host imports.
        generate_unused_types: true,
    });
}

pub use generated::grove::actor::{host, types};
pub use types::{
    ActorRef, CallError, DisconnectReason, LogLevel, Row, SessionError, SessionId, StateError,
};

/// Lifecycle hooks an actor may implement; every hook does nothing by default.
///
/// Each hook runs as a turn of its own (see `wit/actor/lifecycle.wit`).
pub trait Actor {
    /// Runs once when the actor is activated, before its first message.
    fn on_activate() {}
    /// Runs before the actor is deactivated (idle timeout, request, shutdown).
    fn on_deactivate() {}
    /// Runs for each tick of a timer started with [`timer::once`] or
    /// [`timer::periodic`].
    fn on_timer(_name: String) {}
    /// Runs for each firing of a durable reminder started with
    /// [`reminder::once`] or [`reminder::periodic`].
    fn on_reminder(_name: String) {}
    /// Runs when a game client's session, owned by this actor, has been
    /// accepted by the gateway.
    fn on_connect(_session: SessionId) {}
    /// Runs for each frame (`reliable`) or datagram from a session this actor
    /// owns.
    fn on_message(_session: SessionId, _payload: Vec<u8>, _reliable: bool) {}
    /// Runs once when a session this actor owns has ended.
    fn on_disconnect(_session: SessionId, _reason: DisconnectReason) {}
}

/// Exports an actor: implements Grove's lifecycle interface for `$actor` by
/// delegating to its [`Actor`] impl, then runs the bindings' `export!` macro.
///
/// `$bindings` is the module in which `wit_bindgen::generate!` was invoked for
/// the actor's world.
#[macro_export]
macro_rules! export_actor {
    ($actor:ident with_types_in $bindings:ident) => {
        impl $bindings::exports::grove::actor::lifecycle::Guest for $actor {
            fn on_activate() {
                <$actor as $crate::Actor>::on_activate()
            }
            fn on_deactivate() {
                <$actor as $crate::Actor>::on_deactivate()
            }
            fn on_timer(name: String) {
                <$actor as $crate::Actor>::on_timer(name)
            }
            fn on_reminder(name: String) {
                <$actor as $crate::Actor>::on_reminder(name)
            }
            fn on_connect(session: $crate::SessionId) {
                <$actor as $crate::Actor>::on_connect(session)
            }
            fn on_message(session: $crate::SessionId, payload: Vec<u8>, reliable: bool) {
                <$actor as $crate::Actor>::on_message(session, payload, reliable)
            }
            fn on_disconnect(session: $crate::SessionId, reason: $crate::DisconnectReason) {
                <$actor as $crate::Actor>::on_disconnect(session, reason)
            }
        }
        $bindings::export!($actor with_types_in $bindings);
    };
}

thread_local! {
    /// The actor this instance runs. An instance runs one actor for its whole
    /// life, so the host is asked once: a world cell that reads its key on
    /// every call spent 3.3% of the host's time lowering the two strings.
    static SELF: std::cell::OnceCell<ActorRef> = const { std::cell::OnceCell::new() };
}

/// Runs `f` on the ref of the actor running the current turn.
fn with_self<T>(f: impl FnOnce(&ActorRef) -> T) -> T {
    SELF.with(|cached| match cached.get() {
        Some(me) => f(me),
        None => {
            let me = host::self_ref();
            // An instance made ahead of its activation has no key yet while
            // its start code runs; it is named before its first turn.
            if me.key.is_empty() {
                f(&me)
            } else {
                f(cached.get_or_init(|| me))
            }
        }
    })
}

/// The ref (`type/key`) of the actor running the current turn.
pub fn self_ref() -> ActorRef {
    with_self(ActorRef::clone)
}

/// The key of the actor running the current turn.
pub fn self_key() -> String {
    with_self(|me| me.key.clone())
}

/// Asks the host to deactivate this actor once the current turn ends.
pub fn deactivate_after_turn() {
    host::deactivate_after_turn()
}

/// Sending to game clients' sessions (see `host.send-to-session`).
pub mod session {
    use super::{host, SessionError, SessionId};

    /// Sends `payload` as a frame on the session's reliable, ordered stream.
    pub fn send(session: SessionId, payload: &[u8]) -> Result<(), SessionError> {
        host::send_to_session(session, payload, true)
    }

    /// Sends `payload` as one unreliable datagram (at most about 1,200
    /// bytes).
    pub fn send_datagram(session: SessionId, payload: &[u8]) -> Result<(), SessionError> {
        host::send_to_session(session, payload, false)
    }

    /// Sends one payload to many sessions; returns how many it reached.
    pub fn multicast(sessions: &[SessionId], payload: &[u8], reliable: bool) -> u32 {
        host::send_to_sessions(sessions, payload, reliable)
    }

    /// Closes a session, telling the client `reason`; returns whether it was
    /// live.
    pub fn close(session: SessionId, reason: &str) -> bool {
        host::close_session(session, reason)
    }
}

/// Writing to the host's log, tagged with the actor's ref.
pub mod log {
    use super::{host, LogLevel};

    /// Writes `message` at `level`.
    pub fn write(level: LogLevel, message: &str) {
        host::log(level, message)
    }
    /// Writes `message` at debug level.
    pub fn debug(message: &str) {
        write(LogLevel::Debug, message)
    }
    /// Writes `message` at info level.
    pub fn info(message: &str) {
        write(LogLevel::Info, message)
    }
    /// Writes `message` at warn level.
    pub fn warn(message: &str) {
        write(LogLevel::Warn, message)
    }
    /// Writes `message` at error level.
    pub fn error(message: &str) {
        write(LogLevel::Error, message)
    }
}

/// Durable reminders: stored by the host's state backend, they survive
/// deactivation and restarts; firings arrive as [`Actor::on_reminder`] turns.
pub mod reminder {
    use std::time::Duration;

    use super::{host, StateError};

    fn millis(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts (or replaces) a reminder that fires once after `due`.
    pub fn once(name: &str, due: Duration) -> Result<(), StateError> {
        host::set_reminder(name, millis(due), None)
    }

    /// Starts (or replaces) a reminder that first fires after `due`, then
    /// every `period` (at least 100 ms).
    pub fn periodic(name: &str, due: Duration, period: Duration) -> Result<(), StateError> {
        host::set_reminder(name, millis(due), Some(millis(period)))
    }

    /// Cancels a reminder; returns whether it existed.
    pub fn cancel(name: &str) -> Result<bool, StateError> {
        host::cancel_reminder(name)
    }
}

/// Timers: ticks arrive as [`Actor::on_timer`] turns.
pub mod timer {
    use std::time::Duration;

    use super::host;

    fn millis(d: Duration) -> u64 {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
    }

    /// Starts (or replaces) a timer that fires once after `due`.
    pub fn once(name: &str, due: Duration) {
        host::set_timer(name, millis(due), None, false)
    }

    /// Starts (or replaces) a fixed-rate timer: first tick after `due`, then
    /// one every `period`. With `keep_alive`, ticks count as activity and keep
    /// the actor from being deactivated for idleness.
    pub fn periodic(name: &str, due: Duration, period: Duration, keep_alive: bool) {
        host::set_timer(name, millis(due), Some(millis(period).max(1)), keep_alive)
    }

    /// Cancels a timer; returns whether it existed.
    pub fn cancel(name: &str) -> bool {
        host::cancel_timer(name)
    }
}

/// State rows `(table, key1, optional key2) => bytes`, raw or as JSON-encoded
/// serde values.
///
/// Tables are private to the actor type. A write returns only once the host's
/// storage backend has it. Values are encoded as JSON so that actors written in
/// other languages can read them.
pub mod state {
    use serde::{de::DeserializeOwned, Serialize};

    use super::{host, Row, StateError};

    /// Why a typed state operation failed.
    #[derive(Debug)]
    pub enum Error {
        /// The host could not perform the operation.
        State(StateError),
        /// The stored bytes are not a valid encoding of the requested type, or
        /// the value could not be encoded.
        Codec(serde_json::Error),
    }

    impl std::fmt::Display for Error {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Error::State(StateError::Unavailable(m)) => write!(f, "state unavailable: {m}"),
                Error::State(StateError::TooLarge(m)) => write!(f, "state too large: {m}"),
                Error::Codec(e) => write!(f, "state codec: {e}"),
            }
        }
    }

    impl std::error::Error for Error {}

    impl From<StateError> for Error {
        fn from(e: StateError) -> Self {
            Error::State(e)
        }
    }

    impl From<serde_json::Error> for Error {
        fn from(e: serde_json::Error) -> Self {
            Error::Codec(e)
        }
    }

    /// Reads a row's bytes.
    pub fn get(table: &str, key1: &str, key2: Option<&str>) -> Result<Option<Vec<u8>>, StateError> {
        host::state_get(table, key1, key2)
    }

    /// Inserts or replaces a row's bytes.
    pub fn put(
        table: &str,
        key1: &str,
        key2: Option<&str>,
        value: &[u8],
    ) -> Result<(), StateError> {
        host::state_put(table, key1, key2, value)
    }

    /// Deletes a row; returns whether it existed.
    pub fn delete(table: &str, key1: &str, key2: Option<&str>) -> Result<bool, StateError> {
        host::state_delete(table, key1, key2)
    }

    /// Every row under `(table, key1)`, ordered by `key2`.
    pub fn list(table: &str, key1: &str) -> Result<Vec<Row>, StateError> {
        host::state_list(table, key1)
    }

    /// Reads a row and decodes it as `T`.
    pub fn load<T: DeserializeOwned>(
        table: &str,
        key1: &str,
        key2: Option<&str>,
    ) -> Result<Option<T>, Error> {
        match get(table, key1, key2)? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Encodes `value` and stores it in a row.
    pub fn save<T: Serialize + ?Sized>(
        table: &str,
        key1: &str,
        key2: Option<&str>,
        value: &T,
    ) -> Result<(), Error> {
        put(table, key1, key2, &serde_json::to_vec(value)?)?;
        Ok(())
    }

    /// Every row under `(table, key1)`, decoded as `T`, with its `key2`.
    pub fn load_all<T: DeserializeOwned>(
        table: &str,
        key1: &str,
    ) -> Result<Vec<(Option<String>, T)>, Error> {
        list(table, key1)?
            .into_iter()
            .map(|row| Ok((row.key2, serde_json::from_slice(&row.value)?)))
            .collect()
    }
}
