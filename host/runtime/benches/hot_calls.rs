//! `Host::call` throughput alone, in rounds: no native baseline, no
//! activation phase, so that two builds of Grove (before and after a change)
//! can be run one right after the other, several times, on a machine whose
//! speed drifts (see docs/benchmarks.md).
//!
//! Run with: `scripts/build-plugins && cargo bench -p grove-host --bench hot_calls`.
//! Environment: `ACTORS` (default 1), `CALLERS` (default 64), `ROUNDS`
//! (default 3) of `GROVE_BENCH_SECS` (default 2), `WORKERS` tokio worker
//! threads (default 2; 1 measures the cost of a call without cross-core
//! effects). Prints calls/s per round.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{phase, plugin};
use grove_host::limits::Limits;
use grove_host::state::StateStore;
use grove_host::{ActorRef, Host, HostConfig};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(setting("WORKERS", 2))
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { tokio::spawn(bench()).await.unwrap() });
}

async fn bench() {
    let callers = setting("CALLERS", 64);
    let actors = setting("ACTORS", 1);
    let config = HostConfig {
        limits: Limits {
            max_activations: 3 * actors as u32 + 10,
            ..Limits::default()
        },
        idle_timeout: Duration::from_secs(3600),
        ..HostConfig::default()
    };
    let host = Host::new(config, StateStore::memory()).unwrap();
    host.load_plugin(&plugin("counter")).unwrap();
    let refs: Arc<Vec<ActorRef>> = Arc::new(
        (0..actors)
            .map(|i| ActorRef::new("counter", &i.to_string()))
            .collect(),
    );
    for actor in refs.iter() {
        host.call(actor, "get", vec![]).await.unwrap();
    }
    for _ in 0..setting("ROUNDS", 3) {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|c| {
                let (stop, count) = (stop.clone(), count.clone());
                let (host, refs) = (host.clone(), refs.clone());
                tokio::spawn(async move {
                    let (mut i, mut calls) = (c, 0);
                    while !stop.load(Ordering::Relaxed) {
                        host.call(&refs[i % refs.len()], "get", vec![])
                            .await
                            .unwrap();
                        i += callers;
                        calls += 1;
                    }
                    count.fetch_add(calls, Ordering::Relaxed);
                })
            })
            .collect();
        tokio::time::sleep(phase()).await;
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
        let rate = count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64();
        println!("{rate:.0}");
    }
}
