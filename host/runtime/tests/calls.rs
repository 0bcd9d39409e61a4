//! Typed calls between actors through proxies: results and errors as WIT
//! values, call cycles, deadlines, timeouts and one-way sends.

mod common;

use std::time::{Duration, Instant};

use common::ok;
use grove_host::limits::{LimitRule, Limits};
use grove_host::state::StateStore;
use grove_host::{ActorRef, Host, HostConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_actor_calls_another_with_typed_values() {
    let host = common::host_of(&["player"]);
    ok(
        &host,
        "player/ayla",
        "create",
        &[r#""Ayla""#, "warrior", "3"],
    )
    .await;
    ok(&host, "player/bren", "create", &[r#""Bren""#, "mage", "5"]).await;
    ok(&host, "player/bren", "give", &[r#"["staff", "cloak"]"#]).await;

    // A variant carrying a record goes in; a result holding a record with an
    // enum, options and a list comes back.
    let after = ok(
        &host,
        "player/ayla",
        "attack",
        &[r#""bren""#, r#"spell({name: "fireball", power: 40})"#],
    )
    .await;
    assert_eq!(
        after,
        r#"ok({name: "Bren", class: mage, level: 5, hp: 130, items: ["staff", "cloak"]})"#
    );
    let after = ok(&host, "player/bren", "attack", &[r#""ayla""#, "melee(200)"]).await;
    assert!(after.contains("hp: -70"), "{after}");

    // The callee's own error type arrives intact, nested in the caller's.
    let refused = ok(&host, "player/bren", "attack", &[r#""ayla""#, "miss"]).await;
    assert_eq!(refused, r#"err(refused(defeated("Ayla")))"#);
    let refused = ok(&host, "player/ayla", "attack", &[r#""nobody""#, "miss"]).await;
    assert_eq!(refused, "err(refused(unknown))");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cycle_fails_at_once_with_reentrancy() {
    let host = common::host_of(&["probe"]);
    // A chain without a cycle goes through.
    assert_eq!(
        ok(&host, "probe/a", "relay", &[r#"["b", "c"]"#]).await,
        r#"ok(["a", "b", "c"])"#
    );
    // a → b → a: the call into a fails at b, and a's own call returns that.
    let started = Instant::now();
    let answer = ok(&host, "probe/a", "relay", &[r#"["b", "a"]"#]).await;
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "took {:?}",
        started.elapsed()
    );
    assert!(answer.starts_with("err(reentrancy("), "{answer}");
    assert!(answer.contains("probe/a -> probe/b -> probe/a"), "{answer}");
    // A longer cycle, and an actor calling itself.
    let answer = ok(&host, "probe/a", "relay", &[r#"["b", "c", "d", "b"]"#]).await;
    assert!(
        answer.contains("probe/a -> probe/b -> probe/c -> probe/d -> probe/b"),
        "{answer}"
    );
    let answer = ok(&host, "probe/a", "relay", &[r#"["a"]"#]).await;
    assert!(answer.starts_with("err(reentrancy("), "{answer}");
    // Every actor on the cycle is still answering.
    for key in ["a", "b", "c", "d"] {
        ok(&host, &format!("probe/{key}"), "relay", &["[]"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_callee_reaches_the_caller_as_an_error_value() {
    let mut config = common::config();
    config.limits.actor.turn_deadline = Duration::from_millis(400);
    let host = Host::new(config, StateStore::memory()).unwrap();
    for name in ["probe", "counter"] {
        host.load_plugin(&common::plugin(name)).unwrap();
    }
    // The caller keeps something in memory: it must survive every failure of
    // its callee, which shows its own activation never trapped.
    ok(&host, "probe/caller", "remember", &[r#""still here""#]).await;

    let trapped = ok(
        &host,
        "probe/caller",
        "provoke",
        &[r#""victim""#, "trap", "none"],
    )
    .await;
    assert!(trapped.starts_with("err(trapped("), "{trapped}");
    assert!(
        trapped.contains("provoked"),
        "the callee's panic message: {trapped}"
    );

    let overran = ok(
        &host,
        "probe/caller",
        "provoke",
        &[r#""victim""#, "spin", "none"],
    )
    .await;
    assert!(overran.starts_with("err(deadline-exceeded("), "{overran}");

    let hog = ok(
        &host,
        "probe/caller",
        "provoke",
        &[r#""victim""#, "hog", "none"],
    )
    .await;
    assert!(hog.starts_with("err(out-of-memory("), "{hog}");

    // The caller's own timeout: it gives up long before the callee's deadline.
    let started = Instant::now();
    let timed_out = ok(
        &host,
        "probe/caller",
        "provoke",
        &[r#""victim""#, "spin", "some(50)"],
    )
    .await;
    assert!(timed_out.starts_with("err(timeout("), "{timed_out}");
    assert!(
        started.elapsed() < Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );

    let missing = ok(&host, "probe/caller", "double-counter", &[r#""7""#]).await;
    assert!(missing.starts_with("err(unknown-function("), "{missing}");
    assert!(missing.contains("double"), "{missing}");

    assert_eq!(
        ok(
            &host,
            "probe/caller",
            "provoke",
            &[r#""victim""#, "behave", "none"]
        )
        .await,
        r#"ok("ok")"#
    );
    assert_eq!(
        ok(&host, "probe/caller", "recall", &[]).await,
        r#"some("still here")"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_an_actor_type_nobody_provides_is_an_error_value() {
    let host = common::host_of(&["player"]);
    ok(&host, "player/ayla", "create", &[r#""Ayla""#, "rogue", "1"]).await;
    let answer = ok(&host, "player/ayla", "join-guild", &[r#""oak""#, "none"]).await;
    assert!(answer.contains("UnknownActorType"), "{answer}");
    assert!(answer.contains("guild"), "{answer}");
}

/// `start-f` and `pending-f.wait`: calls started one after another run at
/// the same time on their callees, and each answer comes back to its own
/// handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_calls_run_at_the_same_time_and_answer_their_own_handles() {
    let host = common::host_of(&["probe"]);
    let targets: Vec<String> = (0..8).map(|n| format!("sleeper-{n}")).collect();
    let list = format!(
        "[{}]",
        targets
            .iter()
            .map(|t| format!("{t:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Each callee naps 400 ms inside its turn: one after another, eight
    // would take 3.2 s.
    let started = Instant::now();
    let answer = ok(&host, "probe/gatherer", "gather", &[&list, "400"]).await;
    let took = started.elapsed();
    assert_eq!(answer, format!("ok({list})"));
    assert!(took >= Duration::from_millis(400), "took {took:?}");
    assert!(
        took < Duration::from_millis(1600),
        "eight started calls of 400 ms took {took:?}: they did not run at the same time"
    );

    // A call started into the caller itself is a cycle: refused at once,
    // before any handle exists.
    let answer = ok(
        &host,
        "probe/gatherer",
        "gather",
        &[r#"["sleeper-0", "gatherer"]"#, "0"],
    )
    .await;
    assert!(answer.starts_with("err(reentrancy("), "{answer}");
    assert!(
        answer.contains("probe/gatherer -> probe/gatherer"),
        "{answer}"
    );

    // `wait` takes the answer: a second one traps the caller's turn.
    let answer = common::call(&host, "probe/gatherer", "wait-twice", &[r#""sleeper-0""#])
        .await
        .unwrap_err();
    assert!(answer.starts_with("trapped"), "{answer}");
    assert!(answer.contains("an earlier `wait` took"), "{answer}");

    // One sender's started calls to one actor run in the order started,
    // whatever the order of the waits.
    ok(
        &host,
        "probe/scatterer",
        "scatter-notes",
        &[r#""collector""#, "0", "50"],
    )
    .await;
    let expected: Vec<String> = (0..50).map(|n| n.to_string()).collect();
    let expected = format!("[{}]", expected.join(", "));
    assert_eq!(ok(&host, "probe/collector", "notes", &[]).await, expected);
}

/// A started call past the activation's limit of handles ends the turn
/// before its message leaves: the callee never hears of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_call_past_the_handle_limit_is_never_sent() {
    let mut limits: Limits = common::config().limits;
    limits.apply(&["probe.proxies=4".parse::<LimitRule>().unwrap()]);
    let host = Host::new(
        HostConfig {
            limits,
            ..common::config()
        },
        StateStore::memory(),
    )
    .unwrap();
    host.load_plugin(&common::plugin("probe")).unwrap();
    // `gather` holds each pending call and, while starting one, its
    // actor's handle: the fourth target's start is the fifth handle.
    let error = common::call(
        &host,
        "probe/gatherer",
        "gather",
        &[r#"["a", "b", "c", "d"]"#, "0"],
    )
    .await
    .unwrap_err();
    assert!(error.starts_with("limit-exceeded"), "{error}");
    assert!(
        error.contains("at most 4 proxy handles and pending calls"),
        "{error}"
    );
    // `c`'s call was sent, which activated it; `d`'s never left.
    assert!(host.is_active(&ActorRef::new("probe", "c")));
    assert!(!host.is_active(&ActorRef::new("probe", "d")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_sends_arrive_in_order_even_across_deactivations() {
    let host = common::host_of(&["probe"]);
    // Every 7th note makes the receiver deactivate, so later notes race with
    // its deactivation and are handed to its next activation.
    ok(
        &host,
        "probe/sender",
        "post-notes",
        &[r#""receiver""#, "0", "300", "7"],
    )
    .await;
    ok(
        &host,
        "probe/sender",
        "post-notes",
        &[r#""receiver""#, "300", "100", "0"],
    )
    .await;
    let expected: Vec<String> = (0..400).map(|n| n.to_string()).collect();
    let expected = format!("[{}]", expected.join(", "));
    let started = Instant::now();
    let notes = loop {
        let notes = ok(&host, "probe/receiver", "notes", &[]).await;
        if notes.matches(',').count() >= 399 || started.elapsed() > Duration::from_secs(20) {
            break notes;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(notes, expected);
    let counts = ok(&host, "probe/receiver", "lifecycle-counts", &[]).await;
    let activations: u32 = counts
        .trim_start_matches('(')
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        activations > 40,
        "the receiver was activated {activations} times"
    );
}

/// `list<u8>` has a fast path through wasmtime and the host: bytes must
/// still arrive exactly, at every length, in both directions and through two
/// actors, and a byte list holding something else is refused by index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_lists_cross_actors_intact_at_every_length() {
    use grove_host::{ActorRef, CallError};
    use wasmtime::component::Val;

    let host = common::host_of(&["probe"]);
    let bytes = |list: &[u8]| Val::List(list.iter().map(|b| Val::U8(*b)).collect());
    for len in [0usize, 1, 7, 4096, 65_537, 1 << 19] {
        let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let mut reversed = payload.clone();
        reversed.reverse();
        let answer = host
            .call(
                &ActorRef::new("probe", "front"),
                "bounce-bytes",
                vec![Val::String("back".into()), bytes(&payload)],
            )
            .await
            .unwrap();
        assert_eq!(
            answer,
            Some(Val::Result(Ok(Some(Box::new(bytes(&reversed)))))),
            "{len} bytes"
        );
    }

    let mut wrong: Vec<Val> = vec![Val::U8(1); 5];
    wrong[3] = Val::U32(300);
    let refused = host
        .call(
            &ActorRef::new("probe", "back"),
            "take-bytes",
            vec![Val::List(wrong)],
        )
        .await
        .unwrap_err();
    let CallError::Rejected(rejected) = &refused else {
        panic!("{refused:?}")
    };
    assert_eq!(refused.kind(), "bad-arguments", "{rejected}");
    assert!(
        refused
            .to_string()
            .contains("argument `payload`: [3]: expected u8"),
        "{refused}"
    );
}
