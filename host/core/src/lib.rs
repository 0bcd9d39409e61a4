//! Grove's runtime core, without I/O.
//!
//! Everything here is a plain value or a state machine that takes `now` as an
//! argument, in the way `quinn-proto` sits under `quinn`: no tokio, no
//! wasmtime, no sockets. The runtime (`grove-host`) drives these types from
//! its tasks; tests drive them with virtual time.
//!
//! * [`ActorRef`]: the address of a virtual actor, `type/key`.
//! * [`Message`]: one call or one-way send as a plain value — target,
//!   function *name*, arguments, call chain, absolute deadline and reply
//!   route — so that it can be queued, retried or (later) sent to another
//!   host.
//! * [`chain`]: call chains, and the reentrancy rule that makes a call cycle
//!   fail at once instead of hanging.
//! * [`timers`]: an activation's timers, fixed-rate, merged when late.
//! * [`reminders`]: the durable-reminder schedule and its retry policy.
//! * [`keys`]: the Redis hash tag every key of one actor shares.

mod actor_ref;
pub mod chain;
pub mod keys;
mod message;
pub mod reminders;
pub mod timers;

pub use actor_ref::{ActorRef, BadActorRef};
pub use chain::{CallChain, ChainError};
pub use message::{Message, TraceParent};
