//! consumer-clickhouse: every event from Kafka into the ClickHouse table `events_raw`.
//!
//! ```text
//! Kafka `events` ──▶ bxb-consumer runtime ──▶ ClickHouseSink: one RowBinary INSERT per batch ──▶ events_raw
//!                         └─▶ `events.dlq` (poison)           └─ offsets committed after the insert
//! ```
//!
//! The same files as consumer-postgres:
//!
//! - [`config`]: [`Config`], the binary's settings, and [`ClickHouseArgs`] (`BXB_CLICKHOUSE_*`).
//! - [`error`]: [`Error`] (why [`run`] stopped), [`SetupError`] (why ClickHouse could not be
//!   prepared) and the sorting of a failed insert into retry or fatal.
//! - [`schema`]: at start, [`schema::migrate`] creates the database and `events_raw` from
//!   `schemas/clickhouse/events_raw.sql` when `BXB_MIGRATE_ON_START` is true (otherwise
//!   `bxbctl migrate` must have), then [`schema::check`] compares the table's columns with
//!   [`EventRow`].
//! - [`ClickHouseSink`] (`sink`): the [`bxb_consumer::Sink`] that writes a batch.
//! - [`run`]: the whole consumer, as `main` and the tests start it.
//!
//! And its own: [`EventRow`] (`row`), and the [`billing`] queries. The table is a
//! ReplacingMergeTree that keeps the first record (lowest Kafka offset) of every
//! (organization_id, transaction_id); the billing queries count each identity once even before
//! merges. See `README.md` for server settings and versions.

pub mod billing;
pub mod config;
pub mod error;
pub mod row;
pub mod schema;
mod sink;

pub use config::{ClickHouseArgs, Config, DEFAULT_CLICKHOUSE_URL};
pub use error::{Error, SetupError};
pub use row::{EventRow, DECIMAL_SCALE, EVENTS_RAW_COLUMNS};
pub use sink::ClickHouseSink;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The consumer group unless `BXB_CONSUMER_GROUP` says otherwise.
pub const DEFAULT_GROUP: &str = "bxb-clickhouse";

/// Prepares ClickHouse (the schema, see [`schema`]), then consumes until `shutdown`, serving
/// `/healthz`, `/readyz` and `/metrics` on `listener` (see [`bxb_consumer::run`]).
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), Error> {
    let consumer = config.consumer.with_default_group(DEFAULT_GROUP);
    consumer.check()?;
    if consumer.migrate_on_start {
        schema::migrate(&config.clickhouse).await?;
    }
    let sink = ClickHouseSink::connect(&config.clickhouse).await?;
    tracing::info!(url = %config.clickhouse.url, database = %config.clickhouse.database, "ClickHouse ready");
    bxb_consumer::run(consumer, listener, sink, shutdown).await?;
    Ok(())
}
