//! Instances made ahead of their activations: an activation that takes one
//! runs as its own actor (its key, its state, its memory), at the limit of
//! activations they give their slots to actors that need them, and a
//! deploy drops the replaced version's. Slots are prepared only while the
//! host is idle.

mod common;

use std::time::Duration;

use common::{call, ok};
use grove_host::state::StateStore;
use grove_host::{DeployOptions, Host, HostConfig};

fn host_of(plugins: &[&str], config: HostConfig, state: StateStore) -> Host {
    let host = Host::new(config, state).unwrap();
    for name in plugins {
        host.load_plugin(&common::plugin(name)).unwrap();
    }
    host
}

/// The value of `name` for `actor_type` in the host's metrics.
fn metric(host: &Host, name: &str, actor_type: &str) -> f64 {
    let series = format!("{name}{{actor_type=\"{actor_type}\"}} ");
    let text = host.metrics();
    let line = text
        .lines()
        .find(|line| line.starts_with(&series))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"));
    line[series.len()..].trim().parse().unwrap()
}

/// Waits until `actor_type` has `n` instances made ahead.
async fn made_ahead(host: &Host, actor_type: &str, n: usize) {
    common::eventually(
        &format!("{n} instances of {actor_type} are made ahead"),
        Duration::from_secs(10),
        || async { host.plugin(actor_type).unwrap().instances_made_ahead() == n },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actors_on_instances_made_ahead_are_themselves() {
    let mut config = common::config();
    config.limits.warm_activations = 4;
    let state = StateStore::memory();
    let host = host_of(&["probe", "counter"], config.clone(), state.clone());
    // The first activation of a type instantiates; it starts making four.
    assert_eq!(
        ok(&host, "probe/first", "relay", &["[]"]).await,
        r#"ok(["first"])"#
    );
    made_ahead(&host, "probe", 4).await;
    assert_eq!(metric(&host, "grove_instances_made_ahead", "probe"), 4.0);
    assert_eq!(ok(&host, "counter/first", "add", &["1"]).await, "1");
    made_ahead(&host, "counter", 4).await;

    // More activations than the pool holds, each taking an instance made
    // ahead while one is ready.
    for i in 0..12 {
        let probe = format!("probe/p{i}");
        assert_eq!(
            ok(&host, &probe, "relay", &["[]"]).await,
            format!(r#"ok(["p{i}"])"#),
            "{probe} answers with its own key"
        );
        ok(&host, &probe, "remember", &[&format!(r#""note {i}""#)]).await;
        let counter = format!("counter/c{i}");
        assert_eq!(
            ok(&host, &counter, "add", &[&i.to_string()]).await,
            i.to_string()
        );
    }
    // Every activation found an instance made ahead while the pool had one:
    // at least the four ready before the first of them.
    for actor_type in ["probe", "counter"] {
        let made_ahead = metric(&host, "grove_activations_made_ahead_total", actor_type);
        assert!(made_ahead >= 4.0, "{actor_type}: {made_ahead}");
    }
    // Each kept its own memory.
    for i in 0..12 {
        let probe = format!("probe/p{i}");
        assert_eq!(
            ok(&host, &probe, "recall", &[]).await,
            format!(r#"some("note {i}")"#)
        );
    }
    // And wrote its state under its own key: a host started afresh on the
    // same store reads each counter's value back.
    host.shutdown().await;
    let again = host_of(&["counter"], config, state);
    for i in 0..12 {
        assert_eq!(
            ok(&again, &format!("counter/c{i}"), "get", &[]).await,
            i.to_string()
        );
    }
    assert_eq!(ok(&again, "counter/first", "get", &[]).await, "1");
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_made_ahead_give_their_slots_to_actors_at_the_limit() {
    let mut config = common::config();
    config.limits.max_activations = 3;
    config.limits.warm_activations = 4;
    let host = host_of(&["counter", "probe"], config, StateStore::memory());
    assert_eq!(ok(&host, "counter/a", "add", &["1"]).await, "1");
    // The two slots left hold counters made ahead.
    made_ahead(&host, "counter", 2).await;
    // A probe needs a slot of its own: the counters made ahead give theirs.
    assert_eq!(ok(&host, "probe/a", "relay", &["[]"]).await, r#"ok(["a"])"#);
    assert_eq!(ok(&host, "probe/b", "relay", &["[]"]).await, r#"ok(["b"])"#);
    assert_eq!(host.active_count(), 3);
    // Three actors are live: a fourth finds no slot, instances made ahead
    // or not.
    let refused = call(&host, "probe/c", "relay", &["[]"]).await.unwrap_err();
    assert!(refused.contains("limit of 3"), "{refused}");
    assert_eq!(ok(&host, "counter/a", "get", &[]).await, "1");
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_drops_the_replaced_versions_instances_made_ahead() {
    let mut config = common::config();
    config.limits.warm_activations = 4;
    let host = host_of(&["counter"], config, StateStore::memory());
    assert_eq!(ok(&host, "counter/a", "add", &["2"]).await, "2");
    made_ahead(&host, "counter", 4).await;
    let replaced = host.plugin("counter").unwrap();

    let file = common::plugin("counter_next");
    let bytes = std::fs::read(&file).unwrap();
    host.deploy(&file, &bytes, &DeployOptions::default())
        .unwrap();
    assert_eq!(replaced.instances_made_ahead(), 0);
    // New activations run the new version, and make its instances ahead.
    for key in ["b", "c", "d", "e", "f"] {
        let counter = format!("counter/{key}");
        assert_eq!(ok(&host, &counter, "version", &[]).await, r#""next""#);
    }
    made_ahead(&host, "counter", 4).await;
    // The actor that ran the version before moves to the new one with its
    // state; the replaced version made nothing more ahead meanwhile.
    common::eventually(
        "counter/a runs the new version",
        Duration::from_secs(10),
        || async { call(&host, "counter/a", "version", &[]).await.as_deref() == Ok(r#""next""#) },
    )
    .await;
    assert_eq!(ok(&host, "counter/a", "get", &[]).await, "2");
    assert_eq!(replaced.instances_made_ahead(), 0);
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_a_rollback_brings_back_has_instances_made_ahead_again() {
    let mut config = common::config();
    config.limits.warm_activations = 4;
    let host = host_of(&["counter"], config, StateStore::memory());
    assert_eq!(ok(&host, "counter/a", "add", &["2"]).await, "2");
    made_ahead(&host, "counter", 4).await;
    let running = host.plugin("counter").unwrap();

    // A version whose `on-activate` fails is rolled back at its first
    // activation; the call goes to the version before.
    let file = common::plugin("counter_unstartable");
    let bytes = std::fs::read(&file).unwrap();
    let deployed = host
        .deploy(&file, &bytes, &DeployOptions::default())
        .unwrap();
    assert_eq!(ok(&host, "counter/b", "add", &["3"]).await, "3");
    let settled = host.settle(&deployed, Duration::from_secs(10)).await;
    assert!(
        matches!(settled, grove_host::Settled::RolledBack { .. }),
        "{settled:?}"
    );
    assert!(std::sync::Arc::ptr_eq(
        &host.plugin("counter").unwrap(),
        &running
    ));
    // The version before makes instances ahead again.
    ok(&host, "counter/c", "get", &[]).await;
    made_ahead(&host, "counter", 4).await;
    host.shutdown().await;
}

/// Pages are learned from `/proc/self/pagemap`: on Linux only.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_made_ahead_have_the_pages_a_first_turn_writes_written_and_start_clean() {
    let mut config = common::config();
    config.limits.warm_activations = 4;
    let host = host_of(&["probe"], config, StateStore::memory());
    let probe = host.plugin("probe").unwrap();
    assert_eq!(
        probe.pages_written_ahead(),
        0,
        "nothing learned before a turn"
    );
    // The first activation's first turns show which pages they write.
    ok(&host, "probe/first", "remember", &[r#""the first""#]).await;
    common::eventually(
        "the pages of the first turns are learned",
        Duration::from_secs(10),
        || async { probe.pages_written_ahead() > 0 },
    )
    .await;
    let pages = probe.pages_written_ahead();
    assert!((1..=64).contains(&pages), "{pages} pages");
    // Instances made from now on have those pages written ahead: use up
    // the ones made before, and wait for the pool to fill again.
    made_ahead(&host, "probe", 4).await;
    for i in 0..4 {
        ok(&host, &format!("probe/used-{i}"), "recall", &[]).await;
    }
    made_ahead(&host, "probe", 4).await;

    // Actors on them start from the plugin's initial memory, as on a
    // fresh instance, and keep their own.
    for i in 0..4 {
        let actor = format!("probe/p{i}");
        assert_eq!(ok(&host, &actor, "recall", &[]).await, "none");
        assert_eq!(ok(&host, &actor, "lifecycle-counts", &[]).await, "(1, 0)");
        ok(&host, &actor, "remember", &[&format!(r#""note {i}""#)]).await;
    }
    for i in 0..4 {
        assert_eq!(
            ok(&host, &format!("probe/p{i}"), "recall", &[]).await,
            format!(r#"some("note {i}")"#)
        );
    }
    assert_eq!(
        ok(&host, "probe/first", "recall", &[]).await,
        r#"some("the first")"#
    );
    let made_ahead = metric(&host, "grove_activations_made_ahead_total", "probe");
    assert!(made_ahead >= 8.0, "{made_ahead}");
    host.shutdown().await;
}

/// The task topping a pool up waits a millisecond before it makes an
/// instance, so that the activation that drew on the pool runs its first
/// turns alone; an activation that takes the last instance ready starts it
/// at once. The clock is tokio's paused one: it moves only when told to or
/// when every task waits, so the wait cannot end early by chance.
#[tokio::test(start_paused = true)]
async fn topping_up_waits_for_the_activation_unless_the_pool_runs_dry() {
    let mut config = common::config();
    config.limits.warm_activations = 2;
    let host = host_of(&["counter"], config, StateStore::memory());
    let ready = || host.plugin("counter").unwrap().instances_made_ahead();

    assert_eq!(ok(&host, "counter/first", "get", &[]).await, "0");
    made_ahead(&host, "counter", 2).await;

    // One taken, one left: nothing is made while the activation runs on,
    // nor half a millisecond later.
    assert_eq!(ok(&host, "counter/a", "get", &[]).await, "0");
    assert_eq!(ready(), 1, "an instance was made during the activation");
    tokio::time::advance(Duration::from_micros(500)).await;
    let_every_task_run().await;
    assert_eq!(ready(), 1, "an instance was made within the wait");
    made_ahead(&host, "counter", 2).await;

    // Two taken back to back: the second empties the pool, and the task
    // the first started stops waiting, with the clock standing still.
    assert_eq!(ok(&host, "counter/b", "get", &[]).await, "0");
    assert_eq!(ok(&host, "counter/c", "get", &[]).await, "0");
    let_every_task_run().await;
    assert_eq!(ready(), 2, "the pool ran dry and was not topped up at once");
    host.shutdown().await;
}

/// Lets every task that can run do so, without moving the paused clock:
/// the test's own task stays ready, so the runtime never idles.
async fn let_every_task_run() {
    for _ in 0..1_000 {
        tokio::task::yield_now().await;
    }
}

/// Slots are prepared only while the host is idle: not while activations
/// keep starting, and once they stop, all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_are_prepared_once_activations_stop_starting() {
    const PREPARED: usize = 200;
    let mut config = common::config();
    config.limits.prepared_slots = PREPARED as u32;
    config.limits.warm_activations = 0;
    let host = host_of(&["counter"], config, StateStore::memory());
    let counter = host.plugin("counter").unwrap();
    assert_eq!(ok(&host, "counter/first", "get", &[]).await, "0");

    // A login every millisecond for half a second: never idle for the
    // 10 ms preparing waits for.
    for i in 0..500 {
        assert_eq!(
            ok(&host, &format!("counter/login-{i}"), "get", &[]).await,
            "0"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        counter.slots_prepared() < PREPARED,
        "{} slots prepared while activations kept starting",
        counter.slots_prepared()
    );

    common::eventually(
        &format!("{PREPARED} slots prepared once the host is idle"),
        Duration::from_secs(30),
        || async { counter.slots_prepared() == PREPARED },
    )
    .await;
    assert_eq!(
        metric(&host, "grove_slots_prepared", "counter"),
        PREPARED as f64
    );
}
