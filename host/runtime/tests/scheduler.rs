//! A client's round trip through Grove is a chain of tasks, each woken by
//! the one before: after quinn's endpoint driver, the connection's driver,
//! the session's reader, the actor's turn, the session's writer, and the
//! connection's driver again; a player whose turn calls a cell adds two
//! more (the cell's turn, then the player's again). Tokio runs a task woken
//! by a worker's running task next on that worker (its "LIFO slot"), but as
//! published only three times in a row: the fourth goes to the run queue
//! and wakes a sleeping worker to share it. On a virtual machine that
//! wake-up costs tens of microseconds, several times raw quinn's whole
//! round trip. Grove builds with a tokio that allows eight
//! (`vendor/README.md`).
//!
//! Past the cap, a woken task goes to the back of the run queue; tokio as
//! published then wakes a sleeping worker to share it even when it is the
//! only task queued, so a caller and the one actor it calls, waking each
//! other, woke the other worker up to once every four or five round trips.
//! Grove's tokio wakes one only when another task is queued too.
//!
//! A worker back from sleep with tasks queued while it slept (woken by a
//! timer or a socket) wakes a sleeping worker, as published, as soon as two
//! are queued; Grove's tokio only at three, since two tasks run on the
//! worker sooner than another can be woken to take one.
//!
//! The first test runs chains of seven hand-offs on two workers and asserts
//! that the worker not running them sleeps through: fewer than one sleep in
//! ten chains. It fails with tokio as published (about 300 sleeps over 200
//! chains) and with any cap under seven. The second has two tasks wake each
//! other for 200 ms and asserts that the workers slept fewer than ten times
//! in all; it fails if a task queued alone past the cap wakes the other
//! worker. The third has two tasks woken by the same timer 200 times and
//! asserts that the other worker sleeps through; with tokio as published
//! each worker slept about 415 times.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::Notify;

/// Tasks woken one by another in each chain; the last wakes the driver,
/// the seventh hand-off.
const CHAIN: usize = 6;

/// Chains run, one at a time.
const CHAINS: u64 = 200;

/// How many times each of the runtime's workers has gone to sleep so far.
fn parks() -> Vec<u64> {
    let metrics = Handle::current().metrics();
    (0..metrics.num_workers())
        .map(|worker| metrics.worker_park_count(worker))
        .collect()
}

/// How many times each worker has gone to sleep since `before` was taken.
fn parks_since(before: &[u64]) -> Vec<u64> {
    before.iter().zip(parks()).map(|(b, a)| a - b).collect()
}

/// A runtime with two workers, as on the machine the figures come from.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn chains_of_seven_hand_offs_do_not_wake_the_other_worker() {
    let runtime = two_workers();
    let parked = runtime.block_on(async {
        // links[i] wakes the i-th task of the chain; the last task wakes
        // links[CHAIN], which the driver waits on.
        let links: Arc<Vec<Notify>> = Arc::new((0..=CHAIN).map(|_| Notify::new()).collect());
        for i in 0..CHAIN {
            let links = links.clone();
            tokio::spawn(async move {
                loop {
                    links[i].notified().await;
                    links[i + 1].notify_one();
                }
            });
        }
        let driver = tokio::spawn(async move {
            // Every task has run to its first wait.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let before = parks();
            for _ in 0..CHAINS {
                // A timer wakes the driver, as a packet wakes quinn's
                // endpoint driver: the worker that slept on it runs the
                // chain, and the other one sleeps on.
                tokio::time::sleep(Duration::from_millis(1)).await;
                links[0].notify_one();
                links[CHAIN].notified().await;
            }
            // Let the workers' last sleeps be counted.
            tokio::time::sleep(Duration::from_millis(50)).await;
            parks_since(&before)
        });
        tokio::time::timeout(Duration::from_secs(60), driver)
            .await
            .expect("the chains did not finish within a minute")
            .unwrap()
    });
    // One worker runs every chain and sleeps between them, waiting for the
    // next timer. The other should sleep through: with tokio as published,
    // the fourth task of each chain wakes it, and it sleeps again.
    let calmer = parked.iter().min().copied().unwrap_or(0);
    let busier = parked.iter().max().copied().unwrap_or(0);
    assert!(
        busier >= CHAINS,
        "over {CHAINS} chains the workers slept {parked:?} times: \
         the worker running them should sleep between chains"
    );
    assert!(
        calmer < CHAINS / 10,
        "over {CHAINS} chains the workers slept {parked:?} times: \
         the chains kept waking the second worker"
    );
}

/// How long the caller and the actor in
/// [`a_caller_and_its_actor_waking_each_other_stay_on_one_worker`] wake each
/// other: how often the other worker is woken depends on time, since it is
/// only woken once it has gone back to sleep.
const ROUND_TRIPS_FOR: Duration = Duration::from_millis(200);

#[test]
fn a_caller_and_its_actor_waking_each_other_stay_on_one_worker() {
    let runtime = two_workers();
    let parked = runtime.block_on(async {
        // The caller wakes the actor through `call`, the actor answers
        // through `answer`: two hand-offs per round trip.
        let (call, answer) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let actor = {
            let (call, answer) = (call.clone(), answer.clone());
            tokio::spawn(async move {
                loop {
                    call.notified().await;
                    answer.notify_one();
                }
            })
        };
        let caller = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let before = parks();
            let (started, mut round_trips) = (Instant::now(), 0u64);
            while started.elapsed() < ROUND_TRIPS_FOR {
                call.notify_one();
                answer.notified().await;
                round_trips += 1;
            }
            (round_trips, parks_since(&before))
        });
        let done = tokio::time::timeout(Duration::from_secs(60), caller)
            .await
            .expect("the round trips did not finish within a minute")
            .unwrap();
        actor.abort();
        done
    });
    let (round_trips, parked) = parked;
    assert!(round_trips > 1_000, "only {round_trips} round trips ran");
    // Up to once a cap's worth of hand-offs, tokio as published woke the
    // other worker, which slept again: hundreds of sleeps in 200 ms.
    let total: u64 = parked.iter().sum();
    assert!(
        total < 10,
        "over {round_trips} round trips the workers slept {parked:?} times: \
         a task queued alone past the LIFO cap woke the other worker"
    );
}

/// Timer ticks in [`two_tasks_woken_by_one_timer_do_not_wake_the_other_worker`].
const TICKS: u64 = 200;

#[test]
fn two_tasks_woken_by_one_timer_do_not_wake_the_other_worker() {
    let runtime = two_workers();
    let parked = runtime.block_on(async {
        let driver = tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let before = parks();
            // Two tasks on the same ticks, as a world's cells on the same
            // phase are: each tick, the worker that slept on the timer wakes
            // with both queued.
            let start = tokio::time::Instant::now() + Duration::from_millis(5);
            let tickers: Vec<_> = (0..2)
                .map(|_| {
                    tokio::spawn(async move {
                        let mut ticks = tokio::time::interval_at(start, Duration::from_millis(2));
                        for _ in 0..TICKS {
                            ticks.tick().await;
                        }
                    })
                })
                .collect();
            for ticker in tickers {
                ticker.await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            parks_since(&before)
        });
        tokio::time::timeout(Duration::from_secs(60), driver)
            .await
            .expect("the ticks did not finish within a minute")
            .unwrap()
    });
    let calmer = parked.iter().min().copied().unwrap_or(0);
    let busier = parked.iter().max().copied().unwrap_or(0);
    assert!(
        busier >= TICKS / 2,
        "over {TICKS} ticks the workers slept {parked:?} times: \
         the worker holding the timer should sleep between ticks"
    );
    // tokio as published wakes the other worker whenever one comes back from
    // sleep with two tasks queued, and it sleeps again: once a tick.
    assert!(
        calmer < TICKS / 10,
        "over {TICKS} ticks the workers slept {parked:?} times: \
         two tasks woken together woke the second worker"
    );
}
