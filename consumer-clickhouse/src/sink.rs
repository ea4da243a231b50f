//! The ClickHouse [`Sink`]: one RowBinary `INSERT` per batch into `events_raw`.

use std::time::Duration;

use bxb_consumer::{Record, Sink, SinkError};
use bxb_event::clock::now_ms;
use bxb_schemas::clickhouse::EVENTS_RAW_TABLE;

use crate::row::EventRow;
use crate::schema::{self, SetupError};
use crate::ClickHouseArgs;

/// How long `/readyz`'s `SELECT 1` may take.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

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

pub struct ClickHouseSink {
    client: clickhouse::Client,
    write_timeout: Duration,
}

impl ClickHouseSink {
    /// Prepares the database and table (see [`schema::prepare`]) and returns the sink.
    pub async fn connect(args: &ClickHouseArgs) -> Result<Self, SetupError> {
        if args.write_timeout_ms == 0 {
            return Err(SetupError::Config { setting: "BXB_CLICKHOUSE_WRITE_TIMEOUT_MS", problem: "must be at least 1".into() });
        }
        let features = schema::prepare(args).await?;
        let mut client = args.client();
        if features.limits_partitions_per_insert {
            // A batch holds whatever times clients sent (a backfill can span years): a limit on
            // the months one insert touches would refuse the same batch forever.
            client = client.with_setting("max_partitions_per_insert_block", "0");
        }
        Ok(Self { client, write_timeout: Duration::from_millis(args.write_timeout_ms) })
    }

    async fn insert(&self, batch: &[Record]) -> Result<(), SinkError> {
        let written_at_ms = now_ms();
        let mut insert = self
            .client
            .insert::<EventRow>(EVENTS_RAW_TABLE)
            .await
            .map_err(classify)?
            .with_timeouts(Some(self.write_timeout), Some(self.write_timeout));
        for record in batch {
            insert.write(&EventRow::from_record(record, written_at_ms)?).await.map_err(classify)?;
        }
        insert.end().await.map_err(classify)
    }
}

impl Sink for ClickHouseSink {
    fn name(&self) -> &'static str {
        "clickhouse"
    }

    async fn write(&self, batch: &[Record]) -> Result<(), SinkError> {
        self.insert(batch).await
    }

    async fn is_ready(&self) -> bool {
        let ping = self.client.query("SELECT 1").fetch_one::<u8>();
        matches!(tokio::time::timeout(READY_TIMEOUT, ping).await, Ok(Ok(1)))
    }
}

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
        let missing = Error::BadResponse("Code: 60, e.displayText() = DB::Exception: Table bxb.events_raw doesn't exist., e.what() = DB::Exception".into());
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
