//! Actor → actor calls beside direct host calls, the cost of carrying the
//! call chain, and state writes to Redis beside `redis-benchmark`, all
//! measured in the same run.
//!
//! Run with: `scripts/bench` (needs `redis-server` and `redis-benchmark`).
//! `GROVE_BENCH_SECS` sets the length of each throughput phase (default 2).
//! `GROVE_BENCH_ONLY=calls` measures the first table alone (calls through a
//! proxy beside direct calls), and needs no Redis: to profile those calls.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{phase, plugin};

use grove_host::chain::extend as extend_chain;
use grove_host::limits::Limits;
use grove_host::state::{RowKey, StateStore};
use grove_host::{ActorRef, Host, HostConfig};
use wasmtime::component::Val;

const RUNS: usize = 3;
const CALLERS: usize = 64;
const PINGS: u32 = 20_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn median_u64(mut v: Vec<u64>) -> f64 {
    v.sort_unstable();
    v[v.len() / 2] as f64
}

fn host(state: StateStore) -> Host {
    let config = HostConfig {
        limits: Limits {
            max_activations: 2_000,
            ..Limits::default()
        },
        compile_cache: Some(
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/grove-bench-cache"),
        ),
        ..HostConfig::default()
    };
    let host = Host::new(config, state).unwrap();
    for name in ["probe", "counter"] {
        host.load_plugin(&plugin(name)).unwrap();
    }
    host
}

fn probe(key: &str) -> ActorRef {
    ActorRef::new("probe", key)
}

/// Median ns of one direct `recall` call from Rust, one at a time.
async fn direct_latency(host: &Host) -> f64 {
    let target = probe("target");
    let mut took = Vec::with_capacity(PINGS as usize);
    for _ in 0..PINGS {
        let start = Instant::now();
        host.call(&target, "recall", vec![]).await.unwrap();
        took.push(start.elapsed().as_nanos() as u64);
    }
    median_u64(took)
}

/// Median ns of one `recall` call made by an actor through its proxy.
async fn actor_latency(host: &Host) -> f64 {
    let answer = host
        .call(
            &probe("caller"),
            "ping-many",
            vec![Val::String("target".into()), Val::U32(PINGS)],
        )
        .await
        .unwrap();
    let Some(Val::Result(Ok(Some(list)))) = answer else {
        panic!("ping-many failed: {answer:?}")
    };
    let Val::List(took) = *list else { panic!() };
    median_u64(
        took.into_iter()
            .map(|v| match v {
                Val::U64(n) => n,
                _ => panic!(),
            })
            .collect(),
    )
}

/// Median ns of one `take-bytes` call carrying `size` bytes: made by an
/// actor through its proxy, and made directly from Rust.
async fn bytes_latency(host: &Host, size: u32) -> (f64, f64) {
    // Large payloads take long enough that fewer calls give a stable median.
    let count = if size > 1024 { 200 } else { PINGS / 4 };
    let answer = host
        .call(
            &probe("caller"),
            "ping-bytes",
            vec![
                Val::String("target".into()),
                Val::U32(count),
                Val::U32(size),
            ],
        )
        .await
        .unwrap();
    let Some(Val::Result(Ok(Some(list)))) = answer else {
        panic!("ping-bytes failed: {answer:?}")
    };
    let Val::List(took) = *list else { panic!() };
    let actor = median_u64(
        took.into_iter()
            .map(|v| match v {
                Val::U64(n) => n,
                _ => panic!(),
            })
            .collect(),
    );
    let payload = Val::List(vec![Val::U8(7); size as usize]);
    let mut took = Vec::new();
    for _ in 0..count {
        let args = vec![payload.clone()];
        let start = Instant::now();
        host.call(&probe("target"), "take-bytes", args)
            .await
            .unwrap();
        took.push(start.elapsed().as_nanos() as u64);
    }
    (actor, median_u64(took))
}

/// Median ns of one round of `recall` calls from one actor to `fan_out`
/// others: one after another, or started all at once and then waited for.
async fn fan_out_round(host: &Host, fan_out: usize, at_once: bool) -> f64 {
    let targets = (0..fan_out)
        .map(|i| Val::String(format!("fan-{i}")))
        .collect();
    let answer = host
        .call(
            &probe("fanner"),
            "recall-each",
            vec![Val::List(targets), Val::Bool(at_once), Val::U32(PINGS / 20)],
        )
        .await
        .unwrap();
    let Some(Val::Result(Ok(Some(list)))) = answer else {
        panic!("recall-each failed: {answer:?}")
    };
    let Val::List(took) = *list else { panic!() };
    median_u64(
        took.into_iter()
            .map(|v| match v {
                Val::U64(n) => n,
                _ => panic!(),
            })
            .collect(),
    )
}

/// Operations/s of `workers` tasks, each running `op(worker, n)` for
/// n = 0, 1, 2, ... until the measured phase is over (after a warm-up).
async fn rate<F, Fut>(workers: usize, op: F) -> f64
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                op(w, n).await;
                done.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (start, before) = (Instant::now(), done.load(Ordering::Relaxed));
    tokio::time::sleep(phase()).await;
    let rate = (done.load(Ordering::Relaxed) - before) as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    rate
}

/// Calls/s of `CALLERS` Rust tasks each calling its own target directly.
async fn direct_throughput(host: &Host) -> f64 {
    let host = host.clone();
    rate(CALLERS, move |i, _| {
        let host = host.clone();
        async move {
            host.call(&probe(&format!("t{i}")), "recall", vec![])
                .await
                .unwrap();
        }
    })
    .await
}

/// Calls/s of `CALLERS` caller actors each calling its own target.
async fn actor_throughput(host: &Host) -> f64 {
    let per_caller = 4_000u32;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CALLERS {
        let host = host.clone();
        tasks.push(tokio::spawn(async move {
            host.call(
                &probe(&format!("c{i}")),
                "ping-many",
                vec![Val::String(format!("t{i}")), Val::U32(per_caller)],
            )
            .await
            .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (CALLERS as u64 * u64::from(per_caller)) as f64 / start.elapsed().as_secs_f64()
}

fn chain_check_ns(depth: usize) -> f64 {
    let mut chain = None;
    for i in 0..depth {
        chain = extend_chain(
            &chain,
            &probe(&format!("a{i}")),
            &probe(&format!("a{}", i + 1)),
        )
        .unwrap();
    }
    let (caller, target) = (probe(&format!("a{depth}")), probe("other"));
    let n = 1_000_000;
    let start = Instant::now();
    for _ in 0..n {
        std::hint::black_box(extend_chain(&chain, &caller, &target).unwrap());
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is needed for this benchmark");
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `redis-benchmark -t hset -P 16` requests/s.
fn redis_benchmark(port: u16) -> f64 {
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-t",
            "hset",
            "-P",
            "16",
            "-n",
            "2000000",
            "-q",
        ])
        .output()
        .expect("redis-benchmark is needed for this benchmark");
    let text = String::from_utf8_lossy(&out.stdout);
    // "HSET: 1234567.00 requests per second, p50=0.439 msec"
    text.split("HSET:")
        .last()
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read redis-benchmark's output: {text}"))
}

/// Acknowledged `put`s/s from `writers` concurrent writers, straight to the store.
async fn store_writes(store: &StateStore, writers: usize) -> f64 {
    let store = store.clone();
    rate(writers, move |w, n| {
        let store = store.clone();
        async move {
            let (key1, key2) = (format!("w{w}"), (n % 100).to_string());
            let row = RowKey {
                namespace: "bench",
                table: "t",
                key1: &key1,
                key2: Some(&key2),
            };
            store.put(row, b"xxx".to_vec()).await.unwrap();
        }
    })
    .await
}

/// Acknowledged `counter.add` calls/s over 1,000 actors (each a state write).
async fn actor_writes(host: &Host, callers: usize) -> f64 {
    let host = host.clone();
    rate(callers, move |c, n| {
        let host = host.clone();
        async move {
            let actor = ActorRef::new("counter", &((c + n * callers) % 1000).to_string());
            host.call(&actor, "add", vec![Val::U64(1)]).await.unwrap();
        }
    })
    .await
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}

async fn bench() {
    let host = host(StateStore::memory());
    // Activate everything first: only calls are measured.
    host.call(&probe("target"), "recall", vec![]).await.unwrap();
    actor_latency(&host).await;

    let (mut direct_lat, mut actor_lat, mut direct_tp, mut actor_tp) =
        (vec![], vec![], vec![], vec![]);
    for run in 0..RUNS {
        eprintln!("actor calls, run {}/{RUNS}...", run + 1);
        direct_lat.push(direct_latency(&host).await);
        actor_lat.push(actor_latency(&host).await);
        direct_tp.push(direct_throughput(&host).await);
        actor_tp.push(actor_throughput(&host).await);
    }
    let (dl, al) = (median(direct_lat) / 1000.0, median(actor_lat) / 1000.0);
    let (dt, at) = (median(direct_tp), median(actor_tp));
    println!("## Actor → actor calls (median of {RUNS} runs)\n");
    println!("| measure | actor → actor (proxy) | direct host call | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| latency, one call at a time, p50 (µs) | {al:.2} | {dl:.2} | {:.2}× |",
        al / dl
    );
    println!(
        "| throughput, {CALLERS} callers (calls/s) | {at:.0} | {dt:.0} | {:.2}× |",
        dt / at
    );
    if std::env::var("GROVE_BENCH_ONLY").as_deref() == Ok("calls") {
        return;
    }
    println!(
        "\nCall chain check and extension per call: {:.0} ns at depth 1, {:.0} ns at depth 8.\n",
        chain_check_ns(1),
        chain_check_ns(8)
    );
    println!("## One actor calling many (median of {RUNS} runs)\n");
    println!("| callees | one after another, per round (µs) | started at once, then waited for (µs) | at once / one after another |");
    println!("|---:|---:|---:|---:|");
    for fan_out in [16usize, 100] {
        // Activate the callees first.
        fan_out_round(&host, fan_out, false).await;
        let (mut each, mut once) = (vec![], vec![]);
        for _ in 0..RUNS {
            each.push(fan_out_round(&host, fan_out, false).await);
            once.push(fan_out_round(&host, fan_out, true).await);
        }
        let (e, o) = (median(each) / 1000.0, median(once) / 1000.0);
        println!("| {fan_out} | {e:.1} | {o:.1} | {:.2}× |", o / e);
    }
    println!();
    println!("## A `list<u8>` argument (median of {RUNS} runs)\n");
    println!("| payload | actor → actor p50 (µs) | direct host call p50 (µs) |");
    println!("|---|---|---|");
    for size in [16u32, 64 << 10] {
        let (mut actor, mut direct) = (vec![], vec![]);
        for _ in 0..RUNS {
            let (a, d) = bytes_latency(&host, size).await;
            actor.push(a);
            direct.push(d);
        }
        println!(
            "| {size} B | {:.2} | {:.2} |",
            median(actor) / 1000.0,
            median(direct) / 1000.0
        );
    }
    println!();
    host.shutdown().await;

    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let store = StateStore::connect_redis(&url).await.unwrap();
    let host = self::host(store.clone());
    let (mut baseline, mut raw, mut actors) = (vec![], vec![], vec![]);
    for run in 0..RUNS {
        eprintln!("redis, run {}/{RUNS}...", run + 1);
        baseline.push(redis_benchmark(redis.port));
        raw.push(store_writes(&store, 256).await);
        actors.push(actor_writes(&host, 256).await);
    }
    let (b, r, a) = (median(baseline), median(raw), median(actors));
    println!("## State writes to Redis (median of {RUNS} runs)\n");
    println!("| workload | writes/s | vs `redis-benchmark -t hset -P 16` |");
    println!("|---|---|---|");
    println!("| `redis-benchmark -t hset -P 16` (50 clients) | {b:.0} | 100% |");
    println!(
        "| Grove Redis store, 256 concurrent writers | {r:.0} | {:.0}% |",
        100.0 * r / b
    );
    println!(
        "| `counter.add` over 1,000 actors, 256 callers | {a:.0} | {:.0}% |",
        100.0 * a / b
    );
    host.shutdown().await;
}
