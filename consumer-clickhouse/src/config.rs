//! The settings of consumer-clickhouse: [`Config`], the binary's, made of the consumer runtime's,
//! ClickHouse's ([`ClickHouseArgs`], also used by `bxbctl`) and telemetry's.

use std::fmt;

use bxb_consumer::ConsumerArgs;
use bxb_telemetry::TelemetryArgs;

/// Every setting of the binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "consumer-clickhouse", version, about = "Writes every bxb event from Kafka into ClickHouse.")]
pub struct Config {
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Config {
    /// The binary's defaults around `consumer` and `clickhouse` (what tests start from).
    pub fn new(consumer: ConsumerArgs, clickhouse: ClickHouseArgs) -> Self {
        Self { consumer, clickhouse, telemetry: TelemetryArgs::default() }
    }
}

/// The server of the local stack (`./dev/up`): the default of `BXB_CLICKHOUSE_URL`.
pub const DEFAULT_CLICKHOUSE_URL: &str = "http://127.0.0.1:18123";

/// How to reach ClickHouse and where `events_raw` lives.
#[derive(clap::Args, Clone)]
pub struct ClickHouseArgs {
    /// URL of the ClickHouse HTTP interface, `http://` or `https://` (system CA certificates).
    #[arg(long = "clickhouse-url", env = "BXB_CLICKHOUSE_URL", default_value = DEFAULT_CLICKHOUSE_URL)]
    pub url: String,
    /// Database of `events_raw`; created at start when missing and BXB_MIGRATE_ON_START is true.
    #[arg(long = "clickhouse-database", env = "BXB_CLICKHOUSE_DATABASE", default_value = "bxb")]
    pub database: String,
    /// User name; ClickHouse's `default` user when unset.
    #[arg(long = "clickhouse-user", env = "BXB_CLICKHOUSE_USER")]
    pub user: Option<String>,
    /// Password (never printed).
    #[arg(long = "clickhouse-password", env = "BXB_CLICKHOUSE_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Longest time one batch insert may take before it is retried.
    #[arg(long = "clickhouse-write-timeout-ms", env = "BXB_CLICKHOUSE_WRITE_TIMEOUT_MS", default_value_t = 30_000)]
    pub write_timeout_ms: u64,
}

impl ClickHouseArgs {
    /// The defaults with `url` and `database` (tests build their settings here).
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        Self { url: url.into(), database: database.into(), user: None, password: None, write_timeout_ms: 30_000 }
    }

    /// A client of the configured server, not bound to a database (what the DDL runs with).
    /// Validation is off because ClickHouse 18.16 lacks what the crate's own row check needs;
    /// `schema::verify_columns` checks the table instead.
    pub fn server_client(&self) -> clickhouse::Client {
        let mut client = clickhouse::Client::default().with_url(&self.url).with_validation(false);
        if let Some(user) = &self.user {
            client = client.with_user(user);
        }
        if let Some(password) = &self.password {
            client = client.with_password(password);
        }
        client
    }

    /// A client whose queries run in the configured database.
    pub fn client(&self) -> clickhouse::Client {
        self.server_client().with_database(&self.database)
    }
}

impl fmt::Debug for ClickHouseArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClickHouseArgs")
            .field("url", &self.url)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("write_timeout_ms", &self.write_timeout_ms)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn the_flattened_settings_do_not_collide() {
        Config::command().debug_assert();
        let config = Config::try_parse_from(["consumer-clickhouse", "--clickhouse-database=analytics", "--batch-max-events=5"]).unwrap();
        assert_eq!(config.clickhouse.database, "analytics");
        assert_eq!(config.consumer.batch_max_events, 5);
    }

    #[test]
    fn the_password_is_never_printed() {
        let mut args = ClickHouseArgs::new("http://127.0.0.1:1", "bxb");
        args.password = Some("hunter2".into());
        assert!(!format!("{args:?}").contains("hunter2"));
    }
}
