//! Errors a caller of an actor can get back, whichever way it called (Rust
//! API, HTTP, CLI). Each names what went wrong in words a user can act on.
//!
//! [`CallError`] sorts them into four families by what the caller can do
//! about them, so that a caller matches one variant rather than fifteen:
//!
//! * [`RejectedCall`]: the call itself is wrong; sent again unchanged it fails
//!   again. Fix the call.
//! * [`ActorFailure`]: the actor failed while running the call, and its
//!   activation ended. The next call activates it again from its stored
//!   state; whether to retry is the caller's decision.
//! * [`Unavailable`]: the call could not be delivered or answered now;
//!   retrying later may succeed.
//! * [`ChainError`]: the call chain forbids the call (a cycle, or too deep);
//!   the program's call structure has to change.
//!
//! Each family is the [`source`](std::error::Error::source) of its
//! `CallError`, and the message of a `CallError` is its family's message.
//! [`CallError::kind`] names each case with a stable string, and
//! [`CallError::to_wit_val`] maps it to the WIT `call-error` an actor sees.

use std::time::Duration;

pub use grove_core::{BadActorRef, ChainError};

/// Why a call to an actor failed, sorted by what the caller can do about it.
///
/// The message is that of the family error inside, which is also its
/// [`source`](std::error::Error::source).
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum CallError {
    /// The call itself is wrong; retrying it unchanged fails again.
    #[error("{0}")]
    Rejected(#[from] RejectedCall),
    /// The actor failed while running it; its activation ended.
    #[error("{0}")]
    Failed(#[from] ActorFailure),
    /// It could not be delivered or answered now; retrying later may succeed.
    #[error("{0}")]
    Unavailable(#[from] Unavailable),
    /// The call chain forbids it: it would re-enter an actor waiting on the
    /// chain, or make the chain too deep.
    #[error("{0}")]
    Chain(#[from] ChainError),
}

/// A call that is wrong in itself: sent again unchanged, it fails again.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RejectedCall {
    /// The actor ref is not of the form `type/key`.
    #[error("{0}")]
    BadActorRef(#[from] BadActorRef),
    /// No loaded plugin provides the actor type.
    #[error("no plugin provides actor type `{0}`")]
    UnknownActorType(String),
    /// The actor type has no such function.
    #[error("actor type `{actor_type}` has no function `{function}`")]
    UnknownFunction {
        /// The actor type.
        actor_type: String,
        /// The function asked for.
        function: String,
    },
    /// The arguments do not match the function's parameters.
    #[error("bad arguments for `{function}`: {message}")]
    BadArguments {
        /// The function called.
        function: String,
        /// What does not match.
        message: String,
    },
    /// A message between actors — the arguments of a call, or its result — is
    /// larger than the host allows.
    #[error("a message to or from {actor} is too large: {size} units; the limit is {limit}")]
    MessageTooLarge {
        /// The actor called.
        actor: String,
        /// The message's size (values, plus the bytes of strings).
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// The actor failed while running the call, and its activation has ended;
/// the next call activates it again from its stored state.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ActorFailure {
    /// The actor trapped during the call.
    #[error("actor {actor} trapped in `{function}`: {reason}")]
    Trapped {
        /// The actor.
        actor: String,
        /// The function (or lifecycle hook) that trapped.
        function: String,
        /// The trap, with the guest's last output (e.g. its panic message).
        reason: String,
        /// The guest backtrace, where wasmtime gives one.
        backtrace: Option<String>,
    },
    /// The turn ran past the host's turn deadline.
    #[error("actor {actor} ran past its turn deadline of {limit:?} in `{function}`")]
    DeadlineExceeded {
        /// The actor.
        actor: String,
        /// The function (or lifecycle hook) that overran.
        function: String,
        /// The deadline.
        limit: Duration,
    },
    /// The actor asked the host for more than a documented limit allows
    /// (timers, proxy handles, the length of a name or key); see
    /// `docs/limits.md`.
    #[error("actor {actor} hit a limit in `{function}`: {message}")]
    LimitExceeded {
        /// The actor.
        actor: String,
        /// The function (or lifecycle hook) that hit the limit.
        function: String,
        /// Which limit, and its value.
        message: String,
    },
    /// The actor wanted more memory than the host allows.
    #[error("actor {actor} exceeded its memory limit in `{function}`: {message}")]
    OutOfMemory {
        /// The actor.
        actor: String,
        /// The function (or lifecycle hook) that grew memory.
        function: String,
        /// How much it asked for, and the limit.
        message: String,
    },
}

/// The call could not be delivered or answered now; retrying later may
/// succeed. After a [`Timeout`](Unavailable::Timeout) the call may still run
/// (or have run): retry only what is safe to run twice.
#[derive(Debug, Clone, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum Unavailable {
    /// The actor could not be activated (instantiation or `on-activate` failed,
    /// or the host holds as many activations as it may).
    #[error("actor {actor} could not be activated: {message}")]
    ActivationFailed {
        /// The actor.
        actor: String,
        /// Why.
        message: String,
    },
    /// The host is shutting down and takes no new calls.
    #[error("the host is shutting down")]
    ShuttingDown,
    /// The actor's turn failed because its state backend is unreachable.
    #[error("actor {actor} could not reach its state store in `{function}`: {message}")]
    StateUnavailable {
        /// The actor.
        actor: String,
        /// The function (or lifecycle hook) that needed state.
        function: String,
        /// The backend's error.
        message: String,
    },
    /// The actor's mailbox stayed full until the message's deadline (or the
    /// actor sent to itself while its own mailbox was full, which only it
    /// could have emptied).
    #[error("the mailbox of {actor} is full ({capacity} messages)")]
    MailboxFull {
        /// The actor sent to.
        actor: String,
        /// The mailbox's capacity.
        capacity: usize,
    },
    /// The host running the actor could not be reached, or the connection
    /// to it was lost with the call in flight (it may or may not have run).
    /// The actor comes back on another host once that host's lease lapses.
    #[error("actor {actor} is on host {host}, which cannot be reached: {message}")]
    HostUnreachable {
        /// The actor.
        actor: String,
        /// The host's id.
        host: String,
        /// Why.
        message: String,
    },
    /// No answer within the caller's timeout.
    #[error("no answer from {actor} to `{function}` within {timeout:?}")]
    Timeout {
        /// The actor called.
        actor: String,
        /// The function.
        function: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
}

impl CallError {
    /// A stable, machine-readable name for the kind of error.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Rejected(e) => e.kind(),
            CallError::Failed(e) => e.kind(),
            CallError::Unavailable(e) => e.kind(),
            CallError::Chain(ChainError::Reentrancy { .. }) => "reentrancy",
            CallError::Chain(ChainError::TooDeep { .. }) => "chain-too-deep",
        }
    }

    /// The error as a value of WIT type `grove:actor/types.call-error`, as an
    /// actor calling through a proxy receives it.
    pub fn to_wit_val(&self) -> wasmtime::component::Val {
        let case = match self {
            CallError::Rejected(e) => match e {
                RejectedCall::UnknownActorType(_) => "unknown-actor-type",
                RejectedCall::UnknownFunction { .. } => "unknown-function",
                RejectedCall::BadActorRef(_) | RejectedCall::BadArguments { .. } => "bad-arguments",
                RejectedCall::MessageTooLarge { .. } => "too-large",
            },
            // The WIT `call-error` has no case of its own for it: the
            // callee's activation ended, as after a trap.
            CallError::Failed(ActorFailure::LimitExceeded { .. }) => "trapped",
            CallError::Failed(e) => e.kind(),
            CallError::Unavailable(Unavailable::Timeout { .. }) => "timeout",
            CallError::Unavailable(_) => "unavailable",
            CallError::Chain(ChainError::Reentrancy { .. }) => "reentrancy",
            CallError::Chain(ChainError::TooDeep { .. }) => "unavailable",
        };
        wasmtime::component::Val::Variant(
            case.to_owned(),
            Some(Box::new(wasmtime::component::Val::String(self.to_string()))),
        )
    }
}

impl RejectedCall {
    /// The [`CallError::kind`] of this error.
    pub fn kind(&self) -> &'static str {
        match self {
            RejectedCall::BadActorRef(_) => "bad-actor-ref",
            RejectedCall::UnknownActorType(_) => "unknown-actor-type",
            RejectedCall::UnknownFunction { .. } => "unknown-function",
            RejectedCall::BadArguments { .. } => "bad-arguments",
            RejectedCall::MessageTooLarge { .. } => "message-too-large",
        }
    }
}

impl ActorFailure {
    /// The [`CallError::kind`] of this error (also its WIT `call-error` case).
    pub fn kind(&self) -> &'static str {
        match self {
            ActorFailure::Trapped { .. } => "trapped",
            ActorFailure::DeadlineExceeded { .. } => "deadline-exceeded",
            ActorFailure::OutOfMemory { .. } => "out-of-memory",
            ActorFailure::LimitExceeded { .. } => "limit-exceeded",
        }
    }
}

impl Unavailable {
    /// The [`CallError::kind`] of this error.
    pub fn kind(&self) -> &'static str {
        match self {
            Unavailable::ActivationFailed { .. } => "activation-failed",
            Unavailable::ShuttingDown => "shutting-down",
            Unavailable::StateUnavailable { .. } => "state-unavailable",
            Unavailable::MailboxFull { .. } => "mailbox-full",
            Unavailable::HostUnreachable { .. } => "host-unreachable",
            Unavailable::Timeout { .. } => "timeout",
        }
    }
}

impl From<BadActorRef> for CallError {
    fn from(e: BadActorRef) -> Self {
        CallError::Rejected(e.into())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use wasmtime::component::Val;

    use super::*;

    fn wit_case(error: &CallError) -> String {
        match error.to_wit_val() {
            Val::Variant(case, Some(payload)) => {
                assert_eq!(*payload, Val::String(error.to_string()));
                case
            }
            other => panic!("not a call-error: {other:?}"),
        }
    }

    /// Every case with its kind, WIT case and message, as they were before
    /// the cases were sorted into families: callers, the HTTP API and the
    /// docs rely on them.
    #[test]
    fn kinds_wit_cases_and_messages_stay_as_they_were() {
        let actor = || "counter/7".to_owned();
        let function = || "add".to_owned();
        let cases: Vec<(CallError, &str, &str, &str)> = vec![
            (
                BadActorRef("seven".into()).into(),
                "bad-actor-ref",
                "bad-arguments",
                "`seven` is not an actor ref; write it as `type/key`, e.g. `counter/7`",
            ),
            (
                RejectedCall::UnknownActorType("ghost".into()).into(),
                "unknown-actor-type",
                "unknown-actor-type",
                "no plugin provides actor type `ghost`",
            ),
            (
                RejectedCall::UnknownFunction {
                    actor_type: "counter".into(),
                    function: function(),
                }
                .into(),
                "unknown-function",
                "unknown-function",
                "actor type `counter` has no function `add`",
            ),
            (
                RejectedCall::BadArguments {
                    function: function(),
                    message: "expected 1 argument, got 0".into(),
                }
                .into(),
                "bad-arguments",
                "bad-arguments",
                "bad arguments for `add`: expected 1 argument, got 0",
            ),
            (
                RejectedCall::MessageTooLarge {
                    actor: actor(),
                    size: 10,
                    limit: 5,
                }
                .into(),
                "message-too-large",
                "too-large",
                "a message to or from counter/7 is too large: 10 units; the limit is 5",
            ),
            (
                ActorFailure::Trapped {
                    actor: actor(),
                    function: function(),
                    reason: "unreachable".into(),
                    backtrace: None,
                }
                .into(),
                "trapped",
                "trapped",
                "actor counter/7 trapped in `add`: unreachable",
            ),
            (
                ActorFailure::DeadlineExceeded {
                    actor: actor(),
                    function: function(),
                    limit: Duration::from_millis(5),
                }
                .into(),
                "deadline-exceeded",
                "deadline-exceeded",
                "actor counter/7 ran past its turn deadline of 5ms in `add`",
            ),
            (
                ActorFailure::OutOfMemory {
                    actor: actor(),
                    function: function(),
                    message: "too much".into(),
                }
                .into(),
                "out-of-memory",
                "out-of-memory",
                "actor counter/7 exceeded its memory limit in `add`: too much",
            ),
            (
                Unavailable::ActivationFailed {
                    actor: actor(),
                    message: "no room".into(),
                }
                .into(),
                "activation-failed",
                "unavailable",
                "actor counter/7 could not be activated: no room",
            ),
            (
                Unavailable::ShuttingDown.into(),
                "shutting-down",
                "unavailable",
                "the host is shutting down",
            ),
            (
                Unavailable::StateUnavailable {
                    actor: actor(),
                    function: function(),
                    message: "redis: down".into(),
                }
                .into(),
                "state-unavailable",
                "unavailable",
                "actor counter/7 could not reach its state store in `add`: redis: down",
            ),
            (
                Unavailable::MailboxFull {
                    actor: actor(),
                    capacity: 4,
                }
                .into(),
                "mailbox-full",
                "unavailable",
                "the mailbox of counter/7 is full (4 messages)",
            ),
            (
                Unavailable::Timeout {
                    actor: actor(),
                    function: function(),
                    timeout: Duration::from_secs(1),
                }
                .into(),
                "timeout",
                "timeout",
                "no answer from counter/7 to `add` within 1s",
            ),
            (
                ChainError::Reentrancy {
                    target: "a/1".into(),
                    chain: "a/1 -> b/2 -> a/1".into(),
                }
                .into(),
                "reentrancy",
                "reentrancy",
                "call to a/1 would re-enter it: call chain a/1 -> b/2 -> a/1",
            ),
            (
                ChainError::TooDeep {
                    depth: 65,
                    limit: 64,
                }
                .into(),
                "chain-too-deep",
                "unavailable",
                "call chain is 65 calls deep; the limit is 64",
            ),
        ];
        for (error, kind, wit, message) in cases {
            assert_eq!(error.kind(), kind, "{error}");
            assert_eq!(wit_case(&error), wit, "{error}");
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn the_source_of_a_call_error_is_its_family_error() {
        let error = CallError::from(ChainError::TooDeep {
            depth: 65,
            limit: 64,
        });
        let source = error.source().and_then(|s| s.downcast_ref::<ChainError>());
        assert_eq!(
            source,
            Some(&ChainError::TooDeep {
                depth: 65,
                limit: 64
            })
        );

        let error = CallError::from(BadActorRef("seven".into()));
        let family = error
            .source()
            .and_then(|s| s.downcast_ref::<RejectedCall>());
        assert!(matches!(family, Some(RejectedCall::BadActorRef(_))));
        let leaf = family
            .and_then(|f| f.source())
            .and_then(|s| s.downcast_ref::<BadActorRef>());
        assert_eq!(leaf, Some(&BadActorRef("seven".into())));

        let error = CallError::from(Unavailable::ShuttingDown);
        let family = error.source().and_then(|s| s.downcast_ref::<Unavailable>());
        assert!(matches!(family, Some(Unavailable::ShuttingDown)));
    }
}
