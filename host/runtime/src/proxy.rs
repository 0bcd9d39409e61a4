//! Typed calls between actors, through proxy imports.
//!
//! A caller imports a *proxy interface* derived from the callee's actor
//! interface by `grove wit proxy` (see [`crate::proxy_wit`]): a package whose
//! name ends in `-proxy`, holding one resource per actor type, e.g.
//!
//! ```wit
//! resource player {
//!     constructor(key: string);
//!     set-timeout: func(timeout-ms: u32);
//!     take-hit: func(hit: hit) -> result<result<stats, player-error>, call-error>;
//!     send-take-hit: func(hit: hit) -> result<_, call-error>;
//!     start-take-hit: func(hit: hit) -> result<pending-take-hit, call-error>;
//! }
//! resource pending-take-hit {
//!     wait: func() -> result<result<stats, player-error>, call-error>;
//! }
//! ```
//!
//! The host implements those imports dynamically for whatever proxy a plugin
//! imports: a constructor makes a [`ProxyRef`] (no activation happens), a
//! method call routes the arguments — the very `Val`s the caller's bindings
//! produced — to the target activation and hands the callee's result back.
//! `start-f` sends the call and returns a handle on a pending call, whose
//! `wait` takes the answer; both kinds of handle live in the activation's
//! one table of proxies, under its one limit. Whatever goes wrong on the
//! callee's side comes back as a `call-error` value; the caller's turn goes
//! on.
//!
//! Every call carries its [call chain](grove_core::chain). An actor waits for
//! the answer inside its turn, so a call back into any actor on the chain
//! (A → B → A) could never be answered: it fails at once with `reentrancy`.
//!
//! The callee's function is named in the message and resolved by the
//! activation that runs it, against the plugin that activation runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use grove_core::{chain, CallChain, Message};

use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{
    Component, Linker, LinkerInstance, Resource, ResourceAny, ResourceDynamic, ResourceType, Val,
};
use wasmtime::{Engine, StoreContextMut};

use crate::directory::{Call, Directory, Started};
use crate::error::{CallError, RejectedCall};
use crate::imports::{ActivationState, LimitExceeded};
use crate::mailbox::{Answer, Envelope};

use crate::ActorRef;

/// Proxy packages are named `<namespace>:<package>-proxy`.
pub const PROXY_PACKAGE_SUFFIX: &str = "-proxy";

/// The method every proxy resource has for changing its call timeout.
pub const SET_TIMEOUT: &str = "set-timeout";

pub use crate::catalog::SEND_PREFIX;

/// What a proxy resource handle stands for: one actor, and how long calls
/// through this handle wait for an answer.
#[derive(Debug, Clone)]
pub struct ProxyRef {
    target: ActorRef,
    timeout: Duration,
}

/// The prefix of the proxy method that starts a call without waiting:
/// `start-query` starts `query`, and returns a `pending-query` handle.
pub const START_PREFIX: &str = "start-";

/// The prefix of the resource a started call's answer is waited on through.
pub const PENDING_PREFIX: &str = "pending-";

/// The method of a `pending-f` handle that waits for the answer.
pub const WAIT: &str = "wait";

/// A call started through a proxy's `start-f`, behind its `pending-f`
/// handle, until a `wait` takes its answer.
pub(crate) enum PendingCall {
    /// Its handle is made; the call is being sent.
    Sending,
    Started(ActorRef, Started),
    /// A `wait` took the answer, or waits for it now.
    Taken,
}

/// What one imported proxy method does.
#[derive(Clone)]
enum Method {
    SetTimeout,
    /// A call of the callee's function of this name, or — if the callee has
    /// no such function and the name starts with `send-` — a one-way send of
    /// the rest (see [`Catalog`](crate::catalog::Catalog)).
    Invoke(Arc<str>),
    /// `start-f`: a call of `f` whose answer is waited for later, through a
    /// handle of the `pending-f` resource (this type id).
    Start {
        function: Arc<str>,
        pending: u32,
    },
    /// `pending-f.wait`.
    Wait,
}

/// Defines, in `linker`, every proxy interface `component` imports. An
/// import in a `-proxy` package that does not have the shape `grove wit proxy`
/// generates is an error naming it.
pub(crate) fn define_imports(
    engine: &Engine,
    linker: &mut Linker<ActivationState>,
    component: &Component,
) -> Result<(), String> {
    let ty = component.component_type();
    let mut next_type = 0u32;
    for (name, item) in ty.imports(engine) {
        let ComponentItem::ComponentInstance(instance) = item.ty else {
            continue;
        };
        if !is_proxy_interface(name) {
            continue;
        }
        let mut resources = Vec::new();
        let mut funcs = Vec::new();
        for (export, item) in instance.exports(engine) {
            match item.ty {
                ComponentItem::Resource(_) => {
                    resources.push((export.to_owned(), next_type));
                    next_type += 1;
                }
                ComponentItem::ComponentFunc(f) => funcs.push((export.to_owned(), f)),
                ComponentItem::Type(_) => {}
                _ => {
                    return Err(format!(
                        "proxy `{name}` exports `{export}`, which is not a resource or method"
                    ))
                }
            }
        }
        let type_of = |resource: &str| {
            resources
                .iter()
                .find(|(r, _)| r == resource)
                .map(|(_, id)| *id)
        };
        let mut inst = linker
            .instance(name)
            .map_err(|e| format!("cannot define proxy `{name}`: {e}"))?;
        for (resource, type_id) in &resources {
            let type_id = *type_id;
            // Actor handles have a constructor; pending calls do not.
            let actor = funcs
                .iter()
                .any(|(func, _)| *func == format!("[constructor]{resource}"));
            // A pending call dropped unanswered: the caller stopped
            // waiting, so the call does not run if it has not begun.
            let defined = if actor {
                define_resource::<ProxyRef>(&mut inst, resource, type_id)
            } else {
                define_resource::<PendingCall>(&mut inst, resource, type_id)
            };
            defined.map_err(|e| format!("cannot define proxy `{name}`: {e}"))?;
            let actor_type: Arc<str> = resource.as_str().into();
            let prefix = format!("[method]{resource}.");
            for (func, f) in &funcs {
                if *func == format!("[constructor]{resource}") {
                    check_constructor(name, func, f)?;
                    let actor_type = actor_type.clone();
                    inst.func_new(func, move |store, _ty, params, results| {
                        construct(store, &actor_type, type_id, params, results)
                    })
                    .map_err(|e| format!("cannot define `{name}#{func}`: {e}"))?;
                } else if let Some(method) = func.strip_prefix(&prefix) {
                    let method = if !actor {
                        if method != WAIT {
                            return Err(format!(
                                "proxy `{name}`: `{func}` is not a method of a pending call; regenerate the proxy with `grove wit proxy`"
                            ));
                        }
                        check_method(name, func, f)?;
                        Method::Wait
                    } else if method == SET_TIMEOUT {
                        Method::SetTimeout
                    } else if starts_a_call(f) {
                        let called = method.strip_prefix(START_PREFIX).unwrap_or(method);
                        let pending = type_of(&format!("{PENDING_PREFIX}{called}"))
                            .filter(|_| method.starts_with(START_PREFIX))
                            .ok_or_else(|| {
                                format!(
                                    "proxy `{name}`: `{func}` returns a handle but is not `{START_PREFIX}<f>` returning `{PENDING_PREFIX}<f>`; regenerate the proxy with `grove wit proxy`"
                                )
                            })?;
                        Method::Start {
                            function: called.into(),
                            pending,
                        }
                    } else {
                        check_method(name, func, f)?;
                        Method::Invoke(method.into())
                    };
                    inst.func_new_async(func, move |store, _ty, params, results| {
                        let method = method.clone();
                        Box::new(async move { invoke(store, method, params, results).await })
                    })
                    .map_err(|e| format!("cannot define `{name}#{func}`: {e}"))?;
                }
            }
        }
        for (func, _) in &funcs {
            let known = resources.iter().any(|(r, _)| {
                *func == format!("[constructor]{r}") || func.starts_with(&format!("[method]{r}."))
            });
            if !known {
                return Err(format!(
                    "proxy `{name}` has `{func}`, which is not a constructor or method of one of its resources; regenerate it with `grove wit proxy`"
                ));
            }
        }
    }
    Ok(())
}

/// Defines resource `resource` as host type `type_id`, whose handles are
/// `T`s in the activation's table: dropping a handle deletes its `T`.
fn define_resource<T: Send + 'static>(
    inst: &mut LinkerInstance<'_, ActivationState>,
    resource: &str,
    type_id: u32,
) -> wasmtime::Result<()> {
    inst.resource(
        resource,
        ResourceType::host_dynamic(type_id),
        |mut store: StoreContextMut<'_, ActivationState>, rep| {
            store
                .data_mut()
                .proxies
                .delete(Resource::<T>::new_own(rep))?;
            Ok(())
        },
    )
}

/// Whether proxy method `f` starts a call: it returns
/// `result<pending-f, call-error>`, a handle, where every other method
/// returns values.
fn starts_a_call(f: &ComponentFunc) -> bool {
    let mut results = f.results();
    match (results.next(), results.next()) {
        (Some(wasmtime::component::Type::Result(r)), None) => {
            matches!(r.ok(), Some(wasmtime::component::Type::Own(_)))
        }
        _ => false,
    }
}

/// Whether the import `name` (`ns:pkg-proxy/iface@version`) is a proxy.
fn is_proxy_interface(name: &str) -> bool {
    name.split_once('/')
        .is_some_and(|(package, _)| package.ends_with(PROXY_PACKAGE_SUFFIX))
}

fn check_constructor(name: &str, func: &str, f: &ComponentFunc) -> Result<(), String> {
    let params: Vec<_> = f.params().map(|(_, t)| t).collect();
    if params != [wasmtime::component::Type::String] {
        return Err(format!(
            "proxy `{name}`: `{func}` must take just the actor's key (a string)"
        ));
    }
    Ok(())
}

fn check_method(name: &str, func: &str, f: &ComponentFunc) -> Result<(), String> {
    let mut results = f.results();
    match (results.next(), results.next()) {
        (Some(wasmtime::component::Type::Result(_)), None) => Ok(()),
        _ => Err(format!(
            "proxy `{name}`: `{func}` must return `result<_, call-error>`; regenerate the proxy with `grove wit proxy`"
        )),
    }
}

fn construct(
    mut store: StoreContextMut<'_, ActivationState>,
    actor_type: &Arc<str>,
    type_id: u32,
    params: &[Val],
    results: &mut [Val],
) -> wasmtime::Result<()> {
    let Some(Val::String(key)) = params.first() else {
        return Err(wasmtime::Error::msg(
            "proxy constructor takes the actor's key",
        ));
    };
    if key.len() > crate::state::MAX_KEY_BYTES {
        return Err(LimitExceeded(format!(
            "a proxy's actor key is {} bytes; the limit is {}",
            key.len(),
            crate::state::MAX_KEY_BYTES
        ))
        .into());
    }
    let Some(result) = results.first_mut() else {
        return Err(wasmtime::Error::msg(
            "proxy constructor returns the new handle",
        ));
    };
    // The type's name is copied for each handle rather than shared: every
    // call through a handle copies its target into the message (the callee
    // drops that copy), and a name shared by every handle on that type
    // would have its reference count's cache line pulled to and fro by
    // all their callers, not by one caller and its callee.
    let proxy = ProxyRef {
        target: ActorRef {
            actor_type: Arc::from(&**actor_type),
            key: key.as_str().into(),
        },
        timeout: store.data().services.call_timeout,
    };
    let max = store.data().max_proxies;
    let handle = store.data_mut().proxies.push(proxy).map_err(|_| {
        LimitExceeded(format!(
            "an activation may hold at most {max} proxy handles and pending calls"
        ))
    })?;
    let any = ResourceDynamic::new_own(handle.rep(), type_id).try_into_resource_any(&mut store)?;
    *result = Val::Resource(any);
    Ok(())
}

fn handle_rep(
    store: &mut StoreContextMut<'_, ActivationState>,
    params: &[Val],
) -> wasmtime::Result<u32> {
    let Some(Val::Resource(any)) = params.first() else {
        return Err(wasmtime::Error::msg(
            "proxy method called without its handle",
        ));
    };
    let any: ResourceAny = *any;
    Ok(ResourceDynamic::try_from_resource_any(any, &mut *store)?.rep())
}

async fn invoke(
    mut store: StoreContextMut<'_, ActivationState>,
    method: Method,
    params: &[Val],
    results: &mut [Val],
) -> wasmtime::Result<()> {
    let rep = handle_rep(&mut store, params)?;
    let started = Instant::now();
    let outcome = match method {
        Method::SetTimeout => {
            let Some(Val::U32(ms)) = params.get(1) else {
                return Err(wasmtime::Error::msg("set-timeout takes milliseconds (u32)"));
            };
            let handle = Resource::<ProxyRef>::new_borrow(rep);
            store.data_mut().proxies.get_mut(&handle)?.timeout =
                Duration::from_millis(u64::from(*ms).max(1));
            return Ok(());
        }
        Method::Invoke(method) => match outgoing(&store, rep, params)? {
            Err(error) => Err(error),
            Ok(out) => {
                let (function, one_way) = store
                    .data()
                    .services
                    .catalog
                    .resolve(&out.target.actor_type, &method);
                if one_way {
                    send(out, function).await.map(|()| None)
                } else {
                    let directory = out.directory;
                    match out.call(function) {
                        Err(error) => Err(error),
                        Ok(call) => directory.call(call).await,
                    }
                }
            }
        },
        Method::Start { function, pending } => match outgoing(&store, rep, params)? {
            Err(error) => Err(error),
            Ok(out) => {
                // The store is needed again for the handle: the call takes
                // copies of what it borrowed from it.
                let directory = out.directory.clone();
                let target = out.target.clone();
                match out.call(function) {
                    Err(error) => Err(error),
                    Ok(call) => {
                        let call = Call {
                            target: &target,
                            ..call
                        };
                        // The handle first: past the limit, nothing is sent.
                        let (handle, value) = pending_handle(&mut store, pending)?;
                        let sent = directory.start_call(call).await;
                        *store.data_mut().proxies.get_mut(&handle)? =
                            PendingCall::Started(target, sent);
                        Ok(Some(value))
                    }
                }
            }
        },
        Method::Wait => wait(&mut store, rep).await?,
    };
    // Time spent waiting for the callee, or for room in its mailbox, is not
    // the caller's own turn time; the turn's wall-clock bound still counts it.
    store.data_mut().turn_deadline += started.elapsed();
    if let Some(result) = results.first_mut() {
        *result = Val::Result(match outcome {
            Ok(value) => Ok(value.map(Box::new)),
            Err(error) => Err(Some(Box::new(error.to_wit_val()))),
        });
    }
    Ok(())
}

/// A message about to leave through a proxy handle. It borrows from the
/// caller's store what it does not own rather than copying it: a copy of
/// the directory, which every activation shares, would pull its reference
/// count's cache line to this core on every call, and copies of the target,
/// the caller and the chain would be dropped again unused.
struct Outgoing<'a> {
    target: &'a ActorRef,
    args: Vec<Val>,
    /// How long the caller waits for the answer, and the message's deadline.
    timeout: Duration,
    directory: &'a Arc<Directory>,
    chain: &'a CallChain,
    caller: &'a ActorRef,
}

/// The message for the proxy method with `params` on handle `rep`, or the
/// `call-error` it fails with before leaving (it is too large).
fn outgoing<'a>(
    store: &'a StoreContextMut<'_, ActivationState>,
    rep: u32,
    params: &[Val],
) -> wasmtime::Result<Result<Outgoing<'a>, CallError>> {
    let handle = Resource::<ProxyRef>::new_borrow(rep);
    let proxy = store.data().proxies.get(&handle)?;
    let args = params.get(1..).unwrap_or_default();
    let size = grove_values::size::message_size(args);
    if size > grove_values::size::MAX_MESSAGE_SIZE {
        return Ok(Err(CallError::Rejected(RejectedCall::MessageTooLarge {
            actor: proxy.target.to_string(),
            size,
            limit: grove_values::size::MAX_MESSAGE_SIZE,
        })));
    }
    let state = store.data();
    // The caller's turn outlives its wait: a wait cut short of the turn's
    // wall-clock bound ends in `timeout`, and the caller goes on.
    let timeout = proxy.timeout.min(
        state
            .turn_wall_deadline
            .saturating_duration_since(Instant::now())
            * 9
            / 10,
    );
    Ok(Ok(Outgoing {
        target: &proxy.target,
        args: args.to_vec(),
        timeout,
        directory: &state.services.directory,
        chain: &state.chain,
        caller: &state.actor,
    }))
}

impl<'a> Outgoing<'a> {
    /// The call of `function`, on the caller's chain; a call back into an
    /// actor waiting on the chain fails at once.
    fn call(self, function: Arc<str>) -> Result<Call<'a>, CallError> {
        let chain = chain::extend(self.chain, self.caller, self.target)?;
        Ok(Call {
            target: self.target,
            function,
            args: self.args,
            chain,
            timeout: self.timeout,
            trace: crate::trace::current(),
        })
    }
}

/// A one-way send of `function`: returns once the message is queued.
async fn send(out: Outgoing<'_>, function: Arc<str>) -> Result<(), CallError> {
    let message = Message {
        target: out.target.clone(),
        function,
        args: out.args,
        chain: None,
        deadline: Instant::now() + out.timeout,
        reply: None,
        trace: crate::trace::current(),
    };
    // Never wait for room in the mailbox of an actor that waits on this
    // one: only it could make some.
    let may_wait = out.caller != out.target && !chain::contains(out.chain, out.target);
    out.directory
        .deliver(out.target, Envelope::Call(message), may_wait)
        .await
}

/// A new `pending-f` handle (resource type `pending`) for a call about to
/// be sent.
fn pending_handle(
    store: &mut StoreContextMut<'_, ActivationState>,
    pending: u32,
) -> wasmtime::Result<(Resource<PendingCall>, Val)> {
    let max = store.data().max_proxies;
    let handle = store
        .data_mut()
        .proxies
        .push(PendingCall::Sending)
        .map_err(|_| {
            LimitExceeded(format!(
                "an activation may hold at most {max} proxy handles and pending calls"
            ))
        })?;
    let any = ResourceDynamic::new_own(handle.rep(), pending).try_into_resource_any(&mut *store)?;
    Ok((Resource::new_borrow(handle.rep()), Val::Resource(any)))
}

/// `pending-f.wait` on handle `rep`: the started call's answer. It is
/// taken: a second `wait` on the handle traps.
async fn wait(
    store: &mut StoreContextMut<'_, ActivationState>,
    rep: u32,
) -> wasmtime::Result<Answer> {
    let handle = Resource::<PendingCall>::new_borrow(rep);
    let entry = store.data_mut().proxies.get_mut(&handle)?;
    let PendingCall::Started(target, started) = std::mem::replace(entry, PendingCall::Taken) else {
        return Err(wasmtime::Error::msg(
            "`wait` on a pending call whose answer an earlier `wait` took",
        ));
    };
    let directory = store.data().services.directory.clone();
    Ok(directory.answer(&target, started).await)
}
