//! A host as a member of a cluster: where each actor runs, and calls that
//! cross to the host that runs it.
//!
//! The local directory stays the one door every call goes through. In a
//! cluster, the task the directory starts for an actor it has no entry for
//! first **resolves** the actor's owner in the placement directory (Redis):
//!
//! * owned by no live host: the task places it — on the less loaded of two
//!   random live hosts serving the type, or on this host with
//!   `prefer-local` — with one atomic claim, which every host racing for the
//!   same actor loses to the same winner;
//! * owned by this host: the task claims it again (a new epoch, so a release
//!   by an earlier activation here cannot undo it) and runs the activation;
//! * owned by another live host: the task becomes a **forwarder**: it reads
//!   the mailbox like an activation and sends each message to the owner over
//!   the [`Transport`], arguments in the value encoding. Calls queued behind
//!   one another go out in order on one stream, so per-sender order holds.
//!
//! A forwarder leaves — and its successor resolves again — when the owner
//! answers that it does not run the actor (the entry was stale), when the
//! owner's lease lapses (its pending calls fail with `host-unreachable` at
//! once), or when it has been idle as long as an activation would be. A
//! request from another host is served only if this host owns the actor
//! (an activation here, or the placement entry names this host); otherwise
//! it is answered [`Outcome::NotHere`], so a stale entry never makes a
//! message hop twice.
//!
//! Deadlines cross as the caller's remaining time, and call chains as their
//! list of actors, so deadlines and cycle detection hold across hosts. A
//! host whose lease could not be renewed in time is fenced: it aborts every
//! activation and refuses requests, before any other host can take its
//! actors over.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use dashmap::DashMap;
use grove_cluster::membership::{JoinError, Lease, LeaseTiming, Member, Membership};
use grove_cluster::placement::{Owner, Placement};
use grove_cluster::transport::{
    self, BoxFuture, Inbound, Responder, Transport, TransportConfig, TransportError, Unanswered,
    Waiter,
};
use grove_cluster::versions::{Publish, Published, Rollback, Versions};
use grove_cluster::wire::{
    Disconnected, Event, EventKind, Outcome, Push, PushAction, Refusal, Request,
};
use grove_cluster::RedisUnavailable;
use grove_core::{chain, Message};
use grove_gateway_quic::{SendError, Sessions};
use grove_values::wire::{self as values_wire, DecodeLimits};
use tokio::sync::{mpsc, oneshot, watch};
use wasmtime::component::Val;

use crate::activation;
use crate::bindings::DisconnectReason;
use crate::directory::{Directory, Slot};
use crate::error::{CallError, RejectedCall, Unavailable};
use crate::imports::RemoteSessions;
use crate::mailbox::{Answer, CallMessage, Envelope, RemoteCaller, Reply, SessionEvent};
use crate::plugin::{Function, Plugin};
use crate::reminders::FiringGate;
use crate::state::Fence;
use crate::ActorRef;
use crate::{DeployError, Deployed};

/// How an actor type is placed when it has no live owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// The less loaded (fewer activations) of two random live hosts that
    /// serve the type.
    #[default]
    TwoChoices,
    /// The host that called it first, if it serves the type.
    PreferLocal,
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(text: &str) -> Result<Strategy, String> {
        match text {
            "two-choices" => Ok(Strategy::TwoChoices),
            "prefer-local" => Ok(Strategy::PreferLocal),
            other => Err(format!(
                "unknown placement strategy `{other}`: use two-choices or prefer-local"
            )),
        }
    }
}

/// How a host joins a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The cluster's name: hosts sharing a Redis and a name form a cluster.
    pub name: String,
    /// The Redis the cluster coordinates through, e.g. `redis://10.0.0.2/`.
    pub redis: String,
    /// The UDP address host-to-host QUIC listens on.
    pub listen: SocketAddr,
    /// The address the other hosts dial; `listen` if `None` (which then
    /// must not be a wildcard address).
    pub advertise: Option<SocketAddr>,
    /// Lease timing: the TTL bounds how long a dead host's actors stay
    /// unreachable.
    pub timing: LeaseTiming,
    /// The placement of actor types not named in `placement_by_type`.
    pub placement: Strategy,
    /// Per actor type placement.
    pub placement_by_type: HashMap<String, Strategy>,
    /// The plugins directory, where versions deployed from the cluster are
    /// kept for the next start.
    pub plugins_dir: Option<PathBuf>,
}

impl ClusterConfig {
    /// A cluster `name` in the Redis at `redis`, listening on `listen`, with
    /// default timing and placement.
    pub fn new(name: &str, redis: &str, listen: SocketAddr) -> ClusterConfig {
        ClusterConfig {
            name: name.to_owned(),
            redis: redis.to_owned(),
            listen,
            advertise: None,
            timing: LeaseTiming::default(),
            placement: Strategy::default(),
            placement_by_type: HashMap::new(),
            plugins_dir: None,
        }
    }
}

/// Why a host could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The Redis URL is not one.
    #[error("bad Redis URL {url}: {message}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// Redis could not be reached.
    #[error(transparent)]
    Redis(#[from] RedisUnavailable),
    /// The lease could not be taken.
    #[error("cannot join the cluster: {0}")]
    Join(#[from] JoinError),
    /// The host-to-host transport could not start.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The address others would dial is a wildcard.
    #[error("--advertise is needed: other hosts cannot dial the wildcard address {0}")]
    Wildcard(SocketAddr),
    /// The host is already in a cluster.
    #[error("this host has joined a cluster already")]
    AlreadyJoined,
}

/// Why a version deployed here was not published to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Redis could not be reached: the version runs on this host only.
    #[error("deployed on this host only: cannot publish it to the cluster: {0}")]
    Redis(#[from] RedisUnavailable),
    /// The cluster rolled the version back while it was deployed here (a
    /// forced deploy publishes it anyway); this host went back too.
    #[error("version {version} of `{actor_type}` was rolled back in the cluster: {reason}; every host runs {runs} (deploy with --force to try it again)")]
    RolledBack {
        /// The actor type.
        actor_type: String,
        /// The version deployed here.
        version: String,
        /// The version the cluster runs.
        runs: String,
        /// Why it was rolled back.
        reason: String,
    },
}

/// What a host knows of its cluster, as `GET /v1/cluster` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterStatus {
    /// This host's id.
    pub host: String,
    /// Every live host, by id, as of the last look at the leases.
    pub members: Vec<MemberStatus>,
}

/// One live host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberStatus {
    /// What it publishes in its lease.
    #[serde(flatten)]
    pub member: Member,
    /// Milliseconds since it last renewed its lease.
    pub lease_age_ms: u64,
}

/// Where a call to an actor goes.
enum Route {
    /// An activation here, under this claim.
    Here(Owner),
    /// The live host that runs it.
    There(Member),
}

/// What the host's parts need of the cluster. Shared behind an `Arc`.
pub(crate) struct Node {
    me: String,
    placement: Placement,
    membership: Membership,
    transport: Transport<CallError>,
    roster: watch::Receiver<Arc<Vec<Member>>>,
    /// Activations on this host, with the epoch of their claim.
    local: DashMap<ActorRef, u64>,
    fenced: AtomicBool,
    /// Leaving: new activations go to the other hosts.
    draining: AtomicBool,
    strategy: Strategy,
    by_type: HashMap<String, Strategy>,
    directory: Arc<Directory>,
    /// The host's plugins, to encode and decode values by their WIT types.
    plugins: Weak<dyn Plugins>,
    /// What the transport hands requests to.
    _late: Arc<dyn Inbound<CallError>>,
    /// The sessions of this host's gateway.
    sessions: Sessions,
    /// The plugin versions the cluster runs.
    versions: Versions,
    /// Where versions deployed from the cluster are kept.
    plugins_dir: Option<PathBuf>,
    /// Versions the cluster runs that could not be deployed here.
    unfollowable: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The version each type runs in the cluster, as last seen.
    published: std::sync::Mutex<HashMap<String, Published>>,
    /// Held while a version or a rollback of this host is published.
    publishing: tokio::sync::Mutex<()>,
}

/// What the cluster needs of its host.
pub(crate) trait Plugins: Send + Sync + 'static {
    /// The plugin serving `actor_type`.
    fn plugin(&self, actor_type: &str) -> Result<Arc<Plugin>, CallError>;
    /// Each plugin served, as `type@version-prefix`, for the lease.
    fn served(&self) -> Vec<String>;
    /// Whether `version` of `actor_type` was deployed here and rolled back.
    fn rolled_back(&self, actor_type: &str, version: &str) -> bool;
    /// Whether a version of `actor_type` was deployed here moments ago (and
    /// is about to be published).
    fn just_deployed(&self, actor_type: &str) -> bool;
    /// Every plugin served.
    fn all(&self) -> Vec<Arc<Plugin>>;
    /// Deploys `component`, a version another host published (forced: that
    /// host checked it), keeping it in `keep_in`.
    fn follow(&self, component: &[u8], keep_in: Option<PathBuf>) -> Result<Deployed, DeployError>;
    /// Loads the reminders other hosts stored since this host last looked,
    /// so that the reminders of a host that left are fired here too.
    fn reload_reminders(&self) -> BoxFuture<'_, ()>;
}

/// A host's membership of its cluster, from [`crate::Host::join_cluster`].
pub struct Cluster {
    node: Arc<Node>,
    lease: Arc<Lease>,
    tasks: Vec<tokio::task::AbortHandle>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Cluster {
    /// Joins: starts the host-to-host transport, takes a lease, and starts
    /// keeping the view of the members fresh.
    pub(crate) async fn join(
        config: ClusterConfig,
        directory: Arc<Directory>,
        plugins: Weak<dyn Plugins>,
        served: Vec<String>,
        sessions: Sessions,
    ) -> Result<(Cluster, Arc<Node>), ClusterError> {
        let bad_url = |message: String| ClusterError::BadUrl {
            url: config.redis.clone(),
            message,
        };
        let client =
            redis::Client::open(config.redis.as_str()).map_err(|e| bad_url(e.to_string()))?;
        // Bounded like the state store's: a stalled Redis fails a lookup
        // rather than holding a call (or the transport's reader) past its
        // deadline.
        let redis_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(1))
            .set_response_timeout(Duration::from_secs(2))
            .set_number_of_retries(2)
            .set_factor(100)
            .set_max_delay(1_000);
        let conn = redis::aio::ConnectionManager::new_with_config(client, redis_config)
            .await
            .map_err(RedisUnavailable)?;
        let membership = Membership::new(conn.clone(), &config.name);
        let versions = Versions::new(conn.clone(), &config.name);
        let placement = Placement::new(conn, &config.name);
        let advertise = config.advertise.unwrap_or(config.listen);
        if advertise.ip().is_unspecified() {
            return Err(ClusterError::Wildcard(advertise));
        }
        // The transport starts before the node it serves exists (the node
        // holds the transport): requests reach the node through `late`.
        let slot: Arc<std::sync::OnceLock<Weak<Node>>> = Arc::default();
        let late: Arc<dyn Inbound<CallError>> = Arc::new(LateInbound(slot.clone()));
        let mut transport_config = TransportConfig::new(config.listen)?;
        // A connection to a host killed outright goes quiet; giving up on it
        // well inside the lease's TTL lets calls to its actors wait on its
        // lease alone.
        transport_config.idle_timeout = config.timing.ttl / 2;
        let transport =
            Transport::start(transport_config, membership.clone(), Arc::downgrade(&late))?;
        let address = match config.advertise {
            Some(addr) => addr,
            None => transport
                .local_addr()
                .map_err(|source| TransportError::Bind {
                    addr: config.listen,
                    source,
                })?,
        };
        let me = format!("{:016x}", fastrand::u64(..));
        let member = Member {
            id: me.clone(),
            address: address.to_string(),
            fingerprint: transport.fingerprint().to_string(),
            activations: 0,
            plugins: served,
            started_ms: unix_ms(),
            renewed_ms: unix_ms(),
            draining: false,
            number: membership.free_number().await?,
        };
        sessions.set_origin(member.number);
        let lease = Arc::new(membership.join(member.clone(), config.timing).await?);
        let (roster_tx, roster) = watch::channel(Arc::new(membership.members().await?));
        let node = Arc::new(Node {
            me,
            placement,
            membership: membership.clone(),
            transport,
            roster,
            local: DashMap::new(),
            fenced: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            strategy: config.placement,
            by_type: config.placement_by_type,
            directory,
            plugins,
            _late: late,
            sessions,
            versions,
            plugins_dir: config.plugins_dir.clone(),
            unfollowable: std::sync::Mutex::default(),
            published: std::sync::Mutex::default(),
            publishing: tokio::sync::Mutex::default(),
        });
        let _ = slot.set(Arc::downgrade(&node));
        let every = config.timing.renew_every;
        let tasks = vec![
            tokio::spawn(watch_roster(Arc::downgrade(&node), roster_tx, every)).abort_handle(),
            tokio::spawn(guard(Arc::downgrade(&node), lease.clone(), every)).abort_handle(),
            tokio::spawn(follow_versions(Arc::downgrade(&node), FOLLOW_EVERY)).abort_handle(),
        ];
        tracing::info!(
            host = %node.me,
            cluster = %config.name,
            %address,
            fingerprint = %member.fingerprint,
            "joined the cluster"
        );
        Ok((
            Cluster {
                node: node.clone(),
                lease,
                tasks,
            },
            node,
        ))
    }

    /// This host's id in the cluster (new at every start).
    pub fn id(&self) -> &str {
        &self.node.me
    }

    /// The address other hosts dial.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.node.transport.local_addr()
    }

    /// The live members, as of the last look (every renewal interval).
    pub fn members(&self) -> Arc<Vec<Member>> {
        self.node.roster.borrow().clone()
    }

    /// Resolves once this host is fenced: its lease could not be renewed in
    /// time, its activations have been aborted, and it serves no actor. A
    /// fenced host must leave (the process exits, or joins again).
    pub async fn fenced(&self) {
        self.lease.fenced().await;
    }

    /// Hands every actor this host runs to the other hosts, before
    /// [`crate::Host::shutdown`] and [`Cluster::leave`]: the lease says the
    /// host is draining (no host places actors here any more), each
    /// activation deactivates after its turn, saving its state, and whatever
    /// is queued for it — and every later call — goes to its new host. Waits
    /// until no activation is left here, or `timeout`; returns how many
    /// were left then. With a single host (no other to take over), nothing
    /// moves.
    pub async fn drain(&self, timeout: Duration) -> usize {
        let node = &self.node;
        let others = node
            .roster
            .borrow()
            .iter()
            .any(|m| m.id != node.me && !m.draining);
        if !others {
            return node.local.len();
        }
        node.draining.store(true, Ordering::Release);
        self.lease.publish(|m| m.draining = true);
        // Placement on the other hosts sees the flag at their next look at
        // the leases; an actor placed here meanwhile moves like the rest.
        let deadline = Instant::now() + timeout;
        loop {
            // Actors of a type no other host serves stay until shutdown.
            let movable: Vec<ActorRef> = node
                .local
                .iter()
                .map(|e| e.key().clone())
                .filter(|actor| node.choose(actor) != node.me)
                .collect();
            if movable.is_empty() || Instant::now() >= deadline {
                return node.local.len();
            }
            for actor in &movable {
                node.directory.stop_one(actor);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Leaves the cluster: ends the host-to-host connections, then deletes
    /// the lease (the others see this host gone at once). Deactivate the
    /// actors first ([`crate::Host::shutdown`]), so their state is saved and
    /// their placement released.
    ///
    /// The connections end first because a host that sees a lease gone drops
    /// its connection to that host, failing the calls on it as lost: ended
    /// cleanly first, the calls still in flight that this host did not take
    /// come back `NotHere` and go to another host. (A connection on which
    /// this host took a call and could not answer it fails those calls as
    /// lost either way: [`grove_cluster::transport::Transport::close`].)
    pub async fn leave(self) -> Result<(), RedisUnavailable> {
        for task in &self.tasks {
            task.abort();
        }
        self.node.transport.close(Duration::from_secs(2)).await;
        self.lease.leave().await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The transport's inbound before the node exists.
struct LateInbound(Arc<std::sync::OnceLock<Weak<Node>>>);

/// A request from another host, checked and ready for the local directory.
struct Accepted {
    actor: ActorRef,
    /// The message, its reply still to be routed.
    message: CallMessage,
    /// How long the caller waits.
    timeout: Duration,
    /// For a call (not a one-way send): the type of the function's result.
    result: Option<Option<wasmtime::component::Type>>,
}

/// A call from another host, answered on that host's connection.
struct AnswerToHost {
    actor: ActorRef,
    result_type: Option<wasmtime::component::Type>,
    /// Taken when answered.
    responder: Option<Responder<CallError>>,
}

impl RemoteCaller for AnswerToHost {
    fn answer(mut self: Box<Self>, answer: Answer) {
        if let Some(responder) = self.responder.take() {
            responder.respond(match answer {
                Ok(val) => encode_result(&self.actor, val, self.result_type.as_ref()),
                Err(error) => Outcome::Failed(error),
            });
        }
    }
}

impl Drop for AnswerToHost {
    fn drop(&mut self) {
        if let Some(responder) = self.responder.take() {
            responder.respond(Outcome::Failed(CallError::Unavailable(
                Unavailable::ActivationFailed {
                    actor: self.actor.to_string(),
                    message: "the activation ended before answering".into(),
                },
            )));
        }
    }
}

/// How often the lease of a host that does not answer is looked at, while
/// calls to its actors wait for it to answer or lapse.
const SUSPECT_POLL: Duration = Duration::from_millis(50);

/// How long an actor's send to a session on another host waits for that
/// host's answer.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

fn refusal(error: SendError) -> Refusal {
    match error {
        SendError::UnknownSession(_) => Refusal::UnknownSession,
        SendError::TooLarge { limit, .. } => {
            Refusal::TooLarge(u32::try_from(limit).unwrap_or(u32::MAX))
        }
        SendError::SlowConsumer(_) => Refusal::SlowConsumer,
        SendError::DatagramsUnsupported(_) => Refusal::DatagramsUnsupported,
    }
}

fn send_error(session: u64, refusal: Refusal) -> SendError {
    match refusal {
        Refusal::UnknownSession => SendError::UnknownSession(session),
        Refusal::TooLarge(limit) => SendError::TooLarge {
            len: 0,
            limit: limit as usize,
        },
        Refusal::SlowConsumer => SendError::SlowConsumer(session),
        Refusal::DatagramsUnsupported => SendError::DatagramsUnsupported(session),
    }
}

fn disconnect_reason(reason: Disconnected) -> DisconnectReason {
    match reason {
        Disconnected::ClientClosed(r) => DisconnectReason::ClientClosed(r),
        Disconnected::TimedOut => DisconnectReason::TimedOut,
        Disconnected::ClosedByActor(r) => DisconnectReason::ClosedByActor(r),
        Disconnected::Kicked(r) => DisconnectReason::Kicked(r),
        Disconnected::HostShutdown => DisconnectReason::HostShutdown,
    }
}

fn disconnected(reason: &DisconnectReason) -> Disconnected {
    match reason {
        DisconnectReason::ClientClosed(r) => Disconnected::ClientClosed(r.clone()),
        DisconnectReason::TimedOut => Disconnected::TimedOut,
        DisconnectReason::ClosedByActor(r) => Disconnected::ClosedByActor(r.clone()),
        DisconnectReason::Kicked(r) => Disconnected::Kicked(r.clone()),
        DisconnectReason::HostShutdown => Disconnected::HostShutdown,
    }
}

impl RemoteSessions for Node {
    fn send(
        &self,
        sessions: Vec<u64>,
        payload: Bytes,
        reliable: bool,
    ) -> BoxFuture<'_, Result<u32, SendError>> {
        Box::pin(async move {
            let first = sessions.first().copied().unwrap_or_default();
            let one = sessions.len() == 1;
            let action = PushAction::Send {
                payload: payload.to_vec(),
                reliable,
            };
            match self.push_to(sessions, action).await {
                Some((_, Some(refused))) if one => Err(send_error(first, refused)),
                Some((0, None)) if one => Err(SendError::UnknownSession(first)),
                Some((done, _)) => Ok(done),
                // Its host is gone, and the session with it.
                None if one => Err(SendError::UnknownSession(first)),
                None => Ok(0),
            }
        })
    }

    fn close(&self, session: u64, reason: String) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let closed = self
                .push_to(vec![session], PushAction::Close { reason })
                .await;
            matches!(closed, Some((1, _)))
        })
    }
}

impl FiringGate for Node {
    fn claim<'a>(
        &'a self,
        actor: &'a ActorRef,
        name: &'a str,
        at_ms: u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool, String>> + Send + 'a>>
    {
        Box::pin(async move {
            let live: Vec<String> = self.roster.borrow().iter().map(|m| m.id.clone()).collect();
            self.placement
                .claim_firing(actor, name, at_ms, &self.me, &live)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

impl Inbound<CallError> for LateInbound {
    fn request(
        &self,
        _from: &Member,
        request: Request,
        responder: Responder<CallError>,
    ) -> BoxFuture<'_, ()> {
        let node = self.0.get().and_then(Weak::upgrade);
        Box::pin(async move {
            match node {
                Some(node) => node.serve(request, responder).await,
                // Joining, or gone: another host will do.
                None => responder.respond(Outcome::NotHere),
            }
        })
    }

    fn event(
        &self,
        _from: &Member,
        event: Event,
        responder: Responder<CallError>,
    ) -> BoxFuture<'_, ()> {
        let node = self.0.get().and_then(Weak::upgrade);
        Box::pin(async move {
            match node {
                Some(node) => node.serve_event(event, responder).await,
                // Joining, or gone: another host will do.
                None => responder.respond(Outcome::NotHere),
            }
        })
    }

    fn push(
        &self,
        _from: &Member,
        push: Push,
        responder: Responder<CallError>,
    ) -> BoxFuture<'_, ()> {
        match self.0.get().and_then(Weak::upgrade) {
            Some(node) => node.serve_push(push, responder),
            None => responder.respond(Outcome::NotHere),
        }
        Box::pin(async {})
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How often a host looks at the versions the cluster runs.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// Deploys here each version the cluster runs that this host does not, as
/// another host published it; a version rolled back here is left alone.
async fn follow_versions(node: Weak<Node>, every: Duration) {
    if let Some(node) = node.upgrade() {
        node.store_running().await;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        if let Err(error) = node.follow().await {
            tracing::warn!(%error, "cannot read the versions the cluster runs");
        }
    }
}

/// Publishes the host's load with every renewal until the host is fenced;
/// then fences it: aborts every activation.
async fn guard(node: Weak<Node>, lease: Arc<Lease>, every: Duration) {
    loop {
        tokio::select! {
            () = lease.fenced() => break,
            () = tokio::time::sleep(every) => {
                let Some(node) = node.upgrade() else { return };
                let activations = node.local.len() as u64;
                let served = node.plugins.upgrade().map(|p| p.served());
                lease.publish(|m| {
                    m.activations = activations;
                    if let Some(served) = served {
                        m.plugins = served;
                    }
                });
            }
        }
    }
    if let Some(node) = node.upgrade() {
        node.fence().await;
    }
}

/// Refreshes the members every `every`; drops the connections of hosts
/// that left.
async fn watch_roster(node: Weak<Node>, roster: watch::Sender<Arc<Vec<Member>>>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(node) = node.upgrade() else { return };
        let members = match node.membership.members().await {
            Ok(members) => members,
            Err(error) => {
                tracing::warn!(%error, "cannot read the cluster's members");
                continue;
            }
        };
        let before = roster.borrow().clone();
        let mut left = false;
        for gone in before
            .iter()
            .filter(|m| !members.iter().any(|n| n.id == m.id))
        {
            tracing::info!(host = %gone.id, address = %gone.address, "host left the cluster");
            node.transport.disconnect(&gone.id);
            left = true;
        }
        // Loads change at every look; only a host joining or leaving wakes
        // the forwarders watching the roster.
        roster.send_if_modified(|current| {
            let joined_or_left = current.len() != members.len()
                || current.iter().zip(&members).any(|(a, b)| a.id != b.id);
            *current = Arc::new(members);
            joined_or_left
        });
        if left {
            if let Some(host) = node.plugins.upgrade() {
                host.reload_reminders().await;
            }
        }
    }
}

impl Node {
    /// Publishes a version deployed here: the cluster runs it from now on,
    /// unless it was rolled back meanwhile, here or (unless `force`) in the
    /// cluster. A version the cluster rolled back while it deployed here is
    /// not published, and this host goes back to what the cluster runs.
    pub(crate) async fn publish(
        &self,
        deployed: &Deployed,
        component: &[u8],
        force: bool,
    ) -> Result<(), PublishError> {
        let (actor_type, version) = (&deployed.actor_type, &deployed.content_hash);
        self.versions.store(version, component).await?;
        // A rollback here is published under the same lock: whichever comes
        // first, the cluster ends up where this host is.
        let publishing = self.publishing.lock().await;
        let rolled_back = self
            .plugins
            .upgrade()
            .is_some_and(|p| p.rolled_back(actor_type, version));
        if rolled_back {
            return Ok(());
        }
        match self.versions.publish(actor_type, version, force).await? {
            Publish::Published(record) => {
                self.remember(actor_type, record);
                Ok(())
            }
            Publish::RolledBack(record) => {
                self.remember(actor_type, record.clone());
                // Compiling the cluster's version may take a while: other
                // types' publications need not wait for it.
                drop(publishing);
                self.follow_one(actor_type, &record.version).await?;
                Err(PublishError::RolledBack {
                    actor_type: actor_type.clone(),
                    version: version.clone(),
                    runs: record.version,
                    reason: record.reason.unwrap_or_default(),
                })
            }
        }
    }

    /// Why the cluster rolled back `version` of `actor_type`, if it did
    /// and has published no other version since, as this host last saw.
    pub(crate) fn rolled_back(&self, actor_type: &str, version: &str) -> Option<String> {
        lock(&self.published)
            .get(actor_type)
            .filter(|record| record.rolled_back.as_deref() == Some(version))
            .map(|record| record.reason.clone().unwrap_or_default())
    }

    /// Keeps `record` as the type's, unless a newer one is known already
    /// (reads of the cluster's versions race this host's publications).
    fn remember(&self, actor_type: &str, record: Published) {
        let mut published = lock(&self.published);
        let newer = published
            .get(actor_type)
            .is_some_and(|known| known.generation > record.generation);
        if !newer {
            published.insert(actor_type.to_owned(), record);
        }
    }

    /// Stores the components this host runs, so that any host can go back
    /// to one of them (a rollback publishes only the version).
    async fn store_running(&self) {
        let Some(plugins) = self.plugins.upgrade() else {
            return;
        };
        for plugin in plugins.all() {
            let Ok(component) = tokio::fs::read(&plugin.file).await else {
                continue;
            };
            if crate::engine::content_hash(&component) != plugin.content_hash {
                continue;
            }
            if let Err(error) = self.versions.store(&plugin.content_hash, &component).await {
                tracing::warn!(actor_type = %plugin.actor_type, %error, "cannot store the component in the cluster");
            }
        }
    }

    /// Publishes that `actor_type` went back here from `failed` to
    /// `back_to`: the others follow, unless the cluster runs a newer
    /// version by now (which this host then follows).
    pub(crate) async fn publish_rollback(
        &self,
        actor_type: &str,
        failed: &str,
        back_to: &str,
        reason: &str,
    ) {
        let _publishing = self.publishing.lock().await;
        match self
            .versions
            .roll_back(actor_type, failed, back_to, reason)
            .await
        {
            Ok(Rollback::RolledBack(record)) => self.remember(actor_type, record),
            Ok(Rollback::Superseded(record)) => {
                tracing::info!(%actor_type, version = %record.version, "the cluster runs a newer version than the one rolled back here");
                self.remember(actor_type, record);
            }
            Err(error) => {
                tracing::warn!(%actor_type, %error, "cannot publish a rollback to the cluster")
            }
        }
    }

    /// Deploys each version the cluster runs that this host does not.
    async fn follow(&self) -> Result<(), RedisUnavailable> {
        let Some(plugins) = self.plugins.upgrade() else {
            return Ok(());
        };
        let current = self.versions.current().await?;
        for (actor_type, record) in &current {
            self.remember(actor_type, record.clone());
        }
        for (actor_type, record) in current {
            if plugins.rolled_back(&actor_type, &record.version)
                || plugins.just_deployed(&actor_type)
            {
                continue;
            }
            self.follow_one(&actor_type, &record.version).await?;
        }
        Ok(())
    }

    /// Deploys `version` of `actor_type`, as the cluster runs it, unless
    /// this host runs it already or cannot run it.
    async fn follow_one(&self, actor_type: &str, version: &str) -> Result<(), RedisUnavailable> {
        let Some(plugins) = self.plugins.upgrade() else {
            return Ok(());
        };
        if plugins
            .plugin(actor_type)
            .is_ok_and(|p| p.content_hash == version)
            || lock(&self.unfollowable).contains(version)
        {
            return Ok(());
        }
        let Some(component) = self.versions.component(version).await? else {
            tracing::warn!(%actor_type, %version, "the cluster runs a version whose component is not stored");
            return Ok(());
        };
        let keep_in = self.plugins_dir.clone();
        let deployed =
            tokio::task::spawn_blocking(move || plugins.follow(&component, keep_in)).await;
        match deployed {
            Ok(Ok(deployed)) => tracing::info!(
                %actor_type,
                %version,
                moving = deployed.moving,
                "deployed the version the cluster runs"
            ),
            Ok(Err(error)) => {
                tracing::error!(%actor_type, %version, "cannot deploy the version the cluster runs: {error}");
                lock(&self.unfollowable).insert(version.to_owned());
            }
            Err(error) => tracing::error!(%actor_type, %error, "deploy failed"),
        }
        Ok(())
    }

    fn unavailable(&self, actor: &ActorRef, error: impl std::fmt::Display) -> CallError {
        CallError::Unavailable(Unavailable::ActivationFailed {
            actor: actor.to_string(),
            message: format!("the cluster's placement directory: {error}"),
        })
    }

    fn plugin(&self, actor_type: &str) -> Result<Arc<Plugin>, CallError> {
        match self.plugins.upgrade() {
            Some(plugins) => plugins.plugin(actor_type),
            None => Err(CallError::Unavailable(Unavailable::ShuttingDown)),
        }
    }

    /// The host's view of the cluster.
    pub(crate) fn status(&self) -> ClusterStatus {
        let now = unix_ms();
        ClusterStatus {
            host: self.me.clone(),
            members: self
                .roster
                .borrow()
                .iter()
                .map(|member| MemberStatus {
                    member: member.clone(),
                    lease_age_ms: now.saturating_sub(member.renewed_ms),
                })
                .collect(),
        }
    }

    fn is_fenced(&self) -> bool {
        self.fenced.load(Ordering::Acquire)
    }

    /// Stops serving: refuses requests and aborts every activation, before
    /// the lease can lapse and another host take the actors over.
    async fn fence(&self) {
        self.fenced.store(true, Ordering::Release);
        self.directory.begin_stop();
        let aborted = self.directory.wait_empty(Instant::now()).await;
        tracing::error!(
            host = %self.me,
            aborted,
            "fenced: the lease could not be renewed in time; every activation was stopped"
        );
    }

    /// A live member by id, looking in Redis if the last view does not have
    /// it (it may have joined since).
    async fn live(&self, id: &str) -> Result<Option<Member>, RedisUnavailable> {
        let known = self.roster.borrow().iter().find(|m| m.id == id).cloned();
        // A host that ended its stream to this one, or could not be dialled
        // just now, may be gone: its lease says.
        if let Some(member) = known.filter(|_| !self.transport.is_suspect(id)) {
            return Ok(Some(member));
        }
        let members = self.membership.members().await?;
        Ok(members.into_iter().find(|m| m.id == id))
    }

    /// Where `actor` should be placed now.
    fn choose(&self, actor: &ActorRef) -> String {
        let roster = self.roster.borrow().clone();
        let prefix = format!("{}@", actor.actor_type);
        let draining = self.draining.load(Ordering::Acquire);
        let serving: Vec<&Member> = roster
            .iter()
            .filter(|m| m.plugins.iter().any(|p| p.starts_with(&prefix)))
            .filter(|m| !(m.draining || (draining && m.id == self.me)))
            .filter(|m| !self.transport.has_departed(&m.id))
            .collect();
        let strategy = self
            .by_type
            .get(&*actor.actor_type)
            .copied()
            .unwrap_or(self.strategy);
        let me_serving = serving.iter().any(|m| m.id == self.me);
        match (strategy, serving.as_slice()) {
            (_, []) => self.me.clone(),
            (_, [only]) => only.id.clone(),
            (Strategy::PreferLocal, _) if me_serving => self.me.clone(),
            _ => {
                let a = fastrand::usize(..serving.len());
                let mut b = fastrand::usize(..serving.len() - 1);
                if b >= a {
                    b += 1;
                }
                match (serving.get(a), serving.get(b)) {
                    (Some(a), Some(b)) if b.activations < a.activations => b.id.clone(),
                    (Some(a), _) => a.id.clone(),
                    _ => self.me.clone(),
                }
            }
        }
    }

    /// Finds or places the owner of `actor`, for a directory entry that has
    /// no activation behind it yet.
    async fn resolve(&self, actor: &ActorRef) -> Result<Route, CallError> {
        let fail = |e: RedisUnavailable| self.unavailable(actor, e);
        let mut current = self.placement.lookup(actor).await.map_err(fail)?;
        // A claim can name a host that has just died (placed there by a
        // host that had not seen it go): then it is replaced in turn.
        for _ in 0..4 {
            let replacing = match current {
                // Claimed anew: an earlier activation here may still be
                // releasing the old claim.
                Some(owner) if owner.host == self.me => Some(owner),
                Some(owner) => match self.live(&owner.host).await.map_err(fail)? {
                    Some(member) => {
                        if self.transport.is_suspect(&member.id) {
                            // Alive by its lease, but not answering: look
                            // at the lease again shortly rather than at once.
                            tokio::time::sleep(SUSPECT_POLL).await;
                        }
                        return Ok(Route::There(member));
                    }
                    None => Some(owner),
                },
                None => None,
            };
            let draining = self.draining.load(Ordering::Acquire);
            let target = match &replacing {
                Some(owner) if owner.host == self.me && !draining => self.me.clone(),
                _ => self.choose(actor),
            };
            let owner = self
                .placement
                .claim(actor, &target, replacing.as_ref())
                .await
                .map_err(fail)?;
            if owner.host == self.me {
                return Ok(Route::Here(owner));
            }
            current = Some(owner);
        }
        Err(CallError::Unavailable(Unavailable::ActivationFailed {
            actor: actor.to_string(),
            message: "no live host could be claimed for it; the cluster is changing".into(),
        }))
    }

    /// Serves a request from another host.
    async fn serve(&self, request: Request, responder: Responder<CallError>) {
        let accepted = match self.accept(request).await {
            Ok(accepted) => accepted,
            Err(outcome) => return responder.respond(outcome),
        };
        let Accepted {
            actor,
            mut message,
            timeout,
            result,
        } = accepted;
        let Some(result_type) = result else {
            // A one-way send is answered once queued, in order with the
            // sends behind it.
            let queued = self
                .directory
                .deliver(&actor, Envelope::Call(message), true)
                .await;
            return responder.respond(match queued {
                Ok(()) => Outcome::Queued,
                Err(error) => Outcome::Failed(error),
            });
        };
        let caller = AnswerToHost {
            actor: actor.clone(),
            result_type,
            responder: Some(responder),
        };
        message.reply = Some(Reply::remote(timeout, Box::new(caller)));
        // Queued at once in the common case; a call that must wait for room
        // waits aside, not on the connection's reader.
        if let Err(envelope) = self.directory.try_deliver(&actor, Envelope::Call(message)) {
            let directory = self.directory.clone();
            tokio::spawn(async move {
                // An undelivered call is answered with the error.
                let _ = directory.deliver(&actor, envelope, true).await;
            });
        }
    }

    /// Whether a message for `actor` from another host may be served here:
    /// `Err` with the answer to give otherwise.
    async fn owns(&self, actor: &ActorRef) -> Result<(), Outcome<CallError>> {
        if self.local.contains_key(actor) {
            return Ok(());
        }
        match self.placement.lookup(actor).await {
            Ok(Some(owner)) if owner.host == self.me => {
                let leaving = self.draining.load(Ordering::Acquire) || self.directory.is_stopping();
                if leaving {
                    // Placed here just before the drain: place it on
                    // another host, and send the caller there.
                    let target = self.choose(actor);
                    if target == self.me {
                        // No other host serves the type: it stays here.
                        return Ok(());
                    }
                    if let Err(error) = self.placement.claim(actor, &target, Some(&owner)).await {
                        return Err(Outcome::Failed(self.unavailable(actor, error)));
                    }
                    return Err(Outcome::NotHere);
                }
                Ok(())
            }
            Ok(_) => Err(Outcome::NotHere),
            Err(error) => Err(Outcome::Failed(self.unavailable(actor, error))),
        }
    }

    /// Runs an event from another host on an actor this host owns. It is
    /// queued before the next frame from that host is read (so a session's
    /// messages keep their order), and answered once it has run.
    async fn serve_event(&self, event: Event, responder: Responder<CallError>) {
        let actor = ActorRef::new(&event.actor_type, &event.key);
        if self.is_fenced() {
            return responder.respond(Outcome::Failed(CallError::Unavailable(
                Unavailable::ShuttingDown,
            )));
        }
        if let Err(outcome) = self.owns(&actor).await {
            tracing::trace!(%actor, ?outcome, "refused a host's event");
            return responder.respond(outcome);
        }
        let deadline = Instant::now() + Duration::from_micros(event.timeout_us);
        let (done, ran) = tokio::sync::oneshot::channel();
        let envelope = match event.kind {
            EventKind::Reminder { name } => Envelope::Reminder {
                name,
                deadline,
                done,
            },
            EventKind::Connect { session } => Envelope::Session {
                event: SessionEvent::Connect(session),
                deadline,
                done: Some(done),
            },
            EventKind::Message {
                session,
                payload,
                reliable,
            } => Envelope::Session {
                event: SessionEvent::Message {
                    session,
                    payload,
                    reliable,
                },
                deadline,
                done: Some(done),
            },
            EventKind::Disconnect { session, reason } => Envelope::Session {
                event: SessionEvent::Disconnect {
                    session,
                    reason: disconnect_reason(reason),
                },
                deadline,
                done: Some(done),
            },
        };
        // An undelivered event is answered with the error.
        let _ = self.directory.deliver(&actor, envelope, true).await;
        tokio::spawn(async move {
            let outcome = match tokio::time::timeout_at(deadline.into(), ran).await {
                Ok(Ok(Ok(()))) => Outcome::Returned(None),
                Ok(Ok(Err(error))) => Outcome::Failed(error),
                Ok(Err(_)) | Err(_) => {
                    Outcome::Failed(CallError::Unavailable(Unavailable::ActivationFailed {
                        actor: actor.to_string(),
                        message: "the activation ended before the event ran".into(),
                    }))
                }
            };
            responder.respond(outcome);
        });
    }

    /// Sends to, or closes, sessions of this host's gateway for an actor on
    /// another host.
    fn serve_push(&self, push: Push, responder: Responder<CallError>) {
        let sessions = &self.sessions;
        let outcome = match push.action {
            PushAction::Send { payload, reliable } => {
                let payload = Bytes::from(payload);
                match push.sessions.as_slice() {
                    [one] => match sessions.send(*one, payload, reliable) {
                        Ok(()) => Outcome::Pushed {
                            done: 1,
                            refused: None,
                        },
                        Err(error) => Outcome::Pushed {
                            done: 0,
                            refused: Some(refusal(error)),
                        },
                    },
                    many => Outcome::Pushed {
                        done: u32::try_from(sessions.send_many(many, &payload, reliable))
                            .unwrap_or(u32::MAX),
                        refused: None,
                    },
                }
            }
            PushAction::Close { reason } => Outcome::Pushed {
                done: push
                    .sessions
                    .iter()
                    .filter(|&&s| sessions.close(s, &reason))
                    .count() as u32,
                refused: None,
            },
        };
        responder.respond(outcome);
    }

    /// The live host whose gateway holds `session`.
    fn holder(&self, session: u64) -> Option<Member> {
        let number = grove_gateway_quic::origin_of(session);
        self.roster
            .borrow()
            .iter()
            .find(|m| m.number == number)
            .cloned()
    }

    async fn push_to(
        &self,
        sessions: Vec<u64>,
        action: PushAction,
    ) -> Option<(u32, Option<Refusal>)> {
        let holder = self.holder(*sessions.first()?)?;
        let push = Push {
            id: 0,
            sessions,
            action,
        };
        let (waiter, answer) = oneshot::channel();
        let deadline = Instant::now() + PUSH_TIMEOUT;
        self.transport.push(&holder, push, deadline, waiter).await;
        match answer.await {
            Ok(Ok(Outcome::Pushed { done, refused })) => Some((done, refused)),
            _ => None,
        }
    }

    /// Checks a request and turns it into a message for the local
    /// directory (without its reply).
    async fn accept(&self, request: Request) -> Result<Accepted, Outcome<CallError>> {
        let failed = |e: CallError| Outcome::Failed(e);
        if self.is_fenced() {
            return Err(failed(CallError::Unavailable(Unavailable::ShuttingDown)));
        }
        let actor = ActorRef::new(&request.actor_type, &request.key);
        let plugin = self.plugin(&request.actor_type).map_err(failed)?;
        let (_, function) = plugin.function(&request.function).ok_or_else(|| {
            failed(CallError::Rejected(RejectedCall::UnknownFunction {
                actor_type: request.actor_type.clone(),
                function: request.function.clone(),
            }))
        })?;
        let args = decode_args(function, &request.args).map_err(failed)?;
        self.owns(&actor).await?;
        if self.directory.is_stopping() {
            return Err(failed(CallError::Unavailable(Unavailable::ShuttingDown)));
        }
        let chain_actors: Result<Vec<ActorRef>, _> = request
            .chain
            .iter()
            .map(|a| a.parse::<ActorRef>())
            .collect();
        let chain = chain_actors
            .map_err(|e| failed(e.into()))
            .and_then(|list| chain::from_list(list).map_err(|e| failed(e.into())))?;
        let timeout = Duration::from_micros(request.timeout_us);
        let result = (!request.one_way).then(|| function.result.clone());
        let function: Arc<str> = request.function.into();
        let message = Message {
            target: actor.clone(),
            function,
            args,
            chain,
            deadline: Instant::now() + timeout,
            reply: None,
            trace: request.trace.map(Box::new),
        };
        Ok(Accepted {
            actor,
            message,
            timeout,
            result,
        })
    }
}

fn decode_args(function: &Function, bytes: &[u8]) -> Result<Vec<Val>, CallError> {
    let bad = |message: String| {
        CallError::Rejected(RejectedCall::BadArguments {
            function: function.name.clone(),
            message,
        })
    };
    let mut args = Vec::with_capacity(function.params.len());
    let mut rest = bytes;
    for param in &function.params {
        let (val, used) = values_wire::decode_prefix(&param.ty, rest, &DecodeLimits::DEFAULT)
            .map_err(|e| bad(format!("argument `{}`: {e}", param.name)))?;
        args.push(val);
        rest = rest.get(used..).unwrap_or_default();
    }
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes after the last argument", rest.len())));
    }
    Ok(args)
}

fn encode_args(function: &Function, args: &[Val]) -> Result<Vec<u8>, CallError> {
    let mut out = Vec::new();
    for (param, arg) in function.params.iter().zip(args) {
        values_wire::encode(arg, &param.ty, &mut out).map_err(|e| {
            CallError::Rejected(RejectedCall::BadArguments {
                function: function.name.clone(),
                message: format!("argument `{}`: {e}", param.name),
            })
        })?;
    }
    Ok(out)
}

fn encode_result(
    actor: &ActorRef,
    val: Option<Val>,
    ty: Option<&wasmtime::component::Type>,
) -> Outcome<CallError> {
    match (val, ty) {
        (Some(val), Some(ty)) => {
            let mut out = Vec::new();
            match values_wire::encode(&val, ty, &mut out) {
                Ok(()) => Outcome::Returned(Some(out)),
                Err(error) => {
                    Outcome::Failed(CallError::Unavailable(Unavailable::ActivationFailed {
                        actor: actor.to_string(),
                        message: format!("its result does not fit its type: {error}"),
                    }))
                }
            }
        }
        _ => Outcome::Returned(None),
    }
}

/// Runs the task the directory started for `slot`'s actor: resolves its
/// owner, then runs the activation here or forwards to the owner.
pub(crate) async fn place(
    node: Arc<Node>,
    context: activation::Context,
    plugin: Arc<Plugin>,
    slot: Slot,
    waiting: activation::Waiting,
) {
    let actor = slot.actor().clone();
    match node.resolve(&actor).await {
        Ok(Route::Here(owner)) => {
            tracing::debug!(%actor, epoch = owner.epoch, "activating here");
            node.local.insert(actor.clone(), owner.epoch);
            let fence = Fence {
                owner_key: node.placement.key(&actor),
                host: node.me.clone(),
                epoch: owner.epoch,
            };
            activation::run(context, plugin, slot, Some(fence), waiting).await;
            node.local
                .remove_if(&actor, |_, epoch| *epoch == owner.epoch);
            // A successor listed here (messages arrived as this activation
            // left) takes the claim over with a new epoch. Released before
            // it does, the entry could go to another host while messages
            // for the actor still arrive here, and those could overtake
            // the ones sent there.
            if node.directory.contains(&actor) {
                return;
            }
            if let Err(error) = node.placement.release(&actor, &owner).await {
                // The entry stays this host's until its lease lapses.
                tracing::warn!(%actor, %error, "cannot release the placement entry");
            }
        }
        Ok(Route::There(member)) => {
            // No activation starts here.
            drop(waiting);
            tracing::debug!(%actor, host = %member.id, "forwarding to its host");
            forward(&node, &plugin, slot, member, context.idle_timeout).await
        }
        Err(error) => {
            drop(waiting);
            tracing::warn!(%actor, %error, "cannot place the actor");
            while let Some(envelope) = slot.try_recv(Instant::now()) {
                envelope.fail(error.clone());
            }
            slot.leave();
        }
    }
}

/// What a forwarder shares with its messages in flight.
struct Forwarding {
    actor: ActorRef,
    owner: String,
    plugin: Arc<Plugin>,
    /// Where the owner's answers go, with their messages.
    answers: mpsc::UnboundedSender<Answered>,
}

/// A forwarded message, its place in the order it was sent, and the
/// owner's answer.
type Answered = (u64, Envelope, transport::Answer<CallError>);

/// One forwarded message, waiting for the owner's answer.
struct InFlight {
    order: u64,
    envelope: Envelope,
    forwarding: Arc<Forwarding>,
}

impl Waiter<CallError> for InFlight {
    fn answer(self: Box<Self>, answer: transport::Answer<CallError>) {
        let InFlight {
            order,
            envelope,
            forwarding,
        } = *self;
        // The forwarder holds the receiver until nothing is in flight.
        let _ = forwarding.answers.send((order, envelope, answer));
    }
}

/// Forwards `slot`'s messages to `owner` until the entry turns stale, the
/// owner leaves, or nothing arrives for `idle`.
async fn forward(
    node: &Arc<Node>,
    plugin: &Arc<Plugin>,
    slot: Slot,
    owner: Member,
    idle: Duration,
) {
    let (answers, mut answered) = mpsc::unbounded_channel();
    let forwarding = Arc::new(Forwarding {
        actor: slot.actor().clone(),
        owner: owner.id.clone(),
        plugin: plugin.clone(),
        answers,
    });
    let mut in_flight = 0usize;
    // Messages to send again, with their places in the order they were
    // sent, so that they go in that order.
    let mut retry: Vec<(u64, Envelope)> = Vec::new();
    let mut sent_count = 0u64;
    let mut roster = node.roster.clone();
    roster.borrow_and_update();
    let mut roster_open = true;
    let mut stale = false;
    let mut idle_since = tokio::time::Instant::now();
    loop {
        // A message came back (its owner no longer runs the actor): the
        // successor takes over now. The answers still in flight may depend
        // on it — the old owner hands what it had queued to the new one,
        // which may be this host — so they are settled behind.
        if stale && (in_flight == 0 || !retry.is_empty()) {
            break;
        }
        tokio::select! {
            biased;
            Some((order, envelope, answer)) = answered.recv(), if in_flight > 0 => {
                in_flight -= 1;
                idle_since = tokio::time::Instant::now();
                if let Some(envelope) = settle(&forwarding, envelope, answer, &mut stale) {
                    retry.push((order, envelope));
                }
            }
            changed = roster.changed(), if roster_open => {
                roster_open = changed.is_ok();
                let missing = !roster.borrow_and_update().iter().any(|m| m.id == owner.id);
                // The owner may have joined after the last look: only its
                // lease says it is gone.
                if changed.is_err() || (missing && !matches!(node.live(&owner.id).await, Ok(Some(_)))) {
                    stale = true;
                }
            }
            envelope = slot.recv(), if !stale => {
                // Shutting down: answer what is in flight, then leave.
                let Some(envelope) = envelope else {
                    stale = true;
                    continue;
                };
                idle_since = tokio::time::Instant::now();
                sent_count += 1;
                if send(node, &forwarding, &owner, sent_count, envelope).await {
                    in_flight += 1;
                }
            }
            () = tokio::time::sleep_until(idle_since + idle), if in_flight == 0 => break,
        }
    }
    retry.sort_by_key(|(order, _)| *order);
    slot.leave_with(retry.into_iter().map(|(_, envelope)| envelope).collect());
    if in_flight > 0 {
        tokio::spawn(settle_behind(node.clone(), forwarding, answered, in_flight));
    }
}

/// Settles the answers of a forwarder that left with `in_flight` messages
/// still out; one that comes back goes to the actor's activation through
/// the directory, behind those already handed over.
async fn settle_behind(
    node: Arc<Node>,
    forwarding: Arc<Forwarding>,
    mut answered: mpsc::UnboundedReceiver<Answered>,
    mut in_flight: usize,
) {
    while in_flight > 0 {
        let Some((_, envelope, answer)) = answered.recv().await else {
            return;
        };
        in_flight -= 1;
        let mut stale = true;
        if let Some(envelope) = settle(&forwarding, envelope, answer, &mut stale) {
            // An undelivered message is answered with the error.
            let _ = node
                .directory
                .deliver(&forwarding.actor, envelope, true)
                .await;
        }
    }
}

fn remaining_us(deadline: Instant) -> u64 {
    u64::try_from(
        deadline
            .saturating_duration_since(Instant::now())
            .as_micros(),
    )
    .unwrap_or(u64::MAX)
}

/// Sends message number `order` to `owner`; whether it went out, for its
/// answer to come back to the forwarder (an unsent one comes back too, to
/// go to the owner found by resolving again). A message that cannot go is
/// answered here.
async fn send(
    node: &Node,
    forwarding: &Arc<Forwarding>,
    owner: &Member,
    order: u64,
    envelope: Envelope,
) -> bool {
    let actor = &forwarding.actor;
    let deadline = envelope.deadline();
    // A message that waited past its deadline (sent again while its owner
    // could not be reached, say) is answered here, not sent.
    if deadline <= Instant::now() {
        let error = envelope.undelivered_in_time(|| {
            CallError::Unavailable(Unavailable::HostUnreachable {
                actor: actor.to_string(),
                host: owner.id.clone(),
                message: "not delivered before its deadline".into(),
            })
        });
        envelope.fail(error);
        return false;
    }
    let frame = match &envelope {
        Envelope::Call(message) => {
            let Some((_, function)) = forwarding.plugin.function(&message.function) else {
                let error = CallError::Rejected(RejectedCall::UnknownFunction {
                    actor_type: actor.actor_type.to_string(),
                    function: message.function.to_string(),
                });
                envelope.fail(error);
                return false;
            };
            let args = match encode_args(function, &message.args) {
                Ok(args) => args,
                Err(error) => {
                    envelope.fail(error);
                    return false;
                }
            };
            Ok(Request {
                id: 0,
                actor_type: actor.actor_type.to_string(),
                key: actor.key.to_string(),
                function: message.function.to_string(),
                args,
                timeout_us: remaining_us(deadline),
                chain: chain::to_list(&message.chain)
                    .iter()
                    .map(ToString::to_string)
                    .collect(),
                one_way: !message.is_call(),
                trace: message.trace.as_deref().copied(),
            })
        }
        Envelope::Reminder { name, .. } => Err(EventKind::Reminder { name: name.clone() }),
        Envelope::Session { event, .. } => Err(match event {
            SessionEvent::Connect(session) => EventKind::Connect { session: *session },
            SessionEvent::Message {
                session,
                payload,
                reliable,
            } => EventKind::Message {
                session: *session,
                payload: payload.clone(),
                reliable: *reliable,
            },
            SessionEvent::Disconnect { session, reason } => EventKind::Disconnect {
                session: *session,
                reason: disconnected(reason),
            },
        }),
    };
    let waiter = InFlight {
        order,
        envelope,
        forwarding: forwarding.clone(),
    };
    match frame {
        Ok(request) => {
            node.transport
                .request(owner, request, deadline, waiter)
                .await
        }
        Err(kind) => {
            let event = Event {
                id: 0,
                actor_type: actor.actor_type.to_string(),
                key: actor.key.to_string(),
                timeout_us: remaining_us(deadline),
                kind,
            };
            node.transport.event(owner, event, deadline, waiter).await
        }
    }
    true
}

/// Hands a forwarded message's answer to whoever waits for it; returns the
/// message if it must be sent again after resolving the owner anew.
fn settle(
    forwarding: &Forwarding,
    envelope: Envelope,
    answer: transport::Answer<CallError>,
    stale: &mut bool,
) -> Option<Envelope> {
    let (actor, host) = (&forwarding.actor, &forwarding.owner);
    let outcome = match answer {
        Ok(Outcome::NotHere) => {
            tracing::debug!(%actor, %host, "its host does not run it; resolving again");
            *stale = true;
            return Some(envelope);
        }
        Err(Unanswered::Unsent(error)) => {
            tracing::debug!(%actor, %error, "the actor's host cannot be reached; resolving again");
            *stale = true;
            return Some(envelope);
        }
        Ok(outcome) => outcome,
        Err(Unanswered::Timeout) => {
            let error = envelope.undelivered_in_time(|| {
                CallError::Unavailable(Unavailable::HostUnreachable {
                    actor: actor.to_string(),
                    host: host.clone(),
                    message: "no answer before the deadline".into(),
                })
            });
            envelope.fail(error);
            return None;
        }
        Err(Unanswered::Lost) => {
            *stale = true;
            Outcome::Failed(CallError::Unavailable(Unavailable::HostUnreachable {
                actor: actor.to_string(),
                host: host.clone(),
                message: "the connection was lost with the call in flight".into(),
            }))
        }
    };
    match envelope {
        Envelope::Call(message) => {
            let result = match outcome {
                Outcome::Returned(bytes) => {
                    decode_result(actor, &forwarding.plugin, &message.function, bytes)
                }
                Outcome::Failed(error) => Err(error),
                Outcome::Queued | Outcome::NotHere | Outcome::Pushed { .. } => Ok(None),
            };
            match (message.reply, result) {
                (Some(reply), result) => reply.send(result),
                (None, Err(error)) => {
                    tracing::warn!(%actor, function = %message.function, %error, "one-way message failed on its host");
                }
                (None, Ok(_)) => {}
            }
        }
        Envelope::Reminder { done, .. }
        | Envelope::Session {
            done: Some(done), ..
        } => {
            let _ = done.send(match outcome {
                Outcome::Failed(error) => Err(error),
                _ => Ok(()),
            });
        }
        Envelope::Session {
            done: None, event, ..
        } => {
            if let Outcome::Failed(error) = outcome {
                tracing::warn!(%actor, hook = event.hook(), %error, "session event failed on its host");
            }
        }
    }
    None
}

fn decode_result(
    actor: &ActorRef,
    plugin: &Plugin,
    function: &str,
    bytes: Option<Vec<u8>>,
) -> Result<Option<Val>, CallError> {
    let ty = plugin
        .function(function)
        .and_then(|(_, f)| f.result.clone());
    match (bytes, ty) {
        (None, None) => Ok(None),
        (Some(bytes), Some(ty)) => values_wire::decode(&ty, &bytes, &DecodeLimits::DEFAULT)
            .map(Some)
            .map_err(|e| {
                CallError::Unavailable(Unavailable::ActivationFailed {
                    actor: actor.to_string(),
                    message: format!("the result from its host does not decode: {e}"),
                })
            }),
        _ => Err(CallError::Unavailable(Unavailable::ActivationFailed {
            actor: actor.to_string(),
            message: "its host runs a version of the plugin with another result type".into(),
        })),
    }
}
