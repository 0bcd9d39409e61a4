//! `grove run --otlp URL` exports a span per turn over OTLP/HTTP: a call
//! made over HTTP with a W3C `traceparent`, from actor A to B to C, reaches
//! a collector as spans of the caller's trace naming each actor. The
//! collector here is a stub that keeps the protobuf bodies it receives
//! (strings and ids appear in them as they are).

#[path = "../../runtime/tests/common/mod.rs"]
mod common;
mod running;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;
use running::RunningHost;

/// The trace a client started: W3C `traceparent` with this trace id.
const TRACE_ID: [u8; 16] = [
    0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80, 0x31, 0x9c,
];
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn turns_are_exported_over_otlp_in_the_callers_trace() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let collector = runtime.block_on(async {
        let kept = received.clone();
        let app = Router::new().route(
            "/v1/traces",
            post(move |body: Bytes| {
                let kept = kept.clone();
                async move { kept.lock().unwrap().push(body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });

    let plugins = common::plugin_dir(&["probe"]);
    let data = tempfile::tempdir().unwrap();
    let otlp = format!("http://{collector}/v1/traces");
    let host = RunningHost::start_with(plugins.path(), data.path(), &["--otlp", &otlp]);
    let answer = runtime.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/v1/actors/probe/a/relay", host.url))
            .header("traceparent", TRACEPARENT)
            .body(r#"[["b", "c"]]"#)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert_eq!(answer, r#"{"ok":["a","b","c"]}"#);
    // Stopping flushes what is not exported yet.
    let log = host.interrupt();

    let bodies = received.lock().unwrap();
    let all: Vec<u8> = bodies.iter().flat_map(|b| b.iter().copied()).collect();
    assert!(!bodies.is_empty(), "nothing exported; host log:\n{log}");
    assert!(
        contains(&all, &TRACE_ID),
        "the client's trace id is missing"
    );
    for expected in [
        "probe/a",
        "probe/b",
        "probe/c",
        "relay",
        "turn",
        "http call",
        "grove",
    ] {
        assert!(
            contains(&all, expected.as_bytes()),
            "`{expected}` is missing from the export"
        );
    }
}
