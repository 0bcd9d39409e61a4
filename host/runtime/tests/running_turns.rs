//! The running-turn limit: an idle activation gives its fiber stack back,
//! so a host with a few stacks serves many live activations; turns past the
//! limit wait for one to finish, and a call that cannot get a turn before
//! its deadline fails with a timeout instead of hanging.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{call, ok};
use grove_host::state::StateStore;
use grove_host::{Host, HostConfig};

fn host_with_turns(max_running_turns: u32, call_timeout: Duration) -> Host {
    let mut config: HostConfig = common::config();
    config.limits.max_running_turns = max_running_turns;
    config.call_timeout = call_timeout;
    let host = Host::new(config, StateStore::memory()).unwrap();
    for name in ["counter", "probe"] {
        host.load_plugin(&common::plugin(name)).unwrap();
    }
    host
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_stacks_serve_hundreds_of_live_activations_taking_turns() {
    let host = host_with_turns(4, Duration::from_secs(10));
    // 400 counters stay live; 64 callers add to them at once, three times
    // each. Each `add` awaits a state write in its turn, so turns overlap
    // and wait for one another's stacks.
    let mut callers = Vec::new();
    for c in 0..64 {
        let host = host.clone();
        callers.push(tokio::spawn(async move {
            for round in 0..3 {
                for i in (c..400).step_by(64) {
                    let value = ok(&host, &format!("counter/{i}"), "add", &["1"]).await;
                    assert_eq!(value, (round + 1).to_string(), "counter/{i}");
                }
            }
        }));
    }
    for caller in callers {
        caller.await.unwrap();
    }
    // A chain of three actors holds three turns at once, within the four.
    let answer = ok(&host, "probe/a", "relay", &[r#"["b", "c"]"#]).await;
    assert_eq!(answer, r#"ok(["a", "b", "c"])"#);
    // Idle activations hold no turn, and so no stack.
    common::eventually("every turn ended", Duration::from_secs(5), || async {
        host.running_turns() == 0
    })
    .await;
    assert_eq!(ok(&host, "counter/7", "get", &[]).await, "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_wider_than_the_limit_times_out_and_the_host_recovers() {
    let host = host_with_turns(2, Duration::from_millis(800));
    // a's turn waits on b, b's on c; c needs a third turn, which only comes
    // when b's call to c gives up at its deadline.
    let started = Instant::now();
    let answer = call(&host, "probe/a", "relay", &[r#"["b", "c"]"#]).await;
    let took = started.elapsed();
    // The caller's own deadline and b's deadline on c are the same length:
    // either reports the timeout first.
    let timed_out = match &answer {
        Ok(nested) => nested.starts_with("err(timeout"),
        Err(error) => error.starts_with("timeout"),
    };
    assert!(timed_out, "{answer:?}");
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Nothing is stuck: the turns were given back, and a chain that fits
    // runs.
    common::eventually("every turn ended", Duration::from_secs(5), || async {
        host.running_turns() == 0
    })
    .await;
    let answer = ok(&host, "probe/x", "relay", &[r#"["y"]"#]).await;
    assert_eq!(answer, r#"ok(["x", "y"])"#);
    assert_eq!(
        call(&host, "counter/1", "add", &["5"]).await.as_deref(),
        Ok("5")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_from_outside_waiting_on_actors_never_take_the_stacks_those_actors_need() {
    // Four stacks and 32 callers from outside at once, each calling an
    // actor that calls another: the first actors' turns wait on the second
    // ones. Were every stack theirs, the second actors could not run until
    // the calls timed out; a quarter of the stacks is kept for turns that
    // serve other actors.
    let host = host_with_turns(4, Duration::from_secs(3));
    let started = Instant::now();
    let callers: Vec<_> = (0..32)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move {
                let path = format!(r#"["second-{i}"]"#);
                ok(&host, &format!("probe/first-{i}"), "relay", &[&path]).await
            })
        })
        .collect();
    for (i, caller) in callers.into_iter().enumerate() {
        assert_eq!(
            caller.await.unwrap(),
            format!(r#"ok(["first-{i}", "second-{i}"])"#)
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_turn_with_actors_waiting_behind_it_may_use_the_reserve() {
    // Four stacks: three for turns from outside, one kept. Three callers
    // from outside hold those three while `shared`'s timer comes due, so
    // its tick (a turn from outside too) waits; then each calls `shared`,
    // whose mailbox holds their calls behind the tick. Were the tick to wait
    // for a place among turns from outside, it would wait on the three,
    // which wait on it, until their calls timed out.
    let host = host_with_turns(4, Duration::from_secs(3));
    ok(
        &host,
        "probe/shared",
        "start-timer",
        &[r#""t""#, "300", "none", "false"],
    )
    .await;
    let started = Instant::now();
    let callers: Vec<_> = (0..3)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move {
                ok(
                    &host,
                    &format!("probe/w-{i}"),
                    "relay-after",
                    &["700", r#"["shared"]"#],
                )
                .await
            })
        })
        .collect();
    for (i, caller) in callers.into_iter().enumerate() {
        assert_eq!(caller.await.unwrap(), format!(r#"ok(["w-{i}", "shared"])"#));
    }
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "{:?}",
        started.elapsed()
    );
    // The tick ran once, after the three callers took their places: it
    // waited for one, and then ran before their calls, on the reserve.
    let ticks = ok(&host, "probe/shared", "ticks", &[r#""t""#]).await;
    let ticked: Vec<u128> = ticks
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .map(|t| t.parse().unwrap())
        .collect();
    assert_eq!(ticked.len(), 1, "{ticks}");
    let callers_began = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() - started.elapsed();
    assert!(
        ticked[0] >= (callers_began + Duration::from_millis(600)).as_millis(),
        "the tick ran {} ms after the callers began: before they held every place",
        ticked[0] as i128 - callers_began.as_millis() as i128
    );
}
