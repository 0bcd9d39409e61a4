//! The `grove` command: run a host, call an actor, inspect a plugin.

mod deploy;
mod http;
mod new;
mod openapi;
mod telemetry;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use grove_gateway_quic::websocket::WebSocketListen;
use grove_gateway_quic::webtransport::WebTransportListen;
use grove_gateway_quic::{Gateway, GatewayConfig, Identity};
use grove_host::gateway::Authenticator;
use grove_host::limits::{ActorLimits, LimitRule, Limits};
use grove_host::state::StateStore;
use grove_host::{Host, HostConfig, Plugin};

#[derive(Parser)]
#[command(
    name = "grove",
    version,
    about = "A host for virtual actors written as WebAssembly components"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start; the size of `RunArgs` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a host serving every plugin in a directory.
    Run(RunArgs),
    /// Call a function of an actor on a running host; arguments and result in WAVE.
    Call {
        /// The host's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:7070", env = "GROVE_HOST")]
        host: String,
        /// The actor, as `type/key`, e.g. `counter/7`.
        actor: String,
        /// The function to call, e.g. `add`.
        function: String,
        /// One WAVE value per parameter, e.g. `5`, `"text"`, `{name: "axe", count: 1}`.
        #[arg(allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Deploy a plugin to a running host: new activations use it at once,
    /// live ones move to it after their current turn, their mailboxes kept.
    Deploy {
        /// The host's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:7070", env = "GROVE_HOST")]
        host: String,
        /// The plugin component.
        file: PathBuf,
        /// Apply it even if it would refuse calls the running version
        /// accepts (a function removed or retyped).
        #[arg(long)]
        force: bool,
    },
    /// Start a new actor project: its WIT, code with a function that keeps
    /// state and a timer, and a build script that writes NAME.wasm.
    New {
        /// The actor type, e.g. `lobby` or `guild-bank`.
        name: String,
        /// The language to write it in: rust, python or js.
        #[arg(long, value_enum, default_value = "rust")]
        lang: new::Lang,
        /// Where to write it [default: ./NAME].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Print a plugin's actor type and the WIT of its actor interface.
    Inspect {
        /// The plugin component.
        file: PathBuf,
    },
    /// Work with WIT.
    #[command(subcommand)]
    Wit(WitCommand),
    /// Look at the cluster a host belongs to.
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Every live host: address, activations, plugins and lease age.
    Status {
        /// The HTTP address of any host of the cluster.
        #[arg(long, default_value = "http://127.0.0.1:7070", env = "GROVE_HOST")]
        host: String,
    },
}

#[derive(Subcommand)]
enum WitCommand {
    /// Print the proxy WIT through which other actors call an actor type,
    /// derived from its actor interface.
    ///
    /// Give the callee's plugin (`.wasm`), or WIT files and directories with
    /// dependencies first: `grove wit proxy wit/actor wit/examples/player.wit`.
    Proxy {
        /// A plugin component, or WIT files/directories (the callee's last).
        #[arg(required = true)]
        sources: Vec<PathBuf>,
        /// The actor interface, when the callee's WIT package has several.
        #[arg(long)]
        interface: Option<String>,
        /// Write the proxy here instead of to standard output.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Directory of plugin components (`*.wasm`). Versions deployed while
    /// the host runs are kept here.
    #[arg(long)]
    plugins: PathBuf,
    /// Deploy plugin files that appear or change in `--plugins` while the
    /// host runs (an incompatible version is refused and logged).
    #[arg(long)]
    watch: bool,
    /// Directory for actor state and the compile cache.
    #[arg(long, default_value = ".grove")]
    data: PathBuf,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:7070")]
    http: SocketAddr,
    /// Keep actor state in memory only (lost when the host stops).
    #[arg(long, conflicts_with = "redis")]
    memory_state: bool,
    /// Keep actor state (and reminders) in Redis, e.g. `redis://127.0.0.1:6379`.
    #[arg(long, env = "GROVE_REDIS")]
    redis: Option<String>,
    /// How long an actor's call to another actor waits for an answer, in
    /// milliseconds (a caller may set its own per proxy).
    #[arg(long, default_value_t = 30_000)]
    call_timeout_ms: u64,
    /// Seconds without calls after which an actor is deactivated.
    #[arg(long, default_value_t = 600)]
    idle_timeout: u64,
    /// Longest a single turn may run guest code, in milliseconds (time spent
    /// waiting in host calls not counted).
    #[arg(long, default_value_t = 5000)]
    turn_deadline_ms: u64,
    /// Longest a single turn may take on the wall clock, host calls
    /// included, in milliseconds.
    #[arg(long, default_value_t = 60_000)]
    turn_wall_ms: u64,
    /// Most data one host call, or one call's result, may copy out of an
    /// actor, in MiB (40 bytes per list element plus string bytes).
    #[arg(long, default_value_t = 48)]
    max_copy_mib: usize,
    /// Messages an actor's mailbox holds before senders wait.
    #[arg(long, default_value_t = 1024)]
    mailbox_capacity: usize,
    /// On SIGINT or SIGTERM, how long open HTTP requests, client sessions
    /// and actors get to finish, in milliseconds, before they are cut off.
    /// A second signal exits at once.
    #[arg(long, default_value_t = 10_000)]
    shutdown_timeout_ms: u64,
    /// Most linear memory one activation may use, in MiB.
    #[arg(long, default_value_t = 64)]
    max_memory_mib: usize,
    /// Most activations alive at once [default: 30000, or fewer if the
    /// kernel's vm.max_map_count leaves room for fewer].
    #[arg(long)]
    max_activations: Option<u32>,
    /// Most turns running at once: started and not finished, those waiting
    /// on state or on other actors included. Each holds a fiber stack; idle
    /// activations hold none. A turn past it waits for one to finish.
    #[arg(long, default_value_t = 1024)]
    max_running_turns: u32,
    /// Instances of each actor type made ahead of the activations that
    /// will run them, once the type has activated; each holds one of the
    /// --max-activations slots until an activation takes it (or needs its
    /// slot). 0 instantiates every activation on its first call.
    #[arg(long, default_value_t = 4)]
    warm_activations: u32,
    /// Memory slots of each actor type prepared while the host is idle
    /// (after the type's first activation, once nothing has activated for
    /// 10 ms), so that a crowd arriving later is spared mapping and
    /// faulting in memory on them. Each keeps the pages an activation's
    /// first turns write resident until an activation takes it; on a host
    /// with several types, beyond 100 unused slots other types take them
    /// (docs/limits.md). 0 prepares none.
    #[arg(long, default_value_t = 256)]
    prepared_slots: u32,
    /// A limit for one actor type, or for every type (`*`), over the flags
    /// above: `player.memory-mib=128`, `room.mailbox=4096`,
    /// `*.log-lines-per-second=20`. Keys: memory-mib, turn-deadline-ms,
    /// turn-wall-ms, mailbox, timers, reminders, proxies,
    /// log-lines-per-second, state-rows, state-mib. Repeatable; wins over
    /// `--limits` for the same type and key.
    #[arg(long = "limit", value_name = "TYPE.KEY=VALUE")]
    limit: Vec<LimitRule>,
    /// A TOML file of limits, one table per actor type (`[player]`,
    /// `["*"]`) holding the keys of `--limit`.
    #[arg(long, value_name = "FILE")]
    limits: Option<PathBuf>,
    /// Count nothing per activation, call, turn or state operation:
    /// `GET /metrics` then shows only the gateway and the process.
    #[arg(long)]
    no_metrics: bool,
    /// Export traces (a span per turn, joined across actor calls and hosts)
    /// to this OpenTelemetry collector's OTLP/HTTP traces endpoint, e.g.
    /// `http://127.0.0.1:4318/v1/traces`.
    #[arg(long, value_name = "URL")]
    otlp: Option<String>,
    #[command(flatten)]
    gateway: GatewayArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(clap::Args)]
struct ClusterArgs {
    /// Join the cluster of this name: the hosts sharing `--redis` and a
    /// cluster name run each actor once among them and call each other
    /// over QUIC. Without it the host runs alone.
    #[arg(long, requires_all = ["redis", "listen"], conflicts_with = "memory_state")]
    cluster: Option<String>,
    /// UDP address where other hosts of the cluster reach this one.
    #[arg(long, requires = "cluster")]
    listen: Option<SocketAddr>,
    /// The address other hosts dial, when it differs from `--listen`
    /// (a wildcard listen address, NAT).
    #[arg(long, requires = "cluster")]
    advertise: Option<SocketAddr>,
    /// How actors are placed when they have no live owner: `two-choices`
    /// (the less loaded of two random hosts) or `prefer-local`; or, as
    /// `TYPE=STRATEGY` (e.g. `room=prefer-local`), for one actor type.
    /// Repeatable.
    #[arg(long, value_name = "[TYPE=]STRATEGY", requires = "cluster")]
    placement: Vec<PlacementRule>,
    /// Lease TTL in milliseconds: how long a dead host's actors stay
    /// unreachable before the others take them over.
    #[arg(long, default_value_t = 3000)]
    lease_ttl_ms: u64,
}

impl ClusterArgs {
    /// Joins the cluster if one was named.
    async fn join(
        &self,
        host: &Host,
        redis: Option<&str>,
        plugins: &Path,
    ) -> anyhow::Result<Option<grove_host::cluster::Cluster>> {
        let (Some(name), Some(redis), Some(listen)) = (&self.cluster, redis, self.listen) else {
            return Ok(None);
        };
        let mut config = grove_host::cluster::ClusterConfig::new(name, redis, listen);
        config.advertise = self.advertise;
        config.plugins_dir = Some(plugins.to_owned());
        for rule in &self.placement {
            match &rule.actor_type {
                Some(actor_type) => {
                    config
                        .placement_by_type
                        .insert(actor_type.clone(), rule.strategy);
                }
                None => config.placement = rule.strategy,
            }
        }
        let ttl = Duration::from_millis(self.lease_ttl_ms.max(300));
        config.timing = grove_cluster::membership::LeaseTiming {
            ttl,
            renew_every: ttl / 6,
            margin: ttl / 4,
        };
        let cluster = host
            .join_cluster(config)
            .await
            .with_context(|| format!("cannot join cluster {name}"))?;
        println!(
            "cluster: {name} as host {}, hosts dial {}",
            cluster.id(),
            self.advertise.map_or_else(
                || cluster
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                |a| a.to_string()
            )
        );
        Ok(Some(cluster))
    }
}

/// A `--placement` value: a strategy, for one actor type or for the rest.
#[derive(Clone)]
struct PlacementRule {
    actor_type: Option<String>,
    strategy: grove_host::cluster::Strategy,
}

impl std::str::FromStr for PlacementRule {
    type Err = String;

    fn from_str(text: &str) -> Result<PlacementRule, String> {
        let (actor_type, strategy) = match text.split_once('=') {
            Some((actor_type, strategy)) => (Some(actor_type.to_owned()), strategy),
            None => (None, text),
        };
        Ok(PlacementRule {
            actor_type,
            strategy: strategy.parse()?,
        })
    }
}

#[derive(clap::Args)]
struct GatewayArgs {
    /// UDP address of the QUIC gateway for game clients (ALPN `grove`); no
    /// gateway runs without it.
    #[arg(long, requires = "gateway_auth")]
    gateway: Option<SocketAddr>,
    /// The actor function that authenticates game clients, written
    /// `type.function`: `func(credentials: list<u8>) -> result<actor-ref, string>`.
    #[arg(long, value_name = "TYPE.FUNCTION")]
    gateway_auth: Option<Authenticator>,
    /// Activations of the authenticator's actor type (keys 0, 1, ...) that
    /// share the logins.
    #[arg(long, default_value_t = 4)]
    gateway_auth_workers: usize,
    /// PEM certificate chain for the gateway. Without it, a self-signed
    /// certificate is generated once and kept in `<data>/gateway/`.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key for `--cert`.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Largest frame a client or an actor may send, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    gateway_max_frame: usize,
    /// Messages (frames and datagrams) per second a client may send.
    #[arg(long, default_value_t = 200)]
    gateway_message_rate: u32,
    /// Milliseconds without a packet after which a client counts as gone.
    #[arg(long, default_value_t = 15_000)]
    gateway_idle_timeout_ms: u64,
    /// TCP address of a WebSocket door onto the same sessions (`wss://`,
    /// with the gateway's certificate), for clients that cannot use UDP.
    #[arg(long, requires = "gateway", value_name = "ADDR")]
    gateway_ws: Option<SocketAddr>,
    /// Serve the WebSocket door as plain `ws://`, without TLS: for local
    /// development only (a browser page served over plain HTTP can then
    /// reach it without trusting a certificate).
    #[arg(long, requires = "gateway_ws")]
    gateway_ws_plain: bool,
    /// UDP address of a WebTransport door onto the same sessions, for
    /// browsers (`https://HOST:PORT/grove`). Without `--cert`, it presents
    /// short-lived certificates that pages pin by hash (`GET /play/config.json`).
    #[arg(long, requires = "gateway", value_name = "ADDR")]
    gateway_wt: Option<SocketAddr>,
}

impl GatewayArgs {
    /// Starts the gateway if one was asked for.
    async fn start(&self, host: &Host, data: &Path) -> anyhow::Result<Option<Gateway>> {
        let (Some(listen), Some(auth)) = (self.gateway, self.gateway_auth.clone()) else {
            return Ok(None);
        };
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Identity::from_pem_files(cert, key)?,
            _ => {
                let mut names = vec!["localhost".to_owned()];
                if !listen.ip().is_unspecified() {
                    names.push(listen.ip().to_string());
                }
                Identity::self_signed_in(&data.join("gateway"), &names)?
            }
        };
        let mut config = GatewayConfig::new(listen, identity);
        config.max_frame = self.gateway_max_frame;
        config.message_rate = self.gateway_message_rate;
        config.message_burst = self.gateway_message_rate.saturating_mul(2);
        config.idle_timeout = Duration::from_millis(self.gateway_idle_timeout_ms.max(100));
        config.websocket = self.gateway_ws.map(|listen| WebSocketListen {
            listen,
            plain: self.gateway_ws_plain,
        });
        config.webtransport = self.gateway_wt.map(|listen| {
            let mut door = WebTransportListen::new(listen);
            if self.cert.is_some() {
                door.identity = Some(config.identity.clone());
            }
            if !listen.ip().is_unspecified() {
                door.names.push(listen.ip().to_string());
            }
            door
        });
        let auth = Authenticator {
            workers: self.gateway_auth_workers.max(1),
            ..auth
        };
        let authenticator = format!("{}.{}", auth.actor_type, auth.function);
        let gateway = grove_host::gateway::start(host, config, auth)
            .await
            .context("cannot start the QUIC gateway")?;
        println!(
            "gateway: quic://{} (ALPN grove), authenticator {authenticator}",
            gateway.local_addr()
        );
        if let Some(addr) = gateway.webtransport_addr() {
            println!(
                "gateway: https://{addr}{} (WebTransport)",
                grove_gateway_quic::webtransport::PATH
            );
            for hash in gateway.webtransport_hashes() {
                println!("gateway WebTransport certificate sha256: {hash} (rotates; GET /play/config.json has the current one)");
            }
        }
        if let Some(addr) = gateway.websocket_addr() {
            let scheme = if self.gateway_ws_plain { "ws" } else { "wss" };
            println!("gateway: {scheme}://{addr}/ (WebSocket)");
        }
        println!("gateway certificate sha256: {}", gateway.fingerprint());
        Ok(Some(gateway))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run(args) => run(args).await,
            Command::Call {
                host,
                actor,
                function,
                args,
            } => call(&host, &actor, &function, &args).await,
            Command::Inspect { file } => inspect(&file),
            Command::Wit(WitCommand::Proxy {
                sources,
                interface,
                out,
            }) => proxy(&sources, interface.as_deref(), out.as_deref()),
            Command::Cluster(ClusterCommand::Status { host }) => cluster_status(&host).await,
            Command::Deploy { host, file, force } => deploy(&host, &file, force).await,
            Command::New { name, lang, dir } => new::create(&name, lang, dir).map(|dir| {
                println!(
                    "created {}: build it with {}/build.sh, serve it with grove run --plugins {}",
                    dir.display(),
                    dir.display(),
                    dir.display()
                );
            }),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `error: cause: cause`, leaving out a cause whose
/// text the message before it already shows: Grove's library errors include
/// their source's message in their own and also return it as the source.
fn report(error: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut shown = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !out.is_empty() && shown.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        shown = text;
    }
    out
}

impl RunArgs {
    /// The limits the flags, `--limits` and `--limit` give, in that order.
    fn limits(&self) -> anyhow::Result<Limits> {
        let defaults = Limits::default();
        let mut limits = Limits {
            max_activations: self.max_activations.unwrap_or_else(|| {
                let default = defaults.max_activations;
                let turns = self.max_running_turns.clamp(1, default);
                grove_host::engine::activations_that_fit(turns)
                    .map_or(default, |fit| fit.clamp(1, default))
            }),
            max_running_turns: self.max_running_turns.max(1),
            warm_activations: self.warm_activations,
            prepared_slots: self.prepared_slots,
            max_copy: self.max_copy_mib.saturating_mul(1 << 20),
            actor: ActorLimits {
                max_memory: self.max_memory_mib << 20,
                turn_deadline: Duration::from_millis(self.turn_deadline_ms),
                turn_wall_time: Duration::from_millis(self.turn_wall_ms.max(1)),
                mailbox_capacity: self.mailbox_capacity.max(1),
                ..defaults.actor
            },
            by_type: defaults.by_type,
        };
        let mut rules = match &self.limits {
            Some(file) => LimitRule::read_file(file)?,
            None => Vec::new(),
        };
        rules.extend(self.limit.iter().cloned());
        limits.apply(&rules);
        Ok(limits)
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let telemetry = telemetry::init(args.otlp.as_deref(), &args.http.to_string())?;
    let ran = serve(args).await;
    telemetry.shutdown().await;
    ran
}

async fn serve(args: RunArgs) -> anyhow::Result<()> {
    let state = if args.memory_state {
        StateStore::memory()
    } else if let Some(url) = &args.redis {
        StateStore::connect_redis(url).await?
    } else {
        StateStore::open_embedded(&args.data.join("state.redb"))?
    };
    let limits = args.limits()?;
    let limited: Vec<String> = limits.by_type.keys().cloned().collect();
    let config = HostConfig {
        limits,
        shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
        idle_timeout: Duration::from_secs(args.idle_timeout),
        compile_cache: Some(args.data.join("cache")),
        call_timeout: Duration::from_millis(args.call_timeout_ms.max(1)),
        metrics: !args.no_metrics,
    };
    let host = Host::new(config, state)?;
    let started = std::time::Instant::now();
    let (loaded, rejected) = host.load_plugin_dir(&args.plugins)?;
    for error in &rejected {
        eprintln!("rejected plugin {error}");
    }
    // Joined before reminders start: a firing claims its slot among the
    // hosts, and its actor's placement, from the first.
    let cluster = args
        .cluster
        .join(&host, args.redis.as_deref(), &args.plugins)
        .await?;
    let reminders = host
        .start_reminders()
        .await
        .context("cannot load reminders from the state store")?;
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("cannot listen on {}", args.http))?;
    let types: Vec<&str> = loaded.iter().map(|p| p.actor_type.as_str()).collect();
    for limited in limited.iter().filter(|t| !types.contains(&t.as_str())) {
        tracing::warn!(actor_type = %limited, "limits are set for an actor type no plugin serves (yet)");
    }
    tracing::info!(
        http = %args.http,
        actor_types = %types.join(", "),
        rejected = rejected.len(),
        reminders,
        load_ms = started.elapsed().as_millis() as u64,
        "grove is serving"
    );
    let gateway = args.gateway.start(&host, &args.data).await?.map(Arc::new);
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let watching = args
        .watch
        .then(|| tokio::spawn(deploy::watch(host.clone(), args.plugins.clone())));
    let server = tokio::spawn(http::serve(
        host.clone(),
        args.plugins.clone(),
        gateway.clone(),
        listener,
        async move {
            let _ = http_stopped.await;
        },
    ));
    match &cluster {
        Some(cluster) => tokio::select! {
            () = shutdown_signal() => {}
            () = cluster.fenced() => {
                anyhow::bail!(
                    "this host lost its cluster lease (Redis unreachable for too long) and stopped serving; restart it to join again"
                );
            }
        },
        None => shutdown_signal().await,
    }
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("second signal: exiting at once");
        std::process::exit(130);
    });
    // Every stage below is bounded, so that a stuck actor or client cannot
    // hold the process: HTTP requests in flight, client sessions, actors.
    let bound = Duration::from_millis(args.shutdown_timeout_ms);
    if let Some(watching) = watching {
        watching.abort();
    }
    tracing::info!("shutting down: finishing HTTP requests in flight");
    let _ = stop_http.send(());
    match tokio::time::timeout(bound, server).await {
        Ok(Ok(served)) => served?,
        Ok(Err(panicked)) => tracing::error!(%panicked, "the HTTP server failed"),
        Err(_) => tracing::warn!(
            ?bound,
            "HTTP requests still open at the shutdown timeout were dropped"
        ),
    }
    if let Some(gateway) = gateway {
        tracing::info!(
            sessions = host.sessions().len(),
            "shutting down: closing client sessions"
        );
        if tokio::time::timeout(bound, gateway.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                ?bound,
                "client sessions still closing at the shutdown timeout were dropped"
            );
        }
    }
    if let Some(cluster) = &cluster {
        tracing::info!("shutting down: handing actors to the other hosts");
        let left = cluster.drain(bound).await;
        if left > 0 {
            tracing::warn!(left, "actors still here at the shutdown timeout");
        }
    }
    tracing::info!(
        activations = host.active_count(),
        "shutting down: deactivating actors"
    );
    host.shutdown().await;
    if let Some(cluster) = cluster {
        tracing::info!("leaving the cluster");
        if let Err(error) = cluster.leave().await {
            tracing::warn!(%error, "cannot delete the lease; it lapses on its own");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn call(host: &str, actor: &str, function: &str, args: &[String]) -> anyhow::Result<()> {
    let actor: grove_host::ActorRef = actor.parse()?;
    let mut url = reqwest::Url::parse(host).with_context(|| format!("`{host}` is not a URL"))?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("`{host}` cannot be a base URL"))?
        .pop_if_empty()
        .extend(["v1", "actors", &actor.actor_type, &actor.key, function]);
    url.set_query(Some("encoding=wave"));
    let response = reqwest::Client::new()
        .post(url)
        .json(&args)
        .send()
        .await
        .with_context(|| format!("cannot reach the Grove host at {host}"))?;
    let body = answer_of(response, host).await?;
    if let Some(text) = body.as_str() {
        println!("{text}");
    }
    Ok(())
}

/// The JSON body of an answer from the HTTP API, or its error's message.
async fn answer_of(response: reqwest::Response, host: &str) -> anyhow::Result<serde_json::Value> {
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("bad answer from {host}"))?;
    if !status.is_success() {
        let message = body
            .pointer("/error/message")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("unknown error");
        anyhow::bail!("{message}");
    }
    Ok(body)
}

async fn deploy(host: &str, file: &Path, force: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut url = format!("{}/v1/plugins", host.trim_end_matches('/'));
    if force {
        url.push_str("?force=true");
    }
    let response = reqwest::Client::new()
        .put(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/wasm")
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("cannot reach the Grove host at {host}"))?;
    let body = answer_of(response, host).await?;
    let text = |key: &str| {
        body.get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
    };
    let short = |hash: &str| hash.get(..12).unwrap_or(hash).to_owned();
    let version = short(text("sha256"));
    match body.get("previous").and_then(serde_json::Value::as_str) {
        Some(previous) if previous == text("sha256") => {
            println!("{} already runs version {version}", text("actor_type"));
        }
        Some(previous) => println!(
            "deployed {} version {version} over {}: {} activations moving to it",
            text("actor_type"),
            short(previous),
            body.get("moving")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or_default()
        ),
        None => println!(
            "deployed {} version {version} (a new actor type)",
            text("actor_type")
        ),
    }
    if let Some(warning) = body.get("warning").and_then(serde_json::Value::as_str) {
        println!("  warning: {warning}");
    }
    let still_moving = body
        .get("still_moving")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_default();
    if still_moving > 0 {
        println!("  {still_moving} activations were still finishing a turn on an older version");
    }
    if let Some(changes) = body
        .get("breaking_changes")
        .and_then(serde_json::Value::as_array)
    {
        for change in changes.iter().filter_map(serde_json::Value::as_str) {
            println!("  forced: {change}");
        }
    }
    Ok(())
}

async fn cluster_status(host: &str) -> anyhow::Result<()> {
    let url = format!("{}/v1/cluster", host.trim_end_matches('/'));
    let response = reqwest::get(&url)
        .await
        .with_context(|| format!("cannot reach the Grove host at {host}"))?;
    let body = answer_of(response, host).await?;
    use serde_json::Value;
    let text = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let number = |v: &Value, key: &str| v.get(key).and_then(Value::as_u64).unwrap_or_default();
    let me = text(&body, "host");
    let members = body
        .get("members")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    println!(
        "{:<18} {:<22} {:>11} {:>10}  plugins",
        "host", "address", "activations", "lease age"
    );
    for m in &members {
        let id = text(m, "id");
        let marker = if id == me { "*" } else { " " };
        let plugins: Vec<&str> = m
            .get("plugins")
            .and_then(Value::as_array)
            .map(|p| p.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!(
            "{marker}{id:<17} {:<22} {:>11} {:>8}ms  {}",
            text(m, "address"),
            number(m, "activations"),
            number(m, "lease_age_ms"),
            plugins.join(" ")
        );
    }
    println!("{} hosts; * is {host}", members.len());
    Ok(())
}

fn inspect(file: &Path) -> anyhow::Result<()> {
    let plugin = Plugin::inspect(file)?;
    println!("{}", file.display());
    println!("  actor type: {}", plugin.actor_type);
    println!("  interface:  {}", plugin.interface);
    println!("  sha256:     {}", plugin.content_hash);
    for def in &plugin.type_definitions {
        println!();
        for line in def.lines() {
            println!("  {line}");
        }
    }
    println!();
    for f in &plugin.functions {
        if let Some(docs) = &f.docs {
            for line in docs.lines() {
                println!("  /// {line}");
            }
        }
        println!("  {};", f.signature);
    }
    Ok(())
}

fn proxy(sources: &[PathBuf], interface: Option<&str>, out: Option<&Path>) -> anyhow::Result<()> {
    let wit = match sources {
        [one] if one.extension().is_some_and(|e| e == "wasm") => {
            let bytes =
                std::fs::read(one).with_context(|| format!("cannot read {}", one.display()))?;
            grove_host::proxy_wit::from_component(&bytes)?
        }
        _ => {
            let paths: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
            grove_host::proxy_wit::from_wit(&paths, interface)?
        }
    };
    match out {
        Some(path) => {
            // `wit/deps/NAME/` is where WIT tools look for dependencies.
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            std::fs::write(path, wit).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            print!("{wit}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_shows_each_cause_once() {
        let io = std::io::Error::other("disk on fire");
        let open = grove_host::state::OpenStateError::CreateDir {
            dir: "data".into(),
            source: io,
        };
        let error = anyhow::Error::new(open).context("cannot start");
        assert_eq!(
            report(&error),
            "cannot start: cannot create the directory data for the state file: disk on fire"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(report(&plain), "outer: inner");
    }
}
