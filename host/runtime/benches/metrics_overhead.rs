//! What counting costs: local calls on a host with metrics on beside the same
//! calls on a host with metrics off (`HostConfig::metrics`), in one process,
//! in rounds that alternate on, off, off, on, ... so that the machine's drift
//! falls on both alike.
//!
//! Two workloads: one hot actor and 64 callers calling `get` (a call and a
//! turn counted each), and 1,000 actors and 64 callers calling `add` (a state
//! write counted too).
//!
//! Run with: `scripts/build-plugins && cargo bench -p grove-host --bench metrics_overhead`.
//! Environment: `ROUNDS` per host (default 6) of `GROVE_BENCH_SECS` (default
//! 2). Prints calls/s per round, then the medians and their ratio.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{phase, plugin};
use grove_host::limits::Limits;
use grove_host::state::StateStore;
use grove_host::{ActorRef, Host, HostConfig};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async { tokio::spawn(bench()).await.unwrap() });
}

async fn host(metrics: bool, actors: usize) -> (Host, Arc<Vec<ActorRef>>) {
    let config = HostConfig {
        limits: Limits {
            max_activations: 2 * actors as u32 + 10,
            ..Limits::default()
        },
        idle_timeout: Duration::from_secs(3600),
        metrics,
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
    (host, refs)
}

/// Calls per second from 64 callers spread over `refs` for one phase.
async fn round(host: &Host, refs: &Arc<Vec<ActorRef>>, function: &'static str) -> f64 {
    let callers = 64;
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
                    let args = match function {
                        "add" => vec![wasmtime::component::Val::U64(1)],
                        _ => vec![],
                    };
                    host.call(&refs[i % refs.len()], function, args)
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
    count.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    let mid = rates.len() / 2;
    if rates.len().is_multiple_of(2) {
        (rates[mid - 1] + rates[mid]) / 2.0
    } else {
        rates[mid]
    }
}

async fn bench() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6);
    println!(
        "metrics on beside metrics off, {rounds} rounds of {:?} each",
        phase()
    );
    for (label, actors, function) in [
        ("1 actor, 64 callers, get", 1, "get"),
        ("1,000 actors, 64 callers, add", 1_000, "add"),
    ] {
        let on = host(true, actors).await;
        let off = host(false, actors).await;
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for r in 0..rounds {
            // on, off, off, on, on, off, ...
            let order = if r % 2 == 0 {
                [true, false]
            } else {
                [false, true]
            };
            for metrics in order {
                let (host, refs) = if metrics { &on } else { &off };
                let rate = round(host, refs, function).await;
                println!(
                    "{label:<32} metrics {:<3} {rate:>10.0} calls/s",
                    if metrics { "on" } else { "off" }
                );
                if metrics {
                    with.push(rate);
                } else {
                    without.push(rate);
                }
            }
        }
        let (with, without) = (median(with), median(without));
        println!(
            "{label:<32} median on {with:.0}, off {without:.0}: on/off = {:.3}",
            with / without
        );
        on.0.shutdown().await;
        off.0.shutdown().await;
    }
}
