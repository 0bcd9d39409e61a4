//! Swapping a plugin under load: the time to move 10,000 live activations to
//! a new version, and the latency of calls during the move beside before it,
//! in the same run.
//!
//! 10,000 counters (state in memory) are activated. Callers keep calling them
//! (`add 1`, each caller over its own share of the counters); after a phase
//! of calls, `counter_next` is deployed, and the time from the deploy until
//! no activation runs the old version and every moved one has started on the
//! new one is measured (`Host::settle`). Call latencies are kept per phase:
//! before the deploy, and from the deploy until the move is done.
//!
//! Run with: `scripts/build-plugins && cargo bench -p grove-host --bench deploy`
//! (`GROVE_BENCH_SECS` sets the length of the phase before, default 2;
//! `GROVE_BENCH_ACTORS` the number of counters, default 10,000).

mod common;

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{phase, plugin};
use grove_host::limits::Limits;
use grove_host::state::StateStore;
use grove_host::{ActorRef, DeployOptions, Host, HostConfig, Settled};
use wasmtime::component::Val;

/// Concurrent callers.
const CALLERS: usize = 16;

/// Phases the callers record latencies in.
const BEFORE: u8 = 0;
const DURING: u8 = 1;
const AFTER: u8 = 2;

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default() as f64 / 1000.0
}

fn main() {
    let actors: usize = std::env::var("GROVE_BENCH_ACTORS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move { tokio::spawn(bench(actors)).await.unwrap() });
}

async fn bench(actors: usize) {
    // The new version is compiled into this cache before the clock starts,
    // as a host that deploys a file it has seen loads it: the figures are
    // the swap and the moves, not cranelift.
    let cache = tempfile::tempdir().unwrap();
    let config = HostConfig {
        compile_cache: Some(cache.path().to_owned()),
        limits: Limits {
            max_activations: 3 * actors as u32,
            ..Limits::default()
        },
        idle_timeout: Duration::from_secs(3600),
        ..HostConfig::default()
    };
    let host = Host::new(config.clone(), StateStore::memory()).unwrap();
    host.load_plugin(&plugin("counter")).unwrap();
    let counter = |key: usize| ActorRef::new("counter", &key.to_string());
    eprintln!("activating {actors} counters...");
    for key in 0..actors {
        host.call(&counter(key), "add", vec![Val::U64(1)])
            .await
            .unwrap();
    }

    let phase_now = Arc::new(AtomicU8::new(BEFORE));
    let latencies: Arc<Mutex<[Vec<u64>; 3]>> = Arc::default();
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let callers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let (host, phase_now, latencies, failed) = (
                host.clone(),
                phase_now.clone(),
                latencies.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                let mut mine: [Vec<u64>; 3] = Default::default();
                let mut i = c;
                loop {
                    let now = phase_now.load(Ordering::Relaxed);
                    if now == AFTER {
                        break;
                    }
                    let target = ActorRef::new("counter", &(i % actors).to_string());
                    let start = Instant::now();
                    if host.call(&target, "add", vec![Val::U64(1)]).await.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    let ns = start.elapsed().as_nanos() as u64;
                    // A call counts in the phase it started in.
                    if let Some(list) = mine.get_mut(usize::from(now)) {
                        list.push(ns);
                    }
                    i += CALLERS;
                }
                let mut all = latencies.lock().unwrap();
                for (all, mine) in all.iter_mut().zip(mine) {
                    all.extend(mine);
                }
            })
        })
        .collect();

    tokio::time::sleep(phase()).await;
    let file = plugin("counter_next");
    let bytes = std::fs::read(&file).unwrap();
    let compiling = Host::new(config.clone(), StateStore::memory()).unwrap();
    compiling.load_plugin(&file).unwrap();
    drop(compiling);
    let started = Instant::now();
    phase_now.store(DURING, Ordering::Relaxed);
    let deploy_host = host.clone();
    let deployed = tokio::task::spawn_blocking(move || {
        deploy_host.deploy(&file, &bytes, &DeployOptions::default())
    })
    .await
    .unwrap()
    .unwrap();
    let swapped = started.elapsed();
    let settled = host.settle(&deployed, Duration::from_secs(60)).await;
    let moved = started.elapsed();
    phase_now.store(AFTER, Ordering::Relaxed);
    for caller in callers {
        caller.await.unwrap();
    }
    assert_eq!(settled, Settled::Moved, "the move did not finish");

    let mut latencies = latencies.lock().unwrap();
    for list in latencies.iter_mut() {
        list.sort_unstable();
    }
    let [before, during, _] = &*latencies;
    println!("## Deploying under load ({actors} live activations, {CALLERS} callers)\n");
    println!("| | value |");
    println!("|---|---|");
    println!("| activations asked to move | {} |", deployed.moving);
    println!(
        "| deploy call: load (compiled), check, swap, ask every activation to move | {:.1} ms |",
        swapped.as_secs_f64() * 1000.0
    );
    println!(
        "| deploy call → every activation started on the new version | {:.1} ms |",
        moved.as_secs_f64() * 1000.0
    );
    println!(
        "| calls before: p50 / p99 (µs), calls | {:.1} / {:.1}, {} |",
        percentile(before, 0.5),
        percentile(before, 0.99),
        before.len()
    );
    println!(
        "| calls during the deploy and the move: p50 / p99 (µs), calls | {:.1} / {:.1}, {} |",
        percentile(during, 0.5),
        percentile(during, 0.99),
        during.len()
    );
    println!("| failed calls | {} |", failed.load(Ordering::Relaxed));
}
