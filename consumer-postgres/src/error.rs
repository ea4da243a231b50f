//! Why consumer-postgres stops, and how a failed write is sorted (STYLE rule 5): *retry* (the
//! same batch will succeed later: back off, write it again) or *fatal* (an operator has to act:
//! stop without committing). *Poison* is decided before the sink: records that cannot be
//! decoded or break the field rules are dead-lettered by the runtime, and what PostgreSQL cannot
//! store as it is (a NUL in `properties`) is made storable rather than refused.

use bxb_consumer::{RuntimeError, SinkError};

/// Why [`crate::run`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// PostgreSQL could not be prepared at start (connection, schema, billable metrics).
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The runtime stopped on a fatal error (including a fatal write).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Why PostgreSQL cannot take events.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The connection URL or another setting cannot work.
    #[error("PostgreSQL setting {setting}: {problem}")]
    Config { setting: &'static str, problem: String },
    /// Applying the migrations at start (`BXB_MIGRATE_ON_START`) failed.
    #[error("PostgreSQL migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The schema is not the one this build writes, and the consumer was not to migrate it.
    #[error("{0} (or start with BXB_MIGRATE_ON_START=true)")]
    NotMigrated(#[from] bxb_schemas::postgres::CheckError),
    /// A start-up query failed (loading the billable metrics, creating partitions).
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
}

/// The SQLSTATE of "no partition of relation ... found for row": the partition was dropped (or
/// not yet created) between our check and the insert.
pub(crate) const NO_PARTITION_FOR_ROW: &str = "23514";

/// The SQLSTATE of a unique violation: a key already stored (handled by the key insert's
/// fallback, never reported).
pub(crate) const UNIQUE_VIOLATION: &str = "23505";

/// The SQLSTATE of a database error, if `error` is one.
pub(crate) fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => db.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// Retry: connection trouble, timeouts, conflicts with concurrent transactions, a server that is
/// starting, stopping, failing over or short of resources. Fatal: what only a person can fix —
/// authentication, privileges, a missing database, table or column, bad settings.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_none_or(|code| sqlstate_is_transient(&code)),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::PoolTimedOut | sqlx::Error::WorkerCrashed => {
            true
        }
        _ => false,
    }
}

/// Classes and codes from <https://www.postgresql.org/docs/current/errcodes-appendix.html>.
pub(crate) fn sqlstate_is_transient(code: &str) -> bool {
    match code {
        // serialization_failure, deadlock_detected, statement timeout (query_canceled),
        // lock_not_available, a hot standby after failover (read_only_sql_transaction), a
        // partition dropped or not yet created under our feet.
        "40001" | "40P01" | "57014" | "55P03" | "25006" | NO_PARTITION_FOR_ROW => true,
        // admin_shutdown, crash_shutdown, cannot_connect_now, idle_session_timeout,
        // database_dropped is not transient.
        "57P01" | "57P02" | "57P03" | "57P05" => true,
        "57P04" => false,
        _ => matches!(
            &code[..2.min(code.len())],
            // connection_exception, insufficient_resources (disk full, out of memory, too many
            // connections), operator intervention, system_error (I/O), internal_error.
            "08" | "53" | "58" | "XX"
        ),
    }
}

/// Sorts a failed write into retry or fatal (see [`is_transient`]); `action` says what failed.
pub(crate) fn classify(action: &str, error: sqlx::Error) -> SinkError {
    let message = format!("{action}: {error}");
    if is_transient(&error) {
        SinkError::Retry(message)
    } else {
        SinkError::Fatal(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_and_outages_are_retried() {
        for code in ["40001", "40P01", "57014", "55P03", "08006", "08001", "53300", "53100", "57P01", "58030", "XX000", "23514", "25006"] {
            assert!(sqlstate_is_transient(code), "{code}");
        }
    }

    #[test]
    fn what_a_person_must_fix_is_fatal() {
        for code in ["42501", "42P01", "42703", "28P01", "3D000", "57P04", "22P05", "23505"] {
            assert!(!sqlstate_is_transient(code), "{code}");
        }
    }

    #[test]
    fn pool_and_io_errors_are_retried_configuration_is_not() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(is_transient(&sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))));
        assert!(!is_transient(&sqlx::Error::Configuration("bad url".into())));
        assert!(!is_transient(&sqlx::Error::PoolClosed));
    }
}
