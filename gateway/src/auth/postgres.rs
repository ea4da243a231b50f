//! The `api_keys` table (migration `20261123000100_gateway_api_keys.sql`), the production key source.
//! The gateway only reads it; keys are inserted and revoked by the admin tooling, e.g.
//! `UPDATE api_keys SET revoked_at = now() WHERE key_id = $1`.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

use super::key::KeyRecord;

/// A small lazy pool: the gateway reads the whole table once per refresh interval.
pub fn pool(url: &str) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new().max_connections(2).acquire_timeout(Duration::from_secs(5)).connect_lazy(url)
}

/// Every key of the table; rows whose digest is not 32 bytes are skipped with a warning.
pub async fn load(pool: &PgPool) -> Result<Vec<KeyRecord>, sqlx::Error> {
    let rows: Vec<(String, Uuid, Vec<u8>, bool)> =
        sqlx::query_as("SELECT key_id, organization_id, key_sha256, revoked_at IS NOT NULL FROM api_keys").fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .filter_map(|(key_id, organization_id, digest, revoked)| match <[u8; 32]>::try_from(digest.as_slice()) {
            Ok(key_sha256) => Some(KeyRecord { key_id, organization_id, key_sha256, revoked }),
            Err(_) => {
                tracing::warn!(key_id, "api_keys row skipped: key_sha256 is not 32 bytes");
                None
            }
        })
        .collect())
}
