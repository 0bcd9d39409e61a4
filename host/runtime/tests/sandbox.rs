//! The sandbox: a plugin written to hurt its host — an endless loop,
//! allocation without end, unbounded recursion, a huge result, floods of log
//! lines, timers and reminders, proxies never dropped, attempts at files,
//! sockets and the environment — is contained, under limits set for its own
//! actor type, while the actors beside it keep answering. Each incident is
//! counted for its type.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{call, ok};
use grove_host::limits::{LimitRule, Limits};
use grove_host::state::StateStore;
use grove_host::{ActorRef, Host, HostConfig};

/// The rogue's own limits, tighter than everyone else's.
const ROGUE_LIMITS: [&str; 9] = [
    "rogue.memory-mib=16",
    "rogue.turn-deadline-ms=300",
    "rogue.timers=50",
    "rogue.reminders=20",
    "rogue.proxies=100",
    "rogue.log-lines-per-second=10",
    "rogue.mailbox=8",
    "rogue.state-rows=30",
    "rogue.state-mib=1",
];

fn host() -> Host {
    host_with(common::config().call_timeout, &[])
}

/// A host whose rogues have [`ROGUE_LIMITS`], then `more` rules.
fn host_with(call_timeout: Duration, more: &[&str]) -> Host {
    let rules: Vec<LimitRule> = ROGUE_LIMITS
        .iter()
        .chain(more)
        .map(|r| r.parse().unwrap())
        .collect();
    let mut limits: Limits = common::config().limits;
    limits.apply(&rules);
    let config = HostConfig {
        limits,
        call_timeout,
        ..common::config()
    };
    let host = Host::new(config, StateStore::memory()).unwrap();
    for name in ["counter", "rogue"] {
        host.load_plugin(&common::plugin(name)).unwrap();
    }
    host
}

/// Calls counters until told to stop; returns every call's latency and the
/// failures.
fn bystanders(
    host: &Host,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<Duration>, Vec<String>)> {
    let host = host.clone();
    tokio::spawn(async move {
        let mut latencies = Vec::new();
        let mut failures = Vec::new();
        let mut i = 0u32;
        while !stop.load(Ordering::Relaxed) {
            let actor = format!("counter/bystander-{}", i % 16);
            let started = Instant::now();
            if let Err(e) = call(&host, &actor, "add", &["1"]).await {
                failures.push(e);
            }
            latencies.push(started.elapsed());
            i += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        (latencies, failures)
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_contained_and_their_neighbours_never_notice() {
    let host = host();
    let stop = Arc::new(AtomicBool::new(false));
    let watching = bystanders(&host, stop.clone());

    // Each attack ends the rogue's turn (and its activation) with an error
    // naming what it ran into; the next call activates it again.
    let err = call(&host, "rogue/1", "spin", &[]).await.unwrap_err();
    assert!(err.starts_with("deadline-exceeded"), "{err}");
    assert!(err.contains("300ms"), "the rogue's own deadline: {err}");

    let err = call(&host, "rogue/1", "hog", &["64"]).await.unwrap_err();
    assert!(err.starts_with("out-of-memory"), "{err}");
    assert!(
        err.contains(&(16u64 << 20).to_string()),
        "the rogue's own memory limit: {err}"
    );

    let err = call(&host, "rogue/1", "recurse", &["18446744073709551615"])
        .await
        .unwrap_err();
    // It runs off its stack in linear memory, a trap like any other.
    assert!(err.starts_with("trapped"), "{err}");
    // Recursion within the stack is fine.
    assert_eq!(ok(&host, "rogue/1", "recurse", &["100"]).await, "100");

    // 2 Mi list elements are past the 48 MiB a result may copy out.
    let err = call(&host, "rogue/1", "huge", &["2097152"])
        .await
        .unwrap_err();
    assert!(err.starts_with("limit-exceeded"), "{err}");

    let err = call(&host, "rogue/1", "set-timers", &["1000"])
        .await
        .unwrap_err();
    assert!(err.starts_with("limit-exceeded"), "{err}");
    assert!(err.contains("at most 50 timers"), "{err}");

    let err = call(&host, "rogue/1", "leak-proxies", &["1000"])
        .await
        .unwrap_err();
    assert!(err.starts_with("limit-exceeded"), "{err}");
    assert!(err.contains("at most 100 proxy handles"), "{err}");
    // Proxies leaked below the limit die with their activation.
    assert_eq!(ok(&host, "rogue/2", "leak-proxies", &["99"]).await, "99");

    // A reminder past the quota is refused; the turn goes on.
    let set = ok(&host, "rogue/1", "set-reminders", &["100"]).await;
    assert!(set.starts_with("(20, some("), "{set}");
    assert!(set.contains("at most 20 reminders"), "{set}");

    // State past the rogue's quota is refused, under its own key or any
    // other; what was stored stays.
    let filled = ok(&host, "rogue/1", "fill-state", &[r#""1""#, "20", "1000"]).await;
    assert_eq!(filled, "(20, none)");
    let filled = ok(
        &host,
        "rogue/1",
        "fill-state",
        &[r#""elsewhere""#, "20", "1000"],
    )
    .await;
    assert!(filled.starts_with("(10, some("), "{filled}");
    assert!(
        filled.contains("quota exceeded: rogue/1 may keep at most 30 rows"),
        "{filled}"
    );
    let filled = ok(&host, "rogue/2", "fill-state", &[r#""2""#, "2", "1000000"]).await;
    assert!(filled.starts_with("(1, some("), "1 MiB of values: {filled}");

    // 3 × 2000 lines: a burst of 20, then 10 a second, the rest dropped.
    assert_eq!(ok(&host, "rogue/1", "shout", &["2000"]).await, "2000");

    // No ambient capabilities: no files, no network, no environment.
    let read = ok(&host, "rogue/1", "read-file", &[r#""/etc/hostname""#]).await;
    assert!(read.starts_with("\"error:"), "{read}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("\"{}\"", listener.local_addr().unwrap());
    let connected = ok(&host, "rogue/1", "connect", &[&address]).await;
    assert!(connected.starts_with("\"error:"), "{connected}");
    let seen = ok(&host, "rogue/1", "environment", &[]).await;
    for leak in ["=", "arg ", "\"/"] {
        assert!(!seen.contains(leak), "the rogue saw {leak}: {seen}");
    }

    stop.store(true, Ordering::Relaxed);
    let (mut latencies, failures) = watching.await.unwrap();
    assert!(failures.is_empty(), "bystanders failed: {failures:?}");
    latencies.sort();
    let worst = *latencies.last().unwrap();
    assert!(latencies.len() > 50, "{} bystander calls", latencies.len());
    // A generous bound for a loaded 2-core CI machine: what the rogue does
    // never holds a bystander's call for long.
    assert!(
        worst < Duration::from_millis(500),
        "p50 {:?}, worst {worst:?}",
        percentile(&latencies, 0.5)
    );

    let incidents = host.incidents("rogue");
    assert_eq!(incidents["deadline-exceeded"], 1, "{incidents:?}");
    assert_eq!(incidents["out-of-memory"], 1, "{incidents:?}");
    assert_eq!(incidents["trapped"], 1, "{incidents:?}");
    assert_eq!(incidents["limit-exceeded"], 3, "{incidents:?}");
    assert_eq!(incidents["quota-refused"], 3, "{incidents:?}");
    assert!(incidents["log-lines-dropped"] >= 5_900, "{incidents:?}");
    assert!(host.incidents("counter").values().all(|n| *n == 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_s_limits_apply_to_it_alone() {
    // Callers give up after a second, and a spinning rogue runs for three:
    // every caller below comes within a second of the first, however
    // loaded the machine, and none finds room left by the spin's end.
    let host = host_with(Duration::from_secs(1), &["rogue.turn-deadline-ms=3000"]);
    // The counter keeps the defaults the rogue's rules started from.
    assert_eq!(host.limits_of("counter").max_memory, 32 << 20);
    assert_eq!(host.limits_of("counter").mailbox_capacity, 256);
    let rogue = host.limits_of("rogue");
    assert_eq!((rogue.max_memory, rogue.mailbox_capacity), (16 << 20, 8));
    // 24 MiB is too much for a rogue, not for anyone else.
    ok(&host, "counter/big", "add", &["1"]).await;
    let err = call(&host, "rogue/big", "hog", &["24"]).await.unwrap_err();
    assert!(err.starts_with("out-of-memory"), "{err}");

    // The rogue's mailbox holds 8: while it spins, a caller past them
    // waits for room until its deadline, then hears the mailbox is full.
    let spinning = tokio::spawn({
        let host = host.clone();
        async move { call(&host, "rogue/busy", "spin", &[]).await }
    });
    // On a loaded machine the spin's task may start late: the callers
    // below must come while its turn runs (or is about to).
    let busy = ActorRef::new("rogue", "busy");
    common::eventually(
        "the spinning rogue runs",
        Duration::from_secs(10),
        || async { host.is_active(&busy) && host.running_turns() >= 1 },
    )
    .await;
    // Eight one-way messages fill the mailbox first. Unlike calls, they
    // have no caller to answer at a deadline, so no room opens while the
    // rogue spins: the callers after them wait for room and hear, at their
    // deadlines, that the mailbox is full, however far apart a loaded
    // machine starts them. (Calls in their place would time out one after
    // another, each letting in a caller behind it.)
    let recurse = host.plugin("rogue").unwrap();
    let (_, recurse) = recurse.function("recurse").unwrap();
    for _ in 0..8 {
        let args = grove_host::values::args_from_wave(recurse, &["1".to_owned()]).unwrap();
        host.send(&busy, "recurse", args).await.unwrap();
    }
    let mut queued = Vec::new();
    for _ in 0..12 {
        let host = host.clone();
        queued.push(tokio::spawn(async move {
            call(&host, "rogue/busy", "recurse", &["1"]).await
        }));
    }
    let mut full = 0;
    for q in queued {
        if let Err(e) = q.await.unwrap() {
            if e.starts_with("mailbox-full") {
                assert!(e.contains("(8 messages)"), "{e}");
                full += 1;
            }
        }
    }
    assert_eq!(full, 12, "{full} of 12 callers heard mailbox-full");
    let _ = spinning.await.unwrap();
}
