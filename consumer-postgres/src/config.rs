//! The settings of consumer-postgres: [`Config`], the binary's, made of the consumer runtime's,
//! PostgreSQL's ([`PostgresArgs`]: where to write, how, and what to keep) and telemetry's.

use std::time::Duration;

use bxb_consumer::ConsumerArgs;
use bxb_telemetry::TelemetryArgs;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

const DAY_MS: i64 = 86_400_000;

/// Every setting of the binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "consumer-postgres", version, about = "Writes the billing-critical subset of bxb events to PostgreSQL.")]
pub struct Config {
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    #[command(flatten)]
    pub postgres: PostgresArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Config {
    /// The binary's defaults around `consumer` and `postgres` (what tests start from).
    pub fn new(consumer: ConsumerArgs, postgres: PostgresArgs) -> Self {
        Self { consumer, postgres, telemetry: TelemetryArgs::default() }
    }
}

/// The database of the local stack (`./dev/up`): the default of `BXB_POSTGRES_URL`.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://bxb:bxb@127.0.0.1:15432/bxb";

/// Settings of the PostgreSQL sink.
#[derive(Debug, Clone, clap::Args)]
pub struct PostgresArgs {
    /// Connection URL (never printed: it may hold the password).
    #[arg(id = "postgres_url", long = "postgres-url", env = "BXB_POSTGRES_URL", hide_env_values = true, default_value = DEFAULT_POSTGRES_URL)]
    pub url: String,
    /// Size of the connection pool: batch writes, partition maintenance and the billable-metrics
    /// refresh share it.
    #[arg(long = "postgres-max-connections", env = "BXB_POSTGRES_MAX_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Server-side limit of one statement; a statement that hits it is retried.
    #[arg(long = "postgres-statement-timeout-ms", env = "BXB_POSTGRES_STATEMENT_TIMEOUT_MS", default_value_t = 30_000)]
    pub statement_timeout_ms: u64,
    /// How long to wait for a pooled connection (or a new one) before the write is retried.
    #[arg(long = "postgres-acquire-timeout-ms", env = "BXB_POSTGRES_ACQUIRE_TIMEOUT_MS", default_value_t = 10_000)]
    pub acquire_timeout_ms: u64,
    /// How long partition DDL waits for its table lock before giving up (and retrying later),
    /// so that it never queues writers behind a long-running query.
    #[arg(long = "postgres-lock-timeout-ms", env = "BXB_POSTGRES_LOCK_TIMEOUT_MS", default_value_t = 5_000)]
    pub lock_timeout_ms: u64,
    /// How often the billable metrics are reloaded from `billable_metrics` in the background.
    /// Writes do not wait for it: each batch checks that its copy is current as of its records'
    /// append time (see `billable`).
    #[arg(long = "billable-refresh-ms", env = "BXB_BILLABLE_REFRESH_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub billable_refresh_ms: u64,
    /// The largest difference allowed between the Kafka brokers' clocks (which stamp append
    /// times) and PostgreSQL's (which stamps `billable_metrics` changes): a batch is judged with
    /// a copy of `billable_metrics` current as of its latest append time plus this.
    #[arg(long = "billable-clock-skew-ms", env = "BXB_BILLABLE_CLOCK_SKEW_MS", default_value_t = 100, value_parser = clap::value_parser!(i64).range(0..=60_000))]
    pub billable_clock_skew_ms: i64,
    /// Codes billable for every organization, comma-separated (for simple deployments).
    #[arg(long = "billable-codes", env = "BXB_BILLABLE_CODES", value_delimiter = ',')]
    pub billable_codes: Vec<String>,
    /// Width of one partition of `events`, in days (partitions start at multiples of it from
    /// 1970-01-01 UTC; 1 = one partition per UTC day).
    #[arg(long = "postgres-partition-interval-days", env = "BXB_POSTGRES_PARTITION_INTERVAL_DAYS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=366))]
    pub partition_interval_days: u32,
    /// How many partitions after the current one are created ahead of time.
    #[arg(long = "postgres-partitions-ahead", env = "BXB_POSTGRES_PARTITIONS_AHEAD", default_value_t = 3)]
    pub partitions_ahead: u32,
    /// Partitions whose whole range is older than this many days are dropped, and events older
    /// than the oldest kept partition are not written. 0 keeps everything.
    #[arg(long = "retention-days", env = "BXB_RETENTION_DAYS", default_value_t = 400)]
    pub retention_days: u32,
    /// Events further than this many days in the future are not written (they would create
    /// partitions for dates that may never see traffic).
    #[arg(long = "postgres-max-future-days", env = "BXB_POSTGRES_MAX_FUTURE_DAYS", default_value_t = 7)]
    pub max_future_days: u32,
    /// How often partitions are created ahead and expired ones dropped.
    #[arg(long = "postgres-maintenance-interval-ms", env = "BXB_POSTGRES_MAINTENANCE_INTERVAL_MS", default_value_t = 3_600_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub maintenance_interval_ms: u64,
}

impl PostgresArgs {
    /// The defaults, writing to `url` (what tests start from).
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 4,
            statement_timeout_ms: 30_000,
            acquire_timeout_ms: 10_000,
            lock_timeout_ms: 5_000,
            billable_refresh_ms: 30_000,
            billable_clock_skew_ms: 100,
            billable_codes: Vec::new(),
            partition_interval_days: 1,
            partitions_ahead: 3,
            retention_days: 400,
            max_future_days: 7,
            maintenance_interval_ms: 3_600_000,
        }
    }

    /// A lazily connecting pool: connections are opened on first use, so a database that is down
    /// at start is retried by the caller instead of failing the constructor.
    pub fn pool(&self) -> Result<PgPool, sqlx::Error> {
        let options: PgConnectOptions = self.url.parse()?;
        let options = options.application_name("consumer-postgres").options([("statement_timeout", self.statement_timeout_ms.to_string())]);
        Ok(PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(Duration::from_millis(self.acquire_timeout_ms))
            .connect_lazy_with(options))
    }

    /// [`Self::pool`], with a bad URL reported as the setting to fix.
    pub(crate) fn pool_or_config_error(&self) -> Result<PgPool, crate::SetupError> {
        self.pool().map_err(|e| crate::SetupError::Config { setting: "BXB_POSTGRES_URL", problem: e.to_string() })
    }

    pub(crate) fn partition_interval_ms(&self) -> i64 {
        i64::from(self.partition_interval_days) * DAY_MS
    }

    pub(crate) fn retention_ms(&self) -> Option<i64> {
        (self.retention_days > 0).then(|| i64::from(self.retention_days) * DAY_MS)
    }

    pub(crate) fn max_future_ms(&self) -> i64 {
        i64::from(self.max_future_days) * DAY_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn the_flattened_settings_do_not_collide() {
        // Flattened argument groups (runtime, Kafka, registry, PostgreSQL, telemetry) must not
        // reuse an argument id.
        Config::command().debug_assert();
        let config = Config::try_parse_from(["consumer-postgres", "--retention-days=9", "--batch-max-events=5"]).unwrap();
        assert_eq!(config.postgres.retention_days, 9);
        assert_eq!(config.consumer.batch_max_events, 5);
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        postgres: PostgresArgs,
    }

    #[test]
    fn flags_parse_with_the_documented_defaults() {
        let cli = Cli::try_parse_from(["x", "--billable-codes=api_calls,storage_gb", "--retention-days=0"]).unwrap();
        let args = cli.postgres;
        assert_eq!(args.billable_codes, ["api_calls", "storage_gb"]);
        assert_eq!(args.retention_ms(), None);
        assert_eq!(args.partition_interval_ms(), DAY_MS);
        assert_eq!(args.max_future_ms(), 7 * DAY_MS);
        // The URL may come from the environment (./dev/test sets it); every other default must match.
        let parsed = Cli::try_parse_from(["x"]).unwrap().postgres;
        let defaults = PostgresArgs::with_url(parsed.url.clone());
        assert_eq!(format!("{defaults:?}"), format!("{parsed:?}"), "with_url matches the flag defaults");
    }

    #[test]
    fn zero_sized_settings_are_refused_at_start() {
        for flag in ["--postgres-max-connections=0", "--postgres-partition-interval-days=0", "--billable-refresh-ms=0"] {
            assert!(Cli::try_parse_from(["x", flag]).is_err(), "{flag}");
        }
    }
}
