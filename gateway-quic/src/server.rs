//! The gateway: a QUIC endpoint that authenticates game clients and bridges
//! their frames and datagrams to the actors that own their sessions, and the
//! [`Gateway`] that also runs the WebTransport and WebSocket doors onto the
//! same sessions. What follows holds for every door; the reading and
//! delivery are shared by all of them (`reader.rs`).
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
//! read is credited to the client's rate (see
//! [`RateLimit`](crate::protocol::RateLimit)). So a slow actor slows down
//! only its own client, and a client within its rate is never closed for a
//! burst its owner caused.
//!
//! Admission is bounded twice, both with semaphore permits that go back on
//! every path: [`GatewayConfig::max_pending_auth`] places for connections
//! that are logging in (taken before the handshake, so those beyond it cost
//! nothing), and [`GatewayConfig::max_sessions`] slots, taken before
//! authentication so that clients logging in together cannot overshoot it.
//! Datagrams that arrive before the welcome is sent are read and dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{ConnectionError, EndpointConfig, ReadError, RecvStream, SendStream};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::drain::Draining;
use crate::protocol::{frame_header, CloseCode, FrameDecoder, FrameError, ALPN};
use crate::reader::{
    authenticate, drain, run_session, session_slot, Admission, Incoming, Login, Refusal, Source,
};
use crate::sessions::{Disconnect, Door, End, Outbound, SessionId, Sessions};
use crate::tls::{provider, Fingerprint, Identity, TlsError};
use crate::websocket::WebSocketListen;
use crate::webtransport::WebTransportListen;

/// Largest chunk read from a client stream at once.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Frames the writer task coalesces into one stream write.
const WRITE_BATCH: usize = 64;

/// How long a graceful close waits for the client to acknowledge its last
/// frames.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How long shutdown waits for each door's sessions to report their
/// disconnects, and its logins to give up.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
    /// (QUIC clients keep it alive with PINGs; WebSocket clients answer the
    /// gateway's pings).
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
    /// Connections, through any door, that have not finished logging in: in
    /// the handshake, waiting for their credentials, or being authenticated.
    /// More are refused before any work is done for them (QUIC's
    /// `CONNECTION_REFUSED`; a WebSocket's TCP connection is dropped).
    pub max_pending_auth: usize,
    /// Frames queued for a client before it counts as a slow reader.
    pub outbound_queue: usize,
    /// Bytes of a client's messages (plus a little per message) the gateway
    /// reads ahead while the owner is busy with earlier ones. Beyond this it
    /// stops reading the client, whom QUIC's (or TCP's) flow control then
    /// slows down.
    pub inbound_backlog: usize,
    /// A WebSocket door beside the QUIC one, if any (`crate::websocket`).
    pub websocket: Option<WebSocketListen>,
    /// A WebTransport door for browsers, if any (`crate::webtransport`).
    pub webtransport: Option<WebTransportListen>,
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
            websocket: None,
            webtransport: None,
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
    /// A socket could not be bound.
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
    websocket_addr: Option<SocketAddr>,
    websocket_plain: bool,
    webtransport: Option<crate::webtransport::Running>,
    stop: watch::Sender<bool>,
    accepting: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// What every connection task shares, whichever door it came through.
pub(crate) struct Shared<B> {
    pub(crate) config: GatewayConfig,
    pub(crate) sessions: Sessions,
    pub(crate) backend: Arc<B>,
    /// One permit per session, taken before its client authenticates, so
    /// that concurrent logins cannot overshoot `max_sessions`.
    pub(crate) session_slots: Arc<Semaphore>,
    /// One permit per connection that has not finished logging in, taken
    /// before its handshake.
    pub(crate) pending_auth: Arc<Semaphore>,
    /// Becomes `true` when the gateway shuts down.
    pub(crate) stopping: watch::Receiver<bool>,
}

/// The receive buffer the gateway asks of its UDP socket, which every QUIC
/// client shares. At 2,000 clients of the world demo it takes about 20,000
/// packets a second; Linux's default buffer (208 KiB) holds some 10 ms of
/// them, less than a busy host can keep the endpoint's task from a CPU, and
/// the packets past it are dropped and sent again. Linux grants at most
/// `net.core.rmem_max`.
const UDP_RECEIVE_BUFFER: usize = 8 << 20;

/// A UDP socket bound to `addr` with a receive buffer of
/// [`UDP_RECEIVE_BUFFER`], or as much of it as the system allows.
fn bind_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(error) = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::warn!(%error, "cannot enlarge the gateway's UDP receive buffer");
    }
    // Linux reports twice what it grants (the doubling covers its own
    // bookkeeping).
    let granted = socket.recv_buffer_size().map_or(0, |size| size / 2);
    if granted < UDP_RECEIVE_BUFFER {
        tracing::info!(
            granted,
            asked = UDP_RECEIVE_BUFFER,
            "the gateway's UDP receive buffer is smaller than asked: raise net.core.rmem_max for a busy gateway"
        );
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
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
        let endpoint = bind_udp(config.listen)
            .and_then(|socket| {
                let runtime = Arc::new(Draining);
                quinn::Endpoint::new(EndpointConfig::default(), Some(server), socket, runtime)
            })
            .map_err(|source| GatewayError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = endpoint.local_addr().map_err(|source| GatewayError::Bind {
            addr: config.listen,
            source,
        })?;
        let fingerprint = config.identity.fingerprint();
        let (stop, stopped) = watch::channel(false);
        let websocket = match &config.websocket {
            Some(door) => Some(websocket_listener(door, &config.identity).await?),
            None => None,
        };
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
            stopping: stopped.clone(),
        });
        let mut accepting = vec![tokio::spawn(accept(
            endpoint.clone(),
            shared.clone(),
            stopped.clone(),
        ))];
        tracing::info!(%local_addr, %fingerprint, "QUIC gateway listening");
        let mut webtransport = None;
        if let Some(door) = shared.config.webtransport.clone() {
            let (running, task) =
                crate::webtransport::start(&door, shared.clone(), stopped.clone())?;
            tracing::info!(addr = %running.addr, "WebTransport gateway listening");
            webtransport = Some(running);
            accepting.push(task);
        }
        let mut websocket_addr = None;
        let websocket_plain = websocket.as_ref().is_some_and(|(_, tls)| tls.is_none());
        if let Some((listener, tls)) = websocket {
            let addr = listener.local_addr().ok();
            websocket_addr = addr;
            tracing::info!(addr = ?addr, tls = tls.is_some(), "WebSocket gateway listening");
            accepting.push(tokio::spawn(crate::websocket::accept(
                listener, tls, shared, stopped,
            )));
        }
        Ok(Gateway {
            endpoint,
            local_addr,
            fingerprint,
            websocket_addr,
            websocket_plain,
            webtransport,
            stop,
            accepting: Mutex::new(accepting),
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

    /// The TCP address of the WebSocket door, if it has one.
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        self.websocket_addr
    }

    /// Whether the WebSocket door is plain `ws://` (no TLS).
    pub fn websocket_plain(&self) -> bool {
        self.websocket_plain
    }

    /// The UDP address of the WebTransport door, if it has one.
    pub fn webtransport_addr(&self) -> Option<SocketAddr> {
        self.webtransport.as_ref().map(|door| door.addr)
    }

    /// The SHA-256 hashes a page passes as `serverCertificateHashes` to
    /// reach the WebTransport door: the generated certificate's, which
    /// changes as it rotates. Empty without the door, or when it presents a
    /// CA-signed certificate.
    pub fn webtransport_hashes(&self) -> Vec<Fingerprint> {
        self.webtransport
            .as_ref()
            .map(|door| {
                door.hashes
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            })
            .unwrap_or_default()
    }

    /// Closes every session, and every connection still logging in, with
    /// `host-shutdown`, waits (a few seconds at most) until the sessions'
    /// owners have been told, and stops listening.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let accepting =
            std::mem::take(&mut *self.accepting.lock().unwrap_or_else(|e| e.into_inner()));
        for accepting in accepting {
            let _ = accepting.await;
        }
        self.endpoint.close(
            CloseCode::HostShutdown.code().into(),
            b"host is shutting down",
        );
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, self.endpoint.wait_idle()).await;
    }
}

/// Binds the WebSocket door's listener, with TLS unless it is plain.
async fn websocket_listener(
    door: &WebSocketListen,
    identity: &Identity,
) -> Result<(tokio::net::TcpListener, Option<tokio_rustls::TlsAcceptor>), GatewayError> {
    let tls = if door.plain {
        None
    } else {
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::from)?
            .with_no_client_auth()
            .with_single_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(TlsError::from)?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
    };
    let listener = tokio::net::TcpListener::bind(door.listen)
        .await
        .map_err(|source| GatewayError::Bind {
            addr: door.listen,
            source,
        })?;
    Ok((listener, tls))
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

async fn accept<B: Backend>(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared<B>>,
    mut stop: watch::Receiver<bool>,
) {
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
            Ok(()) = stop.changed() => break,
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
    drain(connections, SHUTDOWN_GRACE).await;
}

/// Closes `connection` with `code` and `reason`, before it has a session.
fn refuse(sessions: &Sessions, connection: &quinn::Connection, code: CloseCode, reason: &str) {
    sessions.count_end(End::Closed(code));
    tracing::debug!(remote = %connection.remote_address(), %code, reason, "connection refused");
    connection.close(code.code().into(), reason.as_bytes());
}

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
    let (credentials, decoder) = read_credentials(&mut recv, limit).await?;
    Ok(Opened {
        credentials,
        send,
        recv,
        decoder,
    })
}

/// Reads the credentials frame off a client's stream; returns it and a
/// decoder holding whatever followed it.
pub(crate) async fn read_credentials(
    recv: &mut RecvStream,
    limit: usize,
) -> Result<(Bytes, FrameDecoder), Refusal> {
    let mut decoder = FrameDecoder::new(limit);
    loop {
        match decoder.next_frame() {
            Ok(Some(credentials)) => return Ok((credentials, decoder)),
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
        Ok((login, send, recv, decoder)) => {
            // Datagrams that came before the welcome leaves are dropped: the
            // client sent them before it knew it was in.
            drop_received_datagrams(&connection).await;
            let admission = Admission {
                login,
                door: Door::Quic(connection.clone()),
                remote: connection.remote_address(),
                source: QuicSource {
                    recv,
                    connection: connection.clone(),
                },
                decoder,
            };
            run_session(&shared, admission, |outbound| {
                tokio::spawn(write_frames(send, outbound, connection));
            })
            .await;
        }
        Err(Some((code, reason))) => refuse(&shared.sessions, &connection, code, &reason),
        Err(None) => {}
    }
}

/// Reserves a session slot, reads the client's credentials and asks the
/// authenticator, dropping the client's datagrams meanwhile; gives back the
/// client's place among those logging in (`pending`) once it has an answer.
/// On `Err` the slot has been given back already.
async fn admit<B: Backend>(
    shared: &Shared<B>,
    connection: &quinn::Connection,
    pending: OwnedSemaphorePermit,
) -> Result<(Login<B::Owner>, SendStream, RecvStream, FrameDecoder), Refusal> {
    let slot = session_slot(shared).map_err(Some)?;
    let admitted = tokio::select! {
        login = login(shared, connection, slot) => login?,
        never = discard_datagrams(connection) => match never {},
    };
    drop(pending);
    Ok(admitted)
}

/// Reads the client's credentials and asks the authenticator; returns the
/// login, the stream, and what followed the credentials.
async fn login<B: Backend>(
    shared: &Shared<B>,
    connection: &quinn::Connection,
    slot: OwnedSemaphorePermit,
) -> Result<(Login<B::Owner>, SendStream, RecvStream, FrameDecoder), Refusal> {
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
    let login = authenticate(shared, credentials, slot).await?;
    Ok((login, send, recv, decoder))
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

/// The QUIC stream under a door's send stream.
pub(crate) trait AsQuinnStream: Send + 'static {
    fn stream(&mut self) -> &mut SendStream;
}

impl AsQuinnStream for SendStream {
    fn stream(&mut self) -> &mut SendStream {
        self
    }
}

impl AsQuinnStream for wtransport::SendStream {
    fn stream(&mut self) -> &mut SendStream {
        self.quic_stream_mut()
    }
}

/// A QUIC client's stream and datagrams, in arrival order.
struct QuicSource {
    recv: RecvStream,
    connection: quinn::Connection,
}

impl Source for QuicSource {
    async fn next(&mut self) -> Incoming {
        // Both reads are cancel-safe, so the one that loses loses nothing.
        tokio::select! {
            chunk = self.recv.read_chunk(READ_CHUNK, true) => match chunk {
                Ok(Some(chunk)) => Incoming::Bytes(chunk.bytes),
                Ok(None) => Incoming::Finished,
                Err(ReadError::ConnectionLost(error)) => Incoming::Gone(lost(error)),
                Err(ReadError::Reset(code)) => {
                    self.connection
                        .close(CloseCode::Closed.code().into(), b"stream reset");
                    Incoming::Gone(Disconnect::ClientClosed(format!(
                        "the client reset its stream (code {code})"
                    )))
                }
                Err(error) => Incoming::Violation(CloseCode::ProtocolViolation, error.to_string()),
            },
            datagram = self.connection.read_datagram() => match datagram {
                Ok(payload) => Incoming::Message(payload, false),
                Err(error) => Incoming::Gone(lost(error)),
            },
        }
    }
}

/// Why a QUIC connection the gateway did not close is gone.
fn lost(error: ConnectionError) -> Disconnect {
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

/// Drains a session's outbound frames onto its stream, several per write;
/// carries out a graceful close once everything before it is delivered.
pub(crate) async fn write_frames(
    mut send: impl AsQuinnStream,
    mut outbound: mpsc::Receiver<Outbound>,
    connection: quinn::Connection,
) {
    let send = send.stream();
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
