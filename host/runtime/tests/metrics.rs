//! `Host::metrics` (what `GET /metrics` serves), scraped before and after
//! known calls, traps, timeouts, timers and gateway sessions: the counters
//! and histograms move by exactly what happened.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use grove_gateway_quic::client::{Client, ClientConfig, ConnectError, Received};
use grove_gateway_quic::{GatewayConfig, Identity};
use grove_host::gateway::{self, Authenticator};
use grove_host::{Host, HostConfig};

use common::{call, eventually, ok};

const WAIT: Duration = Duration::from_secs(10);

/// One scrape: every sample by its name and labels (sorted).
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn of(host: &Host) -> Scrape {
        let text = host.metrics();
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (key, value) = line.rsplit_once(' ').expect("a sample line");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            let (name, labels) = match key.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (key, ""),
            };
            let mut labels: Vec<&str> = labels.split(',').filter(|l| !l.is_empty()).collect();
            labels.sort_unstable();
            let previous = samples.insert(format!("{name}{{{}}}", labels.join(",")), value);
            assert!(previous.is_none(), "{key} appears twice");
        }
        Scrape(samples)
    }

    /// The sample `name` with `labels` (0 if absent).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        labels.sort_unstable();
        let key = format!("{name}{{{}}}", labels.join(","));
        self.0.get(&key).copied().unwrap_or(0.0)
    }

    /// How much the sample moved from `before` to this scrape.
    fn delta(&self, before: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels) - before.get(name, labels)
    }

    /// How many calls of `actor_type.function` ended with `outcome` since
    /// `before`.
    fn calls(&self, before: &Scrape, actor_type: &str, function: &str, outcome: &str) -> f64 {
        let labels = [
            ("actor_type", actor_type),
            ("function", function),
            ("outcome", outcome),
        ];
        self.delta(before, "grove_calls_total", &labels)
    }
}

#[tokio::test]
async fn calls_activations_turns_and_state_operations_are_counted_exactly() {
    let host = common::host_of(&["counter"]);
    let before = Scrape::of(&host);
    for amount in ["1", "2", "3"] {
        ok(&host, "counter/m", "add", &[amount]).await;
    }
    ok(&host, "counter/m", "get", &[]).await;
    ok(&host, "counter/m", "get", &[]).await;
    let after = Scrape::of(&host);

    let counter = [("actor_type", "counter")];
    let calls = |function, outcome| after.calls(&before, "counter", function, outcome);
    assert_eq!(calls("add", "ok"), 3.0);
    assert_eq!(calls("get", "ok"), 2.0);
    assert_eq!(calls("reset", "ok"), 0.0);
    assert_eq!(
        after.delta(&before, "grove_activations_total", &counter),
        1.0
    );
    assert_eq!(after.get("grove_activations_live", &counter), 1.0);
    // `on-activate` and the five calls.
    let turns = after.delta(&before, "grove_turn_duration_seconds_count", &counter);
    assert_eq!(turns, 6.0);
    let inf = [("actor_type", "counter"), ("le", "+Inf")];
    assert_eq!(
        after.delta(&before, "grove_turn_duration_seconds_bucket", &inf),
        6.0
    );
    assert!(after.delta(&before, "grove_turn_duration_seconds_sum", &counter) > 0.0);

    // `on-activate` loads the counter; each `add` stores it.
    let state = |operation, outcome| {
        after.delta(
            &before,
            "grove_state_operations_total",
            &[
                ("backend", "memory"),
                ("operation", operation),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(state("get", "ok"), 1.0);
    assert_eq!(state("put", "ok"), 3.0);
    assert_eq!(state("delete", "ok"), 0.0);
    let puts = [("backend", "memory"), ("operation", "put")];
    let timed = after.delta(
        &before,
        "grove_state_operation_duration_seconds_count",
        &puts,
    );
    assert_eq!(timed, 3.0);

    host.shutdown().await;
    let ended = Scrape::of(&host);
    assert_eq!(
        ended.delta(&before, "grove_deactivations_total", &counter),
        1.0
    );
    assert_eq!(ended.get("grove_activations_live", &counter), 0.0);
    // `on-deactivate` is a turn too.
    let turns = ended.delta(&before, "grove_turn_duration_seconds_count", &counter);
    assert_eq!(turns, 7.0);
}

#[tokio::test]
async fn traps_memory_hits_and_timers_are_counted_by_kind() {
    let host = common::host_of(&["probe"]);
    let before = Scrape::of(&host);
    let trapped = call(&host, "probe/a", "fail", &["\"on purpose\""]).await;
    assert!(trapped.unwrap_err().starts_with("trapped"));
    let hog = call(&host, "probe/b", "hog", &["1024"]).await;
    assert!(hog.unwrap_err().starts_with("out-of-memory"));
    ok(
        &host,
        "probe/c",
        "start-timer",
        &["\"once\"", "5", "none", "false"],
    )
    .await;
    eventually("the timer ticked", WAIT, || async {
        ok(&host, "probe/c", "ticks", &["\"once\""]).await != "[]"
    })
    .await;
    let after = Scrape::of(&host);

    let probe = [("actor_type", "probe")];
    let calls = |function, outcome| after.calls(&before, "probe", function, outcome);
    assert_eq!(calls("fail", "trapped"), 1.0);
    assert_eq!(calls("fail", "ok"), 0.0);
    assert_eq!(calls("hog", "out-of-memory"), 1.0);
    assert_eq!(calls("start-timer", "ok"), 1.0);
    let incident = |kind| {
        after.delta(
            &before,
            "grove_incidents_total",
            &[("actor_type", "probe"), ("incident", kind)],
        )
    };
    assert_eq!(incident("trapped"), 1.0);
    assert_eq!(incident("out-of-memory"), 1.0);
    assert_eq!(incident("deadline-exceeded"), 0.0);
    // Three activations; the two whose turn failed died.
    assert_eq!(after.delta(&before, "grove_activations_total", &probe), 3.0);
    assert_eq!(
        after.delta(&before, "grove_deactivations_total", &probe),
        2.0
    );
    assert_eq!(after.get("grove_activations_live", &probe), 1.0);
    assert_eq!(
        after.delta(&before, "grove_timers_fired_total", &probe),
        1.0
    );
    assert_eq!(after.get("grove_mailbox_depth", &probe), 0.0);
}

#[tokio::test]
async fn a_call_whose_caller_gave_up_counts_as_a_timeout() {
    let config = HostConfig {
        call_timeout: Duration::from_millis(300),
        ..common::config()
    };
    let host = common::host_with(config, grove_host::state::StateStore::memory());
    let before = Scrape::of(&host);
    // `spin` runs until its turn deadline (1.5 s): its caller gives up at
    // 300 ms, and so does the caller of `recall`, queued behind it.
    let (spun, recalled) = tokio::join!(call(&host, "probe/s", "spin", &[]), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        call(&host, "probe/s", "recall", &[]).await
    });
    assert!(spun.unwrap_err().starts_with("timeout"));
    assert!(recalled.unwrap_err().starts_with("timeout"));
    let deadline = [("actor_type", "probe"), ("incident", "deadline-exceeded")];
    eventually("the spinning turn was stopped", WAIT, || async {
        Scrape::of(&host).delta(&before, "grove_incidents_total", &deadline) == 1.0
    })
    .await;
    let after = Scrape::of(&host);
    let calls = |function, outcome| after.calls(&before, "probe", function, outcome);
    // What each caller got, once: not the turn's own end.
    assert_eq!(calls("spin", "timeout"), 1.0);
    assert_eq!(calls("spin", "deadline-exceeded"), 0.0);
    assert_eq!(calls("recall", "timeout"), 1.0);
    assert_eq!(calls("recall", "ok"), 0.0);
}

#[tokio::test]
async fn a_call_queued_behind_a_long_turn_shows_its_wait() {
    let host = common::host_of(&["probe"]);
    // Activated first, so that no wait below includes the activation.
    ok(&host, "probe/q", "recall", &[]).await;
    let before = Scrape::of(&host);
    // `nap` holds the actor's turn for 400 ms; `recall`, made 50 ms in,
    // waits in the mailbox for the rest of it.
    let (napped, recalled) = tokio::join!(call(&host, "probe/q", "nap", &["400"]), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        call(&host, "probe/q", "recall", &[]).await
    });
    napped.unwrap();
    recalled.unwrap();
    let after = Scrape::of(&host);
    let queued = |le| {
        after.delta(
            &before,
            "grove_call_queue_duration_seconds_bucket",
            &[("actor_type", "probe"), ("le", le)],
        )
    };
    // `nap` began at once; `recall` waited about 350 ms.
    assert_eq!(queued("+Inf"), 2.0);
    assert_eq!(queued("0.1"), 1.0);
    assert_eq!(queued("0.25"), 1.0);
    let waited = after.delta(
        &before,
        "grove_call_queue_duration_seconds_sum",
        &[("actor_type", "probe")],
    );
    assert!(
        (0.3..1.0).contains(&waited),
        "calls waited {waited} s in all"
    );
}

#[tokio::test]
async fn gateway_sessions_messages_bytes_and_closes_are_counted() {
    let host = common::host_of(&["echo"]);
    let identity = Identity::self_signed(&["localhost".into()]).unwrap();
    let config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), identity);
    let auth: Authenticator = "echo.login".parse().unwrap();
    let gateway = gateway::start(&host, config, auth).await.unwrap();
    let client = Client::new(ClientConfig::pinned(gateway.fingerprint())).unwrap();
    let before = Scrape::of(&host);

    let refused = client.connect(gateway.local_addr(), b"banned-bob").await;
    assert!(matches!(refused, Err(ConnectError::Refused(_))));
    let session = client.connect(gateway.local_addr(), b"ayla").await.unwrap();
    for payload in ["hello", "world!"] {
        session.send(payload.as_bytes()).await.unwrap();
        let echoed = tokio::time::timeout(WAIT, session.recv()).await.unwrap();
        assert_eq!(
            echoed.unwrap(),
            Received::Frame(payload.as_bytes().to_vec().into())
        );
    }
    let during = Scrape::of(&host);
    let quic = [("door", "quic")];
    assert_eq!(during.get("grove_gateway_sessions", &quic), 1.0);
    assert_eq!(
        during.get("grove_gateway_sessions", &[("door", "websocket")]),
        0.0
    );
    session.close("done");
    eventually("the owner heard of the disconnect", WAIT, || async {
        ok(&host, "echo/ayla", "events", &[])
            .await
            .contains("disconnect")
    })
    .await;
    let after = Scrape::of(&host);

    assert_eq!(after.get("grove_gateway_sessions", &quic), 0.0);
    assert_eq!(
        after.delta(&before, "grove_gateway_sessions_opened_total", &quic),
        1.0
    );
    let messages = |direction, kind| {
        after.delta(
            &before,
            "grove_gateway_messages_total",
            &[("direction", direction), ("kind", kind)],
        )
    };
    assert_eq!(messages("in", "frame"), 2.0);
    assert_eq!(messages("out", "frame"), 2.0);
    assert_eq!(messages("in", "datagram"), 0.0);
    let bytes = |direction| {
        after.delta(
            &before,
            "grove_gateway_bytes_total",
            &[("direction", direction)],
        )
    };
    assert_eq!(bytes("in"), 11.0);
    assert_eq!(bytes("out"), 11.0);
    let closes = |reason| after.delta(&before, "grove_gateway_closes_total", &[("reason", reason)]);
    assert_eq!(closes("auth-rejected"), 1.0);
    assert_eq!(closes("client-closed"), 1.0);
    assert_eq!(closes("rate-limited"), 0.0);
    // `on-connect`, two `on-message` and `on-disconnect` on `echo/ayla`,
    // plus the authenticator's `login` calls and the activations' hooks.
    let echo = [("actor_type", "echo")];
    let logins = [
        ("actor_type", "echo"),
        ("function", "login"),
        ("outcome", "ok"),
    ];
    assert_eq!(after.delta(&before, "grove_calls_total", &logins), 2.0);
    let activations = after.delta(&before, "grove_activations_total", &echo);
    let turns = after.delta(&before, "grove_turn_duration_seconds_count", &echo);
    // `events` was called at least once while waiting.
    assert!(turns >= 4.0 + 2.0 + activations + 1.0, "{turns} turns");
}

#[tokio::test]
async fn a_host_without_metrics_counts_no_calls() {
    let config = HostConfig {
        metrics: false,
        ..common::config()
    };
    let host = common::host_with(config, grove_host::state::StateStore::memory());
    ok(&host, "counter/m", "add", &["1"]).await;
    let scrape = Scrape::of(&host);
    assert!(scrape.0.keys().all(|k| !k.starts_with("grove_calls")));
    assert!(scrape
        .0
        .contains_key(r#"grove_gateway_sessions{door="quic"}"#));
    assert!(scrape.get("process_resident_memory_bytes", &[]) > 0.0);
    assert!(scrape.get("process_open_fds", &[]) > 0.0);
}
