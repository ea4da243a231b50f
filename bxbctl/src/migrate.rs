//! `bxbctl migrate`: the one entry point that applies the schema of every store — the
//! PostgreSQL migrations (the tables of every owner: consumer-postgres, the gateway) and the
//! ClickHouse DDL — from `bxb-schemas`. Run it with the schema owner's credentials before the
//! components start: the Kubernetes Job `bxb-migrate`, the compose service `migrate`,
//! `./dev/up` and the tests' database helpers do. The components then need no DDL rights
//! (`BXB_MIGRATE_ON_START=false`: they only check that the schema is current). Safe to repeat
//! and to run concurrently: what exists is left alone, and concurrent PostgreSQL runs are
//! serialised by an advisory lock.

use bxb_consumer_clickhouse::ClickHouseArgs;
use sqlx::PgPool;

/// Why a schema could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// PostgreSQL could not be reached.
    #[error("PostgreSQL: {0}")]
    Connect(#[from] sqlx::Error),
    /// A migration failed, or the database's history differs from these migrations.
    #[error("PostgreSQL migrations: {0}")]
    Postgres(#[from] sqlx::migrate::MigrateError),
    /// The ClickHouse DDL failed.
    #[error(transparent)]
    ClickHouse(#[from] bxb_schemas::clickhouse::MigrateError),
}

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// The PostgreSQL migrations applied by this run, as `<version> <description>`.
    pub postgres_applied: Vec<String>,
    /// What this run created in ClickHouse (`database`, `database.events_raw`).
    pub clickhouse_created: Vec<String>,
}

/// Applies the PostgreSQL migrations, then the ClickHouse DDL.
pub async fn run(postgres_url: &str, clickhouse: &ClickHouseArgs) -> Result<Migrated, MigrateError> {
    Ok(Migrated { postgres_applied: postgres(postgres_url).await?, clickhouse_created: self::clickhouse(clickhouse).await? })
}

/// Applies the PostgreSQL migrations of `schemas/postgres/migrations`; returns those applied now.
pub async fn postgres(url: &str) -> Result<Vec<String>, MigrateError> {
    let pool = PgPool::connect(url).await?;
    let before = applied_versions(&pool).await?;
    bxb_schemas::postgres::migrate(&pool).await?;
    pool.close().await;
    Ok(bxb_schemas::postgres::MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !before.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect())
}

/// Creates the ClickHouse database and `events_raw` when missing; returns what it created.
pub async fn clickhouse(args: &ClickHouseArgs) -> Result<Vec<String>, MigrateError> {
    Ok(bxb_schemas::clickhouse::migrate(&args.server_client(), &args.database).await?)
}

async fn applied_versions(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    let has_history: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL").fetch_one(pool).await?;
    if !has_history {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(pool).await
}
