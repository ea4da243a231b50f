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
//! - [`PostgresArgs`]: the settings (`BXB_POSTGRES_*`, `BXB_BILLABLE_*`, `BXB_RETENTION_DAYS`).
//! - [`PostgresSink`]: the [`bxb_consumer::Sink`] that writes a batch; its background task
//!   refreshes the billable metrics and creates and drops partitions.
//! - [`billable`], [`partitions`], [`select`]: what is written and where.
//! - [`copy_binary`]: the binary `COPY` encoder (numeric, timestamptz, jsonb, ...).
//! - [`run`]: the whole consumer, as `main` and the tests start it; [`migrate`]: the schema
//!   migrations alone, as `consumer-postgres migrate` (a Kubernetes Job) runs them.
//!
//! The tables are defined by `schemas/postgres/migrations`; the PostgreSQL settings this workload
//! needs are in `docs/operations-postgres.md`.

pub mod billable;
mod config;
pub mod copy_binary;
mod error;
pub mod partitions;
pub mod rows;
pub mod select;
mod sink;

pub use config::{PostgresArgs, DEFAULT_POSTGRES_URL};
pub use error::{is_transient, PostgresError};
pub use sink::{PostgresSink, WriteSummary};

use bxb_consumer::{ConsumerArgs, RuntimeError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The consumer group unless `BXB_CONSUMER_GROUP` says otherwise.
pub const DEFAULT_CONSUMER_GROUP: &str = "bxb-postgres";

/// Everything consumer-postgres is configured with.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    #[command(flatten)]
    pub postgres: PostgresArgs,
}

/// Why [`run`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// PostgreSQL could not be prepared at start (connection, migrations, billable metrics).
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    /// The consumer runtime stopped with an error (including a fatal write failure).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Prepares PostgreSQL (migrations, billable metrics, partitions ahead), then consumes until
/// `shutdown`, serving `/healthz`, `/readyz` and `/metrics` on `listener`.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> Result<(), RunError> {
    let sink = PostgresSink::start(config.postgres).await?;
    let background_stop = shutdown.child_token();
    let background = sink.spawn_background(background_stop.clone());
    let consumer = config.consumer.with_default_group(DEFAULT_CONSUMER_GROUP);
    let result = bxb_consumer::run(consumer, listener, sink, shutdown).await;
    background_stop.cancel();
    let _ = background.await;
    result.map_err(RunError::from)
}

/// Applies the migrations of `schemas/postgres/migrations` (sqlx serialises concurrent runs with
/// an advisory lock) and returns.
pub async fn migrate(args: &PostgresArgs) -> Result<(), PostgresError> {
    let pool = args.pool().map_err(|e| PostgresError::Config { setting: "BXB_POSTGRES_URL", problem: e.to_string() })?;
    bxb_schemas::POSTGRES_MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}
