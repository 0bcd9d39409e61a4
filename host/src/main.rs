//! The `grove` command: run a host, call an actor, inspect a plugin.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use grove_host::engine::Limits;
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
    /// Print a plugin's actor type and the WIT of its actor interface.
    Inspect {
        /// The plugin component.
        file: PathBuf,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Directory of plugin components (`*.wasm`).
    #[arg(long)]
    plugins: PathBuf,
    /// Directory for actor state and the compile cache.
    #[arg(long, default_value = ".grove")]
    data: PathBuf,
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:7070")]
    http: SocketAddr,
    /// Keep actor state in memory only (lost when the host stops).
    #[arg(long)]
    memory_state: bool,
    /// Seconds without calls after which an actor is deactivated.
    #[arg(long, default_value_t = 600)]
    idle_timeout: u64,
    /// Longest a single turn may run, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    turn_deadline_ms: u64,
    /// Most linear memory one activation may use, in MiB.
    #[arg(long, default_value_t = 64)]
    max_memory_mib: usize,
    /// Most activations alive at once [default: 20000, or fewer if the
    /// kernel's vm.max_map_count leaves room for fewer].
    #[arg(long)]
    max_activations: Option<u32>,
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
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,grove_host=info".into()),
        )
        .init();
    let state = if args.memory_state {
        StateStore::memory()
    } else {
        StateStore::open_embedded(&args.data.join("state.redb"))?
    };
    let config = HostConfig {
        limits: Limits {
            max_activations: args.max_activations.unwrap_or_else(|| {
                let default = Limits::default().max_activations;
                grove_host::engine::activations_that_fit().map_or(default, |fit| fit.min(default))
            }),
            max_memory: args.max_memory_mib << 20,
            turn_deadline: Duration::from_millis(args.turn_deadline_ms),
            ..Limits::default()
        },
        idle_timeout: Duration::from_secs(args.idle_timeout),
        compile_cache: Some(args.data.join("cache")),
        ..HostConfig::default()
    };
    let host = Host::new(config, state)?;
    let started = std::time::Instant::now();
    let (loaded, rejected) = host.load_plugin_dir(&args.plugins)?;
    for error in &rejected {
        eprintln!("rejected plugin {error}");
    }
    let listener = tokio::net::TcpListener::bind(args.http)
        .await
        .with_context(|| format!("cannot listen on {}", args.http))?;
    let types: Vec<&str> = loaded.iter().map(|p| p.actor_type.as_str()).collect();
    tracing::info!(
        http = %args.http,
        actor_types = %types.join(", "),
        rejected = rejected.len(),
        load_ms = started.elapsed().as_millis() as u64,
        "grove is serving"
    );
    grove_host::http::serve(host.clone(), listener, shutdown_signal()).await?;
    tracing::info!(
        activations = host.active_count(),
        "shutting down: deactivating actors"
    );
    host.shutdown().await;
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
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .with_context(|| format!("bad answer from {host}"))?;
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("unknown error");
        anyhow::bail!("{message}");
    }
    if let Some(text) = body.as_str() {
        println!("{text}");
    }
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
