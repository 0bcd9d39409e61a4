//! Durable reminders: they outlive deactivation and host restarts, activate
//! their actor, repeat on their period, and stop when cancelled.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::ok;
use common::redis::RedisServer;
use grove_host::state::StateStore;
use grove_host::Host;

fn firings(wave: &str) -> Vec<u64> {
    let inner = wave.trim_start_matches('[').trim_end_matches(']');
    inner
        .split(", ")
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

async fn wait_for_firings(host: &Host, actor: &str, name: &str, n: usize) -> Vec<u64> {
    let start = Instant::now();
    loop {
        let got = firings(&ok(host, actor, "reminders", &[&format!("{name:?}")]).await);
        if got.len() >= n {
            return got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name} fired {} times, not {n}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn open_embedded(path: &Path) -> StateStore {
    // The previous host's store closes as its last handle goes.
    let start = Instant::now();
    loop {
        match StateStore::open_embedded(path) {
            Ok(store) => return store,
            Err(e) if start.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e:#}"),
        }
    }
}

/// Sets a reminder, stops the host before it is due, starts a new host on
/// the same store: the reminder fires there, activating its actor.
async fn a_reminder_fires_after_a_restart(first: StateStore, second: impl FnOnce() -> StateStore) {
    let host = common::host_with(common::config(), first);
    let set_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(
        ok(
            &host,
            "probe/sleeper",
            "start-reminder",
            &[r#""wake""#, "1500", "none"]
        )
        .await,
        "ok"
    );
    host.shutdown().await;
    drop(host);

    let host = common::host_with(common::config(), second());
    assert_eq!(host.start_reminders().await.unwrap(), 1);
    assert!(!host.is_active(&"probe/sleeper".parse().unwrap()));
    let fired = wait_for_firings(&host, "probe/sleeper", "wake", 1).await;
    assert!(
        fired[0] >= set_at + 1500,
        "fired at {} for a reminder due at {}",
        fired[0],
        set_at + 1500
    );
    // A one-shot reminder is gone once it has fired.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        firings(&ok(&host, "probe/sleeper", "reminders", &[r#""wake""#]).await).len(),
        1
    );
    assert_eq!(
        ok(&host, "probe/sleeper", "cancel-reminder", &[r#""wake""#]).await,
        "ok(false)"
    );
    host.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_fires_after_a_host_restart_with_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    a_reminder_fires_after_a_restart(open_embedded(&path), || open_embedded(&path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_fires_after_a_host_restart_with_redis() {
    let redis = RedisServer::start();
    let first = StateStore::connect_redis(&redis.url()).await.unwrap();
    let second = StateStore::connect_redis(&redis.url()).await.unwrap();
    a_reminder_fires_after_a_restart(first, || second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_reminders_wake_a_deactivated_actor_until_cancelled() {
    let host = common::host();
    host.start_reminders().await.unwrap();
    let actor = "probe/periodic";
    assert_eq!(
        ok(
            &host,
            actor,
            "start-reminder",
            &[r#""tick""#, "200", "some(200)"]
        )
        .await,
        "ok"
    );
    // The actor leaves; the reminder brings it back.
    ok(&host, actor, "retire", &[]).await;
    let fired = wait_for_firings(&host, actor, "tick", 3).await;
    for pair in fired.windows(2) {
        let gap = pair[1] - pair[0];
        assert!((100..=400).contains(&gap), "firings {fired:?}");
    }
    assert_eq!(
        ok(&host, actor, "cancel-reminder", &[r#""tick""#]).await,
        "ok(true)"
    );
    let after_cancel = firings(&ok(&host, actor, "reminders", &[r#""tick""#]).await).len();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let later = firings(&ok(&host, actor, "reminders", &[r#""tick""#]).await).len();
    assert!(
        later <= after_cancel + 1,
        "{after_cancel} firings at cancel, {later} after"
    );
    // Too short a period is refused.
    let refused = ok(
        &host,
        actor,
        "start-reminder",
        &[r#""fast""#, "0", "some(10)"],
    )
    .await;
    assert!(refused.contains("too short"), "{refused}");
}
