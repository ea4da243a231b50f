//! The bxb ingestion gateway: the front door of the pipeline.
//!
//! ```text
//! client ──HTTP JSON──▶ gateway ──Avro (registry), key = organization_id──▶ Kafka `events` ──▶ consumers
//!          API key       │ auth → rate check → parse + validate → rate limit → encode → publish → await acks
//!                        └─ 202 only once Kafka holds every event of the request
//! ```
//!
//! - [`auth`]: API keys (hashed, from a file and/or PostgreSQL) to organizations; the key format
//!   (make, hash, match) is [`bxb_api_key`]'s.
//! - parsing: [`bxb_event::ingest`] turns JSON bodies into [`bxb_event::Event`]s with the problems by
//!   index and field; [`error`] maps its refusals to responses.
//! - [`limits::rate`]: per-organization token buckets; an organization with an empty bucket is
//!   refused before its body is read, the events of a request are charged once parsed.
//! - publishing: [`bxb_publish::Publisher`], the shared idempotent producer; waits for every
//!   delivery report. [`error`] maps its errors to responses.
//! - [`error`]: the one error type that decides status, body, `Retry-After` and log level.
//! - [`routes`] and [`openapi`]: the HTTP API and its generated description.
//!
//! [`run`] serves until its shutdown token is cancelled; the binary and the tests call it alike.

pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod limits;
pub mod openapi;
mod readiness;
pub mod routes;
mod serve;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bxb_event::registry::SchemaRegistry;
use bxb_telemetry::health::Readiness;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::GatewayConfig;
pub use error::GatewayError;

/// How often idle rate-limit buckets are forgotten.
const RATE_LIMIT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Serves the gateway on `listener` until `shutdown` is cancelled, then shuts down gracefully:
/// stops accepting, lets in-flight requests finish (at most the request timeout), and flushes
/// the producer (at most `BXB_SHUTDOWN_FLUSH_TIMEOUT_MS`).
pub async fn run(config: GatewayConfig, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let readiness = Readiness::default();
    let kafka_ready = readiness.check("kafka");
    let schema_ready = readiness.check("schema");
    let keys_ready = readiness.check("api_keys");

    let key_sources = auth::KeySources::open(&config.auth)?;
    let registry = SchemaRegistry::new(&config.registry)?;
    let encoder = Arc::new(OnceLock::new());
    let connection = config.kafka.client_config()?;
    let publisher =
        bxb_publish::Publisher::new(&config.producer, &connection, "bxb-gateway", config.events_topic.clone(), encoder.clone())?;
    let keys = Arc::new(auth::KeyStore::new(Duration::from_millis(config.auth.max_staleness_ms)));
    let state = Arc::new(routes::AppState {
        keys: keys.clone(),
        publisher,
        rate_limiter: limits::rate::RateLimiter::new(config.rate_limit.events_per_second, config.rate_limit.burst_events),
        limits: config.limits.clone(),
        window: bxb_event::ingest::TimestampWindow {
            max_age_ms: config.limits.max_event_age_ms,
            max_future_skew_ms: config.limits.max_future_skew_ms,
        },
        request_timeout: config.request_timeout(),
        in_flight: limits::in_flight::InFlightLimit::new(config.connections.max_requests_in_flight),
    });

    // Background work outlives the HTTP drain so that in-flight requests still see fresh keys.
    let background = CancellationToken::new();
    let mut tasks = JoinSet::new();
    tasks.spawn(key_sources.keep_fresh(keys, keys_ready, background.clone()));
    tasks.spawn(readiness::register_schema(registry, config.events_topic.clone(), encoder, schema_ready, background.clone()));
    tasks.spawn(readiness::watch_kafka(
        state.publisher.producer().clone(),
        config.events_topic.clone(),
        Duration::from_millis(config.kafka_health_interval_ms),
        kafka_ready,
        background.clone(),
    ));
    tasks.spawn(sweep_rate_limiter(state.clone(), background.clone()));

    let address = listener.local_addr()?;
    tracing::info!(%address, topic = config.events_topic, "gateway listening");
    let app = routes::router(state.clone(), readiness);
    let drain = config.request_timeout() + Duration::from_secs(1);
    let connection_limits = serve::ConnectionLimits {
        header_read_timeout: Duration::from_millis(config.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(config.connections.idle_timeout_ms),
        max_connections: config.connections.max_connections,
    };
    serve::serve(listener, app, connection_limits, drain, shutdown).await;

    background.cancel();
    tasks.shutdown().await;
    let flush_timeout = Duration::from_millis(config.shutdown_flush_timeout_ms);
    let started = Instant::now();
    match state.publisher.flush(flush_timeout).await {
        Ok(()) => tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "producer flushed"),
        Err(e) => tracing::warn!(error = %e, "producer not flushed within the shutdown timeout"),
    }
    Ok(())
}

async fn sweep_rate_limiter(state: Arc<routes::AppState>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RATE_LIMIT_SWEEP_INTERVAL) => {}
        }
        if let Some(limiter) = &state.rate_limiter {
            limiter.forget_idle(Instant::now());
        }
    }
}
