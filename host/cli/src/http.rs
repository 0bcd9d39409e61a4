//! The HTTP API.
//!
//! * `POST /v1/actors/{type}/{key}/{function}` — body: a JSON array of the
//!   arguments (mapped by the WIT types, see [`grove_host::values`]); answer: the
//!   result as JSON (`null` for a function without a result). With
//!   `?encoding=wave` the body is a JSON array of WAVE texts, one per argument,
//!   and the answer is the result's WAVE text as a JSON string.
//! * `GET /v1/plugins` — every actor type with its functions' WIT signatures,
//!   its version (content hash), when it was loaded and how many activations
//!   run it; versions replaced by a deploy that activations still run; and
//!   the plugin files that were rejected, with why.
//! * `PUT /v1/plugins` and `PUT /v1/plugins/{type}` — body: a component;
//!   deploys it while the host serves (`?force=true` applies a version that
//!   would refuse calls the running one accepts), keeps it in the plugins
//!   directory, and answers once the live activations moved to it (422
//!   `rolled-back` if it failed to start one, and the type went back to the
//!   version before).
//! * `GET /v1/health` — liveness and the number of activations.
//! * `GET /v1/openapi.json` — an OpenAPI 3.1 description of the calls to
//!   the loaded actor types, generated from their WIT (see
//!   [`crate::openapi`]).
//! * `GET /v1/activations?top=N` — the number of live activations, and the
//!   `N` (default 20) that ran the most turns, with their mailboxes.
//! * `GET /dashboard` — a live page of what the host does, reading the
//!   endpoints here.
//! * `GET /play` — the world demo's browser client, which logs in through
//!   the gateway's WebTransport door and falls back to its WebSocket door;
//!   `GET /play/config.json` tells it where they are and which certificate
//!   hash to pin (`docs/protocol.md`).
//! * `GET /metrics` — the host's metrics in the Prometheus text format
//!   (`docs/observability.md`).
//!
//! Every error is `{"error": {"kind": ..., "message": ...}}` with a fitting
//! status: 400 for bad input, 404 for an unknown actor type or function, 500
//! when the actor failed (trap, deadline, memory, a call cycle), 503 when it
//! could not be activated, its state store is down or the host is shutting
//! down, 504 when an actor it called did not answer in time.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::DefaultBodyLimit;
use axum::extract::{FromRef, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use serde_json::{json, Value};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use grove_gateway_quic::Gateway;
use grove_host::cluster::PublishError;
use grove_host::error::{ActorFailure, CallError, RejectedCall, Unavailable};
use grove_host::limits::ActorLimits;
use grove_host::{values, ActorRef, DeployError, DeployOptions, Host, Settled};
use wasmtime::component::Val;

/// Largest request body the API reads.
pub const MAX_BODY_BYTES: usize = 2 << 20;

/// Largest component `PUT /v1/plugins` takes.
pub const MAX_PLUGIN_BYTES: usize = 64 << 20;

/// How long a deploy's answer waits for the activations to move.
const SETTLE_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// What the API serves from.
#[derive(Clone)]
struct Api {
    host: Host,
    /// Where deployed plugins are kept.
    plugins: PathBuf,
    /// The game-client gateway, if the host runs one.
    gateway: Option<Arc<Gateway>>,
}

impl FromRef<Api> for Host {
    fn from_ref(api: &Api) -> Host {
        api.host.clone()
    }
}

/// The HTTP status for a call error: by family, and within one where the
/// caller should act differently (404 and 400; 429, 503 and 504).
pub fn status_of(error: &CallError) -> StatusCode {
    match error {
        CallError::Rejected(rejected) => match rejected {
            RejectedCall::BadActorRef(_) | RejectedCall::BadArguments { .. } => {
                StatusCode::BAD_REQUEST
            }
            RejectedCall::UnknownActorType(_) | RejectedCall::UnknownFunction { .. } => {
                StatusCode::NOT_FOUND
            }
            RejectedCall::MessageTooLarge { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        },
        CallError::Failed(_) | CallError::Chain(_) => StatusCode::INTERNAL_SERVER_ERROR,
        CallError::Unavailable(unavailable) => match unavailable {
            Unavailable::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Unavailable::MailboxFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            Unavailable::ActivationFailed { .. }
            | Unavailable::ShuttingDown
            | Unavailable::HostUnreachable { .. }
            | Unavailable::StateUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        },
    }
}

fn error_response(
    status: StatusCode,
    kind: &str,
    message: String,
    backtrace: Option<&str>,
) -> Response {
    let error = match backtrace {
        Some(bt) => json!({ "kind": kind, "message": message, "backtrace": bt }),
        None => json!({ "kind": kind, "message": message }),
    };
    (status, Json(json!({ "error": error }))).into_response()
}

/// A call error as the API's JSON error, with its status.
fn call_error(error: CallError) -> Response {
    let backtrace = match &error {
        CallError::Failed(ActorFailure::Trapped { backtrace, .. }) => backtrace.clone(),
        _ => None,
    };
    error_response(
        status_of(&error),
        error.kind(),
        error.to_string(),
        backtrace.as_deref(),
    )
}

/// The router serving the API for `host`, which keeps deployed plugins in
/// `plugins`.
pub fn router(host: Host, plugins: PathBuf, gateway: Option<Arc<Gateway>>) -> Router {
    let deploys = DefaultBodyLimit::max(MAX_PLUGIN_BYTES);
    Router::new()
        .route("/v1/actors/{actor_type}/{key}/{function}", post(call))
        .route(
            "/v1/plugins",
            get(plugins_listed).put(deploy_any).layer(deploys),
        )
        .route("/v1/plugins/{actor_type}", put(deploy_type).layer(deploys))
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/activations", get(activations))
        .route("/dashboard", get(dashboard))
        .route("/play", get(play))
        .route("/play/config.json", get(play_config))
        .route("/v1/cluster", get(cluster))
        .fallback(|| async {
            error_response(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such endpoint; see GET /v1/plugins".into(),
                None,
            )
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Api {
            host,
            plugins,
            gateway,
        })
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    host: Host,
    plugins: PathBuf,
    gateway: Option<Arc<Gateway>>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(host, plugins, gateway))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The answer to a request whose body could not be read (over `limit`
/// bytes, saying what may hold that many).
fn body_too_large(rejection: BytesRejection, what: &str, limit: usize) -> Response {
    let message = format!(
        "{}; {what} may hold at most {limit} bytes",
        rejection.body_text()
    );
    error_response(rejection.status(), "body-too-large", message, None)
}

async fn call(
    State(host): State<Host>,
    Path((actor_type, key, function)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = tracing::trace_span!(
        target: crate::telemetry::HTTP_TARGET,
        "http call",
        actor = %format_args!("{actor_type}/{key}"),
        function = %function,
    );
    if !span.is_disabled() {
        // A caller's W3C `traceparent` makes the call part of its trace.
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        let _ = span.set_parent(parent);
    }
    serve_call(host, actor_type, key, function, query, body)
        .instrument(span)
        .await
}

/// Reads a W3C trace context from request headers.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

async fn serve_call(
    host: Host,
    actor_type: String,
    key: String,
    function: String,
    query: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_too_large(rejection, "a request body", MAX_BODY_BYTES),
    };
    let wave = match query.as_deref() {
        None | Some("") | Some("encoding=json") => false,
        Some("encoding=wave") => true,
        Some(other) => {
            let message = format!("unknown query `{other}`; use ?encoding=wave or ?encoding=json");
            return error_response(StatusCode::BAD_REQUEST, "bad-request", message, None);
        }
    };
    let actor = ActorRef::new(&actor_type, &key);
    let plugin = match host.plugin(&actor_type) {
        Ok(p) => p,
        Err(e) => return call_error(e),
    };
    let Some((_, func)) = plugin.function(&function) else {
        return call_error(CallError::Rejected(RejectedCall::UnknownFunction {
            actor_type,
            function,
        }));
    };
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!([])
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                let message = format!("the request body is not valid JSON: {e}");
                return error_response(StatusCode::BAD_REQUEST, "malformed-json", message, None);
            }
        }
    };
    let args = if wave {
        let texts: Result<Vec<String>, _> = serde_json::from_value(body);
        match texts {
            Ok(texts) => values::args_from_wave(func, &texts),
            Err(_) => {
                Err("with ?encoding=wave the body must be a JSON array of WAVE strings".into())
            }
        }
    } else {
        values::args_from_json(func, &body)
    };
    let args = match args {
        Ok(args) => args,
        Err(message) => {
            return call_error(CallError::Rejected(RejectedCall::BadArguments {
                function,
                message,
            }))
        }
    };
    let result = match host.call(&actor, &function, args).await {
        Ok(result) => result,
        Err(e) => return call_error(e),
    };
    // A large result is converted off the async workers, so it does not
    // stall the actors and requests they run meanwhile.
    let large = result_size_over(&result, BLOCKING_CONVERSION);
    let encode = move || -> Result<Value, String> {
        match (&result, wave) {
            (Some(value), true) => values::to_wave(value).map(Value::String),
            (None, true) => Ok(Value::Null),
            (value, false) => Ok(value.as_ref().map_or(Value::Null, values::to_json)),
        }
    };
    let encoded = if large {
        tokio::task::spawn_blocking(encode)
            .await
            .unwrap_or_else(|e| Err(format!("converting the result failed: {e}")))
    } else {
        encode()
    };
    match encoded {
        Ok(json) => Json(json).into_response(),
        Err(message) => {
            error_response(StatusCode::INTERNAL_SERVER_ERROR, "encoding", message, None)
        }
    }
}

/// Results larger than this (in values plus string bytes) are converted to
/// JSON or WAVE on a blocking thread.
const BLOCKING_CONVERSION: usize = 64 << 10;

fn result_size_over(result: &Option<Val>, limit: usize) -> bool {
    result
        .as_ref()
        .is_some_and(|v| grove_values::size::message_size(std::slice::from_ref(v)) > limit)
}

/// Milliseconds since the Unix epoch.
fn unix_ms(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// An actor type's limits as `GET /v1/plugins` shows them: the keys of
/// `--limit`.
fn limits_json(limits: &ActorLimits) -> Value {
    let ms = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    json!({
        "memory-mib": limits.max_memory >> 20,
        "turn-deadline-ms": ms(limits.turn_deadline),
        "turn-wall-ms": ms(limits.turn_wall_time),
        "mailbox": limits.mailbox_capacity,
        "timers": limits.max_timers,
        "reminders": limits.max_reminders,
        "proxies": limits.max_proxies,
        "log-lines-per-second": limits.log_lines_per_second,
        // No quota: null.
        "state-rows": (limits.max_state_rows < u64::MAX).then_some(limits.max_state_rows),
        "state-mib": (limits.max_state_bytes < u64::MAX).then_some(limits.max_state_bytes >> 20),
    })
}

async fn plugins_listed(State(host): State<Host>) -> Json<Value> {
    let plugins: Vec<Value> = host
        .plugins()
        .iter()
        .map(|p| {
            json!({
                "actor_type": p.actor_type,
                "interface": p.interface,
                "file": p.file.display().to_string(),
                "sha256": p.content_hash,
                "loaded_at_ms": unix_ms(p.loaded_at),
                "activations": p.activations(),
                "limits": limits_json(host.limits_of(&p.actor_type)),
                "incidents": host.incidents(&p.actor_type),
                "types": p.type_definitions,
                "functions": p.functions.iter().map(|f| json!({
                    "name": f.name,
                    "signature": f.signature,
                    "params": f.params.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
                    "docs": f.docs,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let retired: Vec<Value> = host
        .retired_versions()
        .iter()
        .map(|p| {
            json!({
                "actor_type": p.actor_type,
                "sha256": p.content_hash,
                "loaded_at_ms": unix_ms(p.loaded_at),
                "activations": p.activations(),
            })
        })
        .collect();
    let rejected: Vec<Value> = host
        .rejected()
        .iter()
        .map(|e| json!({ "file": e.file().display().to_string(), "error": e.to_string() }))
        .collect();
    Json(json!({ "plugins": plugins, "retired": retired, "rejected": rejected }))
}

async fn deploy_any(
    State(api): State<Api>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    deploy(api, None, query, body).await
}

async fn deploy_type(
    State(api): State<Api>,
    Path(actor_type): Path<String>,
    RawQuery(query): RawQuery,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    deploy(api, Some(actor_type), query, body).await
}

async fn deploy(
    api: Api,
    actor_type: Option<String>,
    query: Option<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_too_large(rejection, "a plugin", MAX_PLUGIN_BYTES),
    };
    let force = match query.as_deref() {
        None | Some("") | Some("force=false") => false,
        Some("force") | Some("force=true") => true,
        Some(other) => {
            let message = format!("unknown query `{other}`; use ?force=true");
            return error_response(StatusCode::BAD_REQUEST, "bad-request", message, None);
        }
    };
    let options = DeployOptions {
        force,
        actor_type,
        keep_in: Some(api.plugins.clone()),
    };
    let source = api.plugins.join("deployed.wasm");
    // Compiling a component takes a while: off the async threads.
    let (host, component) = (api.host.clone(), body.clone());
    let deployed =
        tokio::task::spawn_blocking(move || host.deploy(&source, &component, &options)).await;
    match deployed {
        Ok(Ok(deployed)) => {
            // In a cluster, every other host deploys it too.
            let published = match api.host.publish(&deployed, &body, force).await {
                Ok(()) => None,
                Err(error @ PublishError::Redis(_)) => Some(error.to_string()),
                Err(error @ PublishError::RolledBack { .. }) => {
                    let message = error.to_string();
                    return error_response(StatusCode::CONFLICT, "rolled-back", message, None);
                }
            };
            // The answer waits for the activations to move, and tells a
            // version that could not start one (and was rolled back).
            let settled = api.host.settle(&deployed, SETTLE_FOR).await;
            let still_moving = match settled {
                Settled::RolledBack { reason } => {
                    let message = format!(
                        "version {} of `{}` was rolled back: it failed to start an activation: {reason}",
                        deployed.content_hash, deployed.actor_type
                    );
                    return error_response(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "rolled-back",
                        message,
                        None,
                    );
                }
                Settled::Moved => 0,
                Settled::StillMoving { activations } => activations,
            };
            Json(json!({
                "actor_type": deployed.actor_type,
                "sha256": deployed.content_hash,
                "previous": deployed.previous,
                "moving": deployed.moving,
                "still_moving": still_moving,
                "breaking_changes": deployed.breaking_changes,
                "warning": published,
            }))
            .into_response()
        }
        Ok(Err(DeployError::Incompatible {
            actor_type,
            changes,
        })) => {
            let body = json!({ "error": {
                "kind": "incompatible",
                "changes": changes.clone(),
                "message": DeployError::Incompatible { actor_type, changes }.to_string(),
            }});
            (StatusCode::CONFLICT, Json(body)).into_response()
        }
        Ok(Err(error @ DeployError::RolledBack { .. })) => error_response(
            StatusCode::CONFLICT,
            "rolled-back-before",
            error.to_string(),
            None,
        ),
        Ok(Err(error @ DeployError::WrongType { .. })) => error_response(
            StatusCode::BAD_REQUEST,
            "wrong-actor-type",
            error.to_string(),
            None,
        ),
        Ok(Err(error @ DeployError::Plugin(_))) => error_response(
            StatusCode::BAD_REQUEST,
            "invalid-plugin",
            error.to_string(),
            None,
        ),
        Err(error) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "deploy-failed",
            error.to_string(),
            None,
        ),
    }
}

async fn cluster(State(host): State<Host>) -> Response {
    match host.cluster_status() {
        Some(status) => Json(status).into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            "not-clustered",
            "this host runs alone (start it with --cluster)".into(),
            None,
        ),
    }
}

/// The dashboard: one page, compiled into the binary, that reads only the
/// API around it.
const DASHBOARD: &str = include_str!("dashboard.html");

async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(DASHBOARD)
}

/// The world demo's browser client, compiled into the binary.
const PLAY: &str = include_str!("play.html");

async fn play() -> axum::response::Html<&'static str> {
    axum::response::Html(PLAY)
}

/// Where the browser client finds the gateway's doors: ports (the page
/// takes the host name from its own address), the WebTransport path and
/// the certificate hashes to pin, whether the WebSocket door speaks TLS.
async fn play_config(State(api): State<Api>) -> Json<Value> {
    let Some(gateway) = &api.gateway else {
        return Json(json!({"webtransport": null, "websocket": null}));
    };
    let webtransport = gateway.webtransport_addr().map(|addr| {
        let hashes: Vec<String> = gateway
            .webtransport_hashes()
            .iter()
            .map(ToString::to_string)
            .collect();
        json!({
            "port": addr.port(),
            "path": grove_gateway_quic::webtransport::PATH,
            "certificate_hashes": hashes,
        })
    });
    let websocket = gateway
        .websocket_addr()
        .map(|addr| json!({"port": addr.port(), "secure": !gateway.websocket_plain()}));
    Json(json!({"webtransport": webtransport, "websocket": websocket}))
}

/// How many of the busiest activations `GET /v1/activations` lists unless
/// asked (`?top=N`, at most [`MAX_TOP`]).
const DEFAULT_TOP: usize = 20;
const MAX_TOP: usize = 1000;

async fn activations(State(host): State<Host>, RawQuery(query): RawQuery) -> Response {
    let n = match query.as_deref() {
        None | Some("") => DEFAULT_TOP,
        Some(query) => match query.strip_prefix("top=").map(str::parse::<usize>) {
            Some(Ok(n)) => n.min(MAX_TOP),
            _ => {
                let message = format!("unknown query `{query}`; use ?top=N");
                return error_response(StatusCode::BAD_REQUEST, "bad-request", message, None);
            }
        },
    };
    let busiest: Vec<Value> = host
        .busiest(n)
        .into_iter()
        .map(|(actor, turns, mailbox)| {
            json!({ "actor": actor.to_string(), "turns": turns, "mailbox": mailbox })
        })
        .collect();
    Json(json!({ "activations": host.active_count(), "busiest": busiest })).into_response()
}

async fn openapi(State(host): State<Host>) -> Json<Value> {
    Json(crate::openapi::document(&host))
}

async fn metrics(State(host): State<Host>) -> Response {
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    (
        [(axum::http::header::CONTENT_TYPE, content_type)],
        host.metrics(),
    )
        .into_response()
}

async fn health(State(host): State<Host>) -> Json<Value> {
    Json(json!({ "status": "ok", "activations": host.active_count() }))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use grove_host::error::{BadActorRef, ChainError};

    use super::*;

    /// The status of every kind, as docs/http-api.md lists them.
    #[test]
    fn each_kind_keeps_its_status() {
        let actor = || "counter/7".to_owned();
        let function = || "add".to_owned();
        let errors: Vec<CallError> = vec![
            BadActorRef("seven".into()).into(),
            RejectedCall::UnknownActorType("ghost".into()).into(),
            RejectedCall::UnknownFunction {
                actor_type: "counter".into(),
                function: function(),
            }
            .into(),
            RejectedCall::BadArguments {
                function: function(),
                message: "no".into(),
            }
            .into(),
            RejectedCall::MessageTooLarge {
                actor: actor(),
                size: 2,
                limit: 1,
            }
            .into(),
            ActorFailure::Trapped {
                actor: actor(),
                function: function(),
                reason: "unreachable".into(),
                backtrace: None,
            }
            .into(),
            ActorFailure::DeadlineExceeded {
                actor: actor(),
                function: function(),
                limit: Duration::from_secs(1),
            }
            .into(),
            ActorFailure::OutOfMemory {
                actor: actor(),
                function: function(),
                message: "big".into(),
            }
            .into(),
            Unavailable::ActivationFailed {
                actor: actor(),
                message: "no room".into(),
            }
            .into(),
            Unavailable::ShuttingDown.into(),
            Unavailable::StateUnavailable {
                actor: actor(),
                function: function(),
                message: "down".into(),
            }
            .into(),
            Unavailable::MailboxFull {
                actor: actor(),
                capacity: 1,
            }
            .into(),
            Unavailable::Timeout {
                actor: actor(),
                function: function(),
                timeout: Duration::from_secs(1),
            }
            .into(),
            ChainError::Reentrancy {
                target: actor(),
                chain: "counter/7 -> counter/7".into(),
            }
            .into(),
            ChainError::TooDeep {
                depth: 65,
                limit: 64,
            }
            .into(),
        ];
        let statuses: Vec<(&str, u16)> = errors
            .iter()
            .map(|e| (e.kind(), status_of(e).as_u16()))
            .collect();
        assert_eq!(
            statuses,
            [
                ("bad-actor-ref", 400),
                ("unknown-actor-type", 404),
                ("unknown-function", 404),
                ("bad-arguments", 400),
                ("message-too-large", 500),
                ("trapped", 500),
                ("deadline-exceeded", 500),
                ("out-of-memory", 500),
                ("activation-failed", 503),
                ("shutting-down", 503),
                ("state-unavailable", 503),
                ("mailbox-full", 429),
                ("timeout", 504),
                ("reentrancy", 500),
                ("chain-too-deep", 500),
            ]
        );
    }
}
