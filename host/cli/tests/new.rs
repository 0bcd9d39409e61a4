//! `grove new` end to end, for each language: the project it writes builds
//! with its own `build.sh` into a component that `grove run` loads unchanged,
//! and whose function answers, keeps its state and counts timer ticks.
//!
//! The Rust build shares `target/grove-new` across runs; the Python build
//! uses the virtualenv `scripts/build-plugins` made (componentize-py).

mod running;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use running::{RunningHost, GROVE};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `grove new NAME --lang LANG` in `dir`, then the project's `build.sh`.
fn new_and_build(dir: &Path, name: &str, lang: &str) -> PathBuf {
    let project = dir.join(name);
    let created = Command::new(GROVE)
        .args(["new", name, "--lang", lang, "--dir"])
        .arg(&project)
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let built = Command::new(project.join("build.sh"))
        .env("CARGO_TARGET_DIR", repo().join("target/grove-new"))
        .env("VENV", repo().join("plugins/target/py-venv"))
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{lang} build failed:\n{}\n{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    project
}

fn serves(lang: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let project = new_and_build(dir.path(), name, lang);
    assert!(project.join(format!("{name}.wasm")).exists());
    let data = tempfile::tempdir().unwrap();
    let host = RunningHost::start(&project, data.path());
    let actor = format!("{name}/1");
    assert_eq!(
        host.call_ok(&[&actor, "hello", r#""Ayla""#]),
        format!(r#""Hello, Ayla! 1 greetings from {actor}.""#)
    );
    assert_eq!(
        host.call_ok(&[&actor, "hello", r#""Bren""#]),
        format!(r#""Hello, Bren! 2 greetings from {actor}.""#)
    );
    // The timer ticks every second while the actor is active.
    let start = Instant::now();
    while host.call_ok(&[&actor, "ticks"]) == "0" {
        assert!(start.elapsed() < Duration::from_secs(10), "no timer tick");
        std::thread::sleep(Duration::from_millis(200));
    }
    // State outlives the host.
    drop(host.interrupt());
    let host = RunningHost::start(&project, data.path());
    assert_eq!(
        host.call_ok(&[&actor, "hello", r#""Cai""#]),
        format!(r#""Hello, Cai! 3 greetings from {actor}.""#)
    );
}

#[test]
fn a_new_rust_actor_builds_and_serves() {
    serves("rust", "guild-bank");
}

#[test]
fn a_new_python_actor_builds_and_serves() {
    serves("python", "lobby");
}
