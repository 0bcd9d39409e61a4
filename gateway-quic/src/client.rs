//! The Rust client library for game clients (and load bots, and tests).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use grove_gateway_quic::client::{Client, ClientConfig, Received};
//!
//! let pin = "3f1c...".parse()?; // the fingerprint `grove run` printed
//! let client = Client::new(ClientConfig::pinned(pin))?;
//! let session = client.connect("127.0.0.1:7071".parse()?, b"ayla").await?;
//! session.send(b"hello").await?;
//! match session.recv().await? {
//!     Received::Frame(bytes) => println!("frame {bytes:?}"),
//!     Received::Datagram(bytes) => println!("datagram {bytes:?}"),
//! }
//! session.close("bye");
//! # Ok(()) }
//! ```
//!
//! One [`Client`] (one UDP socket) carries any number of sessions. A
//! [`Session`] is a cheap handle: clone it to send from one task and receive
//! in another.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{ConnectionError, RecvStream, SendStream};
use rustls::pki_types::CertificateDer;
use tokio::sync::Mutex;

use crate::protocol::{encode_frame, CloseCode, FrameDecoder, Welcome, ALPN};
use crate::tls::{provider, Fingerprint, PinnedCertificate};

/// Largest chunk read from the stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Largest frame the client accepts from the gateway.
const MAX_INCOMING_FRAME: usize = 16 * 1024 * 1024;

/// How the client recognises the gateway.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Accept exactly the certificate with this SHA-256 fingerprint (a
    /// self-signed gateway prints it at start).
    Pinned(Fingerprint),
    /// Accept certificates that chain to these roots and name the server.
    Roots(Vec<CertificateDer<'static>>),
}

/// How a client connects.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// How the gateway's certificate is checked.
    pub trust: ServerTrust,
    /// The name the certificate must carry (checked with [`ServerTrust::Roots`]).
    pub server_name: String,
    /// How often the client pings an otherwise quiet connection.
    pub keep_alive: Duration,
    /// The connection is given up after this long without a packet from the
    /// gateway (the smaller of this and the gateway's own timeout applies).
    pub idle_timeout: Duration,
    /// The local address to bind.
    pub bind: SocketAddr,
}

impl ClientConfig {
    /// Connects to a gateway whose certificate has fingerprint `pin`.
    pub fn pinned(pin: Fingerprint) -> Self {
        ClientConfig {
            trust: ServerTrust::Pinned(pin),
            server_name: "localhost".into(),
            keep_alive: Duration::from_secs(4),
            idle_timeout: Duration::from_secs(15),
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }
}

/// Why a client could not be created or connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The local socket could not be bound.
    #[error("binding the client socket: {0}")]
    Bind(#[source] std::io::Error),
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The connection could not be started (bad address, bad server name).
    #[error("connecting: {0}")]
    Connect(#[from] quinn::ConnectError),
    /// The handshake failed: the gateway is unreachable, or its certificate
    /// does not match the pin.
    #[error("handshake: {0}")]
    Handshake(ConnectionError),
    /// The gateway closed the connection before welcoming the client: the
    /// credentials were rejected, or the first packet was refused.
    #[error("refused by the gateway: {0}")]
    Refused(Closed),
    /// The gateway's TCP port could not be reached (WebSocket).
    #[error("connecting to the gateway: {0}")]
    Unreachable(#[source] std::io::Error),
    /// The WebSocket upgrade failed.
    #[error("WebSocket handshake: {0}")]
    WebSocket(String),
    /// The gateway's welcome frame was malformed.
    #[error("the gateway sent a malformed welcome frame")]
    BadWelcome,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    /// Grove's close code, if the gateway closed it with one.
    pub code: Option<CloseCode>,
    /// The reason the gateway gave, or what went wrong locally.
    pub reason: String,
}

impl std::fmt::Display for Closed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(code) => write!(f, "{code}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for Closed {}

impl From<ConnectionError> for Closed {
    fn from(error: ConnectionError) -> Self {
        match error {
            ConnectionError::ApplicationClosed(close) => Closed {
                code: CloseCode::from_code(close.error_code.into_inner()),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            },
            other => Closed {
                code: None,
                reason: other.to_string(),
            },
        }
    }
}

/// A message from the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A frame from the reliable, ordered stream.
    Frame(Bytes),
    /// An unreliable datagram.
    Datagram(Bytes),
}

/// A client endpoint: one UDP socket for any number of sessions.
#[derive(Clone)]
pub struct Client {
    endpoint: quinn::Endpoint,
    config: ClientConfig,
}

impl Client {
    /// Binds a client socket.
    pub fn new(config: ClientConfig) -> Result<Client, ConnectError> {
        let mut tls = tls_config(&config.trust)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| ConnectError::Tls(e.to_string()))?;
        let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .keep_alive_interval(Some(config.keep_alive))
            .max_idle_timeout(quinn::IdleTimeout::try_from(config.idle_timeout).ok())
            .max_concurrent_uni_streams(0u32.into())
            .datagram_receive_buffer_size(Some(1024 * 1024));
        quic.transport_config(Arc::new(transport));
        let mut endpoint = quinn::Endpoint::client(config.bind).map_err(ConnectError::Bind)?;
        endpoint.set_default_client_config(quic);
        Ok(Client { endpoint, config })
    }

    /// Connects to the gateway at `addr`, sends `credentials` as the first
    /// packet and waits for the welcome.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        credentials: &[u8],
    ) -> Result<Session, ConnectError> {
        let connection = self
            .endpoint
            .connect(addr, &self.config.server_name)?
            .await
            .map_err(ConnectError::Handshake)?;
        let refused = |e: ConnectionError| ConnectError::Refused(e.into());
        let (mut send, mut recv) = connection.open_bi().await.map_err(refused)?;
        let mut first = BytesMut::new();
        encode_frame(credentials, &mut first);
        if send.write_all(&first).await.is_err() {
            return Err(refused(closed_reason(&connection).await));
        }
        let mut decoder = FrameDecoder::new(MAX_INCOMING_FRAME);
        let welcome = loop {
            if let Some(frame) = decoder.next_frame().map_err(|_| ConnectError::BadWelcome)? {
                break Welcome::decode(&frame).ok_or(ConnectError::BadWelcome)?;
            }
            match recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
                _ => return Err(refused(closed_reason(&connection).await)),
            }
        };
        Ok(Session {
            inner: Arc::new(SessionInner {
                connection,
                welcome,
                send: Mutex::new(send),
                recv: Mutex::new((recv, decoder)),
            }),
        })
    }

    /// Only the QUIC handshake (ALPN `grove`, the certificate checked): the
    /// bare connection, for speaking the protocol by hand.
    pub async fn handshake(&self, addr: SocketAddr) -> Result<quinn::Connection, ConnectError> {
        self.endpoint
            .connect(addr, &self.config.server_name)?
            .await
            .map_err(ConnectError::Handshake)
    }

    /// The local address of the client socket.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

/// A TLS 1.3 client configuration that trusts the gateway as `trust` says.
pub(crate) fn tls_config(trust: &ServerTrust) -> Result<rustls::ClientConfig, ConnectError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ConnectError::Tls(e.to_string()))?;
    Ok(match trust {
        ServerTrust::Pinned(fingerprint) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedCertificate {
                fingerprint: *fingerprint,
                provider,
            }))
            .with_no_client_auth(),
        ServerTrust::Roots(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for root in roots {
                store
                    .add(root.clone())
                    .map_err(|e| ConnectError::Tls(e.to_string()))?;
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
    })
}

/// Waits for the connection's close and returns why.
async fn closed_reason(connection: &quinn::Connection) -> ConnectionError {
    connection.closed().await
}

struct SessionInner {
    connection: quinn::Connection,
    welcome: Welcome,
    send: Mutex<SendStream>,
    recv: Mutex<(RecvStream, FrameDecoder)>,
}

/// One authenticated session. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

impl Session {
    /// The session id the gateway assigned.
    pub fn id(&self) -> u64 {
        self.inner.welcome.session
    }

    /// The actor that owns the session, written `type/key`.
    pub fn owner(&self) -> &str {
        &self.inner.welcome.owner
    }

    /// The largest frame payload the gateway accepts.
    pub fn max_frame(&self) -> usize {
        self.inner.welcome.max_frame as usize
    }

    /// The largest datagram payload the path carries now, if datagrams are
    /// available.
    pub fn max_datagram(&self) -> Option<usize> {
        self.inner.connection.max_datagram_size()
    }

    /// Sends one frame on the reliable, ordered stream.
    pub async fn send(&self, payload: &[u8]) -> Result<(), Closed> {
        let mut frame = BytesMut::with_capacity(payload.len() + 4);
        encode_frame(payload, &mut frame);
        self.send_raw(&frame).await
    }

    /// Writes bytes to the stream as they are, framed or not. For tests of
    /// the gateway's handling of malformed input.
    pub async fn send_raw(&self, bytes: &[u8]) -> Result<(), Closed> {
        let mut send = self.inner.send.lock().await;
        match send.write_all(bytes).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.closed().await),
        }
    }

    /// Sends one unreliable datagram.
    pub fn send_datagram(&self, payload: Bytes) -> Result<(), Closed> {
        self.inner
            .connection
            .send_datagram(payload)
            .map_err(|e| Closed {
                code: None,
                reason: e.to_string(),
            })
    }

    /// The next frame or datagram, in arrival order. `Err` once the session
    /// has ended, with the reason.
    pub async fn recv(&self) -> Result<Received, Closed> {
        let mut guard = self.inner.recv.lock().await;
        let (recv, decoder) = &mut *guard;
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => return Ok(Received::Frame(frame)),
                Ok(None) => {}
                Err(error) => {
                    return Err(Closed {
                        code: None,
                        reason: error.to_string(),
                    })
                }
            }
            tokio::select! {
                chunk = recv.read_chunk(READ_CHUNK, true) => match chunk {
                    Ok(Some(chunk)) => decoder.extend(&chunk.bytes),
                    _ => return Err(self.closed().await),
                },
                datagram = self.inner.connection.read_datagram() => match datagram {
                    Ok(payload) => return Ok(Received::Datagram(payload)),
                    Err(error) => return Err(error.into()),
                },
            }
        }
    }

    /// Closes the session with code `closed` and `reason`.
    pub fn close(&self, reason: &str) {
        self.inner
            .connection
            .close(CloseCode::Closed.code().into(), reason.as_bytes());
    }

    /// Waits until the session has ended and returns why.
    pub async fn closed(&self) -> Closed {
        self.inner.connection.closed().await.into()
    }
}
