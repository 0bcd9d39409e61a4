//! `GET /v1/openapi.json` from the outside: `tests/clients/openapi_check.py`
//! validates the document with `openapi-spec-validator`, calls every function
//! of the example plugins with a request built from the document alone, and
//! validates each answer against its result schema. The document follows
//! the plugins: a deploy changes it.
//!
//! `scripts/build-plugins` installs the Python packages into
//! `plugins/target/py-venv`.

#[path = "../../runtime/tests/common/mod.rs"]
mod common;
mod running;

use std::path::PathBuf;
use std::process::Command;

use running::{reqwest, RunningHost, GROVE};
use serde_json::Value;

/// The plugins `scripts/demo` runs.
const EXAMPLES: [&str; 9] = [
    "counter",
    "showcase",
    "greeter",
    "player",
    "guild",
    "echo",
    "world_auth",
    "world_player",
    "world_cell",
];

fn python() -> PathBuf {
    let python =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target/py-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/build-plugins",
        python.display()
    );
    python
}

fn document(host: &RunningHost) -> Value {
    serde_json::from_str(&reqwest::blocking_get(&format!("{}/v1/openapi.json", host.url)).unwrap())
        .unwrap()
}

#[test]
fn every_example_function_is_callable_from_the_openapi_document_alone() {
    let plugins = common::plugin_dir(&EXAMPLES);
    let data = tempfile::tempdir().unwrap();
    let host = RunningHost::start(plugins.path(), data.path());

    let check = Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/openapi_check.py"
        ))
        .arg(&host.url)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&check.stdout);
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(check.status.success(), "{out}\n{err}");
    // Every function of every example plugin, and the health check.
    let functions: usize = serde_json::from_str::<Value>(
        &reqwest::blocking_get(&format!("{}/v1/plugins", host.url)).unwrap(),
    )
    .unwrap()["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["functions"].as_array().unwrap().len())
        .sum();
    assert!(functions > 30, "{functions}");
    assert!(
        out.contains(&format!("{} operations, 0 failed", functions + 1)),
        "{out}"
    );
}

#[test]
fn the_document_follows_a_deploy() {
    let plugins = common::plugin_dir(&["counter"]);
    let data = tempfile::tempdir().unwrap();
    let host = RunningHost::start(plugins.path(), data.path());
    let before = document(&host);
    let add = &before["paths"]["/v1/actors/counter/{key}/add"]["post"];
    assert_eq!(add["operationId"], "counter.add");
    assert_eq!(
        add["requestBody"]["content"]["application/json"]["schema"]["prefixItems"][0]["title"],
        "amount"
    );
    assert!(before["paths"]
        .get("/v1/actors/counter/{key}/version")
        .is_none());

    let deployed = Command::new(GROVE)
        .args(["deploy", "--host", &host.url])
        .arg(common::plugin("counter_next"))
        .output()
        .unwrap();
    assert!(deployed.status.success(), "{deployed:?}");
    let after = document(&host);
    assert_ne!(after["info"]["version"], before["info"]["version"]);
    let version = &after["paths"]["/v1/actors/counter/{key}/version"]["post"];
    assert_eq!(
        version["responses"]["200"]["content"]["application/json"]["schema"],
        serde_json::json!({ "type": "string" })
    );
}
