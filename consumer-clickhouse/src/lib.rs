//! consumer-clickhouse: every event from Kafka into the ClickHouse table `events_raw`.
//!
//! ```text
//! Kafka `events` ──▶ bxb-consumer runtime ──▶ ClickHouseSink: one RowBinary INSERT per batch ──▶ events_raw
//!                         └─▶ `events.dlq` (poison)           └─ offsets committed after the insert
//! ```
//!
//! At start [`ClickHouseSink::connect`] creates the database and `events_raw` from
//! `schemas/clickhouse/events_raw.sql` when missing and checks the table's columns against
//! [`EventRow`]. The table is a ReplacingMergeTree that keeps the first record (lowest Kafka
//! offset) of every (organization_id, transaction_id); the [`billing`] queries count each
//! identity once even before merges. See `README.md` for server settings and versions.

pub mod billing;
mod config;
mod row;
mod schema;
mod sink;

pub use config::{ClickHouseArgs, DEFAULT_CLICKHOUSE_URL};
pub use row::{EventRow, DECIMAL_SCALE, EVENTS_RAW_COLUMNS};
pub use schema::{verify_columns, SetupError};
pub use sink::ClickHouseSink;

use bxb_consumer::{ConsumerArgs, RuntimeError};
use bxb_telemetry::TelemetryArgs;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The consumer group unless `BXB_CONSUMER_GROUP` says otherwise.
pub const DEFAULT_GROUP: &str = "bxb-clickhouse";

/// Every setting of the binary.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "consumer-clickhouse", about = "Writes every bxb event from Kafka into ClickHouse.")]
pub struct Config {
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Why the consumer stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ClickHouse could not be prepared at start.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The runtime stopped on a fatal error.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Prepares ClickHouse, then consumes until `shutdown` (see [`bxb_consumer::run`]).
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), Error> {
    let consumer = config.consumer.with_default_group(DEFAULT_GROUP);
    consumer.check()?;
    let sink = ClickHouseSink::connect(&config.clickhouse).await?;
    tracing::info!(url = %config.clickhouse.url, database = %config.clickhouse.database, "ClickHouse ready");
    bxb_consumer::run(consumer, listener, sink, shutdown).await?;
    Ok(())
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
}
