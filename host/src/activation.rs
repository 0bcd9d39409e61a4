//! One activation: the live instance of one actor, owned by one tokio task.
//!
//! The task owns the wasmtime `Store` and reads the actor's bounded mailbox;
//! it runs one turn at a time (a call, a timer tick or a lifecycle hook), so
//! guest code is never entered twice at once. It ends in one of two ways:
//!
//! * **Deactivation** (idle timeout, the actor's own request, host shutdown):
//!   timers are cancelled, `on-deactivate` runs, the actor leaves the
//!   directory, and any message that slipped into the mailbox meanwhile is
//!   delivered again — to a fresh activation — so none is lost.
//! * **Death** (a trap, a deadline overrun or the memory limit): the failing
//!   turn's caller gets the error, the instance is thrown away without running
//!   guest code again, and queued messages are delivered to a fresh activation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep;
use wasmtime::component::{Func, Instance, TypedFunc, Val};
use wasmtime::{Store, UpdateDeadline, WasmBacktrace};

use crate::error::CallError;
use crate::host::Host;
use crate::imports::{ActivationState, DeadlineExceeded, DisconnectReason, MemoryLimitExceeded};
use crate::plugin::Plugin;
use crate::proxy::CallChain;
use crate::ActorRef;

/// Calls handled in a row before the task looks at its timers again.
const BATCH: usize = 64;

/// A message in an activation's mailbox.
pub(crate) enum Envelope {
    /// Call the plugin's function number `function`; answer on `reply`
    /// unless it is a one-way message.
    Call {
        function: usize,
        args: Vec<Val>,
        chain: CallChain,
        reply: Option<oneshot::Sender<Result<Option<Val>, CallError>>>,
    },
    /// Run `on-reminder(name)`, then report on `done`.
    Reminder {
        name: String,
        done: oneshot::Sender<Result<(), CallError>>,
    },
    /// Run the lifecycle hook for a gateway session event; report on `done`
    /// if someone waits for it.
    Session {
        event: SessionEvent,
        done: Option<oneshot::Sender<Result<(), CallError>>>,
    },
    /// Deactivate, then report on `done`.
    Deactivate { done: oneshot::Sender<()> },
}

/// Something that happened to a game client's session, for its owner.
pub(crate) enum SessionEvent {
    /// `on-connect(session)`.
    Connect(u64),
    /// `on-message(session, payload, reliable)`.
    Message {
        session: u64,
        payload: Vec<u8>,
        reliable: bool,
    },
    /// `on-disconnect(session, reason)`.
    Disconnect {
        session: u64,
        reason: DisconnectReason,
    },
}

impl SessionEvent {
    fn hook(&self) -> &'static str {
        match self {
            SessionEvent::Connect(_) => "on-connect",
            SessionEvent::Message { .. } => "on-message",
            SessionEvent::Disconnect { .. } => "on-disconnect",
        }
    }
}

impl Envelope {
    /// Answers the envelope with `error` instead of delivering it.
    pub(crate) fn fail(self, error: CallError) {
        match self {
            Envelope::Call {
                reply: Some(reply), ..
            } => {
                let _ = reply.send(Err(error));
            }
            Envelope::Call { reply: None, .. } => {
                tracing::warn!(%error, "one-way message not delivered");
            }
            Envelope::Reminder { done, .. } => {
                let _ = done.send(Err(error));
            }
            Envelope::Session {
                done: Some(done), ..
            } => {
                let _ = done.send(Err(error));
            }
            Envelope::Session { event, done: None } => {
                tracing::warn!(%error, hook = event.hook(), "session event not delivered");
            }
            Envelope::Deactivate { done } => {
                let _ = done.send(());
            }
        }
    }
}

/// How the serving loop ended.
enum End {
    Deactivate(Option<oneshot::Sender<()>>),
    Died,
}

struct Activation {
    host: Host,
    plugin: Arc<Plugin>,
    actor: ActorRef,
    id: u64,
    store: Store<ActivationState>,
    instance: Instance,
    funcs: Vec<Option<Func>>,
    on_deactivate: TypedFunc<(), ()>,
    on_timer: TypedFunc<(String,), ()>,
    on_reminder: TypedFunc<(String,), ()>,
    on_connect: TypedFunc<(u64,), ()>,
    on_message: TypedFunc<(u64, Vec<u8>, bool), ()>,
    on_disconnect: TypedFunc<(u64, DisconnectReason), ()>,
}

/// Runs the activation `id` of `actor` until it deactivates or dies.
pub(crate) async fn run(
    host: Host,
    plugin: Arc<Plugin>,
    actor: ActorRef,
    id: u64,
    mut mailbox: mpsc::Receiver<Envelope>,
) {
    match Activation::start(host.clone(), plugin, actor.clone(), id).await {
        Ok(activation) => activation.serve(mailbox).await,
        Err(error) => {
            tracing::warn!(%actor, %error, "activation failed");
            host.forget(&actor, id);
            mailbox.close();
            while let Some(envelope) = mailbox.recv().await {
                envelope.fail(error.clone());
            }
        }
    }
}

impl Activation {
    async fn start(
        host: Host,
        plugin: Arc<Plugin>,
        actor: ActorRef,
        id: u64,
    ) -> Result<Self, CallError> {
        let limits = host.limits();
        let data = ActivationState::new(
            host.clone(),
            actor.clone(),
            limits.max_memory,
            limits.turn_deadline,
        );
        let mut store = Store::new(host.engine(), data);
        store.limiter(|s| &mut s.limiter);
        // Checked at every epoch tick while guest code runs: long turns yield
        // to other tasks, and a turn past its deadline is stopped.
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if Instant::now() >= state.turn_deadline {
                return Err(DeadlineExceeded(state.turn_limit).into());
            }
            Ok(UpdateDeadline::Yield(1))
        });
        let name = actor.to_string();
        // Instantiation runs guest start code: it is part of the first turn.
        store.set_epoch_deadline(1);
        let failed = |message: String| CallError::ActivationFailed {
            actor: name.clone(),
            message,
        };
        let instance = plugin
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| failed(format!("{e:#}")))?;
        let lifecycle = plugin.lifecycle;
        let typed = |store: &mut Store<ActivationState>, index| {
            instance.get_typed_func::<(), ()>(store, index)
        };
        let on_activate =
            typed(&mut store, &lifecycle.on_activate).map_err(|e| failed(format!("{e:#}")))?;
        let on_deactivate =
            typed(&mut store, &lifecycle.on_deactivate).map_err(|e| failed(format!("{e:#}")))?;
        let on_timer = instance
            .get_typed_func::<(String,), ()>(&mut store, &lifecycle.on_timer)
            .map_err(|e| failed(format!("{e:#}")))?;
        let on_reminder = instance
            .get_typed_func::<(String,), ()>(&mut store, &lifecycle.on_reminder)
            .map_err(|e| failed(format!("{e:#}")))?;
        let on_connect = instance
            .get_typed_func::<(u64,), ()>(&mut store, &lifecycle.on_connect)
            .map_err(|e| failed(format!("{e:#}")))?;
        let on_message = instance
            .get_typed_func::<(u64, Vec<u8>, bool), ()>(&mut store, &lifecycle.on_message)
            .map_err(|e| failed(format!("{e:#}")))?;
        let on_disconnect = instance
            .get_typed_func::<(u64, DisconnectReason), ()>(&mut store, &lifecycle.on_disconnect)
            .map_err(|e| failed(format!("{e:#}")))?;
        let funcs = vec![None; plugin.functions.len()];
        let mut activation = Activation {
            host,
            plugin,
            actor,
            id,
            store,
            instance,
            funcs,
            on_deactivate,
            on_timer,
            on_reminder,
            on_connect,
            on_message,
            on_disconnect,
        };
        activation.begin_turn();
        if let Err(e) = on_activate.call_async(&mut activation.store, ()).await {
            return Err(match activation.classify("on-activate", e) {
                unavailable @ CallError::StateUnavailable { .. } => unavailable,
                other => failed(format!("on-activate failed: {other}")),
            });
        }
        tracing::debug!(actor = %activation.actor, "activated");
        Ok(activation)
    }

    fn begin_turn(&mut self) {
        let state = self.store.data_mut();
        state.turn_deadline = Instant::now() + state.turn_limit;
        state.state_failure = None;
        self.store.set_epoch_deadline(1);
    }

    /// Turns a failed turn's error into what the caller sees.
    fn classify(&self, function: &str, error: wasmtime::Error) -> CallError {
        let actor = self.actor.to_string();
        let function = function.to_owned();
        if let Some(d) = error.downcast_ref::<DeadlineExceeded>() {
            return CallError::DeadlineExceeded {
                actor,
                function,
                limit: d.0,
            };
        }
        if let Some(m) = error.downcast_ref::<MemoryLimitExceeded>() {
            return CallError::OutOfMemory {
                actor,
                function,
                message: m.to_string(),
            };
        }
        if let Some(message) = self.store.data().state_failure.clone() {
            return CallError::StateUnavailable {
                actor,
                function,
                message,
            };
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
        CallError::Trapped {
            actor,
            function,
            reason,
            backtrace,
        }
    }

    fn func(&mut self, index: usize) -> Option<Func> {
        if let Some(f) = self.funcs[index] {
            return Some(f);
        }
        let f = self
            .instance
            .get_func(&mut self.store, self.plugin.functions[index].index)?;
        self.funcs[index] = Some(f);
        Some(f)
    }

    /// Runs one call as a turn. `Err` means the activation died.
    async fn call(
        &mut self,
        index: usize,
        args: Vec<Val>,
        chain: CallChain,
        reply: Option<oneshot::Sender<Result<Option<Val>, CallError>>>,
    ) -> Result<(), ()> {
        let answer = |outcome: Result<Option<Val>, CallError>| match reply {
            Some(reply) => {
                let _ = reply.send(outcome);
            }
            None => {
                if let Err(error) = outcome {
                    tracing::warn!(%error, "one-way message failed");
                }
            }
        };
        let Some(func) = self.func(index) else {
            answer(Err(CallError::UnknownFunction {
                actor_type: self.actor.actor_type.to_string(),
                function: self.plugin.functions[index].name.clone(),
            }));
            return Ok(());
        };
        let mut results = if self.plugin.functions[index].result.is_some() {
            vec![Val::Bool(false)]
        } else {
            Vec::new()
        };
        self.begin_turn();
        self.store.data_mut().chain = chain;
        let outcome = func.call_async(&mut self.store, &args, &mut results).await;
        self.store.data_mut().chain = None;
        match outcome {
            Ok(()) => {
                answer(Ok(results.pop()));
                Ok(())
            }
            Err(e) => {
                let error = self.classify(&self.plugin.functions[index].name, e);
                tracing::warn!(actor = %self.actor, %error, "activation ended by a failed call");
                answer(Err(error));
                Err(())
            }
        }
    }

    /// Runs one reminder firing as a turn. `Err` means the activation died.
    async fn remind(
        &mut self,
        name: String,
        done: oneshot::Sender<Result<(), CallError>>,
    ) -> Result<(), ()> {
        self.begin_turn();
        match self.on_reminder.call_async(&mut self.store, (name,)).await {
            Ok(()) => {
                let _ = done.send(Ok(()));
                Ok(())
            }
            Err(e) => {
                let error = self.classify("on-reminder", e);
                tracing::warn!(actor = %self.actor, %error, "activation ended by a failed reminder");
                let _ = done.send(Err(error));
                Err(())
            }
        }
    }

    /// Runs a session event's hook as a turn. `Err` means the activation
    /// died.
    async fn session(
        &mut self,
        event: SessionEvent,
        done: Option<oneshot::Sender<Result<(), CallError>>>,
    ) -> Result<(), ()> {
        let hook = event.hook();
        self.begin_turn();
        let store = &mut self.store;
        let outcome = match event {
            SessionEvent::Connect(session) => self.on_connect.call_async(store, (session,)).await,
            SessionEvent::Message {
                session,
                payload,
                reliable,
            } => {
                self.on_message
                    .call_async(store, (session, payload, reliable))
                    .await
            }
            SessionEvent::Disconnect { session, reason } => {
                self.on_disconnect
                    .call_async(store, (session, reason))
                    .await
            }
        };
        match outcome {
            Ok(()) => {
                if let Some(done) = done {
                    let _ = done.send(Ok(()));
                }
                Ok(())
            }
            Err(e) => {
                let error = self.classify(hook, e);
                tracing::warn!(actor = %self.actor, %error, "activation ended by a failed session hook");
                if let Some(done) = done {
                    let _ = done.send(Err(error));
                }
                Err(())
            }
        }
    }

    /// Runs one timer tick as a turn. `Err` means the activation died.
    async fn tick(&mut self, name: String) -> Result<(), ()> {
        self.begin_turn();
        match self.on_timer.call_async(&mut self.store, (name,)).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let error = self.classify("on-timer", e);
                tracing::warn!(actor = %self.actor, %error, "activation ended by a failed timer tick");
                Err(())
            }
        }
    }

    async fn serve(mut self, mut mailbox: mpsc::Receiver<Envelope>) {
        let idle_timeout = self.host.idle_timeout();
        let mut last_activity = Instant::now();
        let idle = sleep(idle_timeout);
        tokio::pin!(idle);
        let timer = sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut timer_armed: Option<Instant> = None;

        let end = 'serve: loop {
            let next_tick = self.store.data().timers.next_due();
            if next_tick != timer_armed {
                if let Some(at) = next_tick {
                    timer.as_mut().reset(at.into());
                }
                timer_armed = next_tick;
            }
            tokio::select! {
                envelope = mailbox.recv() => {
                    let Some(mut envelope) = envelope else { break 'serve End::Deactivate(None) };
                    last_activity = Instant::now();
                    let mut handled = 0;
                    loop {
                        handled += 1;
                        match envelope {
                            Envelope::Call { function, args, chain, reply } => {
                                if self.call(function, args, chain, reply).await.is_err() {
                                    break 'serve End::Died;
                                }
                            }
                            Envelope::Reminder { name, done } => {
                                if self.remind(name, done).await.is_err() {
                                    break 'serve End::Died;
                                }
                            }
                            Envelope::Session { event, done } => {
                                if self.session(event, done).await.is_err() {
                                    break 'serve End::Died;
                                }
                            }
                            Envelope::Deactivate { done } => break 'serve End::Deactivate(Some(done)),
                        }
                        if self.store.data().deactivate_requested {
                            break 'serve End::Deactivate(None);
                        }
                        if handled == BATCH {
                            break;
                        }
                        match mailbox.try_recv() {
                            Ok(next) => envelope = next,
                            Err(_) => break,
                        }
                    }
                }
                () = &mut timer, if timer_armed.is_some() => {
                    timer_armed = None;
                    while let Some(tick) = self.store.data_mut().timers.take_next_due(Instant::now()) {
                        if tick.keep_alive {
                            last_activity = Instant::now();
                        }
                        if self.tick(tick.name).await.is_err() {
                            break 'serve End::Died;
                        }
                        if self.store.data().deactivate_requested {
                            break 'serve End::Deactivate(None);
                        }
                    }
                }
                () = &mut idle => {
                    if last_activity.elapsed() >= idle_timeout {
                        break 'serve End::Deactivate(None);
                    }
                    idle.as_mut().reset((last_activity + idle_timeout).into());
                }
            }
        };

        match end {
            End::Deactivate(done) => {
                self.deactivate().await;
                self.leave(mailbox).await;
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            End::Died => self.leave(mailbox).await,
        }
    }

    /// Cancels the timers and runs `on-deactivate`.
    async fn deactivate(&mut self) {
        self.store.data_mut().timers.clear();
        self.begin_turn();
        if let Err(e) = self.on_deactivate.call_async(&mut self.store, ()).await {
            let error = self.classify("on-deactivate", e);
            tracing::warn!(actor = %self.actor, %error, "on-deactivate failed");
        } else {
            tracing::debug!(actor = %self.actor, "deactivated");
        }
    }

    /// Leaves the directory. Messages still queued go, in the order they
    /// arrived, to a successor activation that takes this one's place before
    /// any later message can reach the actor.
    async fn leave(self, mut mailbox: mpsc::Receiver<Envelope>) {
        mailbox.close();
        let mut left = Vec::new();
        while let Some(envelope) = mailbox.recv().await {
            match envelope {
                Envelope::Deactivate { done } => {
                    let _ = done.send(());
                }
                call => left.push(call),
            }
        }
        // The instance goes back to the pool before a successor needs one.
        drop(self.store);
        self.host.hand_over(&self.actor, self.id, left);
    }
}
