//! `bxbctl backfill`: brings PostgreSQL to exactly the billable projection of ClickHouse over a
//! time range, by the identity rule (`docs/identity.md`).
//!
//! ClickHouse keeps every record of every event. For each identity with a record in the range,
//! the first record by the rule (`FIRST_RECORDS_QUERY`) is handed to consumer-postgres' own
//! write path, judged against `billable_metrics` as it is now: a new identity takes its key (and
//! its row, if billable); a better-ranked record replaces PostgreSQL's; the same record judged
//! otherwise now gains or loses its row; anything else stays. That is what the operator runs
//! after making a metric billable retroactively (a row whose `effective_from` is in the past),
//! after ending one retroactively, and at the end of the upgrade to the rule. It is idempotent,
//! runs beside consumer-postgres (both take the same row locks), and reads ClickHouse one day of
//! timestamps at a time, so memory stays bounded over months.

use bxb_consumer::{Sink, SinkError};
use bxb_consumer_clickhouse::billing::{self, Granularity, UsageQuery};
use bxb_consumer_clickhouse::ClickHouseArgs;
use bxb_consumer_postgres::{PostgresSink, WriteSummary};
use uuid::Uuid;

/// How much of the range one ClickHouse read covers.
const WINDOW_MS: i64 = 86_400_000;
/// How many records one PostgreSQL transaction takes.
const CHUNK: usize = 5_000;
/// How often a chunk is tried when PostgreSQL asks for a retry (a concurrent writer, a timeout).
const ATTEMPTS: u32 = 5;

/// What to backfill.
#[derive(Debug, Clone)]
pub struct BackfillScope {
    pub from_ms: i64,
    pub to_ms: i64,
    pub organization_id: Option<Uuid>,
}

/// What the backfill did, summed over every chunk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BackfillReport {
    /// First records read from ClickHouse (an identity whose records span days is read once a day).
    pub read: u64,
    pub summary: WriteSummary,
}

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] billing::BillingError),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] SinkError),
    #[error("a row of events_raw has a decimal_value beyond 38 digits ({0})")]
    Decimal(String),
}

/// Runs the backfill of `scope` through `sink`.
pub async fn backfill(sink: &PostgresSink, clickhouse: &ClickHouseArgs, scope: &BackfillScope) -> Result<BackfillReport, BackfillError> {
    let client = clickhouse.client();
    let mut report = BackfillReport::default();
    let mut from_ms = scope.from_ms;
    while from_ms < scope.to_ms {
        let to_ms = from_ms.saturating_add(WINDOW_MS).min(scope.to_ms);
        let query = UsageQuery { from_ms, to_ms, granularity: Granularity::Day, organization_id: scope.organization_id };
        let rows = billing::first_records(&client, &query).await?;
        report.read += rows.len() as u64;
        for chunk in rows.chunks(CHUNK) {
            let mut records = Vec::with_capacity(chunk.len());
            for row in chunk {
                let mut record =
                    row.to_record().ok_or_else(|| BackfillError::Decimal(format!("{} / {}", row.organization_id, row.transaction_id)))?;
                // What consumer-postgres cannot store is judged as when it is consumed.
                record.screened = sink.screen(&record.event);
                records.push(record);
            }
            let summary = write_with_retries(sink, &records).await?;
            report.summary += &summary;
        }
        from_ms = to_ms;
    }
    Ok(report)
}

async fn write_with_retries(sink: &PostgresSink, records: &[bxb_consumer::Record]) -> Result<WriteSummary, BackfillError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match sink.write_batch(records).await {
            Ok((summary, _refused)) => return Ok(summary),
            Err(SinkError::Retry(reason)) if attempt < ATTEMPTS => {
                tracing::warn!(%reason, attempt, "backfill chunk failed; trying it again");
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(error) => return Err(error.into()),
        }
    }
}
