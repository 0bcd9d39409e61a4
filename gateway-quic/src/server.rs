//! The gateway: a QUIC endpoint that authenticates game clients and bridges
//! their frames and datagrams to the actors that own their sessions.
//!
//! The gateway knows nothing of actors. A [`Backend`] (the host) decides who
//! may connect and which actor owns the session, and receives every message as
//! it arrives. Each connection is served by one task that reads the client's
//! stream and datagrams in arrival order and hands the messages to the backend
//! one at a time, in that order; a writer task per session drains the frames
//! actors queue for it.
//!
//! Reading and delivery are decoupled by a small per-session backlog, because
//! the client's message rate is measured as messages are read off the
//! connection: a client must not be judged by how fast its owner takes its
//! messages. While the owner is busy the reader keeps reading (and counting)
//! until the backlog holds [`GatewayConfig::inbound_backlog`] bytes; then it
//! stops, QUIC flow control slows the client down, and the time it did not
//! read is credited to the client's rate (see [`RateLimit`]). So a slow actor
//! slows down only its own client, and a client within its rate is never
//! closed for a burst its owner caused.
//!
//! Admission is bounded twice, both with semaphore permits that go back on
//! every path: [`GatewayConfig::max_pending_auth`] places for connections
//! that are logging in (taken before the handshake, so those beyond it cost
//! nothing), and [`GatewayConfig::max_sessions`] slots, taken before
//! authentication so that clients logging in together cannot overshoot it.
//! Datagrams that arrive before the welcome is sent are read and dropped.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn::{ConnectionError, ReadError, RecvStream, SendStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::protocol::{
    frame_header, CloseCode, FrameDecoder, FrameError, RateLimit, Welcome, ALPN,
};
use crate::sessions::{Disconnect, End, Outbound, SessionId, SessionLink, Sessions};
use crate::tls::{provider, Fingerprint, Identity, TlsError};

/// Largest chunk read from a client stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Frames the writer task coalesces into one stream write.
const WRITE_BATCH: usize = 64;

/// How long a graceful close waits for the client to acknowledge its last
/// frames.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long shutdown waits for sessions to report their disconnects.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Bytes a message in a session's inbound backlog is charged beyond its
/// payload (its bookkeeping), so that empty frames count too.
const MESSAGE_OVERHEAD: usize = 64;

/// How a gateway listens and what it allows its clients.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The UDP address to listen on.
    pub listen: SocketAddr,
    /// The certificate and key presented to clients.
    pub identity: Identity,
    /// Largest credentials frame (the first packet), in bytes.
    pub max_credentials: usize,
    /// Largest frame payload either side may send, in bytes.
    pub max_frame: usize,
    /// A connection with no packet from the client for this long is closed
    /// (clients keep it alive with QUIC PINGs).
    pub idle_timeout: Duration,
    /// Time a client has to send its credentials, and the authenticator to
    /// answer.
    pub auth_timeout: Duration,
    /// Messages (frames and datagrams) per second a client may send on
    /// average, counted as the gateway reads them off the connection.
    pub message_rate: u32,
    /// Messages a client may send in a burst above its rate.
    pub message_burst: u32,
    /// Sessions the gateway serves at once, counting clients that are
    /// authenticating: a slot is reserved before authentication and given
    /// back if it fails or when the session ends. More are refused
    /// `server-busy`.
    pub max_sessions: usize,
    /// Connections that have not finished logging in: in the QUIC
    /// handshake, waiting for their credentials, or being authenticated.
    /// More are refused during the handshake with QUIC's `CONNECTION_REFUSED`
    /// before any work is done for them.
    pub max_pending_auth: usize,
    /// Frames queued for a client before it counts as a slow reader.
    pub outbound_queue: usize,
    /// Bytes of a client's messages (plus a little per message) the gateway
    /// reads ahead while the owner is busy with earlier ones. Beyond this it
    /// stops reading the client, whom QUIC flow control then slows down.
    pub inbound_backlog: usize,
}

impl GatewayConfig {
    /// Defaults suited to game clients, listening on `listen` with `identity`.
    pub fn new(listen: SocketAddr, identity: Identity) -> Self {
        GatewayConfig {
            listen,
            identity,
            max_credentials: 16 * 1024,
            max_frame: 64 * 1024,
            idle_timeout: Duration::from_secs(15),
            auth_timeout: Duration::from_secs(10),
            message_rate: 200,
            message_burst: 400,
            max_sessions: 100_000,
            max_pending_auth: 1024,
            outbound_queue: 1024,
            inbound_backlog: 256 * 1024,
        }
    }
}

/// Why the authenticator did not name an owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// The credentials are not acceptable; the reason goes to the client.
    Rejected(String),
    /// Authentication could not be decided (the authenticator failed).
    Failed(String),
}

/// What the gateway asks of the host: authentication, and delivery of a
/// session's events to its owning actor.
pub trait Backend: Send + Sync + 'static {
    /// Names the actor that owns a session.
    type Owner: Clone + std::fmt::Display + Send + Sync + 'static;

    /// Decides whether `credentials` (the client's first packet) may connect,
    /// and which actor owns the session.
    fn authenticate(
        &self,
        credentials: Bytes,
    ) -> impl Future<Output = Result<Self::Owner, AuthError>> + Send;

    /// Tells the owner about its new session once it is running; an error
    /// closes the session with `owner-unavailable`.
    fn connected(
        &self,
        session: SessionId,
        owner: &Self::Owner,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Hands one client message to the owner. The gateway hands over the
    /// next message only once the future completes; meanwhile it reads ahead
    /// at most [`GatewayConfig::inbound_backlog`] bytes from this client.
    fn message(
        &self,
        session: SessionId,
        owner: &Self::Owner,
        payload: Bytes,
        reliable: bool,
    ) -> impl Future<Output = ()> + Send;

    /// Tells the owner its session ended. The session is already gone from
    /// [`Sessions`] when this is called.
    fn disconnected(
        &self,
        session: SessionId,
        owner: &Self::Owner,
        reason: Disconnect,
    ) -> impl Future<Output = ()> + Send;
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The certificate or key was refused.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's error.
        source: std::io::Error,
    },
}

/// A running gateway. Dropping it does not stop it; call
/// [`Gateway::shutdown`].
pub struct Gateway {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    fingerprint: Fingerprint,
    stop: Arc<Notify>,
    accepting: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What every connection task shares.
struct Shared<B> {
    config: GatewayConfig,
    sessions: Sessions,
    backend: Arc<B>,
    /// One permit per session, taken before its client authenticates, so
    /// that concurrent logins cannot overshoot `max_sessions`.
    session_slots: Arc<Semaphore>,
    /// One permit per connection that has not finished logging in, taken
    /// before its handshake.
    pending_auth: Arc<Semaphore>,
}

impl Gateway {
    /// Binds the endpoint and starts accepting clients, registering their
    /// sessions in `sessions`.
    pub async fn start<B: Backend>(
        config: GatewayConfig,
        sessions: Sessions,
        backend: Arc<B>,
    ) -> Result<Gateway, GatewayError> {
        let server = server_config(&config)?;
        let endpoint = quinn::Endpoint::server(server, config.listen).map_err(|source| {
            GatewayError::Bind {
                addr: config.listen,
                source,
            }
        })?;
        let local_addr = endpoint.local_addr().map_err(|source| GatewayError::Bind {
            addr: config.listen,
            source,
        })?;
        let fingerprint = config.identity.fingerprint();
        let stop = Arc::new(Notify::new());
        let session_slots = Arc::new(Semaphore::new(
            config.max_sessions.min(Semaphore::MAX_PERMITS),
        ));
        let pending_auth = Arc::new(Semaphore::new(
            config.max_pending_auth.min(Semaphore::MAX_PERMITS),
        ));
        let shared = Arc::new(Shared {
            config,
            sessions,
            backend,
            session_slots,
            pending_auth,
        });
        let accepting = tokio::spawn(accept(endpoint.clone(), shared, stop.clone()));
        tracing::info!(%local_addr, %fingerprint, "QUIC gateway listening");
        Ok(Gateway {
            endpoint,
            local_addr,
            fingerprint,
            stop,
            accepting: Mutex::new(Some(accepting)),
        })
    }

    /// The address the gateway listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The SHA-256 fingerprint of the gateway's certificate.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// Closes every session, and every connection still logging in, with
    /// `host-shutdown`, waits (a few seconds at most) until the sessions'
    /// owners have been told, and stops listening.
    pub async fn shutdown(&self) {
        self.stop.notify_one();
        let accepting = self
            .accepting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(accepting) = accepting {
            let _ = accepting.await;
        }
        self.endpoint.close(
            CloseCode::HostShutdown.code().into(),
            b"host is shutting down",
        );
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.endpoint.wait_idle()).await;
    }
}

fn server_config(config: &GatewayConfig) -> Result<quinn::ServerConfig, TlsError> {
    let identity = config.identity.clone();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(quinn::IdleTimeout::try_from(config.idle_timeout).ok())
        .max_concurrent_bidi_streams(1u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(Some(256 * 1024));
    server.transport_config(Arc::new(transport));
    Ok(server)
}

async fn accept<B: Backend>(endpoint: quinn::Endpoint, shared: Arc<Shared<B>>, stop: Arc<Notify>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => match shared.pending_auth.clone().try_acquire_owned() {
                    Ok(pending) => {
                        connections.spawn(serve(shared.clone(), incoming, pending));
                    }
                    // Refused before the handshake: no cryptography, no task.
                    // QUIC cannot carry an application close code this early.
                    Err(_) => {
                        tracing::debug!(
                            remote = %incoming.remote_address(),
                            limit = shared.config.max_pending_auth,
                            "too many connections logging in; connection refused"
                        );
                        incoming.refuse();
                    }
                },
                None => break,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stop.notified() => break,
        }
    }
    shared.sessions.close_all(
        CloseCode::HostShutdown,
        "host is shutting down",
        &Disconnect::HostShutdown,
    );
    // And the connections that are not sessions (yet): nobody is told of
    // them, so there is nothing to wait for.
    endpoint.close(
        CloseCode::HostShutdown.code().into(),
        b"host is shutting down",
    );
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        connections.abort_all();
    }
}

/// Closes `connection` with `code` and `reason`, before it has a session.
fn refuse(sessions: &Sessions, connection: &quinn::Connection, code: CloseCode, reason: &str) {
    sessions.count_end(End::Closed(code));
    tracing::debug!(remote = %connection.remote_address(), %code, reason, "connection refused");
    connection.close(code.code().into(), reason.as_bytes());
}

/// Why a client was not admitted: the close code and reason, or `None` if
/// it went away.
type Refusal = Option<(CloseCode, String)>;

/// The first frame and the stream it came on.
struct Opened {
    credentials: Bytes,
    send: SendStream,
    recv: RecvStream,
    decoder: FrameDecoder,
}

/// Waits for the client's stream and reads its credentials frame.
async fn read_first_frame(connection: &quinn::Connection, limit: usize) -> Result<Opened, Refusal> {
    let (send, mut recv) = connection.accept_bi().await.map_err(|_| None)?;
    let mut decoder = FrameDecoder::new(limit);
    loop {
        match decoder.next_frame() {
            Ok(Some(credentials)) => {
                return Ok(Opened {
                    credentials,
                    send,
                    recv,
                    decoder,
                })
            }
            Ok(None) => {}
            Err(FrameError::TooLarge { len, limit }) => {
                return Err(Some((
                    CloseCode::BadFirstPacket,
                    format!("credentials of {len} bytes exceed the limit of {limit} bytes"),
                )))
            }
        }
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
            Ok(None) => {
                return Err(Some((
                    CloseCode::BadFirstPacket,
                    "the stream ended before a whole credentials frame arrived".into(),
                )))
            }
            Err(_) => return Err(None),
        }
    }
}

/// Serves one connection from its handshake on; `pending` is its place
/// among the connections logging in.
async fn serve<B: Backend>(
    shared: Arc<Shared<B>>,
    incoming: quinn::Incoming,
    pending: OwnedSemaphorePermit,
) {
    let connection = match incoming.await {
        Ok(connection) => connection,
        Err(error) => {
            tracing::debug!(%error, "handshake failed");
            return;
        }
    };
    match admit(&shared, &connection, pending).await {
        // Closed meanwhile (the gateway is shutting down, or the client
        // left): there is no session to tell the owner of.
        Ok(_) if connection.close_reason().is_some() => {}
        Ok(admitted) => run_session(&shared, connection, admitted).await,
        Err(Some((code, reason))) => refuse(&shared.sessions, &connection, code, &reason),
        Err(None) => {}
    }
}

/// A client the authenticator accepted, holding its session slot.
struct Admitted<O> {
    owner: O,
    send: SendStream,
    recv: RecvStream,
    /// Holds whatever the client sent after its credentials.
    decoder: FrameDecoder,
    limit: RateLimit,
    slot: OwnedSemaphorePermit,
}

/// Reserves a session slot, reads the client's credentials and asks the
/// authenticator, dropping the client's datagrams meanwhile; gives back the
/// client's place among those logging in (`pending`) once it has an answer.
/// On `Err` the slot has been given back already.
async fn admit<B: Backend>(
    shared: &Shared<B>,
    connection: &quinn::Connection,
    pending: OwnedSemaphorePermit,
) -> Result<Admitted<B::Owner>, Refusal> {
    let config = &shared.config;
    let slot = shared
        .session_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| {
            let reason = format!(
                "the gateway serves at most {} sessions",
                config.max_sessions
            );
            Some((CloseCode::ServerBusy, reason))
        })?;
    let (owner, send, recv, decoder, limit) = tokio::select! {
        login = login(shared, connection) => login?,
        never = discard_datagrams(connection) => match never {},
    };
    drop(pending);
    Ok(Admitted {
        owner,
        send,
        recv,
        decoder,
        limit,
        slot,
    })
}

/// Reads the client's credentials and asks the authenticator; returns the
/// owner, the stream, what followed the credentials, and the client's rate
/// bucket (paused).
async fn login<B: Backend>(
    shared: &Shared<B>,
    connection: &quinn::Connection,
) -> Result<(B::Owner, SendStream, RecvStream, FrameDecoder, RateLimit), Refusal> {
    let config = &shared.config;
    let first = tokio::time::timeout(
        config.auth_timeout,
        read_first_frame(connection, config.max_credentials),
    )
    .await;
    let Opened {
        credentials,
        send,
        recv,
        decoder,
    } = match first {
        Ok(opened) => opened?,
        Err(_) => {
            let reason = format!("no credentials within {:?}", config.auth_timeout);
            return Err(Some((CloseCode::AuthTimeout, reason)));
        }
    };
    // The client's rate is measured from its credentials on. Nothing more is
    // read until the session starts, so until then the bucket is paused: what
    // the client sends meanwhile waits in QUIC's buffers and is counted, with
    // credit for the wait, once the session reads it.
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
    Ok((owner, send, recv, decoder, limit))
}

/// Reads and drops the client's datagrams until the connection ends, then
/// waits forever: a datagram that arrives before the welcome is sent is
/// never delivered (`docs/protocol.md`), so it is not kept either.
async fn discard_datagrams(connection: &quinn::Connection) -> Infallible {
    while let Ok(datagram) = connection.read_datagram().await {
        tracing::trace!(
            remote = %connection.remote_address(),
            len = datagram.len(),
            "datagram before the welcome dropped"
        );
    }
    std::future::pending().await
}

/// Drops the datagrams already received, without waiting for more.
async fn drop_received_datagrams(connection: &quinn::Connection) {
    loop {
        tokio::select! {
            biased;
            datagram = connection.read_datagram() => if datagram.is_err() {
                return;
            },
            () = std::future::ready(()) => return,
        }
    }
}

/// Runs an admitted client's session until it ends, and tells the owner.
async fn run_session<B: Backend>(
    shared: &Shared<B>,
    connection: quinn::Connection,
    admitted: Admitted<B::Owner>,
) {
    let Admitted {
        owner,
        send,
        recv,
        mut decoder,
        limit,
        slot,
    } = admitted;
    let config = &shared.config;
    let session = shared.sessions.next_id();
    let (frames, outbound) = mpsc::channel(config.outbound_queue.max(1));
    let welcome = Welcome {
        session,
        max_frame: u32::try_from(config.max_frame).unwrap_or(u32::MAX),
        owner: owner.to_string(),
    };
    // The welcome is the first frame out; anything the owner sends from
    // `on-connect` follows it. Datagrams that came before it leaves are
    // dropped: the client sent them before it knew it was in.
    let _ = frames.try_send(Outbound::Frame(welcome.encode()));
    drop_received_datagrams(&connection).await;
    tokio::spawn(write_frames(send, outbound, connection.clone()));
    let closing = Arc::new(Mutex::new(None));
    let link = SessionLink {
        connection: connection.clone(),
        frames,
        max_frame: config.max_frame,
        closing: closing.clone(),
    };
    shared.sessions.insert(session, link);
    shared.sessions.count_opened();
    tracing::debug!(session, %owner, remote = %connection.remote_address(), "session opened");
    if let Err(reason) = shared.backend.connected(session, &owner).await {
        shared.sessions.remove(session);
        drop(slot);
        let reason = format!("{owner} cannot take the session: {reason}");
        return refuse(
            &shared.sessions,
            &connection,
            CloseCode::OwnerUnavailable,
            &reason,
        );
    }
    let mut reader = Reader {
        shared,
        connection: &connection,
        session,
        owner: &owner,
        closing: &closing,
        limit,
    };
    decoder.set_limit(config.max_frame);
    let why = reader.run(recv, decoder).await;
    shared.sessions.count_end(End::of(&why));
    shared.sessions.remove(session);
    drop(slot);
    tracing::debug!(session, %owner, reason = %why, "session closed");
    shared.backend.disconnected(session, &owner, why).await;
}

/// Reads one session's client messages and hands them to its owner.
struct Reader<'a, B: Backend> {
    shared: &'a Shared<B>,
    connection: &'a quinn::Connection,
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
    /// Bytes (or the end, or an error) from the client's stream.
    Chunk(Result<Option<quinn::Chunk>, ReadError>),
    /// A datagram from the client, or the connection's end.
    Datagram(Result<Bytes, ConnectionError>),
    /// Nothing was waiting to be read.
    CaughtUp,
}

impl<'a, B: Backend> Reader<'a, B> {
    /// Runs until the session ends, then hands the owner what was already
    /// read; returns why the session ended.
    async fn run(&mut self, mut recv: RecvStream, mut decoder: FrameDecoder) -> Disconnect {
        let mut backlog = Backlog::default();
        let mut delivering = None;
        self.limit.resume(Instant::now());
        let why = match self.take_frames(&mut decoder, &mut backlog) {
            Ok(()) => {
                self.read(&mut recv, &mut decoder, &mut backlog, &mut delivering)
                    .await
            }
            Err(why) => why,
        };
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
        recv: &mut RecvStream,
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
                chunk = recv.read_chunk(READ_CHUNK, true), if reading => Event::Chunk(chunk),
                datagram = self.connection.read_datagram(), if reading => Event::Datagram(datagram),
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
                Event::Chunk(Ok(Some(chunk))) => {
                    decoder.extend(&chunk.bytes);
                    self.take_frames(decoder, backlog)
                }
                Event::Chunk(Ok(None)) if decoder.has_partial_frame() => {
                    return self.kick(
                        CloseCode::ProtocolViolation,
                        "the stream ended inside a frame".into(),
                    );
                }
                Event::Chunk(Ok(None)) => {
                    self.connection
                        .close(CloseCode::Closed.code().into(), b"stream finished");
                    return Disconnect::ClientClosed("the client finished its stream".into());
                }
                Event::Chunk(Err(ReadError::ConnectionLost(error))) => return self.lost(error),
                Event::Chunk(Err(ReadError::Reset(code))) => {
                    self.connection
                        .close(CloseCode::Closed.code().into(), b"stream reset");
                    return Disconnect::ClientClosed(format!(
                        "the client reset its stream (code {code})"
                    ));
                }
                Event::Chunk(Err(error)) => {
                    return self.kick(CloseCode::ProtocolViolation, error.to_string())
                }
                Event::Datagram(Ok(payload)) => self.take(backlog, payload, false),
                Event::Datagram(Err(error)) => return self.lost(error),
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
        self.connection.close(code.code().into(), reason.as_bytes());
        why
    }

    /// Why the connection is gone.
    fn lost(&self, error: ConnectionError) -> Disconnect {
        if let Some(why) = self
            .closing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return why;
        }
        match error {
            ConnectionError::ApplicationClosed(close) => {
                Disconnect::ClientClosed(String::from_utf8_lossy(&close.reason).into_owned())
            }
            ConnectionError::TimedOut => Disconnect::TimedOut,
            ConnectionError::LocallyClosed => Disconnect::HostShutdown,
            ConnectionError::ConnectionClosed(close) => {
                Disconnect::ClientClosed(format!("transport close: {close}"))
            }
            ConnectionError::Reset => Disconnect::ClientClosed("connection reset".into()),
            other => Disconnect::Kicked {
                code: CloseCode::ProtocolViolation,
                reason: other.to_string(),
            },
        }
    }
}

/// Drains a session's outbound frames onto its stream, several per write;
/// carries out a graceful close once everything before it is delivered.
async fn write_frames(
    mut send: SendStream,
    mut outbound: mpsc::Receiver<Outbound>,
    connection: quinn::Connection,
) {
    let mut buffer = BytesMut::new();
    while let Some(first) = outbound.recv().await {
        let mut next = Some(first);
        let mut batched = 0;
        let mut close = None;
        while let Some(item) = next.take() {
            match item {
                Outbound::Frame(payload) => {
                    buffer.extend_from_slice(&frame_header(payload.len()));
                    buffer.extend_from_slice(&payload);
                }
                Outbound::Close(code, reason) => {
                    close = Some((code, reason));
                    break;
                }
            }
            batched += 1;
            if batched < WRITE_BATCH {
                next = outbound.try_recv().ok();
            }
        }
        if send.write_all(&buffer).await.is_err() {
            return;
        }
        buffer.clear();
        if let Some((code, reason)) = close {
            // Closing at once would discard frames the client has not
            // acknowledged yet: finish the stream and wait until it has them.
            if send.finish().is_ok() {
                let _ = tokio::time::timeout(CLOSE_GRACE, send.stopped()).await;
            }
            connection.close(code.code().into(), reason.as_bytes());
            return;
        }
    }
    let _ = send.finish();
}
