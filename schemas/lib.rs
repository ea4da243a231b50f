//! Every schema of the pipeline, compiled into the binaries from the files beside this one so
//! that there is exactly one copy of each, and the code that applies them:
//!
//! - [`avro`]: the event on Kafka (`avro/event.avsc`, parsed by `bxb-event`);
//! - [`postgres`]: the tables of the PostgreSQL database, as migrations whose file names name
//!   the owning component (`postgres/migrations/`);
//! - [`clickhouse`]: the ClickHouse DDL (`events_raw`, owned by consumer-clickhouse) and the
//!   billing queries.
//!
//! Schemas are applied by one entry point, `bxbctl migrate`, run with the schema owner's
//! credentials (a Kubernetes Job, the compose `migrate` service, `./dev/up`, the tests'
//! database helpers) before the components start. A component applies its own store's schema
//! at start only with `BXB_MIGRATE_ON_START=true` (the default, for the local stack and tests);
//! otherwise it checks that the schema is current and stops naming `bxbctl migrate` if not.
//!
//! Features: none for the texts alone (what `bxb-event` uses); `postgres` for the migrator and
//! its check; `clickhouse` for the DDL runner.

pub mod avro;
pub mod clickhouse;
pub mod postgres;

/// The PostgreSQL migrations, in order (see [`postgres::MIGRATOR`]).
#[cfg(feature = "postgres")]
pub use postgres::MIGRATOR as POSTGRES_MIGRATOR;
