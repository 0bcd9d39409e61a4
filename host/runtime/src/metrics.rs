//! What a host measures for its operators, and its Prometheus exposition.
//!
//! Recording happens on the hot path, so it is a handful of relaxed atomic
//! adds into counters found once, never a lookup by label per call: an
//! activation holds its actor type's [`TypeMeters`], and a plugin holds a
//! [`FunctionCalls`] per function, taken from the host's [`Meters`] when the
//! plugin is loaded (a deploy takes the same ones, so counters carry on
//! across versions). Everything else (live activations, mailbox depths, the
//! sandbox's incidents, the gateway's traffic, the process's memory and file
//! descriptors) is read when `/metrics` is scraped, by a
//! [`prometheus_client`] collector, which also writes the text format.
//!
//! A host built with `HostConfig::metrics` off records nothing: its
//! activations and plugins get no meters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::error::CallError;
use crate::state::StateError;
use crate::{ActorRef, Host};

/// Upper bounds of the latency histograms' buckets, in nanoseconds: from
/// 10 µs (a short turn) to 10 s (past every default deadline).
const BUCKETS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Copies of a counter: each thread counts in its own, on its own cache
/// line, so that threads counting the same thing at once do not take the
/// line from each other; a scrape adds them up.
const SHARDS: usize = 4;

/// The copy the current thread counts in.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

/// One cache line (two, for the adjacent-line prefetcher) to itself.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded<T>(T);

/// A counter that only grows.
#[derive(Debug, Default)]
pub(crate) struct Counter([Padded<AtomicU64>; SHARDS]);

impl Counter {
    /// Adds one.
    pub(crate) fn add(&self) {
        if let Some(Padded(n)) = self.0.get(shard()) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn get(&self) -> u64 {
        self.0
            .iter()
            .map(|Padded(n)| n.load(Ordering::Relaxed))
            .sum()
    }
}

/// One copy of a histogram's counts.
#[derive(Debug, Default)]
struct HistogramShard {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// A latency histogram: a count per bucket (the last one past every bound),
/// and the sum.
#[derive(Debug, Default)]
pub(crate) struct Histogram([Padded<HistogramShard>; SHARDS]);

impl Histogram {
    /// Counts one duration.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let Some(Padded(shard)) = self.0.get(shard()) else {
            return;
        };
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS.partition_point(|bound| *bound < nanos);
        if let Some(count) = shard.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The sum in seconds, the count, and the count of each bucket by its
    /// upper bound in seconds (`+Inf` last); the encoder makes them
    /// cumulative.
    fn read(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(BUCKETS.len() + 1);
        for i in 0..=BUCKETS.len() {
            let count: u64 = self
                .0
                .iter()
                .filter_map(|Padded(shard)| shard.counts.get(i))
                .map(|n| n.load(Ordering::Relaxed))
                .sum();
            total += count;
            let bound = BUCKETS.get(i).map_or(f64::INFINITY, |nanos| {
                Duration::from_nanos(*nanos).as_secs_f64()
            });
            buckets.push((bound, count));
        }
        let sum_nanos: u64 = self
            .0
            .iter()
            .map(|Padded(shard)| shard.sum_nanos.load(Ordering::Relaxed))
            .sum();
        (
            Duration::from_nanos(sum_nanos).as_secs_f64(),
            total,
            buckets,
        )
    }
}

/// The calls of one function of one actor type, by outcome.
#[derive(Debug, Default)]
pub(crate) struct FunctionCalls {
    ok: Counter,
    /// By [`CallError::kind`]: failures are rare, so a lock is cheap.
    failed: Mutex<BTreeMap<&'static str, u64>>,
}

impl FunctionCalls {
    /// Counts one call that was answered with `outcome`.
    pub(crate) fn count(&self, outcome: Result<(), &CallError>) {
        match outcome {
            Ok(()) => self.ok.add(),
            Err(error) => {
                let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                *failed.entry(error.kind()).or_default() += 1;
            }
        }
    }

    fn read(&self) -> Vec<(&'static str, u64)> {
        let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        std::iter::once(("ok", self.ok.get()))
            .chain(failed.iter().map(|(kind, n)| (*kind, *n)))
            .collect()
    }
}

/// What one actor type's activations count.
#[derive(Debug, Default)]
pub(crate) struct TypeMeters {
    /// Activations started (`on-activate` ran).
    pub(crate) activated: Counter,
    /// Activations that ended after starting: deactivated or died.
    pub(crate) ended: Counter,
    /// Activations that failed to start.
    pub(crate) failed_to_start: Counter,
    /// Activations started on an instance made ahead.
    pub(crate) made_ahead: Counter,
    /// Every turn: calls, session events, timers, reminders and hooks.
    pub(crate) turns: Histogram,
    /// Calls that waited for an answer: how long from being made until
    /// their turn began.
    pub(crate) queued: Histogram,
    pub(crate) timers_fired: Counter,
    pub(crate) reminders_fired: Counter,
    functions: DashMap<Arc<str>, Arc<FunctionCalls>>,
}

impl TypeMeters {
    /// The call counters of `function`.
    fn function(&self, function: &str) -> Arc<FunctionCalls> {
        if let Some(calls) = self.functions.get(function) {
            return calls.clone();
        }
        self.functions.entry(function.into()).or_default().clone()
    }
}

/// A state operation, as `grove_state_operations_total` labels it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateOp {
    Get,
    Put,
    Delete,
    List,
    SetReminder,
    CancelReminder,
}

impl StateOp {
    const ALL: [StateOp; 6] = [
        StateOp::Get,
        StateOp::Put,
        StateOp::Delete,
        StateOp::List,
        StateOp::SetReminder,
        StateOp::CancelReminder,
    ];

    fn name(self) -> &'static str {
        match self {
            StateOp::Get => "get",
            StateOp::Put => "put",
            StateOp::Delete => "delete",
            StateOp::List => "list",
            StateOp::SetReminder => "set-reminder",
            StateOp::CancelReminder => "cancel-reminder",
        }
    }
}

/// How a state operation ended.
const STATE_OUTCOMES: [&str; 5] = [
    "ok",
    "unavailable",
    "too-large",
    "quota-exceeded",
    "superseded",
];

fn state_outcome(error: Option<&StateError>) -> usize {
    match error {
        None => 0,
        Some(StateError::Unavailable(_)) => 1,
        Some(StateError::TooLarge(_)) => 2,
        Some(StateError::QuotaExceeded(_)) => 3,
        Some(StateError::Superseded(_)) => 4,
    }
}

/// Actors' state operations, by operation and outcome, with their latency.
#[derive(Debug, Default)]
struct StateMeters {
    counts: [[Counter; STATE_OUTCOMES.len()]; StateOp::ALL.len()],
    latency: [Histogram; StateOp::ALL.len()],
}

/// Everything a host counts. Shared behind an `Arc`.
#[derive(Debug, Default)]
pub(crate) struct Meters {
    by_type: DashMap<Arc<str>, Arc<TypeMeters>>,
    state: StateMeters,
}

impl Meters {
    /// The meters of `actor_type`.
    pub(crate) fn of(&self, actor_type: &str) -> Arc<TypeMeters> {
        if let Some(meters) = self.by_type.get(actor_type) {
            return meters.clone();
        }
        self.by_type.entry(actor_type.into()).or_default().clone()
    }

    /// The call counters of each of `functions` of `actor_type`, in order.
    pub(crate) fn functions<'a>(
        &self,
        actor_type: &str,
        functions: impl Iterator<Item = &'a str>,
    ) -> Vec<Arc<FunctionCalls>> {
        let meters = self.of(actor_type);
        functions.map(|f| meters.function(f)).collect()
    }

    /// Counts a call of `function` on `actor` whose caller got `error` (a
    /// timeout). Only functions a loaded plugin has are counted.
    pub(crate) fn count_timeout(&self, actor: &ActorRef, function: &str, error: &CallError) {
        let calls = self
            .by_type
            .get(&*actor.actor_type)
            .and_then(|m| m.functions.get(function).map(|c| c.clone()));
        if let Some(calls) = calls {
            calls.count(Err(error));
        }
    }

    /// Counts one state operation of an actor that took `elapsed`.
    pub(crate) fn state(&self, op: StateOp, error: Option<&StateError>, elapsed: Duration) {
        let op = op as usize;
        if let Some(n) = self
            .state
            .counts
            .get(op)
            .and_then(|o| o.get(state_outcome(error)))
        {
            n.add();
        }
        if let Some(latency) = self.state.latency.get(op) {
            latency.observe(elapsed);
        }
    }
}

/// Writes `host`'s metrics in the Prometheus text format (version 0.0.4).
pub(crate) fn encode(host: &Host) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(HostCollector(host.clone())));
    let mut text = String::new();
    // Writing into a `String` cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

/// Reads a host's metrics when scraped.
struct HostCollector(Host);

impl std::fmt::Debug for HostCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostCollector")
    }
}

/// A sample's labels.
type Labels = Vec<(&'static str, String)>;

/// One metric family: its name, help, unit and type, and its samples.
struct Family<M> {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    samples: Vec<(Labels, M)>,
}

impl<M: EncodeMetric> Family<M> {
    fn new(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            unit: None,
            samples: Vec::new(),
        }
    }

    fn seconds(mut self) -> Self {
        self.unit = Some(Unit::Seconds);
        self
    }

    fn add(&mut self, labels: Labels, metric: M) {
        self.samples.push((labels, metric));
    }

    fn encode(self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let Some(metric_type) = self.samples.first().map(|(_, m)| m.metric_type()) else {
            return Ok(());
        };
        let mut family =
            encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), metric_type)?;
        for (labels, metric) in &self.samples {
            metric.encode(family.encode_family(labels)?)?;
        }
        Ok(())
    }
}

/// A histogram read at scrape time.
struct ConstHistogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl ConstHistogram {
    fn of(histogram: &Histogram) -> Self {
        let (sum, count, buckets) = histogram.read();
        ConstHistogram {
            sum,
            count,
            buckets,
        }
    }
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> std::fmt::Result {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn counter(n: u64) -> ConstCounter<u64> {
    ConstCounter::new(n)
}

fn gauge(n: u64) -> ConstGauge<u64> {
    ConstGauge::new(n)
}

impl Collector for HostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let host = &self.0;
        if let Some(meters) = host.meters() {
            encode_types(host, meters, &mut encoder)?;
            encode_state(host.state_backend(), &meters.state, &mut encoder)?;
        }
        encode_gateway(host, &mut encoder)?;
        encode_process(&mut encoder)
    }
}

/// Per actor type: activations, calls, turns, mailboxes, incidents, timers
/// and reminders.
fn encode_types(host: &Host, meters: &Meters, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
    let types: BTreeMap<Arc<str>, Arc<TypeMeters>> = meters
        .by_type
        .iter()
        .map(|e| (e.key().clone(), e.value().clone()))
        .collect();
    let depths = host.mailbox_depths();
    let dead_letters = host.dead_letters_by_type();
    let load = Counter::get;

    let mut live = Family::new("grove_activations_live", "Activations running now.");
    let mut activated = Family::new("grove_activations", "Activations started.");
    let mut ended = Family::new(
        "grove_deactivations",
        "Activations ended after starting: deactivated, moved or died.",
    );
    let mut failed = Family::new(
        "grove_activation_failures",
        "Activations that failed to start.",
    );
    let mut made_ahead = Family::new(
        "grove_activations_made_ahead",
        "Activations started on an instance made ahead of them.",
    );
    let mut ready = Family::new(
        "grove_instances_made_ahead",
        "Instances of the version running now made ahead of their activations, ready.",
    );
    let mut prepared = Family::new(
        "grove_slots_prepared",
        "Memory slots prepared for the version running now while the host was idle, whether activations have taken them since or not.",
    );
    let mut calls = Family::new(
        "grove_calls",
        "Calls answered, by function and outcome (ok, or the error's kind).",
    );
    let mut turns = Family::new(
        "grove_turn_duration",
        "Time of each turn: calls, session events, timers, reminders and lifecycle hooks.",
    )
    .seconds();
    let mut queued = Family::new(
        "grove_call_queue_duration",
        "Time from a call being made to the start of its turn: the wait in the mailbox behind other turns.",
    )
    .seconds();
    let mut mailbox = Family::new("grove_mailbox_depth", "Messages waiting in mailboxes.");
    let mut incidents = Family::new(
        "grove_incidents",
        "What the sandbox stopped or refused: traps, out-of-memory, deadline overruns, limits, quotas, dropped log lines.",
    );
    let mut timers = Family::new("grove_timers_fired", "Timer ticks run.");
    let mut reminders = Family::new("grove_reminders_fired", "Reminders delivered.");
    let mut dead = Family::new(
        "grove_reminders_dead_lettered",
        "One-shot reminders given up after failing every try.",
    );
    for (actor_type, m) in &types {
        let of_type = || vec![("actor_type", actor_type.to_string())];
        let (started, stopped) = (load(&m.activated), load(&m.ended));
        live.add(of_type(), gauge(started.saturating_sub(stopped)));
        activated.add(of_type(), counter(started));
        ended.add(of_type(), counter(stopped));
        failed.add(of_type(), counter(load(&m.failed_to_start)));
        made_ahead.add(of_type(), counter(load(&m.made_ahead)));
        let current = host.plugin(actor_type).ok();
        let waiting = current.as_ref().map_or(0, |p| p.instances_made_ahead());
        ready.add(of_type(), gauge(waiting as u64));
        let slots = current.as_ref().map_or(0, |p| p.slots_prepared());
        prepared.add(of_type(), gauge(slots as u64));
        turns.add(of_type(), ConstHistogram::of(&m.turns));
        queued.add(of_type(), ConstHistogram::of(&m.queued));
        let depth = depths.get(actor_type).copied().unwrap_or(0);
        mailbox.add(of_type(), gauge(depth as u64));
        timers.add(of_type(), counter(load(&m.timers_fired)));
        reminders.add(of_type(), counter(load(&m.reminders_fired)));
        let given_up = dead_letters.get(actor_type).copied().unwrap_or(0);
        dead.add(of_type(), counter(given_up));
        let functions: BTreeMap<Arc<str>, Arc<FunctionCalls>> = m
            .functions
            .iter()
            .map(|f| (f.key().clone(), f.value().clone()))
            .collect();
        for (function, counts) in functions {
            for (outcome, n) in counts.read() {
                let mut labels = of_type();
                labels.push(("function", function.to_string()));
                labels.push(("outcome", outcome.to_owned()));
                calls.add(labels, counter(n));
            }
        }
        for (incident, n) in host.incidents(actor_type) {
            let mut labels = of_type();
            labels.push(("incident", incident.to_owned()));
            incidents.add(labels, counter(n));
        }
    }
    live.encode(encoder)?;
    activated.encode(encoder)?;
    ended.encode(encoder)?;
    failed.encode(encoder)?;
    made_ahead.encode(encoder)?;
    ready.encode(encoder)?;
    prepared.encode(encoder)?;
    calls.encode(encoder)?;
    turns.encode(encoder)?;
    queued.encode(encoder)?;
    mailbox.encode(encoder)?;
    incidents.encode(encoder)?;
    timers.encode(encoder)?;
    reminders.encode(encoder)?;
    dead.encode(encoder)
}

/// Actors' state operations by backend, operation and outcome.
fn encode_state(
    backend: &str,
    state: &StateMeters,
    encoder: &mut DescriptorEncoder,
) -> std::fmt::Result {
    let mut ops = Family::new(
        "grove_state_operations",
        "Actors' state operations, by backend, operation and outcome.",
    );
    let mut latency = Family::new(
        "grove_state_operation_duration",
        "Time of actors' state operations, by backend and operation.",
    )
    .seconds();
    for (op, (counts, histogram)) in StateOp::ALL
        .iter()
        .zip(state.counts.iter().zip(&state.latency))
    {
        let of_op = || {
            vec![
                ("backend", backend.to_owned()),
                ("operation", op.name().to_owned()),
            ]
        };
        for (outcome, n) in STATE_OUTCOMES.iter().zip(counts) {
            let mut labels = of_op();
            labels.push(("outcome", (*outcome).to_owned()));
            ops.add(labels, counter(n.get()));
        }
        latency.add(of_op(), ConstHistogram::of(histogram));
    }
    ops.encode(encoder)?;
    latency.encode(encoder)
}

/// The gateway's sessions, messages, bytes and connection ends.
fn encode_gateway(host: &Host, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
    let sessions = host.sessions();
    let traffic = sessions.traffic();
    let mut live = Family::new(
        "grove_gateway_sessions",
        "Game client sessions open now, by the door they came through.",
    );
    let mut opened = Family::new(
        "grove_gateway_sessions_opened",
        "Game client sessions admitted, by the door they came through.",
    );
    for (door, open, admitted) in sessions.doors() {
        let labels = || vec![("door", door.name().to_owned())];
        live.add(labels(), gauge(open));
        opened.add(labels(), counter(admitted));
    }
    live.encode(encoder)?;
    opened.encode(encoder)?;
    let mut messages = Family::new(
        "grove_gateway_messages",
        "Messages between game clients and actors, by direction (in: from clients) and kind.",
    );
    let mut bytes = Family::new(
        "grove_gateway_bytes",
        "Payload bytes between game clients and actors, by direction.",
    );
    for (direction, frames, datagrams, total) in [
        (
            "in",
            traffic.frames_in,
            traffic.datagrams_in,
            traffic.bytes_in,
        ),
        (
            "out",
            traffic.frames_out,
            traffic.datagrams_out,
            traffic.bytes_out,
        ),
    ] {
        let labels = |kind: &str| {
            vec![
                ("direction", direction.to_owned()),
                ("kind", kind.to_owned()),
            ]
        };
        messages.add(labels("frame"), counter(frames));
        messages.add(labels("datagram"), counter(datagrams));
        bytes.add(vec![("direction", direction.to_owned())], counter(total));
    }
    messages.encode(encoder)?;
    bytes.encode(encoder)?;
    let mut ends = Family::new(
        "grove_gateway_closes",
        "Game client connections ended, by reason: the close code the gateway sent (refused logins included), client-closed or timed-out.",
    );
    for (end, n) in sessions.ends() {
        ends.add(vec![("reason", end.name().to_owned())], counter(n));
    }
    ends.encode(encoder)
}

/// The process's resident memory and open file descriptors, as Prometheus's
/// own clients name them (Linux only: read from `/proc/self`).
fn encode_process(encoder: &mut DescriptorEncoder) -> std::fmt::Result {
    if let Some(rss) = resident_bytes() {
        let mut family = Family::new(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        );
        family.add(vec![], gauge(rss));
        family.encode(encoder)?;
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let mut family = Family::new("process_open_fds", "Number of open file descriptors.");
        family.add(vec![], gauge(fds.count() as u64));
        family.encode(encoder)?;
    }
    Ok(())
}

/// `VmRSS` from `/proc/self/status`, in bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_the_first_bucket_that_holds_them() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(5));
        histogram.observe(Duration::from_micros(10));
        histogram.observe(Duration::from_millis(3));
        histogram.observe(Duration::from_secs(60));
        let (sum, count, buckets) = histogram.read();
        assert_eq!(count, 4);
        assert!((sum - 60.003_015).abs() < 1e-9, "{sum}");
        // 10 µs holds two (its bound included), 5 ms one, +Inf one.
        assert_eq!(buckets.first(), Some(&(0.000_01, 2)));
        assert!(buckets.contains(&(0.0025, 0)));
        assert!(buckets.contains(&(0.005, 1)));
        assert_eq!(buckets.last(), Some(&(f64::INFINITY, 1)));
        assert_eq!(buckets.iter().map(|(_, n)| n).sum::<u64>(), 4);
        assert_eq!(buckets.len(), BUCKETS.len() + 1);
    }

    #[test]
    fn calls_are_counted_by_outcome() {
        let calls = FunctionCalls::default();
        calls.count(Ok(()));
        calls.count(Ok(()));
        let stopping = CallError::Unavailable(crate::error::Unavailable::ShuttingDown);
        calls.count(Err(&stopping));
        assert_eq!(calls.read(), vec![("ok", 2), ("shutting-down", 1)]);
    }
}
