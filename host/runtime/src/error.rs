//! Errors a caller of an actor can get back, whichever way it called (Rust
//! API, HTTP, CLI). Each names what went wrong in words a user can act on.

use std::time::Duration;

use grove_core::{BadActorRef, ChainError};

/// Why a call to an actor failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The actor ref is not of the form `type/key`.
    #[error("`{0}` is not an actor ref; write it as `type/key`, e.g. `counter/7`")]
    BadActorRef(String),
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
    /// The actor trapped during the call; its activation has ended.
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
    /// The turn ran past the host's turn deadline; the activation has ended.
    #[error("actor {actor} ran past its turn deadline of {limit:?} in `{function}`")]
    DeadlineExceeded {
        /// The actor.
        actor: String,
        /// The function (or lifecycle hook) that overran.
        function: String,
        /// The deadline.
        limit: Duration,
    },
    /// The actor wanted more memory than the host allows; the activation has ended.
    #[error("actor {actor} exceeded its memory limit in `{function}`: {message}")]
    OutOfMemory {
        /// The actor.
        actor: String,
        /// The function (or lifecycle hook) that grew memory.
        function: String,
        /// How much it asked for, and the limit.
        message: String,
    },
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
    /// The call would enter an actor already waiting further up its call
    /// chain; it could never be answered, so it fails at once.
    #[error("call to {target} would re-enter it: call chain {chain}")]
    Reentrancy {
        /// The actor called.
        target: String,
        /// The chain, outermost caller first, e.g. `a/1 -> b/2 -> a/1`.
        chain: String,
    },
    /// The call chain is deeper than the host allows.
    #[error("call chain is {depth} calls deep; the limit is {limit}")]
    ChainTooDeep {
        /// The depth the call would reach.
        depth: usize,
        /// The limit.
        limit: usize,
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
}

impl CallError {
    /// A stable, machine-readable name for the kind of error.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::BadActorRef(_) => "bad-actor-ref",
            CallError::UnknownActorType(_) => "unknown-actor-type",
            CallError::UnknownFunction { .. } => "unknown-function",
            CallError::BadArguments { .. } => "bad-arguments",
            CallError::Trapped { .. } => "trapped",
            CallError::DeadlineExceeded { .. } => "deadline-exceeded",
            CallError::OutOfMemory { .. } => "out-of-memory",
            CallError::ActivationFailed { .. } => "activation-failed",
            CallError::ShuttingDown => "shutting-down",
            CallError::Reentrancy { .. } => "reentrancy",
            CallError::ChainTooDeep { .. } => "chain-too-deep",
            CallError::Timeout { .. } => "timeout",
            CallError::StateUnavailable { .. } => "state-unavailable",
            CallError::MailboxFull { .. } => "mailbox-full",
            CallError::MessageTooLarge { .. } => "message-too-large",
        }
    }

    /// The error as a value of WIT type `grove:actor/types.call-error`, as an
    /// actor calling through a proxy receives it.
    pub fn to_wit_val(&self) -> wasmtime::component::Val {
        let case = match self {
            CallError::Reentrancy { .. } => "reentrancy",
            CallError::Timeout { .. } => "timeout",
            CallError::Trapped { .. } => "trapped",
            CallError::DeadlineExceeded { .. } => "deadline-exceeded",
            CallError::OutOfMemory { .. } => "out-of-memory",
            CallError::UnknownActorType(_) => "unknown-actor-type",
            CallError::UnknownFunction { .. } => "unknown-function",
            CallError::BadActorRef(_) | CallError::BadArguments { .. } => "bad-arguments",
            CallError::MessageTooLarge { .. } => "too-large",
            CallError::ActivationFailed { .. }
            | CallError::ShuttingDown
            | CallError::ChainTooDeep { .. }
            | CallError::MailboxFull { .. }
            | CallError::StateUnavailable { .. } => "unavailable",
        };
        wasmtime::component::Val::Variant(
            case.to_owned(),
            Some(Box::new(wasmtime::component::Val::String(self.to_string()))),
        )
    }
}

impl From<BadActorRef> for CallError {
    fn from(e: BadActorRef) -> Self {
        CallError::BadActorRef(e.0)
    }
}

impl From<ChainError> for CallError {
    fn from(e: ChainError) -> Self {
        match e {
            ChainError::Reentrancy { target, chain } => CallError::Reentrancy { target, chain },
            ChainError::TooDeep { depth, limit } => CallError::ChainTooDeep { depth, limit },
        }
    }
}
