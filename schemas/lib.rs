//! Every schema of the pipeline, compiled into the binaries from the files beside this one so
//! that there is exactly one copy of each:
//!
//! - `avro/event.avsc`: the event on Kafka (read by `bxb-event`);
//! - `postgres/migrations/`: PostgreSQL tables, applied with sqlx by whoever starts first
//!   (consumer-postgres at start, or its `migrate` subcommand from a Kubernetes Job);
//! - `clickhouse/`: ClickHouse DDL and the billing queries.

/// The PostgreSQL migrations, in order. sqlx takes an advisory lock while applying them, so
/// several processes may call `run` at once.
pub static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("postgres/migrations");

/// ClickHouse DDL and billing queries (`clickhouse/`).
pub mod clickhouse;
