//! Logs, and traces exported over OTLP.
//!
//! Logs go to standard error, filtered by `RUST_LOG` (default `info`).
//! With `--otlp URL`, the spans Grove makes for traces (targets `grove::*`:
//! a span per turn, per HTTP call; see `grove_host::trace`) are exported to
//! an OpenTelemetry collector over OTLP/HTTP (protobuf), batched, in the
//! background on the host's runtime.

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

/// What exports traces, to flush at exit.
pub struct Telemetry(Option<SdkTracerProvider>);

impl Telemetry {
    /// Sends the spans not yet exported.
    pub fn shutdown(self) {
        if let Some(provider) = self.0 {
            if let Err(error) = provider.shutdown() {
                eprintln!("could not flush the last traces: {error}");
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
        .with_filter(Targets::new().with_target("grove", LevelFilter::TRACE));
    registry.with(traces).init();
    Ok(Telemetry(Some(provider)))
}
