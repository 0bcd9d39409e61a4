//! Host-to-host connections over QUIC: one connection per pair of hosts,
//! many calls in flight on it at once.
//!
//! **Who may connect.** Both sides present a certificate (mutual TLS). A
//! host dialling a peer pins the fingerprint the peer published in its
//! lease, and a host accepting a connection takes it only if the client's
//! certificate is the one a live member published: a process that is not a
//! member cannot call into the cluster, and a member cannot be impersonated
//! by one that is not.
//!
//! **One connection per pair.** The first call from A to B dials B and opens
//! one bidirectional stream; B registers the accepted connection as its own
//! link to A, so B's calls to A travel on it too. (Two hosts that dial each
//! other at the same moment keep both connections; each carries its own
//! calls and their answers.)
//!
//! **Frames** ([`crate::wire`]): a writer task per connection batches frames
//! queued by callers and responders into few stream writes; a reader task
//! answers pending calls by request id and hands requests to the host's
//! [`Inbound`] one at a time, in the order they arrived, so per-sender order
//! holds for one-way sends. A request is handed over when it is queued, and
//! answered later through its [`Responder`], so a long call does not hold up
//! the ones behind it.
//!
//! Each request is sent with a [`Waiter`] that its answer goes to, on the
//! task that learns it (the reader's, mostly): the waiter only passes it on.
//! A request not answered by its deadline is answered [`Unanswered::Timeout`] by the connection's
//! deadline task, which sleeps until the earliest deadline pending. When a
//! connection fails, every call pending on it is answered at once with
//! [`Unanswered::Lost`] (the caller does not know whether it ran), and the
//! next call dials again.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use grove_gateway_quic::tls::{provider, PinnedCertificate};
use grove_gateway_quic::{Fingerprint, Identity};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, OnceCell};

use crate::membership::{Member, Membership};
use crate::wire::{self, Event, Frame, Outcome, Push, Request, Response, ALPN};

/// The server name dialled; certificates are pinned by fingerprint, so it
/// names no one in particular.
const SERVER_NAME: &str = "grove-host";

/// Longest wait for a peer's handshake.
const HANDSHAKE: Duration = Duration::from_millis(500);

/// How long after a failed dial a peer is dialled again.
const REDIAL: Duration = Duration::from_secs(1);

/// How long a peer that could not be dialled stays suspect.
const SUSPECT_FOR: Duration = Duration::from_secs(5);

/// Close codes of host-to-host connections.
const NOT_A_MEMBER: u32 = 1;
const PROTOCOL_ERROR: u32 = 2;
/// Closes a leaving host's connection on which it took a request and did not
/// answer it in time: the peer hears that the request may have run.
const LEFT_UNANSWERED: u32 = 3;

/// How a host's transport is set up.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The UDP address to listen on.
    pub listen: SocketAddr,
    /// This host's certificate; its fingerprint goes in the lease.
    pub identity: Identity,
    /// A connection silent this long is dead (keep-alives run at a third).
    pub idle_timeout: Duration,
}

impl TransportConfig {
    /// Listens on `listen` with a fresh self-signed certificate.
    pub fn new(listen: SocketAddr) -> Result<TransportConfig, TransportError> {
        Ok(TransportConfig {
            listen,
            identity: Identity::self_signed(&[SERVER_NAME.to_owned()])
                .map_err(|e| TransportError::Tls(e.to_string()))?,
            idle_timeout: Duration::from_secs(3),
        })
    }
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The certificate or the TLS configuration was refused.
    #[error("host-to-host TLS: {0}")]
    Tls(String),
    /// The UDP socket could not be bound.
    #[error("cannot listen for hosts on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Why a request could not be sent to another host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No connection could be made to the peer.
    #[error("cannot reach host {host} at {address}: {message}")]
    Unreachable {
        /// The peer's id.
        host: String,
        /// Its address.
        address: String,
        /// Why.
        message: String,
    },
}

/// Why a request got no answer from its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unanswered {
    /// It was never sent: it may go to another host.
    Unsent(LinkError),
    /// The connection failed with it in flight: it may or may not have run.
    Lost,
    /// Its deadline passed first.
    Timeout,
}

/// A request's answer, or why there is none.
pub type Answer<E> = Result<Outcome<E>, Unanswered>;

/// Where a request's answer goes. Answered once, on whichever task learns
/// it — the connection's reader (an answer, or the connection's end), its
/// deadline task, the sender's (a request never sent) or the one dropping
/// the link — so it must not block.
pub trait Waiter<E>: Send {
    /// Takes the answer.
    fn answer(self: Box<Self>, answer: Answer<E>);
}

/// A channel's sender waits for the answer on its receiver.
impl<E: Send + 'static> Waiter<E> for oneshot::Sender<Answer<E>> {
    fn answer(self: Box<Self>, answer: Answer<E>) {
        let _ = self.send(answer);
    }
}

/// A boxed future, as [`Inbound`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a host does with requests from its peers.
pub trait Inbound<E>: Send + Sync + 'static {
    /// Takes `request` from `from`. Requests from one connection are handed
    /// over one at a time, in order: return once the request is queued (so
    /// that order holds), and answer it later through `responder`.
    fn request(
        &self,
        from: &Member,
        request: Request,
        responder: Responder<E>,
    ) -> BoxFuture<'_, ()>;

    /// Takes `event` from `from`, in order with the requests.
    fn event(&self, from: &Member, event: Event, responder: Responder<E>) -> BoxFuture<'_, ()>;

    /// Takes `push` from `from`, in order with the requests.
    fn push(&self, from: &Member, push: Push, responder: Responder<E>) -> BoxFuture<'_, ()>;
}

/// Answers one request, once. Dropping it unanswered leaves the caller
/// waiting until its own deadline: every path should answer.
pub struct Responder<E> {
    id: u64,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    /// Counts the requests taken on this link and not yet answered: a
    /// leaving host fails a link it still owes answers on. Declared first,
    /// so dropped before the host's count.
    _link_unanswered: Arc<()>,
    /// Counts the requests this host has yet to answer: a leaving host
    /// waits for them all before it ends its streams.
    _unanswered: Arc<()>,
    _error: std::marker::PhantomData<fn(E)>,
}

impl<E: Serialize> Responder<E> {
    /// Sends the answer (lost if the connection is gone: the caller hears
    /// [`Unanswered::Lost`]).
    pub fn respond(self, outcome: Outcome<E>) {
        respond(&self.writer, self.id, outcome);
    }
}

/// Queues the answer to request `id` on a link's writer.
fn respond<E: Serialize>(writer: &mpsc::UnboundedSender<Vec<u8>>, id: u64, outcome: Outcome<E>) {
    let mut bytes = Vec::new();
    wire::encode(&Frame::Response(Response { id, outcome }), &mut bytes);
    let _ = writer.send(bytes);
}

/// One connection to a peer.
struct Link<E> {
    peer: Member,
    connection: quinn::Connection,
    writer: mpsc::UnboundedSender<Vec<u8>>,
    /// Tells the writer to send what is queued, end the stream and stop.
    finish: Arc<tokio::sync::Notify>,
    pending: Mutex<Pending<E>>,
    /// Wakes the deadline task: a request went pending with a deadline
    /// earlier than it sleeps until, or the link is gone.
    expire: Arc<tokio::sync::Notify>,
    next_id: AtomicU64,
    /// One reference per request taken on this link and not yet answered,
    /// held by its responder.
    unanswered: Arc<()>,
}

/// The requests a link waits on answers to.
struct Pending<E> {
    waiting: HashMap<u64, Waiting<E>>,
    /// The deadline task's next wake, if it sleeps until one.
    next_expiry: Option<Instant>,
    /// Set once the connection's stream ended or failed: nothing more is
    /// answered on it, and requests are refused as unsent.
    closed: bool,
}

struct Waiting<E> {
    deadline: Instant,
    waiter: Box<dyn Waiter<E>>,
}

impl<E> Pending<E> {
    /// Takes every waiter, closing the link to new requests.
    fn close(&mut self) -> Vec<Box<dyn Waiter<E>>> {
        self.closed = true;
        self.waiting.drain().map(|(_, w)| w.waiter).collect()
    }
}

impl<E> Link<E> {
    /// Closes the link to new requests; returns the waiters of those
    /// pending, and lets the deadline task end.
    fn close_pending(&self) -> Vec<Box<dyn Waiter<E>>> {
        let waiters = lock(&self.pending).close();
        self.expire.notify_one();
        waiters
    }
}

impl<E> Drop for Link<E> {
    fn drop(&mut self) {
        let pending = self
            .pending
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for waiter in pending.close() {
            waiter.answer(Err(Unanswered::Lost));
        }
        self.expire.notify_one();
    }
}

/// A peer's link once dialled; callers arriving meanwhile share the dial.
type Dial<E> = Arc<OnceCell<Arc<Link<E>>>>;

/// A host's end of the cluster's connections. Cheap to clone.
pub struct Transport<E> {
    shared: Arc<Shared<E>>,
}

impl<E> Clone for Transport<E> {
    fn clone(&self) -> Self {
        Transport {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<E> {
    endpoint: quinn::Endpoint,
    identity: Identity,
    membership: Membership,
    idle_timeout: Duration,
    inbound: Weak<dyn Inbound<E>>,
    /// By peer id: the link, or the dial in progress that all callers share.
    links: Mutex<HashMap<String, Dial<E>>>,
    /// Peers that ended their stream: they left the cluster, and dialling
    /// them again would only wait for a handshake timeout.
    departed: Mutex<std::collections::HashSet<String>>,
    /// Connections a peer opened while this host's link to it existed.
    extra: Mutex<Vec<Arc<Link<E>>>>,
    /// Peers that could not be dialled, and when.
    unreachable: Mutex<HashMap<String, tokio::time::Instant>>,
    /// Set once this host leaves: requests are answered `NotHere` unread.
    closing: std::sync::atomic::AtomicBool,
    /// One reference per unanswered request, held by its responder.
    unanswered: Arc<()>,
}

impl<E> Transport<E>
where
    E: Serialize + DeserializeOwned + Send + 'static,
{
    /// Listens on `config.listen`, taking connections from the live members
    /// of `membership` and handing their requests to `inbound` (held weakly:
    /// requests arriving after it is gone are refused).
    pub fn start(
        config: TransportConfig,
        membership: Membership,
        inbound: Weak<dyn Inbound<E>>,
    ) -> Result<Transport<E>, TransportError> {
        let server = server_config(&config)?;
        let endpoint = quinn::Endpoint::server(server, config.listen).map_err(|source| {
            TransportError::Bind {
                addr: config.listen,
                source,
            }
        })?;
        let shared = Arc::new(Shared {
            endpoint,
            identity: config.identity,
            membership,
            idle_timeout: config.idle_timeout,
            inbound,
            links: Mutex::new(HashMap::new()),
            departed: Mutex::default(),
            unreachable: Mutex::default(),
            extra: Mutex::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            unanswered: Arc::new(()),
        });
        tokio::spawn(accept(Arc::downgrade(&shared)));
        Ok(Transport { shared })
    }

    /// The address the transport listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// This host's certificate fingerprint, for its lease.
    pub fn fingerprint(&self) -> Fingerprint {
        self.shared.identity.fingerprint()
    }

    /// Sends `request` to `peer` (its `id` is assigned here); its answer,
    /// or why there is none by `deadline`, goes to `waiter`.
    pub async fn request(
        &self,
        peer: &Member,
        mut request: Request,
        deadline: Instant,
        waiter: impl Waiter<E> + 'static,
    ) {
        let capacity = 64 + request.args.len();
        let frame = |id| {
            request.id = id;
            Frame::Request(request)
        };
        self.submit(peer, capacity, frame, deadline, Box::new(waiter))
            .await;
    }

    /// Sends `event` to `peer` (its `id` is assigned here), as
    /// [`Transport::request`] does a request.
    pub async fn event(
        &self,
        peer: &Member,
        mut event: Event,
        deadline: Instant,
        waiter: impl Waiter<E> + 'static,
    ) {
        let frame = |id| {
            event.id = id;
            Frame::Event(event)
        };
        self.submit(peer, 64, frame, deadline, Box::new(waiter))
            .await;
    }

    /// Sends `push` to `peer` (its `id` is assigned here), as
    /// [`Transport::request`] does a request.
    pub async fn push(
        &self,
        peer: &Member,
        mut push: Push,
        deadline: Instant,
        waiter: impl Waiter<E> + 'static,
    ) {
        let frame = |id| {
            push.id = id;
            Frame::Push(push)
        };
        self.submit(peer, 64, frame, deadline, Box::new(waiter))
            .await;
    }

    async fn submit(
        &self,
        peer: &Member,
        capacity: usize,
        frame: impl FnOnce(u64) -> Frame<E>,
        deadline: Instant,
        waiter: Box<dyn Waiter<E>>,
    ) {
        let link = match self.link(peer).await {
            Ok(link) => link,
            Err(error) => return waiter.answer(Err(Unanswered::Unsent(error))),
        };
        let id = link.next_id.fetch_add(1, Ordering::Relaxed);
        let mut bytes = Vec::with_capacity(capacity);
        wire::encode::<E>(&frame(id), &mut bytes);
        let lost = || {
            Unanswered::Unsent(LinkError::Unreachable {
                host: peer.id.clone(),
                address: peer.address.clone(),
                message: "its connection closed".into(),
            })
        };
        {
            let mut pending = lock(&link.pending);
            if pending.closed {
                drop(pending);
                self.forget(&link);
                return waiter.answer(Err(lost()));
            }
            pending.waiting.insert(id, Waiting { deadline, waiter });
            if pending.next_expiry.is_none_or(|next| deadline < next) {
                pending.next_expiry = Some(deadline);
                link.expire.notify_one();
            }
        }
        if link.writer.send(bytes).is_err() {
            let waiting = lock(&link.pending).waiting.remove(&id);
            self.forget(&link);
            if let Some(waiting) = waiting {
                waiting.waiter.answer(Err(lost()));
            }
        }
    }

    /// Whether `peer_id` ended its stream to this host (it left).
    pub fn has_departed(&self, peer_id: &str) -> bool {
        lock(&self.shared.departed).contains(peer_id)
    }

    /// Whether `peer_id` left, or could not be dialled in the last few
    /// seconds: whether it is alive is for its lease to say, not for a view
    /// of the members that may be a renewal interval old.
    pub fn is_suspect(&self, peer_id: &str) -> bool {
        if self.has_departed(peer_id) {
            return true;
        }
        let mut unreachable = lock(&self.shared.unreachable);
        match unreachable.get(peer_id) {
            Some(at) if at.elapsed() < SUSPECT_FOR => true,
            Some(_) => {
                unreachable.remove(peer_id);
                false
            }
            None => false,
        }
    }

    /// Closes the connection to `peer`, if any: calls pending on it are
    /// answered with [`Unanswered::Lost`]. For a peer known to be dead.
    pub fn disconnect(&self, peer_id: &str) {
        let cell = lock(&self.shared.links).remove(peer_id);
        if let Some(link) = cell.and_then(|cell| cell.get().cloned()) {
            link.connection.close(0u32.into(), b"peer left the cluster");
        }
        // Its id is never used again: a host that comes back joins anew.
        lock(&self.shared.departed).remove(peer_id);
        lock(&self.shared.unreachable).remove(peer_id);
        lock(&self.shared.extra).retain(|link| link.peer.id != peer_id);
    }

    /// Leaves: requests taken get up to `grace` to be answered; then every
    /// connection sends what is queued on it (those answers above all) and
    /// ends its stream, and once the peers have read to the end and closed,
    /// or after another `grace`, the endpoint closes. The ends get a bound of
    /// their own: a request that reached this host after it began to leave
    /// must still reach its peer as `NotHere`, not be cut off as lost.
    ///
    /// A peer reads a stream's end as "every request I sent that was not
    /// answered never ran", and may send those requests to another host. So
    /// a connection on which a request taken is still unanswered after
    /// `grace` is closed instead (close code 3), at once: its peer hears
    /// every request pending on it as [`Unanswered::Lost`], which is true
    /// (each may have run, this one may yet), rather than run one twice.
    pub async fn close(&self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        // From now on requests are answered `NotHere` without running, so
        // a peer may send them elsewhere; those already taken are answered
        // before the streams end.
        self.shared.closing.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        while Arc::strong_count(&self.shared.unanswered) > 1
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The links' counts are read after the host's, and may not be seen
        // older than it.
        std::sync::atomic::fence(Ordering::SeqCst);
        let mut links: Vec<Arc<Link<E>>> = lock(&self.shared.links)
            .drain()
            .filter_map(|(_, cell)| cell.get().cloned())
            .collect();
        links.append(&mut lock(&self.shared.extra));
        let owing = |link: &Arc<Link<E>>| Arc::strong_count(&link.unanswered) > 1;
        let mut suspect: Vec<&Arc<Link<E>>> = Vec::new();
        for link in &links {
            if owing(link) {
                suspect.push(link);
            } else {
                link.finish.notify_one();
            }
        }
        if !suspect.is_empty() {
            // A request being refused holds a link's count for an instant
            // (the reader counts it before it reads `closing`); one taken
            // and not answered holds it until answered.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for link in suspect {
            if owing(link) {
                tracing::warn!(peer = %link.peer.id, "leaving with requests from this host unanswered");
                link.connection.close(
                    LEFT_UNANSWERED.into(),
                    b"host left with requests unanswered",
                );
            } else {
                link.finish.notify_one();
            }
        }
        let closed = futures_closed(links.iter().map(|l| l.connection.clone()).collect());
        let _ = tokio::time::timeout(grace, closed).await;
        self.shared.endpoint.close(0u32.into(), b"host leaving");
    }

    /// The link to `peer`, dialling it if there is none; a link whose
    /// connection closed is forgotten and dialled again.
    async fn link(&self, peer: &Member) -> Result<Arc<Link<E>>, LinkError> {
        let cell = {
            let mut links = lock(&self.shared.links);
            match links.get(&peer.id) {
                Some(cell) => cell.clone(),
                None => links.entry(peer.id.clone()).or_default().clone(),
            }
        };
        let link = cell
            .get_or_try_init(|| dial(self.shared.clone(), peer.clone()))
            .await;
        match link {
            Ok(link) if link.connection.close_reason().is_none() => Ok(link.clone()),
            Ok(link) => {
                // Closed, and its reader has not seen it yet: dial again
                // rather than send what would be lost.
                let link = link.clone();
                self.forget(&link);
                Box::pin(self.link(peer)).await
            }
            Err(error) => {
                let mut links = lock(&self.shared.links);
                if links.get(&peer.id).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                    links.remove(&peer.id);
                }
                Err(error)
            }
        }
    }

    fn forget(&self, link: &Arc<Link<E>>) {
        forget(&self.shared, link);
    }
}

/// Resolves once every connection is closed.
async fn futures_closed(connections: Vec<quinn::Connection>) {
    for connection in connections {
        connection.closed().await;
    }
}

fn forget<E>(shared: &Shared<E>, link: &Arc<Link<E>>) {
    let mut links = lock(&shared.links);
    let same = links
        .get(&link.peer.id)
        .and_then(|cell| cell.get())
        .is_some_and(|l| Arc::ptr_eq(l, link));
    if same {
        links.remove(&link.peer.id);
    }
    drop(links);
    lock(&shared.extra).retain(|l| !Arc::ptr_eq(l, link));
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn transport_config(idle_timeout: Duration) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(quinn::IdleTimeout::try_from(idle_timeout).ok())
        .keep_alive_interval(Some(idle_timeout / 3))
        .max_concurrent_bidi_streams(4u32.into())
        .max_concurrent_uni_streams(0u32.into())
        .stream_receive_window((16u32 << 20).into())
        .receive_window((32u32 << 20).into())
        .send_window(32 << 20);
    Arc::new(transport)
}

fn server_config(config: &TransportConfig) -> Result<quinn::ServerConfig, TransportError> {
    let tls_error = |e: &dyn std::fmt::Display| TransportError::Tls(e.to_string());
    let identity = config.identity.clone();
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls_error(&e))?
        .with_client_cert_verifier(Arc::new(MemberCertificate {
            provider: provider(),
        }))
        .with_single_cert(identity.chain, identity.key)
        .map_err(|e| tls_error(&e))?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| tls_error(&e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport_config(config.idle_timeout));
    Ok(server)
}

fn client_config(
    shared: &Shared<impl Sized>,
    pin: Fingerprint,
) -> Result<quinn::ClientConfig, String> {
    let identity = shared.identity.clone();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertificate::new(pin)))
        .with_client_auth_cert(identity.chain, identity.key)
        .map_err(|e| e.to_string())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport_config(shared.idle_timeout));
    Ok(client)
}

async fn dial<E>(shared: Arc<Shared<E>>, peer: Member) -> Result<Arc<Link<E>>, LinkError>
where
    E: Serialize + DeserializeOwned + Send + 'static,
{
    let unreachable = |message: String| LinkError::Unreachable {
        host: peer.id.clone(),
        address: peer.address.clone(),
        message,
    };
    if lock(&shared.departed).contains(&peer.id) {
        return Err(unreachable("it left the cluster".into()));
    }
    // One dial a second to a host that did not answer: until its lease
    // lapses or it answers, callers poll its lease instead.
    let failed = lock(&shared.unreachable).get(&peer.id).copied();
    if failed.is_some_and(|at| at.elapsed() < REDIAL) {
        return Err(unreachable("it did not answer the last dial".into()));
    }
    let pin: Fingerprint = peer
        .fingerprint
        .parse()
        .map_err(|e: grove_gateway_quic::tls::TlsError| unreachable(e.to_string()))?;
    let addr: SocketAddr = peer
        .address
        .parse()
        .map_err(|_| unreachable("not a socket address".into()))?;
    let config = client_config(&shared, pin).map_err(&unreachable)?;
    let connecting = shared
        .endpoint
        .connect_with(config, addr, SERVER_NAME)
        .map_err(|e| unreachable(e.to_string()))?;
    // Loopback and a data centre answer in milliseconds; a host that does
    // not answer in half a second is not worth waiting for.
    let handshake = tokio::time::timeout(shared.idle_timeout.min(HANDSHAKE), connecting).await;
    let connection = match handshake {
        Ok(Ok(connection)) => connection,
        failed => {
            // Only a dial that was tried and failed makes the peer suspect
            // (and holds back the next dial for a second).
            lock(&shared.unreachable).insert(peer.id.clone(), tokio::time::Instant::now());
            return Err(unreachable(match failed {
                Ok(Err(error)) => error.to_string(),
                _ => "no handshake in time".into(),
            }));
        }
    };
    let (send, recv) = connection
        .open_bi()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    // Registered by the caller, once the dial returns.
    Ok(open_link(&shared, peer, connection, send, recv, |_| {}))
}

/// Starts the reader and writer of a connection's stream, calling
/// `register` with the link before the reader starts.
fn open_link<E>(
    shared: &Arc<Shared<E>>,
    peer: Member,
    connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    register: impl FnOnce(&Arc<Link<E>>),
) -> Arc<Link<E>>
where
    E: Serialize + DeserializeOwned + Send + 'static,
{
    let (writer, queue) = mpsc::unbounded_channel();
    let finish = Arc::new(tokio::sync::Notify::new());
    let expire = Arc::new(tokio::sync::Notify::new());
    let link = Arc::new(Link {
        peer,
        connection,
        writer,
        finish: finish.clone(),
        pending: Mutex::new(Pending {
            waiting: HashMap::new(),
            next_expiry: None,
            closed: false,
        }),
        expire: expire.clone(),
        next_id: AtomicU64::new(1),
        unanswered: Arc::new(()),
    });
    tokio::spawn(write(link.connection.clone(), send, queue, finish));
    register(&link);
    tokio::spawn(read(Arc::downgrade(shared), link.clone(), recv));
    tokio::spawn(expire_pending(Arc::downgrade(&link), expire));
    link
}

/// Answers [`Unanswered::Timeout`] to requests past their deadline,
/// sleeping until the earliest one pending; ends with the link.
async fn expire_pending<E: 'static>(link: Weak<Link<E>>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let next = {
            let Some(link) = link.upgrade() else {
                return;
            };
            let now = Instant::now();
            let mut pending = lock(&link.pending);
            if pending.closed {
                return;
            }
            let expired: Vec<u64> = pending
                .waiting
                .iter()
                .filter(|(_, w)| w.deadline <= now)
                .map(|(id, _)| *id)
                .collect();
            let expired: Vec<Waiting<E>> = expired
                .iter()
                .filter_map(|id| pending.waiting.remove(id))
                .collect();
            pending.next_expiry = pending.waiting.values().map(|w| w.deadline).min();
            let next = pending.next_expiry;
            drop(pending);
            for waiting in expired {
                waiting.waiter.answer(Err(Unanswered::Timeout));
            }
            next
        };
        match next {
            Some(next) => {
                tokio::select! {
                    () = tokio::time::sleep_until(next.into()) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// Writes queued frames, as many at a time as are waiting; once told to
/// finish, writes what is left and ends the stream.
async fn write(
    connection: quinn::Connection,
    mut send: quinn::SendStream,
    mut queue: mpsc::UnboundedReceiver<Vec<u8>>,
    finish: Arc<tokio::sync::Notify>,
) {
    let mut batch = Vec::with_capacity(64);
    let mut buffer = Vec::new();
    let mut finishing = false;
    loop {
        if finishing {
            while let Ok(frame) = queue.try_recv() {
                batch.push(frame);
            }
            if batch.is_empty() {
                let _ = send.finish();
                return;
            }
        } else {
            tokio::select! {
                received = queue.recv_many(&mut batch, 256) => {
                    if received == 0 {
                        return;
                    }
                    // Tasks that are ready to run may queue frames too:
                    // letting them first makes one write, and fewer
                    // packets, of what would be several.
                    tokio::task::yield_now().await;
                    while batch.len() < 1024 {
                        let Ok(frame) = queue.try_recv() else { break };
                        batch.push(frame);
                    }
                }
                () = finish.notified() => {
                    finishing = true;
                    continue;
                }
            }
        }
        buffer.clear();
        for frame in batch.drain(..) {
            buffer.extend_from_slice(&frame);
        }
        if let Err(error) = send.write_all(&buffer).await {
            tracing::debug!(%error, "host-to-host stream closed");
            connection.close(PROTOCOL_ERROR.into(), b"write failed");
            return;
        }
    }
}

/// Reads frames until the stream ends; then fails what is pending.
async fn read<E>(shared: Weak<Shared<E>>, link: Arc<Link<E>>, recv: quinn::RecvStream)
where
    E: Serialize + DeserializeOwned + Send + 'static,
{
    let mut frames = Frames::new(recv);
    let ended = loop {
        let frame = match frames.next::<E>().await {
            Ok(frame) => frame,
            Err(StreamEnd::Finished) => {
                // A peer ends its stream only when it leaves the cluster,
                // having answered every request it took: the ones still
                // pending here never ran there, and may go to the actor's
                // next host.
                if let Some(shared) = shared.upgrade() {
                    lock(&shared.departed).insert(link.peer.id.clone());
                }
                for waiter in link.close_pending() {
                    waiter.answer(Ok(Outcome::NotHere));
                }
                break "the peer left".to_owned();
            }
            Err(StreamEnd::Failed(error)) => {
                // A peer that left owing answers on this connection: not to
                // be dialled again either.
                if left_unanswered(&link.connection) {
                    if let Some(shared) = shared.upgrade() {
                        lock(&shared.departed).insert(link.peer.id.clone());
                    }
                }
                break error;
            }
        };
        match frame {
            Ok(Frame::Response(response)) => {
                let waiting = lock(&link.pending).waiting.remove(&response.id);
                if let Some(waiting) = waiting {
                    waiting.waiter.answer(Ok(response.outcome));
                }
            }
            Ok(frame @ (Frame::Request(_) | Frame::Event(_) | Frame::Push(_))) => {
                let Some(shared) = shared.upgrade() else {
                    break "the host is gone".to_owned();
                };
                let Some(inbound) = shared.inbound.upgrade() else {
                    break "the host is gone".to_owned();
                };
                // Counted as unanswered, by the host and on the link, before
                // `closing` is read: `close` sets `closing` before it counts,
                // so either it waits for this request's answer (and fails
                // the link if it waited in vain) or the request is refused
                // here.
                let unanswered = shared.unanswered.clone();
                let link_unanswered = link.unanswered.clone();
                std::sync::atomic::fence(Ordering::SeqCst);
                if shared.closing.load(Ordering::SeqCst) {
                    let id = match &frame {
                        Frame::Request(r) => r.id,
                        Frame::Event(e) => e.id,
                        Frame::Push(p) => p.id,
                        Frame::Response(r) => r.id,
                    };
                    drop(link_unanswered);
                    respond::<E>(&link.writer, id, Outcome::NotHere);
                    continue;
                }
                let responder = |id| Responder {
                    id,
                    writer: link.writer.clone(),
                    _link_unanswered: link_unanswered,
                    _unanswered: unanswered,
                    _error: std::marker::PhantomData,
                };
                match frame {
                    Frame::Request(request) => {
                        let responder = responder(request.id);
                        inbound.request(&link.peer, request, responder).await;
                    }
                    Frame::Event(event) => {
                        let responder = responder(event.id);
                        inbound.event(&link.peer, event, responder).await;
                    }
                    Frame::Push(push) => {
                        let responder = responder(push.id);
                        inbound.push(&link.peer, push, responder).await;
                    }
                    Frame::Response(_) => {}
                }
            }
            Err(error) => {
                tracing::warn!(peer = %link.peer.id, %error, "bad frame from a host");
                link.connection
                    .close(PROTOCOL_ERROR.into(), error.to_string().as_bytes());
                break error.to_string();
            }
        }
    };
    tracing::debug!(peer = %link.peer.id, %ended, "host-to-host connection ended");
    let timed_out = matches!(
        link.connection.close_reason(),
        Some(quinn::ConnectionError::TimedOut)
    );
    link.connection.close(0u32.into(), b"stream ended");
    if let Some(shared) = shared.upgrade() {
        forget(&shared, &link);
        // Silent past the idle timeout: likely dead, for its lease to say.
        if timed_out {
            lock(&shared.unreachable).insert(link.peer.id.clone(), tokio::time::Instant::now());
        }
    }
    for waiter in link.close_pending() {
        waiter.answer(Err(Unanswered::Lost));
    }
}

/// Whether the peer closed `connection` leaving requests on it unanswered.
fn left_unanswered(connection: &quinn::Connection) -> bool {
    matches!(
        connection.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(close))
            if close.error_code == quinn::VarInt::from_u32(LEFT_UNANSWERED)
    )
}

/// How a stream of frames ended.
enum StreamEnd {
    /// The peer finished it between two frames.
    Finished,
    /// It failed, or ended inside a frame.
    Failed(String),
}

/// Splits a stream into frames, reading whatever has arrived at a time:
/// under load one read brings many frames.
struct Frames {
    recv: quinn::RecvStream,
    /// What one read takes, as many chunks as have arrived (up to 32).
    chunks: [Bytes; 32],
    buffer: Vec<u8>,
    /// Where the next frame starts in `buffer`.
    start: usize,
}

impl Frames {
    fn new(recv: quinn::RecvStream) -> Frames {
        Frames {
            recv,
            chunks: std::array::from_fn(|_| Bytes::new()),
            buffer: Vec::new(),
            start: 0,
        }
    }

    /// The next frame, decoded; or how the stream ended.
    async fn next<E: DeserializeOwned>(
        &mut self,
    ) -> Result<Result<Frame<E>, wire::DecodeError>, StreamEnd> {
        loop {
            let available = self.buffer.get(self.start..).unwrap_or_default();
            if let Some(prefix) = available.first_chunk::<4>() {
                let len = wire::frame_len(*prefix).map_err(|e| StreamEnd::Failed(e.to_string()))?;
                if let Some(body) = available.get(4..4 + len) {
                    self.start += 4 + len;
                    return Ok(wire::decode(body));
                }
            }
            self.buffer.drain(..self.start);
            self.start = 0;
            match self.recv.read_chunks(&mut self.chunks).await {
                Ok(Some(read)) => {
                    for chunk in self.chunks.iter_mut().take(read) {
                        self.buffer.extend_from_slice(chunk);
                        *chunk = Bytes::new();
                    }
                }
                Ok(None) if self.buffer.is_empty() => return Err(StreamEnd::Finished),
                Ok(None) => {
                    return Err(StreamEnd::Failed("the stream ended inside a frame".into()))
                }
                Err(error) => return Err(StreamEnd::Failed(error.to_string())),
            }
        }
    }
}

async fn accept<E>(shared: Weak<Shared<E>>)
where
    E: Serialize + DeserializeOwned + Send + 'static,
{
    loop {
        let Some(endpoint) = shared.upgrade().map(|s| s.endpoint.clone()) else {
            return;
        };
        let Some(incoming) = endpoint.accept().await else {
            return;
        };
        tokio::spawn(admit(shared.clone(), incoming));
    }
}

/// Completes the handshake of an incoming connection and takes it if the
/// client's certificate is a live member's.
async fn admit<E>(shared: Weak<Shared<E>>, incoming: quinn::Incoming)
where
    E: Serialize + DeserializeOwned + Send + 'static,
{
    let Ok(connection) = incoming.await else {
        return;
    };
    let fingerprint = connection
        .peer_identity()
        .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
        .and_then(|chain| chain.first().map(|leaf| Fingerprint::of(leaf)));
    let Some(shared) = shared.upgrade() else {
        return;
    };
    let member = match fingerprint {
        Some(fingerprint) => match shared.membership.members().await {
            Ok(members) => members
                .into_iter()
                .find(|m| m.fingerprint == fingerprint.to_string()),
            Err(error) => {
                tracing::warn!(%error, "cannot check a connecting host's membership");
                None
            }
        },
        None => None,
    };
    let Some(member) = member else {
        tracing::warn!(
            remote = %connection.remote_address(),
            "refused a host-to-host connection from a process that is not a member"
        );
        connection.close(NOT_A_MEMBER.into(), b"not a member of this cluster");
        return;
    };
    let Ok((send, recv)) = connection.accept_bi().await else {
        return;
    };
    let id = member.id.clone();
    // Registered before its reader starts, so that no request on it is
    // served while `disconnect` could not find it.
    open_link(&shared, member, connection, send, recv, |link| {
        // The accepted connection is also this host's link to the peer,
        // unless it has one already.
        let cell = lock(&shared.links).entry(id).or_default().clone();
        if let Err(
            tokio::sync::SetError::AlreadyInitializedError(link)
            | tokio::sync::SetError::InitializingError(link),
        ) = cell.set(link.clone())
        {
            // The two hosts dialled each other at once: this connection
            // still carries the peer's calls, and ends with the others on
            // leaving.
            let mut extra = lock(&shared.extra);
            extra.retain(|l| l.connection.close_reason().is_none());
            extra.push(link);
        }
    });
}

/// Asks every client for a certificate and checks the handshake signature
/// against it; whether the certificate is a member's is checked once the
/// handshake is done, against the live leases.
#[derive(Debug)]
struct MemberCertificate {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for MemberCertificate {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
