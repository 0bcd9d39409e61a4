//! The host: plugins, the activation directory, and the call path every
//! interface (Rust API, HTTP, CLI, the gateway) goes through.
//!
//! [`Host`] is a cheap handle (`Arc` inside); clone it freely. It owns the
//! engine, the loaded plugins, the directory of activations and the
//! services actors use, and it is the directory's activator: the one
//! place that knows which plugin serves an actor type. Activations and guest
//! imports never hold the host itself.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use grove_core::Message;
use grove_gateway_quic::Sessions;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use wasmtime::component::{Linker, Val};

use crate::activation;
use crate::catalog::Catalog;
use crate::cluster::{self, Cluster, ClusterConfig, ClusterError, Node, PublishError};
use crate::directory::{Activator, Call, Directory, Slot};
use crate::engine::{build_engine, CompileCache, EpochClock, HostError};
use crate::error::{CallError, RejectedCall, Unavailable};
use crate::imports::{linker, ActivationState, Services};
use crate::limits::{ActorLimits, Limits};
use crate::mailbox::{Envelope, SessionEvent};
use crate::plugin::{Plugin, PluginDirError, PluginError};
use crate::reminders::Reminders;
use crate::state::StateError;
use crate::state::StateStore;
use crate::values;
use crate::warm;
use crate::ActorRef;

/// How a host runs its actors.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// What activations may use: memory, deadlines, mailboxes and more,
    /// with overrides per actor type.
    pub limits: Limits,
    /// An activation with no calls for this long is deactivated.
    pub idle_timeout: Duration,
    /// Where compiled plugins are cached; `None` compiles on every start.
    pub compile_cache: Option<PathBuf>,
    /// How long a call waits for its answer (room in the mailbox included):
    /// calls through the Rust API, HTTP and the CLI, and an actor's calls to
    /// other actors unless it sets its own timeout on the proxy.
    pub call_timeout: Duration,
    /// How long [`Host::shutdown`] waits for activations to finish their turn
    /// and deactivate before it aborts them.
    pub shutdown_timeout: Duration,
    /// Whether the host counts activations, calls, turns and state
    /// operations for [`Host::metrics`]. Off, the metrics hold only the
    /// gateway and the process.
    pub metrics: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            limits: Limits::default(),
            idle_timeout: Duration::from_secs(600),
            compile_cache: None,
            call_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            metrics: true,
        }
    }
}

/// How long after a deploy the new version is on trial: if one of its
/// activations fails to start (`on-activate` traps, say) meanwhile, the
/// actor type goes back to the version before.
const TRIAL: Duration = Duration::from_secs(60);

/// How a plugin is named in the cluster's leases: `type@version-prefix`.
fn served_as(plugin: &Plugin) -> String {
    let version = plugin
        .content_hash
        .get(..12)
        .unwrap_or(&plugin.content_hash);
    format!("{}@{version}", plugin.actor_type)
}

/// Activations asked to move to a new version at a time.
const MOVE_BATCH: usize = 128;

/// Longest a batch of moves is waited for before the next is asked: an
/// activation in a long turn moves when the turn ends.
const MOVE_BATCH_WAIT: Duration = Duration::from_millis(100);

/// Asks the activations of `actors` running `from` to move to the version
/// now deployed, a batch at a time: ten thousand successors started at once
/// would queue a call to any of them behind all the others.
/// Stops when `moving` is cleared (the new version was rolled back).
fn move_paced(
    directory: &Arc<Directory>,
    actors: Vec<ActorRef>,
    from: Arc<Plugin>,
    moving: Arc<AtomicBool>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        for actor in &actors {
            directory.upgrade(actor);
        }
        return;
    };
    let directory = directory.clone();
    runtime.spawn(async move {
        for batch in actors.chunks(MOVE_BATCH) {
            if !moving.load(Ordering::Relaxed) {
                return;
            }
            let before = from.activations();
            for actor in batch {
                directory.upgrade(actor);
            }
            let left = before.saturating_sub(batch.len());
            let deadline = Instant::now() + MOVE_BATCH_WAIT;
            while from.activations() > left && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
}

/// How long after a deploy here the host leaves the actor type alone when
/// following the cluster's versions: the deploy is being published.
const PUBLISH_GRACE: Duration = Duration::from_secs(10);

/// A version deployed over another, on trial.
struct Trial {
    /// The new version's content hash.
    version: String,
    /// The version it replaced, to go back to.
    previous: Arc<Plugin>,
    until: Instant,
    /// Why it was rolled back, once it was.
    rolled_back: Option<String>,
    /// The plugins directory file the deploy wrote, and what it held
    /// before (nothing: it did not exist).
    replaced_file: Option<(PathBuf, Option<Vec<u8>>)>,
    /// Cleared to stop asking activations to move to it (rolled back).
    moving: Arc<AtomicBool>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl activation::Versions for Inner {
    fn may_make_ahead(&self, plugin: &Arc<Plugin>) -> bool {
        if lock(&self.warm_held_until).is_some_and(|until| Instant::now() < until) {
            return false;
        }
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        plugins
            .get(&plugin.actor_type)
            .is_some_and(|running| Arc::ptr_eq(running, plugin))
    }

    fn give_way(&self) {
        *lock(&self.warm_held_until) = Some(Instant::now() + warm::HOLD_OFF);
        let plugins: Vec<Arc<Plugin>> = {
            let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
            plugins.values().cloned().collect()
        };
        let given: usize = plugins.iter().map(|p| p.warm.clear()).sum();
        tracing::debug!(
            given,
            "every slot is taken: instances made ahead give theirs up"
        );
    }

    fn failed_to_start(&self, plugin: &Plugin, error: &CallError) -> bool {
        let mut trials = lock(&self.trials);
        let Some(trial) = trials.get_mut(&plugin.actor_type) else {
            return false;
        };
        if trial.version != plugin.content_hash {
            return false;
        }
        if trial.rolled_back.is_some() {
            // Moving already; this activation's messages follow.
            return true;
        }
        if trial.until < Instant::now() {
            return false;
        }
        let mut plugins = self.plugins.write().unwrap_or_else(|e| e.into_inner());
        let running = plugins.get(&plugin.actor_type);
        if running.is_none_or(|p| p.content_hash != plugin.content_hash) {
            return false;
        }
        let previous = trial.previous.clone();
        trial.rolled_back = Some(error.to_string());
        trial.moving.store(false, Ordering::Relaxed);
        let replaced_file = trial.replaced_file.take();
        self.context.services.catalog.insert(
            &previous.actor_type,
            previous.functions.iter().map(|f| f.name.clone()),
        );
        let failed = plugins.insert(previous.actor_type.clone(), previous.clone());
        // The version before serves again: its instances are made ahead again.
        previous.warm.reopen();
        let mut closed = Vec::new();
        {
            let mut retired = lock(&self.retired);
            // The version before runs again: it is not retired.
            retired.retain(|p| p.activations() > 0 && p.content_hash != previous.content_hash);
            if let Some(failed) = &failed {
                closed = failed.warm.close();
            }
            retired.extend(failed.clone());
        }
        drop(plugins);
        drop(trials);
        drop(closed);
        let listed = self.directory.listed_of_type(&previous.actor_type);
        let moving = listed.len();
        if let Some(failed) = failed {
            move_paced(
                &self.directory,
                listed,
                failed,
                Arc::new(AtomicBool::new(true)),
            );
        }
        if let Some((file, before)) = replaced_file {
            put_back(&file, before);
        }
        // The cluster goes back with this host: the others follow.
        if let (Some(node), Ok(runtime)) =
            (self.cluster.get(), tokio::runtime::Handle::try_current())
        {
            let (node, actor_type, failed, back_to, reason) = (
                node.clone(),
                previous.actor_type.clone(),
                plugin.content_hash.clone(),
                previous.content_hash.clone(),
                error.to_string(),
            );
            runtime.spawn(async move {
                node.publish_rollback(&actor_type, &failed, &back_to, &reason)
                    .await
            });
        }
        tracing::error!(
            actor_type = %previous.actor_type,
            version = %plugin.content_hash,
            back_to = %previous.content_hash,
            moving,
            %error,
            "a deployed version failed to start an activation: rolled back"
        );
        true
    }
}

/// How a deploy's moves ended, as [`Host::settle`] saw them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// No activation runs a version before it any more.
    Moved,
    /// It failed to start an activation; the type went back to the version
    /// before, and its activations with it.
    RolledBack {
        /// The failure.
        reason: String,
    },
    /// Activations still ran older versions at the timeout.
    StillMoving {
        /// How many.
        activations: usize,
    },
}

/// Writes `bytes` to `file` unless it holds them already, through a
/// temporary file of its own renamed over it: nobody reads half a plugin.
fn keep(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if std::fs::read(file).is_ok_and(|kept| kept == bytes) {
        return Ok(());
    }
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let temporary = file.with_extension(format!("wasm.{}-{n}.deploying", std::process::id()));
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, file).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

/// Puts back what `file` held before a deploy that was rolled back, off
/// the async threads: a restart must not run a version that could not
/// start.
fn put_back(file: &Path, before: Option<Vec<u8>>) {
    let file = file.to_owned();
    let restore = move || {
        let restored = match &before {
            Some(bytes) => keep(&file, bytes),
            None => std::fs::remove_file(&file),
        };
        if let Err(error) = restored {
            tracing::warn!(file = %file.display(), %error, "cannot put back the plugin file of a rolled-back deploy");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn_blocking(restore)),
        Err(_) => restore(),
    }
}

/// What [`Host::deploy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The actor type deployed.
    pub actor_type: String,
    /// The new version's content hash (SHA-256 of the component).
    pub content_hash: String,
    /// The version it replaced, if the type was loaded.
    pub previous: Option<String>,
    /// Breaking changes applied because the deploy was forced.
    pub breaking_changes: Vec<String>,
    /// Live activations asked to move to the new version.
    pub moving: usize,
}

/// How [`Host::deploy`] treats a new version.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Apply it even if it would refuse calls the running version accepts.
    pub force: bool,
    /// Refuse it unless it provides this actor type.
    pub actor_type: Option<String>,
    /// Keep the component in this plugins directory once deployed, so that
    /// a restart runs it: over the file the running version came from if
    /// it is there, as `{type}.wasm` otherwise.
    pub keep_in: Option<PathBuf>,
}

/// Why [`Host::deploy`] refused a component.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeployError {
    /// It is not a plugin Grove can load.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// It would refuse calls the running version accepts.
    #[error(
        "the new version of `{actor_type}` is not compatible with the one running:\n  {}\n(deploy with --force to apply it anyway)",
        changes.join("\n  ")
    )]
    Incompatible {
        /// The actor type.
        actor_type: String,
        /// Each breaking change, in WIT terms.
        changes: Vec<String>,
    },
    /// It was deployed before and rolled back, here or in the cluster.
    #[error("this version of `{actor_type}` was rolled back {place}: {reason} (deploy with --force to try it again)")]
    RolledBack {
        /// The actor type.
        actor_type: String,
        /// Where: "here" or "in the cluster".
        place: &'static str,
        /// Why it was rolled back.
        reason: String,
    },
    /// It provides another actor type than the one named.
    #[error("the component provides actor type `{actor_type}`, not `{expected}`")]
    WrongType {
        /// The type named.
        expected: String,
        /// The type it provides.
        actor_type: String,
    },
}

/// Everything a host holds. Activations never see it: they get the
/// [`Services`] and [`activation::Context`] it lends them.
struct Inner {
    config: HostConfig,
    linker: Linker<ActivationState>,
    cache: Option<CompileCache>,
    /// Hashed with foldhash: only loading a plugin adds a key.
    plugins: RwLock<foldhash::HashMap<String, Arc<Plugin>>>,
    /// Versions replaced by a deploy, kept while activations still run them.
    retired: Mutex<Vec<Arc<Plugin>>>,
    /// Held through a deploy: one at a time.
    deploying: Mutex<()>,
    /// By actor type: the version last deployed over another, on trial.
    trials: Mutex<HashMap<String, Trial>>,
    rejected: RwLock<Vec<PluginError>>,
    directory: Arc<Directory>,
    reminders: Arc<Reminders>,
    context: activation::Context,
    /// Set once the host joins a cluster.
    cluster: OnceLock<Arc<Node>>,
    /// Until when no instance is made ahead: an activation found every
    /// slot taken.
    warm_held_until: Mutex<Option<Instant>>,
}

/// A Grove host. Cheap to clone: clones share the same actors.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

impl Activator for Inner {
    fn check(&self, actor: &ActorRef) -> Result<(), CallError> {
        self.plugin(&actor.actor_type).map(drop)
    }

    fn start(&self, slot: Slot) -> AbortHandle {
        let plugin = match self.plugin(&slot.actor().actor_type) {
            Ok(plugin) => plugin,
            Err(error) => {
                while let Some(envelope) = slot.try_recv(Instant::now()) {
                    envelope.fail(error.clone());
                }
                return tokio::spawn(async move { slot.leave() }).abort_handle();
            }
        };
        let context = self.context.clone();
        let waiting = context.turns.activation_waits();
        match self.cluster.get() {
            Some(node) => {
                tokio::spawn(cluster::place(node.clone(), context, plugin, slot, waiting))
            }
            None => tokio::spawn(activation::run(context, plugin, slot, None, waiting)),
        }
        .abort_handle()
    }
}

impl cluster::Plugins for Inner {
    fn plugin(&self, actor_type: &str) -> Result<Arc<Plugin>, CallError> {
        Inner::plugin(self, actor_type)
    }

    fn served(&self) -> Vec<String> {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        let mut served: Vec<String> = plugins.values().map(|p| served_as(p)).collect();
        served.sort();
        served
    }

    fn just_deployed(&self, actor_type: &str) -> bool {
        let running = self.plugin(actor_type).ok();
        lock(&self.trials).get(actor_type).is_some_and(|t| {
            t.rolled_back.is_none()
                && running.is_some_and(|p| p.content_hash == t.version)
                && t.until.saturating_duration_since(Instant::now()) > TRIAL - PUBLISH_GRACE
        })
    }

    fn all(&self) -> Vec<Arc<Plugin>> {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        plugins.values().cloned().collect()
    }

    fn rolled_back(&self, actor_type: &str, version: &str) -> bool {
        lock(&self.trials)
            .get(actor_type)
            .is_some_and(|t| t.version == version && t.rolled_back.is_some())
    }

    fn follow(&self, component: &[u8], keep_in: Option<PathBuf>) -> Result<Deployed, DeployError> {
        let options = DeployOptions {
            force: true,
            actor_type: None,
            keep_in: keep_in.clone(),
        };
        let source = keep_in.unwrap_or_default().join("from-cluster.wasm");
        self.deploy(&source, component, &options)
    }

    fn reload_reminders(&self) -> grove_cluster::transport::BoxFuture<'_, ()> {
        Box::pin(async move {
            let types: Vec<String> = {
                let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
                plugins.keys().cloned().collect()
            };
            for actor_type in types {
                if let Err(error) = self.reminders.load(&actor_type).await {
                    tracing::warn!(%actor_type, %error, "cannot reload reminders");
                }
            }
        })
    }
}

impl Inner {
    fn deploy(
        &self,
        file: &Path,
        bytes: &[u8],
        options: &DeployOptions,
    ) -> Result<Deployed, DeployError> {
        let mut new = Plugin::from_bytes(
            &self.context.engine,
            &self.linker,
            self.cache.as_ref(),
            file,
            bytes,
        )?;
        if let Some(expected) = &options.actor_type {
            if *expected != new.actor_type {
                return Err(DeployError::WrongType {
                    expected: expected.clone(),
                    actor_type: new.actor_type,
                });
            }
        }
        // One deploy at a time: the checks below and the kept file hold
        // until the swap.
        let _deploying = lock(&self.deploying);
        let old = self.plugin(&new.actor_type).ok();
        let mut deployed = Deployed {
            actor_type: new.actor_type.clone(),
            content_hash: new.content_hash.clone(),
            previous: old.as_ref().map(|p| p.content_hash.clone()),
            breaking_changes: Vec::new(),
            moving: 0,
        };
        if old
            .as_ref()
            .is_some_and(|old| old.content_hash == new.content_hash)
        {
            return Ok(deployed);
        }
        let rolled_back = lock(&self.trials)
            .get(&new.actor_type)
            .filter(|t| t.version == new.content_hash)
            .and_then(|t| t.rolled_back.clone())
            .map(|reason| ("here", reason));
        // The cluster's rollbacks, as this host last saw them, count too.
        let rolled_back = rolled_back.or_else(|| {
            let node = self.cluster.get()?;
            let reason = node.rolled_back(&new.actor_type, &new.content_hash)?;
            Some(("in the cluster", reason))
        });
        if let (Some((place, reason)), false) = (rolled_back, options.force) {
            return Err(DeployError::RolledBack {
                actor_type: new.actor_type.clone(),
                place,
                reason,
            });
        }
        if let Some(old) = &old {
            deployed.breaking_changes = crate::compat::breaking_changes(old, &new);
            if !deployed.breaking_changes.is_empty() && !options.force {
                return Err(DeployError::Incompatible {
                    actor_type: new.actor_type.clone(),
                    changes: deployed.breaking_changes,
                });
            }
        }
        // Kept before the swap, so that a rollback, which puts back what
        // the file held, always comes after.
        let mut replaced_file = None;
        if let Some(dir) = &options.keep_in {
            new.file = match &old {
                Some(old) if old.file.parent() == Some(dir.as_path()) => old.file.clone(),
                _ => dir.join(format!("{}.wasm", new.actor_type)),
            };
            let before = std::fs::read(&new.file).ok();
            match keep(&new.file, bytes) {
                Ok(()) => replaced_file = Some((new.file.clone(), before)),
                Err(error) => {
                    tracing::warn!(file = %new.file.display(), %error, "the plugin cannot be kept for a restart");
                }
            }
        }
        // Counted only once accepted: a refused version leaves no series.
        self.meter(&mut new);
        let new = Arc::new(new);
        let moving = Arc::new(AtomicBool::new(true));
        // Locks in this order: trials, plugins, retired.
        let mut trials = lock(&self.trials);
        let mut plugins = self.plugins.write().unwrap_or_else(|e| e.into_inner());
        self.context.services.catalog.insert(
            &new.actor_type,
            new.functions.iter().map(|f| f.name.clone()),
        );
        let mut closed = Vec::new();
        if let Some(old) = plugins.insert(new.actor_type.clone(), new.clone()) {
            let mut retired = lock(&self.retired);
            retired.retain(|p| p.activations() > 0 && p.content_hash != old.content_hash);
            closed = old.warm.close();
            retired.push(old.clone());
            let trial = Trial {
                version: new.content_hash.clone(),
                previous: old,
                until: Instant::now() + TRIAL,
                rolled_back: None,
                replaced_file,
                moving: moving.clone(),
            };
            trials.insert(new.actor_type.clone(), trial);
        }
        drop(plugins);
        drop(trials);
        drop(closed);
        // An activation starting from here on finds the new version; every
        // one that started before is listed already, and is asked to move.
        let listed = self.directory.listed_of_type(&new.actor_type);
        deployed.moving = listed.len();
        if let Some(old) = old {
            move_paced(&self.directory, listed, old, moving);
        }
        tracing::info!(
            actor_type = %deployed.actor_type,
            version = %deployed.content_hash,
            previous = ?deployed.previous,
            moving = deployed.moving,
            "plugin deployed"
        );
        Ok(deployed)
    }

    /// Gives `plugin` its functions' call counters, if the host counts.
    fn meter(&self, plugin: &mut Plugin) {
        if let Some(meters) = &self.context.services.meters {
            let names = plugin.functions.iter().map(|f| f.name.as_str());
            plugin.calls = meters.functions(&plugin.actor_type, names);
        }
    }

    fn plugin(&self, actor_type: &str) -> Result<Arc<Plugin>, CallError> {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        plugins.get(actor_type).cloned().ok_or_else(|| {
            CallError::Rejected(RejectedCall::UnknownActorType(actor_type.to_owned()))
        })
    }
}

impl Host {
    /// Creates a host with no plugins, keeping actor state in `state`.
    pub fn new(config: HostConfig, state: StateStore) -> Result<Host, HostError> {
        let engine = build_engine(&config.limits)?;
        crate::engine::check_map_count(&config.limits);
        let linker = linker(&engine).map_err(HostError::Imports)?;
        let epoch = EpochClock::start(&engine)?;
        let cache = config.compile_cache.clone().map(CompileCache::new);
        let limits = Arc::new(config.limits.clone());
        let meters: Option<Arc<crate::metrics::Meters>> = config.metrics.then(Arc::default);
        let directory = Directory::new(limits.clone());
        if let Some(meters) = &meters {
            directory.count_timeouts_in(meters.clone());
        }
        let reminders = Reminders::new(
            state.clone(),
            Arc::downgrade(&directory),
            config.call_timeout,
        );
        let services = Arc::new(Services {
            directory: directory.clone(),
            state,
            reminders: reminders.clone(),
            sessions: Sessions::new(),
            catalog: Catalog::default(),
            call_timeout: config.call_timeout,
            remote_sessions: OnceLock::new(),
            meters,
        });
        let turns = activation::Turns::new(crate::engine::running_turn_limit(&limits) as usize);
        let context = activation::Context {
            engine,
            limits,
            incidents: Arc::default(),
            idle_timeout: config.idle_timeout,
            services,
            _epoch: Arc::new(epoch),
            versions: Arc::default(),
            turns,
        };
        let inner = Arc::new(Inner {
            config,
            linker,
            cache,
            plugins: RwLock::default(),
            retired: Mutex::default(),
            deploying: Mutex::default(),
            trials: Mutex::default(),
            rejected: RwLock::default(),
            directory,
            reminders,
            context,
            cluster: OnceLock::new(),
            warm_held_until: Mutex::default(),
        });
        let activator: Arc<dyn Activator> = inner.clone();
        inner.directory.set_activator(Arc::downgrade(&activator));
        let versions: Arc<dyn activation::Versions> = inner.clone();
        let _ = inner.context.versions.set(Arc::downgrade(&versions));
        Ok(Host { inner })
    }

    /// Loads the durable reminders of every loaded actor type from the state
    /// backend and starts firing them; returns how many were loaded. Call it
    /// once the plugins are loaded. Reminders set by actors from then on are
    /// scheduled as they are set.
    pub async fn start_reminders(&self) -> Result<usize, StateError> {
        let mut loaded = 0;
        for plugin in self.plugins() {
            loaded += self.inner.reminders.load(&plugin.actor_type).await?;
        }
        Ok(loaded)
    }

    /// Joins a cluster of hosts sharing a Redis: from then on every actor has
    /// one activation among the hosts, and calls reach it wherever it runs
    /// (see [`crate::cluster`]). Load the plugins first: the lease publishes
    /// which actor types this host serves. Deactivate the actors
    /// ([`Host::shutdown`]) before [`Cluster::leave`].
    pub async fn join_cluster(&self, config: ClusterConfig) -> Result<Cluster, ClusterError> {
        if self.inner.cluster.get().is_some() {
            return Err(ClusterError::AlreadyJoined);
        }
        let served = cluster::Plugins::served(&*self.inner);
        let plugins: Arc<dyn cluster::Plugins> = self.inner.clone();
        let (cluster, node) = Cluster::join(
            config,
            self.inner.directory.clone(),
            Arc::downgrade(&plugins),
            served,
            self.inner.context.services.sessions.clone(),
        )
        .await?;
        let gate: Arc<dyn crate::reminders::FiringGate> = node.clone();
        self.inner.reminders.set_gate(Arc::downgrade(&gate));
        let remote: Arc<dyn crate::imports::RemoteSessions> = node.clone();
        let _ = self
            .inner
            .context
            .services
            .remote_sessions
            .set(Arc::downgrade(&remote));
        self.inner
            .cluster
            .set(node)
            .map_err(|_| ClusterError::AlreadyJoined)?;
        Ok(cluster)
    }

    /// What this host knows of its cluster; `None` when it runs alone.
    pub fn cluster_status(&self) -> Option<cluster::ClusterStatus> {
        self.inner.cluster.get().map(|node| node.status())
    }

    /// The host's metrics in the Prometheus text format (version 0.0.4), as
    /// `GET /metrics` serves them: per actor type, live activations,
    /// activations and deactivations, calls by function and outcome, turn
    /// latency, mailbox depth, incidents, timers and reminders; actors'
    /// state operations by backend, operation and outcome, with latency;
    /// the gateway's sessions, messages, bytes and closes; the process's
    /// resident memory and open file descriptors.
    pub fn metrics(&self) -> String {
        crate::metrics::encode(self)
    }

    pub(crate) fn meters(&self) -> Option<&Arc<crate::metrics::Meters>> {
        self.inner.context.services.meters.as_ref()
    }

    /// Messages waiting in mailboxes, by actor type.
    pub(crate) fn mailbox_depths(&self) -> std::collections::HashMap<Arc<str>, usize> {
        self.inner.directory.mailbox_depths()
    }

    /// The `n` live activations that have run the most turns, most first:
    /// each actor, its turns since it was activated, and the messages
    /// waiting in its mailbox.
    pub fn busiest(&self, n: usize) -> Vec<(ActorRef, u64, usize)> {
        self.inner.directory.busiest(n)
    }

    /// One-shot reminders given up, by actor type.
    pub(crate) fn dead_letters_by_type(&self) -> BTreeMap<Arc<str>, u64> {
        self.inner.reminders.dead_letters_by_type()
    }

    /// The state backend's name: `memory`, `embedded` or `redis`.
    pub(crate) fn state_backend(&self) -> &'static str {
        self.inner.context.services.state.backend()
    }

    /// One-shot reminders given up, since start, after failing every try.
    pub fn dead_letters(&self) -> u64 {
        self.inner.reminders.dead_letters()
    }

    /// The limits `actor_type` runs under.
    pub fn limits_of(&self, actor_type: &str) -> &ActorLimits {
        self.inner.context.limits.for_type(actor_type)
    }

    /// What the sandbox stopped or refused of `actor_type` since the host
    /// started, by name: turns that `trapped`, ran `out-of-memory`, had
    /// `deadline-exceeded` or `limit-exceeded`; requests past a quota
    /// (`quota-refused`); `log-lines-dropped`. Each name is listed.
    pub fn incidents(&self, actor_type: &str) -> BTreeMap<&'static str, u64> {
        self.inner.context.incidents.read(actor_type)
    }

    /// How many turns run now: started and not finished, waiting on the host
    /// or on other actors included. At most `Limits::max_running_turns`;
    /// each holds a fiber stack.
    pub fn running_turns(&self) -> usize {
        self.inner.context.turns.running()
    }

    /// Loads one plugin file. A plugin whose actor type is already loaded is
    /// rejected. The error is also kept for [`Host::rejected`].
    pub fn load_plugin(&self, file: &Path) -> Result<Arc<Plugin>, PluginError> {
        let result = Plugin::load(
            &self.inner.context.engine,
            &self.inner.linker,
            self.inner.cache.as_ref(),
            file,
        )
        .and_then(|mut plugin| {
            let mut plugins = self
                .inner
                .plugins
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(other) = plugins.get(&plugin.actor_type) {
                return Err(PluginError::Duplicate {
                    file: file.into(),
                    actor_type: plugin.actor_type.clone(),
                    other: other.file.clone(),
                });
            }
            self.inner.meter(&mut plugin);
            let plugin = Arc::new(plugin);
            let functions = plugin.functions.iter().map(|f| f.name.clone());
            self.inner
                .context
                .services
                .catalog
                .insert(&plugin.actor_type, functions);
            plugins.insert(plugin.actor_type.clone(), plugin.clone());
            Ok(plugin)
        });
        match &result {
            Ok(plugin) => {
                tracing::info!(actor_type = %plugin.actor_type, file = %file.display(), "plugin loaded")
            }
            Err(error) => {
                tracing::error!("plugin rejected: {error}");
                self.inner
                    .rejected
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(error.clone());
            }
        }
        result
    }

    /// Deploys the component `bytes` (named `file` in listings) as the
    /// plugin of its actor type, loaded or not, while the host serves.
    ///
    /// A new version must accept every call the running one accepts (the
    /// rules are in `docs/deploy.md`); otherwise it is refused with the
    /// breaking changes unless `force` is set. A version rolled back here or
    /// in the cluster is refused unless `force` is set. New activations use it at once, and every live
    /// activation of the type moves to it after its current turn: it runs
    /// `on-deactivate` on the old code and a successor runs `on-activate` on
    /// the new one, its mailbox kept in order. Deploying the version that
    /// runs already changes nothing.
    pub fn deploy(
        &self,
        file: &Path,
        bytes: &[u8],
        options: &DeployOptions,
    ) -> Result<Deployed, DeployError> {
        self.inner.deploy(file, bytes, options)
    }

    /// Publishes a version deployed here to the cluster, if the host is in
    /// one: every other host deploys it too. A host alone has nothing to do.
    ///
    /// A version the cluster rolled back since is published only if `force`
    /// is set (the deploy was forced); otherwise this host goes back to the
    /// version the cluster runs.
    pub async fn publish(
        &self,
        deployed: &Deployed,
        bytes: &[u8],
        force: bool,
    ) -> Result<(), PublishError> {
        match self.inner.cluster.get() {
            Some(node) => node.publish(deployed, bytes, force).await,
            None => Ok(()),
        }
    }

    /// Waits, at most `timeout`, until the activations `deployed` asked to
    /// move run its version (no activation runs an older one, and as many
    /// as moved have started on it); reports a rollback if it failed to
    /// start one.
    pub async fn settle(&self, deployed: &Deployed, timeout: Duration) -> Settled {
        let deadline = Instant::now() + timeout;
        loop {
            let trial = lock(&self.inner.trials)
                .get(&deployed.actor_type)
                .filter(|t| t.version == deployed.content_hash)
                .and_then(|t| t.rolled_back.clone());
            if let Some(reason) = trial {
                return Settled::RolledBack { reason };
            }
            let older: usize = self
                .retired_versions()
                .iter()
                .filter(|p| {
                    p.actor_type == deployed.actor_type && p.content_hash != deployed.content_hash
                })
                .map(|p| p.activations())
                .sum();
            let started = self
                .plugin(&deployed.actor_type)
                .ok()
                .filter(|p| p.content_hash == deployed.content_hash)
                .map_or(0, |p| p.activations());
            if older == 0 && started >= deployed.moving {
                return Settled::Moved;
            }
            if Instant::now() >= deadline {
                return Settled::StillMoving { activations: older };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Loads every `.wasm` file in `dir`, in name order. Files that fail are
    /// reported (and kept in [`Host::rejected`]); the others are served.
    pub fn load_plugin_dir(
        &self,
        dir: &Path,
    ) -> Result<(Vec<Arc<Plugin>>, Vec<PluginError>), PluginDirError> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| PluginDirError::Read {
                dir: dir.into(),
                source,
            })?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        files.sort();
        let (mut loaded, mut rejected) = (Vec::new(), Vec::new());
        for file in files {
            match self.load_plugin(&file) {
                Ok(plugin) => loaded.push(plugin),
                Err(error) => rejected.push(error),
            }
        }
        Ok((loaded, rejected))
    }

    /// Every loaded plugin, ordered by actor type.
    pub fn plugins(&self) -> Vec<Arc<Plugin>> {
        let plugins = self.inner.plugins.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<_> = plugins.values().cloned().collect();
        list.sort_by(|a, b| a.actor_type.cmp(&b.actor_type));
        list
    }

    /// Versions replaced by a deploy that activations still run, oldest
    /// first.
    pub fn retired_versions(&self) -> Vec<Arc<Plugin>> {
        let mut retired = self.inner.retired.lock().unwrap_or_else(|e| e.into_inner());
        retired.retain(|p| p.activations() > 0);
        retired.clone()
    }

    /// Plugin files that were rejected, with why.
    pub fn rejected(&self) -> Vec<PluginError> {
        self.inner
            .rejected
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The plugin providing `actor_type`.
    pub fn plugin(&self, actor_type: &str) -> Result<Arc<Plugin>, CallError> {
        self.inner.plugin(actor_type)
    }

    /// Calls `function` on `actor` with `args`, activating the actor if it is
    /// not active. Waits while the actor's mailbox is full, and for the
    /// answer, the host's call timeout in all: then the call is answered
    /// with `timeout` (by the activation holding it, within an epoch tick or
    /// before its next turn).
    pub async fn call(
        &self,
        actor: &ActorRef,
        function: &str,
        args: Vec<Val>,
    ) -> Result<Option<Val>, CallError> {
        let mut args = args;
        let function = self.prepare(actor, function, &mut args)?;
        let call = Call {
            target: actor,
            function,
            args,
            chain: None,
            timeout: self.inner.config.call_timeout,
            trace: crate::trace::current(),
        };
        self.inner.directory.call(call).await
    }

    /// Checks a call against the plugin serving `actor` now, so that a bad
    /// call fails before it activates anything. Returns the function's name
    /// for the message: allocated per call, because a name shared by every
    /// call would have its reference count bounce between the cores.
    fn prepare(
        &self,
        actor: &ActorRef,
        function: &str,
        args: &mut [Val],
    ) -> Result<Arc<str>, CallError> {
        if self.inner.directory.is_stopping() {
            return Err(CallError::Unavailable(Unavailable::ShuttingDown));
        }
        // Checked under the read lock rather than through a clone of the
        // plugin's `Arc`, for the same reason.
        let plugins = self.inner.plugins.read().unwrap_or_else(|e| e.into_inner());
        let plugin = plugins.get(&*actor.actor_type).ok_or_else(|| {
            CallError::Rejected(RejectedCall::UnknownActorType(actor.actor_type.to_string()))
        })?;
        let (_, func) = plugin.function(function).ok_or_else(|| {
            CallError::Rejected(RejectedCall::UnknownFunction {
                actor_type: actor.actor_type.to_string(),
                function: function.to_owned(),
            })
        })?;
        values::conform_args(func, args).map_err(|message| {
            CallError::Rejected(RejectedCall::BadArguments {
                function: function.to_owned(),
                message,
            })
        })?;
        Ok(function.into())
    }

    /// Sends a one-way message: calls `function` on `actor` without waiting
    /// for it to run. Returns once the message is in the actor's mailbox
    /// (waiting while it is full, at most the call timeout); the result, or
    /// an error while running it, is only logged. Messages one sender sends
    /// to one actor run in the order they were sent.
    pub async fn send(
        &self,
        actor: &ActorRef,
        function: &str,
        args: Vec<Val>,
    ) -> Result<(), CallError> {
        let mut args = args;
        let function = self.prepare(actor, function, &mut args)?;
        let message = Message {
            target: actor.clone(),
            function,
            args,
            chain: None,
            deadline: Instant::now() + self.inner.config.call_timeout,
            reply: None,
            trace: crate::trace::current(),
        };
        self.inner
            .directory
            .deliver(actor, Envelope::Call(message), true)
            .await
    }

    /// The game client sessions connected to this host through its gateway.
    pub fn sessions(&self) -> &Sessions {
        &self.inner.context.services.sessions
    }

    /// Runs a session event's hook on `actor`, activating it if needed. With
    /// `wait`, returns once the hook has run; otherwise once it is queued.
    pub(crate) async fn session_event(
        &self,
        actor: &ActorRef,
        event: SessionEvent,
        wait: bool,
    ) -> Result<(), CallError> {
        let hook = event.hook();
        let deadline = Instant::now() + self.inner.config.call_timeout;
        let directory = &self.inner.directory;
        if !wait {
            // Undelivered, the envelope logs its failure (`Envelope::fail`):
            // the caller need not.
            let envelope = Envelope::Session {
                event,
                deadline,
                done: None,
            };
            if let Err(error) = self.plugin(&actor.actor_type) {
                envelope.fail(error.clone());
                return Err(error);
            }
            return directory.deliver(actor, envelope, true).await;
        }
        self.plugin(&actor.actor_type)?;
        let (done, outcome) = oneshot::channel();
        let envelope = Envelope::Session {
            event,
            deadline,
            done: Some(done),
        };
        // An undelivered event is answered with the error.
        let _ = directory.deliver(actor, envelope, true).await;
        let ran = tokio::time::timeout_at(deadline.into(), outcome).await;
        match ran {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(CallError::Unavailable(Unavailable::ActivationFailed {
                actor: actor.to_string(),
                message: "the activation ended before running the hook".into(),
            })),
            Err(_) => Err(CallError::Unavailable(Unavailable::Timeout {
                actor: actor.to_string(),
                function: hook.to_owned(),
                timeout: self.inner.config.call_timeout,
            })),
        }
    }

    /// Whether `actor` has an activation on this host right now.
    pub fn is_active(&self, actor: &ActorRef) -> bool {
        self.inner.directory.contains(actor)
    }

    /// How many activations this host holds.
    pub fn active_count(&self) -> usize {
        self.inner.directory.len()
    }

    /// Stops taking calls and deactivates every actor (each finishes its
    /// turn, runs `on-deactivate`, and fails what is still queued with
    /// `shutting-down`). Returns within the configured shutdown timeout
    /// whatever the actors do: activations still running then are aborted.
    /// Returns how many were aborted.
    pub async fn shutdown(&self) -> usize {
        self.inner.directory.begin_stop();
        for plugin in self.plugins() {
            drop(plugin.warm.close());
        }
        self.inner.reminders.wake();
        let deadline = Instant::now() + self.inner.config.shutdown_timeout;
        let aborted = self.inner.directory.wait_empty(deadline).await;
        if aborted > 0 {
            tracing::warn!(
                aborted,
                "activations still running at the shutdown timeout were aborted"
            );
        }
        let undelivered_not_logged = crate::throttled::UNDELIVERED.take_held_back();
        if undelivered_not_logged > 0 {
            tracing::warn!(
                undelivered_not_logged,
                "messages and session events not delivered since the last such warning"
            );
        }
        aborted
    }
}
