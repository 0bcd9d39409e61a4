//! A game client in another language: `tests/clients/aioquic_client.py`,
//! written from `docs/protocol.md` with Python's aioquic, logs in through the
//! gateway, exchanges frames and datagrams with the `echo` actor, and closes.
//! `scripts/build-plugins` installs aioquic into `plugins/target/py-venv`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use grove_gateway_quic::{GatewayConfig, Identity};
use grove_host::gateway::{self, Authenticator};

use common::{eventually, ok};

fn python() -> PathBuf {
    let python =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target/py-venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/build-plugins first",
        python.display()
    );
    python
}

#[tokio::test]
async fn a_python_client_speaks_the_documented_protocol() {
    let host = common::host_of(&["echo"]);
    let identity = Identity::self_signed(&["localhost".into()]).unwrap();
    let config = GatewayConfig::new("127.0.0.1:0".parse().unwrap(), identity);
    let auth: Authenticator = "echo.login".parse().unwrap();
    let gateway = gateway::start(&host, config, auth).await.unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients/aioquic_client.py");
    let output = tokio::process::Command::new(python())
        .arg(script)
        .arg("127.0.0.1")
        .arg(gateway.local_addr().port().to_string())
        .arg(gateway.fingerprint().to_string())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("the Python client did not finish within 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("ok: echoed datagram"), "{stdout}");
    let session = stdout
        .lines()
        .find_map(|l| l.strip_prefix("session "))
        .expect("the client printed its session");
    let expected = format!("disconnect {session} client-closed: py bye");
    eventually(
        "echo/pyclient heard the Python client leave",
        Duration::from_secs(10),
        || async {
            ok(&host, "echo/pyclient", "events", &[])
                .await
                .contains(&expected)
        },
    )
    .await;
}
