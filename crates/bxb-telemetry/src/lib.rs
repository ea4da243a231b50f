//! What every binary of the pipeline (gateway, both consumers, `bxbctl`) sets up around its
//! library's `run`: telemetry, and the signal it stops on.
//!
//! - [`init`] installs the `tracing` subscriber — JSON (or text) logs to stderr, and an
//!   OpenTelemetry layer whose spans are exported over OTLP when an endpoint is configured —
//!   and the Prometheus recorder.
//!   The layer is installed even without an exporter so that W3C trace context still flows
//!   from the gateway's HTTP request, through Kafka headers, into the consumers' write spans.
//! - [`trace_context`] turns the current span into `traceparent` headers and back.
//! - [`metrics`]: one Prometheus recorder per process behind the `metrics` facade.
//! - [`health`] is the `/healthz`, `/readyz` and `/metrics` router every binary serves.
//! - [`shutdown`] is the signal every binary stops on (SIGTERM or Ctrl-C), as a cancellation
//!   token for the library's `run`.

pub mod health;
pub mod metrics;
pub mod shutdown;
pub mod trace_context;

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Logging and tracing settings, the same for every binary.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// Log format: `json` (one object per line) or `text`.
    #[arg(long = "log-format", env = "BXB_LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info,bxb_gateway=debug`.
    #[arg(long = "log-filter", env = "BXB_LOG", default_value = "info")]
    pub log_filter: String,
    /// OTLP/gRPC endpoint to export traces to, e.g. `http://127.0.0.1:4317`. No export when unset.
    #[arg(long = "otlp-endpoint", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

impl Default for TelemetryArgs {
    fn default() -> Self {
        Self { log_format: LogFormat::Json, log_filter: "info".into(), otlp_endpoint: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid log filter (BXB_LOG): {0}")]
    Filter(String),
    /// The OTLP exporter cannot be built from the endpoint.
    #[error("invalid OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT): {0}")]
    Otlp(String),
}

/// Flushes buffered spans when dropped; keep it alive for the life of `main`.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs logging, tracing and the metrics recorder for `service`. A second call in the same
/// process (tests start several servers) keeps the first subscriber and returns a guard that
/// does nothing.
pub fn init(service: &'static str, args: &TelemetryArgs) -> Result<TelemetryGuard, TelemetryError> {
    // First, so that nothing measured while starting up is lost.
    metrics::install();
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(TelemetryGuard { provider: None });
    }
    let filter = EnvFilter::try_new(&args.log_filter).map_err(|e| TelemetryError::Filter(e.to_string()))?;
    let provider = tracer_provider(service, args.otlp_endpoint.as_deref())?;
    trace_context::install_propagator();
    // The log filter applies to logs only: spans must still reach the OpenTelemetry layer for
    // trace context to propagate when logs are quiet.
    let otel =
        tracing_opentelemetry::layer().with_tracer(provider.tracer(service)).with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let fmt = match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(filter).boxed(),
    };
    let installed = tracing_subscriber::registry().with(fmt).with(otel).try_init().is_ok();
    let _ = INSTALLED.set(());
    if installed {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    Ok(TelemetryGuard { provider: installed.then_some(provider) })
}

/// Logging for tests: text to the test harness' captured output, only when `TEST_LOG` is set;
/// trace context propagation is always on.
pub fn init_for_tests() {
    let args = TelemetryArgs {
        log_format: LogFormat::Text,
        log_filter: if std::env::var_os("TEST_LOG").is_some() { "info".into() } else { "off".into() },
        otlp_endpoint: None,
    };
    std::mem::forget(init("bxb-test", &args));
}

fn tracer_provider(service: &'static str, endpoint: Option<&str>) -> Result<SdkTracerProvider, TelemetryError> {
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Some(endpoint) = endpoint else {
        return Ok(builder.build());
    };
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::Otlp(e.to_string()))?;
    Ok(builder.with_batch_exporter(exporter).build())
}
