//! Traces across actor calls: a call from actor A to B to C, made inside a
//! request's span, is one trace in which each turn is the child of the one
//! that called it, with the actor, the function and the outcome on it.
//! Spans are collected by OpenTelemetry's in-memory exporter through
//! `tracing-opentelemetry`, as `grove run --otlp` exports them.

mod common;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

use common::call;

fn attribute(span: &SpanData, key: &str) -> String {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_call_from_actor_to_actor_to_actor_is_one_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("grove-test"));
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let host = common::host_of(&["probe"]);
    let request = tracing::info_span!("request");
    let answered = call(&host, "probe/a", "relay", &[r#"["b", "c"]"#])
        .instrument(request)
        .await;
    assert_eq!(answered.unwrap(), r#"ok(["a", "b", "c"])"#);
    let trapped = call(&host, "probe/d", "fail", &[r#""on purpose""#]).await;
    assert!(trapped.unwrap_err().starts_with("trapped"));
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let request = spans.iter().find(|s| s.name == "request").unwrap();
    let trace = request.span_context.trace_id();
    let relays: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "turn" && attribute(s, "function") == "relay")
        .collect();
    assert_eq!(relays.len(), 3, "{spans:#?}");
    let turn_of = |actor: &str| {
        *relays
            .iter()
            .find(|s| attribute(s, "actor") == actor)
            .unwrap_or_else(|| panic!("no turn of {actor}"))
    };
    let (a, b, c) = (turn_of("probe/a"), turn_of("probe/b"), turn_of("probe/c"));
    for turn in [a, b, c] {
        assert_eq!(turn.span_context.trace_id(), trace);
        assert_eq!(attribute(turn, "outcome"), "ok");
    }
    assert_eq!(a.parent_span_id, request.span_context.span_id());
    assert_eq!(b.parent_span_id, a.span_context.span_id());
    assert_eq!(c.parent_span_id, b.span_context.span_id());
    // Each callee's turn lies within its caller's.
    assert!(a.start_time <= b.start_time && c.end_time <= b.end_time && b.end_time <= a.end_time);
    // A failed turn carries the error's kind, once.
    let failed = spans
        .iter()
        .find(|s| s.name == "turn" && attribute(s, "function") == "fail")
        .unwrap();
    let outcomes: Vec<String> = failed
        .attributes
        .iter()
        .filter(|kv| kv.key.as_str() == "outcome")
        .map(|kv| kv.value.to_string())
        .collect();
    assert_eq!(outcomes, ["trapped"]);
    // Turns nobody sent (activations starting) are traces of their own.
    let activations = spans
        .iter()
        .filter(|s| s.name == "turn" && attribute(s, "function") == "on-activate");
    assert_eq!(activations.count(), 4);
}
