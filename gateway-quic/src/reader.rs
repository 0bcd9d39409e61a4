//! What every door shares once a client has logged in: the authenticator's
//! answer, the session's life from welcome to disconnect, and the reader that
//! hands the client's messages to the owner.
//!
//! A door (QUIC, WebTransport, WebSocket) reads the client's credentials its
//! own way, then calls [`authenticate`] and [`run_session`] with a [`Source`]
//! of the client's messages and a writer task for its frames. From there on
//! the rules are the same whichever door the client came through: rate,
//! frame size, read-ahead, close reasons and the owner's events.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use crate::protocol::{CloseCode, FrameDecoder, RateLimit, Welcome};
use crate::server::{AuthError, Backend, Shared};
use crate::sessions::{Disconnect, Door, End, Outbound, SessionId, SessionLink};

/// Bytes a message in a session's inbound backlog is charged beyond its
/// payload (its bookkeeping), so that empty frames count too.
const MESSAGE_OVERHEAD: usize = 64;

/// Why a client was not admitted: the close code and reason, or `None` if
/// it went away.
pub(crate) type Refusal = Option<(CloseCode, String)>;

/// What a door reads from its client once the session runs.
pub(crate) enum Incoming {
    /// Bytes of the client's length-prefixed frame stream.
    Bytes(Bytes),
    /// One whole message: a WebSocket message (reliable) or a datagram.
    Message(Bytes, bool),
    /// The client ended its side of the stream normally.
    Finished,
    /// The connection is gone, for this reason (unless the gateway closed it
    /// first, which then takes precedence).
    Gone(Disconnect),
    /// The client broke the protocol; the session is closed with this code.
    Violation(CloseCode, String),
    /// The client was heard from (a ping or pong) with nothing to deliver.
    Heard,
}

/// Where a door's reader gets the client's messages.
pub(crate) trait Source: Send {
    /// The next thing the client sent. Must be cancel-safe: the reader drops
    /// it unfinished whenever the owner takes a message first.
    fn next(&mut self) -> impl Future<Output = Incoming> + Send;
}

/// A client the authenticator accepted.
pub(crate) struct Login<O> {
    /// The actor that owns the session.
    pub(crate) owner: O,
    /// The client's rate bucket, paused since its credentials arrived.
    pub(crate) limit: RateLimit,
    /// Its place among the gateway's sessions.
    pub(crate) slot: OwnedSemaphorePermit,
}

/// Asks the authenticator about `credentials`; starts the client's rate
/// bucket, paused.
pub(crate) async fn authenticate<B: Backend>(
    shared: &Shared<B>,
    credentials: Bytes,
    slot: OwnedSemaphorePermit,
) -> Result<Login<B::Owner>, Refusal> {
    let config = &shared.config;
    // The client's rate is measured from its credentials on. Nothing more is
    // read until the session starts, so until then the bucket is paused: what
    // the client sends meanwhile waits in the transport's buffers and is
    // counted, with credit for the wait, once the session reads it.
    let now = Instant::now();
    let mut limit = RateLimit::new(config.message_rate, config.message_burst, now);
    limit.pause(now);
    let authenticated = tokio::time::timeout(
        config.auth_timeout,
        shared.backend.authenticate(credentials),
    )
    .await;
    let owner = match authenticated {
        Ok(Ok(owner)) => owner,
        Ok(Err(AuthError::Rejected(reason))) => {
            return Err(Some((CloseCode::AuthRejected, reason)))
        }
        Ok(Err(AuthError::Failed(reason))) => {
            tracing::warn!(%reason, "authentication failed");
            return Err(Some((CloseCode::AuthFailed, reason)));
        }
        Err(_) => {
            let reason = format!(
                "the authenticator did not answer within {:?}",
                config.auth_timeout
            );
            return Err(Some((CloseCode::AuthFailed, reason)));
        }
    };
    Ok(Login { owner, limit, slot })
}

/// Waits (at most `grace`) for a door's connection tasks to end once it
/// stops accepting, then aborts the rest.
pub(crate) async fn drain(mut connections: tokio::task::JoinSet<()>, grace: std::time::Duration) {
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drained).await.is_err() {
        connections.abort_all();
    }
}

/// Reserves a session slot, or says why there is none.
pub(crate) fn session_slot<B: Backend>(
    shared: &Shared<B>,
) -> Result<OwnedSemaphorePermit, (CloseCode, String)> {
    shared
        .session_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            let reason = format!(
                "the gateway serves at most {} sessions",
                shared.config.max_sessions
            );
            (CloseCode::ServerBusy, reason)
        })
}

/// How a door runs one admitted client.
pub(crate) struct Admission<O, S> {
    /// What the authenticator said.
    pub(crate) login: Login<O>,
    /// The client's connection.
    pub(crate) door: Door,
    /// Where the client's address is shown in logs.
    pub(crate) remote: SocketAddr,
    /// The client's messages.
    pub(crate) source: S,
    /// Whatever the client sent on its stream after its credentials (empty
    /// for doors without a byte stream).
    pub(crate) decoder: FrameDecoder,
}

/// Runs an admitted client's session until it ends, and tells the owner.
/// `write` starts the door's writer on the session's outbound queue, whose
/// first frame is the welcome.
pub(crate) async fn run_session<B: Backend, S: Source>(
    shared: &Shared<B>,
    admission: Admission<B::Owner, S>,
    write: impl FnOnce(mpsc::Receiver<Outbound>),
) {
    let Admission {
        login: Login { owner, limit, slot },
        door,
        remote,
        source,
        mut decoder,
    } = admission;
    let config = &shared.config;
    let session = shared.sessions.next_id();
    let (frames, outbound) = mpsc::channel(config.outbound_queue.max(1));
    let welcome = Welcome {
        session,
        max_frame: u32::try_from(config.max_frame).unwrap_or(u32::MAX),
        owner: owner.to_string(),
    };
    // The welcome is the first frame out; anything the owner sends from
    // `on-connect` follows it.
    let _ = frames.try_send(Outbound::Frame(welcome.encode()));
    write(outbound);
    let closing = Arc::new(Mutex::new(None));
    let link = SessionLink {
        door: door.clone(),
        frames,
        max_frame: config.max_frame,
        closing: closing.clone(),
    };
    shared.sessions.insert(session, link);
    // A session admitted while the gateway shuts down may have missed its
    // `close_all`: close it the same way.
    if *shared.stopping.borrow() {
        shared.sessions.close_with(
            session,
            CloseCode::HostShutdown,
            "host is shutting down",
            Disconnect::HostShutdown,
        );
    }
    shared.sessions.count_opened(door.kind());
    tracing::debug!(session, %owner, %remote, door = door.kind().name(), "session opened");
    if let Err(reason) = shared.backend.connected(session, &owner).await {
        shared.sessions.remove(session);
        drop(slot);
        let reason = format!("{owner} cannot take the session: {reason}");
        shared
            .sessions
            .count_end(End::Closed(CloseCode::OwnerUnavailable));
        door.close(CloseCode::OwnerUnavailable, &reason);
        return;
    }
    let mut reader = Reader {
        shared,
        door: &door,
        session,
        owner: &owner,
        closing: &closing,
        limit,
    };
    decoder.set_limit(config.max_frame);
    let why = reader.run(source, decoder).await;
    shared.sessions.count_end(End::of(&why));
    shared.sessions.remove(session);
    drop(slot);
    tracing::debug!(session, %owner, reason = %why, "session closed");
    shared.backend.disconnected(session, &owner, why).await;
}

/// Reads one session's client messages and hands them to its owner.
struct Reader<'a, B: Backend> {
    shared: &'a Shared<B>,
    door: &'a Door,
    session: SessionId,
    owner: &'a B::Owner,
    closing: &'a Mutex<Option<Disconnect>>,
    limit: RateLimit,
}

/// Messages read from a client and not yet handed to its owner.
#[derive(Default)]
struct Backlog {
    messages: VecDeque<(Bytes, bool)>,
    bytes: usize,
}

impl Backlog {
    fn push(&mut self, payload: Bytes, reliable: bool) {
        self.bytes += payload.len() + MESSAGE_OVERHEAD;
        self.messages.push_back((payload, reliable));
    }

    fn pop(&mut self) -> Option<(Bytes, bool)> {
        let (payload, reliable) = self.messages.pop_front()?;
        self.bytes -= payload.len() + MESSAGE_OVERHEAD;
        Some((payload, reliable))
    }
}

/// A message on its way to the owner.
type Delivery<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What woke the reader.
enum Event {
    /// The owner took the message being delivered.
    Delivered,
    /// Something from the client.
    Read(Incoming),
    /// Nothing was waiting to be read.
    CaughtUp,
}

impl<'a, B: Backend> Reader<'a, B> {
    /// Runs until the session ends, then hands the owner what was already
    /// read; returns why the session ended. The source is dropped as soon
    /// as reading ends (a door may finish its close with it meanwhile).
    async fn run(&mut self, mut source: impl Source, mut decoder: FrameDecoder) -> Disconnect {
        let mut backlog = Backlog::default();
        let mut delivering = None;
        self.limit.resume(Instant::now());
        let why = match self.take_frames(&mut decoder, &mut backlog) {
            Ok(()) => {
                self.read(&mut source, &mut decoder, &mut backlog, &mut delivering)
                    .await
            }
            Err(why) => why,
        };
        drop(source);
        if let Some(delivery) = delivering {
            delivery.await;
        }
        while let Some((payload, reliable)) = backlog.pop() {
            self.deliver(payload, reliable).await;
        }
        why
    }

    /// Hands one message to the owner.
    fn deliver(&self, payload: Bytes, reliable: bool) -> Delivery<'a> {
        let (shared, owner) = (self.shared, self.owner);
        Box::pin(
            shared
                .backend
                .message(self.session, owner, payload, reliable),
        )
    }

    /// Reads the client's messages into `backlog` while delivering them one
    /// at a time, until the session ends; returns why it did.
    async fn read(
        &mut self,
        source: &mut impl Source,
        decoder: &mut FrameDecoder,
        backlog: &mut Backlog,
        delivering: &mut Option<Delivery<'a>>,
    ) -> Disconnect {
        let budget = self.shared.config.inbound_backlog.max(1);
        // Whether the last look found nothing to read: the next one waits.
        let mut idle = false;
        loop {
            if delivering.is_none() {
                *delivering = backlog
                    .pop()
                    .map(|(payload, reliable)| self.deliver(payload, reliable));
            }
            // A full backlog always has a message being delivered, so some
            // branch below is enabled (`select!` panics if none is).
            let reading = backlog.bytes < budget || delivering.is_none();
            if reading {
                self.limit.resume(Instant::now());
            } else {
                self.limit.pause(Instant::now());
            }
            // Credit for a pause lasts while messages that waited through it
            // are being read; `biased` makes `CaughtUp` mean that nothing was.
            let credited = reading && !idle && self.limit.has_credit();
            let event = tokio::select! {
                biased;
                () = async {
                    if let Some(delivery) = delivering.as_mut() {
                        delivery.await;
                    }
                }, if delivering.is_some() => Event::Delivered,
                incoming = source.next(), if reading => Event::Read(incoming),
                () = std::future::ready(()), if credited => Event::CaughtUp,
            };
            idle = matches!(event, Event::CaughtUp);
            let taken = match event {
                Event::Delivered => {
                    *delivering = None;
                    Ok(())
                }
                Event::CaughtUp => {
                    self.limit.caught_up();
                    Ok(())
                }
                Event::Read(Incoming::Bytes(bytes)) => {
                    decoder.extend(&bytes);
                    self.take_frames(decoder, backlog)
                }
                Event::Read(Incoming::Message(payload, reliable)) => {
                    self.take_message(backlog, payload, reliable)
                }
                Event::Read(Incoming::Heard) => Ok(()),
                Event::Read(Incoming::Finished) if decoder.has_partial_frame() => {
                    return self.kick(
                        CloseCode::ProtocolViolation,
                        "the stream ended inside a frame".into(),
                    );
                }
                Event::Read(Incoming::Finished) => {
                    self.door.close(CloseCode::Closed, "stream finished");
                    return Disconnect::ClientClosed("the client finished its stream".into());
                }
                Event::Read(Incoming::Gone(why)) => return self.gone(why),
                Event::Read(Incoming::Violation(code, reason)) => return self.kick(code, reason),
            };
            if let Err(why) = taken {
                return why;
            }
        }
    }

    /// Takes every whole frame out of `decoder`.
    fn take_frames(
        &mut self,
        decoder: &mut FrameDecoder,
        backlog: &mut Backlog,
    ) -> Result<(), Disconnect> {
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => self.take(backlog, frame, true)?,
                Ok(None) => return Ok(()),
                Err(error) => return Err(self.kick(CloseCode::FrameTooLarge, error.to_string())),
            }
        }
    }

    /// Takes one whole message, refusing a reliable one over the frame limit
    /// as the frame decoder would.
    fn take_message(
        &mut self,
        backlog: &mut Backlog,
        payload: Bytes,
        reliable: bool,
    ) -> Result<(), Disconnect> {
        let limit = self.shared.config.max_frame;
        if reliable && payload.len() > limit {
            let reason = format!(
                "frame of {} bytes exceeds the limit of {limit} bytes",
                payload.len()
            );
            return Err(self.kick(CloseCode::FrameTooLarge, reason));
        }
        self.take(backlog, payload, reliable)
    }

    /// Counts one message just read against the client's rate and queues it
    /// for the owner; closes the session if the client is over its rate.
    fn take(
        &mut self,
        backlog: &mut Backlog,
        payload: Bytes,
        reliable: bool,
    ) -> Result<(), Disconnect> {
        if !self.limit.allow(Instant::now()) {
            let config = &self.shared.config;
            let reason = format!(
                "more than {} messages per second (bursts of {})",
                config.message_rate, config.message_burst
            );
            return Err(self.kick(CloseCode::RateLimited, reason));
        }
        self.shared.sessions.count_in(payload.len(), reliable);
        backlog.push(payload, reliable);
        Ok(())
    }

    /// Closes the connection because the client misbehaved.
    fn kick(&self, code: CloseCode, reason: String) -> Disconnect {
        tracing::debug!(session = self.session, %code, %reason, "closing session");
        let why = Disconnect::Kicked {
            code,
            reason: reason.clone(),
        };
        self.closing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(why.clone());
        self.door.close(code, &reason);
        why
    }

    /// Why the connection is gone: the gateway's own reason if it closed it,
    /// else what the door saw.
    fn gone(&self, seen: Disconnect) -> Disconnect {
        self.closing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or(seen)
    }
}
