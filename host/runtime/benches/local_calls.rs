//! Local call throughput and latency, activation cost and memory per idle
//! activation, beside a native Rust baseline of the same counter logic (a
//! tokio task per actor with an mpsc mailbox) measured in the same run.
//!
//! Run with: `scripts/build-plugins && cargo bench -p grove-host --bench local_calls`
//! (`GROVE_BENCH_SECS` sets the length of each measured phase, default 2).
//! `GROVE_BENCH_ONLY=calls` measures the call rows alone, `activation` all
//! but them, `used-crowd` the crowds on fresh and used slots alone, four
//! times, each on a new host (to profile that row).
//! `GROVE_BENCH_ONLY=live` instead activates as many counters as `grove run`
//! would allow under this machine's `vm.max_map_count` (or
//! `GROVE_BENCH_LIVE` of them) and keeps them all alive.
//! The activation rows include a burst of 10,000 activations on fresh slots and
//! another on the slots the first crowd left.
//! `GROVE_BENCH_WARM` sets `Limits::warm_activations` (0: every activation
//! instantiates on its first call).

mod common;
// glibc's count of the heap in use, shared with the tests.
#[path = "../tests/common/heap.rs"]
mod heap;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{phase, plugin};
use heap::heap_in_use;

use grove_host::limits::Limits;
use grove_host::state::{RowKey, StateStore};
use grove_host::{ActorRef, Host, HostConfig};
use tokio::sync::{mpsc, oneshot};
use wasmtime::component::Val;

const ACTORS: usize = 10_000;

/// Probe actors activated one at a time, on fresh slots and on used ones.
const PROBES: usize = 1_000;

/// What one measured phase saw.
struct Run {
    calls_per_sec: f64,
    latencies_ns: Vec<u64>,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

/// A counter actor the native way: a task owning its value, an mpsc mailbox,
/// a oneshot per reply, and the same state write per `add` as the plugin.
#[derive(Clone)]
struct NativeCounter {
    mailbox: mpsc::Sender<(Option<u64>, oneshot::Sender<u64>)>,
}

impl NativeCounter {
    fn spawn(key: String, state: StateStore) -> Self {
        let (mailbox, mut rx) = mpsc::channel::<(Option<u64>, oneshot::Sender<u64>)>(1024);
        tokio::spawn(async move {
            let mut value = 0u64;
            while let Some((add, reply)) = rx.recv().await {
                if let Some(n) = add {
                    value += n;
                    let row = RowKey {
                        namespace: "counter",
                        table: "counter",
                        key1: &key,
                        key2: None,
                    };
                    state
                        .put(row, serde_json::to_vec(&value).unwrap())
                        .await
                        .unwrap();
                }
                let _ = reply.send(value);
            }
        });
        NativeCounter { mailbox }
    }

    async fn call(&self, add: Option<u64>) -> u64 {
        let (tx, rx) = oneshot::channel();
        self.mailbox.send((add, tx)).await.unwrap();
        rx.await.unwrap()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Get,
    Add,
}

/// Runs `callers` loops for one phase, each calling actors in turn.
async fn drive<F, Fut>(callers: usize, actors: usize, call: F) -> Run
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let (stop, call) = (stop.clone(), call.clone());
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(1 << 16);
                let mut i = c;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    call(i % actors).await;
                    lat.push(t.elapsed().as_nanos() as u64);
                    i += callers;
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(phase()).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies_ns = Vec::new();
    for t in tasks {
        latencies_ns.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies_ns.sort_unstable();
    Run {
        calls_per_sec: latencies_ns.len() as f64 / elapsed,
        latencies_ns,
    }
}

fn report(label: &str, grove: &Run, native: &Run) {
    let g = &grove.latencies_ns;
    let n = &native.latencies_ns;
    println!(
        "| {label} | {:.0} | {:.0} | {:.0}% | {:.1} / {:.1} | {:.1} / {:.1} |",
        grove.calls_per_sec,
        native.calls_per_sec,
        100.0 * grove.calls_per_sec / native.calls_per_sec,
        percentile(g, 0.5),
        percentile(g, 0.99),
        percentile(n, 0.5),
        percentile(n, 0.99),
    );
}

/// Anonymous resident memory (`RssAnon`): what activations write, without
/// the file-backed pages of the binary and the compiled plugin.
fn rss_anon_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The process's memory mappings, which `vm.max_map_count` limits.
fn mappings() -> u64 {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |maps| maps.lines().count() as u64)
}

/// Live activations under the kernel's limit on memory mappings: as many as
/// `grove run` sizes `--max-activations` to (or `GROVE_BENCH_LIVE`), all
/// activated and kept alive at once.
async fn live() {
    let max_map_count = std::fs::read_to_string("/proc/sys/vm/max_map_count").unwrap();
    let limits = Limits::default();
    let fit = grove_host::engine::activations_that_fit(limits.max_running_turns).unwrap();
    let n: u32 = std::env::var("GROVE_BENCH_LIVE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(fit);
    let config = HostConfig {
        limits: Limits {
            max_activations: n,
            ..limits
        },
        idle_timeout: Duration::from_secs(3600),
        ..HostConfig::default()
    };
    let host = Host::new(config, StateStore::memory()).unwrap();
    host.load_plugin(&plugin("counter")).unwrap();
    let before = mappings();
    let t = Instant::now();
    let failed = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let batch: Vec<_> = (0..64)
        .map(|c| {
            let (host, failed) = (host.clone(), failed.clone());
            tokio::spawn(async move {
                for i in (c..n).step_by(64) {
                    let actor = ActorRef::new("counter", &i.to_string());
                    if let Err(e) = host.call(&actor, "get", vec![]).await {
                        if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("activation {i} failed: {e}");
                        }
                    }
                }
            })
        })
        .collect();
    for b in batch {
        b.await.unwrap();
    }
    println!("## Live activations under vm.max_map_count\n");
    println!("| measure | value |");
    println!("|---|---|");
    println!("| vm.max_map_count | {} |", max_map_count.trim());
    println!("| activations that fit, as `grove run` computes it | {fit} |");
    println!("| activations asked for | {n} |");
    println!("| live at the end | {} |", host.active_count());
    println!("| failed | {} |", failed.load(Ordering::Relaxed));
    println!(
        "| memory mappings before the first activation / at the end | {before} / {} |",
        mappings()
    );
    println!(
        "| seconds to activate them, 64 in flight | {:.1} |",
        t.elapsed().as_secs_f64()
    );
}

/// Activates `n` actors of `actor_type` named after `prefix`, one at a
/// time, each by a call of `function`, `gap` apart (untimed); the sorted
/// times of each activation and its first call.
async fn first_calls(
    host: &Host,
    actor_type: &str,
    prefix: &str,
    function: &str,
    n: usize,
    gap: Duration,
) -> Vec<u64> {
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        let actor = ActorRef::new(actor_type, &format!("{prefix}-{i}"));
        let t = Instant::now();
        host.call(&actor, function, vec![]).await.unwrap();
        times.push(t.elapsed().as_nanos() as u64);
    }
    times.sort_unstable();
    times
}

/// A login every [`GAP`] in the rows that space activations out.
const GAP: Duration = Duration::from_millis(1);

/// The native baseline of [`first_calls`]: 1,000 counters spawned one at a
/// time, `gap` apart, each called once; the sorted times.
async fn native_first_calls(state: &StateStore, prefix: &str, gap: Duration) -> Vec<u64> {
    let mut times = Vec::with_capacity(1000);
    for i in 0..1000 {
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
        let t = Instant::now();
        let c = NativeCounter::spawn(format!("{prefix}-{i}"), state.clone());
        c.call(None).await;
        times.push(t.elapsed().as_nanos() as u64);
    }
    times.sort_unstable();
    times
}

/// Activation and first call of [`PROBES`] probes one at a time on fresh
/// slots, then of as many others on the slots the first left, then again
/// [`GAP`] apart, each sorted.
/// A slot keeps the pages its activation wrote resident (up to
/// `linear_memory_keep_resident`), so an activation of the same plugin
/// there takes fewer page faults. On a host of its own, so that the slots
/// left over do not change what the other activation rows measure; after
/// the memory rows, whose growth the heap this host frees would hide.
async fn slot_reuse(config: HostConfig) -> (Vec<u64>, Vec<u64>, Vec<u64>) {
    let host = Host::new(config, StateStore::memory()).unwrap();
    host.load_plugin(&plugin("probe")).unwrap();
    let fresh = first_calls(&host, "probe", "fresh", "recall", PROBES, Duration::ZERO).await;
    retire_probes(&host, "fresh", PROBES).await;
    let used = first_calls(&host, "probe", "again", "recall", PROBES, Duration::ZERO).await;
    retire_probes(&host, "again", PROBES).await;
    let spaced = first_calls(&host, "probe", "spaced", "recall", PROBES, GAP).await;
    host.shutdown().await;
    (fresh, used, spaced)
}

/// Asks the `n` probes named after `prefix` to deactivate (`probe` can ask
/// for it), and waits until they have: their slots are back in the pool.
async fn retire_probes(host: &Host, prefix: &str, n: usize) {
    let actors: Vec<_> = (0..n)
        .map(|i| ActorRef::new("probe", &format!("{prefix}-{i}")))
        .collect();
    for actor in &actors {
        host.call(actor, "retire", vec![]).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while actors.iter().any(|actor| host.is_active(actor)) {
        assert!(Instant::now() < deadline, "retired probes still active");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Activations per second of [`ACTORS`] probes, 64 in flight, on fresh
/// slots and then, once those have deactivated, on the slots they left: what
/// a burst of logins gets from slots an earlier crowd used. On a host of its
/// own, after the memory rows, as [`slot_reuse`].
async fn burst_on_used_slots(config: HostConfig) -> (f64, f64) {
    let host = Host::new(config, StateStore::memory()).unwrap();
    host.load_plugin(&plugin("probe")).unwrap();
    let fresh = burst(&host, "probe", "crowd-", "recall").await;
    retire_probes(&host, "crowd", ACTORS).await;
    let used = burst(&host, "probe", "next-crowd-", "recall").await;
    host.shutdown().await;
    (fresh, used)
}

/// What slots prepared while the host is idle give a first crowd: on a
/// host of its own preparing a slot for each probe below, one probe is
/// activated (it shows which pages a first turn writes), and once every
/// slot is prepared, [`PROBES`] probes are activated one at a time (the
/// sorted times) and [`ACTORS`] others 64 in flight (activations per
/// second). Also what preparing took: the seconds from the first call, and
/// the anonymous RSS and memory mappings it added per slot.
async fn prepared_slots(mut config: HostConfig) -> (Vec<u64>, f64, Preparing) {
    let slots = 1 + PROBES + ACTORS;
    config.limits.prepared_slots = slots as u32;
    let host = Host::new(config, StateStore::memory()).unwrap();
    let probe = host.load_plugin(&plugin("probe")).unwrap();
    let t = Instant::now();
    let first = ActorRef::new("probe", "first");
    host.call(&first, "recall", vec![]).await.unwrap();
    let (rss_before, maps_before) = (rss_anon_bytes(), mappings());
    while probe.slots_prepared() < slots {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{} slots prepared after two minutes",
            probe.slots_prepared()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The last instances held are dropped a few at a time after that.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let preparing = Preparing {
        slots,
        secs: t.elapsed().as_secs_f64(),
        rss_kib: rss_anon_bytes().saturating_sub(rss_before) as f64 / slots as f64 / 1024.0,
        mappings: mappings().saturating_sub(maps_before) as f64 / slots as f64,
    };
    let one_at_a_time = first_calls(&host, "probe", "one", "recall", PROBES, Duration::ZERO).await;
    let crowd = burst(&host, "probe", "crowd-", "recall").await;
    host.shutdown().await;
    (one_at_a_time, crowd, preparing)
}

/// What preparing slots took ([`prepared_slots`]).
struct Preparing {
    slots: usize,
    /// Seconds from the first activation until every slot was prepared.
    secs: f64,
    /// Anonymous RSS added per slot (KiB).
    rss_kib: f64,
    /// Memory mappings added per slot.
    mappings: f64,
}

/// Activates [`ACTORS`] actors of `actor_type`, keys `{prefix}0` onwards,
/// each by a call of `function`, 64 in flight; activations per second.
async fn burst(host: &Host, actor_type: &str, prefix: &str, function: &'static str) -> f64 {
    let t = Instant::now();
    let batch: Vec<_> = (0..64)
        .map(|c| {
            let host = host.clone();
            let (actor_type, prefix) = (actor_type.to_owned(), prefix.to_owned());
            tokio::spawn(async move {
                for i in (c..ACTORS).step_by(64) {
                    let actor = ActorRef::new(&actor_type, &format!("{prefix}{i}"));
                    host.call(&actor, function, vec![]).await.unwrap();
                }
            })
        })
        .collect();
    for b in batch {
        b.await.unwrap();
    }
    ACTORS as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // The benchmark itself runs on the runtime's workers, as a service would.
    runtime.block_on(async { tokio::spawn(bench()).await.unwrap() });
}

async fn bench() {
    assert!(
        plugin("counter").exists(),
        "run scripts/build-plugins first"
    );
    if std::env::var("GROVE_BENCH_ONLY").as_deref() == Ok("live") {
        return live().await;
    }
    let config = HostConfig {
        limits: Limits {
            max_activations: 3 * ACTORS as u32,
            warm_activations: std::env::var("GROVE_BENCH_WARM")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(Limits::default().warm_activations),
            // Rows on prepared slots have a host of their own
            // (`prepared_slots`): preparing them competes with whatever
            // the host and the native baselines run then.
            prepared_slots: 0,
            ..Limits::default()
        },
        idle_timeout: Duration::from_secs(3600),
        ..HostConfig::default()
    };
    if std::env::var("GROVE_BENCH_ONLY").as_deref() == Ok("used-crowd") {
        println!("| `probe`: activations/s, 64 in flight, fresh slots / slots a deactivated crowd left |");
        println!("|---|");
        for _ in 0..4 {
            let (fresh, used) = burst_on_used_slots(config.clone()).await;
            println!("| {fresh:.0} / {used:.0} |");
        }
        return;
    }
    let host = Host::new(config.clone(), StateStore::memory()).unwrap();
    host.load_plugin(&plugin("counter")).unwrap();
    host.load_plugin(&plugin("probe")).unwrap();
    let native_state = StateStore::memory();
    if std::env::var("GROVE_BENCH_ONLY").as_deref() == Ok("calls") {
        eprintln!("activating {ACTORS} actors...");
        burst(&host, "counter", "", "get").await;
        return calls(&host, &native_state).await;
    }
    let idle_mappings = mappings();

    // Activation: activation + first call, one at a time, then the rate with
    // many in flight; RSS per idle activation over 10,000 activations.
    eprintln!("measuring activation...");
    // `GROVE_BENCH_FIRST_CALLS` activations one at a time (for profiling
    // that path alone; default 1,000).
    let firsts: usize = std::env::var("GROVE_BENCH_FIRST_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let first_call = first_calls(&host, "counter", "first", "get", firsts, Duration::ZERO).await;
    let native_first = native_first_calls(&native_state, "first", Duration::ZERO).await;
    // Logins a millisecond apart: time between activations to make the
    // next instance ahead.
    let spaced = first_calls(&host, "counter", "spaced", "get", 1000, GAP).await;
    let native_spaced = native_first_calls(&native_state, "spaced", GAP).await;

    eprintln!("activating {ACTORS} actors...");
    let (rss_before, maps_before, heap_before) = (rss_anon_bytes(), mappings(), heap_in_use());
    // Keys `0` to `9999`: the call phases below call the same counters.
    let activation_rate = burst(&host, "counter", "", "get").await;

    tokio::time::sleep(Duration::from_millis(200)).await;
    let per_activation =
        (rss_anon_bytes().saturating_sub(rss_before)) as f64 / ACTORS as f64 / 1024.0;
    let maps_per_activation = mappings().saturating_sub(maps_before) as f64 / ACTORS as f64;
    let heap_per_activation =
        heap_in_use().saturating_sub(heap_before) as f64 / ACTORS as f64 / 1024.0;
    // After the memory rows: the other host's heap, freed, would be reused.
    eprintln!("measuring activation on fresh and used slots...");
    let (fresh_slots, used_slots, spaced_used) = slot_reuse(config.clone()).await;
    eprintln!("measuring bursts on fresh and used slots...");
    let (burst_fresh, burst_used) = burst_on_used_slots(config.clone()).await;
    eprintln!("measuring activation on prepared slots...");
    let (prepared_one, burst_prepared, preparing) = prepared_slots(config).await;

    println!("## Activation ({} activations)\n", ACTORS);
    println!("| measure | Grove | native baseline |");
    println!("|---|---|---|");
    println!(
        "| activation + first call, p50 / p99 (µs) | {:.1} / {:.1} | {:.1} / {:.1} |",
        percentile(&first_call, 0.5),
        percentile(&first_call, 0.99),
        percentile(&native_first, 0.5),
        percentile(&native_first, 0.99)
    );
    println!(
        "| the same, one every millisecond, p50 / p99 (µs) | {:.1} / {:.1} | {:.1} / {:.1} |",
        percentile(&spaced, 0.5),
        percentile(&spaced, 0.99),
        percentile(&native_spaced, 0.5),
        percentile(&native_spaced, 0.99)
    );
    println!(
        "| `probe`: activation + first call on a fresh slot, p50 / p99 (µs) | {:.1} / {:.1} | |",
        percentile(&fresh_slots, 0.5),
        percentile(&fresh_slots, 0.99)
    );
    println!(
        "| `probe`: the same on a slot a deactivated `probe` left, p50 / p99 (µs) | {:.1} / {:.1} | |",
        percentile(&used_slots, 0.5),
        percentile(&used_slots, 0.99)
    );
    println!(
        "| `probe`: the same, one every millisecond, p50 / p99 (µs) | {:.1} / {:.1} | |",
        percentile(&spaced_used, 0.5),
        percentile(&spaced_used, 0.99)
    );
    println!(
        "| `probe`: the same on a slot prepared while the host was idle, p50 / p99 (µs) | {:.1} / {:.1} | |",
        percentile(&prepared_one, 0.5),
        percentile(&prepared_one, 0.99)
    );
    println!("| activations/s, 64 in flight | {activation_rate:.0} | |");
    println!(
        "| `probe`: activations/s, 64 in flight, fresh slots / slots a deactivated crowd left | {burst_fresh:.0} / {burst_used:.0} | |"
    );
    println!(
        "| `probe`: activations/s, 64 in flight, on slots prepared while the host was idle ({} prepared in {:.2} s) | {burst_prepared:.0} | |",
        preparing.slots, preparing.secs
    );
    println!("| anonymous RSS per idle activation (KiB) | {per_activation:.1} | |");
    println!(
        "| of which the host's heap (glibc in-use bytes) (KiB) | {heap_per_activation:.1} | |"
    );
    println!("| memory mappings per idle activation | {maps_per_activation:.2} | |");
    println!(
        "| anonymous RSS / memory mappings per prepared slot (KiB / count) | {:.1} / {:.2} | |",
        preparing.rss_kib, preparing.mappings
    );
    println!("| memory mappings of the host before its first activation | {idle_mappings} | |");

    // Churn: actors that come and go, as players logging in and out do.
    // Each cycle activates a new actor, makes two calls and asks it to
    // deactivate after a third; 64 cycles are in flight.
    eprintln!("measuring churn...");
    let churn_host = host.clone();
    let churn = drive(64, usize::MAX, move |i| {
        let host = churn_host.clone();
        async move {
            let actor = ActorRef::new("probe", &format!("churn-{i}"));
            for (function, args) in [
                ("remember", vec![Val::String("x".into())]),
                ("recall", vec![]),
                ("retire", vec![]),
            ] {
                host.call(&actor, function, args).await.unwrap();
            }
        }
    })
    .await;
    let churn_state = native_state.clone();
    let native_churn = drive(64, usize::MAX, move |i| {
        let state = churn_state.clone();
        async move {
            let counter = NativeCounter::spawn(format!("churn-{i}"), state);
            counter.call(None).await;
            counter.call(None).await;
            counter.call(None).await;
        }
    })
    .await;
    println!(
        "| churn: activate, 3 calls, deactivate, 64 in flight: cycles/s | {:.0} | {:.0} |",
        churn.calls_per_sec, native_churn.calls_per_sec
    );
    println!(
        "| churn: one cycle, p50 / p99 (µs) | {:.1} / {:.1} | {:.1} / {:.1} |",
        percentile(&churn.latencies_ns, 0.5),
        percentile(&churn.latencies_ns, 0.99),
        percentile(&native_churn.latencies_ns, 0.5),
        percentile(&native_churn.latencies_ns, 0.99)
    );
    if std::env::var("GROVE_BENCH_ONLY").as_deref() == Ok("activation") {
        return;
    }
    calls(&host, &native_state).await;
}

/// The call rows, on counters `0` to `9999` already active.
async fn calls(host: &Host, native_state: &StateStore) {
    let natives: Arc<Vec<NativeCounter>> = Arc::new(
        (0..ACTORS)
            .map(|i| NativeCounter::spawn(i.to_string(), native_state.clone()))
            .collect(),
    );
    let refs: Arc<Vec<ActorRef>> = Arc::new(
        (0..ACTORS)
            .map(|i| ActorRef::new("counter", &i.to_string()))
            .collect(),
    );

    println!("\n## Calls\n");
    println!("| workload | Grove calls/s | native calls/s | Grove/native | Grove p50 / p99 (µs) | native p50 / p99 (µs) |");
    println!("|---|---|---|---|---|---|");
    for (label, callers, actors, op) in [
        ("1 actor, 1 caller, `get`", 1, 1, Op::Get),
        ("1 actor, 64 callers, `get`", 64, 1, Op::Get),
        ("10,000 actors, 256 callers, `get`", 256, ACTORS, Op::Get),
        (
            "10,000 actors, 256 callers, `add` (state write)",
            256,
            ACTORS,
            Op::Add,
        ),
    ] {
        eprintln!("measuring {label}...");
        let (host, refs) = (host.clone(), refs.clone());
        let grove = drive(callers, actors, move |i| {
            let (host, refs) = (host.clone(), refs.clone());
            async move {
                let (f, args) = match op {
                    Op::Get => ("get", vec![]),
                    Op::Add => ("add", vec![Val::U64(1)]),
                };
                host.call(&refs[i], f, args).await.unwrap();
            }
        })
        .await;
        let natives = natives.clone();
        let native = drive(callers, actors, move |i| {
            let natives = natives.clone();
            async move {
                natives[i]
                    .call(if op == Op::Add { Some(1) } else { None })
                    .await;
            }
        })
        .await;
        report(label, &grove, &native);
    }
}
