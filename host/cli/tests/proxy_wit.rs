//! `grove wit proxy`: the committed proxies are what the tool generates from
//! their callee's WIT, and the tool works from a built plugin too.

#[path = "../../runtime/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn committed_proxies_match_their_callees() {
    let callees = [
        "wit/examples/player",
        "wit/examples/guild",
        "wit/examples/probe",
        "examples/world/wit/world-cell",
        "examples/world/wit/world-player",
    ];
    for callee in callees {
        let source = repo(&format!("{callee}.wit"));
        let generated =
            grove_host::proxy_wit::from_wit(&[&repo("wit/actor"), &source], None).unwrap();
        let committed = std::fs::read_to_string(repo(&format!("{callee}-proxy.wit"))).unwrap();
        assert_eq!(
            generated, committed,
            "{callee}-proxy.wit is stale: regenerate it with \
             `grove wit proxy wit/actor {callee}.wit -o {callee}-proxy.wit`"
        );
    }
}

#[test]
fn the_cli_writes_a_proxy_from_wit_or_from_a_plugin() {
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("player-proxy.wit");
    let status = Command::new(env!("CARGO_BIN_EXE_grove"))
        .args(["wit", "proxy"])
        .arg(repo("wit/actor"))
        .arg(repo("wit/examples/player.wit"))
        .arg("-o")
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        std::fs::read_to_string(repo("wit/examples/player-proxy.wit")).unwrap()
    );

    let from_plugin = Command::new(env!("CARGO_BIN_EXE_grove"))
        .args(["wit", "proxy"])
        .arg(common::plugin("player"))
        .output()
        .unwrap();
    assert!(from_plugin.status.success());
    let text = String::from_utf8(from_plugin.stdout).unwrap();
    assert!(text.contains("package my-game:player-proxy;"), "{text}");
    assert!(text
        .contains("take-hit: func(hit: hit) -> result<result<stats, player-error>, call-error>;"));

    let bad = Command::new(env!("CARGO_BIN_EXE_grove"))
        .args(["wit", "proxy", "/no/such/file.wit"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot read WIT"));
}
