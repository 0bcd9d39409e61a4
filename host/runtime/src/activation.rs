//! One activation: the live instance of one actor, owned by one tokio task.
//!
//! The task owns the wasmtime `Store` and the actor's [`Slot`] (its place in
//! the directory and its mailbox); it runs one turn at a time (a call, a
//! timer tick, a reminder or a session hook), so guest code is never entered
//! twice at once. Every turn is bounded twice: by the CPU deadline checked at
//! each epoch tick while guest code runs, and by a wall-clock bound that also
//! covers time spent in host calls (state, calls to other actors). A turn
//! past either bound ends the activation.
//!
//! Timer ticks interleave with messages — at most one tick runs between two
//! looks at the mailbox — and take at most half of the actor's time: after a
//! tick that ran for `d`, the next one waits at least `d`. So an actor with a
//! thousand 1 ms timers still answers calls, is deactivated when idle, and
//! leaves when the host shuts down.
//!
//! It ends in one of two ways:
//!
//! * **Deactivation** (idle timeout, the actor's own request, host shutdown):
//!   timers are cancelled, `on-deactivate` runs, and the slot is left; any
//!   message that arrived meanwhile goes to a successor activation.
//! * **Death** (a trap, a deadline overrun, the memory limit): the failing
//!   turn's caller gets the error, the instance is thrown away without
//!   running guest code again, and queued messages go to a fresh activation.
//!
//! However the task ends — a panic included — dropping the slot hands over
//! the mailbox, so no caller is left waiting on an actor nobody serves.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::future::Either;
use grove_values::size::{message_size, MAX_MESSAGE_SIZE};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::sleep;
use tracing::Span;
use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, Func, Instance, Lift, Lower, TypedFunc, Val,
};
use wasmtime::{Engine, Store, UpdateDeadline, WasmBacktrace};

use crate::bindings::DisconnectReason;
use crate::directory::Slot;
use crate::engine::EpochClock;
use crate::error::{ActorFailure, CallError, RejectedCall, Unavailable};
use crate::imports::{
    ActivationState, DeadlineExceeded, LimitExceeded, MemoryLimitExceeded, Services,
};
use crate::incidents::{Incident, Incidents};
use crate::limits::Limits;
use crate::mailbox::{Answer, CallMessage, Caller, Envelope, Mailbox, Reply, SessionEvent, Stop};
use crate::metrics::TypeMeters;
use crate::plugin::Plugin;
use crate::state::Fence;
use crate::throttled::Throttled;
use crate::trace;
use crate::values;
use crate::warm::{self, Warm};
use crate::ActorRef;

/// Messages handled in a row before the task looks at its timers again.
const BATCH: usize = 64;

/// The largest block glibc's allocator hands out from its per-thread cache
/// on 64-bit Linux (`tcache`, 64 sizes up to 1,032 bytes); a larger one
/// takes the arena's slower paths, locked, to allocate and again to free.
/// A batch of turns is boxed once per batch, that is about once per call
/// across many actors: its future is kept at most this size. A debug build
/// asserts it, so a change that makes the future larger (a new local held
/// across an await, a wasmtime upgrade) fails the debug tests until the
/// bytes are found again.
const THREAD_CACHE_MAX: usize = 1_032;

/// How many times an activation that found every slot taken has instances
/// made ahead give theirs up and tries again.
const GIVE_WAY_TRIES: usize = 3;

/// How long such an activation waits between tries: an instance being made
/// ahead holds its slot until it is made.
const GIVE_WAY_PAUSE: Duration = Duration::from_millis(1);

/// Where an activation that could not start reports it.
pub(crate) trait Versions: Send + Sync + 'static {
    /// An activation of `plugin` failed to start with `error`. Returns
    /// whether its actor type went back to the version before (a version
    /// on trial after a deploy): then the activation's messages go to a
    /// successor on that version instead of failing.
    fn failed_to_start(&self, plugin: &Plugin, error: &CallError) -> bool;

    /// Whether to make instances of `plugin` ahead now: it is the version
    /// its type runs, and no activation found every slot taken lately.
    fn may_make_ahead(&self, plugin: &Arc<Plugin>) -> bool;

    /// An activation found every slot taken: the instances made ahead give
    /// theirs up, and none are made for a while.
    fn give_way(&self);
}

/// What an activation needs from its host.
#[derive(Clone)]
pub(crate) struct Context {
    pub(crate) engine: Engine,
    pub(crate) limits: Arc<Limits>,
    pub(crate) idle_timeout: Duration,
    pub(crate) services: Arc<Services>,
    /// Keeps the engine's epoch advancing while any activation runs, even
    /// after every handle to the host is gone.
    pub(crate) _epoch: Arc<EpochClock>,
    /// What the sandbox stopped or refused, per actor type.
    pub(crate) incidents: Arc<Incidents>,
    /// The host's plugin versions, set once the host exists.
    pub(crate) versions: Arc<OnceLock<Weak<dyn Versions>>>,
    /// A permit per running turn (`Limits::max_running_turns`): one per
    /// fiber stack in the engine's pool.
    pub(crate) turns: Arc<Turns>,
}

/// The host's running turns: a permit per fiber stack in the engine's pool;
/// how many activations have started, which tells when the host is idle;
/// and how many wait to start, which tells a crowd arriving.
/// Turns that serve no other actor's call (client sessions, calls from
/// outside, timers, reminders) may hold at most three quarters of them,
/// unless a call from an actor waits behind them in their mailbox. An actor
/// called by turns that wait on it then finds a stack to answer with, unless
/// chains of calls between actors use up the reserve too: without it, a crowd of players each waiting on a call to its
/// cell could hold every stack and leave the cells none until the calls
/// timed out.
pub(crate) struct Turns {
    stacks: Arc<Semaphore>,
    outer: Arc<Semaphore>,
    limit: usize,
    /// Activations started so far: slots are prepared while none starts
    /// (`warm.rs`).
    activations: AtomicU64,
    /// Activations spawned and not started yet.
    waiting: AtomicUsize,
}

impl Turns {
    /// `limit` running turns, a quarter of them kept for turns that serve
    /// other actors' calls.
    pub(crate) fn new(limit: usize) -> Arc<Turns> {
        let limit = limit.max(1);
        Arc::new(Turns {
            stacks: Arc::new(Semaphore::new(limit)),
            outer: Arc::new(Semaphore::new(limit - limit / 4)),
            limit,
            activations: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
        })
    }

    /// How many activations have started so far.
    pub(crate) fn activations_started(&self) -> u64 {
        self.activations.load(Ordering::Relaxed)
    }

    /// Notes that an activation starts.
    fn activation_starts(&self) {
        self.activations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an activation as waiting to start (its task spawned, its
    /// owner being resolved in a cluster) until the guard returned is
    /// dropped.
    pub(crate) fn activation_waits(self: &Arc<Self>) -> Waiting {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self.clone())
    }

    /// Whether activations wait to start: a crowd arrives.
    fn crowd_waits(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0
    }

    /// How many turns run now.
    pub(crate) fn running(&self) -> usize {
        self.limit.saturating_sub(self.stacks.available_permits())
    }
}

/// An activation waiting to start, counted in [`Turns`] until dropped.
pub(crate) struct Waiting(Arc<Turns>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a turn is for, which decides the permits it needs.
#[derive(Clone, Copy)]
enum TurnFor {
    /// A session event, a call from outside, a timer or a reminder: a stack,
    /// and a place among the turns that serve no actor — or, once a call
    /// from an actor waits behind it, a stack alone.
    Outside,
    /// A call from another actor, which waits for it (or an activation
    /// leaving, which frees what it holds): a stack, from the reserve too.
    Actor,
}

/// A permit to run turns: a fiber stack and, for a turn from outside, its
/// place among those.
struct Running {
    _stack: OwnedSemaphorePermit,
    _outside: Option<OwnedSemaphorePermit>,
}

/// Marks a turn stopped by its wall-clock bound.
#[derive(Debug, thiserror::Error)]
#[error("the turn took longer than its wall-clock bound of {0:?}, host calls included")]
struct WallClockExceeded(Duration);

/// `on-timer(name)` and `on-reminder(name)`.
type NamedHook = TypedFunc<(String,), ()>;

/// The lifecycle hooks an activation may run many times, each looked up
/// the first time a turn needs it: most activations never run most of them
/// (a counter gets no timer ticks and no session events), and looking one up
/// is part of what activating costs. The hooks that run at most once
/// (`on-activate`, `on-deactivate`, `snapshot`, `restore`) are looked up
/// when they run.
#[derive(Default)]
struct Hooks {
    on_message: Option<OnMessage>,
    on_timer: Option<NamedHook>,
    on_reminder: Option<NamedHook>,
    on_connect: Option<TypedFunc<(u64,), ()>>,
    on_disconnect: Option<OnDisconnect>,
}

/// `on-message`: a session, the payload and whether it came reliably.
type OnMessage = TypedFunc<(u64, Vec<u8>, bool), ()>;

/// `on-disconnect`: a session and why it ended.
type OnDisconnect = TypedFunc<(u64, DisconnectReason), ()>;

/// How the serving loop ended.
enum End {
    Deactivate,
    Died,
}

/// How wasmtime 48 words the error of a copy past the store's hostcall fuel
/// (its type is private to wasmtime).
const HOSTCALL_FUEL_EXHAUSTED: &str = "fuel allocated for hostcalls has been exhausted";

struct Activation {
    plugin: Arc<Plugin>,
    actor: ActorRef,
    /// The mailbox this activation reads: watched during long turns.
    mailbox: Arc<Mailbox>,
    wall_limit: Duration,
    store: Store<ActivationState>,
    instance: Instance,
    funcs: Vec<Option<Func>>,
    /// The name last looked up and its index: many messages in a row name
    /// the same function.
    last_function: Option<(Arc<str>, usize)>,
    hooks: Hooks,
    /// Whether it started, and so counts among its plugin's activations.
    counted: bool,
    /// Whether it learns the pages its version's first turns write
    /// (`prefault.rs`), once its first batch of turns is done.
    learns: bool,
    /// The host's running turns, and this activation's permit among them
    /// while it has turns to run (and so holds a fiber stack).
    turns: Arc<Turns>,
    running: Option<Running>,
    /// What its actor type counts, if the host counts.
    meters: Option<Arc<TypeMeters>>,
}

/// Runs the activation holding `slot` until it deactivates or dies.
/// In a cluster, `fence` is the claim its writes carry.
///
/// Written as an `async move` block rather than an `async fn`: an async fn
/// keeps a second copy of each argument in its future, and this future is
/// held by every idle activation.
#[allow(clippy::manual_async_fn)]
pub(crate) fn run(
    context: Context,
    plugin: Arc<Plugin>,
    mut slot: Slot,
    fence: Option<Fence>,
    waiting: Waiting,
) -> impl Future<Output = ()> + Send {
    async move {
        let carried = slot.take_carried();
        // Kept until the activation has started: if the new version fails to
        // start and is rolled back, the successor on the version before
        // restores the state that version's snapshot wrote.
        let kept = carried.clone();
        // Boxed: what starting needs stays out of the future that serves.
        let started = Box::pin(Activation::start(
            &context,
            plugin.clone(),
            Start {
                actor: slot.actor().clone(),
                mailbox: slot.mailbox(),
                fence,
                carried,
                waiting,
            },
        ));
        let activation = match started.await {
            Ok(activation) => activation,
            Err(error) => return failed_to_start(&context, &plugin, slot, kept, error),
        };
        drop(kept);
        activation.serve(&context, slot).await
    }
}

/// Fails what was queued for an activation that could not start, and
/// leaves its slot (or hands it to the version before, if the new version
/// was rolled back; `kept` is the state it carried).
fn failed_to_start(
    context: &Context,
    plugin: &Arc<Plugin>,
    slot: Slot,
    kept: Option<Vec<u8>>,
    error: CallError,
) {
    let actor = slot.actor().clone();
    tracing::warn!(%actor, %error, "activation failed");
    if let Some(meters) = &context.services.meters {
        meters.of(&actor.actor_type).failed_to_start.add();
    }
    let rolled_back = matches!(
        error,
        CallError::Unavailable(Unavailable::ActivationFailed { .. })
    ) && versions(context)
        .is_some_and(|versions| versions.failed_to_start(plugin, &error));
    if rolled_back {
        return slot.move_on(kept);
    }
    if kept.is_some() {
        tracing::error!(%actor, "the state carried over from the version before is lost: the new version failed to start");
    }
    // Everything already queued for this attempt fails with the same error;
    // the slot is left empty so the next call tries afresh.
    while let Some(envelope) = slot.try_recv(Instant::now()) {
        envelope.fail(error.clone());
    }
    slot.leave();
}

/// A permit to run turns `turn_for`: at once if one is free, otherwise once
/// a running turn ends, answering meanwhile the queued callers whose
/// deadlines pass. (`None` only if the permits were closed, which the host
/// never does.)
async fn running_turn(turns: &Turns, mailbox: &Mailbox, turn_for: TurnFor) -> Option<Running> {
    let outside = match turn_for {
        TurnFor::Outside => outside_place(turns, mailbox).await?,
        TurnFor::Actor => None,
    };
    Some(Running {
        _stack: permit(&turns.stacks, mailbox).await?,
        _outside: outside,
    })
}

/// A place among the turns from outside, for a turn from outside; none is
/// needed once a call from another actor waits behind the turn. The turn
/// then runs on the way to answering an actor, and may use the reserve:
/// otherwise a cell whose timer is due would wait for the players calling
/// it to finish their turns, and they wait on the cell.
async fn outside_place(turns: &Turns, mailbox: &Mailbox) -> Option<Option<OwnedSemaphorePermit>> {
    if let Ok(place) = turns.outer.clone().try_acquire_owned() {
        return Some(Some(place));
    }
    tokio::select! {
        biased;
        () = mailbox.actor_waits() => Some(None),
        place = permit(&turns.outer, mailbox) => place.map(Some),
    }
}

/// One of `permits`, waiting for it as [`running_turn`] does.
async fn permit(permits: &Arc<Semaphore>, mailbox: &Mailbox) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = permits.clone().try_acquire_owned() {
        return Some(permit);
    }
    warn_turns_wait();
    let waiting = Box::pin(async {
        tokio::select! {
            biased;
            never = mailbox.police(None) => match never {},
            permit = permits.clone().acquire_owned() => permit.ok(),
        }
    });
    waiting.await
}

/// Logs, at most every ten seconds, that turns wait for the running-turn
/// limit: a host that keeps hitting it needs a larger one, or has chains of
/// calls that hold more turns than it allows.
fn warn_turns_wait() {
    static WARNING: Throttled = Throttled::new(Duration::from_secs(10));
    if WARNING.admit().is_some() {
        tracing::warn!(
            "every running turn is taken: turns wait for one to finish \
             (raise --max-running-turns if this lasts)"
        );
    }
}

/// A store for an activation of `actor` whose writes carry `fence`, with
/// its limits and its deadline check.
fn new_store(context: &Context, actor: ActorRef, fence: Option<Fence>) -> Store<ActivationState> {
    let limits = context.limits.for_type(&actor.actor_type);
    let incidents = context.incidents.of(&actor.actor_type);
    let mut data = ActivationState::new(context.services.clone(), actor, limits, incidents);
    data.fence = fence;
    let mut store = Store::new(&context.engine, data);
    store.limiter(|s| &mut s.limiter);
    store.set_hostcall_fuel(context.limits.max_copy);
    // Checked at every epoch tick while guest code runs: long turns yield
    // to other tasks, and a turn past its deadline is stopped.
    store.epoch_deadline_callback(|ctx| {
        let state = ctx.data();
        if Instant::now() >= state.turn_deadline {
            return Err(DeadlineExceeded(state.turn_limit).into());
        }
        Ok(UpdateDeadline::Yield(1))
    });
    store
}

/// Instantiates `plugin` in `store` as part of an activation's first turn.
async fn instantiate(
    mut store: Store<ActivationState>,
    plugin: &Plugin,
    mailbox: &Mailbox,
    wall_limit: Duration,
) -> wasmtime::Result<(Store<ActivationState>, Instance)> {
    // Instantiation runs guest start code: it is part of the first turn.
    store.set_epoch_deadline(1);
    let bound = WallBound::from(Instant::now(), wall_limit);
    // Counted with `on-activate`, not as a turn of its own.
    let instance = {
        let instantiated = pin!(plugin.pre.instantiate_async(&mut store));
        bounded(bound, None, &Span::none(), mailbox, None, instantiated).await?
    };
    Ok((store, instance))
}

/// Whether `error` says the engine's pool has no slot left.
fn at_the_limit(error: &wasmtime::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.is::<wasmtime::PoolConcurrencyLimitError>())
}

/// The host's plugin versions, if it still exists.
fn versions(context: &Context) -> Option<Arc<dyn Versions>> {
    context.versions.get().and_then(Weak::upgrade)
}

/// Notes that an activation of `plugin` started and, unless a task already
/// does, starts one topping its pool of instances made ahead up to
/// [`Limits::warm_activations`]. Not in a burst (more than
/// [`warm::QUIET_TURNS`] turns running): the next activation after it does.
fn make_ahead(context: &Context, plugin: &Arc<Plugin>) {
    if context.limits.warm_activations == 0 || !quiet(context) || !plugin.warm.draw() {
        return;
    }
    tokio::spawn(top_up(context.clone(), plugin.clone()));
}

/// Whether instances of `plugin` may be made ahead now: few turns run,
/// `plugin` is the version its type runs, and no activation found every
/// slot taken lately.
fn may_make_ahead(context: &Context, plugin: &Arc<Plugin>) -> bool {
    quiet(context) && versions(context).is_some_and(|v| v.may_make_ahead(plugin))
}

/// Whether few enough turns run to make instances ahead.
fn quiet(context: &Context) -> bool {
    context.turns.running() <= warm::QUIET_TURNS
}

/// Makes instances of `plugin` ahead until its pool holds
/// [`Limits::warm_activations`], unless a burst starts, `plugin` is no
/// longer the version its type runs, or an activation found every slot
/// taken lately. Starts after [`warm::DEFER`], or at once if the pool ran
/// dry, so that the activation that drew on it runs its first turns alone.
async fn top_up(context: Context, plugin: Arc<Plugin>) {
    let target = context.limits.warm_activations as usize;
    let may_make = || may_make_ahead(&context, &plugin);
    plugin.warm.defer_unless_dry().await;
    loop {
        while plugin.warm.missing(target) > 0 {
            if !may_make() {
                return plugin.warm.stop_topping();
            }
            let Ok(warm) = instantiate_ahead(&context, &plugin).await else {
                return plugin.warm.stop_topping();
            };
            // Made while an activation found every slot taken: its slot
            // goes back.
            if !may_make() {
                return plugin.warm.stop_topping();
            }
            plugin.warm.put(warm);
        }
        // Done, unless an activation drew on the pool after the last look.
        if !plugin.warm.done_topping() {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Starts the task preparing slots for `plugin` (see `warm.rs`), unless
/// none are to be prepared or it runs already.
fn prepare_slots(context: &Context, plugin: &Arc<Plugin>) {
    if context.limits.prepared_slots > 0 && plugin.warm.start_preparing() {
        tokio::spawn(prepare(context.clone(), plugin.clone()));
    }
}

/// Prepares slots for `plugin` up to [`Limits::prepared_slots`] while the
/// host is idle: no activation started for [`warm::IDLE`] and few turns
/// running; while the host stays busy it looks less often, down to once
/// every [`warm::LOOK_AGAIN_AT_MOST`]. It pauses when an activation starts, holding the instances it
/// made (activations take them), and ends once the slots are prepared, the
/// version's pool is closed (a deploy, a rollback, shutdown) or the host is
/// gone, or an instance cannot be made for another reason than a busy host
/// (every slot taken, say). Yields between instances, so that turns on the
/// same worker go first.
async fn prepare(context: Context, plugin: Arc<Plugin>) {
    let target = context.limits.prepared_slots as usize;
    // How long to wait before looking again for an idle moment: doubled
    // each time the host was busy, so a host that never idles wakes this
    // task about once a second.
    let mut busy_for = Duration::ZERO;
    'preparing: while plugin.warm.unprepared(target) > 0 && versions(&context).is_some() {
        if !busy_for.is_zero() {
            tokio::time::sleep(busy_for).await;
        }
        let seen = context.turns.activations_started();
        tokio::time::sleep(warm::IDLE).await;
        if context.turns.activations_started() != seen {
            busy_for = (busy_for * 2).clamp(warm::IDLE, warm::LOOK_AGAIN_AT_MOST);
            continue;
        }
        busy_for = Duration::ZERO;
        while plugin.warm.unprepared(target) > 0
            && context.turns.activations_started() == seen
            && may_make_ahead(&context, &plugin)
        {
            match instantiate_ahead(&context, &plugin).await {
                // Made while an activation found every slot taken: its
                // slot goes back.
                Ok(warm) if !may_make_ahead(&context, &plugin) => drop(warm),
                Ok(warm) => plugin.warm.hold(warm),
                // Wait for the next idle moment.
                Err(NotMade::Busy) => break,
                Err(NotMade::Failed) => break 'preparing,
            }
            tokio::task::yield_now().await;
        }
    }
    let prepared = plugin.warm.release_prepared();
    tracing::debug!(
        actor_type = %plugin.actor_type,
        slots = plugin.warm.prepared(),
        "slots prepared"
    );
    // Each drop resets a slot: a few at a time, the worker's other tasks
    // in between.
    let mut prepared = prepared.into_iter();
    loop {
        let chunk: Vec<Warm> = prepared.by_ref().take(RELEASED_AT_ONCE).collect();
        if chunk.is_empty() {
            break;
        }
        drop(chunk);
        tokio::task::yield_now().await;
    }
}

/// Instances held to prepare slots dropped between two yields.
const RELEASED_AT_ONCE: usize = 64;

/// Why no instance was made ahead.
enum NotMade {
    /// No place among the turns from outside, or no fiber stack, was free
    /// to run its start code.
    Busy,
    /// Instantiation failed, or ran past a turn's wall-clock bound.
    Failed,
}

/// An instance of `plugin` for no actor yet, if a place among the turns
/// from outside and a fiber stack are free to run its start code, and it
/// instantiates within a turn's limits.
async fn instantiate_ahead(context: &Context, plugin: &Plugin) -> Result<Warm, NotMade> {
    let busy = |_| NotMade::Busy;
    let outside = context
        .turns
        .outer
        .clone()
        .try_acquire_owned()
        .map_err(busy)?;
    let stack = context
        .turns
        .stacks
        .clone()
        .try_acquire_owned()
        .map_err(busy)?;
    let mut store = new_store(context, ActorRef::new(&plugin.actor_type, ""), None);
    store.set_epoch_deadline(1);
    let wall_limit = context.limits.for_type(&plugin.actor_type).turn_wall_time;
    let instantiated = plugin.pre.instantiate_async(&mut store);
    let outcome = tokio::time::timeout(wall_limit, instantiated).await;
    let instance = match outcome {
        Ok(Ok(instance)) => instance,
        Ok(Err(e)) => {
            let error = format!("{e:#}");
            tracing::debug!(actor_type = %plugin.actor_type, %error, "not made ahead");
            return Err(NotMade::Failed);
        }
        Err(_) => {
            tracing::debug!(actor_type = %plugin.actor_type, "not made ahead: past the turn's wall-clock bound");
            return Err(NotMade::Failed);
        }
    };
    store.release_fiber_stack();
    // Faulting in needs neither a stack nor a place among the turns.
    drop((outside, stack));
    plugin.first_turn.fault_in(&store);
    Ok(Warm { store, instance })
}

/// What an activation starts with besides its plugin.
struct Start {
    actor: ActorRef,
    mailbox: Arc<Mailbox>,
    fence: Option<Fence>,
    /// State the activation before carried over, to restore.
    carried: Option<Vec<u8>>,
    /// Counts the activation among those waiting to start until it starts.
    waiting: Waiting,
}

/// A turn's wall-clock bound: when it started and ends, and how long it is.
#[derive(Clone, Copy)]
struct WallBound {
    started: Instant,
    deadline: Instant,
    limit: Duration,
}

impl WallBound {
    fn from(now: Instant, limit: Duration) -> WallBound {
        WallBound {
            started: now,
            deadline: now + limit,
            limit,
        }
    }

    /// Counts the turn, now over, in its actor type's turn latency.
    fn took(&self, meters: Option<&TypeMeters>) {
        if let Some(meters) = meters {
            meters.turns.observe(self.started.elapsed());
        }
    }
}

/// Runs `turn` within its wall-clock `bound` and in `span` (marked `ok` if
/// it succeeds; a failure is marked with its kind once classified),
/// answering callers whose deadlines pass meanwhile: the turn's own
/// `caller` and those of the calls queued in `mailbox`.
///
/// Most turns finish in their first poll (guest code that neither waits on
/// the host nor runs past an epoch tick): those arm no timer at all.
///
/// The caller pins `turn` and lends it, and the arguments are captured by
/// an `async move` block rather than an `async fn`. An `async fn` keeps
/// its arguments and again the locals made of them, and a turn taken by
/// value would be stored a second time once pinned inside; every call's
/// turn lives in a batch future boxed per batch (see
/// [`Activation::batch`]).
///
/// `turn` is polled inside `span`, as `Instrument` would poll it, but it is
/// dropped by its caller, outside the span: a turn cut off by its bound
/// unwinds its host calls there (nothing on that path logs today).
fn bounded<'a, T, F>(
    bound: WallBound,
    meters: Option<&'a TypeMeters>,
    span: &'a Span,
    mailbox: &'a Mailbox,
    caller: Option<Caller<'a>>,
    mut turn: Pin<&'a mut F>,
) -> impl Future<Output = wasmtime::Result<T>> + 'a
where
    F: Future<Output = wasmtime::Result<T>>,
{
    // Polled inside `span`.
    let mut turn = std::future::poll_fn(move |cx| {
        let _entered = span.enter();
        turn.as_mut().poll(cx)
    });
    async move {
        let first = std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut turn).poll(cx))).await;
        if let Poll::Ready(done) = first {
            bound.took(meters);
            if done.is_ok() {
                trace::ended(span, "ok");
            }
            return done;
        }
        // Boxed: the slow path's state stays out of every activation's
        // future. The police is polled first, so that it watches deadlines
        // from the turn's first yield on, even if the turn ends at its next
        // poll.
        let slow = Box::pin(async {
            tokio::select! {
                biased;
                never = mailbox.police(caller) => match never {},
                done = &mut turn => done,
                () = tokio::time::sleep_until(bound.deadline.into()) => {
                    Err(WallClockExceeded(bound.limit).into())
                }
            }
        });
        let done = slow.await;
        bound.took(meters);
        if done.is_ok() {
            trace::ended(span, "ok");
        }
        done
    }
}

/// The hook `cached` holds, or the export at `index` of `instance`, looked
/// up now and kept there.
fn cached_hook<P, R>(
    store: &mut Store<ActivationState>,
    instance: Instance,
    cached: &mut Option<TypedFunc<P, R>>,
    index: ComponentExportIndex,
) -> wasmtime::Result<TypedFunc<P, R>>
where
    P: ComponentNamedList + Lower + Send + Sync + 'static,
    R: ComponentNamedList + Lift + Send + Sync + 'static,
{
    if let Some(found) = *cached {
        return Ok(found);
    }
    let found = instance.get_typed_func(store, index)?;
    *cached = Some(found);
    Ok(found)
}

impl Drop for Activation {
    fn drop(&mut self) {
        if self.learns {
            self.plugin.first_turn.give_up();
        }
        if self.counted {
            self.plugin
                .live
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(meters) = &self.meters {
                meters.ended.add();
            }
        }
    }
}

impl Activation {
    async fn start(
        context: &Context,
        plugin: Arc<Plugin>,
        start: Start,
    ) -> Result<Self, CallError> {
        let Start {
            actor,
            mailbox,
            fence,
            carried,
            waiting,
        } = start;
        drop(waiting);
        context.turns.activation_starts();
        // Instantiation runs guest code on a fiber: it is a running turn.
        let turn_for = if mailbox.first_serves_an_actor() {
            TurnFor::Actor
        } else {
            TurnFor::Outside
        };
        let running = running_turn(&context.turns, &mailbox, turn_for).await;
        let meters = context
            .services
            .meters
            .as_ref()
            .map(|m| m.of(&actor.actor_type));
        // Named only if the activation fails.
        let named = actor.clone();
        let failed = |message: String| {
            CallError::Unavailable(Unavailable::ActivationFailed {
                actor: named.to_string(),
                message,
            })
        };
        let wall_limit = context.limits.for_type(&actor.actor_type).turn_wall_time;
        let (mut store, instance) = match plugin.warm.take() {
            Some(Warm {
                mut store,
                instance,
            }) => {
                if let Some(meters) = &meters {
                    meters.made_ahead.add();
                }
                let state = store.data_mut();
                state.assign(actor.clone());
                state.fence = fence;
                (store, instance)
            }
            None => {
                let instantiate = || {
                    let store = new_store(context, actor.clone(), fence.clone());
                    instantiate(store, &plugin, &mailbox, wall_limit)
                };
                let mut instantiated = instantiate().await;
                // At the limit, instances made ahead give their slots up;
                // one being made holds its slot for a moment longer.
                for _ in 0..GIVE_WAY_TRIES {
                    match &instantiated {
                        Err(e) if at_the_limit(e) => {
                            if let Some(versions) = versions(context) {
                                versions.give_way();
                            }
                            tokio::time::sleep(GIVE_WAY_PAUSE).await;
                            instantiated = instantiate().await;
                        }
                        _ => break,
                    }
                }
                let (store, instance) = instantiated.map_err(|e| failed(format!("{e:#}")))?;
                // In a crowd, as for an instance made ahead: the other
                // cores run the host's threads, and a page the first turns
                // read, then write, would interrupt them. Alone, the turn
                // faults in only the pages it touches, sooner.
                if context.turns.crowd_waits() {
                    plugin.first_turn.fault_in(&store);
                }
                (store, instance)
            }
        };
        let on_activate: TypedFunc<(), ()> = instance
            .get_typed_func(&mut store, plugin.lifecycle.on_activate)
            .map_err(|e| failed(format!("{e:#}")))?;
        plugin
            .disconnect_checked
            .get_or_init(|| {
                instance
                    .get_typed_func::<(u64, DisconnectReason), ()>(
                        &mut store,
                        plugin.lifecycle.on_disconnect,
                    )
                    .map(drop)
                    .map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(failed)?;
        let funcs = vec![None; plugin.functions.len()];
        let mut activation = Activation {
            hooks: Hooks::default(),
            plugin,
            actor,
            mailbox,
            wall_limit,
            store,
            instance,
            funcs,
            last_function: None,
            counted: false,
            learns: false,
            turns: context.turns.clone(),
            running,
            meters,
        };
        match (carried, activation.plugin.migrate) {
            (Some(state), Some(exports)) => {
                let restore: TypedFunc<(Vec<u8>,), ()> = activation
                    .instance
                    .get_typed_func(&mut activation.store, exports.restore)
                    .map_err(|e| failed(format!("{e:#}")))?;
                let bound = activation.begin_turn(Instant::now());
                let span = trace::turn(&activation.actor, "restore", None);
                let restored = {
                    let restored = pin!(restore.call_async(&mut activation.store, (state,)));
                    bounded(
                        bound,
                        activation.meters.as_deref(),
                        &span,
                        &activation.mailbox,
                        None,
                        restored,
                    )
                    .await
                };
                if let Err(e) = restored {
                    let error = activation.classify("restore", e, &span);
                    return Err(failed(format!("restore failed: {error}")));
                }
            }
            (Some(_), None) => tracing::info!(
                actor = %activation.actor,
                "the new version does not export {}: the state carried over is dropped",
                crate::plugin::MIGRATE_INTERFACE
            ),
            (None, _) => {}
        }
        activation.learns = activation
            .plugin
            .first_turn
            .start_learning(&activation.store);
        let bound = activation.begin_turn(Instant::now());
        let span = trace::turn(&activation.actor, "on-activate", None);
        let activated = {
            let activated = pin!(on_activate.call_async(&mut activation.store, ()));
            bounded(
                bound,
                activation.meters.as_deref(),
                &span,
                &activation.mailbox,
                None,
                activated,
            )
            .await
        };
        if let Err(e) = activated {
            return Err(match activation.classify("on-activate", e, &span) {
                unavailable @ CallError::Unavailable(Unavailable::StateUnavailable { .. }) => {
                    unavailable
                }
                other => failed(format!("on-activate failed: {other}")),
            });
        }
        tracing::debug!(actor = %activation.actor, "activated");
        make_ahead(context, &activation.plugin);
        // Counted from here until the activation is dropped.
        activation
            .plugin
            .live
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        activation.counted = true;
        if let Some(meters) = &activation.meters {
            meters.activated.add();
        }
        Ok(activation)
    }

    /// Waits, if it must, until this activation may run turns `turn_for`.
    async fn acquire_turn(&mut self, turn_for: TurnFor) {
        if self.running.is_none() {
            self.running = running_turn(&self.turns, &self.mailbox, turn_for).await;
        }
    }

    /// Gives the fiber stack back to the pool and the permit to run turns
    /// back to the host, and frees the mailbox's buffer: the activation has
    /// nothing to do for now.
    fn go_idle(&mut self) {
        if let Some(permit) = self.running.take() {
            // The stack first: the permit's next holder may need it.
            self.store.release_fiber_stack();
            drop(permit);
            self.mailbox.free_room_if_empty();
        }
    }

    /// Starts a turn at `now`; returns its wall-clock bound.
    fn begin_turn(&mut self, now: Instant) -> WallBound {
        self.mailbox.count_turn();
        let bound = WallBound::from(now, self.wall_limit);
        let state = self.store.data_mut();
        state.turn_deadline = now + state.turn_limit;
        state.turn_wall_deadline = bound.deadline;
        state.state_failure = None;
        self.store.set_epoch_deadline(1);
        bound
    }

    /// Turns a failed turn's error into what the caller sees, marks the
    /// turn's span with its kind, and counts it as an incident of the
    /// actor's type unless the state backend failed.
    fn classify(&self, function: &str, error: wasmtime::Error, span: &Span) -> CallError {
        let error = self.classify_uncounted(function, error);
        trace::ended(span, error.kind());
        let incident = match &error {
            CallError::Failed(ActorFailure::DeadlineExceeded { .. }) => Incident::DeadlineExceeded,
            CallError::Failed(ActorFailure::LimitExceeded { .. }) => Incident::LimitExceeded,
            CallError::Failed(ActorFailure::OutOfMemory { .. }) => Incident::OutOfMemory,
            CallError::Failed(ActorFailure::Trapped { .. }) => Incident::Trapped,
            _ => return error,
        };
        self.store.data().incidents.add(incident);
        error
    }

    fn classify_uncounted(&self, function: &str, error: wasmtime::Error) -> CallError {
        let actor = self.actor.to_string();
        let function = function.to_owned();
        if let Some(d) = error.downcast_ref::<DeadlineExceeded>() {
            return CallError::Failed(ActorFailure::DeadlineExceeded {
                actor,
                function,
                limit: d.0,
            });
        }
        if let Some(w) = error.downcast_ref::<WallClockExceeded>() {
            return CallError::Failed(ActorFailure::DeadlineExceeded {
                actor,
                function,
                limit: w.0,
            });
        }
        if let Some(l) = error.downcast_ref::<LimitExceeded>() {
            return CallError::Failed(ActorFailure::LimitExceeded {
                actor,
                function,
                message: l.to_string(),
            });
        }
        if let Some(m) = error.downcast_ref::<MemoryLimitExceeded>() {
            return CallError::Failed(ActorFailure::OutOfMemory {
                actor,
                function,
                message: m.to_string(),
            });
        }
        if error
            .chain()
            .any(|cause| cause.to_string().contains(HOSTCALL_FUEL_EXHAUSTED))
        {
            return CallError::Failed(ActorFailure::LimitExceeded {
                actor,
                function,
                message: format!(
                    "a host call or result copied more than {} MiB out of the actor",
                    self.store.hostcall_fuel() >> 20
                ),
            });
        }
        if let Some(message) = self.store.data().state_failure.clone() {
            return CallError::Unavailable(Unavailable::StateUnavailable {
                actor,
                function,
                message,
            });
        }
        let mut reason = error.root_cause().to_string();
        if let Some(output) = self.store.data().output.tail() {
            let last: Vec<&str> = output.lines().rev().take(5).collect();
            let last: Vec<&str> = last.into_iter().rev().collect();
            reason.push_str("; guest output: ");
            reason.push_str(&last.join(" | "));
        }
        let backtrace = error
            .downcast_ref::<WasmBacktrace>()
            .map(|bt| bt.to_string());
        CallError::Failed(ActorFailure::Trapped {
            actor,
            function,
            reason,
            backtrace,
        })
    }

    /// The function called `name` in the plugin this activation runs.
    fn func(&mut self, name: &Arc<str>) -> Result<(usize, Func), CallError> {
        let unknown = || {
            CallError::Rejected(RejectedCall::UnknownFunction {
                actor_type: self.actor.actor_type.to_string(),
                function: name.to_string(),
            })
        };
        let index = match &self.last_function {
            Some((last, index)) if **last == **name => *index,
            _ => {
                let (index, _) = self.plugin.function(name).ok_or_else(unknown)?;
                self.last_function = Some((name.clone(), index));
                index
            }
        };
        if let Some(Some(f)) = self.funcs.get(index) {
            return Ok((index, *f));
        }
        let function = self.plugin.functions.get(index).ok_or_else(unknown)?;
        let f = self
            .instance
            .get_func(&mut self.store, function.index)
            .ok_or_else(unknown)?;
        if let Some(slot) = self.funcs.get_mut(index) {
            *slot = Some(f);
        }
        Ok((index, f))
    }

    /// Counts a call of the function at `index` answered with `outcome`.
    fn count_call(&self, index: Option<usize>, outcome: Result<(), &CallError>) {
        if let Some(calls) = index.and_then(|index| self.plugin.calls.get(index)) {
            calls.count(outcome);
        }
    }

    /// Runs one call as a turn. `Err` means the activation died.
    ///
    /// The message is taken apart before the future is made, so that the
    /// future holds its parts once, not the message beside them as an
    /// `async fn` would.
    fn call(&mut self, message: CallMessage) -> impl Future<Output = Result<(), ()>> + Send + '_ {
        let now = Instant::now();
        let message_expired = message.expired(now);
        let CallMessage {
            function,
            mut args,
            chain,
            deadline,
            reply,
            trace: traced_from,
            ..
        } = message;
        async move {
            let one_way = reply.is_none();
            let mut reply = match reply {
                // A caller that stopped waiting is not answered; one whose
                // deadline passed in the queue is answered with a timeout. Its
                // call does not run. One-way sends always run.
                Some(reply) if reply.is_closed() => return Ok(()),
                Some(reply) if message_expired => {
                    // Counted as a timeout where the caller waited.
                    reply.time_out(&self.actor, &function);
                    return Ok(());
                }
                reply => reply,
            };
            // The caller, if it still waits; a one-way send's failure is logged.
            let answer = |reply: Option<Reply>, outcome: Answer| match reply {
                Some(reply) => reply.send(outcome),
                None if one_way => {
                    if let Err(error) = outcome {
                        tracing::warn!(%error, "one-way message failed");
                    }
                }
                None => tracing::debug!("a call ended after its caller's timeout"),
            };
            let (index, func) = match self.func(&function) {
                Ok(found) => found,
                Err(error) => {
                    answer(reply, Err(error));
                    return Ok(());
                }
            };
            let Some(signature) = self.plugin.functions.get(index) else {
                return Ok(());
            };
            // Values queued for, or sent by a caller built against, a version
            // before a deploy are brought to this one's types.
            if let Err(message) = values::conform_args(signature, &mut args) {
                let error = CallError::Rejected(RejectedCall::BadArguments {
                    function: function.to_string(),
                    message,
                });
                self.count_call(Some(index), Err(&error));
                answer(reply, Err(error));
                return Ok(());
            }
            // The result's slot, on the stack rather than in a vector allocated
            // per call.
            let mut result = [Val::Bool(false)];
            let results = if signature.result.is_some() {
                &mut result[..]
            } else {
                &mut result[..0]
            };
            // Results go back to a calling actor as a message: they are capped.
            let from_actor = chain.is_some();
            if let (Some(meters), Some(reply)) = (self.meters.as_deref(), &reply) {
                // The deadline is the moment the call was made plus its timeout.
                if let Some(made) = deadline.checked_sub(reply.timeout()) {
                    meters.queued.observe(now.saturating_duration_since(made));
                }
            }
            let bound = self.begin_turn(now);
            self.store.data_mut().chain = chain;
            let caller = (!one_way).then_some(Caller {
                deadline,
                reply: &mut reply,
                actor: &self.actor,
                function: &function,
            });
            let span = trace::turn(&self.actor, &function, traced_from);
            let outcome = {
                let turn = pin!(func.call_async(&mut self.store, &args, results));
                bounded(
                    bound,
                    self.meters.as_deref(),
                    &span,
                    &self.mailbox,
                    caller,
                    turn,
                )
                .await
            };
            self.store.data_mut().chain = None;
            match outcome {
                Ok(()) => {
                    let size = if from_actor { message_size(results) } else { 0 };
                    let outcome = if size > MAX_MESSAGE_SIZE {
                        Err(CallError::Rejected(RejectedCall::MessageTooLarge {
                            actor: self.actor.to_string(),
                            size,
                            limit: MAX_MESSAGE_SIZE,
                        }))
                    } else {
                        Ok(results
                            .first_mut()
                            .map(|slot| std::mem::replace(slot, Val::Bool(false))))
                    };
                    // A caller that gave up meanwhile counted a timeout.
                    if reply.is_some() || one_way {
                        self.count_call(Some(index), outcome.as_ref().map(drop));
                    }
                    if let Err(error) = &outcome {
                        trace::ended(&span, error.kind());
                    }
                    answer(reply.take(), outcome);
                    Ok(())
                }
                Err(e) => {
                    let error = self.classify(&function, e, &span);
                    tracing::warn!(actor = %self.actor, %error, "activation ended by a failed call");
                    if reply.is_some() || one_way {
                        self.count_call(Some(index), Err(&error));
                    }
                    answer(reply.take(), Err(error));
                    Err(())
                }
            }
        }
    }

    /// Runs a lifecycle hook as a turn, reporting the outcome on `done`.
    /// `Err` means the activation died.
    fn hook(
        &mut self,
        hook: &str,
        span: &Span,
        done: Option<oneshot::Sender<Result<(), CallError>>>,
        outcome: wasmtime::Result<()>,
    ) -> Result<(), ()> {
        let result = outcome.map_err(|e| self.classify(hook, e, span));
        if let Err(error) = &result {
            tracing::warn!(actor = %self.actor, %error, "activation ended by a failed {hook}");
        }
        let died = result.is_err();
        if let Some(done) = done {
            let _ = done.send(result);
        }
        if died {
            Err(())
        } else {
            Ok(())
        }
    }

    /// Takes a running turn, then runs `envelope` and the messages queued
    /// behind it, up to [`BATCH`]; how the activation ends, if one of them
    /// ended it.
    ///
    /// Boxed by its caller, once per batch: written as a plain function
    /// returning an `async move` block so that the envelope is held once.
    fn batch<'a>(
        &'a mut self,
        slot: &'a Slot,
        mut envelope: Envelope,
    ) -> impl Future<Output = Option<End>> + Send + 'a {
        let turn_for = if envelope.serves_an_actor() {
            TurnFor::Actor
        } else {
            TurnFor::Outside
        };
        async move {
            self.acquire_turn(turn_for).await;
            for handled in 1.. {
                if self.handle(envelope).await.is_err() {
                    return Some(End::Died);
                }
                if self.store.data().deactivate_requested {
                    return Some(End::Deactivate);
                }
                if handled == BATCH || slot.is_stopping() {
                    break;
                }
                match slot.try_recv(Instant::now()) {
                    Some(next) => envelope = next,
                    None => break,
                }
            }
            None
        }
    }

    /// Runs one envelope as a turn. `Err` means the activation died.
    ///
    /// Each kind of turn is a future of its own, so that the envelope is
    /// not held beside the parts each one takes from it.
    fn handle(&mut self, envelope: Envelope) -> impl Future<Output = Result<(), ()>> + Send + '_ {
        match envelope {
            Envelope::Call(message) => Either::Left(self.call(message)),
            Envelope::Reminder { name, done, .. } => {
                Either::Right(Either::Left(self.reminder(name, done)))
            }
            Envelope::Session { event, done, .. } => {
                Either::Right(Either::Right(self.session(event, done)))
            }
        }
    }

    /// Runs `on-reminder(name)` as a turn, reporting the outcome on `done`.
    /// `Err` means the activation died.
    fn reminder(
        &mut self,
        name: String,
        done: oneshot::Sender<Result<(), CallError>>,
    ) -> impl Future<Output = Result<(), ()>> + Send + '_ {
        if let Some(meters) = &self.meters {
            meters.reminders_fired.add();
        }
        let index = self.plugin.lifecycle.on_reminder;
        self.named_hook(
            "on-reminder",
            |hooks| &mut hooks.on_reminder,
            index,
            name,
            Some(done),
        )
    }

    /// Runs `hook(name)` (`on-timer` or `on-reminder`: the export at
    /// `index`, kept where `cached` points once looked up) as a turn,
    /// reporting the outcome on `done`. `Err` means the activation died.
    // Not an `async fn`: written as one, it made the batch future 1,032
    // bytes against 960 (see `THREAD_CACHE_MAX`).
    #[allow(clippy::manual_async_fn)]
    fn named_hook(
        &mut self,
        hook: &'static str,
        cached: fn(&mut Hooks) -> &mut Option<NamedHook>,
        index: ComponentExportIndex,
        name: String,
        done: Option<oneshot::Sender<Result<(), CallError>>>,
    ) -> impl Future<Output = Result<(), ()>> + Send + '_ {
        async move {
            let bound = self.begin_turn(Instant::now());
            let span = trace::turn(&self.actor, hook, None);
            let (store, instance) = (&mut self.store, self.instance);
            let cached = cached(&mut self.hooks);
            let outcome = {
                let turn = pin!(async move {
                    cached_hook(store, instance, cached, index)?
                        .call_async(store, (name,))
                        .await
                });
                let meters = self.meters.as_deref();
                bounded(bound, meters, &span, &self.mailbox, None, turn).await
            };
            self.hook(hook, &span, done, outcome)
        }
    }

    /// Runs the hook for a session `event` as a turn, reporting the outcome
    /// on `done`. `Err` means the activation died.
    // Not an `async fn`: written as one, it made the batch future 1,032
    // bytes against 960 (see `THREAD_CACHE_MAX`).
    #[allow(clippy::manual_async_fn)]
    fn session(
        &mut self,
        event: SessionEvent,
        done: Option<oneshot::Sender<Result<(), CallError>>>,
    ) -> impl Future<Output = Result<(), ()>> + Send + '_ {
        async move {
            let hook = event.hook();
            let bound = self.begin_turn(Instant::now());
            let span = trace::turn(&self.actor, hook, None);
            let (store, instance) = (&mut self.store, self.instance);
            let (hooks, lifecycle) = (&mut self.hooks, &self.plugin.lifecycle);
            let outcome = {
                let turn = pin!(async move {
                    match event {
                        SessionEvent::Connect(session) => {
                            cached_hook(
                                store,
                                instance,
                                &mut hooks.on_connect,
                                lifecycle.on_connect,
                            )?
                            .call_async(store, (session,))
                            .await
                        }
                        SessionEvent::Message {
                            session,
                            payload,
                            reliable,
                        } => {
                            cached_hook(
                                store,
                                instance,
                                &mut hooks.on_message,
                                lifecycle.on_message,
                            )?
                            .call_async(store, (session, payload, reliable))
                            .await
                        }
                        SessionEvent::Disconnect { session, reason } => {
                            cached_hook(
                                store,
                                instance,
                                &mut hooks.on_disconnect,
                                lifecycle.on_disconnect,
                            )?
                            .call_async(store, (session, reason))
                            .await
                        }
                    }
                });
                let meters = self.meters.as_deref();
                bounded(bound, meters, &span, &self.mailbox, None, turn).await
            };
            self.hook(hook, &span, done, outcome)
        }
    }

    /// Runs one timer tick as a turn. `Err` means the activation died.
    fn tick(&mut self, name: String) -> impl Future<Output = Result<(), ()>> + Send + '_ {
        if let Some(meters) = &self.meters {
            meters.timers_fired.add();
        }
        let index = self.plugin.lifecycle.on_timer;
        self.named_hook("on-timer", |hooks| &mut hooks.on_timer, index, name, None)
    }

    /// Serves turns until the activation ends, then leaves `slot`. An
    /// `async move` block, not an `async fn`, for the reason given at
    /// [`run`].
    #[allow(clippy::manual_async_fn)]
    fn serve(mut self, context: &Context, slot: Slot) -> impl Future<Output = ()> + Send + '_ {
        async move {
            let idle_timeout = context.idle_timeout;
            let mut last_activity = Instant::now();
            let idle = sleep(idle_timeout);
            tokio::pin!(idle);
            let timer = sleep(Duration::ZERO);
            tokio::pin!(timer);
            let mut timer_armed: Option<Instant> = None;
            // Timer ticks may not start before this: they get at most half of
            // the actor's time.
            let mut timer_gate = Instant::now();

            let end = 'serve: loop {
                let next_tick = self
                    .store
                    .data()
                    .timers
                    .next_due()
                    .map(|at| at.max(timer_gate));
                if next_tick != timer_armed {
                    if let Some(at) = next_tick {
                        timer.as_mut().reset(at.into());
                    }
                    timer_armed = next_tick;
                }
                // Shutdown stops the mailbox (`recv` answers `None`); an
                // activation started during the shutdown sees the flag here.
                if slot.is_stopping() {
                    break 'serve End::Deactivate;
                }
                self.go_idle();
                tokio::select! {
                    biased;
                    envelope = slot.recv() => {
                        let Some(envelope) = envelope else { break 'serve End::Deactivate };
                        last_activity = Instant::now();
                        // Boxed, the wait for a running turn included: a
                        // turn's state (the message first) lives on the heap
                        // while it runs, not in every idle activation's task.
                        // The box is made per batch: see `THREAD_CACHE_MAX`.
                        let batch = Box::pin(self.batch(&slot, envelope));
                        debug_assert!(
                            std::mem::size_of_val(&*batch) <= THREAD_CACHE_MAX,
                            "a batch future of {} bytes: every batch takes glibc's slow path",
                            std::mem::size_of_val(&*batch),
                        );
                        if let Some(end) = batch.await {
                            break 'serve end;
                        }
                        if std::mem::take(&mut self.learns) {
                            self.plugin.first_turn.learn(&self.store);
                            // Slots can be prepared now.
                            prepare_slots(context, &self.plugin);
                        }
                    }
                    () = &mut timer, if timer_armed.is_some() => {
                        timer_armed = None;
                        if let Some(tick) = self.store.data_mut().timers.take_next_due(Instant::now()) {
                            if tick.keep_alive {
                                last_activity = Instant::now();
                            }
                            self.acquire_turn(TurnFor::Outside).await;
                            let started = Instant::now();
                            if Box::pin(self.tick(tick.name)).await.is_err() {
                                break 'serve End::Died;
                            }
                            let now = Instant::now();
                            timer_gate = now + now.duration_since(started);
                            if self.store.data().deactivate_requested {
                                break 'serve End::Deactivate;
                            }
                        }
                    }
                    () = &mut idle => {
                        if last_activity.elapsed() >= idle_timeout {
                            break 'serve End::Deactivate;
                        }
                        idle.as_mut().reset((last_activity + idle_timeout).into());
                    }
                }
            };

            // Leaving frees what the activation holds: it may use the
            // reserve.
            self.acquire_turn(TurnFor::Actor).await;
            let mut carried = None;
            match end {
                End::Deactivate => {
                    if self.mailbox.stopped() == Some(Stop::Upgrade) {
                        carried = Box::pin(self.snapshot()).await;
                    }
                    Box::pin(self.deactivate()).await;
                }
                // A turn cut off may have queued state writes it never saw
                // acknowledged: let them land before a successor reads state.
                End::Died => {
                    let settle = context.services.state.settle();
                    let settled = Box::pin(async {
                        tokio::select! {
                            settled = tokio::time::timeout(self.wall_limit, settle) => settled,
                            never = self.mailbox.police(None) => match never {},
                        }
                    })
                    .await;
                    if !matches!(settled, Ok(Ok(()))) {
                        tracing::warn!(actor = %self.actor, "state writes of a failed turn did not settle");
                    }
                }
            }
            // The instance goes back to the pool before a successor needs one.
            drop(self);
            match carried {
                Some(state) => slot.leave_carrying(state),
                None => slot.leave(),
            }
        }
    }

    /// Runs `snapshot`, if the plugin exports it, for the state to carry to
    /// the next version; a failure is logged, and nothing is carried.
    async fn snapshot(&mut self) -> Option<Vec<u8>> {
        let exports = self.plugin.migrate?;
        let bound = self.begin_turn(Instant::now());
        let span = trace::turn(&self.actor, "snapshot", None);
        let (store, instance) = (&mut self.store, self.instance);
        let outcome = {
            let turn = pin!(async move {
                let snapshot: TypedFunc<(), (Vec<u8>,)> =
                    instance.get_typed_func(&mut *store, exports.snapshot)?;
                snapshot.call_async(store, ()).await
            });
            let meters = self.meters.as_deref();
            bounded(bound, meters, &span, &self.mailbox, None, turn).await
        };
        match outcome {
            Ok((state,)) => Some(state),
            Err(e) => {
                let error = self.classify("snapshot", e, &span);
                tracing::warn!(actor = %self.actor, %error, "snapshot failed: no state is carried to the new version");
                None
            }
        }
    }

    /// Cancels the timers and runs `on-deactivate`.
    async fn deactivate(&mut self) {
        self.store.data_mut().timers.clear();
        let bound = self.begin_turn(Instant::now());
        let span = trace::turn(&self.actor, "on-deactivate", None);
        let (store, instance) = (&mut self.store, self.instance);
        let index = self.plugin.lifecycle.on_deactivate;
        let outcome = {
            let turn = pin!(async move {
                let on_deactivate: TypedFunc<(), ()> =
                    instance.get_typed_func(&mut *store, index)?;
                on_deactivate.call_async(store, ()).await
            });
            let meters = self.meters.as_deref();
            bounded(bound, meters, &span, &self.mailbox, None, turn).await
        };
        match outcome {
            Err(e) => {
                let error = self.classify("on-deactivate", e, &span);
                tracing::warn!(actor = %self.actor, %error, "on-deactivate failed");
            }
            Ok(()) => tracing::debug!(actor = %self.actor, "deactivated"),
        }
    }
}
