//! The state contract, run against every backend: in memory, embedded (redb)
//! and a real redis-server. Then what a Redis user sees: the documented key
//! layout, and a Redis outage under load.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::redis::RedisServer;
use grove_host::state::quota::Quota;
use grove_host::state::{Guards, RowKey, StateError, StateStore, MAX_KEY_BYTES, MAX_VALUE_BYTES};
use grove_host::ActorRef;
use wasmtime::component::Val;

fn key<'a>(table: &'a str, key1: &'a str, key2: Option<&'a str>) -> RowKey<'a> {
    RowKey {
        namespace: "player",
        table,
        key1,
        key2,
    }
}

/// The contract every backend keeps.
async fn contract(store: StateStore) {
    assert_eq!(store.get(key("inv", "42", None)).await.unwrap(), None);
    for (k1, k2, v) in [
        ("42", Some("sword"), "1"),
        ("42", None, "meta"),
        ("42", Some("axe"), "2"),
        ("42", Some(""), "empty key2"),
        ("420", Some("other"), "x"),
        ("4", Some("2"), "y"),
        ("42", Some("sword"), "3"),
    ] {
        store
            .put(key("inv", k1, k2), v.as_bytes().to_vec())
            .await
            .unwrap();
    }
    assert_eq!(
        store.get(key("inv", "42", Some("sword"))).await.unwrap(),
        Some(b"3".to_vec())
    );
    // The row without a key2 and the row with an empty key2 are different rows.
    assert_eq!(
        store.get(key("inv", "42", None)).await.unwrap(),
        Some(b"meta".to_vec())
    );
    assert_eq!(
        store.get(key("inv", "42", Some(""))).await.unwrap(),
        Some(b"empty key2".to_vec())
    );
    let rows = store.list("player", "inv", "42").await.unwrap();
    let keys: Vec<_> = rows.iter().map(|r| r.key2.clone()).collect();
    assert_eq!(
        keys,
        vec![
            None,
            Some("".into()),
            Some("axe".into()),
            Some("sword".into())
        ]
    );
    assert_eq!(rows[0].value, b"meta");

    // Another actor type's table of the same name is a different table.
    let other = RowKey {
        namespace: "guild",
        ..key("inv", "42", None)
    };
    assert_eq!(store.get(other).await.unwrap(), None);
    // Keys with characters that mean something to a backend are just keys.
    let odd = key("inv", "a{b}%/c", Some("\\x"));
    store.put(odd, b"odd".to_vec()).await.unwrap();
    assert_eq!(store.get(odd).await.unwrap(), Some(b"odd".to_vec()));
    assert_eq!(
        store.list("player", "inv", "a{b}%/c").await.unwrap()[0]
            .key2
            .as_deref(),
        Some("\\x")
    );

    assert!(store.delete(key("inv", "42", Some("axe"))).await.unwrap());
    assert!(!store.delete(key("inv", "42", Some("axe"))).await.unwrap());
    assert_eq!(store.list("player", "inv", "42").await.unwrap().len(), 3);

    let big = vec![0u8; MAX_VALUE_BYTES + 1];
    assert!(matches!(
        store.put(key("inv", "42", None), big).await,
        Err(StateError::TooLarge(_))
    ));
    let long = "k".repeat(MAX_KEY_BYTES + 1);
    assert!(matches!(
        store.get(key("inv", &long, None)).await,
        Err(StateError::TooLarge(_))
    ));
    // The rejected write changed nothing.
    assert_eq!(
        store.get(key("inv", "42", None)).await.unwrap(),
        Some(b"meta".to_vec())
    );

    // Many writes at once are all acknowledged and all there.
    let mut writes = Vec::new();
    for i in 0..500 {
        let store = store.clone();
        writes.push(tokio::spawn(async move {
            let k2 = i.to_string();
            store
                .put(key("bulk", "1", Some(&k2)), k2.clone().into_bytes())
                .await
        }));
    }
    for w in writes {
        w.await.unwrap().unwrap();
    }
    assert_eq!(store.list("player", "bulk", "1").await.unwrap().len(), 500);

    // A write whose caller stopped waiting (a turn cut off mid-write) still
    // lands, and `settle` waits for it: a successor reading after `settle`
    // sees it.
    for i in 0..50 {
        let k2 = format!("orphan-{i}");
        let put = store.put(key("bulk", "2", Some(&k2)), b"late".to_vec());
        tokio::select! {
            biased;
            _ = put => {}
            () = std::future::ready(()) => {}
        }
    }
    store.settle().await.unwrap();
    assert_eq!(store.list("player", "bulk", "2").await.unwrap().len(), 50);

    quota_contract(&store).await;
}

/// A quota counts the rows and bytes its holder writes, under any key, and
/// refuses growth past it, storing nothing.
async fn quota_contract(store: &StateStore) {
    let quota = Quota {
        holder: ActorRef::new("player", "9"),
        max_rows: 3,
        max_bytes: 100,
    };
    let guards = Guards {
        fence: None,
        quota: Some(&quota),
    };
    let put = |k1: &'static str, k2: &'static str, len: usize| {
        store.put_guarded(key("q", k1, Some(k2)), vec![b'x'; len], guards)
    };
    put("9", "a", 40).await.unwrap();
    // Rows under another key count against the writer too.
    put("other", "b", 40).await.unwrap();
    let refused = put("9", "c", 30).await.unwrap_err();
    assert!(matches!(refused, StateError::QuotaExceeded(_)), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("player/9 may keep at most 3 rows and 100 bytes"),
        "{refused}"
    );
    assert_eq!(
        store.get(key("q", "9", Some("c"))).await.unwrap(),
        None,
        "nothing stored"
    );
    // Replacing a row counts the difference.
    put("9", "a", 10).await.unwrap();
    put("9", "c", 30).await.unwrap();
    // Four rows are past the row count, whatever their size.
    let refused = put("9", "d", 1).await.unwrap_err();
    assert!(matches!(refused, StateError::QuotaExceeded(_)), "{refused}");
    // A delete frees its row and bytes.
    assert!(store
        .delete_guarded(key("q", "other", Some("b")), guards)
        .await
        .unwrap());
    put("9", "d", 60).await.unwrap();
    // Writes without the quota (another actor's) are not counted or refused.
    store
        .put(key("q", "9", Some("e")), vec![0; 500])
        .await
        .unwrap();
    assert!(store
        .delete_guarded(key("q", "9", Some("a")), guards)
        .await
        .unwrap());
    put("9", "f", 10).await.unwrap();
    // Writes queued together are counted in order.
    let (g, h) = tokio::join!(put("9", "g", 1), put("9", "h", 1));
    assert!(
        matches!(
            (&g, &h),
            (
                Err(StateError::QuotaExceeded(_)),
                Err(StateError::QuotaExceeded(_))
            )
        ),
        "{g:?} {h:?}"
    );
    assert!(store
        .delete_guarded(key("q", "9", Some("c")), guards)
        .await
        .unwrap());
    let (g, h) = tokio::join!(put("9", "g", 10), put("9", "h", 1));
    assert_eq!(
        [g.is_ok(), h.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "one more row fits: {g:?} {h:?}"
    );
}

#[tokio::test]
async fn memory_backend_keeps_the_contract() {
    contract(StateStore::memory()).await;
}

#[tokio::test]
async fn embedded_backend_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    contract(StateStore::open_embedded(&dir.path().join("state.redb")).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend_keeps_the_contract() {
    let redis = RedisServer::start();
    contract(StateStore::connect_redis(&redis.url()).await.unwrap()).await;
}

#[tokio::test]
async fn embedded_backend_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    {
        let store = StateStore::open_embedded(&path).unwrap();
        store
            .put(key("t", "k", None), b"kept".to_vec())
            .await
            .unwrap();
    }
    let store = StateStore::open_embedded(&path).unwrap();
    assert_eq!(
        store.get(key("t", "k", None)).await.unwrap(),
        Some(b"kept".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actor_state_lands_in_redis_in_the_documented_layout() {
    let redis = RedisServer::start();
    let state = StateStore::connect_redis(&redis.url()).await.unwrap();
    let host = common::host_with(common::config(), state.clone());
    common::ok(&host, "counter/7", "add", &["5"]).await;
    // One hash per (table, key1), hash-tagged by actor type and key1; the
    // counter keeps its value in the row without a key2 (field "").
    assert_eq!(
        redis.cli(&["HGET", "grove:{counter/7}:counter", ""]).trim(),
        "5"
    );
    assert_eq!(
        redis.cli(&["CLUSTER", "KEYSLOT", "grove:{counter/7}:counter"]),
        redis.cli(&["CLUSTER", "KEYSLOT", "grove:{counter/7}:other-table"])
    );
    host.shutdown().await;
    // A new host on the same Redis sees the state.
    let host = common::host_with(common::config(), state);
    assert_eq!(common::ok(&host, "counter/7", "get", &[]).await, "5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_loses_no_acknowledged_write_and_heals_by_itself() {
    let mut redis = RedisServer::start();
    let state = StateStore::connect_redis(&redis.url()).await.unwrap();
    let host = common::host_with(common::config(), state.clone());
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let kinds = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // 8 counters, each added to by its own loop of calls.
    let mut loops = Vec::new();
    for i in 0..8 {
        let (host, acked, failed, kinds, stop) = (
            host.clone(),
            acked.clone(),
            failed.clone(),
            kinds.clone(),
            stop.clone(),
        );
        loops.push(tokio::spawn(async move {
            let actor = ActorRef::new("counter", &i.to_string());
            let mut mine = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match host.call(&actor, "add", vec![Val::U64(1)]).await {
                    Ok(_) => {
                        mine += 1;
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        kinds.lock().unwrap().insert(e.kind().to_owned());
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            mine
        }));
    }
    // An actor that needs no state after activating.
    common::ok(&host, "probe/p", "relay", &["[]"]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.stop();
    let down_at = acked.load(Ordering::Relaxed);
    assert!(down_at > 0, "no write succeeded before the outage");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // While Redis is down, calls fail with a clear error and the host lives on.
    assert!(
        failed.load(Ordering::Relaxed) > 0,
        "no call failed during the outage"
    );
    let during = common::call(&host, "counter/outage-probe", "add", &["1"]).await;
    let during = during.unwrap_err();
    assert!(
        during.contains("state") && during.contains("redis"),
        "{during}"
    );
    assert_eq!(
        common::ok(&host, "probe/p", "relay", &["[]"]).await,
        r#"ok(["p"])"#
    );
    assert!(host.is_active(&"probe/p".parse().unwrap()));

    redis.restart();
    let healed = Instant::now();
    let before = acked.load(Ordering::Relaxed);
    while acked.load(Ordering::Relaxed) < before + 100 {
        assert!(
            healed.elapsed() < Duration::from_secs(15),
            "the host did not recover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut per_counter = Vec::new();
    for l in loops {
        per_counter.push(l.await.unwrap());
    }
    let kinds = kinds.lock().unwrap().clone();
    assert!(kinds.iter().all(|k| k == "state-unavailable"), "{kinds:?}");
    // Every acknowledged add is in Redis, read back by a fresh host.
    host.shutdown().await;
    let fresh = common::host_with(common::config(), state);
    for (i, mine) in per_counter.into_iter().enumerate() {
        let value: u64 = common::ok(&fresh, &format!("counter/{i}"), "get", &[])
            .await
            .parse()
            .unwrap();
        assert!(
            value >= mine,
            "counter/{i}: {value} stored, {mine} acknowledged"
        );
    }
}
