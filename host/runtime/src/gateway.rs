//! Connects the QUIC gateway (`grove-gateway-quic`) to the host's actors.
//!
//! The gateway asks an **authenticator** — an actor function chosen in the
//! host's configuration, `func(credentials: list<u8>) -> result<actor-ref,
//! string>` — who owns each new session. Logins are spread over several
//! activations of the authenticator's actor type (keys `0`, `1`, ...) so that
//! they run in parallel. Session events then run as turns of the owning
//! actor: `on-connect` (awaited, so that a failure closes the session),
//! `on-message` for every frame and datagram, and `on-disconnect`.
//!
//! A gateway whose authenticator does not fit ([`AuthenticatorError`]) is
//! refused at start, before it listens ([`GatewayStartError`]).

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use grove_gateway_quic::{
    AuthError, Backend, Disconnect, Gateway, GatewayConfig, GatewayError, SessionId,
};
use wasmtime::component::{Type, Val};

use crate::bindings::DisconnectReason;
use crate::mailbox::SessionEvent;
use crate::{ActorRef, Host};

/// Why an authenticator does not fit the loaded plugins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthenticatorError {
    /// No loaded plugin provides the authenticator's actor type.
    #[error("no plugin provides the authenticator's actor type `{actor_type}`")]
    UnknownActorType {
        /// The actor type.
        actor_type: String,
    },
    /// The actor type has no such function.
    #[error("the authenticator's actor type `{actor_type}` has no function `{function}`")]
    UnknownFunction {
        /// The actor type.
        actor_type: String,
        /// The function asked for.
        function: String,
    },
    /// The function does not take credentials and answer with an owner.
    #[error("the authenticator `{actor_type}.{function}` must be `func(credentials: list<u8>) -> result<actor-ref, string>`; it is `{signature}`")]
    WrongSignature {
        /// The actor type.
        actor_type: String,
        /// The function.
        function: String,
        /// The function's WIT signature.
        signature: String,
    },
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayStartError {
    /// The authenticator does not fit the loaded plugins.
    #[error(transparent)]
    Authenticator(#[from] AuthenticatorError),
    /// The QUIC endpoint could not be set up (certificate, key or socket).
    #[error(transparent)]
    Gateway(#[from] GatewayError),
}

/// The actor function that authenticates game clients, written
/// `type.function` (e.g. `world-auth.login`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticator {
    /// The authenticator's actor type.
    pub actor_type: String,
    /// Its function, `func(credentials: list<u8>) -> result<actor-ref, string>`.
    pub function: String,
    /// How many activations (keys `0` to `workers - 1`) share the logins.
    pub workers: usize,
}

impl FromStr for Authenticator {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once('.') {
            Some((actor_type, function)) if !actor_type.is_empty() && !function.is_empty() => {
                Ok(Authenticator {
                    actor_type: actor_type.to_owned(),
                    function: function.to_owned(),
                    workers: 4,
                })
            }
            _ => Err(format!(
                "`{text}` is not an authenticator; write it as `type.function`, e.g. `world-auth.login`"
            )),
        }
    }
}

impl Authenticator {
    /// Checks that a loaded plugin provides the function with the right
    /// signature.
    pub fn check(&self, host: &Host) -> Result<(), AuthenticatorError> {
        let plugin =
            host.plugin(&self.actor_type)
                .map_err(|_| AuthenticatorError::UnknownActorType {
                    actor_type: self.actor_type.clone(),
                })?;
        let (_, function) =
            plugin
                .function(&self.function)
                .ok_or_else(|| AuthenticatorError::UnknownFunction {
                    actor_type: self.actor_type.clone(),
                    function: self.function.clone(),
                })?;
        let takes_bytes = matches!(
            function.params.as_slice(),
            [p] if matches!(&p.ty, Type::List(l) if l.ty() == Type::U8)
        );
        let answers = match &function.result {
            Some(Type::Result(r)) => {
                let owner = match r.ok() {
                    Some(Type::Record(record)) => {
                        let names: Vec<&str> = record.fields().map(|f| f.name).collect();
                        names == ["actor-type", "key"]
                            && record.fields().all(|f| f.ty == Type::String)
                    }
                    _ => false,
                };
                owner && r.err() == Some(Type::String)
            }
            _ => false,
        };
        if !takes_bytes || !answers {
            return Err(AuthenticatorError::WrongSignature {
                actor_type: self.actor_type.clone(),
                function: self.function.clone(),
                signature: function.signature.clone(),
            });
        }
        Ok(())
    }
}

/// The host as the gateway's [`Backend`].
pub struct ActorBackend {
    host: Host,
    authenticator: Authenticator,
    next_worker: AtomicUsize,
}

impl ActorBackend {
    /// Authenticates with `authenticator` and delivers session events to
    /// `host`'s actors.
    pub fn new(host: Host, authenticator: Authenticator) -> ActorBackend {
        ActorBackend {
            host,
            authenticator,
            next_worker: AtomicUsize::new(0),
        }
    }
}

/// Reads the authenticator's answer.
fn owner_of(answer: Option<Val>) -> Result<ActorRef, AuthError> {
    let unexpected = |what: &str| AuthError::Failed(format!("the authenticator answered {what}"));
    match answer {
        Some(Val::Result(Ok(Some(owner)))) => match *owner {
            Val::Record(fields) => match fields.as_slice() {
                [(_, Val::String(actor_type)), (_, Val::String(key))] => {
                    Ok(ActorRef::new(actor_type, key))
                }
                _ => Err(unexpected("a malformed actor-ref")),
            },
            _ => Err(unexpected("something other than an actor-ref")),
        },
        Some(Val::Result(Err(Some(reason)))) => match *reason {
            Val::String(reason) => Err(AuthError::Rejected(reason)),
            _ => Err(unexpected("a rejection without a reason")),
        },
        _ => Err(unexpected("something other than result<actor-ref, string>")),
    }
}

impl Backend for ActorBackend {
    type Owner = ActorRef;

    async fn authenticate(&self, credentials: Bytes) -> Result<ActorRef, AuthError> {
        let auth = &self.authenticator;
        let worker = self.next_worker.fetch_add(1, Ordering::Relaxed) % auth.workers.max(1);
        let actor = ActorRef::new(&auth.actor_type, &worker.to_string());
        let args = vec![Val::List(credentials.iter().map(|b| Val::U8(*b)).collect())];
        let answer = self
            .host
            .call(&actor, &auth.function, args)
            .await
            .map_err(|e| AuthError::Failed(e.to_string()))?;
        let owner = owner_of(answer)?;
        self.host.plugin(&owner.actor_type).map_err(|_| {
            AuthError::Failed(format!(
                "the authenticator named {owner}, but no plugin provides actor type `{}`",
                owner.actor_type
            ))
        })?;
        Ok(owner)
    }

    async fn connected(&self, session: SessionId, owner: &ActorRef) -> Result<(), String> {
        self.host
            .session_event(owner, SessionEvent::Connect(session), true)
            .await
            .map_err(|e| e.to_string())
    }

    async fn message(&self, session: SessionId, owner: &ActorRef, payload: Bytes, reliable: bool) {
        let event = SessionEvent::Message {
            session,
            payload: payload.into(),
            reliable,
        };
        // An undelivered event is logged where it fails.
        let _ = self.host.session_event(owner, event, false).await;
    }

    async fn disconnected(&self, session: SessionId, owner: &ActorRef, reason: Disconnect) {
        let reason = match reason {
            Disconnect::ClientClosed(reason) => DisconnectReason::ClientClosed(reason),
            Disconnect::TimedOut => DisconnectReason::TimedOut,
            Disconnect::ClosedByActor(reason) => DisconnectReason::ClosedByActor(reason),
            Disconnect::Kicked { code, reason } => {
                DisconnectReason::Kicked(format!("{code}: {reason}"))
            }
            Disconnect::HostShutdown => DisconnectReason::HostShutdown,
        };
        let event = SessionEvent::Disconnect { session, reason };
        // An undelivered event is logged where it fails.
        let _ = self.host.session_event(owner, event, false).await;
    }
}

/// Starts a QUIC gateway for `host`, authenticating clients with
/// `authenticator` (checked first).
pub async fn start(
    host: &Host,
    config: GatewayConfig,
    authenticator: Authenticator,
) -> Result<Gateway, GatewayStartError> {
    authenticator.check(host)?;
    let backend = Arc::new(ActorBackend::new(host.clone(), authenticator));
    Ok(Gateway::start(config, host.sessions().clone(), backend).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticators_parse_from_type_dot_function() {
        let auth: Authenticator = "world-auth.login".parse().unwrap();
        assert_eq!(auth.actor_type, "world-auth");
        assert_eq!(auth.function, "login");
        for bad in ["login", ".login", "world-auth.", ""] {
            assert!(bad.parse::<Authenticator>().is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_become_owners_or_reasons() {
        let owner = Val::Record(vec![
            ("actor-type".into(), Val::String("player".into())),
            ("key".into(), Val::String("ayla".into())),
        ]);
        assert_eq!(
            owner_of(Some(Val::Result(Ok(Some(Box::new(owner)))))),
            Ok(ActorRef::new("player", "ayla"))
        );
        let reason = Val::String("unknown player".into());
        assert_eq!(
            owner_of(Some(Val::Result(Err(Some(Box::new(reason)))))),
            Err(AuthError::Rejected("unknown player".into()))
        );
        assert!(matches!(owner_of(None), Err(AuthError::Failed(_))));
    }
}
