//! ClickHouse DDL and billing queries, as text, and the code that applies the DDL. They run on
//! ClickHouse 18.16 and on current releases (see `consumer-clickhouse/README.md`).
//!
//! `events_raw` is owned by consumer-clickhouse: it writes the table, and checks at start that
//! its columns are the ones it writes. `bxbctl verify` and the billing queries only read it.
//!
//! Every statement is a constant (or, for the database name, a function) so that
//! `tests/clickhouse_current.rs` runs the very text the deployments send, on 18.16 and on the
//! current engine.

/// `CREATE TABLE IF NOT EXISTS events_raw`, run in the configured database.
pub const EVENTS_RAW_DDL: &str = include_str!("events_raw.sql");

/// The name of the table [`EVENTS_RAW_DDL`] creates.
pub const EVENTS_RAW_TABLE: &str = "events_raw";

/// Billing usage per organization, code and time bucket, exact before merges. Placeholders are
/// `{name:Type}` (ClickHouse query parameters on current releases; substituted client-side for
/// 18.16 by `bxb_consumer_clickhouse::billing`).
pub const USAGE_QUERY: &str = include_str!("queries/usage.sql");

/// Whether the database exists: `count()` of it, with the database name bound to `?`.
pub const DATABASE_EXISTS_QUERY: &str = "SELECT count() FROM system.databases WHERE name = ?";

/// Whether the table exists: `count()` of it, with the database and table names bound to `?`.
pub const TABLE_EXISTS_QUERY: &str = "SELECT count() FROM system.tables WHERE database = ? AND name = ?";

/// `CREATE DATABASE IF NOT EXISTS` for `database`, which must be a plain identifier
/// ([`is_plain_identifier`]; `migrate` checks it).
pub fn create_database_sql(database: &str) -> String {
    format!("CREATE DATABASE IF NOT EXISTS `{database}`")
}

/// Whether `name` can be used as a database name as it is: `[A-Za-z_][A-Za-z0-9_]*`, at most
/// 200 bytes. The DDL quotes it, but a name that needs quoting is refused rather than escaped.
pub fn is_plain_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

#[cfg(feature = "clickhouse")]
pub use apply::*;

#[cfg(feature = "clickhouse")]
mod apply {
    use super::{create_database_sql, is_plain_identifier, DATABASE_EXISTS_QUERY, EVENTS_RAW_DDL, EVENTS_RAW_TABLE, TABLE_EXISTS_QUERY};

    /// Why the DDL could not be applied.
    #[derive(Debug, thiserror::Error)]
    pub enum MigrateError {
        /// The database name would need quoting.
        #[error("database name {0:?} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)")]
        DatabaseName(String),
        /// ClickHouse could not be reached or refused a statement.
        #[error("ClickHouse {action}: {source}")]
        ClickHouse {
            action: &'static str,
            #[source]
            source: ::clickhouse::error::Error,
        },
    }

    fn failed(action: &'static str) -> impl FnOnce(::clickhouse::error::Error) -> MigrateError {
        move |source| MigrateError::ClickHouse { action, source }
    }

    /// Creates `database` and `events_raw` in it when they are missing, and returns what it
    /// created (`database`, `database.events_raw`). An existing table is left as it is: whether
    /// its columns are right is the consumer's start-up check. `server` is a client not bound to
    /// a database.
    pub async fn migrate(server: &::clickhouse::Client, database: &str) -> Result<Vec<String>, MigrateError> {
        if !is_plain_identifier(database) {
            return Err(MigrateError::DatabaseName(database.to_owned()));
        }
        let mut created = Vec::new();
        let databases: u64 =
            server.query(DATABASE_EXISTS_QUERY).bind(database).fetch_one().await.map_err(failed("checking the database"))?;
        if databases == 0 {
            server.query_raw(&create_database_sql(database)).execute().await.map_err(failed("creating the database"))?;
            created.push(database.to_owned());
        }
        let client = server.clone().with_database(database);
        let tables: u64 = client
            .query(TABLE_EXISTS_QUERY)
            .bind(database)
            .bind(EVENTS_RAW_TABLE)
            .fetch_one()
            .await
            .map_err(failed("checking the table"))?;
        if tables == 0 {
            client.query_raw(EVENTS_RAW_DDL).execute().await.map_err(failed("creating the table"))?;
            created.push(format!("{database}.{EVENTS_RAW_TABLE}"));
        }
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_must_be_a_plain_identifier() {
        assert!(is_plain_identifier("bxb_test_1"));
        for bad in ["", "1db", "a-b", "a`b", "a b"] {
            assert!(!is_plain_identifier(bad), "{bad:?}");
        }
    }
}
