//! Start-up: create the database and `events_raw` when missing, then check that the table has
//! exactly the columns the row type writes. The clickhouse crate's own check is off (ClickHouse
//! 18.16 cannot answer it), and RowBinary carries no names or types, so a mismatch would
//! otherwise write garbage or fail obscurely in the middle of a batch.

use bxb_schemas::clickhouse::{EVENTS_RAW_DDL, EVENTS_RAW_TABLE};
use serde::Deserialize;

use crate::row::{DEDUP_VERSION_COLUMN, EVENTS_RAW_COLUMNS};
use crate::ClickHouseArgs;

/// Why ClickHouse cannot take events.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A setting cannot work; `setting` is the variable to fix.
    #[error("setting {setting}: {problem}")]
    Config { setting: &'static str, problem: String },
    /// ClickHouse could not be reached or refused a start-up statement.
    #[error("ClickHouse {action}: {source}")]
    ClickHouse {
        action: &'static str,
        #[source]
        source: clickhouse::error::Error,
    },
    /// The table exists with other columns than the consumer writes.
    #[error("table {database}.{table} does not match the row type: {differences}; migrate it or point BXB_CLICKHOUSE_DATABASE elsewhere")]
    ColumnsDiffer { database: String, table: &'static str, differences: String },
}

fn clickhouse_error(action: &'static str) -> impl FnOnce(clickhouse::error::Error) -> SetupError {
    move |source| SetupError::ClickHouse { action, source }
}

/// What the server supports that the inserts adapt to.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerFeatures {
    /// The server limits how many partitions one insert may touch (`max_partitions_per_insert_block`,
    /// 100 by default on current releases, absent on 18.16).
    pub limits_partitions_per_insert: bool,
}

/// Creates what is missing, verifies the table and reports the server's features.
pub async fn prepare(args: &ClickHouseArgs) -> Result<ServerFeatures, SetupError> {
    check_identifier(&args.database)?;
    let server = args.server_client();
    let databases: u64 = server
        .query("SELECT count() FROM system.databases WHERE name = ?")
        .bind(&args.database)
        .fetch_one()
        .await
        .map_err(clickhouse_error("checking the database"))?;
    if databases == 0 {
        server
            .query_raw(&format!("CREATE DATABASE IF NOT EXISTS `{}`", args.database))
            .execute()
            .await
            .map_err(clickhouse_error("creating the database"))?;
        tracing::info!(database = %args.database, "created the ClickHouse database");
    }
    let client = args.client();
    let tables: u64 = client
        .query("SELECT count() FROM system.tables WHERE database = ? AND name = ?")
        .bind(&args.database)
        .bind(EVENTS_RAW_TABLE)
        .fetch_one()
        .await
        .map_err(clickhouse_error("checking the table"))?;
    if tables == 0 {
        client.query_raw(EVENTS_RAW_DDL).execute().await.map_err(clickhouse_error("creating the table"))?;
        tracing::info!(database = %args.database, table = EVENTS_RAW_TABLE, "created the ClickHouse table");
    }
    verify_columns(&client, &args.database).await?;
    let limit_settings: u64 = server
        .query("SELECT count() FROM system.settings WHERE name = 'max_partitions_per_insert_block'")
        .fetch_one()
        .await
        .map_err(clickhouse_error("reading the server settings"))?;
    Ok(ServerFeatures { limits_partitions_per_insert: limit_settings > 0 })
}

#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub(crate) struct Column {
    pub name: String,
    pub r#type: String,
    pub default_kind: String,
}

/// Compares `system.columns` of the table with [`EVENTS_RAW_COLUMNS`].
pub async fn verify_columns(client: &clickhouse::Client, database: &str) -> Result<(), SetupError> {
    let columns: Vec<Column> = client
        .query("SELECT name, type, default_kind FROM system.columns WHERE database = ? AND table = ?")
        .bind(database)
        .bind(EVENTS_RAW_TABLE)
        .fetch_all()
        .await
        .map_err(clickhouse_error("reading the table's columns"))?;
    match column_differences(&columns) {
        None => Ok(()),
        Some(differences) => Err(SetupError::ColumnsDiffer { database: database.to_owned(), table: EVENTS_RAW_TABLE, differences }),
    }
}

/// What differs, in words, or `None`. Every expected column must exist with exactly its type;
/// the version must be computed by the table; other columns are allowed only if the table
/// fills them itself (the insert does not name them).
pub(crate) fn column_differences(actual: &[Column]) -> Option<String> {
    let mut problems = Vec::new();
    for (name, expected_type) in EVENTS_RAW_COLUMNS {
        match actual.iter().find(|c| c.name == *name) {
            None => problems.push(format!("column {name} {expected_type} is missing")),
            Some(c) if c.r#type != *expected_type => {
                problems.push(format!("column {name} is {} instead of {expected_type}", c.r#type));
            }
            Some(c) if *name == DEDUP_VERSION_COLUMN && c.default_kind != "MATERIALIZED" => {
                problems.push(format!("column {name} must be MATERIALIZED from kafka_offset"));
            }
            Some(c) if *name != DEDUP_VERSION_COLUMN && !c.default_kind.is_empty() => {
                problems.push(format!("column {name} must be a plain column, not {}", c.default_kind));
            }
            Some(_) => {}
        }
    }
    for c in actual {
        if !EVENTS_RAW_COLUMNS.iter().any(|(name, _)| *name == c.name) && c.default_kind.is_empty() {
            problems.push(format!("unexpected column {} {} without a default", c.name, c.r#type));
        }
    }
    if problems.is_empty() { None } else { Some(problems.join("; ")) }
}

fn check_identifier(database: &str) -> Result<(), SetupError> {
    let valid = !database.is_empty()
        && database.len() <= 200
        && database.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !database.as_bytes()[0].is_ascii_digit();
    if valid {
        Ok(())
    } else {
        Err(SetupError::Config { setting: "BXB_CLICKHOUSE_DATABASE", problem: format!("{database:?} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> Vec<Column> {
        EVENTS_RAW_COLUMNS
            .iter()
            .map(|(name, ty)| Column {
                name: (*name).into(),
                r#type: (*ty).into(),
                default_kind: if *name == DEDUP_VERSION_COLUMN { "MATERIALIZED".into() } else { String::new() },
            })
            .collect()
    }

    #[test]
    fn the_expected_table_has_no_differences() {
        assert_eq!(column_differences(&columns()), None);
    }

    #[test]
    fn every_difference_is_named() {
        let mut cols = columns();
        cols.retain(|c| c.name != "code");
        cols.iter_mut().find(|c| c.name == "timestamp").unwrap().r#type = "DateTime".into();
        cols.iter_mut().find(|c| c.name == DEDUP_VERSION_COLUMN).unwrap().default_kind = String::new();
        cols.push(Column { name: "extra".into(), r#type: "String".into(), default_kind: String::new() });
        cols.push(Column { name: "filled".into(), r#type: "String".into(), default_kind: "DEFAULT".into() });
        let text = column_differences(&cols).unwrap();
        assert!(text.contains("column code String is missing"), "{text}");
        assert!(text.contains("column timestamp is DateTime instead of DateTime('UTC')"), "{text}");
        assert!(text.contains("dedup_version must be MATERIALIZED"), "{text}");
        assert!(text.contains("unexpected column extra String"), "{text}");
        assert!(!text.contains("filled"), "{text}");
    }

    #[test]
    fn the_database_must_be_a_plain_identifier() {
        assert!(check_identifier("bxb_test_1").is_ok());
        for bad in ["", "1db", "a-b", "a`b", "a b"] {
            assert!(check_identifier(bad).is_err(), "{bad:?}");
        }
    }
}
