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
//! }
//! ```
//!
//! The host implements those imports dynamically for whatever proxy a plugin
//! imports: a constructor makes a [`ProxyRef`] (no activation happens), a
//! method call routes the arguments — the very `Val`s the caller's bindings
//! produced — to the target activation and hands the callee's result back.
//! Whatever goes wrong on the callee's side comes back as a `call-error` value;
//! the caller's turn goes on.
//!
//! Every call carries its [call chain](CallChain). An actor waits for the
//! answer inside its turn, so a call back into any actor on the chain
//! (A → B → A) could never be answered: it fails at once with `reentrancy`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{
    Component, Linker, Resource, ResourceAny, ResourceDynamic, ResourceType, Val,
};
use wasmtime::{Engine, StoreContextMut};

use crate::error::CallError;
use crate::imports::ActivationState;
use crate::ActorRef;

/// Proxy packages are named `<namespace>:<package>-proxy`.
pub const PROXY_PACKAGE_SUFFIX: &str = "-proxy";

/// The method every proxy resource has for changing its call timeout.
pub const SET_TIMEOUT: &str = "set-timeout";

/// The prefix of one-way methods: `send-take-hit` queues `take-hit`.
pub const SEND_PREFIX: &str = "send-";

/// Deepest call chain allowed (A → B → C → ... ); deeper calls fail.
pub const MAX_CHAIN_DEPTH: usize = 64;

/// One link of a call chain: the actor that made a call, and the chain that
/// actor was itself called in.
#[derive(Debug)]
pub struct ChainLink {
    actor: ActorRef,
    parent: CallChain,
    depth: usize,
}

/// The actors waiting, each in a turn, for the call at hand to be answered;
/// `None` for a call from outside any actor (HTTP, CLI, the Rust API, a timer).
pub type CallChain = Option<Arc<ChainLink>>;

/// The chain of a call that `caller`, itself called in `chain`, makes to
/// `target`; a reentrancy error if `target` is waiting on the chain already.
pub fn extend_chain(
    chain: &CallChain,
    caller: &ActorRef,
    target: &ActorRef,
) -> Result<CallChain, CallError> {
    let depth = chain.as_ref().map_or(0, |link| link.depth) + 1;
    let mut link = chain.as_deref();
    let mut reenters = caller == target;
    while let (false, Some(l)) = (reenters, link) {
        reenters = l.actor == *target;
        link = l.parent.as_deref();
    }
    if reenters {
        let mut actors = vec![target.to_string(), caller.to_string()];
        let mut link = chain.as_deref();
        while let Some(l) = link {
            actors.push(l.actor.to_string());
            link = l.parent.as_deref();
        }
        actors.reverse();
        return Err(CallError::Reentrancy {
            target: target.to_string(),
            chain: actors.join(" -> "),
        });
    }
    if depth > MAX_CHAIN_DEPTH {
        return Err(CallError::ChainTooDeep {
            depth,
            limit: MAX_CHAIN_DEPTH,
        });
    }
    Ok(Some(Arc::new(ChainLink {
        actor: caller.clone(),
        parent: chain.clone(),
        depth,
    })))
}

/// What a proxy resource handle stands for: one actor, and how long calls
/// through this handle wait for an answer.
#[derive(Debug, Clone)]
pub struct ProxyRef {
    target: ActorRef,
    timeout: Duration,
}

/// What one imported proxy method does.
#[derive(Clone)]
enum Method {
    SetTimeout,
    /// A call of the callee's function of this name, or — if the callee has
    /// no such function and the name starts with `send-` — a one-way send of
    /// the rest.
    Invoke(Arc<str>),
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
                ComponentItem::Resource(_) => resources.push(export.to_owned()),
                ComponentItem::ComponentFunc(f) => funcs.push((export.to_owned(), f)),
                ComponentItem::Type(_) => {}
                _ => {
                    return Err(format!(
                        "proxy `{name}` exports `{export}`, which is not a resource or method"
                    ))
                }
            }
        }
        let mut inst = linker
            .instance(name)
            .map_err(|e| format!("cannot define proxy `{name}`: {e}"))?;
        for resource in &resources {
            let type_id = next_type;
            next_type += 1;
            inst.resource(
                resource,
                ResourceType::host_dynamic(type_id),
                |mut store: StoreContextMut<'_, ActivationState>, rep| {
                    store
                        .data_mut()
                        .proxies
                        .delete(Resource::<ProxyRef>::new_own(rep))?;
                    Ok(())
                },
            )
            .map_err(|e| format!("cannot define proxy `{name}`: {e}"))?;
            let actor_type: Arc<str> = resource.as_str().into();
            for (func, f) in &funcs {
                if *func == format!("[constructor]{resource}") {
                    check_constructor(name, func, f)?;
                    let actor_type = actor_type.clone();
                    inst.func_new(func, move |store, _ty, params, results| {
                        construct(store, &actor_type, type_id, params, results)
                    })
                    .map_err(|e| format!("cannot define `{name}#{func}`: {e}"))?;
                } else if let Some(method) = func.strip_prefix(&format!("[method]{resource}.")) {
                    let method = if method == SET_TIMEOUT {
                        Method::SetTimeout
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
            let known = resources.iter().any(|r| {
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
    let proxy = ProxyRef {
        target: ActorRef {
            actor_type: actor_type.clone(),
            key: key.as_str().into(),
        },
        timeout: store.data().host.call_timeout(),
    };
    let handle = store.data_mut().proxies.push(proxy)?;
    let any = ResourceDynamic::new_own(handle.rep(), type_id).try_into_resource_any(&mut store)?;
    results[0] = Val::Resource(any);
    Ok(())
}

fn proxy_rep(
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
    let rep = proxy_rep(&mut store, params)?;
    let handle = Resource::<ProxyRef>::new_borrow(rep);
    let name = match method {
        Method::SetTimeout => {
            let Some(Val::U32(ms)) = params.get(1) else {
                return Err(wasmtime::Error::msg("set-timeout takes milliseconds (u32)"));
            };
            store.data_mut().proxies.get_mut(&handle)?.timeout =
                Duration::from_millis(u64::from(*ms).max(1));
            return Ok(());
        }
        Method::Invoke(name) => name,
    };
    let proxy = store.data().proxies.get(&handle)?.clone();
    let args = params[1..].to_vec();
    let (host, chain, caller) = {
        let state = store.data();
        (state.host.clone(), state.chain.clone(), state.actor.clone())
    };
    let outcome = match host.plugin(&proxy.target.actor_type) {
        Err(e) => Err(e),
        Ok(plugin) => match (plugin.function(&name), name.strip_prefix(SEND_PREFIX)) {
            (None, Some(one_way)) if plugin.function(one_way).is_some() => {
                host.send(&proxy.target, one_way, args).await.map(|()| None)
            }
            _ => match extend_chain(&chain, &caller, &proxy.target) {
                Err(e) => Err(e),
                Ok(chain) => {
                    let started = Instant::now();
                    let outcome = host
                        .call_in_chain(&proxy.target, &name, args, chain, Some(proxy.timeout))
                        .await;
                    // Time spent waiting for the callee is not the caller's
                    // own turn time.
                    store.data_mut().turn_deadline += started.elapsed();
                    outcome
                }
            },
        },
    };
    results[0] = Val::Result(match outcome {
        Ok(value) => Ok(value.map(Box::new)),
        Err(error) => Err(Some(Box::new(error.to_wit_val()))),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ActorRef {
        s.parse().unwrap()
    }

    #[test]
    fn a_call_back_into_the_chain_is_reentrancy() {
        let a_to_b = extend_chain(&None, &r("a/1"), &r("b/1")).unwrap();
        let b_to_c = extend_chain(&a_to_b, &r("b/1"), &r("c/1")).unwrap();
        let err = extend_chain(&b_to_c, &r("c/1"), &r("a/1")).unwrap_err();
        assert_eq!(err.kind(), "reentrancy");
        assert!(
            err.to_string().contains("a/1 -> b/1 -> c/1 -> a/1"),
            "{err}"
        );
        assert_eq!(
            extend_chain(&None, &r("a/1"), &r("a/1"))
                .unwrap_err()
                .kind(),
            "reentrancy"
        );
        // Another key of the same type is another actor.
        assert!(extend_chain(&b_to_c, &r("c/1"), &r("a/2")).is_ok());
    }

    #[test]
    fn chains_have_a_depth_limit() {
        let mut chain = None;
        for i in 0..MAX_CHAIN_DEPTH {
            chain =
                extend_chain(&chain, &r(&format!("a/{i}")), &r(&format!("a/{}", i + 1))).unwrap();
        }
        let err = extend_chain(&chain, &r("a/x"), &r("a/y")).unwrap_err();
        assert_eq!(err.kind(), "chain-too-deep");
    }
}
