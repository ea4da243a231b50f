//! ClickHouse DDL and billing queries, as text, and the code that applies the DDL. They run on
//! ClickHouse 18.16 and on current releases (see `consumer-clickhouse/README.md`).
//!
//! `events_raw` is owned by consumer-clickhouse: it writes the table, and checks at start that
//! its columns are the ones it writes. `bxbctl verify` and the billing queries only read it.
//!
//! Every statement is a constant (or, for the database name, a function) so that
//! `tests/clickhouse_current.rs` runs the very text the deployments send, on 18.16 and on the
//! current engine.

/// `CREATE TABLE IF NOT EXISTS events_raw` in its current layout, run in the configured database.
pub const EVENTS_RAW_DDL: &str = include_str!("events_raw.sql");

/// `events_raw` as version 1 created it: what an upgrade starts from (tests create it).
pub const EVENTS_RAW_V1_DDL: &str = include_str!("migrations/0001_events_raw.sql");

/// The statements of migration 2 (version 1 to the rank layout), in order; they run after
/// `events_raw_next` was created from [`EVENTS_RAW_DDL`] ([`events_raw_next_ddl`]).
pub fn events_raw_rank_migration() -> Vec<&'static str> {
    statements(include_str!("migrations/0002_events_raw_rank.sql"))
}

/// [`EVENTS_RAW_DDL`] creating `events_raw_next`, the table migration 2 fills.
pub fn events_raw_next_ddl() -> String {
    let ddl = EVENTS_RAW_DDL.replacen("CREATE TABLE IF NOT EXISTS events_raw\n", "CREATE TABLE events_raw_next\n", 1);
    assert_ne!(ddl, EVENTS_RAW_DDL, "events_raw.sql starts its statement with `CREATE TABLE IF NOT EXISTS events_raw`");
    ddl
}

/// The layout version [`EVENTS_RAW_DDL`] creates; `bxb_schema_versions` records it.
pub const CURRENT_VERSION: u32 = 2;

/// The column that version 2 added: a table that has it is of the current layout.
pub const RANK_COLUMN: &str = "appended_at_ms";

/// The versions applied to a database, one row each (ClickHouse has no transactions: a version
/// is recorded after its statements succeeded, and each migration can run again after a failure).
pub const SCHEMA_VERSIONS_DDL: &str = "CREATE TABLE IF NOT EXISTS bxb_schema_versions (version UInt32, applied_at DateTime('UTC')) \
     ENGINE = MergeTree ORDER BY version";

/// The versions recorded, as `UInt32` rows.
pub const SCHEMA_VERSIONS_QUERY: &str = "SELECT DISTINCT version FROM bxb_schema_versions ORDER BY version";

/// Records a version, bound to `?`.
pub const RECORD_VERSION_SQL: &str = "INSERT INTO bxb_schema_versions (version, applied_at) SELECT ?, now()";

/// Whether a column exists: `count()`, with the database, table and column names bound to `?`.
pub const COLUMN_EXISTS_QUERY: &str = "SELECT count() FROM system.columns WHERE database = ? AND table = ? AND name = ?";

/// The statements of a file separated by `;` at the end of a line, without comment-only parts.
fn statements(file: &'static str) -> Vec<&'static str> {
    file.split(";\n")
        .map(str::trim)
        .filter(|part| part.lines().any(|line| !line.trim().is_empty() && !line.trim_start().starts_with("--")))
        .collect()
}

/// The name of the table [`EVENTS_RAW_DDL`] creates.
pub const EVENTS_RAW_TABLE: &str = "events_raw";

/// Billing usage per organization, code and time bucket, exact before merges. Placeholders are
/// `{name:Type}` (ClickHouse query parameters on current releases; substituted client-side for
/// 18.16 by `bxb_consumer_clickhouse::billing`).
pub const USAGE_QUERY: &str = include_str!("queries/usage.sql");

/// The first record of every identity with a record in a time range, by the identity rule: what
/// `bxbctl backfill` judges PostgreSQL by. Placeholders as in [`USAGE_QUERY`].
pub const FIRST_RECORDS_QUERY: &str = include_str!("queries/first_records.sql");

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
    use super::{
        create_database_sql, events_raw_next_ddl, events_raw_rank_migration, is_plain_identifier, COLUMN_EXISTS_QUERY, CURRENT_VERSION,
        DATABASE_EXISTS_QUERY, EVENTS_RAW_DDL, EVENTS_RAW_TABLE, RANK_COLUMN, RECORD_VERSION_SQL, SCHEMA_VERSIONS_DDL,
        SCHEMA_VERSIONS_QUERY, TABLE_EXISTS_QUERY,
    };

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

    /// Brings `database` to the current layout and returns what it did: creates the database
    /// and `events_raw` (current layout) when missing, or upgrades an `events_raw` of an
    /// earlier version (migration 2 moves its rows to the rank layout). Versions are recorded
    /// in `bxb_schema_versions`; a table from before versioning is recognised by its columns.
    /// `server` is a client not bound to a database.
    pub async fn migrate(server: &::clickhouse::Client, database: &str) -> Result<Vec<String>, MigrateError> {
        if !is_plain_identifier(database) {
            return Err(MigrateError::DatabaseName(database.to_owned()));
        }
        let mut done = Vec::new();
        let databases: u64 =
            server.query(DATABASE_EXISTS_QUERY).bind(database).fetch_one().await.map_err(failed("checking the database"))?;
        if databases == 0 {
            server.query_raw(&create_database_sql(database)).execute().await.map_err(failed("creating the database"))?;
            done.push(database.to_owned());
        }
        let client = server.clone().with_database(database);
        client.query_raw(SCHEMA_VERSIONS_DDL).execute().await.map_err(failed("creating bxb_schema_versions"))?;
        let applied: Vec<u32> = client.query(SCHEMA_VERSIONS_QUERY).fetch_all().await.map_err(failed("reading the versions"))?;
        let exists = |table: &'static str| {
            let client = client.clone();
            async move {
                let n: u64 = client.query(TABLE_EXISTS_QUERY).bind(database).bind(table).fetch_one().await?;
                Ok::<_, ::clickhouse::error::Error>(n > 0)
            }
        };
        if !exists(EVENTS_RAW_TABLE).await.map_err(failed("checking the table"))? {
            client.query_raw(EVENTS_RAW_DDL).execute().await.map_err(failed("creating the table"))?;
            done.push(format!("{database}.{EVENTS_RAW_TABLE}"));
            record(&client, CURRENT_VERSION).await?;
            return Ok(done);
        }
        let has_rank: u64 = client
            .query(COLUMN_EXISTS_QUERY)
            .bind(database)
            .bind(EVENTS_RAW_TABLE)
            .bind(RANK_COLUMN)
            .fetch_one()
            .await
            .map_err(failed("checking the columns"))?;
        if has_rank > 0 {
            // Current layout (recorded, or migrated by a run that failed before recording).
            if !applied.contains(&CURRENT_VERSION) {
                record(&client, CURRENT_VERSION).await?;
            }
            return Ok(done);
        }
        // Version 1: its rows move to the rank layout.
        client.query_raw("DROP TABLE IF EXISTS events_raw_next").execute().await.map_err(failed("dropping a half-done events_raw_next"))?;
        client.query_raw(&events_raw_next_ddl()).execute().await.map_err(failed("creating events_raw_next"))?;
        for statement in events_raw_rank_migration() {
            client.query_raw(statement).execute().await.map_err(failed("migrating events_raw to version 2"))?;
        }
        record(&client, CURRENT_VERSION).await?;
        done.push(format!(
            "{database}.{EVENTS_RAW_TABLE} upgraded to version {CURRENT_VERSION} (the old rows stay in {database}.events_raw_before_rank)"
        ));
        Ok(done)
    }

    async fn record(client: &::clickhouse::Client, version: u32) -> Result<(), MigrateError> {
        client.query(RECORD_VERSION_SQL).bind(version).execute().await.map_err(failed("recording the version"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_2_is_a_copy_then_a_swap_into_a_table_of_the_current_layout() {
        let statements = events_raw_rank_migration();
        assert_eq!(statements.len(), 2, "{statements:#?}");
        assert!(statements[0].contains("INSERT INTO events_raw_next"));
        assert!(statements[1].starts_with("RENAME TABLE events_raw TO events_raw_before_rank"));
        assert!(events_raw_next_ddl().contains("CREATE TABLE events_raw_next\n"));
    }

    #[test]
    fn the_database_must_be_a_plain_identifier() {
        assert!(is_plain_identifier("bxb_test_1"));
        for bad in ["", "1db", "a-b", "a`b", "a b"] {
            assert!(!is_plain_identifier(bad), "{bad:?}");
        }
    }
}
