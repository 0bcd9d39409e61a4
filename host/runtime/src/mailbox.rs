//! An activation's mailbox, and what it holds: calls and one-way sends as
//! [`grove_core::Message`]s, reminder firings and gateway session events.
//!
//! Every envelope has a deadline and knows how to answer itself with an
//! error, so whoever cannot deliver it (a closed host, a full mailbox, an
//! activation that failed to start) tells the sender why instead of dropping
//! it.
//!
//! A caller does not arm a timer of its own: the side holding its call
//! answers it with a timeout at the call's deadline. Most calls are answered
//! in microseconds, and a timer per call (registered with tokio, or with a
//! shared clock) cost a fifth of local call throughput. So an activation
//! watches deadlines only while a turn outlasts its first poll: then it
//! answers the turn's caller at that caller's deadline, and every call
//! queued behind the turn at its own ([`Mailbox::police`]). A sender that
//! queues a call with an earlier deadline than any the activation watches
//! wakes it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, Notify, Semaphore, TryAcquireError};
use wasmtime::component::Val;

use crate::bindings::DisconnectReason;
use crate::error::{CallError, Unavailable};
use crate::throttled::UNDELIVERED;
use crate::ActorRef;

/// What a call answers: the function's result, if it has one.
pub(crate) type Answer = Result<Option<Val>, CallError>;

/// The route an answer takes back to its caller: a channel to a caller in
/// this process, or, for a caller on another host, straight onto that
/// host's connection (no task waits for it).
pub(crate) struct Reply {
    route: Route,
    /// How long the caller waits in all, in nanoseconds (a `Duration` would
    /// make every envelope 8 bytes larger); named in its timeout error.
    timeout_ns: u64,
}

enum Route {
    Local(oneshot::Sender<Answer>),
    /// Boxed twice: a thin pointer keeps every envelope as small as a
    /// local reply does.
    Remote(Box<Box<dyn RemoteCaller>>),
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A caller on another host, answered once through its host's connection.
/// Dropped unanswered, it tells the caller the activation ended.
pub(crate) trait RemoteCaller: Send + 'static {
    /// Sends `answer` to the caller.
    fn answer(self: Box<Self>, answer: Answer);
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let route = match self.route {
            Route::Local(_) => "local",
            Route::Remote(_) => "remote",
        };
        f.debug_struct("Reply")
            .field("route", &route)
            .field("timeout", &self.timeout())
            .finish()
    }
}

impl Reply {
    /// A route for a caller that waits `timeout` on `answer`'s receiver.
    pub(crate) fn new(timeout: Duration) -> (Reply, oneshot::Receiver<Answer>) {
        let (answer, receiver) = oneshot::channel();
        let reply = Reply {
            route: Route::Local(answer),
            timeout_ns: nanos(timeout),
        };
        (reply, receiver)
    }

    /// How long the caller waits in all.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_nanos(self.timeout_ns)
    }

    /// A route to a caller on another host that waits `timeout`.
    pub(crate) fn remote(timeout: Duration, caller: Box<dyn RemoteCaller>) -> Reply {
        Reply {
            route: Route::Remote(Box::new(caller)),
            timeout_ns: nanos(timeout),
        }
    }

    /// Sends the answer (a caller that stopped waiting does not get it).
    pub(crate) fn send(self, answer: Answer) {
        match self.route {
            Route::Local(sender) => {
                let _ = sender.send(answer);
            }
            Route::Remote(caller) => (*caller).answer(answer),
        }
    }

    /// Whether the caller stopped waiting (its future was dropped). A
    /// caller on another host waits until its deadline.
    pub(crate) fn is_closed(&self) -> bool {
        match &self.route {
            Route::Local(sender) => sender.is_closed(),
            Route::Remote(_) => false,
        }
    }

    /// Answers that the call to `function` of `actor` was not answered in
    /// time.
    pub(crate) fn time_out(self, actor: &ActorRef, function: &str) {
        let timeout = self.timeout();
        self.send(Err(CallError::Unavailable(Unavailable::Timeout {
            actor: actor.to_string(),
            function: function.to_owned(),
            timeout,
        })));
    }
}

/// A call or one-way send with component values, answered over a local
/// channel.
pub(crate) type CallMessage = grove_core::Message<Vec<Val>, Reply>;

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
    /// Whether this is a call from another actor, which waits for it in a
    /// turn of its own.
    pub(crate) fn serves_an_actor(&self) -> bool {
        matches!(self, Envelope::Call(message) if message.chain.is_some())
    }

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
                Some(reply) => reply.send(Err(error)),
                None => {
                    if let Some(undelivered_not_logged) = UNDELIVERED.admit() {
                        tracing::warn!(actor = %message.target, function = %message.function, %error, undelivered_not_logged, "one-way message not delivered");
                    }
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
                if let Some(undelivered_not_logged) = UNDELIVERED.admit() {
                    tracing::warn!(%error, hook = event.hook(), undelivered_not_logged, "session event not delivered");
                }
            }
        }
    }
}

impl Envelope {
    /// The error for a caller whose deadline passed before the envelope
    /// could be delivered: `timeout` for a call, `reason` otherwise.
    pub(crate) fn undelivered_in_time(&self, reason: impl FnOnce() -> CallError) -> CallError {
        match self {
            Envelope::Call(message) => match &message.reply {
                Some(reply) => CallError::Unavailable(Unavailable::Timeout {
                    actor: message.target.to_string(),
                    function: message.function.to_string(),
                    timeout: reply.timeout(),
                }),
                None => reason(),
            },
            _ => reason(),
        }
    }

    /// When the caller waiting on this envelope stops waiting; `None` when
    /// nobody waits on it here (one-way sends run whenever they come up, and
    /// reminders and session events are timed by whoever sent them).
    fn caller_deadline(&self) -> Option<Instant> {
        match self {
            Envelope::Call(message) if message.is_call() => Some(message.deadline),
            _ => None,
        }
    }

    /// Whether this is a call whose caller has stopped waiting at `now`:
    /// `Ok(envelope)` if it still matters, `Err` once it has been answered
    /// with a timeout (or its caller is gone).
    fn unless_expired(self, now: Instant) -> Result<Envelope, ()> {
        let Envelope::Call(mut message) = self else {
            return Ok(self);
        };
        let expired = message.expired(now);
        match message.reply.take() {
            Some(reply) if reply.is_closed() => Err(()),
            Some(reply) if expired => {
                reply.time_out(&message.target, &message.function);
                Err(())
            }
            reply => {
                message.reply = reply;
                Ok(Envelope::Call(message))
            }
        }
    }
}

/// Why a mailbox did not take an envelope, which comes back.
pub(crate) enum Refused {
    /// It holds as many messages as it may.
    Full(Envelope),
    /// Its activation is leaving.
    Closed(Envelope),
}

/// The mailbox of one activation: a bounded queue with one reader (the
/// activation's task) and any number of senders.
pub(crate) struct Mailbox {
    queue: Mutex<Queue>,
    /// One permit per free place. Freed places go to waiting senders first
    /// come, first served, before a newcomer can take one; closing the
    /// mailbox closes it.
    room: Semaphore,
    /// Wakes the activation watching deadlines when a call with an earlier
    /// deadline arrives.
    sooner: Notify,
    /// Turns the activation has run: how busy it is, for operators.
    turns: AtomicU64,
}

/// Why an activation was told to stop taking messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The host shuts down, or the actor leaves it.
    Leave,
    /// A new version of its plugin was deployed: a successor on the new
    /// version takes the mailbox over at once.
    Upgrade,
}

/// The messages in a mailbox, first to last. The first waits inline, so an
/// actor that one caller at a time calls never allocates room for more.
#[derive(Default)]
struct Fifo {
    first: Option<Envelope>,
    rest: VecDeque<Envelope>,
}

impl Fifo {
    fn push_back(&mut self, envelope: Envelope) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(envelope);
        } else {
            self.rest.push_back(envelope);
        }
    }

    fn pop_front(&mut self) -> Option<Envelope> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn front(&self) -> Option<&Envelope> {
        self.first.as_ref().or_else(|| self.rest.front())
    }

    fn drain(&mut self) -> impl Iterator<Item = Envelope> + '_ {
        self.first.take().into_iter().chain(self.rest.drain(..))
    }

    fn iter(&self) -> impl Iterator<Item = &Envelope> {
        self.first.iter().chain(self.rest.iter())
    }
}

struct Queue {
    envelopes: Fifo,
    closed: bool,
    /// Set when the reader is to stop taking messages, and why.
    stop: Option<Stop>,
    /// The activation's task, if it waits for a message (or, for a turn,
    /// for a call from an actor to arrive: [`Mailbox::actor_waits`]).
    reader: Option<Waker>,
    /// No queued call's caller waits past this (it may be earlier than any
    /// left: it is exact only after [`Mailbox::expire`]).
    earliest: Option<Instant>,
    /// Whether the activation watches deadlines (a long turn runs).
    watched: bool,
}

impl Mailbox {
    /// An empty, open mailbox holding at most `capacity` messages.
    pub(crate) fn new(capacity: usize) -> Mailbox {
        Mailbox {
            queue: Mutex::new(Queue {
                envelopes: Fifo::default(),
                closed: false,
                stop: None,
                reader: None,
                earliest: None,
                watched: false,
            }),
            room: Semaphore::new(capacity.max(1)),
            sooner: Notify::new(),
            turns: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while the lock is held; a poisoned queue is intact.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `envelope` if the mailbox is open and has room (and no sender
    /// waits for room before it).
    // The envelope comes back to its sender as it was: boxing it would
    // allocate on every refusal for a few bytes saved on a return.
    #[allow(clippy::result_large_err)]
    pub(crate) fn try_send(&self, envelope: Envelope) -> Result<(), Refused> {
        match self.room.try_acquire() {
            Ok(place) => place.forget(),
            Err(TryAcquireError::NoPermits) => return Err(Refused::Full(envelope)),
            Err(TryAcquireError::Closed) => return Err(Refused::Closed(envelope)),
        }
        self.push(envelope)
    }

    /// Queues `envelope` in a place already taken.
    // The envelope comes back to its sender as it was: boxing it would
    // allocate on every refusal for a few bytes saved on a return.
    #[allow(clippy::result_large_err)]
    fn push(&self, envelope: Envelope) -> Result<(), Refused> {
        let mut queue = self.lock();
        if queue.closed {
            return Err(Refused::Closed(envelope));
        }
        let mut sooner = false;
        if let Some(deadline) = envelope.caller_deadline() {
            if queue.earliest.is_none_or(|earliest| deadline < earliest) {
                queue.earliest = Some(deadline);
                sooner = queue.watched;
            }
        }
        queue.envelopes.push_back(envelope);
        let reader = queue.reader.take();
        drop(queue);
        if let Some(reader) = reader {
            reader.wake();
        }
        if sooner {
            self.sooner.notify_one();
        }
        Ok(())
    }

    /// Queues `envelope`, waiting for room until `until`; then it comes back
    /// as [`Refused::Full`].
    pub(crate) async fn send(&self, envelope: Envelope, until: Instant) -> Result<(), Refused> {
        let envelope = match self.try_send(envelope) {
            Err(Refused::Full(back)) => back,
            sent_or_closed => return sent_or_closed,
        };
        match tokio::time::timeout_at(until.into(), self.room.acquire()).await {
            Ok(Ok(place)) => {
                place.forget();
                self.push(envelope)
            }
            Ok(Err(_closed)) => Err(Refused::Closed(envelope)),
            Err(_deadline) => Err(Refused::Full(envelope)),
        }
    }

    fn pop(&self, queue: &mut Queue) -> Option<Envelope> {
        let envelope = queue.envelopes.pop_front()?;
        self.room.add_permits(1);
        Some(envelope)
    }

    /// Frees the room a backlog of messages took, once none waits: an idle
    /// activation holds none (at least four envelopes' room, 512 bytes).
    pub(crate) fn free_room_if_empty(&self) {
        let mut queue = self.lock();
        if queue.envelopes.len() == 0 && queue.envelopes.rest.capacity() > 0 {
            queue.envelopes.rest = VecDeque::new();
        }
    }

    /// Whether the first message waiting is a call from another actor.
    pub(crate) fn first_serves_an_actor(&self) -> bool {
        self.lock()
            .envelopes
            .front()
            .is_some_and(Envelope::serves_an_actor)
    }

    /// Resolves once a call from another actor waits in the mailbox: at
    /// once if one does, otherwise when one arrives. For the activation's
    /// task while it waits for a running turn, not for a message.
    pub(crate) async fn actor_waits(&self) {
        std::future::poll_fn(|cx| {
            let mut queue = self.lock();
            if queue.envelopes.iter().any(Envelope::serves_an_actor) {
                return Poll::Ready(());
            }
            // Every message queued wakes the reader's waker: this one now.
            queue.reader = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// How many messages wait.
    pub(crate) fn len(&self) -> usize {
        self.lock().envelopes.len()
    }

    /// Counts a turn of the activation reading this mailbox.
    pub(crate) fn count_turn(&self) {
        self.turns.fetch_add(1, Ordering::Relaxed);
    }

    /// The turns the activation reading this mailbox has run.
    pub(crate) fn turns(&self) -> u64 {
        self.turns.load(Ordering::Relaxed)
    }

    /// The next message if one is waiting. Calls queued whose callers
    /// stopped waiting at `now` are answered with a timeout first, so a
    /// backlog of short turns does not hold a caller past its deadline.
    pub(crate) fn try_recv(&self, now: Instant) -> Option<Envelope> {
        let mut queue = self.lock();
        if queue.stop.is_some() {
            return None;
        }
        if queue.earliest.is_some_and(|earliest| earliest <= now) {
            self.expire_locked(&mut queue, now);
        }
        self.pop(&mut queue)
    }

    /// The next message, or `None` once the mailbox is closed and empty or
    /// [stopped](Mailbox::stop).
    pub(crate) async fn recv(&self) -> Option<Envelope> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Envelope>> {
        let mut queue = self.lock();
        if queue.stop.is_some() {
            return Poll::Ready(None);
        }
        if let Some(envelope) = self.pop(&mut queue) {
            return Poll::Ready(Some(envelope));
        }
        if queue.closed {
            return Poll::Ready(None);
        }
        if !queue
            .reader
            .as_ref()
            .is_some_and(|reader| reader.will_wake(cx.waker()))
        {
            queue.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Tells the reader to stop: [`recv`](Mailbox::recv) and
    /// [`try_recv`](Mailbox::try_recv) answer `None` from now on. An
    /// activation learns of shutdown this way rather than by watching a
    /// signal shared by all of them, whose every poll would take one lock
    /// from every core. Leaving outranks upgrading.
    pub(crate) fn stop(&self, why: Stop) {
        let mut queue = self.lock();
        if why == Stop::Leave || queue.stop.is_none() {
            queue.stop = Some(why);
        }
        let reader = queue.reader.take();
        drop(queue);
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// Why the reader was told to stop, if it was.
    pub(crate) fn stopped(&self) -> Option<Stop> {
        self.lock().stop
    }

    /// Closes the mailbox to senders and takes everything in it.
    pub(crate) fn close(&self) -> Vec<Envelope> {
        let mut queue = self.lock();
        queue.closed = true;
        let left = queue.envelopes.drain().collect();
        drop(queue);
        self.room.close();
        left
    }

    /// Answers every queued call whose caller stopped waiting at `now` with
    /// a timeout, and drops those whose caller is gone; returns the earliest
    /// deadline of the calls left.
    fn expire(&self, now: Instant) -> Option<Instant> {
        let mut queue = self.lock();
        if queue.earliest.is_none_or(|earliest| earliest > now) {
            return queue.earliest;
        }
        self.expire_locked(&mut queue, now)
    }

    fn expire_locked(&self, queue: &mut Queue, now: Instant) -> Option<Instant> {
        let before = queue.envelopes.len();
        let mut kept = Fifo::default();
        let mut earliest: Option<Instant> = None;
        for envelope in queue.envelopes.drain() {
            // Answering only sends on a oneshot: cheap under the lock.
            if let Ok(envelope) = envelope.unless_expired(now) {
                if let Some(deadline) = envelope.caller_deadline() {
                    earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
                }
                kept.push_back(envelope);
            }
        }
        self.room.add_permits(before - kept.len());
        queue.envelopes = kept;
        queue.earliest = earliest;
        earliest
    }

    /// Answers callers at their deadlines while a turn runs: `caller` (the
    /// turn's own, if it waits) and every call queued behind the turn.
    /// Never returns; the turn drops it when it ends.
    pub(crate) async fn police(&self, mut caller: Option<Caller<'_>>) -> Infallible {
        let _watching = Watching::start(self);
        loop {
            let sooner = self.sooner.notified();
            tokio::pin!(sooner);
            sooner.as_mut().enable();
            // tokio's clock, which tests may pause.
            let now = tokio::time::Instant::now().into_std();
            if caller.as_ref().is_some_and(|c| now >= c.deadline) {
                if let Some(caller) = caller.take() {
                    caller.time_out();
                }
            }
            let queued = self.expire(now);
            let next = match (queued, caller.as_ref().map(|c| c.deadline)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at.into()) => {}
                        () = &mut sooner => {}
                    }
                }
                None => sooner.await,
            }
        }
    }
}

/// Marks the mailbox watched for as long as a [`Mailbox::police`] runs.
struct Watching<'a>(&'a Mailbox);

impl<'a> Watching<'a> {
    fn start(mailbox: &'a Mailbox) -> Watching<'a> {
        mailbox.lock().watched = true;
        Watching(mailbox)
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        self.0.lock().watched = false;
    }
}

/// The caller of the turn that runs now, answered with a timeout if the
/// turn outlasts its deadline (the turn goes on; its answer is dropped).
pub(crate) struct Caller<'a> {
    pub(crate) deadline: Instant,
    pub(crate) reply: &'a mut Option<Reply>,
    pub(crate) actor: &'a ActorRef,
    pub(crate) function: &'a str,
}

impl Caller<'_> {
    fn time_out(self) {
        if let Some(reply) = self.reply.take() {
            reply.time_out(self.actor, self.function);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The mailbox on virtual time: deadlines hours apart run in
    //! milliseconds and never flake.

    use super::*;

    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn message(deadline: Instant, reply: Option<Reply>) -> Envelope {
        Envelope::Call(grove_core::Message {
            target: ActorRef::new("counter", "7"),
            function: "add".into(),
            args: vec![],
            chain: None,
            deadline,
            reply,
            trace: None,
        })
    }

    fn call(timeout: Duration) -> (Envelope, oneshot::Receiver<Answer>) {
        let (reply, answer) = Reply::new(timeout);
        (message(now() + timeout, Some(reply)), answer)
    }

    fn timed_out(answer: Result<Answer, oneshot::error::RecvError>) -> bool {
        matches!(
            answer,
            Ok(Err(CallError::Unavailable(Unavailable::Timeout { .. })))
        )
    }

    #[tokio::test(start_paused = true)]
    async fn during_a_long_turn_every_caller_hears_timeout_at_its_own_deadline() {
        let mailbox = Mailbox::new(8);
        let start = tokio::time::Instant::now();
        let (late, late_answer) = call(Duration::from_secs(10));
        assert!(mailbox.try_send(late).is_ok());
        let send_later = message(now() + Duration::from_secs(1), None);
        assert!(mailbox.try_send(send_later).is_ok());
        // The turn's own caller waits 5 s.
        let (reply, turn_answer) = Reply::new(Duration::from_secs(5));
        let mut reply = Some(reply);
        let actor = ActorRef::new("counter", "7");
        let caller = Caller {
            deadline: now() + Duration::from_secs(5),
            reply: &mut reply,
            actor: &actor,
            function: "add",
        };
        let policing = mailbox.police(Some(caller));
        tokio::pin!(policing);
        // A call with an earlier deadline than any watched arrives at 1 s.
        let early = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (early, answer) = call(Duration::from_secs(1));
            assert!(mailbox.try_send(early).is_ok());
            answer.await
        };
        let answered = |what: &str, answer| {
            assert!(timed_out(answer), "{what}");
            start.elapsed().as_secs()
        };
        let early = tokio::select! {
            never = &mut policing => match never {},
            answer = early => answered("early", answer),
        };
        assert_eq!(early, 2, "the early call at its deadline");
        let turn = tokio::select! {
            never = &mut policing => match never {},
            answer = turn_answer => answered("turn", answer),
        };
        assert_eq!(turn, 5, "the turn's caller at its deadline");
        let late = tokio::select! {
            never = &mut policing => match never {},
            answer = late_answer => answered("late", answer),
        };
        assert_eq!(late, 10, "the late call at its deadline");
        // Only the one-way send is left: it runs whenever it comes up.
        assert!(matches!(mailbox.try_recv(now()), Some(Envelope::Call(m)) if !m.is_call()));
        assert!(mailbox.try_recv(now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_waits_for_room_until_its_deadline_and_a_closed_mailbox_refuses() {
        let mailbox = std::sync::Arc::new(Mailbox::new(1));
        let one_way = || message(now() + Duration::from_secs(60), None);
        assert!(mailbox.try_send(one_way()).is_ok());
        assert!(matches!(mailbox.try_send(one_way()), Err(Refused::Full(_))));
        // Room made before the deadline lets a waiting sender in.
        let waiting = tokio::spawn({
            let mailbox = mailbox.clone();
            async move {
                let until = now() + Duration::from_secs(1);
                mailbox.send(message(until, None), until).await.is_ok()
            }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(mailbox.try_recv(now()).is_some());
        assert!(waiting.await.unwrap());
        // No room by the deadline: the envelope comes back.
        let until = now() + Duration::from_secs(1);
        let refused = mailbox.send(one_way(), until).await;
        assert!(matches!(refused, Err(Refused::Full(_))));
        assert!(now() >= until);
        // Closing hands back what is queued and refuses what comes later.
        assert_eq!(mailbox.close().len(), 1);
        assert!(matches!(
            mailbox.try_send(one_way()),
            Err(Refused::Closed(_))
        ));
        assert!(mailbox.recv().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn between_short_turns_the_reader_answers_calls_whose_deadline_passed() {
        let mailbox = Mailbox::new(8);
        let (call, answer) = call(Duration::from_secs(1));
        assert!(mailbox.try_send(call).is_ok());
        let send = message(now() + Duration::from_secs(1), None);
        assert!(mailbox.try_send(send).is_ok());
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The expired call is answered, not handed out; the send still runs.
        assert!(matches!(mailbox.try_recv(now()), Some(Envelope::Call(m)) if !m.is_call()));
        assert!(timed_out(answer.await));
    }

    #[tokio::test(start_paused = true)]
    async fn a_place_freed_in_a_full_mailbox_goes_to_the_sender_waiting_longest() {
        let mailbox = std::sync::Arc::new(Mailbox::new(1));
        let one_way = || message(now() + Duration::from_secs(60), None);
        assert!(mailbox.try_send(one_way()).is_ok());
        let waiting = tokio::spawn({
            let mailbox = mailbox.clone();
            async move {
                let until = now() + Duration::from_secs(10);
                mailbox.send(one_way(), until).await.is_ok()
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(mailbox.try_recv(now()).is_some());
        // A newcomer does not take the place the waiting sender was owed.
        assert!(matches!(mailbox.try_send(one_way()), Err(Refused::Full(_))));
        assert!(waiting.await.unwrap());
    }
}
