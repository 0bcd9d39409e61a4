//! Calls that cross to another host beside local calls, and the first call
//! to an actor that must be placed, all measured in the same run: two hosts
//! in one process, joined to one cluster over loopback QUIC, coordinating
//! and keeping their actors' state in a real `redis-server`.
//!
//! Host B places with `prefer-local`, so every actor first called through B
//! runs on B; host A places with the default two choices. The local baseline
//! is B calling its own actors; the cross-host figures are A calling the same
//! actors, each call a round trip to B. First calls to fresh actors from A
//! (a placement claim in Redis, then an activation on A or on B) are
//! measured beside first calls on a host that runs alone, with the same
//! Redis state store, so the difference is what placement costs. They are
//! measured first, while neither host runs anything: two choices weighs the
//! load each host last published, and would send every fresh actor to A
//! once B runs the others.
//!
//! Run with: `scripts/build-plugins && cargo bench -p grove-host --bench cluster_calls`
//! (needs `redis-server` and `redis-cli`). Environment: `GROVE_BENCH_SECS`
//! (default 2) per throughput phase, `GROVE_BENCH_CALLS` (default 5,000)
//! calls one at a time per latency phase, `GROVE_BENCH_FRESH` (default 500)
//! fresh actors per first-call phase.

mod common;
#[path = "../tests/common/redis.rs"]
mod redis_server;

use std::error::Error;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{phase, plugin};
use grove_host::cluster::{Cluster, ClusterConfig, Strategy};
use grove_host::limits::Limits;
use grove_host::state::StateStore;
use grove_host::{ActorRef, CallError, Host, HostConfig};
use redis_server::RedisServer;

type BenchResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Concurrent callers in each throughput phase.
const CALLERS: usize = 64;
/// Actors the callers spread over in the wide throughput phase.
const ACTORS: usize = 64;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Call latencies in ns, sorted.
struct Latencies(Vec<u64>);

impl FromIterator<u64> for Latencies {
    fn from_iter<I: IntoIterator<Item = u64>>(ns: I) -> Latencies {
        let mut ns: Vec<u64> = ns.into_iter().collect();
        ns.sort_unstable();
        Latencies(ns)
    }
}

impl Latencies {
    /// The `p` quantile in µs.
    fn percentile(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0[((self.0.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
    }

    fn p50_p99(&self) -> String {
        if self.0.is_empty() {
            return "–".into();
        }
        format!("{:.1} / {:.1}", self.percentile(0.5), self.percentile(0.99))
    }
}

fn counter(key: &str) -> ActorRef {
    ActorRef::new("counter", key)
}

/// A host serving `counter` with its state in the Redis at `url`, room for
/// `activations`, and no idle deactivation during the run.
async fn host(url: &str, activations: usize) -> BenchResult<Host> {
    let config = HostConfig {
        limits: Limits {
            max_activations: u32::try_from(activations)?,
            ..Limits::default()
        },
        idle_timeout: Duration::from_secs(3600),
        compile_cache: Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/grove-bench-cache"),
        ),
        ..HostConfig::default()
    };
    let host = Host::new(config, StateStore::connect_redis(url).await?)?;
    host.load_plugin(&plugin("counter"))?;
    Ok(host)
}

/// Joins `host` to the benchmark's cluster, placing actors by `placement`.
async fn join(host: &Host, url: &str, placement: Strategy) -> BenchResult<Cluster> {
    let mut config = ClusterConfig::new("bench", url, "127.0.0.1:0".parse()?);
    config.placement = placement;
    Ok(host.join_cluster(config).await?)
}

/// Latencies (ns, in call order) of `calls` `get` calls through `host`, one
/// at a time, the i-th to `actor(i)`.
async fn one_at_a_time(
    host: &Host,
    calls: usize,
    actor: impl Fn(usize) -> ActorRef,
) -> BenchResult<Vec<u64>> {
    let mut took = Vec::with_capacity(calls);
    for i in 0..calls {
        let actor = actor(i);
        let start = Instant::now();
        host.call(&actor, "get", vec![]).await?;
        took.push(start.elapsed().as_nanos() as u64);
    }
    Ok(took)
}

/// Calls/s of `CALLERS` tasks calling `get` through `host` for one phase,
/// each going over `actors` in turn.
async fn throughput(host: &Host, actors: &[ActorRef]) -> BenchResult<f64> {
    let actors: Arc<[ActorRef]> = actors.into();
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (host, actors, stop) = (host.clone(), actors.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut i, mut calls) = (c, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    host.call(&actors[i % actors.len()], "get", vec![]).await?;
                    i += CALLERS;
                    calls += 1;
                }
                Ok::<_, CallError>(calls)
            })
        })
        .collect();
    tokio::time::sleep(phase()).await;
    stop.store(true, Ordering::Relaxed);
    let mut calls = 0;
    for task in tasks {
        calls += task.await??;
    }
    Ok(calls as f64 / start.elapsed().as_secs_f64())
}

fn main() -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // The benchmark itself runs on the runtime's workers, as a service would.
    runtime.block_on(async { tokio::spawn(bench()).await? })
}

async fn bench() -> BenchResult<()> {
    assert!(
        plugin("counter").exists(),
        "run scripts/build-plugins first"
    );
    let calls = setting("GROVE_BENCH_CALLS", 5_000);
    let fresh = setting("GROVE_BENCH_FRESH", 500);
    let redis = RedisServer::start();
    // The helper syncs every write to disk, for tests that restart Redis;
    // that would add a disk flush to every placement claim. Run Redis as
    // actor_calls does, without the append-only file.
    let reply = redis.cli(&["config", "set", "appendonly", "no"]);
    assert_eq!(reply.trim(), "OK", "cannot configure redis-server");
    let url = redis.url();
    let room = fresh + ACTORS + 1;
    let (a, b) = (host(&url, room).await?, host(&url, room).await?);
    let cluster_a = join(&a, &url, Strategy::TwoChoices).await?;
    let cluster_b = join(&b, &url, Strategy::PreferLocal).await?;
    // A's two choices are between A and B only once each sees the other.
    let start = Instant::now();
    while cluster_a.members().len() < 2 || cluster_b.members().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the hosts did not see each other"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    eprintln!("measuring first calls...");
    let fresh_ref = |i: usize| counter(&format!("fresh-{i}"));
    let took = one_at_a_time(&a, fresh, fresh_ref).await?;
    let landed_on_b: Vec<bool> = (0..fresh).map(|i| b.is_active(&fresh_ref(i))).collect();
    let placed_on = |on_b: bool| -> Latencies {
        took.iter()
            .zip(&landed_on_b)
            .filter(|&(_, &landed)| landed == on_b)
            .map(|(&ns, _)| ns)
            .collect()
    };
    let (on_a, on_b) = (placed_on(false), placed_on(true));
    let placed: Latencies = took.into_iter().collect();
    let alone = host(&url, room).await?;
    let alone_first: Latencies = one_at_a_time(&alone, fresh, |i| counter(&format!("alone-{i}")))
        .await?
        .into_iter()
        .collect();

    // Activated through B, so they run on B; then called once from A, so
    // that A's route to each is set up before anything is measured.
    let one = [counter("x")];
    let wide: Vec<ActorRef> = (0..ACTORS).map(|i| counter(&format!("wide-{i}"))).collect();
    let before = b.active_count();
    for actor in one.iter().chain(&wide) {
        b.call(actor, "get", vec![]).await?;
        a.call(actor, "get", vec![]).await?;
    }
    assert_eq!(
        b.active_count() - before,
        1 + ACTORS,
        "the actors should run on B"
    );

    eprintln!("measuring calls one at a time...");
    let local_seq: Latencies = one_at_a_time(&b, calls, |_| one[0].clone())
        .await?
        .into_iter()
        .collect();
    let cross_seq: Latencies = one_at_a_time(&a, calls, |_| one[0].clone())
        .await?
        .into_iter()
        .collect();
    eprintln!("measuring {CALLERS} callers...");
    let local_one = throughput(&b, &one).await?;
    let cross_one = throughput(&a, &one).await?;
    let local_wide = throughput(&b, &wide).await?;
    let cross_wide = throughput(&a, &wide).await?;

    println!("## Calls across hosts (two hosts in one process, loopback)\n");
    println!(
        "| workload | local: B → actor on B | cross-host: A → actor on B | cross-host / local |"
    );
    println!("|---|---|---|---|");
    println!(
        "| 1 caller, 1 actor, {calls} calls, p50 / p99 (µs) | {} | {} | {:.1}× (p50) |",
        local_seq.p50_p99(),
        cross_seq.p50_p99(),
        cross_seq.percentile(0.5) / local_seq.percentile(0.5)
    );
    println!(
        "| {CALLERS} callers, 1 actor (calls/s) | {local_one:.0} | {cross_one:.0} | {:.2}× |",
        cross_one / local_one
    );
    println!(
        "| {CALLERS} callers, {ACTORS} actors (calls/s) | {local_wide:.0} | {cross_wide:.0} | {:.2}× |",
        cross_wide / local_wide
    );
    println!("\n## First call to a fresh actor ({fresh} actors, one at a time)\n");
    println!("| host | actors | activation + first call, p50 / p99 (µs) |");
    println!("|---|---|---|");
    println!(
        "| alone, no cluster | {fresh} | {} |",
        alone_first.p50_p99()
    );
    println!(
        "| A in a cluster of two, two choices | {fresh} | {} |",
        placed.p50_p99()
    );
    println!("| … placed on A | {} | {} |", on_a.0.len(), on_a.p50_p99());
    println!("| … placed on B | {} | {} |", on_b.0.len(), on_b.p50_p99());

    for host in [&a, &b, &alone] {
        host.shutdown().await;
    }
    cluster_a.leave().await?;
    cluster_b.leave().await?;
    Ok(())
}
