//! What an activation's mailbox holds: calls and one-way sends as
//! [`grove_core::Message`]s, reminder firings and gateway session events.
//!
//! Every envelope has a deadline and knows how to answer itself with an
//! error, so whoever cannot deliver it (a closed host, a full mailbox, an
//! activation that failed to start) tells the sender why instead of dropping
//! it.

use std::time::Instant;

use tokio::sync::oneshot;
use wasmtime::component::Val;

use crate::bindings::DisconnectReason;
use crate::error::CallError;

/// What a call answers: the function's result, if it has one.
pub(crate) type Answer = Result<Option<Val>, CallError>;

/// A call or one-way send with component values, answered over a local
/// channel.
pub(crate) type CallMessage = grove_core::Message<Vec<Val>, oneshot::Sender<Answer>>;

/// A message in an activation's mailbox.
pub(crate) enum Envelope {
    /// Call the function the message names.
    Call(CallMessage),
    /// Run `on-reminder(name)`, then report on `done`.
    Reminder {
        name: String,
        deadline: Instant,
        done: oneshot::Sender<Result<(), CallError>>,
    },
    /// Run the lifecycle hook for a gateway session event; report on `done`
    /// if someone waits for it.
    Session {
        event: SessionEvent,
        deadline: Instant,
        done: Option<oneshot::Sender<Result<(), CallError>>>,
    },
}

/// Something that happened to a game client's session, for its owner.
pub(crate) enum SessionEvent {
    /// `on-connect(session)`.
    Connect(u64),
    /// `on-message(session, payload, reliable)`.
    Message {
        session: u64,
        payload: Vec<u8>,
        reliable: bool,
    },
    /// `on-disconnect(session, reason)`.
    Disconnect {
        session: u64,
        reason: DisconnectReason,
    },
}

impl SessionEvent {
    /// The lifecycle hook the event runs.
    pub(crate) fn hook(&self) -> &'static str {
        match self {
            SessionEvent::Connect(_) => "on-connect",
            SessionEvent::Message { .. } => "on-message",
            SessionEvent::Disconnect { .. } => "on-disconnect",
        }
    }
}

impl Envelope {
    /// After this instant nobody waits for the envelope to be handled.
    pub(crate) fn deadline(&self) -> Instant {
        match self {
            Envelope::Call(message) => message.deadline,
            Envelope::Reminder { deadline, .. } | Envelope::Session { deadline, .. } => *deadline,
        }
    }

    /// Answers the envelope with `error` instead of handling it.
    pub(crate) fn fail(self, error: CallError) {
        match self {
            Envelope::Call(message) => match message.reply {
                Some(reply) => {
                    let _ = reply.send(Err(error));
                }
                None => {
                    tracing::warn!(actor = %message.target, function = %message.function, %error, "one-way message not delivered");
                }
            },
            Envelope::Reminder { done, .. } => {
                let _ = done.send(Err(error));
            }
            Envelope::Session {
                done: Some(done), ..
            } => {
                let _ = done.send(Err(error));
            }
            Envelope::Session {
                event, done: None, ..
            } => {
                tracing::warn!(%error, hook = event.hook(), "session event not delivered");
            }
        }
    }
}
