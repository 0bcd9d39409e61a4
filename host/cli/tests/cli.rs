//! The `grove` binary end to end: `grove run` on a plugins directory, `grove
//! call` and the HTTP API against it, a restart, and `grove inspect`.

#[path = "../../runtime/tests/common/mod.rs"]
mod common;
mod running;

use std::process::Command;
use std::time::{Duration, Instant};

use running::{reqwest, RunningHost, GROVE};
use serde_json::{json, Value};

#[test]
fn a_host_serves_the_cli_and_http_and_keeps_state_across_restarts() {
    let plugins = common::plugin_dir(&["counter", "probe"]);
    std::fs::write(
        plugins.path().join("garbage.wasm"),
        b"definitely not a component",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();

    let host = RunningHost::start(plugins.path(), data.path());
    assert_eq!(host.call_ok(&["counter/7", "add", "5"]), "5");
    assert_eq!(host.call_ok(&["counter/7", "add", "5"]), "10");
    assert_eq!(host.call_ok(&["counter/7", "get"]), "10");
    assert_eq!(
        host.post("/v1/actors/counter/8/add", "[3]"),
        (200, json!(3))
    );
    assert_eq!(host.post("/v1/actors/counter/7/get", ""), (200, json!(10)));

    // The garbage file is reported by name, and the others are served.
    let plugins_json: Value =
        serde_json::from_str(&reqwest::blocking_get(&format!("{}/v1/plugins", host.url)).unwrap())
            .unwrap();
    let rejected = plugins_json["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0]["error"]
        .as_str()
        .unwrap()
        .contains("garbage.wasm: not a valid WebAssembly component"));
    let types: Vec<&str> = plugins_json["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["actor_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["counter", "probe"]);
    assert_eq!(
        plugins_json["plugins"][0]["functions"][0]["signature"],
        "add: func(amount: u64) -> u64"
    );

    // Errors: one clear line from the CLI, JSON with a fitting status over HTTP.
    let out = host.call(&["counter/7", "add", "five"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: bad arguments for `add`: argument `amount` is not a valid u64"),
        "{stderr}"
    );
    let out = host.call(&["counter7", "get"]);
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("is not an actor ref"));

    let (status, body) = host.post("/v1/actors/ghost/1/get", "[]");
    assert_eq!(
        (status, body["error"]["kind"].as_str()),
        (404, Some("unknown-actor-type"))
    );
    let (status, body) = host.post("/v1/actors/counter/1/nope", "[]");
    assert_eq!(
        (status, body["error"]["kind"].as_str()),
        (404, Some("unknown-function"))
    );
    let (status, body) = host.post("/v1/actors/counter/1/add", "[1,");
    assert_eq!(
        (status, body["error"]["kind"].as_str()),
        (400, Some("malformed-json"))
    );
    let (status, body) = host.post("/v1/actors/counter/1/add", r#"["one"]"#);
    assert_eq!(
        (status, body["error"]["kind"].as_str()),
        (400, Some("bad-arguments"))
    );
    assert_eq!(
        body["error"]["message"],
        "bad arguments for `add`: argument `amount`: expected a u64, got \"one\""
    );
    let (status, body) = host.post("/v1/actors/probe/1/fail", r#"["boom"]"#);
    assert_eq!(
        (status, body["error"]["kind"].as_str()),
        (500, Some("trapped"))
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("boom"));
    assert_eq!(host.call_ok(&["counter/7", "get"]), "10");

    // What happened, as Prometheus scrapes it.
    let (metrics, content_type) = reqwest::blocking_get_typed(&format!("{}/metrics", host.url));
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    for line in [
        r#"grove_calls_total{actor_type="counter",function="add",outcome="ok"} 3"#,
        r#"grove_calls_total{actor_type="counter",function="get",outcome="ok"} 3"#,
        r#"grove_calls_total{actor_type="probe",function="fail",outcome="trapped"} 1"#,
        r#"grove_incidents_total{actor_type="probe",incident="trapped"} 1"#,
        r#"grove_activations_live{actor_type="counter"} 2"#,
        // Three `add`s, and `probe`'s `on-activate` counting itself.
        r#"grove_state_operations_total{backend="embedded",operation="put",outcome="ok"} 4"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in:\n{metrics}"
        );
    }

    // Ctrl-C stops the host cleanly; a new one finds the state on disk.
    let log = host.interrupt();
    assert!(log.contains("rejected plugin"), "{log}");
    let host = RunningHost::start(plugins.path(), data.path());
    assert_eq!(host.call_ok(&["counter/7", "get"]), "10");
    assert_eq!(host.post("/v1/actors/counter/8/get", "[]"), (200, json!(3)));
}

#[test]
fn inspect_prints_the_actor_type_and_every_signature() {
    let out = Command::new(GROVE)
        .arg("inspect")
        .arg(common::plugin("showcase"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("actor type: inventory"), "{text}");
    assert!(text.contains("record item {"), "{text}");
    assert!(
        text.contains("add-item: func(item: item, limit: option<f64>) -> result<change, string>;"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0").unwrap();
    let out = Command::new(GROVE)
        .arg("inspect")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(
            "broken.wasm: not a valid WebAssembly component: it is a core WebAssembly module"
        ),
        "{stderr}"
    );
}

#[test]
fn a_killed_host_keeps_its_reminders() {
    let plugins = common::plugin_dir(&["probe"]);
    let data = tempfile::tempdir().unwrap();
    let host = RunningHost::start(plugins.path(), data.path());
    assert_eq!(
        host.call_ok(&["probe/alarm", "start-reminder", "\"ring\"", "2000", "none"]),
        "ok"
    );
    // No clean shutdown: the process dies at once.
    drop(host);

    let host = RunningHost::start(plugins.path(), data.path());
    let start = Instant::now();
    loop {
        let fired = host.call_ok(&["probe/alarm", "reminders", "\"ring\""]);
        if fired != "[]" {
            assert_eq!(
                fired.matches(',').count(),
                0,
                "fired more than once: {fired}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the reminder never fired after the restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_stuck_actor_answers_http_with_504_and_cannot_hold_up_sigterm() {
    let plugins = common::plugin_dir(&["counter", "probe"]);
    let data = tempfile::tempdir().unwrap();
    let mut host = RunningHost::start_with(
        plugins.path(),
        data.path(),
        &[
            "--call-timeout-ms",
            "1000",
            "--shutdown-timeout-ms",
            "1500",
            "--memory-state",
        ],
    );
    // A turn that keeps writing state for longer than anyone waits.
    let started = Instant::now();
    let (status, body) = host.post("/v1/actors/probe/stuck/write-rows", "[100000000, 1024]");
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"]["kind"], "timeout", "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Another actor is unaffected.
    assert_eq!(host.call_ok(&["counter/7", "add", "2"]), "2");
    // A body over the limit gets the API's JSON error, not plain text.
    let huge = format!("[\"{}\"]", "x".repeat(3 << 20));
    let (status, body) = host.post("/v1/actors/counter/7/add", &huge);
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["kind"], "body-too-large", "{body}");

    // SIGTERM while the actor is still stuck: the host exits within its
    // shutdown bound.
    let stopping = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &host.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = loop {
        if let Some(status) = host.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopping.elapsed() < Duration::from_secs(15),
            "grove run ignored SIGTERM while an actor was stuck"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exited.success(), "{exited:?}");
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopping.elapsed()
    );
}

#[test]
fn limits_set_per_actor_type_apply_and_show_with_their_incidents() {
    let plugins = common::plugin_dir(&["counter", "rogue"]);
    let data = tempfile::tempdir().unwrap();
    let file = data.path().join("limits.toml");
    std::fs::write(
        &file,
        "[rogue]\nmemory-mib = 16\ntimers = 100\n\n[\"*\"]\nproxies = 500\n",
    )
    .unwrap();
    let limits = file.to_str().unwrap();
    // A rule that names no limit is refused before the host starts.
    let refused = Command::new(GROVE)
        .args(["run", "--limit", "rogue.memory=16"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("the limits are memory-mib,"), "{stderr}");

    let host = RunningHost::start_with(
        plugins.path(),
        data.path(),
        &[
            "--memory-state",
            "--limits",
            limits,
            "--limit",
            "rogue.timers=5",
        ],
    );
    // 24 MiB is past the rogue's memory, not the counter's.
    let (status, body) = host.post("/v1/actors/rogue/1/hog", "[24]");
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"]["kind"], "out-of-memory", "{body}");
    // `--limit` wins over the file.
    let (_, body) = host.post("/v1/actors/rogue/1/set-timers", "[6]");
    assert_eq!(body["error"]["kind"], "limit-exceeded", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 5 timers"),
        "{body}"
    );
    assert_eq!(host.call_ok(&["counter/1", "add", "1"]), "1");

    let listed: Value =
        serde_json::from_str(&reqwest::blocking_get(&format!("{}/v1/plugins", host.url)).unwrap())
            .unwrap();
    let entry = |actor_type: &str| {
        listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["actor_type"] == actor_type)
            .cloned()
            .unwrap()
    };
    let (rogue, counter) = (entry("rogue"), entry("counter"));
    assert_eq!(rogue["limits"]["memory-mib"], 16, "{rogue}");
    assert_eq!(rogue["limits"]["timers"], 5, "{rogue}");
    assert_eq!(rogue["limits"]["proxies"], 500, "{rogue}");
    assert_eq!(counter["limits"]["memory-mib"], 64, "{counter}");
    assert_eq!(counter["limits"]["proxies"], 500, "{counter}");
    assert_eq!(rogue["incidents"]["out-of-memory"], 1, "{rogue}");
    assert_eq!(rogue["incidents"]["limit-exceeded"], 1, "{rogue}");
    assert_eq!(counter["incidents"]["out-of-memory"], 0, "{counter}");
}
