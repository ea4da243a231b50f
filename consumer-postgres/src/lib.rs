//! consumer-postgres: the billing-critical subset of events, exact at write time, in PostgreSQL.
//!
//! ```text
//! Kafka `events` ──▶ bxb-consumer runtime ──▶ PostgresSink::write(batch)
//!                                               ├─ skip: not billable / outside the window
//!                                               ├─ first record of each identity in the batch
//!                                               ├─ partitions of `events` created on demand
//!                                               └─ one transaction (synchronous_commit = on):
//!                                                  COPY BINARY keys → event_keys (savepoint;
//!                                                    a taken key: INSERT ... ON CONFLICT DO
//!                                                    NOTHING RETURNING the new ones instead)
//!                                                  → COPY BINARY into events, new keys only
//!                                         ◀── Ok only after COMMIT: then the runtime commits offsets
//! ```
//!
//! The same files as consumer-clickhouse:
//!
//! - [`config`]: [`Config`], the binary's settings, and [`PostgresArgs`] (`BXB_POSTGRES_*`,
//!   `BXB_BILLABLE_*`, `BXB_RETENTION_DAYS`).
//! - [`error`]: [`Error`] (why [`run`] stopped), [`SetupError`] (why PostgreSQL could not be
//!   prepared) and the sorting of a failed write into retry or fatal.
//! - [`schema`]: at start, [`schema::migrate`] applies `schemas/postgres/migrations` when
//!   `BXB_MIGRATE_ON_START` is true; otherwise [`schema::check`] only checks that they are
//!   applied (`bxbctl migrate`, run as the schema owner, applies them).
//! - [`PostgresSink`] (`sink`): the [`bxb_consumer::Sink`] that writes a batch; its background
//!   task refreshes the billable metrics and creates and drops partitions.
//! - [`run`]: the whole consumer, as `main` and the tests start it.
//!
//! And its own: [`billable`] (the one definition of what is billable, also used by
//! `bxbctl verify`), [`partitions`], [`select`] (what is written and where), [`rows`] and
//! [`copy_binary`] (the binary `COPY` encoder: numeric, timestamptz, jsonb, ...).
//!
//! The tables are defined by `schemas/postgres/migrations`; the PostgreSQL settings this workload
//! needs are in `docs/operations-postgres.md`.

pub mod billable;
pub mod config;
pub mod copy_binary;
pub mod error;
pub mod partitions;
pub mod rows;
pub mod schema;
pub mod select;
mod sink;

pub use config::{Config, PostgresArgs, DEFAULT_POSTGRES_URL};
pub use error::{Error, SetupError};
pub use sink::{PostgresSink, WriteSummary};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The consumer group unless `BXB_CONSUMER_GROUP` says otherwise.
pub const DEFAULT_GROUP: &str = "bxb-postgres";

/// Prepares PostgreSQL (the schema, see [`schema`]; billable metrics; partitions ahead), then
/// consumes until `shutdown`, serving `/healthz`, `/readyz` and `/metrics` on `listener` (see
/// [`bxb_consumer::run`]).
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), Error> {
    let consumer = config.consumer.with_default_group(DEFAULT_GROUP);
    consumer.check()?;
    if consumer.migrate_on_start {
        schema::migrate(&config.postgres).await?;
    }
    let sink = PostgresSink::connect(config.postgres).await?;
    tracing::info!("PostgreSQL ready");
    let background_stop = shutdown.child_token();
    let background = sink.spawn_background(background_stop.clone());
    let result = bxb_consumer::run(consumer, listener, sink, shutdown).await;
    background_stop.cancel();
    let _ = background.await;
    result.map_err(Error::from)
}
