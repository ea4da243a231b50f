//! Why consumer-clickhouse stops, and how a failed insert is sorted (STYLE rule 5): *retry*
//! (the same batch again, after a backoff) or *fatal* (stop, commit nothing unwritten). *Poison*
//! is decided before the sink: records that cannot be decoded or break the field rules are
//! dead-lettered by the runtime, so every record that reaches [`classify`]'s caller is valid.

use bxb_consumer::{RuntimeError, SinkError};

/// Why [`crate::run`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// ClickHouse could not be prepared at start.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The runtime stopped on a fatal error (including a fatal insert).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

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
    /// Applying the DDL at start (`BXB_MIGRATE_ON_START`) failed.
    #[error("creating the ClickHouse schema at start: {0}")]
    Migrate(#[from] bxb_schemas::clickhouse::MigrateError),
    /// The table does not exist and the consumer was not to create it.
    #[error("table {database}.{table} does not exist: create it with `bxbctl migrate` (or start with BXB_MIGRATE_ON_START=true)")]
    NotMigrated { database: String, table: &'static str },
    /// The table exists with other columns than the consumer writes.
    #[error("table {database}.{table} does not match the row type: {differences}; migrate it or point BXB_CLICKHOUSE_DATABASE elsewhere")]
    ColumnsDiffer { database: String, table: &'static str, differences: String },
}

/// ClickHouse error codes that no retry can fix: the table or database is gone, the columns or
/// the data format do not match, or the user may not write. Every other code (too many parts,
/// memory, timeouts, overload, a replica in read-only mode) is retried.
const FATAL_CODES: &[(u32, &str)] = &[
    (16, "NO_SUCH_COLUMN_IN_TABLE"),
    (27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED"),
    (33, "CANNOT_READ_ALL_DATA"),
    (47, "UNKNOWN_IDENTIFIER"),
    (53, "TYPE_MISMATCH"),
    (60, "UNKNOWN_TABLE"),
    (62, "SYNTAX_ERROR"),
    (81, "UNKNOWN_DATABASE"),
    (164, "READONLY"),
    (192, "UNKNOWN_USER"),
    (193, "WRONG_PASSWORD"),
    (194, "REQUIRED_PASSWORD"),
    (195, "IP_ADDRESS_NOT_ALLOWED"),
    (497, "ACCESS_DENIED"),
    (516, "AUTHENTICATION_FAILED"),
];

/// Sorts a ClickHouse failure into retry or fatal.
pub(crate) fn classify(error: clickhouse::error::Error) -> SinkError {
    use clickhouse::error::Error;
    match &error {
        Error::BadResponse(text) => match server_error_code(text).and_then(|code| FATAL_CODES.iter().find(|(c, _)| *c == code)) {
            Some((code, name)) => SinkError::Fatal(format!("ClickHouse refused the insert ({name}, code {code}): {text}")),
            None => SinkError::Retry(format!("ClickHouse: {text}")),
        },
        // The row type and the table disagree: the start-up check should have caught it.
        Error::NotEnoughData | Error::SchemaMismatch(_) | Error::InvalidParams(_) | Error::Custom(_) | Error::SequenceMustHaveLength => {
            SinkError::Fatal(format!("ClickHouse row format: {error}"))
        }
        _ => SinkError::Retry(format!("ClickHouse: {error}")),
    }
}

/// The `Code: N` of a ClickHouse exception text.
fn server_error_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + "Code: ".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::error::Error;

    #[test]
    fn a_missing_table_is_fatal_and_too_many_parts_is_retried() {
        let missing = Error::BadResponse(
            "Code: 60, e.displayText() = DB::Exception: Table bxb.events_raw doesn't exist., e.what() = DB::Exception".into(),
        );
        assert!(matches!(classify(missing), SinkError::Fatal(m) if m.contains("UNKNOWN_TABLE")));
        let parts = Error::BadResponse("Code: 252. DB::Exception: Too many parts (300). (TOO_MANY_PARTS)".into());
        assert!(matches!(classify(parts), SinkError::Retry(_)));
        assert!(matches!(classify(Error::TimedOut), SinkError::Retry(_)));
        assert!(matches!(classify(Error::NotEnoughData), SinkError::Fatal(_)));
    }

    #[test]
    fn error_codes_are_read_from_old_and_new_server_texts() {
        assert_eq!(server_error_code("Code: 81, e.displayText() = DB::Exception: Database x doesn't exist"), Some(81));
        assert_eq!(server_error_code("Code: 516. DB::Exception: default: Authentication failed"), Some(516));
        assert_eq!(server_error_code("502 Bad Gateway"), None);
    }
}
