//! `GET /dashboard` in a real browser: headless Chromium (Debian's
//! `chromium`, which `scripts/test` installs) loads the page from a running
//! host, and the page shows the numbers `GET /metrics` shows. A screenshot
//! is kept in `target/tmp/dashboard.png`.

#[path = "../../runtime/tests/common/mod.rs"]
mod common;
mod running;

use std::path::PathBuf;
use std::process::Command;

use running::{reqwest, RunningHost};

/// Runs headless Chromium on `url` with `args`; returns its standard output.
fn chromium(url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        // Long enough for the page's first refreshes to land.
        .arg("--virtual-time-budget=5000")
        .args(args)
        .arg(url)
        .output()
        .expect("chromium is missing: run scripts/test, which installs it");
    assert!(out.status.success(), "chromium failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The sample of `/metrics` whose line starts with `series`.
fn sample(metrics: &str, series: &str) -> String {
    let line = metrics
        .lines()
        .find(|l| l.starts_with(series))
        .unwrap_or_else(|| panic!("no {series} in /metrics"));
    line.rsplit_once(' ').unwrap().1.to_owned()
}

#[test]
fn the_dashboard_shows_what_metrics_show() {
    let plugins = common::plugin_dir(&["counter", "probe"]);
    let data = tempfile::tempdir().unwrap();
    let host = RunningHost::start(plugins.path(), data.path());
    assert_eq!(host.call_ok(&["counter/1", "add", "2"]), "2");
    assert_eq!(host.call_ok(&["counter/1", "add", "2"]), "4");
    assert_eq!(host.call_ok(&["counter/2", "add", "1"]), "1");
    let (status, _) = host.post("/v1/actors/probe/x/fail", r#"["on purpose"]"#);
    assert_eq!(status, 500);

    let metrics = reqwest::blocking_get(&format!("{}/metrics", host.url)).unwrap();
    let live = sample(&metrics, r#"grove_activations_live{actor_type="counter"}"#);
    let adds = sample(
        &metrics,
        r#"grove_calls_total{actor_type="counter",function="add",outcome="ok"}"#,
    );
    let traps = sample(
        &metrics,
        r#"grove_calls_total{actor_type="probe",function="fail",outcome="trapped"}"#,
    );
    assert_eq!(
        (live.as_str(), adds.as_str(), traps.as_str()),
        ("2", "3", "1")
    );

    let url = format!("{}/dashboard", host.url);
    let dom = chromium(&url, &["--dump-dom"]);
    assert!(
        dom.contains(r#"data-loaded="true""#),
        "the page never loaded its data:\n{dom}"
    );
    let counter = format!(
        r#"<tr data-type="counter"><td>counter</td><td data-metric="live">{live}</td><td data-metric="calls">{adds}</td>"#
    );
    assert!(dom.contains(&counter), "no `{counter}` in:\n{dom}");
    let errors = format!(
        r#"<tr data-type="probe" data-kind="trapped"><td>probe</td><td>trapped</td><td>{traps}</td></tr>"#
    );
    assert!(dom.contains(&errors), "no `{errors}` in:\n{dom}");
    // The busiest actor: counter/1, with on-activate and two calls.
    assert!(
        dom.contains(r#"<tr data-actor="counter/1"><td>counter/1</td><td>3</td>"#),
        "{dom}"
    );

    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    chromium(
        &url,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1280,1000",
        ],
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "{}",
        shot.display()
    );
}
