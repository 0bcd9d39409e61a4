//! The local directory: which actors have an activation on this host, and the
//! mailbox protocol that gets every message to exactly one of them.
//!
//! Each entry maps an actor ref to the mailbox of its one activation. The
//! protocol between senders and an ending activation keeps three promises:
//!
//! 1. **No message is lost or reordered by a deactivation.** An ending
//!    activation closes its mailbox, drains it, and — under the directory's
//!    entry lock — either removes its entry or puts a successor in its place
//!    whose mailbox holds the drained messages first, before any later
//!    message can reach the actor.
//! 2. **No sender spins or waits forever.** A sender that finds a mailbox
//!    closed waits until the activation's entry is released (removed, or
//!    passed to a successor: the directory notifies every such change), then
//!    looks the actor up again. The entry is released on every path out of
//!    an activation task — return, panic or abort — because the hand-over
//!    runs in its [`Slot`]'s `Drop`.
//! 3. **A full mailbox pushes back, but not past a deadline.** A sender waits
//!    for room at most until its message's deadline; an actor sending to
//!    itself never waits (it is the only one who could make room).
//!
//! A caller then waits for its answer without a timer of its own: the
//! activation holding the call answers it with a timeout at its deadline
//! (see [`crate::mailbox`]).
//!
//! Activations are started through the [`Activator`] the host installs, so
//! this module knows nothing of plugins or wasmtime. This is also the seam
//! where a cluster routes a message to another host instead of activating it
//! here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use grove_core::{CallChain, Message, TraceParent};
use tokio::sync::{oneshot, Notify};
use tokio::task::AbortHandle;
use wasmtime::component::Val;

use crate::error::{CallError, Unavailable};
use crate::limits::Limits;
use crate::mailbox::{Answer, Envelope, Mailbox, Refused, Reply, Stop};
use crate::metrics::Meters;
use crate::ActorRef;

/// A call to make: the message's parts, and who makes it.
pub(crate) struct Call<'a> {
    pub(crate) target: &'a ActorRef,
    pub(crate) function: Arc<str>,
    pub(crate) args: Vec<Val>,
    pub(crate) chain: CallChain,
    /// How long the caller waits for the answer; the message's deadline.
    pub(crate) timeout: Duration,
    /// The span it is made from, if traced.
    pub(crate) trace: Option<Box<TraceParent>>,
}

/// A call made with [`Directory::start_call`], its answer still to come
/// ([`Directory::answer`]).
pub(crate) struct Started {
    function: Arc<str>,
    answer: oneshot::Receiver<Answer>,
}

/// Starts activations for the directory.
pub(crate) trait Activator: Send + Sync + 'static {
    /// Checks that `actor`'s type is served here.
    fn check(&self, actor: &ActorRef) -> Result<(), CallError>;
    /// Spawns the task of a new activation, which reads `slot`'s mailbox and
    /// releases the slot when it ends; returns the task's abort handle.
    fn start(&self, slot: Slot) -> AbortHandle;
}

struct Listed {
    id: u64,
    mailbox: Arc<Mailbox>,
    task: Option<AbortHandle>,
}

/// The directory of a host's activations. Shared behind an `Arc`.
pub(crate) struct Directory {
    entries: DashMap<ActorRef, Listed>,
    next_id: AtomicU64,
    /// The mailbox capacity of each actor type.
    limits: Arc<Limits>,
    stopping: AtomicBool,
    /// Notified whenever an activation's entry is released: removed, or
    /// passed to a successor.
    released: Notify,
    activator: OnceLock<Weak<dyn Activator>>,
    /// Where calls that timed out are counted, if the host counts.
    meters: OnceLock<Arc<Meters>>,
}

/// An activation's place in the directory and its mailbox, owned by the
/// activation's task. Dropping it (however the task ends) hands over what is
/// left in the mailbox and releases the place.
pub(crate) struct Slot {
    directory: Arc<Directory>,
    actor: ActorRef,
    id: u64,
    mailbox: Arc<Mailbox>,
    /// Set once [`Slot::leave`] has handed over.
    left: bool,
    /// State the activation before carried over to this one (a move to a
    /// new plugin version).
    carried: Option<Vec<u8>>,
}

/// How an ending activation hands over to its successor.
struct Handover {
    /// Messages for the successor, first to last.
    left: Vec<Envelope>,
    /// Start a successor even with no message for it.
    moves: bool,
    /// State for the successor.
    carried: Option<Vec<u8>>,
}

impl Directory {
    /// A directory whose mailboxes hold as many messages as `limits` give
    /// their actor type.
    pub(crate) fn new(limits: Arc<Limits>) -> Arc<Directory> {
        Arc::new(Directory {
            entries: DashMap::new(),
            next_id: AtomicU64::new(1),
            limits,
            stopping: AtomicBool::new(false),
            released: Notify::new(),
            activator: OnceLock::new(),
            meters: OnceLock::new(),
        })
    }

    fn capacity(&self, actor: &ActorRef) -> usize {
        self.limits
            .for_type(&actor.actor_type)
            .mailbox_capacity
            .max(1)
    }

    /// Counts the calls made here that time out in `meters`: a call is
    /// counted where it runs, but a timeout where its caller gave up (the
    /// turn, if it still runs, has no caller to answer).
    pub(crate) fn count_timeouts_in(&self, meters: Arc<Meters>) {
        let _ = self.meters.set(meters);
    }

    /// Installs the activator; only the first call has an effect.
    pub(crate) fn set_activator(&self, activator: Weak<dyn Activator>) {
        let _ = self.activator.set(activator);
    }

    fn activator(&self) -> Result<Arc<dyn Activator>, CallError> {
        self.activator
            .get()
            .and_then(Weak::upgrade)
            .ok_or(CallError::Unavailable(Unavailable::ShuttingDown))
    }

    /// Whether the host is shutting down.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Whether `actor` has an activation here.
    pub(crate) fn contains(&self, actor: &ActorRef) -> bool {
        self.entries.contains_key(actor)
    }

    /// How many activations are listed.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Puts `envelope` in the mailbox of `actor`'s activation, activating it
    /// first if needed. If it cannot be delivered before its deadline, it is
    /// answered with the error, which is also returned (for one-way sends,
    /// whose sender has no other way to learn it). Without `may_wait` a full
    /// mailbox fails at once: an actor never waits for room in the mailbox
    /// of an actor waiting on it (itself included), which only that actor
    /// could empty.
    pub(crate) async fn deliver(
        self: &Arc<Self>,
        actor: &ActorRef,
        envelope: Envelope,
        may_wait: bool,
    ) -> Result<(), CallError> {
        let undelivered = |envelope: Envelope, error: CallError| {
            envelope.fail(error.clone());
            Err(error)
        };
        let deadline = envelope.deadline();
        let mut envelope = envelope;
        loop {
            if self.is_stopping() {
                return undelivered(envelope, CallError::Unavailable(Unavailable::ShuttingDown));
            }
            // The common case — listed, with room — under the entry's read
            // lock, cloning nothing: a hot actor's callers on all cores
            // would otherwise contend on its mailbox's reference count.
            if let Some(listed) = self.entries.get(actor) {
                match listed.mailbox.try_send(envelope) {
                    Ok(()) => return Ok(()),
                    Err(Refused::Full(back) | Refused::Closed(back)) => envelope = back,
                }
            }
            let (mailbox, id) = match self.lookup(actor) {
                Ok(found) => found,
                Err(error) => return undelivered(envelope, error),
            };
            // Room at once is the common case: no timer is armed for it.
            let refused = match mailbox.try_send(envelope) {
                Ok(()) => return Ok(()),
                Err(Refused::Full(back)) if !may_wait => {
                    return undelivered(back, self.mailbox_full(actor));
                }
                Err(Refused::Full(back)) => match mailbox.send(back, deadline).await {
                    Ok(()) => return Ok(()),
                    Err(Refused::Full(back)) => {
                        return undelivered(back, self.mailbox_full(actor));
                    }
                    Err(Refused::Closed(back)) => back,
                },
                Err(Refused::Closed(back)) => back,
            };
            envelope = refused;
            // The activation is ending: look again once its entry is
            // released (at once if it already is), but not past the
            // deadline.
            let released = tokio::time::timeout_at(deadline.into(), self.released(actor, id)).await;
            if released.is_err() {
                let error = envelope.undelivered_in_time(|| {
                    CallError::Unavailable(Unavailable::ActivationFailed {
                        actor: actor.to_string(),
                        message: "its previous activation was still leaving at the deadline".into(),
                    })
                });
                return undelivered(envelope, error);
            }
        }
    }

    /// Puts `envelope` in the mailbox of `actor`'s activation if one is
    /// listed and has room now; gives it back otherwise, for
    /// [`Directory::deliver`] to wait on.
    // The envelope comes back to its sender as it was: boxing it would
    // allocate on every refusal for a few bytes saved on a return.
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_deliver(&self, actor: &ActorRef, envelope: Envelope) -> Result<(), Envelope> {
        if self.is_stopping() {
            return Err(envelope);
        }
        match self.entries.get(actor) {
            Some(listed) => listed
                .mailbox
                .try_send(envelope)
                .map_err(|(Refused::Full(back) | Refused::Closed(back))| back),
            None => Err(envelope),
        }
    }

    fn mailbox_full(&self, actor: &ActorRef) -> CallError {
        CallError::Unavailable(Unavailable::MailboxFull {
            actor: actor.to_string(),
            capacity: self.capacity(actor),
        })
    }

    /// Makes `call` and waits for the answer. At the deadline whoever holds
    /// the call answers it with a timeout: a sender waiting for room at
    /// once, an activation in a long turn within an epoch tick, one busy
    /// with short turns before its next turn.
    pub(crate) async fn call(self: &Arc<Self>, call: Call<'_>) -> Answer {
        let target = call.target;
        let started = self.start_call(call).await;
        self.answer(target, started).await
    }

    /// Makes `call` without waiting for the answer: returns once the message
    /// is delivered (or has failed, its error then waiting as the answer).
    pub(crate) async fn start_call(self: &Arc<Self>, call: Call<'_>) -> Started {
        let Call {
            target,
            function,
            args,
            chain,
            timeout,
            trace,
        } = call;
        let (reply, answer) = Reply::new(timeout);
        let message = Message {
            target: target.clone(),
            function: function.clone(),
            args,
            chain,
            deadline: Instant::now() + timeout,
            reply: Some(reply),
            trace,
        };
        // An undelivered call is answered with the error.
        let _ = self.deliver(target, Envelope::Call(message), true).await;
        Started { function, answer }
    }

    /// Waits for the answer to `started`, a call to `target`. Whoever holds
    /// the call answers it by its deadline, so this wait ends by then too.
    pub(crate) async fn answer(&self, target: &ActorRef, started: Started) -> Answer {
        let Started { function, answer } = started;
        let answer = answer.await.unwrap_or_else(|_| {
            Err(CallError::Unavailable(Unavailable::ActivationFailed {
                actor: target.to_string(),
                message: "the activation ended before answering".into(),
            }))
        });
        if let (Err(error @ CallError::Unavailable(Unavailable::Timeout { .. })), Some(meters)) =
            (&answer, self.meters.get())
        {
            meters.count_timeout(target, &function, error);
        }
        answer
    }

    /// The mailbox of `actor`'s activation, activating it if it has none.
    fn lookup(self: &Arc<Self>, actor: &ActorRef) -> Result<(Arc<Mailbox>, u64), CallError> {
        if let Some(listed) = self.entries.get(actor) {
            return Ok((listed.mailbox.clone(), listed.id));
        }
        let activator = self.activator()?;
        activator.check(actor)?;
        match self.entries.entry(actor.clone()) {
            Entry::Occupied(e) => Ok((e.get().mailbox.clone(), e.get().id)),
            Entry::Vacant(e) => {
                let (listed, slot) = self.new_slot(actor, self.capacity(actor));
                let found = (listed.mailbox.clone(), listed.id);
                drop(e.insert(listed));
                // The task may end before its abort handle is recorded;
                // `start` records it only while the entry is still its own.
                self.start(actor, slot, &activator);
                Ok(found)
            }
        }
    }

    fn start(&self, actor: &ActorRef, slot: Slot, activator: &Arc<dyn Activator>) {
        let id = slot.id;
        let task = activator.start(slot);
        if let Some(mut listed) = self.entries.get_mut(actor).filter(|l| l.id == id) {
            listed.task = Some(task);
        }
    }

    fn new_slot(self: &Arc<Self>, actor: &ActorRef, capacity: usize) -> (Listed, Slot) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mailbox = Arc::new(Mailbox::new(capacity));
        let listed = Listed {
            id,
            mailbox: mailbox.clone(),
            task: None,
        };
        let slot = Slot {
            directory: self.clone(),
            actor: actor.clone(),
            id,
            mailbox,
            left: false,
            carried: None,
        };
        (listed, slot)
    }

    /// Called as activation `id` of `actor` ends, its mailbox closed and
    /// drained into `left`: removes its entry or, if messages were left or
    /// the activation `moves` to a new plugin version, lists a successor
    /// whose mailbox holds them first.
    fn hand_over(self: &Arc<Self>, actor: &ActorRef, id: u64, handover: Handover) {
        let Handover {
            left,
            moves,
            carried,
        } = handover;
        let Entry::Occupied(mut entry) = self.entries.entry(actor.clone()) else {
            return fail_all(left, CallError::Unavailable(Unavailable::ShuttingDown));
        };
        if entry.get().id != id {
            return fail_all(left, CallError::Unavailable(Unavailable::ShuttingDown));
        }
        let successor = match (left.is_empty() && !moves, self.is_stopping()) {
            (true, _) => None,
            (false, true) => {
                fail_all(left, CallError::Unavailable(Unavailable::ShuttingDown));
                None
            }
            (false, false) => match self.activator() {
                Ok(activator) => Some((activator, left)),
                Err(error) => {
                    fail_all(left, error);
                    None
                }
            },
        };
        let Some((activator, left)) = successor else {
            entry.remove();
            self.released.notify_waiters();
            return;
        };
        // `left` came out of a mailbox of the same capacity, plus what a
        // forwarder took out of it: a successor this large holds it all.
        let (listed, mut slot) = self.new_slot(actor, self.capacity(actor).max(left.len()));
        slot.carried = carried;
        for envelope in left {
            if let Err(Refused::Full(e) | Refused::Closed(e)) = listed.mailbox.try_send(envelope) {
                e.fail(CallError::Unavailable(Unavailable::ShuttingDown));
            }
        }
        entry.insert(listed);
        drop(entry);
        self.released.notify_waiters();
        self.start(actor, slot, &activator);
    }

    /// Waits until activation `id` of `actor` is no longer listed: its entry
    /// removed, or passed to a successor.
    async fn released(&self, actor: &ActorRef, id: u64) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.entries.get(actor).is_none_or(|listed| listed.id != id) {
                return;
            }
            released.await;
        }
    }

    /// Starts shutting down: no new activations or messages; every
    /// activation's mailbox stops giving it messages. An activation listed
    /// after this pass sees [`Directory::is_stopping`] before it waits.
    pub(crate) fn begin_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for listed in self.entries.iter() {
            listed.mailbox.stop(Stop::Leave);
        }
    }

    /// Asks `actor`'s activation to deactivate after its turn, as shutdown
    /// does, while the host goes on: what is queued behind goes to a
    /// successor. (A cluster host that drains moves its actors this way.)
    pub(crate) fn stop_one(&self, actor: &ActorRef) {
        if let Some(listed) = self.entries.get(actor) {
            listed.mailbox.stop(Stop::Leave);
        }
    }

    /// The `n` activations listed here that have run the most turns, most
    /// first: each actor with its turns and the messages waiting for it.
    pub(crate) fn busiest(&self, n: usize) -> Vec<(ActorRef, u64, usize)> {
        let mut all: Vec<(ActorRef, u64, usize)> = self
            .entries
            .iter()
            .map(|l| (l.key().clone(), l.mailbox.turns(), l.mailbox.len()))
            .collect();
        let n = n.min(all.len());
        if n == 0 {
            return Vec::new();
        }
        all.select_nth_unstable_by(n - 1, |a, b| b.1.cmp(&a.1));
        all.truncate(n);
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all
    }

    /// Messages waiting in the mailboxes listed here, by actor type.
    pub(crate) fn mailbox_depths(&self) -> HashMap<Arc<str>, usize> {
        let mut depths: HashMap<Arc<str>, usize> = HashMap::new();
        for listed in self.entries.iter() {
            *depths.entry(listed.key().actor_type.clone()).or_default() += listed.mailbox.len();
        }
        depths
    }

    /// The actors of `actor_type` with an activation listed here.
    pub(crate) fn listed_of_type(&self, actor_type: &str) -> Vec<ActorRef> {
        self.entries
            .iter()
            .filter(|listed| &*listed.key().actor_type == actor_type)
            .map(|listed| listed.key().clone())
            .collect()
    }

    /// Asks `actor`'s activation, if it has one, to move to the plugin
    /// version now deployed: it deactivates after its turn, and a successor
    /// takes its mailbox over at once.
    pub(crate) fn upgrade(&self, actor: &ActorRef) {
        if let Some(listed) = self.entries.get(actor) {
            listed.mailbox.stop(Stop::Upgrade);
        }
    }

    /// Waits until every activation has left, or `deadline` passes; then
    /// aborts those still running. Returns how many were aborted.
    pub(crate) async fn wait_empty(&self, deadline: Instant) -> usize {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.entries.is_empty() {
                return 0;
            }
            if tokio::time::timeout_at(deadline.into(), released)
                .await
                .is_err()
            {
                break;
            }
        }
        let stuck: Vec<AbortHandle> = self
            .entries
            .iter()
            .filter_map(|listed| listed.task.clone())
            .collect();
        for task in &stuck {
            task.abort();
        }
        stuck.len()
    }
}

fn fail_all(envelopes: Vec<Envelope>, error: CallError) {
    for envelope in envelopes {
        envelope.fail(error.clone());
    }
}

impl Slot {
    /// The actor this activation serves.
    pub(crate) fn actor(&self) -> &ActorRef {
        &self.actor
    }

    /// The next message, or `None` once the mailbox is closed and empty or
    /// the host stops.
    pub(crate) async fn recv(&self) -> Option<Envelope> {
        self.mailbox.recv().await
    }

    /// The next message if one is waiting, after answering the queued calls
    /// whose callers stopped waiting at `now`.
    pub(crate) fn try_recv(&self, now: Instant) -> Option<Envelope> {
        self.mailbox.try_recv(now)
    }

    /// The activation's mailbox, for watching deadlines during a turn.
    pub(crate) fn mailbox(&self) -> Arc<Mailbox> {
        self.mailbox.clone()
    }

    /// Whether the host is shutting down.
    pub(crate) fn is_stopping(&self) -> bool {
        self.directory.is_stopping()
    }

    /// Ends the activation in order: closes the mailbox and hands what is
    /// left in it to a successor.
    pub(crate) fn leave(self) {
        self.leave_with(Vec::new());
    }

    /// Ends the activation in order, handing its messages to a successor
    /// started at once (on whatever version of its plugin is deployed).
    pub(crate) fn move_on(mut self, carried: Option<Vec<u8>>) {
        let left = self.mailbox.close();
        let handover = Handover {
            left,
            moves: true,
            carried,
        };
        self.directory.hand_over(&self.actor, self.id, handover);
        self.left = true;
    }

    /// State the activation before carried over, for this one to restore.
    pub(crate) fn take_carried(&mut self) -> Option<Vec<u8>> {
        self.carried.take()
    }

    /// Ends the activation in order, as [`Slot::leave`] does, giving the
    /// successor `carried` to restore.
    pub(crate) fn leave_carrying(self, carried: Vec<u8>) {
        self.finish(Vec::new(), Some(carried));
    }

    /// Ends the activation in order, handing `first` to the successor ahead
    /// of what is left in the mailbox: messages this activation took but
    /// could not deliver (a cluster forwarder whose host turned out not to
    /// run the actor).
    pub(crate) fn leave_with(self, first: Vec<Envelope>) {
        self.finish(first, None);
    }

    fn finish(mut self, mut first: Vec<Envelope>, carried: Option<Vec<u8>>) {
        first.extend(self.mailbox.close());
        // Told to upgrade: the successor starts at once, on the new version,
        // even with nothing queued (its timers run again).
        let handover = Handover {
            left: first,
            moves: self.mailbox.stopped() == Some(Stop::Upgrade),
            carried,
        };
        self.directory.hand_over(&self.actor, self.id, handover);
        self.left = true;
    }
}

impl Drop for Slot {
    /// Runs on every way out of an activation task: takes what is still
    /// queued and, after a panic, hands it over to a successor; after an
    /// abort (shutdown, or the runtime going away) fails it. Either way the
    /// actor never stays listed with a mailbox nobody reads.
    fn drop(&mut self) {
        if self.left {
            return;
        }
        let mut left = self.mailbox.close();
        // Only a panic leaves a runtime able to run a successor; a task
        // dropped with its runtime must not spawn (and drop) another.
        if !std::thread::panicking() {
            fail_all(
                std::mem::take(&mut left),
                CallError::Unavailable(Unavailable::ShuttingDown),
            );
        }
        let handover = Handover {
            left,
            moves: false,
            carried: None,
        };
        self.directory.hand_over(&self.actor, self.id, handover);
    }
}

#[cfg(test)]
mod tests {
    //! The mailbox protocol against a model activator whose activations
    //! answer, deactivate after some messages, or panic: every call gets
    //! exactly one answer in whatever interleaving the runtime produces, and
    //! shutdown always finishes.

    use std::future::Future;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Mutex;

    use super::*;
    use crate::error::RejectedCall;

    /// A model activation answers each call with its own number, records
    /// one-way sends, panics on a call whose argument is `"panic"`, and
    /// leaves after every `leave_every` messages.
    struct Model {
        leave_every: usize,
        started: AtomicUsize,
        ran: Arc<Mutex<Vec<u64>>>,
    }

    impl Activator for Model {
        fn check(&self, actor: &ActorRef) -> Result<(), CallError> {
            match &*actor.actor_type {
                "model" => Ok(()),
                other => Err(CallError::Rejected(RejectedCall::UnknownActorType(
                    other.to_owned(),
                ))),
            }
        }

        fn start(&self, slot: Slot) -> AbortHandle {
            let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
            let (leave_every, ran) = (self.leave_every, self.ran.clone());
            tokio::spawn(async move {
                let mut handled = 0;
                loop {
                    if slot.is_stopping() {
                        break;
                    }
                    let Some(Envelope::Call(message)) = slot.recv().await else {
                        break;
                    };
                    if let Some(Val::String(s)) = message.args.first() {
                        assert_ne!(s, "panic", "model activation {n} panics on purpose");
                    }
                    handled += 1;
                    if let Some(reply) = message.reply {
                        reply.send(Ok(Some(Val::U64(n as u64))));
                    } else if let Some(Val::U64(i)) = message.args.first() {
                        ran.lock().unwrap().push(*i);
                    }
                    if handled % leave_every == 0 {
                        break;
                    }
                }
                slot.leave();
            })
            .abort_handle()
        }
    }

    fn model(leave_every: usize, capacity: usize) -> (Arc<Model>, Arc<Directory>) {
        let model = Arc::new(Model {
            leave_every,
            started: AtomicUsize::new(0),
            ran: Arc::default(),
        });
        let mut limits = Limits::default();
        limits.actor.mailbox_capacity = capacity;
        let directory = Directory::new(Arc::new(limits));
        let activator: Arc<dyn Activator> = model.clone();
        directory.set_activator(Arc::downgrade(&activator));
        (model, directory)
    }

    fn call(
        directory: &Arc<Directory>,
        key: &str,
        args: Vec<Val>,
    ) -> impl Future<Output = Answer> + 'static {
        let directory = directory.clone();
        let target = ActorRef::new("model", key);
        async move {
            let call = Call {
                target: &target,
                function: "f".into(),
                args,
                chain: None,
                timeout: Duration::from_secs(20),
                trace: None,
            };
            directory.call(call).await
        }
    }

    fn one_way(target: &ActorRef, i: u64) -> Envelope {
        Envelope::Call(Message {
            target: target.clone(),
            function: "f".into(),
            args: vec![Val::U64(i)],
            chain: None,
            deadline: Instant::now() + Duration::from_secs(20),
            reply: None,
            trace: None,
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn calls_racing_deactivations_each_get_one_answer() {
        let (model, directory) = model(3, 4);
        let calls: Vec<_> = (0..2_000)
            .map(|i| tokio::spawn(call(&directory, &format!("{}", i % 7), vec![])))
            .collect();
        for call in calls {
            let answer = tokio::time::timeout(Duration::from_secs(20), call)
                .await
                .expect("a call hung")
                .unwrap();
            assert!(matches!(answer, Ok(Some(Val::U64(_)))), "{answer:?}");
        }
        // Each activation left after three messages: many came and went.
        assert!(model.started.load(Ordering::SeqCst) >= 2_000 / 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_activation_hands_over_instead_of_wedging_its_actor() {
        let (model, directory) = model(usize::MAX, 64);
        // The call that panics is queued first, then ten more behind it.
        let target = ActorRef::new("model", "a");
        let (reply, panic) = Reply::new(Duration::from_secs(20));
        let envelope = Envelope::Call(Message {
            target: target.clone(),
            function: "f".into(),
            args: vec![Val::String("panic".into())],
            chain: None,
            deadline: Instant::now() + Duration::from_secs(20),
            reply: Some(reply),
            trace: None,
        });
        directory.deliver(&target, envelope, true).await.unwrap();
        let queued: Vec<_> = (0..10)
            .map(|_| tokio::spawn(call(&directory, "a", vec![])))
            .collect();
        let lost = tokio::time::timeout(Duration::from_secs(10), panic)
            .await
            .expect("the panicking call hung")
            .unwrap_or_else(|_| {
                Err(CallError::Unavailable(Unavailable::ActivationFailed {
                    actor: target.to_string(),
                    message: "no answer".into(),
                }))
            });
        assert!(
            matches!(
                lost,
                Err(CallError::Unavailable(Unavailable::ActivationFailed { .. }))
            ),
            "{lost:?}"
        );
        for queued in queued {
            let answer = tokio::time::timeout(Duration::from_secs(10), queued)
                .await
                .expect("a caller of a panicked actor hung")
                .unwrap();
            assert!(matches!(answer, Ok(Some(Val::U64(_)))), "{answer:?}");
        }
        assert!(model.started.load(Ordering::SeqCst) >= 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_way_sends_keep_their_order_across_deactivations_and_shutdown_ends_all() {
        let (model, directory) = model(5, 8);
        let target = ActorRef::new("model", "order");
        for i in 0..500u64 {
            directory
                .deliver(&target, one_way(&target, i), true)
                .await
                .unwrap();
        }
        let ran = || model.ran.lock().unwrap().clone();
        let start = Instant::now();
        while ran().len() < 500 {
            assert!(start.elapsed() < Duration::from_secs(20), "sends were lost");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(ran(), (0..500).collect::<Vec<_>>());

        // Shutdown: every activation sees the signal and leaves; later calls
        // are refused.
        for i in 0..20 {
            drop(tokio::spawn(call(&directory, &i.to_string(), vec![])));
        }
        directory.begin_stop();
        let aborted = directory
            .wait_empty(Instant::now() + Duration::from_secs(10))
            .await;
        assert_eq!(aborted, 0);
        assert_eq!(directory.len(), 0);
        assert!(matches!(
            call(&directory, "late", vec![]).await,
            Err(CallError::Unavailable(Unavailable::ShuttingDown))
        ));
    }

    /// On one thread the new activation's task cannot run before the test
    /// yields, so the mailbox stays as the test filled it.
    #[tokio::test(flavor = "current_thread")]
    async fn an_actor_never_waits_for_room_in_its_own_mailbox() {
        let (_model, directory) = model(usize::MAX, 1);
        let target = ActorRef::new("model", "self");
        let (mailbox, _) = directory.lookup(&target).unwrap();
        assert!(mailbox.try_send(one_way(&target, 0)).is_ok());
        let (reply, answer) = Reply::new(Duration::from_secs(20));
        let envelope = Envelope::Call(Message {
            target: target.clone(),
            function: "f".into(),
            args: vec![],
            chain: None,
            deadline: Instant::now() + Duration::from_secs(20),
            reply: Some(reply),
            trace: None,
        });
        let sent = tokio::time::timeout(
            Duration::from_secs(5),
            directory.deliver(&target, envelope, false),
        )
        .await
        .expect("a send to itself waited for room");
        assert!(matches!(
            sent,
            Err(CallError::Unavailable(Unavailable::MailboxFull { .. }))
        ));
        assert!(matches!(
            answer.await,
            Ok(Err(CallError::Unavailable(Unavailable::MailboxFull { .. })))
        ));
    }
}
