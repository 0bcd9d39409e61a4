//! `GET /play` in a real browser: headless Chromium (Debian's `chromium`,
//! which `scripts/test` installs), driven over the DevTools protocol, loads
//! the world demo's page from a running host, pins the WebTransport door's
//! certificate by its hash, logs in, sends a command and gets the reply and
//! snapshot datagrams; then the same over the WebSocket door, and a refused
//! login over each. Screenshots
//! are kept in `target/tmp/play-*.png`.

#[path = "../../runtime/tests/common/mod.rs"]
mod common;
mod running;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use running::{reqwest, RunningHost};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

fn free_port(udp: bool) -> u16 {
    if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// Headless Chromium with its DevTools endpoint open.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    port: u16,
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=1000,800",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium is missing: run scripts/test, which installs it");
        // Chromium writes the port it chose into the profile.
        let file = profile.path().join("DevToolsActivePort");
        let start = Instant::now();
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|text| text.lines().next().and_then(|l| l.parse().ok()))
            {
                break port;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromium did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Browser {
            child,
            _profile: profile,
            port,
        }
    }

    /// The DevTools address of the browser's page.
    fn page_url(&self) -> String {
        let list =
            reqwest::blocking_get(&format!("http://127.0.0.1:{}/json/list", self.port)).unwrap();
        let targets: Vec<Value> = serde_json::from_str(&list).unwrap();
        targets
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("no page target")
            .to_owned()
    }
}

impl Page {
    /// Connects to a page's DevTools address.
    async fn connect(url: String, port: u16) -> Page {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (socket, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
        Page { socket, next: 0 }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Page {
    socket: WebSocketStream<TcpStream>,
    next: u64,
}

impl Page {
    /// Sends one DevTools command and returns its result.
    async fn send(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let command = json!({"id": id, "method": method, "params": params});
        self.socket
            .send(Message::Text(command.to_string().into()))
            .await
            .unwrap();
        loop {
            let Some(Ok(Message::Text(text))) = self.socket.next().await else {
                panic!("the DevTools connection ended");
            };
            let answer: Value = serde_json::from_str(&text).unwrap();
            if answer["id"] == id {
                assert!(answer["error"].is_null(), "{method}: {answer}");
                return answer["result"].clone();
            }
        }
    }

    /// `window.grovePlay`, as the page shows its state.
    async fn state(&mut self) -> Value {
        let result = self
            .send(
                "Runtime.evaluate",
                json!({"expression": "JSON.stringify(window.grovePlay ?? null)", "returnByValue": true}),
            )
            .await;
        serde_json::from_str(result["result"]["value"].as_str().unwrap_or("null")).unwrap()
    }

    /// Waits until the page is in, has a reply and snapshots; returns its
    /// state.
    async fn wait_until_playing(&mut self) -> Value {
        self.wait_until("playing", |state| {
            state["state"] == "in"
                && state["replies"].as_u64() >= Some(1)
                && state["snapshots"].as_u64() >= Some(2)
                && state["players"].as_u64() >= Some(1)
        })
        .await
    }

    /// Waits until the page's state passes `test`; returns the state.
    async fn wait_until(&mut self, what: &str, test: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let state = self.state().await;
            if test(&state) {
                return state;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the page did not get {what}: {state:#}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn open(&mut self, url: String) {
        self.send("Page.navigate", json!({ "url": url })).await;
    }

    async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .send("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

fn artifact(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../../target/tmp/{name}"))
}

#[test]
fn a_browser_plays_over_webtransport_and_over_websocket() {
    let plugins = common::plugin_dir(&["world_auth", "world_player", "world_cell"]);
    let data = tempfile::tempdir().unwrap();
    let (quic, wt, ws) = (free_port(true), free_port(true), free_port(false));
    let host = RunningHost::start_with(
        plugins.path(),
        data.path(),
        &[
            "--gateway",
            &format!("127.0.0.1:{quic}"),
            "--gateway-auth",
            "world-auth.login",
            "--gateway-wt",
            &format!("127.0.0.1:{wt}"),
            "--gateway-ws",
            &format!("127.0.0.1:{ws}"),
            "--gateway-ws-plain",
        ],
    );
    let config: Value = serde_json::from_str(
        &reqwest::blocking_get(&format!("{}/play/config.json", host.url)).unwrap(),
    )
    .unwrap();
    assert_eq!(config["webtransport"]["port"], wt);
    assert_eq!(config["webtransport"]["path"], "/grove");
    let hash = config["webtransport"]["certificate_hashes"][0]
        .as_str()
        .unwrap();
    assert_eq!(hash.len(), 64, "{config}");
    assert_eq!(config["websocket"], json!({"port": ws, "secure": false}));

    let browser = Browser::start();
    let page_url = browser.page_url();
    let runtime = reqwest::runtime();
    runtime.block_on(async {
        let mut page = Page::connect(page_url, browser.port).await;
        page.send("Page.enable", json!({})).await;
        page.open(format!("{}/play?name=ayla", host.url)).await;
        let state = page.wait_until_playing().await;
        assert_eq!(state["transport"], "webtransport", "{state:#}");
        assert_eq!(state["owner"], "world-player/ayla", "{state:#}");
        assert_eq!(state["lastReply"]["type"], "ok", "{state:#}");
        page.screenshot(&artifact("play-webtransport.png")).await;

        page.open(format!("{}/play?name=bren&transport=websocket", host.url))
            .await;
        let state = page.wait_until_playing().await;
        assert_eq!(state["transport"], "websocket", "{state:#}");
        assert_eq!(state["owner"], "world-player/bren", "{state:#}");
        page.screenshot(&artifact("play-websocket.png")).await;

        // A name the authenticator refuses: over WebTransport the page
        // does not retry over WebSocket; over WebSocket it shows the code.
        page.open(format!("{}/play?name=1nvalid", host.url)).await;
        let state = page.wait_until("refused", |s| s["state"] == "failed").await;
        let error = state["error"].as_str().unwrap_or("");
        assert!(error.contains("login refused"), "{state:#}");
        assert!(
            !state["log"].to_string().contains("falling back"),
            "{state:#}"
        );
        page.open(format!(
            "{}/play?name=1nvalid&transport=websocket",
            host.url
        ))
        .await;
        let state = page.wait_until("refused", |s| s["state"] == "failed").await;
        assert_eq!(state["closeCode"], 4002, "{state:#}");
        assert!(
            !state["closeReason"].as_str().unwrap_or("").is_empty(),
            "{state:#}"
        );
    });
    // Both logins went through the same sessions registry, each counted
    // by its door.
    let metrics = reqwest::blocking_get(&format!("{}/metrics", host.url)).unwrap();
    for series in [
        r#"grove_gateway_sessions_opened_total{door="webtransport"} 1"#,
        r#"grove_gateway_sessions_opened_total{door="websocket"} 1"#,
        r#"grove_gateway_closes_total{reason="auth-rejected"} 2"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == series),
            "no `{series}` in {metrics}"
        );
    }
}
