//! The host: plugins, the activation directory, and the call path every
//! interface (Rust API, HTTP, CLI) goes through.
//!
//! [`Host`] is a cheap handle (`Arc` inside); clone it freely. The directory
//! maps each actor ref to the mailbox of its one activation on this host. A
//! call finds the mailbox, activating the actor first if it has none, and
//! waits in the mailbox if it is full. An activation that is leaving the
//! directory closes its mailbox; a call that raced with it gets its message
//! back and simply looks the actor up again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use grove_gateway_quic::Sessions;
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::{Linker, Val};
use wasmtime::Engine;

use crate::activation::{self, Envelope, SessionEvent};
use crate::engine::{build_engine, CompileCache, EpochClock, Limits};
use crate::error::CallError;
use crate::imports::{linker, ActivationState};
use crate::plugin::{Plugin, PluginError};
use crate::proxy::CallChain;
use crate::reminders::Reminders;
use crate::state::StateError;
use crate::state::StateStore;
use crate::values;
use crate::ActorRef;

/// How a host runs its actors.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Memory, deadline and activation-count limits.
    pub limits: Limits,
    /// An activation with no calls for this long is deactivated.
    pub idle_timeout: Duration,
    /// Messages an activation's mailbox holds before senders wait.
    pub mailbox_capacity: usize,
    /// Where compiled plugins are cached; `None` compiles on every start.
    pub compile_cache: Option<PathBuf>,
    /// How long an actor's call to another actor waits for the answer, unless
    /// the caller sets its own timeout on the proxy.
    pub call_timeout: Duration,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            limits: Limits::default(),
            idle_timeout: Duration::from_secs(600),
            mailbox_capacity: 1024,
            compile_cache: None,
            call_timeout: Duration::from_secs(30),
        }
    }
}

struct ActivationHandle {
    id: u64,
    mailbox: mpsc::Sender<Envelope>,
}

pub(crate) struct Inner {
    config: HostConfig,
    engine: Engine,
    linker: Linker<ActivationState>,
    cache: Option<CompileCache>,
    plugins: RwLock<HashMap<String, Arc<Plugin>>>,
    rejected: RwLock<Vec<PluginError>>,
    directory: DashMap<ActorRef, ActivationHandle>,
    state: StateStore,
    reminders: Arc<Reminders>,
    reminders_started: AtomicBool,
    next_id: AtomicU64,
    shutting_down: AtomicBool,
    sessions: Sessions,
    _epoch: EpochClock,
}

/// A Grove host. Cheap to clone: clones share the same actors.
#[derive(Clone)]
pub struct Host {
    inner: Arc<Inner>,
}

impl Host {
    /// Creates a host with no plugins, keeping actor state in `state`.
    pub fn new(config: HostConfig, state: StateStore) -> anyhow::Result<Host> {
        let engine = build_engine(&config.limits)?;
        crate::engine::check_map_count(&config.limits);
        let linker = linker(&engine)?;
        let epoch = EpochClock::start(&engine)?;
        let cache = config.compile_cache.clone().map(CompileCache::new);
        Ok(Host {
            inner: Arc::new(Inner {
                config,
                engine,
                linker,
                cache,
                plugins: RwLock::default(),
                rejected: RwLock::default(),
                directory: DashMap::new(),
                reminders: Arc::default(),
                reminders_started: AtomicBool::new(false),
                state,
                next_id: AtomicU64::new(1),
                shutting_down: AtomicBool::new(false),
                sessions: Sessions::new(),
                _epoch: epoch,
            }),
        })
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Host {
        Host { inner }
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::Relaxed)
    }

    pub(crate) fn reminders(&self) -> &Reminders {
        &self.inner.reminders
    }

    /// Loads the durable reminders of every loaded actor type from the state
    /// backend and starts firing them; returns how many were loaded. Call it
    /// once the plugins are loaded. Reminders set by actors from then on are
    /// scheduled as they are set.
    pub async fn start_reminders(&self) -> Result<usize, StateError> {
        self.run_reminders();
        let mut loaded = 0;
        for plugin in self.plugins() {
            loaded += self
                .inner
                .reminders
                .load(&self.inner.state, &plugin.actor_type)
                .await?;
        }
        Ok(loaded)
    }

    /// Starts the task firing reminders, unless it runs already.
    pub(crate) fn run_reminders(&self) {
        if !self.inner.reminders_started.swap(true, Ordering::Relaxed) {
            let reminders = self.inner.reminders.clone();
            tokio::spawn(reminders.run(Arc::downgrade(&self.inner)));
        }
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.inner.config.limits
    }

    pub(crate) fn idle_timeout(&self) -> Duration {
        self.inner.config.idle_timeout
    }

    pub(crate) fn state(&self) -> &StateStore {
        &self.inner.state
    }

    pub(crate) fn call_timeout(&self) -> Duration {
        self.inner.config.call_timeout
    }

    /// Loads one plugin file. A plugin whose actor type is already loaded is
    /// rejected. The error is also kept for [`Host::rejected`].
    pub fn load_plugin(&self, file: &Path) -> Result<Arc<Plugin>, PluginError> {
        let result = Plugin::load(
            &self.inner.engine,
            &self.inner.linker,
            self.inner.cache.as_ref(),
            file,
        )
        .and_then(|plugin| {
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
            let plugin = Arc::new(plugin);
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

    /// Loads every `.wasm` file in `dir`, in name order. Files that fail are
    /// reported (and kept in [`Host::rejected`]); the others are served.
    pub fn load_plugin_dir(
        &self,
        dir: &Path,
    ) -> anyhow::Result<(Vec<Arc<Plugin>>, Vec<PluginError>)> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("cannot read plugins directory {}: {e}", dir.display()))?
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
        let plugins = self.inner.plugins.read().unwrap_or_else(|e| e.into_inner());
        plugins
            .get(actor_type)
            .cloned()
            .ok_or_else(|| CallError::UnknownActorType(actor_type.to_owned()))
    }

    /// Calls `function` on `actor` with `args`, activating the actor if it is
    /// not active. Waits while the actor's mailbox is full.
    pub async fn call(
        &self,
        actor: &ActorRef,
        function: &str,
        args: Vec<Val>,
    ) -> Result<Option<Val>, CallError> {
        self.call_in_chain(actor, function, args, None, None).await
    }

    /// Checks a call and finds the function's index.
    fn prepare(&self, actor: &ActorRef, function: &str, args: &[Val]) -> Result<usize, CallError> {
        if self.inner.shutting_down.load(Ordering::Relaxed) {
            return Err(CallError::ShuttingDown);
        }
        let plugin = self.plugin(&actor.actor_type)?;
        let (index, func) =
            plugin
                .function(function)
                .ok_or_else(|| CallError::UnknownFunction {
                    actor_type: actor.actor_type.to_string(),
                    function: function.to_owned(),
                })?;
        values::check_args(func, args).map_err(|message| CallError::BadArguments {
            function: function.to_owned(),
            message,
        })?;
        Ok(index)
    }

    /// A call made within `chain`, waiting at most `timeout` for the answer.
    pub(crate) async fn call_in_chain(
        &self,
        actor: &ActorRef,
        function: &str,
        args: Vec<Val>,
        chain: CallChain,
        timeout: Option<Duration>,
    ) -> Result<Option<Val>, CallError> {
        let index = self.prepare(actor, function, &args)?;
        let (reply, answer) = oneshot::channel();
        let envelope = Envelope::Call {
            function: index,
            args,
            chain,
            reply: Some(reply),
        };
        let answered = async {
            self.deliver(actor, envelope).await;
            answer.await.unwrap_or_else(|_| {
                Err(CallError::ActivationFailed {
                    actor: actor.to_string(),
                    message: "the activation ended before answering".into(),
                })
            })
        };
        match timeout {
            None => answered.await,
            Some(limit) => tokio::time::timeout(limit, answered)
                .await
                .unwrap_or_else(|_| {
                    Err(CallError::Timeout {
                        actor: actor.to_string(),
                        function: function.to_owned(),
                        timeout: limit,
                    })
                }),
        }
    }

    /// Sends a one-way message: calls `function` on `actor` without waiting
    /// for it to run. Returns once the message is in the actor's mailbox
    /// (waiting while it is full); the result, or an error while running it,
    /// is only logged. Messages one sender sends to one actor run in the
    /// order they were sent.
    pub async fn send(
        &self,
        actor: &ActorRef,
        function: &str,
        args: Vec<Val>,
    ) -> Result<(), CallError> {
        let index = self.prepare(actor, function, &args)?;
        let envelope = Envelope::Call {
            function: index,
            args,
            chain: None,
            reply: None,
        };
        self.deliver(actor, envelope).await;
        Ok(())
    }

    /// The game client sessions connected to this host through its gateway.
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// Runs a session event's hook on `actor`, activating it if needed. With
    /// `wait`, returns once the hook has run; otherwise once it is queued.
    pub(crate) async fn session_event(
        &self,
        actor: &ActorRef,
        event: SessionEvent,
        wait: bool,
    ) -> Result<(), CallError> {
        if !wait {
            self.plugin(&actor.actor_type)?;
            self.deliver(actor, Envelope::Session { event, done: None })
                .await;
            return Ok(());
        }
        let (done, outcome) = oneshot::channel();
        let envelope = Envelope::Session {
            event,
            done: Some(done),
        };
        self.deliver(actor, envelope).await;
        outcome.await.unwrap_or_else(|_| {
            Err(CallError::ActivationFailed {
                actor: actor.to_string(),
                message: "the activation ended before running the hook".into(),
            })
        })
    }

    /// Whether `actor` has an activation on this host right now.
    pub fn is_active(&self, actor: &ActorRef) -> bool {
        self.inner.directory.contains_key(actor)
    }

    /// How many activations this host holds.
    pub fn active_count(&self) -> usize {
        self.inner.directory.len()
    }

    /// Puts `envelope` in the mailbox of `actor`'s activation, activating it
    /// first if needed; answers it with an error if it cannot be delivered.
    pub(crate) async fn deliver(&self, actor: &ActorRef, mut envelope: Envelope) {
        loop {
            if self.inner.shutting_down.load(Ordering::Relaxed) {
                return envelope.fail(CallError::ShuttingDown);
            }
            let mailbox = match self.mailbox(actor) {
                Ok(mailbox) => mailbox,
                Err(error) => return envelope.fail(error),
            };
            match mailbox.send(envelope).await {
                Ok(()) => return,
                // The activation is handing over to its successor: look again
                // once it has.
                Err(mpsc::error::SendError(back)) => {
                    envelope = back;
                    tokio::task::yield_now().await;
                }
            }
        }
    }

    fn mailbox(&self, actor: &ActorRef) -> Result<mpsc::Sender<Envelope>, CallError> {
        if let Some(handle) = self.inner.directory.get(actor) {
            return Ok(handle.mailbox.clone());
        }
        let plugin = self.plugin(&actor.actor_type)?;
        match self.inner.directory.entry(actor.clone()) {
            Entry::Occupied(e) => Ok(e.get().mailbox.clone()),
            Entry::Vacant(e) => {
                let (mailbox, receiver) = mpsc::channel(self.inner.config.mailbox_capacity.max(1));
                e.insert(self.spawn_activation(plugin, actor, mailbox.clone(), receiver));
                Ok(mailbox)
            }
        }
    }

    /// Called by activation `id` of `actor` as it ends, with its mailbox
    /// closed and drained: removes it from the directory or, if messages were
    /// `left` in its mailbox, puts a successor activation in its place whose
    /// mailbox holds them first, so that they keep their order ahead of any
    /// message sent later.
    pub(crate) fn hand_over(&self, actor: &ActorRef, id: u64, left: Vec<Envelope>) {
        let Entry::Occupied(mut entry) = self.inner.directory.entry(actor.clone()) else {
            return left
                .into_iter()
                .for_each(|e| e.fail(CallError::ShuttingDown));
        };
        if entry.get().id != id {
            return;
        }
        if left.is_empty() {
            entry.remove();
            return;
        }
        let plugin = match self.plugin(&actor.actor_type) {
            Ok(plugin) if !self.inner.shutting_down.load(Ordering::Relaxed) => plugin,
            outcome => {
                entry.remove();
                let error = outcome.err().unwrap_or(CallError::ShuttingDown);
                return left.into_iter().for_each(|e| e.fail(error.clone()));
            }
        };
        let capacity = self.inner.config.mailbox_capacity.max(left.len());
        let (mailbox, receiver) = mpsc::channel(capacity);
        for envelope in left {
            if let Err(mpsc::error::TrySendError::Full(e) | mpsc::error::TrySendError::Closed(e)) =
                mailbox.try_send(envelope)
            {
                e.fail(CallError::ShuttingDown);
            }
        }
        entry.insert(self.spawn_activation(plugin, actor, mailbox, receiver));
    }

    /// Starts a new activation of `actor` reading `receiver`; returns its
    /// directory entry.
    fn spawn_activation(
        &self,
        plugin: Arc<Plugin>,
        actor: &ActorRef,
        mailbox: mpsc::Sender<Envelope>,
        receiver: mpsc::Receiver<Envelope>,
    ) -> ActivationHandle {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(activation::run(
            self.clone(),
            plugin,
            actor.clone(),
            id,
            receiver,
        ));
        ActivationHandle { id, mailbox }
    }

    /// Removes activation `id` of `actor` from the directory (if it is still
    /// the one listed).
    pub(crate) fn forget(&self, actor: &ActorRef, id: u64) {
        self.inner
            .directory
            .remove_if(actor, |_, handle| handle.id == id);
    }

    /// Stops taking calls and deactivates every actor (running
    /// `on-deactivate`); returns when all have finished.
    pub async fn shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::Relaxed);
        self.inner.reminders.wake();
        let mailboxes: Vec<_> = self
            .inner
            .directory
            .iter()
            .map(|e| e.value().mailbox.clone())
            .collect();
        let mut pending = Vec::with_capacity(mailboxes.len());
        for mailbox in mailboxes {
            let (done, finished) = oneshot::channel();
            if mailbox.send(Envelope::Deactivate { done }).await.is_ok() {
                pending.push(finished);
            }
        }
        for finished in pending {
            let _ = finished.await;
        }
    }
}
