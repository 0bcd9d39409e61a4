//! The data each activation's `Store` holds, and the host side of the
//! `grove:actor/host` imports that a guest calls during its turns.
//!
//! A guest import reaches only the [`Services`] an actor may use — the
//! directory (to call and send to other actors), its state store, the
//! reminder schedule and the gateway's sessions — never the host as a whole.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use grove_gateway_quic::{SendError, Sessions};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::catalog::Catalog;
use crate::directory::Directory;
use crate::guest_output::GuestOutput;
use crate::incidents::{Counts, Incident};
use crate::limits::ActorLimits;
use crate::metrics::{Meters, StateOp};
use crate::reminders::Reminders;
use crate::state::quota::Quota;
use crate::state::{Fence, Guards, RowKey, StateError, StateStore};
use crate::ActorRef;
use grove_core::timers::Timers;
use grove_core::CallChain;

use crate::bindings::grove;
use crate::bindings::grove::actor::types as wit;
use crate::bindings::Imports;

/// Most table elements one activation may grow its tables to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Marks a turn stopped because it ran past its deadline.
#[derive(Debug, thiserror::Error)]
#[error("the turn ran past its deadline of {0:?}")]
pub struct DeadlineExceeded(pub Duration);

/// Marks a turn stopped because the guest asked for more than a documented
/// limit allows (see `docs/limits.md`).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LimitExceeded(pub String);

/// Marks an activation stopped because it wanted more memory than allowed.
#[derive(Debug, thiserror::Error)]
#[error("linear memory would grow to {desired} bytes; the limit is {limit}")]
pub struct MemoryLimitExceeded {
    /// The size the guest asked for.
    pub desired: usize,
    /// The host's limit.
    pub limit: usize,
}

/// Enforces the per-activation memory limit with an error the host can
/// recognise, instead of a bare allocation failure inside the guest.
pub(crate) struct ActivationLimiter {
    max_memory: usize,
}

impl ResourceLimiter for ActivationLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            return Err(MemoryLimitExceeded {
                desired,
                limit: self.max_memory,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Game client sessions held by other hosts' gateways, reached through the
/// cluster (whose session ids name the host).
pub(crate) trait RemoteSessions: Send + Sync + 'static {
    /// Sends `payload` to each of `sessions`, all held by one other host;
    /// how many took it, or for a single session why it refused.
    fn send(
        &self,
        sessions: Vec<u64>,
        payload: Bytes,
        reliable: bool,
    ) -> grove_cluster::transport::BoxFuture<'_, Result<u32, SendError>>;
    /// Closes `session`; whether it was live.
    fn close(&self, session: u64, reason: String) -> grove_cluster::transport::BoxFuture<'_, bool>;
}

/// What the host lends its actors, shared by every activation behind one
/// `Arc`: cloning each handle per activation would touch as many reference
/// counts, each shared by every core.
pub(crate) struct Services {
    /// Where calls and one-way sends to other actors go.
    pub(crate) directory: Arc<Directory>,
    pub(crate) state: StateStore,
    pub(crate) reminders: Arc<Reminders>,
    pub(crate) sessions: Sessions,
    /// The functions of every actor type, for proxies.
    pub(crate) catalog: Catalog,
    /// How long a call to another actor waits, unless its proxy says otherwise.
    pub(crate) call_timeout: Duration,
    /// Set when the host joins a cluster.
    pub(crate) remote_sessions: OnceLock<Weak<dyn RemoteSessions>>,
    /// What the host counts; `None` if it counts nothing.
    pub(crate) meters: Option<Arc<Meters>>,
}

impl Services {
    /// The way to `session` if another host's gateway holds it.
    fn remote(&self, session: u64) -> Option<Arc<dyn RemoteSessions>> {
        if self.sessions.is_local(session) {
            return None;
        }
        self.remote_sessions.get().and_then(Weak::upgrade)
    }
}

fn session_error(error: SendError) -> wit::SessionError {
    match error {
        SendError::UnknownSession(_) => wit::SessionError::UnknownSession,
        SendError::TooLarge { limit, .. } => {
            wit::SessionError::TooLarge(u32::try_from(limit).unwrap_or(u32::MAX))
        }
        SendError::SlowConsumer(_) => wit::SessionError::SlowConsumer,
        SendError::DatagramsUnsupported(_) => wit::SessionError::DatagramsUnsupported,
    }
}

/// Everything one activation's `Store` holds.
pub(crate) struct ActivationState {
    pub(crate) services: Arc<Services>,
    pub(crate) actor: ActorRef,
    /// The call chain of the call being run, if the turn is a call.
    pub(crate) chain: CallChain,
    /// Proxy handles and pending started calls (see [`crate::proxy`]) the
    /// guest holds.
    pub(crate) proxies: ResourceTable,
    /// Set when a state operation in this turn found the backend unavailable.
    pub(crate) state_failure: Option<String>,
    /// In a cluster, the claim the writes of the actor's own rows carry.
    pub(crate) fence: Option<Fence>,
    pub(crate) timers: Timers,
    pub(crate) deactivate_requested: bool,
    /// When the running turn must end.
    pub(crate) turn_deadline: Instant,
    /// When the running turn's wall-clock bound runs out.
    pub(crate) turn_wall_deadline: Instant,
    pub(crate) turn_limit: Duration,
    pub(crate) limiter: ActivationLimiter,
    pub(crate) output: GuestOutput,
    /// Proxy handles and pending calls the activation may hold at once.
    pub(crate) max_proxies: usize,
    /// Reminders the actor may hold at once.
    max_reminders: usize,
    /// What the actor may keep stored, if its type has a quota.
    quota: Option<Quota>,
    /// What the sandbox counts of the actor's type.
    pub(crate) incidents: Arc<Counts>,
    /// WASI's context, made the first time the guest calls WASI: many
    /// activations never do, and making it allocates.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
}

/// WASI for an activation writing to `output`. No ambient capabilities: no
/// files, no environment, no network. Only clocks, randomness and the
/// output streams that Rust's std needs.
fn wasi_ctx(output: &GuestOutput) -> WasiCtx {
    WasiCtx::builder()
        .stdout(output.clone())
        .stderr(output.clone())
        .secure_random(ThreadRandom)
        .insecure_random(ThreadRandom)
        .build()
}

impl ActivationState {
    pub(crate) fn new(
        services: Arc<Services>,
        actor: ActorRef,
        limits: &ActorLimits,
        incidents: Arc<Counts>,
    ) -> Self {
        let output = GuestOutput::new(
            actor.clone(),
            limits.log_lines_per_second,
            incidents.clone(),
        );
        let turn_limit = limits.turn_deadline;
        let quota =
            (limits.max_state_rows < u64::MAX || limits.max_state_bytes < u64::MAX).then(|| {
                Quota {
                    holder: actor.clone(),
                    max_rows: limits.max_state_rows,
                    max_bytes: limits.max_state_bytes,
                }
            });
        let mut proxies = ResourceTable::new();
        proxies.set_max_capacity(limits.max_proxies);
        ActivationState {
            services,
            actor,
            chain: None,
            proxies,
            state_failure: None,
            fence: None,
            timers: Timers::new(limits.max_timers),
            deactivate_requested: false,
            turn_deadline: Instant::now() + turn_limit,
            turn_wall_deadline: Instant::now() + turn_limit,
            turn_limit,
            limiter: ActivationLimiter {
                max_memory: limits.max_memory,
            },
            output,
            max_proxies: limits.max_proxies,
            max_reminders: limits.max_reminders,
            quota,
            incidents,
            wasi: None,
            table: ResourceTable::new(),
        }
    }

    /// Gives this state, made for an instance instantiated ahead of its
    /// activation, to `actor`: its output and its quota become the actor's.
    pub(crate) fn assign(&mut self, actor: ActorRef) {
        self.output.name(actor.clone());
        if let Some(quota) = &mut self.quota {
            quota.holder = actor.clone();
        }
        self.actor = actor;
    }

    /// The fence of a write to `key`: the actor's own rows only, which share
    /// the slot of its placement entry.
    fn fence_for(&self, key: &RowKey<'_>) -> Option<&Fence> {
        let own = key.namespace == &*self.actor.actor_type && key.key1 == &*self.actor.key;
        self.fence.as_ref().filter(|_| own)
    }

    /// What a write of `key` by this actor carries.
    fn guards(&self, key: &RowKey<'_>) -> Guards<'_> {
        Guards {
            fence: self.fence_for(key),
            quota: self.quota.as_ref(),
        }
    }

    fn row<'a>(&'a self, table: &'a str, key1: &'a str, key2: Option<&'a str>) -> RowKey<'a> {
        RowKey {
            namespace: &self.actor.actor_type,
            table,
            key1,
            key2,
        }
    }
}

/// `wasi:random` for every activation from the random number generator of
/// the thread its turn runs on (`rand::rng()`: ChaCha12, seeded from the
/// operating system and reseeded as it goes), instead of a generator of the
/// activation's own: WASI's default keeps two in every store, 350 bytes of
/// every idle activation.
struct ThreadRandom;

impl rand::TryRng for ThreadRandom {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        rand::rng().try_next_u32()
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        rand::rng().try_next_u64()
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Infallible> {
        rand::rng().try_fill_bytes(dest)
    }
}

impl WasiView for ActivationState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let output = &self.output;
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| wasi_ctx(output)),
            table: &mut self.table,
        }
    }
}

/// A linker with WASI (no capabilities granted) and the Grove host imports.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<ActivationState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    Imports::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

impl ActivationState {
    /// Hands a state result to the guest, noting an unavailable backend so
    /// that a turn failing because of it is reported as such.
    ///
    /// Time spent waiting for the backend does not count against the turn
    /// deadline, which limits the guest's own running time.
    fn state_result<T>(
        &mut self,
        op: StateOp,
        started: Instant,
        r: Result<T, StateError>,
    ) -> Result<T, wit::StateError> {
        let elapsed = started.elapsed();
        self.turn_deadline += elapsed;
        if let Some(meters) = &self.services.meters {
            meters.state(op, r.as_ref().err(), elapsed);
        }
        r.map_err(|e| match e {
            StateError::Unavailable(m) => {
                self.state_failure = Some(m.clone());
                wit::StateError::Unavailable(m)
            }
            StateError::TooLarge(m) => wit::StateError::TooLarge(m),
            // The WIT has no case of its own for a quota: `too-large`, with
            // a message that says which.
            StateError::QuotaExceeded(m) => {
                // Within the actor's log budget: an actor asking again and
                // again cannot flood the host's log.
                self.output
                    .log(tracing::Level::WARN, &format!("grove refused: {m}"));
                self.incidents.add(Incident::QuotaRefused);
                wit::StateError::TooLarge(format!("quota exceeded: {m}"))
            }
            // Another claim of the actor runs now: this activation ends
            // after the turn, having written nothing more.
            StateError::Superseded(m) => {
                self.state_failure = Some(format!("superseded: {m}"));
                self.deactivate_requested = true;
                wit::StateError::Unavailable(m)
            }
        })
    }
}

impl wit::Host for ActivationState {}

impl grove::actor::host::Host for ActivationState {
    async fn self_ref(&mut self) -> wasmtime::Result<wit::ActorRef> {
        Ok(wit::ActorRef {
            actor_type: self.actor.actor_type.to_string(),
            key: self.actor.key.to_string(),
        })
    }

    async fn log(&mut self, level: wit::LogLevel, message: String) -> wasmtime::Result<()> {
        let level = match level {
            wit::LogLevel::Trace => tracing::Level::TRACE,
            wit::LogLevel::Debug => tracing::Level::DEBUG,
            wit::LogLevel::Info => tracing::Level::INFO,
            wit::LogLevel::Warn => tracing::Level::WARN,
            wit::LogLevel::Error => tracing::Level::ERROR,
        };
        self.output.log(level, &message);
        Ok(())
    }

    async fn state_get(
        &mut self,
        table: String,
        key1: String,
        key2: Option<String>,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, wit::StateError>> {
        let started = Instant::now();
        let key = self.row(&table, &key1, key2.as_deref());
        let r = self.services.state.get(key).await;
        Ok(self.state_result(StateOp::Get, started, r))
    }

    async fn state_put(
        &mut self,
        table: String,
        key1: String,
        key2: Option<String>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), wit::StateError>> {
        let started = Instant::now();
        let key = self.row(&table, &key1, key2.as_deref());
        let r = self
            .services
            .state
            .put_guarded(key, value, self.guards(&key))
            .await;
        Ok(self.state_result(StateOp::Put, started, r))
    }

    async fn state_delete(
        &mut self,
        table: String,
        key1: String,
        key2: Option<String>,
    ) -> wasmtime::Result<Result<bool, wit::StateError>> {
        let started = Instant::now();
        let key = self.row(&table, &key1, key2.as_deref());
        let r = self
            .services
            .state
            .delete_guarded(key, self.guards(&key))
            .await;
        Ok(self.state_result(StateOp::Delete, started, r))
    }

    async fn state_list(
        &mut self,
        table: String,
        key1: String,
    ) -> wasmtime::Result<Result<Vec<wit::Row>, wit::StateError>> {
        let started = Instant::now();
        let rows = self
            .services
            .state
            .list(&self.actor.actor_type, &table, &key1)
            .await;
        Ok(self.state_result(StateOp::List, started, rows).map(|rows| {
            rows.into_iter()
                .map(|r| wit::Row {
                    key2: r.key2,
                    value: r.value,
                })
                .collect()
        }))
    }

    async fn set_timer(
        &mut self,
        name: String,
        due_ms: u64,
        period_ms: Option<u64>,
        keep_alive: bool,
    ) -> wasmtime::Result<()> {
        if name.len() > crate::state::MAX_KEY_BYTES {
            let limit = crate::state::MAX_KEY_BYTES;
            return Err(LimitExceeded(format!(
                "timer name is {} bytes; the limit is {limit}",
                name.len()
            ))
            .into());
        }
        let period = period_ms.map(Duration::from_millis);
        self.timers
            .set(
                &name,
                Instant::now(),
                Duration::from_millis(due_ms),
                period,
                keep_alive,
            )
            .map_err(|e| LimitExceeded(e.to_string()))?;
        Ok(())
    }

    async fn cancel_timer(&mut self, name: String) -> wasmtime::Result<bool> {
        Ok(self.timers.cancel(&name))
    }

    async fn set_reminder(
        &mut self,
        name: String,
        due_ms: u64,
        period_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), wit::StateError>> {
        let started = Instant::now();
        let r = self
            .services
            .reminders
            .set(
                &self.actor,
                &name,
                Duration::from_millis(due_ms),
                period_ms.map(Duration::from_millis),
                self.max_reminders,
            )
            .await;
        Ok(self.state_result(StateOp::SetReminder, started, r))
    }

    async fn cancel_reminder(
        &mut self,
        name: String,
    ) -> wasmtime::Result<Result<bool, wit::StateError>> {
        let started = Instant::now();
        let r = self.services.reminders.cancel(&self.actor, &name).await;
        Ok(self.state_result(StateOp::CancelReminder, started, r))
    }

    async fn send_to_session(
        &mut self,
        session: u64,
        payload: Vec<u8>,
        reliable: bool,
    ) -> wasmtime::Result<Result<(), wit::SessionError>> {
        let payload = Bytes::from(payload);
        if let Some(remote) = self.services.remote(session) {
            let sent = remote.send(vec![session], payload, reliable).await;
            return Ok(sent.map(drop).map_err(session_error));
        }
        let sent = self.services.sessions.send(session, payload, reliable);
        Ok(sent.map_err(session_error))
    }

    async fn send_to_sessions(
        &mut self,
        sessions: Vec<u64>,
        payload: Vec<u8>,
        reliable: bool,
    ) -> wasmtime::Result<u32> {
        let payload = Bytes::from(payload);
        let local = &self.services.sessions;
        let (here, elsewhere): (Vec<u64>, Vec<u64>) =
            sessions.into_iter().partition(|&s| local.is_local(s));
        let mut sent =
            u32::try_from(local.send_many(&here, &payload, reliable)).unwrap_or(u32::MAX);
        if let Some(remote) = elsewhere.first().and_then(|&s| self.services.remote(s)) {
            // One push per host holding some of them, all at once.
            let mut by_host: std::collections::BTreeMap<u16, Vec<u64>> = Default::default();
            for session in elsewhere {
                by_host
                    .entry(grove_gateway_quic::origin_of(session))
                    .or_default()
                    .push(session);
            }
            let pushes = by_host
                .into_values()
                .map(|group| remote.send(group, payload.clone(), reliable));
            for pushed in futures_util::future::join_all(pushes).await {
                sent = sent.saturating_add(pushed.unwrap_or(0));
            }
        }
        Ok(sent)
    }

    async fn close_session(&mut self, session: u64, reason: String) -> wasmtime::Result<bool> {
        if let Some(remote) = self.services.remote(session) {
            return Ok(remote.close(session, reason).await);
        }
        Ok(self.services.sessions.close(session, &reason))
    }

    async fn deactivate_after_turn(&mut self) -> wasmtime::Result<()> {
        self.deactivate_requested = true;
        Ok(())
    }
}
