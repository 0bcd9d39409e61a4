//! `grove new` end to end, for each language: the project it writes builds
//! with its own `build.sh` into a component that `grove run` loads unchanged,
//! and whose function answers, keeps its state and counts timer ticks; with
//! the counter's proxy added as `docs/writing-actors.md` says, it calls the
//! Rust `counter` actor.
//!
//! The Rust build shares `target/grove-new` across runs; the Python build
//! uses the virtualenv `scripts/build-plugins` made (componentize-py); the
//! JavaScript build installs componentize-js from npm into the project.

mod running;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use running::{RunningHost, GROVE};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What `docs/writing-actors.md` tells an author to add to call the Rust
/// `counter` actor: its proxy, imported by the world, and a function
/// `bump(key)` that calls `counter/<key>.add(1)` through it.
fn call_the_counter(project: &Path, name: &str, lang: &str) {
    let proxy = Command::new(GROVE)
        .args(["wit", "proxy"])
        .arg(repo().join("plugins/dist/counter.wasm"))
        .arg("-o")
        .arg(project.join("wit/deps/counter-proxy/counter-proxy.wit"))
        .output()
        .unwrap();
    assert!(proxy.status.success(), "{proxy:?}");
    let edit = |file: &str, after: &str, insert: &str| {
        let path = project.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let at = text
            .find(after)
            .unwrap_or_else(|| panic!("no `{after}` in {file}"))
            + after.len();
        std::fs::write(&path, format!("{}{insert}{}", &text[..at], &text[at..])).unwrap();
    };
    let wit = format!("wit/{name}.wit");
    edit(
        &wit,
        "ticks: func() -> u64;",
        "\n    bump: func(key: string) -> u64;",
    );
    edit(
        &wit,
        "include grove:actor/actor@0.1.0;",
        "\n    import grove-example:counter-proxy/counter;",
    );
    match lang {
        "rust" => {
            edit("src/lib.rs", "path: \"wit\",", "\n        generate_all,");
            edit(
                "src/lib.rs",
                "    fn ticks() -> u64 {\n        TICKS.get()\n    }",
                "\n\n    fn bump(key: String) -> u64 {\n        \
                 use bindings::grove_example::counter_proxy::counter::Counter;\n        \
                 Counter::new(&key).add(1).expect(\"the counter answers\")\n    }",
            );
        }
        "python" => edit(
            "app.py",
            "    def ticks(self) -> int:\n        return ticks",
            "\n\n    def bump(self, key: str) -> int:\n        \
             from wit_world.imports import counter\n\n        \
             return counter.Counter(key).add(1)",
        ),
        _ => {
            edit(
                "app.js",
                "from \"grove:actor/host@0.1.0\";",
                "\nimport { Counter } from \"grove-example:counter-proxy/counter\";",
            );
            edit(
                "app.js",
                "  ticks() {\n    return ticks;\n  },",
                "\n  bump(key) {\n    return new Counter(key).add(1n);\n  },",
            );
        }
    }
}

/// `grove new NAME --lang LANG` in `dir`, with a call to the counter added,
/// then the project's `build.sh`.
fn new_and_build(dir: &Path, name: &str, lang: &str) -> PathBuf {
    let project = dir.join(name);
    let created = Command::new(GROVE)
        .args(["new", name, "--lang", lang, "--dir"])
        .arg(&project)
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    call_the_counter(&project, name, lang);
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
    let plugins = tempfile::tempdir().unwrap();
    for plugin in [
        project.join(format!("{name}.wasm")),
        repo().join("plugins/dist/counter.wasm"),
    ] {
        std::fs::copy(&plugin, plugins.path().join(plugin.file_name().unwrap())).unwrap();
    }
    let data = tempfile::tempdir().unwrap();
    let host = RunningHost::start(plugins.path(), data.path());
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
    // It calls the Rust counter through the counter's proxy.
    assert_eq!(host.call_ok(&[&actor, "bump", r#""7""#]), "1");
    assert_eq!(host.call_ok(&[&actor, "bump", r#""7""#]), "2");
    assert_eq!(host.call_ok(&["counter/7", "get"]), "2");
    // State outlives the host.
    drop(host.interrupt());
    let host = RunningHost::start(plugins.path(), data.path());
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

#[test]
fn a_new_javascript_actor_builds_and_serves() {
    serves("js", "game-room");
}
