//! Virtual activation, idle deactivation, turns and timers, through the Rust API.

mod common;

use std::time::{Duration, Instant};

use grove_host::state::StateStore;
use grove_host::{ActorRef, HostConfig};
use wasmtime::component::Val;

fn probe(key: &str) -> ActorRef {
    ActorRef::new("probe", key)
}

async fn counts(host: &grove_host::Host, actor: &ActorRef) -> (u32, u32) {
    match host.call(actor, "lifecycle-counts", vec![]).await.unwrap() {
        Some(Val::Tuple(v)) => match v.as_slice() {
            [Val::U32(a), Val::U32(d)] => (*a, *d),
            other => panic!("unexpected counts {other:?}"),
        },
        other => panic!("unexpected counts {other:?}"),
    }
}

async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_call_activates_and_later_calls_reuse_the_activation() {
    let host = common::host();
    let actor = probe("reuse");
    assert!(!host.is_active(&actor));
    assert_eq!(counts(&host, &actor).await, (1, 0));
    assert!(host.is_active(&actor));
    host.call(&actor, "remember", vec![Val::String("in memory".into())])
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(counts(&host, &actor).await, (1, 0));
    }
    // Guest memory is the same instance's.
    let memo = host.call(&actor, "recall", vec![]).await.unwrap();
    assert_eq!(
        memo,
        Some(Val::Option(Some(Box::new(Val::String("in memory".into())))))
    );
    assert_eq!(host.active_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_are_deactivated_and_come_back_with_their_state() {
    let config = HostConfig {
        idle_timeout: Duration::from_millis(200),
        ..common::config()
    };
    let host = common::host_with(config, StateStore::memory());
    let actor = probe("idle");
    host.call(&actor, "remember", vec![Val::String("gone soon".into())])
        .await
        .unwrap();
    assert_eq!(counts(&host, &actor).await, (1, 0));
    wait_until(
        "the idle actor is deactivated",
        Duration::from_secs(5),
        || !host.is_active(&actor),
    )
    .await;
    // on-deactivate ran (it counts itself in state), state survived, and the
    // next call activated the actor again with fresh memory.
    assert_eq!(counts(&host, &actor).await, (2, 1));
    assert_eq!(
        host.call(&actor, "recall", vec![]).await.unwrap(),
        Some(Val::Option(None))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_can_ask_to_be_deactivated() {
    let host = common::host();
    let actor = probe("retire");
    host.call(&actor, "retire", vec![]).await.unwrap();
    wait_until("the actor is deactivated", Duration::from_secs(5), || {
        !host.is_active(&actor)
    })
    .await;
    assert_eq!(counts(&host, &actor).await, (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deactivates_every_actor() {
    let state = StateStore::memory();
    let host = common::host_with(common::config(), state.clone());
    for key in ["a", "b", "c"] {
        assert_eq!(counts(&host, &probe(key)).await, (1, 0));
    }
    host.shutdown().await;
    assert_eq!(host.active_count(), 0);
    let err = host
        .call(&probe("a"), "lifecycle-counts", vec![])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "shutting-down");

    let host = common::host_with(common::config(), state);
    for key in ["a", "b", "c"] {
        assert_eq!(counts(&host, &probe(key)).await, (2, 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_host_restart_with_the_embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let counter = ActorRef::new("counter", "7");
    {
        let host = common::host_with(common::config(), StateStore::open_embedded(&path).unwrap());
        host.call(&counter, "add", vec![Val::U64(5)]).await.unwrap();
        assert_eq!(
            host.call(&counter, "add", vec![Val::U64(5)]).await.unwrap(),
            Some(Val::U64(10))
        );
        host.shutdown().await;
    }
    // The previous host's writer releases the file once its last handle is gone.
    let start = Instant::now();
    let state = loop {
        match StateStore::open_embedded(&path) {
            Ok(s) => break s,
            Err(e) if start.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot reopen the state file: {e}"),
        }
    };
    let host = common::host_with(common::config(), state);
    assert_eq!(
        host.call(&counter, "get", vec![]).await.unwrap(),
        Some(Val::U64(10))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_to_one_actor_never_interleave() {
    let host = common::host();
    let actor = probe("turns");
    let calls = (0..200).map(|_| {
        let (host, actor) = (host.clone(), actor.clone());
        tokio::spawn(async move { host.call(&actor, "overlap-check", vec![]).await.unwrap() })
    });
    for call in calls.collect::<Vec<_>>() {
        // Each turn suspends inside the host (a state write) halfway through;
        // had another turn entered meanwhile, it would have counted an overlap.
        assert_eq!(call.await.unwrap(), Some(Val::U32(0)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_actor_does_not_hold_up_calls_to_others() {
    let host = common::host();
    let busy = {
        let host = host.clone();
        tokio::spawn(async move { host.call(&probe("busy"), "spin", vec![]).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    // While one actor burns its whole turn deadline, 100 others answer.
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move {
                host.call(
                    &ActorRef::new("counter", &format!("p{i}")),
                    "add",
                    vec![Val::U64(1)],
                )
                .await
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), Some(Val::U64(1)));
    }
    assert!(
        !busy.is_finished(),
        "the others should finish while the busy actor still runs"
    );
    assert_eq!(busy.await.unwrap().unwrap_err().kind(), "deadline-exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_is_lost_while_actors_keep_deactivating() {
    // An idle timeout shorter than the gaps between bursts makes calls race
    // with deactivation again and again.
    let config = HostConfig {
        idle_timeout: Duration::from_millis(5),
        ..common::config()
    };
    let host = common::host_with(config, StateStore::memory());
    let actors: Vec<_> = (0..4)
        .map(|i| ActorRef::new("counter", &format!("race{i}")))
        .collect();
    for _ in 0..30 {
        let burst: Vec<_> = actors
            .iter()
            .flat_map(|a| std::iter::repeat_n(a.clone(), 5))
            .map(|a| {
                let host = host.clone();
                tokio::spawn(async move { host.call(&a, "add", vec![Val::U64(1)]).await })
            })
            .collect();
        for call in burst {
            call.await.unwrap().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    for actor in &actors {
        assert_eq!(
            host.call(actor, "get", vec![]).await.unwrap(),
            Some(Val::U64(150))
        );
    }
}

async fn ticks(host: &grove_host::Host, actor: &ActorRef, name: &str) -> Vec<u64> {
    match host
        .call(actor, "ticks", vec![Val::String(name.into())])
        .await
        .unwrap()
    {
        Some(Val::List(v)) => v
            .into_iter()
            .map(|t| match t {
                Val::U64(t) => t,
                other => panic!("unexpected tick {other:?}"),
            })
            .collect(),
        other => panic!("unexpected ticks {other:?}"),
    }
}

async fn start_timer(
    host: &grove_host::Host,
    actor: &ActorRef,
    name: &str,
    due: u64,
    period: Option<u64>,
) {
    let period = Val::Option(period.map(|p| Box::new(Val::U64(p))));
    let args = vec![
        Val::String(name.into()),
        Val::U64(due),
        period,
        Val::Bool(true),
    ];
    host.call(actor, "start-timer", args).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_timers_tick_at_a_fixed_rate_without_drift() {
    let host = common::host();
    let actor = probe("periodic");
    let period = 40;
    start_timer(&host, &actor, "beat", period, Some(period)).await;
    tokio::time::sleep(Duration::from_millis(period * 25 + period / 2)).await;
    let beats = ticks(&host, &actor, "beat").await;
    assert!(
        beats.len() >= 20,
        "expected about 25 ticks, got {}",
        beats.len()
    );
    // Tick n is due at first + n * period: each tick stays near its slot on
    // the grid, however late earlier ones ran, so the error never accumulates.
    let first = beats[0];
    for (n, &t) in beats.iter().enumerate() {
        let slot = first + n as u64 * period;
        let late = t as i64 - slot as i64;
        assert!(
            (-30..=30).contains(&late),
            "tick {n} is {late} ms off its slot: {beats:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_timers_fire_once_and_cancelled_ones_never() {
    let host = common::host();
    let actor = probe("timers");
    start_timer(&host, &actor, "once", 30, None).await;
    start_timer(&host, &actor, "never", 60, Some(20)).await;
    let cancelled = host
        .call(&actor, "cancel-timer", vec![Val::String("never".into())])
        .await
        .unwrap();
    assert_eq!(cancelled, Some(Val::Bool(true)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ticks(&host, &actor, "once").await.len(), 1);
    assert!(ticks(&host, &actor, "never").await.is_empty());
    let again = host
        .call(&actor, "cancel-timer", vec![Val::String("never".into())])
        .await
        .unwrap();
    assert_eq!(again, Some(Val::Bool(false)));
}

/// Checks that a fresh probe `tenant-{round}` starts with nothing
/// remembered, then has it write to its memory (a memo, and `hog_mib` MiB
/// more) and deactivate; returns once it has.
async fn dirty_a_fresh_slot(host: &grove_host::Host, round: u32, hog_mib: u32) {
    let actor = probe(&format!("tenant-{round}"));
    assert_eq!(
        host.call(&actor, "recall", vec![]).await.unwrap(),
        Some(Val::Option(None)),
        "round {round} saw what an earlier activation wrote"
    );
    host.call(
        &actor,
        "remember",
        vec![Val::String(format!("round {round}"))],
    )
    .await
    .unwrap();
    host.call(&actor, "hog", vec![Val::U32(hog_mib)])
        .await
        .unwrap();
    host.call(&actor, "retire", vec![]).await.unwrap();
    wait_until("the probe is deactivated", Duration::from_secs(5), || {
        !host.is_active(&actor)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activation_in_a_slot_another_left_starts_from_the_plugin_s_initial_memory() {
    let host = common::host();
    for round in 0..20 {
        // Each actor takes the memory slot the one before it left.
        dirty_a_fresh_slot(&host, round, 2).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_taking_turns_in_the_same_memory_slots_each_start_from_their_own_image() {
    // One activation at a time, so three plugins share two memory slots and
    // each activation takes a slot another plugin's image was in.
    let mut config = common::config();
    config.limits.max_activations = 1;
    config.idle_timeout = Duration::from_millis(50);
    let host = grove_host::Host::new(config, StateStore::memory()).unwrap();
    for name in ["probe", "counter", "greeter"] {
        host.load_plugin(&common::plugin(name)).unwrap();
    }
    for round in 0..8 {
        dirty_a_fresh_slot(&host, round, 3).await;

        let counter = ActorRef::new("counter", &format!("c-{round}"));
        assert_eq!(
            host.call(&counter, "add", vec![Val::U64(5)]).await.unwrap(),
            Some(Val::U64(5))
        );
        wait_until("the counter is deactivated", Duration::from_secs(5), || {
            host.active_count() == 0
        })
        .await;

        let greeter = ActorRef::new("greeter", &format!("g-{round}"));
        let greeting = host
            .call(&greeter, "greet", vec![Val::String("ayla".into())])
            .await
            .unwrap();
        assert!(
            matches!(&greeting, Some(Val::Tuple(t)) if t.get(1) == Some(&Val::U32(1))),
            "round {round}: {greeting:?}"
        );
        wait_until("the greeter is deactivated", Duration::from_secs(5), || {
            host.active_count() == 0
        })
        .await;
    }
}
