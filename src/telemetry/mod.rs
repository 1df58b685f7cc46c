//! Logs and traces. Logs carry ids, never phone numbers, names, notes or card numbers: request
//! messages that hold PII have redacting `Debug` impls (see `crate::proto`). Traces carry the
//! same span fields as the logs, so the same rule holds for them.
//!
//! - **Logs:** human or JSON lines on stderr; `RUST_LOG` overrides the default `info` level.
//! - **Traces:** exported over OTLP/gRPC when an endpoint is configured (off otherwise). A span
//!   per RPC ([`RpcLayer`], which continues the caller's W3C `traceparent`), per domain
//!   operation (`#[tracing::instrument]`), per Redis command (`redis_link`), and per SQL
//!   statement ([`statement_spans`], from sqlx's statement log: the SQL with its `$n`
//!   placeholders and the time taken, never the values). Sampling is parent-based: a sampled
//!   caller is always traced, an unsampled one never, and new traces at `sample_ratio`.

mod rpc_layer;
mod statement_spans;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

pub use self::rpc_layer::RpcLayer;
use crate::config::LogFormat;

/// Where traces go, if anywhere.
#[derive(Debug, Clone)]
pub struct TraceSettings {
    pub otlp_endpoint: Option<String>,
    pub sample_ratio: f64,
}

/// Keeps the trace exporter alive; `shutdown` flushes the spans not yet sent.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("trace export did not flush: {error}");
        }
    }
}

fn tracer_provider(endpoint: &str, sample_ratio: f64) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("switchboard")
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            sample_ratio.clamp(0.0, 1.0),
        ))))
        .with_resource(resource)
        .build())
}

/// Installs the global subscriber (a second call, as in tests, keeps the first). Needs a Tokio
/// runtime when traces are exported.
pub fn init(format: LogFormat, traces: &TraceSettings) -> Telemetry {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Human => logs.with_filter(filter()).boxed(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_filter(filter())
            .boxed(),
    };
    let provider = match traces.otlp_endpoint.as_deref() {
        None | Some("") => None,
        Some(endpoint) => match tracer_provider(endpoint, traces.sample_ratio) {
            Ok(provider) => Some(provider),
            Err(error) => {
                eprintln!("traces off: the OTLP exporter for {endpoint} failed: {error}");
                None
            }
        },
    };
    // Traces take the info spans and Switchboard's own debug spans (RPCs, Redis commands);
    // sqlx's statement log becomes a span per statement.
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("switchboard"))
            .with_filter(EnvFilter::new("info,switchboard=debug"))
    });
    let statements = provider.as_ref().map(|provider| {
        statement_spans::StatementSpans::new(provider.tracer("switchboard"))
            .with_filter(EnvFilter::new("sqlx::query=debug"))
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .with(statements)
        .try_init();
    drop(installed);
    Telemetry { provider }
}
