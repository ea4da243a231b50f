//! The schema at start: apply the migrations of `schemas/postgres/migrations` when the consumer
//! is to (`BXB_MIGRATE_ON_START`, through `bxb_schemas`, as `bxbctl migrate` does), otherwise
//! only check that they are applied, so that a consumer without DDL rights stops with a message
//! naming `bxbctl migrate` rather than failing on its first write.

use sqlx::PgPool;

use crate::error::SetupError;
use crate::PostgresArgs;

/// Applies the migrations (the whole database's sequence, the gateway's `api_keys` included: sqlx
/// keeps one history per database) and returns. Concurrent runs are serialised by an advisory
/// lock.
pub async fn migrate(args: &PostgresArgs) -> Result<(), SetupError> {
    let pool = args.pool_or_config_error()?;
    bxb_schemas::postgres::migrate(&pool).await?;
    pool.close().await;
    Ok(())
}

/// Checks, changing nothing, that every migration of this build is applied.
pub async fn check(pool: &PgPool) -> Result<(), SetupError> {
    bxb_schemas::postgres::check(pool).await.map_err(|error| match error {
        // A database that cannot be reached is a connection problem, not a schema problem.
        bxb_schemas::postgres::CheckError::Database(error) => SetupError::Database(error),
        not_current => SetupError::NotMigrated(not_current),
    })
}
