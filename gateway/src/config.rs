//! Every setting of the gateway, as CLI flags and `BXB_*` environment variables. `gateway --help`
//! prints each with its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bxb_event::registry::RegistryArgs;
use bxb_kafka::KafkaArgs;
use bxb_publish::{ProducerArgs, SettingError};
use bxb_telemetry::TelemetryArgs;

/// Far above what one process can hold open (file descriptors); a bound so the cap fits the
/// semaphore that counts connections.
pub const MAX_CONNECTIONS_CEILING: usize = 1_000_000;

/// The settings of `gateway` (serve).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "gateway", about = "Authenticated HTTP ingestion of usage events into Kafka", version)]
pub struct GatewayConfig {
    /// Address to listen on (only the binary binds it; tests pass their own listener).
    #[arg(long = "listen-addr", env = "BXB_LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,
    /// The topic accepted events are published to; the schema subject is `<topic>-value`.
    #[arg(long = "events-topic", env = "BXB_EVENTS_TOPIC", default_value = bxb_kafka::EVENTS_TOPIC)]
    pub events_topic: String,
    /// How long receiving a request body may take (then 408), and separately how long publishing
    /// its events may take (then 503).
    #[arg(long = "request-timeout-ms", env = "BXB_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// How long a client may take to send a request's line and headers, counted from when the
    /// connection waits for a request (so also how long an idle keep-alive connection stays
    /// open); then the connection is closed. hyper's own default, which axum alone never applies.
    #[arg(long = "header-read-timeout-ms", env = "BXB_HEADER_READ_TIMEOUT_MS", default_value_t = 30_000)]
    pub header_read_timeout_ms: u64,
    /// On shutdown: how long to wait for the producer to deliver what is still queued.
    #[arg(long = "shutdown-flush-timeout-ms", env = "BXB_SHUTDOWN_FLUSH_TIMEOUT_MS", default_value_t = 10_000)]
    pub shutdown_flush_timeout_ms: u64,
    /// How often Kafka reachability (metadata of the events topic) is checked for `/readyz`.
    #[arg(long = "kafka-health-interval-ms", env = "BXB_KAFKA_HEALTH_INTERVAL_MS", default_value_t = 5_000)]
    pub kafka_health_interval_ms: u64,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub rate_limit: RateLimitArgs,
    /// The producer settings, `BXB_MAX_RECORD_BYTES` included.
    #[command(flatten)]
    pub producer: ProducerArgs,
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    pub connections: ConnectionArgs,
}

/// Where API keys come from. At least one source is required.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// JSON key file (see the gateway README), re-read every refresh interval.
    #[arg(long = "api-keys-file", env = "BXB_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// PostgreSQL URL of the database holding the `api_keys` table (never printed).
    #[arg(long = "postgres-url", env = "BXB_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// How often both key sources are re-read: new and revoked keys take effect within this.
    #[arg(long = "api-keys-refresh-ms", env = "BXB_API_KEYS_REFRESH_MS", default_value_t = 10_000)]
    pub refresh_ms: u64,
    /// How old the keys may get when a source keeps failing to refresh: past it every request
    /// with a key gets 503 and `/readyz` fails, so a key revoked meanwhile stops working.
    #[arg(long = "api-keys-max-staleness-ms", env = "BXB_API_KEYS_MAX_STALENESS_MS", default_value_t = 300_000)]
    pub max_staleness_ms: u64,
    /// Longest wait for the PostgreSQL key query (connection included); past it the refresh
    /// counts as failed.
    #[arg(long = "api-keys-query-timeout-ms", env = "BXB_API_KEYS_QUERY_TIMEOUT_MS", default_value_t = 5_000)]
    pub query_timeout_ms: u64,
}

/// Size and time limits of a request.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Most events in one `POST /v1/events/batch`.
    #[arg(long = "max-batch-events", env = "BXB_MAX_BATCH_EVENTS", default_value_t = 1_000)]
    pub max_batch_events: usize,
    /// Largest request body.
    #[arg(long = "max-body-bytes", env = "BXB_MAX_BODY_BYTES", default_value_t = 5 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Oldest accepted event timestamp, relative to the receive time (default 30 days: a monthly
    /// billing period plus grace for clients that buffered during an outage).
    #[arg(long = "max-event-age-ms", env = "BXB_MAX_EVENT_AGE_MS", default_value_t = 30 * 24 * 3_600_000)]
    pub max_event_age_ms: u64,
    /// How far in the future an event timestamp may be (clock skew of clients).
    #[arg(long = "max-future-skew-ms", env = "BXB_MAX_FUTURE_SKEW_MS", default_value_t = 5 * 60_000)]
    pub max_future_skew_ms: u64,
}

/// Per-organization rate limit, a token bucket counted in events.
#[derive(Debug, Clone, clap::Args)]
pub struct RateLimitArgs {
    /// Sustained events per second per organization; 0 turns the limit off.
    #[arg(long = "rate-limit-events-per-second", env = "BXB_RATE_LIMIT_EVENTS_PER_SECOND", default_value_t = 5_000)]
    pub events_per_second: u32,
    /// Bucket size: events an idle organization may send at once. At least the batch limit, so
    /// that a full batch can always pass.
    #[arg(long = "rate-limit-burst-events", env = "BXB_RATE_LIMIT_BURST_EVENTS", default_value_t = 10_000)]
    pub burst_events: u32,
}

/// How many connections and requests the gateway takes on, and how long a connection may idle.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectionArgs {
    /// A connection with no request in flight for this long is closed, whatever its protocol:
    /// one that never sends a byte, stops inside the HTTP/2 preface, or idles between requests
    /// (HTTP/2 gets a GOAWAY first).
    #[arg(long = "idle-connection-timeout-ms", env = "BXB_IDLE_CONNECTION_TIMEOUT_MS", default_value_t = 30_000)]
    pub idle_timeout_ms: u64,
    /// Most open connections; a connection past it is answered 503 (`overloaded`, `Retry-After`)
    /// and closed.
    #[arg(long = "max-connections", env = "BXB_MAX_CONNECTIONS", default_value_t = 4_096)]
    pub max_connections: usize,
    /// Most requests to `/v1/events` and `/v1/events/batch` being handled at once; a request
    /// past it is answered 503 (`overloaded`, `Retry-After`) before its body is read.
    #[arg(long = "max-requests-in-flight", env = "BXB_MAX_REQUESTS_IN_FLIGHT", default_value_t = 512)]
    pub max_requests_in_flight: usize,
}

/// A setting that cannot work, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
#[error("setting {setting}: {problem}")]
pub struct ConfigError {
    pub setting: &'static str,
    pub problem: String,
}

fn problem(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { setting, problem: problem.into() }
}

impl From<SettingError> for ConfigError {
    fn from(SettingError { setting, problem }: SettingError) -> Self {
        Self { setting, problem }
    }
}

impl GatewayConfig {
    /// Parses flags (and `BXB_*` variables) as the binary does; the first item is the program name.
    pub fn try_from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        <Self as clap::Parser>::try_parse_from(args)
    }

    /// Checks the settings that depend on each other; `run` calls it first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        if self.auth.api_keys_file.is_none() && self.auth.postgres_url.is_none() {
            return Err(problem("BXB_API_KEYS_FILE", "no API key source: set BXB_API_KEYS_FILE and/or BXB_POSTGRES_URL"));
        }
        if self.auth.refresh_ms == 0 {
            return Err(problem("BXB_API_KEYS_REFRESH_MS", "must be positive"));
        }
        if self.header_read_timeout_ms == 0 {
            return Err(problem("BXB_HEADER_READ_TIMEOUT_MS", "must be positive"));
        }
        if self.events_topic.is_empty() {
            return Err(problem("BXB_EVENTS_TOPIC", "must not be empty"));
        }
        if limits.max_batch_events == 0 {
            return Err(problem("BXB_MAX_BATCH_EVENTS", "must be at least 1"));
        }
        if limits.max_body_bytes < 1024 {
            return Err(problem("BXB_MAX_BODY_BYTES", "must be at least 1024"));
        }
        let producer = &self.producer;
        producer.validate()?;
        let rate = &self.rate_limit;
        if rate.events_per_second > 0 && (rate.burst_events as usize) < limits.max_batch_events {
            return Err(problem(
                "BXB_RATE_LIMIT_BURST_EVENTS",
                format!("must be at least BXB_MAX_BATCH_EVENTS ({}) or a full batch could never pass", limits.max_batch_events),
            ));
        }
        if producer.delivery_timeout_ms + producer.enqueue_timeout_ms >= self.request_timeout_ms {
            return Err(problem(
                "BXB_KAFKA_DELIVERY_TIMEOUT_MS",
                "delivery timeout plus enqueue timeout must be below BXB_REQUEST_TIMEOUT_MS, so a slow Kafka is answered with 503",
            ));
        }
        if self.kafka_health_interval_ms == 0 {
            return Err(problem("BXB_KAFKA_HEALTH_INTERVAL_MS", "must be positive"));
        }
        self.validate_connections()?;
        self.validate_key_staleness()
    }

    fn validate_connections(&self) -> Result<(), ConfigError> {
        let connections = &self.connections;
        if connections.idle_timeout_ms == 0 {
            return Err(problem("BXB_IDLE_CONNECTION_TIMEOUT_MS", "must be positive"));
        }
        if !(1..=MAX_CONNECTIONS_CEILING).contains(&connections.max_connections) {
            return Err(problem("BXB_MAX_CONNECTIONS", format!("must be between 1 and {MAX_CONNECTIONS_CEILING}")));
        }
        if connections.max_requests_in_flight == 0 {
            return Err(problem("BXB_MAX_REQUESTS_IN_FLIGHT", "must be at least 1"));
        }
        Ok(())
    }

    fn validate_key_staleness(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        if auth.query_timeout_ms == 0 {
            return Err(problem("BXB_API_KEYS_QUERY_TIMEOUT_MS", "must be positive"));
        }
        if auth.max_staleness_ms <= auth.refresh_ms + auth.query_timeout_ms {
            return Err(problem(
                "BXB_API_KEYS_MAX_STALENESS_MS",
                "must exceed BXB_API_KEYS_REFRESH_MS plus BXB_API_KEYS_QUERY_TIMEOUT_MS, or healthy keys would go stale between two refreshes",
            ));
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> GatewayConfig {
        let mut all = vec!["gateway", "--api-keys-file=keys.json"];
        all.extend_from_slice(args);
        GatewayConfig::try_parse_from(all).unwrap()
    }

    #[test]
    fn defaults_are_consistent() {
        parse(&[]).validate().unwrap();
    }

    #[test]
    fn a_record_limit_above_the_broker_default_is_refused() {
        let error = parse(&["--max-record-bytes=2000000"]).validate().unwrap_err();
        assert_eq!(error.setting, "BXB_MAX_RECORD_BYTES");
    }

    #[test]
    fn a_burst_below_the_batch_limit_is_refused() {
        let error = parse(&["--rate-limit-burst-events=10"]).validate().unwrap_err();
        assert_eq!(error.setting, "BXB_RATE_LIMIT_BURST_EVENTS");
        parse(&["--rate-limit-burst-events=10", "--rate-limit-events-per-second=0"]).validate().unwrap();
    }

    #[test]
    fn the_delivery_timeout_must_fit_in_the_request_timeout() {
        let error = parse(&["--kafka-delivery-timeout-ms=30000"]).validate().unwrap_err();
        assert_eq!(error.setting, "BXB_KAFKA_DELIVERY_TIMEOUT_MS");
    }

    #[test]
    fn connection_limits_must_be_positive() {
        for (flag, setting) in [
            ("--idle-connection-timeout-ms=0", "BXB_IDLE_CONNECTION_TIMEOUT_MS"),
            ("--max-connections=0", "BXB_MAX_CONNECTIONS"),
            ("--max-connections=2000000", "BXB_MAX_CONNECTIONS"),
            ("--max-requests-in-flight=0", "BXB_MAX_REQUESTS_IN_FLIGHT"),
        ] {
            assert_eq!(parse(&[flag]).validate().unwrap_err().setting, setting, "{flag}");
        }
    }

    #[test]
    fn keys_may_not_go_stale_between_two_healthy_refreshes() {
        let error = parse(&["--api-keys-refresh-ms=10000", "--api-keys-query-timeout-ms=5000", "--api-keys-max-staleness-ms=15000"])
            .validate()
            .unwrap_err();
        assert_eq!(error.setting, "BXB_API_KEYS_MAX_STALENESS_MS");
        parse(&["--api-keys-refresh-ms=10000", "--api-keys-query-timeout-ms=5000", "--api-keys-max-staleness-ms=15001"])
            .validate()
            .unwrap();
        assert_eq!(parse(&["--api-keys-query-timeout-ms=0"]).validate().unwrap_err().setting, "BXB_API_KEYS_QUERY_TIMEOUT_MS");
    }

    #[test]
    fn a_key_source_is_required() {
        let mut config = parse(&[]);
        config.auth.api_keys_file = None;
        config.auth.postgres_url = None;
        assert_eq!(config.validate().unwrap_err().setting, "BXB_API_KEYS_FILE");
    }
}
