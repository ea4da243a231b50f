//! The `api_keys` table (migration `20261123000100_gateway_api_keys.sql`), the production key source.
//! The gateway only reads it; keys are inserted and revoked by the admin tooling, e.g.
//! `UPDATE api_keys SET revoked_at = now() WHERE key_id = $1`.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use uuid::Uuid;

use bxb_api_key::KeyRecord;

/// A small lazy pool: the gateway reads the whole table once per refresh interval. The server
/// cancels a key query after `query_timeout` too (`statement_timeout`), so one the gateway gave
/// up on does not keep waiting there, e.g. on a lock.
pub fn pool(url: &str, query_timeout: Duration) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    let options = options.options([("statement_timeout", query_timeout.as_millis().to_string())]);
    Ok(PgPoolOptions::new().max_connections(2).acquire_timeout(query_timeout).connect_lazy_with(options))
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
