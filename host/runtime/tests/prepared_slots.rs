//! Slots prepared while the host is idle (`Limits::prepared_slots`): once a
//! type has activated, the host makes its memory slots ready as a
//! deactivated actor leaves them, and later activations of the type take
//! them without mapping memory again. A slot used for the first time maps
//! its memory (two mappings, `tests/mappings.rs`), so the process's mapping
//! count shows which slots activations land on. The test has a binary of
//! its own because it counts the whole process's mappings and depends on
//! the order its threads first use the engine's pool.

mod common;

use std::time::{Duration, Instant};

use grove_host::ActorRef;
use tokio::runtime::Runtime;

const PREPARED: usize = 64;

/// A runtime with one worker thread.
fn one_worker() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Activates `counter/{prefix}{i}` for each `i` in `keys` on `runtime`'s
/// worker, one at a time, each answering 0.
fn activate(
    runtime: &Runtime,
    host: &grove_host::Host,
    prefix: &str,
    keys: std::ops::Range<usize>,
) {
    let (host, prefix) = (host.clone(), prefix.to_owned());
    runtime
        .block_on(runtime.spawn(async move {
            for i in keys {
                let actor = ActorRef::new("counter", &format!("{prefix}{i}"));
                let got = host.call(&actor, "get", vec![]).await.unwrap();
                assert_eq!(format!("{got:?}"), "Some(U64(0))", "{actor}");
            }
        }))
        .unwrap();
}

#[test]
fn slots_prepared_on_one_thread_serve_activations_on_another() {
    // Each thread has a home shard in the engine's pool: the first worker
    // prepares the slots, the second activates on them.
    let (preparing, activating) = (one_worker(), one_worker());
    let mut config = common::config();
    config.limits.prepared_slots = PREPARED as u32;
    config.limits.warm_activations = 0;
    let host = preparing
        .block_on(async { grove_host::Host::new(config, grove_host::state::StateStore::memory()) })
        .unwrap();
    let counter = host.load_plugin(&common::plugin("counter")).unwrap();
    assert_eq!(counter.slots_prepared(), 0);

    // The first activation shows which pages a first turn writes; the host
    // is idle after it, and prepares.
    activate(&preparing, &host, "first", 0..1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter.slots_prepared() < PREPARED {
        assert!(
            Instant::now() < deadline,
            "{} of {PREPARED} slots prepared after 30 s",
            counter.slots_prepared()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The instances held are dropped (their slots freed) after the count
    // is reached; no more are made.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(counter.slots_prepared(), PREPARED);
    let metrics = host.metrics();
    assert!(
        metrics.contains(&format!(
            "grove_slots_prepared{{actor_type=\"counter\"}} {PREPARED}\n"
        )),
        "{metrics}"
    );

    let before = common::memory_mappings();
    activate(&activating, &host, "on-prepared-", 0..PREPARED);
    let on_prepared = common::memory_mappings() - before;
    assert!(
        on_prepared <= 4,
        "{PREPARED} activations on prepared slots added {on_prepared} mappings"
    );

    // Past the slots prepared, each activation maps a fresh slot.
    let before = common::memory_mappings();
    activate(&activating, &host, "on-fresh-", 0..PREPARED);
    let on_fresh = common::memory_mappings() - before;
    assert!(
        on_fresh >= 2 * PREPARED - 4,
        "{PREPARED} activations on fresh slots added only {on_fresh} mappings"
    );
    assert_eq!(host.active_count(), 2 * PREPARED + 1);
    // Slots are prepared once per version: none after the crowd.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(counter.slots_prepared(), PREPARED);
    activating.block_on(host.shutdown());
}
