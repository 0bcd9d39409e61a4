//! The message: one call or one-way send, as a plain value.

use std::sync::Arc;
use std::time::Instant;

use crate::{ActorRef, CallChain};

/// One call (or one-way send) to an actor.
///
/// Nothing in it is valid only against the plugin of the moment: the function
/// is named, not numbered, and is resolved by the activation that runs the
/// message against the plugin *it* runs. The deadline is absolute, so a
/// message that waited in a mailbox, or crossed to another host, keeps the
/// caller's budget instead of starting a new one.
///
/// `Args` is how the arguments travel (component values inside a host, the
/// binary value encoding between hosts); `Reply` is the route the answer
/// takes (a channel back to a local caller, or `None` for a one-way send).
#[derive(Debug)]
pub struct Message<Args, Reply> {
    /// The actor called.
    pub target: ActorRef,
    /// The function of the target's actor interface, e.g. `add-item`.
    pub function: Arc<str>,
    /// The arguments, in parameter order.
    pub args: Args,
    /// The actors waiting on this call, each in a turn of its own.
    pub chain: CallChain,
    /// After this instant nobody waits for the answer: a call still queued
    /// then is dropped unrun (its caller has had a timeout). A one-way send
    /// must be in the mailbox by then; once queued, it runs.
    pub deadline: Instant,
    /// Where the answer goes; `None` for a one-way send.
    pub reply: Option<Reply>,
    /// The span the message was sent from, if it is traced: the turn that
    /// runs it is a child of it, in the same trace. Boxed: most messages are
    /// not traced, and every message waiting in a mailbox holds the field.
    pub trace: Option<Box<TraceParent>>,
}

/// Where a message sits in a distributed trace: the trace's id, the id of
/// the span that sent it and whether the trace is sampled (W3C Trace
/// Context's `trace-id`, `parent-id` and `sampled` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceParent {
    /// The trace's 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// The sending span's 8 bytes, never all zero.
    pub span_id: [u8; 8],
    /// Whether the trace is recorded: a turn in a trace its caller chose
    /// not to record is not recorded either.
    pub sampled: bool,
}

impl<Args, Reply> Message<Args, Reply> {
    /// Whether the caller has stopped waiting at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.deadline
    }

    /// Whether the sender waits for an answer.
    pub fn is_call(&self) -> bool {
        self.reply.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_message_expires_at_its_deadline() {
        let now = Instant::now();
        let message: Message<(), ()> = Message {
            target: ActorRef::new("counter", "7"),
            function: "add".into(),
            args: (),
            chain: None,
            deadline: now + Duration::from_millis(5),
            reply: None,
            trace: None,
        };
        assert!(!message.expired(now));
        assert!(message.expired(now + Duration::from_millis(5)));
        assert!(!message.is_call());
    }
}
