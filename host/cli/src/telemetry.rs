//! Logs, and traces exported over OTLP.
//!
//! Logs go to standard error, filtered by `RUST_LOG` (default `info`).
//! With `--otlp URL`, the spans Grove makes for traces (targets
//! `grove::turn`, a span per turn, see `grove_host::trace`, and
//! `grove::http`, a span per HTTP call) are exported to
//! an OpenTelemetry collector over OTLP/HTTP (protobuf), batched, in the
//! background on the host's runtime.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The target of the span each HTTP call runs in.
pub const HTTP_TARGET: &str = "grove::http";

/// How long stopping waits for the last traces to reach the collector.
const FLUSH_FOR: Duration = Duration::from_secs(5);

/// What exports traces, to flush at exit.
pub struct Telemetry(Option<SdkTracerProvider>);

impl Telemetry {
    /// Sends the spans not yet exported, waiting at most [`FLUSH_FOR`].
    pub async fn shutdown(self) {
        let Some(provider) = self.0 else {
            return;
        };
        // The exporter's shutdown blocks its thread until the batch task on
        // this runtime has sent: not on one of the runtime's workers.
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown());
        match tokio::time::timeout(FLUSH_FOR, flushed).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => eprintln!("could not flush the last traces: {error}"),
            Ok(Err(_)) | Err(_) => {
                eprintln!("the last traces were not flushed within {FLUSH_FOR:?}")
            }
        }
    }
}

/// Installs logging, and trace export to `otlp` (the collector's traces
/// endpoint, e.g. `http://127.0.0.1:4318/v1/traces`) if given.
pub fn init(otlp: Option<&str>, host_name: &str) -> anyhow::Result<Telemetry> {
    let logs = tracing_subscriber::fmt::layer().with_filter(
        EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,grove_host=info".into()),
    );
    let registry = tracing_subscriber::registry().with(logs);
    let Some(url) = otlp else {
        registry.init();
        return Ok(Telemetry(None));
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot export traces to {url}: {e}"))?;
    let processor =
        BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio).build();
    let resource = Resource::builder()
        .with_service_name("grove")
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            host_name.to_owned(),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    let traces = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("grove"))
        .with_filter(
            Targets::new()
                .with_target(grove_host::trace::TURN_TARGET, LevelFilter::TRACE)
                .with_target(HTTP_TARGET, LevelFilter::TRACE),
        );
    registry.with(traces).init();
    Ok(Telemetry(Some(provider)))
}
