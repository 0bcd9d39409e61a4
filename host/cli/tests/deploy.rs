//! Deploying to a running `grove run`: `grove deploy`, `PUT /v1/plugins`,
//! `--watch`, and a deployed version kept for the next start.

#[path = "../../runtime/tests/common/mod.rs"]
mod common;
mod running;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use running::{reqwest, RunningHost, GROVE};
use serde_json::Value;

fn deploy(host: &RunningHost, plugin: &str, flags: &[&str]) -> Output {
    Command::new(GROVE)
        .args(["deploy", "--host", &host.url])
        .arg(common::plugin(plugin))
        .args(flags)
        .output()
        .unwrap()
}

fn listed(host: &RunningHost) -> Value {
    serde_json::from_str(&reqwest::blocking_get(&format!("{}/v1/plugins", host.url)).unwrap())
        .unwrap()
}

/// The counter's entry in `GET /v1/plugins`.
fn counter_entry(host: &RunningHost) -> Value {
    listed(host)["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["actor_type"] == "counter")
        .cloned()
        .unwrap()
}

fn sha256_of(plugin: &str) -> String {
    let out = Command::new("sha256sum")
        .arg(common::plugin(plugin))
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_owned()
}

#[test]
fn grove_deploy_swaps_a_running_plugin_refuses_a_breaking_one_and_keeps_it_for_a_restart() {
    let plugins = common::plugin_dir(&["counter"]);
    let data = tempfile::tempdir().unwrap();
    let host = RunningHost::start(plugins.path(), data.path());
    assert_eq!(host.call_ok(&["counter/1", "add", "5"]), "5");
    let entry = counter_entry(&host);
    assert_eq!(entry["sha256"], sha256_of("counter"));
    assert_eq!(entry["activations"], 1);

    // A version that would refuse the running one's calls is refused, with
    // what breaks in WIT terms, and nothing changes.
    let refused = deploy(&host, "counter_retyped", &[]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("function `add`: parameter `amount`: was u64, now string")
            && stderr.contains("function `reset` was removed")
            && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(host.call_ok(&["counter/1", "add", "1"]), "6");

    // A compatible one is deployed; the live activation moves to it with its
    // state.
    let deployed = deploy(&host, "counter_next", &[]);
    let stdout = String::from_utf8_lossy(&deployed.stdout);
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stderr)
    );
    assert!(
        stdout.contains("deployed counter version") && stdout.contains("1 activations moving"),
        "{stdout}"
    );
    assert_eq!(host.call_ok(&["counter/1", "version"]), "\"next\"");
    assert_eq!(host.call_ok(&["counter/1", "get"]), "6");
    let entry = counter_entry(&host);
    assert_eq!(entry["sha256"], sha256_of("counter_next"));
    assert_eq!(entry["activations"], 1);

    // `PUT /v1/plugins/{type}` checks the type it names.
    let (status, body) = reqwest::runtime().block_on(async {
        let response = ::reqwest::Client::new()
            .put(format!("{}/v1/plugins/echo", host.url))
            .body(std::fs::read(common::plugin("counter")).unwrap())
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    });
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("wrong-actor-type"), "{body}");

    // The deployed version was kept over the file the old one came from: a
    // restart runs it.
    drop(host);
    let host = RunningHost::start(plugins.path(), data.path());
    assert_eq!(host.call_ok(&["counter/1", "version"]), "\"next\"");
    assert_eq!(host.call_ok(&["counter/1", "get"]), "6");
    assert!(listed(&host)["rejected"].as_array().unwrap().is_empty());

    // A version that cannot start an activation is rolled back, and the
    // deploy says so (forced: it also lacks `version`).
    let rolled_back = deploy(&host, "counter_unstartable", &["--force"]);
    let stderr = String::from_utf8_lossy(&rolled_back.stderr);
    assert!(!rolled_back.status.success());
    assert!(
        stderr.contains("was rolled back") && stderr.contains("cannot start"),
        "{stderr}"
    );
    assert_eq!(host.call_ok(&["counter/1", "version"]), "\"next\"");
    assert_eq!(host.call_ok(&["counter/1", "add", "1"]), "7");
    // The file it replaced was put back: a restart runs the version before.
    drop(host);
    let host = RunningHost::start(plugins.path(), data.path());
    assert_eq!(host.call_ok(&["counter/1", "version"]), "\"next\"");

    // Forced, the breaking version goes in.
    let forced = deploy(&host, "counter_retyped", &["--force"]);
    let stdout = String::from_utf8_lossy(&forced.stdout);
    assert!(
        forced.status.success(),
        "{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(stdout.contains("forced: function `add`"), "{stdout}");
    assert_eq!(host.call_ok(&["counter/1", "add", "\"4\""]), "11");
}

#[test]
fn a_watching_host_deploys_a_file_copied_over_its_plugin() {
    let plugins = common::plugin_dir(&["counter"]);
    let data = tempfile::tempdir().unwrap();
    let host = RunningHost::start_with(plugins.path(), data.path(), &["--watch"]);
    assert_eq!(host.call_ok(&["counter/3", "add", "2"]), "2");

    std::fs::copy(
        common::plugin("counter_next"),
        plugins.path().join("counter.wasm"),
    )
    .unwrap();
    let start = Instant::now();
    while counter_entry(&host)["sha256"] != sha256_of("counter_next") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the copied file was not deployed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(host.call_ok(&["counter/3", "version"]), "\"next\"");
    assert_eq!(host.call_ok(&["counter/3", "get"]), "2");

    // An incompatible file is refused; the running version stays.
    std::fs::copy(
        common::plugin("counter_retyped"),
        plugins.path().join("counter.wasm"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(counter_entry(&host)["sha256"], sha256_of("counter_next"));
    assert_eq!(host.call_ok(&["counter/3", "add", "1"]), "3");
}
