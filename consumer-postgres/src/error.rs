//! Sorting PostgreSQL failures into the runtime's two kinds: retry (the same batch will succeed
//! later) and fatal (an operator has to act; stop without committing).

use bxb_consumer::SinkError;

/// What went wrong in the PostgreSQL sink outside a batch write (start-up, maintenance).
#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    /// The connection URL or another setting cannot work.
    #[error("PostgreSQL setting {setting}: {problem}")]
    Config { setting: &'static str, problem: String },
    /// Applying the migrations of `schemas/postgres/migrations` failed.
    #[error("PostgreSQL migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
}

impl PostgresError {
    /// Whether trying again later can help.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Config { .. } => false,
            Self::Migrate(sqlx::migrate::MigrateError::Execute(e)) => is_transient(e),
            Self::Migrate(_) => false,
            Self::Database(e) => is_transient(e),
        }
    }

    pub fn into_sink_error(self) -> SinkError {
        if self.is_transient() { SinkError::Retry(self.to_string()) } else { SinkError::Fatal(self.to_string()) }
    }
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
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
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

pub(crate) fn sink_error(context: &str, error: sqlx::Error) -> SinkError {
    let message = format!("{context}: {error}");
    if is_transient(&error) { SinkError::Retry(message) } else { SinkError::Fatal(message) }
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
