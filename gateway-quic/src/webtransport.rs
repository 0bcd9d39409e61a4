//! The WebTransport door: browsers reach the same sessions over HTTP/3.
//!
//! A page opens a WebTransport session at `https://HOST:PORT/grove`, opens
//! one bidirectional stream and speaks exactly the QUIC door's protocol on
//! it: a credentials frame, the welcome, then length-prefixed frames both
//! ways; WebTransport datagrams carry the unreliable messages
//! (`docs/protocol.md`).
//!
//! Without a certificate of its own the door makes one that browsers accept
//! by hash (`serverCertificateHashes`): ECDSA P-256, valid for less than 14
//! days, and replaced by a fresh one every [`WebTransportListen::rotate_every`].
//! [`Gateway::webtransport_hashes`](crate::Gateway::webtransport_hashes) tells
//! pages the hash to pin; connections already open keep their certificate.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use wtransport::endpoint::{endpoint_side, IncomingSession};
use wtransport::tls::{Certificate, CertificateChain, PrivateKey};

use crate::protocol::CloseCode;
use crate::reader::{
    authenticate, drain, run_session, session_slot, Admission, Incoming, Refusal, Source,
};
use crate::server::{
    read_credentials, write_frames, Backend, GatewayError, Shared, READ_CHUNK, SHUTDOWN_GRACE,
};
use crate::sessions::{Disconnect, Door, End};
use crate::tls::{Fingerprint, Identity, TlsError};

/// The longest rotation period: half of what browsers accept as a pinned
/// certificate's validity, less the backdating and a margin.
pub const MAX_ROTATION: Duration = Duration::from_secs(6 * 24 * 3600 + 22 * 3600);

/// A WebTransport server endpoint.
type Endpoint = wtransport::Endpoint<endpoint_side::Server>;

/// The path a browser opens its session at.
pub const PATH: &str = "/grove";

/// Browsers refuse a hash-pinned certificate valid for longer than this.
const MAX_VALIDITY: time::Duration = time::Duration::days(14);

/// How long before its start a generated certificate is valid, for clocks
/// a little behind the host's.
const BACKDATE: time::Duration = time::Duration::hours(1);

/// Where the WebTransport door listens and which certificate it presents.
#[derive(Debug, Clone)]
pub struct WebTransportListen {
    /// The UDP address to listen on (not the QUIC door's).
    pub listen: SocketAddr,
    /// A certificate browsers verify the usual way (a CA's). Without one,
    /// the door generates short-lived certificates that pages pin by hash.
    pub identity: Option<Identity>,
    /// The names a generated certificate carries.
    pub names: Vec<String>,
    /// How often a generated certificate is replaced; it is valid for
    /// twice this. Browsers accept no more than 14 days of validity, so at
    /// most [`MAX_ROTATION`] is used.
    pub rotate_every: Duration,
}

impl WebTransportListen {
    /// A door on `listen` with generated certificates, rotated every six
    /// days.
    pub fn new(listen: SocketAddr) -> WebTransportListen {
        WebTransportListen {
            listen,
            identity: None,
            names: vec!["localhost".into()],
            rotate_every: Duration::from_secs(6 * 24 * 3600),
        }
    }
}

/// The running door, as the gateway keeps it.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    /// The hashes pages pin: the current generated certificate's, or none
    /// for a CA-signed one.
    pub(crate) hashes: Arc<RwLock<Vec<Fingerprint>>>,
}

/// A certificate browsers accept by hash: ECDSA P-256, valid from a little
/// before now for `validity` (capped below 14 days in all).
pub fn pinnable_identity(names: &[String], validity: Duration) -> Result<Identity, TlsError> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    let now = time::OffsetDateTime::now_utc();
    let validity = time::Duration::try_from(validity)
        .unwrap_or(MAX_VALIDITY)
        .min(MAX_VALIDITY - BACKDATE - time::Duration::minutes(1));
    params.not_before = now - BACKDATE;
    params.not_after = now + validity;
    let certificate = params.self_signed(&key)?;
    Ok(Identity {
        chain: vec![certificate.der().clone()],
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    })
}

/// The door's server configuration for `identity`.
fn server_config(
    listen: SocketAddr,
    identity: &Identity,
    idle_timeout: Duration,
) -> Result<wtransport::ServerConfig, TlsError> {
    let chain = identity
        .chain
        .iter()
        .map(|der| Certificate::from_der(der.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let key = PrivateKey::from_der_pkcs8(identity.key.secret_der().to_vec());
    let identity = wtransport::Identity::new(CertificateChain::new(chain), key);
    Ok(wtransport::ServerConfig::builder()
        .with_bind_address(listen)
        .with_identity(identity)
        .keep_alive_interval(None)
        .max_idle_timeout(Some(idle_timeout))
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?
        .build())
}

/// Binds the door and starts accepting sessions until `stop` changes.
pub(crate) fn start<B: Backend>(
    door: &WebTransportListen,
    shared: Arc<Shared<B>>,
    stop: watch::Receiver<bool>,
) -> Result<(Running, tokio::task::JoinHandle<()>), GatewayError> {
    let idle = shared.config.idle_timeout;
    let generated = door.identity.is_none();
    let door = &WebTransportListen {
        rotate_every: door.rotate_every.min(MAX_ROTATION),
        ..door.clone()
    };
    let identity = match &door.identity {
        Some(identity) => identity.clone(),
        None => pinnable_identity(&door.names, door.rotate_every * 2)?,
    };
    let hashes = if generated {
        vec![identity.fingerprint()]
    } else {
        Vec::new()
    };
    let config = server_config(door.listen, &identity, idle)?;
    let bind = |source| GatewayError::Bind {
        addr: door.listen,
        source,
    };
    let endpoint = wtransport::Endpoint::server(config).map_err(bind)?;
    let addr = endpoint.local_addr().map_err(bind)?;
    let running = Running {
        addr,
        hashes: Arc::new(RwLock::new(hashes)),
    };
    let rotation = generated.then(|| Rotation {
        door: WebTransportListen {
            listen: addr,
            ..door.clone()
        },
        hashes: running.hashes.clone(),
        idle,
    });
    let task = tokio::spawn(accept(endpoint, rotation, shared, stop));
    Ok((running, task))
}

/// Replaces a generated certificate before browsers stop accepting it.
struct Rotation {
    door: WebTransportListen,
    hashes: Arc<RwLock<Vec<Fingerprint>>>,
    idle: Duration,
}

impl Rotation {
    fn rotate(&self, endpoint: &Endpoint) {
        let rotated =
            pinnable_identity(&self.door.names, self.door.rotate_every * 2).and_then(|identity| {
                let config = server_config(self.door.listen, &identity, self.idle)?;
                endpoint
                    .reload_config(config, false)
                    .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
                Ok(identity.fingerprint())
            });
        match rotated {
            Ok(hash) => {
                tracing::info!(%hash, "WebTransport certificate rotated");
                *self.hashes.write().unwrap_or_else(|e| e.into_inner()) = vec![hash];
            }
            Err(error) => tracing::error!(%error, "rotating the WebTransport certificate failed"),
        }
    }
}

async fn accept<B: Backend>(
    endpoint: Endpoint,
    rotation: Option<Rotation>,
    shared: Arc<Shared<B>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let every = rotation
        .as_ref()
        .map_or(Duration::from_secs(3600), |r| r.door.rotate_every);
    let mut rotate = tokio::time::interval(every.max(Duration::from_millis(10)));
    rotate.reset();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => match shared.pending_auth.clone().try_acquire_owned() {
                Ok(pending) => {
                    connections.spawn(serve(shared.clone(), incoming, pending));
                }
                Err(_) => {
                    tracing::debug!(
                        remote = %incoming.remote_address(),
                        "too many connections logging in; WebTransport refused"
                    );
                    incoming.refuse();
                }
            },
            _ = rotate.tick() => if let Some(rotation) = &rotation {
                rotation.rotate(&endpoint);
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            Ok(()) = stop.changed() => break,
        }
    }
    // Sessions are closed with the others (the QUIC door's `close_all`);
    // closing the endpoint ends the logins still running.
    endpoint.close(
        CloseCode::HostShutdown.code().into(),
        b"host is shutting down",
    );
    drain(connections, SHUTDOWN_GRACE).await;
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, endpoint.wait_idle()).await;
}

/// Serves one browser session from its QUIC handshake on.
async fn serve<B: Backend>(
    shared: Arc<Shared<B>>,
    incoming: IncomingSession,
    pending: OwnedSemaphorePermit,
) {
    // The handshake and the session's request get the login's time, like
    // the credentials after them: a client holds its place among those
    // logging in no longer.
    let opening = async {
        let request = incoming.await.ok()?;
        if request.path() != PATH {
            tracing::debug!(
                path = request.path(),
                "WebTransport request for an unknown path"
            );
            request.not_found().await;
            return None;
        }
        match request.accept().await {
            Ok(connection) => Some(connection),
            Err(error) => {
                tracing::debug!(%error, "WebTransport session not established");
                None
            }
        }
    };
    let Ok(Some(connection)) = tokio::time::timeout(shared.config.auth_timeout, opening).await
    else {
        return;
    };
    let quic = connection.quic_connection().clone();
    let admitted = tokio::select! {
        admitted = login(&shared, &connection, pending) => admitted,
        never = discard_datagrams(&connection) => match never {},
    };
    match admitted {
        Ok(_) if quic.close_reason().is_some() => {}
        Ok((login, send, recv, decoder)) => {
            let admission = Admission {
                login,
                door: Door::WebTransport(connection.clone()),
                remote: connection.remote_address(),
                source: WtSource { recv, connection },
                decoder,
            };
            run_session(&shared, admission, |outbound| {
                tokio::spawn(write_frames(send, outbound, quic));
            })
            .await;
        }
        Err(Some((code, reason))) => {
            shared.sessions.count_end(End::Closed(code));
            tracing::debug!(%code, reason, "WebTransport session refused");
            connection.close(code.code().into(), reason.as_bytes());
        }
        Err(None) => {}
    }
}

/// A login: the session slot, the stream, the credentials, the
/// authenticator's answer.
async fn login<B: Backend>(
    shared: &Shared<B>,
    connection: &wtransport::Connection,
    pending: OwnedSemaphorePermit,
) -> Result<
    (
        crate::reader::Login<B::Owner>,
        wtransport::SendStream,
        wtransport::RecvStream,
        crate::protocol::FrameDecoder,
    ),
    Refusal,
> {
    let config = &shared.config;
    let slot = session_slot(shared).map_err(Some)?;
    let first = async {
        let (send, mut recv) = connection.accept_bi().await.map_err(|_| None)?;
        let (credentials, decoder) =
            read_credentials(recv.quic_stream_mut(), config.max_credentials).await?;
        Ok::<_, Refusal>((credentials, send, recv, decoder))
    };
    let (credentials, send, recv, decoder) =
        match tokio::time::timeout(config.auth_timeout, first).await {
            Ok(first) => first?,
            Err(_) => {
                let reason = format!("no credentials within {:?}", config.auth_timeout);
                return Err(Some((CloseCode::AuthTimeout, reason)));
            }
        };
    let login = authenticate(shared, credentials, slot).await?;
    drop(pending);
    Ok((login, send, recv, decoder))
}

/// Drops the datagrams a browser sends before its welcome, as the QUIC door
/// does; waits forever once the connection is gone.
async fn discard_datagrams(connection: &wtransport::Connection) -> std::convert::Infallible {
    while connection.receive_datagram().await.is_ok() {}
    std::future::pending().await
}

/// A browser's stream and datagrams, in arrival order.
struct WtSource {
    recv: wtransport::RecvStream,
    connection: wtransport::Connection,
}

impl Source for WtSource {
    async fn next(&mut self) -> Incoming {
        // Both reads are cancel-safe, so the one that loses loses nothing.
        tokio::select! {
            chunk = self.recv.quic_stream_mut().read_chunk(READ_CHUNK, true) => match chunk {
                Ok(Some(chunk)) => Incoming::Bytes(chunk.bytes),
                Ok(None) => Incoming::Finished,
                Err(quinn::ReadError::Reset(code)) => Incoming::Gone(Disconnect::ClientClosed(
                    format!("the client reset its stream (code {code})"),
                )),
                // The session's end is read off its datagrams, which carry
                // the page's close reason.
                Err(quinn::ReadError::ConnectionLost(_)) => Incoming::Gone(self.lost().await),
                Err(error) => Incoming::Violation(CloseCode::ProtocolViolation, error.to_string()),
            },
            datagram = self.connection.receive_datagram() => match datagram {
                Ok(datagram) => Incoming::Message(datagram.payload(), false),
                Err(error) => Incoming::Gone(ended(error)),
            },
        }
    }
}

impl WtSource {
    /// Why the session is gone, once its stream failed: the session's own
    /// end, which its datagrams report after the ones still queued.
    async fn lost(&self) -> Disconnect {
        loop {
            if let Err(error) = self.connection.receive_datagram().await {
                return ended(error);
            }
        }
    }
}

/// Why a session the gateway did not close ended (a close by the gateway is
/// recorded, and takes precedence).
fn ended(error: wtransport::error::ConnectionError) -> Disconnect {
    use wtransport::error::ConnectionError;
    match error {
        // The page closed its session (`WebTransport.close`), or the peer
        // closed the connection, with a reason.
        ConnectionError::ApplicationClosed(close) => {
            Disconnect::ClientClosed(String::from_utf8_lossy(close.reason()).into_owned())
        }
        ConnectionError::TimedOut => Disconnect::TimedOut,
        // wtransport closes the connection itself when the page's close
        // arrives without a reason it passes on.
        ConnectionError::LocallyClosed => Disconnect::ClientClosed("session closed".into()),
        other => Disconnect::ClientClosed(other.to_string()),
    }
}
