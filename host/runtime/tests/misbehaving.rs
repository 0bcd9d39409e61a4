//! Plugins written to misbehave cannot wedge an actor, starve the others or
//! hold up shutdown: a flood of timers, a send to a full mailbox of one's
//! own, a turn that never stops writing state, a reminder that always traps.

mod common;

use std::time::{Duration, Instant};

use common::{call, ok};
use grove_host::limits::{ActorLimits, Limits};
use grove_host::state::{RowKey, StateStore};
use grove_host::HostConfig;

/// Runs `f` and fails the test, instead of hanging it, if it takes longer
/// than `limit`.
async fn within<T>(what: &str, limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {limit:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_one_millisecond_timers_do_not_starve_calls_idling_or_shutdown() {
    let config = HostConfig {
        idle_timeout: Duration::from_millis(1500),
        ..common::config()
    };
    let host = common::host_with(config, StateStore::memory());
    for key in ["flood-a", "flood-b"] {
        ok(
            &host,
            &format!("probe/{key}"),
            "flood-timers",
            &["1000", "1"],
        )
        .await;
    }
    // The first ticks may come after the next call: calls go first.
    common::eventually("the timers tick", Duration::from_secs(5), || async {
        ok(&host, "probe/flood-a", "flood-ticks", &[]).await != "0"
    })
    .await;
    // The flooded actors still answer, and so does everyone else.
    for _ in 0..5 {
        let ticks = within(
            "a call to a flooded actor",
            Duration::from_secs(5),
            ok(&host, "probe/flood-a", "flood-ticks", &[]),
        )
        .await;
        assert_ne!(ticks, "0", "the timers do tick");
        let started = Instant::now();
        within(
            "a call to a bystander",
            Duration::from_secs(5),
            ok(&host, "counter/bystander", "add", &["1"]),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ticks are not activity: the flooded actors are deactivated when idle.
    within("idle deactivation", Duration::from_secs(10), async {
        while host.is_active(&"probe/flood-a".parse().unwrap()) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    ok(&host, "probe/flood-b", "flood-timers", &["1000", "1"]).await;
    let aborted = within("shutdown", Duration::from_secs(10), host.shutdown()).await;
    assert_eq!(aborted, 0, "every activation left on its own");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_sending_to_itself_past_its_mailbox_gets_an_error_not_a_hang() {
    let host = common::host(); // mailboxes of 256
    let sent = within(
        "a burst of sends to oneself",
        Duration::from_secs(10),
        call(
            &host,
            "probe/narcissus",
            "post-notes",
            &[r#""narcissus""#, "0", "1000", "0"],
        ),
    )
    .await
    .unwrap();
    assert!(
        sent.contains("mailbox of probe/narcissus is full"),
        "{sent}"
    );
    // The actor goes on serving; what it queued before the mailbox filled runs.
    let notes = within(
        "a call after the burst",
        Duration::from_secs(10),
        ok(&host, "probe/narcissus", "notes", &[]),
    )
    .await;
    assert!(notes.starts_with("[0, 1, 2"), "{notes}");
    within("shutdown", Duration::from_secs(10), host.shutdown()).await;
}

fn wall_clock_config(wall: Duration) -> HostConfig {
    HostConfig {
        limits: Limits {
            actor: ActorLimits {
                turn_wall_time: wall,
                ..common::config().limits.actor
            },
            ..common::config().limits
        },
        shutdown_timeout: Duration::from_secs(1),
        ..common::config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_that_keeps_writing_state_is_stopped_by_its_wall_clock_bound() {
    let host = common::host_with(
        wall_clock_config(Duration::from_millis(800)),
        StateStore::memory(),
    );
    let started = Instant::now();
    let outcome = within(
        "an endless writer",
        Duration::from_secs(10),
        call(&host, "probe/writer", "write-rows", &["100000000", "1024"]),
    )
    .await;
    let err = outcome.unwrap_err();
    assert!(err.starts_with("deadline-exceeded"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The actor comes back for the next call.
    assert_eq!(
        ok(&host, "probe/writer", "write-rows", &["3", "8"]).await,
        "3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_within_its_bound_whatever_the_actors_do() {
    let host = common::host_with(
        wall_clock_config(Duration::from_secs(600)),
        StateStore::memory(),
    );
    let writer = host.clone();
    let stuck = tokio::spawn(async move {
        call(&writer, "probe/stuck", "write-rows", &["100000000", "1024"]).await
    });
    common::eventually("the writer is busy", Duration::from_secs(10), || {
        let active = host.is_active(&"probe/stuck".parse().unwrap());
        async move { active }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let aborted = within("shutdown", Duration::from_secs(10), host.shutdown()).await;
    assert_eq!(aborted, 1, "the stuck activation was aborted");
    assert!(started.elapsed() < Duration::from_secs(3));
    let err = stuck.await.unwrap().unwrap_err();
    assert!(err.starts_with("activation-failed"), "{err}");
    assert_eq!(host.active_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_reminder_that_keeps_trapping_backs_off() {
    let state = StateStore::memory();
    let host = common::host_with(common::config(), state.clone());
    host.start_reminders().await.unwrap();
    ok(
        &host,
        "probe/r",
        "start-reminder",
        &[r#""trap-once""#, "0", "none"],
    )
    .await;
    // Tries at 0 s, 1 s and 3 s: three in 4.5 s, where retrying every second
    // would have made five.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let tries = state
        .get(RowKey {
            namespace: "probe",
            table: "probe",
            key1: "r",
            key2: Some("tries-trap-once"),
        })
        .await
        .unwrap()
        .expect("the reminder ran");
    let tries: u32 = String::from_utf8(tries).unwrap().parse().unwrap();
    // Three on time; two if the machine is slow. Never the four or five of
    // a retry every second.
    assert!((2..=3).contains(&tries), "tried {tries} times");
    assert_eq!(host.dead_letters(), 0, "not given up yet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_between_actors_is_refused_before_it_is_copied() {
    let host = common::host();
    let huge = "x".repeat(2 << 20);
    let answer = ok(
        &host,
        "probe/sender",
        "relay",
        &[&format!(r#"["receiver", "{huge}"]"#)],
    )
    .await;
    assert!(
        answer.starts_with("err(too-large("),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert!(
        answer.contains("the limit is 1048576"),
        "{}",
        &answer[..200]
    );
    assert!(
        !host.is_active(&"probe/receiver".parse().unwrap()),
        "nothing was delivered"
    );
    // A message under the limit goes through.
    assert_eq!(
        ok(&host, "probe/sender", "relay", &[r#"["receiver"]"#]).await,
        r#"ok(["sender", "receiver"])"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_waiting_on_a_slow_callee_times_out_before_its_own_turn_bound() {
    // The callee spins until its CPU deadline (1.5 s); the caller's turn may
    // last 1 s on the wall clock, and its call timeout (10 s) is longer.
    let host = common::host_with(
        wall_clock_config(Duration::from_secs(1)),
        StateStore::memory(),
    );
    let started = Instant::now();
    let answer = ok(
        &host,
        "probe/patient",
        "provoke",
        &[r#""spinner""#, "spin", "none"],
    )
    .await;
    assert!(answer.starts_with("err(timeout("), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The caller's turn went on: it is the same activation afterwards.
    assert_eq!(
        ok(&host, "probe/patient", "lifecycle-counts", &[]).await,
        "(1, 0)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_past_its_timer_limit_gets_a_limit_error_of_its_own() {
    let host = common::host();
    let err = call(&host, "probe/greedy", "flood-timers", &["1025", "60000"])
        .await
        .unwrap_err();
    assert!(err.starts_with("limit-exceeded"), "{err}");
    assert!(err.contains("at most 1024 timers"), "{err}");
    // The actor comes back for the next call, within the limit.
    ok(&host, "probe/greedy", "flood-timers", &["1024", "60000"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_past_the_copy_limit_is_a_limit_error_and_the_actor_comes_back() {
    // 2 Mi list elements of 40 bytes each are 80 MiB, past the default 48.
    let host = common::host();
    let err = call(&host, "probe/hoarder", "count-up", &["2097152"])
        .await
        .unwrap_err();
    assert!(err.starts_with("limit-exceeded"), "{err}");
    assert!(err.contains("more than 48 MiB"), "{err}");
    // Under the limit, the same actor answers again.
    let small = ok(&host, "probe/hoarder", "count-up", &["3"]).await;
    assert_eq!(small, "[0, 1, 2]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_queued_behind_a_stuck_turn_hear_timeout_at_their_own_deadlines() {
    // `probe/stuck` spins until its CPU deadline (1.5 s). Callers arm no
    // timers of their own: the activation answers each queued call at its
    // caller's deadline while the stuck turn runs.
    let host = common::host_with(common::config(), StateStore::memory());
    let started = Instant::now();
    let stuck = tokio::spawn({
        let host = host.clone();
        async move { call(&host, "probe/stuck", "spin", &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Queued with the host's call timeout (10 s): it waits out the turn.
    let patient = tokio::spawn({
        let host = host.clone();
        async move { call(&host, "probe/stuck", "lifecycle-counts", &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Queued behind both with a deadline of 100 ms, earlier than any the
    // activation watched: it hears `timeout` then, not when the turn ends.
    let asked = Instant::now();
    let impatient = ok(
        &host,
        "probe/asker",
        "provoke",
        &[r#""stuck""#, "spin", "some(100)"],
    )
    .await;
    assert!(impatient.starts_with("err(timeout("), "{impatient}");
    assert!(
        asked.elapsed() < Duration::from_millis(900),
        "answered after {:?}, not at its deadline",
        asked.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "before the stuck turn ended"
    );
    // The stuck turn ends at its CPU deadline; the patient call then runs on
    // a fresh activation.
    let stuck = stuck.await.unwrap();
    assert!(
        stuck
            .as_ref()
            .is_err_and(|e| e.starts_with("deadline-exceeded")),
        "{stuck:?}"
    );
    let patient = patient.await.unwrap();
    assert!(patient.is_ok(), "{patient:?}");
}
