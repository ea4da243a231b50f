//! The schema at start: apply the DDL of `schemas/clickhouse/` when the consumer is to
//! (`BXB_MIGRATE_ON_START`, through `bxb_schemas`, as `bxbctl migrate` does), then check that
//! `events_raw` has exactly the columns the row type writes. The clickhouse crate's own check is
//! off (ClickHouse 18.16 cannot answer it), and RowBinary carries no names or types, so a
//! mismatch would otherwise write garbage or fail obscurely in the middle of a batch.

use bxb_schemas::clickhouse::{is_plain_identifier, EVENTS_RAW_TABLE};
use serde::Deserialize;

use crate::error::SetupError;
use crate::row::{DEDUP_VERSION_COLUMN, EVENTS_RAW_COLUMNS};
use crate::ClickHouseArgs;

fn clickhouse_error(action: &'static str) -> impl FnOnce(clickhouse::error::Error) -> SetupError {
    move |source| SetupError::ClickHouse { action, source }
}

/// The columns of a table as the start-up check reads them, with the database and table names
/// bound to `?`; answered as [`Column`]s.
pub const COLUMNS_QUERY: &str = "SELECT name, type, default_kind FROM system.columns WHERE database = ? AND table = ?";

/// Whether the server limits the partitions of one insert: `count()` of that setting (1 on
/// current releases, 0 on 18.16).
pub const PARTITION_LIMIT_QUERY: &str = "SELECT count() FROM system.settings WHERE name = 'max_partitions_per_insert_block'";

/// What the server supports that the inserts adapt to.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerFeatures {
    /// The server limits how many partitions one insert may touch (`max_partitions_per_insert_block`,
    /// 100 by default on current releases, absent on 18.16).
    pub limits_partitions_per_insert: bool,
}

/// Creates the database and `events_raw` when missing (what `bxbctl migrate` does for ClickHouse).
pub async fn migrate(args: &ClickHouseArgs) -> Result<(), SetupError> {
    check_identifier(&args.database)?;
    for created in bxb_schemas::clickhouse::migrate(&args.server_client(), &args.database).await? {
        tracing::info!(%created, "created in ClickHouse");
    }
    Ok(())
}

/// Checks the table, changing nothing, and reports the server's features.
pub async fn check(args: &ClickHouseArgs) -> Result<ServerFeatures, SetupError> {
    check_identifier(&args.database)?;
    let server = args.server_client();
    verify_columns(&server, &args.database).await?;
    let limit_settings: u64 =
        server.query(PARTITION_LIMIT_QUERY).fetch_one().await.map_err(clickhouse_error("reading the server settings"))?;
    Ok(ServerFeatures { limits_partitions_per_insert: limit_settings > 0 })
}

/// One row of [`COLUMNS_QUERY`].
#[derive(Debug, Clone, clickhouse::Row, Deserialize)]
pub struct Column {
    pub name: String,
    pub r#type: String,
    pub default_kind: String,
}

/// Compares `system.columns` of the table with [`EVENTS_RAW_COLUMNS`]; `client` may be bound
/// to any database (or none).
pub async fn verify_columns(client: &clickhouse::Client, database: &str) -> Result<(), SetupError> {
    let columns: Vec<Column> = client
        .query(COLUMNS_QUERY)
        .bind(database)
        .bind(EVENTS_RAW_TABLE)
        .fetch_all()
        .await
        .map_err(clickhouse_error("reading the table's columns"))?;
    if columns.is_empty() {
        return Err(SetupError::NotMigrated { database: database.to_owned(), table: EVENTS_RAW_TABLE });
    }
    match column_differences(&columns) {
        None => Ok(()),
        Some(differences) => Err(SetupError::ColumnsDiffer { database: database.to_owned(), table: EVENTS_RAW_TABLE, differences }),
    }
}

/// What differs, in words, or `None`. Every expected column must exist with exactly its type;
/// the version must be computed by the table; other columns are allowed only if the table
/// fills them itself (the insert does not name them).
pub fn column_differences(actual: &[Column]) -> Option<String> {
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
    if problems.is_empty() {
        None
    } else {
        Some(problems.join("; "))
    }
}

fn check_identifier(database: &str) -> Result<(), SetupError> {
    if is_plain_identifier(database) {
        Ok(())
    } else {
        Err(SetupError::Config {
            setting: "BXB_CLICKHOUSE_DATABASE",
            problem: format!("{database:?} is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)"),
        })
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
}
