//! The Rust side of `events_raw`: one row per Kafka record, and the column list it needs.

use bxb_consumer::{Record, SinkError};
use bxb_event::{Event, DECIMAL_MAX_SCALE};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The scale of `decimal_value`: `Decimal(38, 12)`.
pub const DECIMAL_SCALE: u32 = DECIMAL_MAX_SCALE;

/// One row of `events_raw` as written in RowBinary (field order is the insert's column order).
#[derive(Debug, Clone, PartialEq, clickhouse::Row, Serialize, Deserialize)]
pub struct EventRow {
    #[serde(with = "clickhouse::serde::uuid")]
    pub organization_id: Uuid,
    pub transaction_id: String,
    pub external_customer_id: String,
    pub code: String,
    /// `DateTime('UTC')`: whole seconds of `timestamp_ms`.
    pub timestamp: u32,
    pub timestamp_ms: i64,
    pub properties: String,
    pub value: Option<f64>,
    /// `Decimal(38, 12)` as its value times 10^12.
    pub decimal_value: Option<i128>,
    pub ingested_at_ms: Option<i64>,
    pub written_at_ms: i64,
    pub kafka_partition: i32,
    pub kafka_offset: i64,
    /// The broker's append time: with partition and offset, the record's rank.
    pub appended_at_ms: i64,
}

/// Every column of `events_raw` with the type ClickHouse reports for it in `system.columns`.
/// The last one is computed by the table (MATERIALIZED), not written.
pub const EVENTS_RAW_COLUMNS: &[(&str, &str)] = &[
    ("organization_id", "UUID"),
    ("transaction_id", "String"),
    ("external_customer_id", "String"),
    ("code", "String"),
    ("timestamp", "DateTime('UTC')"),
    ("timestamp_ms", "Int64"),
    ("properties", "String"),
    ("value", "Nullable(Float64)"),
    ("decimal_value", "Nullable(Decimal(38, 12))"),
    ("ingested_at_ms", "Nullable(Int64)"),
    ("written_at_ms", "Int64"),
    ("kafka_partition", "Int32"),
    ("kafka_offset", "Int64"),
    ("appended_at_ms", "Int64"),
    (DEDUP_VERSION_COLUMN, "UInt64"),
];

/// The ReplacingMergeTree version, `MATERIALIZED` from `appended_at_ms`: of the rows of one Kafka
/// record, a merge keeps the one of the lowest append time (a legacy row's 0).
pub const DEDUP_VERSION_COLUMN: &str = "dedup_version";

impl EventRow {
    /// The row of a decoded, validated record. Validation guarantees both conversions; a
    /// failure would mean a bug, reported as fatal rather than writing a wrong value.
    pub fn from_record(record: &Record, written_at_ms: i64) -> Result<Self, SinkError> {
        let event = &record.event;
        let timestamp = u32::try_from(event.timestamp_ms.div_euclid(1000)).map_err(|_| {
            SinkError::Fatal(format!("timestamp {} ms does not fit DateTime (offset {})", event.timestamp_ms, record.offset))
        })?;
        let decimal_value =
            match &event.decimal_value {
                Some(d) => Some(d.to_scaled_i128(DECIMAL_SCALE).ok_or_else(|| {
                    SinkError::Fatal(format!("decimal_value {d} does not fit Decimal(38, 12) (offset {})", record.offset))
                })?),
                None => None,
            };
        Ok(Self {
            organization_id: event.organization_id,
            transaction_id: event.transaction_id.clone(),
            external_customer_id: event.external_customer_id.clone(),
            code: event.code.clone(),
            timestamp,
            timestamp_ms: event.timestamp_ms,
            properties: event.properties.clone(),
            value: event.value,
            decimal_value,
            ingested_at_ms: record.ingested_at_ms,
            written_at_ms,
            kafka_partition: record.partition,
            kafka_offset: record.offset,
            // A producer-chosen time before 1970 (a `CreateTime` topic) ranks like a legacy row.
            appended_at_ms: record.appended_at_ms.max(bxb_event::identity::LEGACY_APPENDED_AT_MS),
        })
    }
}

impl EventRow {
    /// The record the row was written from, as the consumers see it (not screened); `None` when
    /// its decimal does not fit 38 digits (a row no consumer-clickhouse writes).
    pub fn to_record(&self) -> Option<Record> {
        let decimal_value = match self.decimal_value {
            Some(scaled) => Some(crate::billing::decimal_from_scaled(scaled, DECIMAL_SCALE)?),
            None => None,
        };
        Some(Record {
            event: Event {
                organization_id: self.organization_id,
                transaction_id: self.transaction_id.clone(),
                external_customer_id: self.external_customer_id.clone(),
                code: self.code.clone(),
                timestamp_ms: self.timestamp_ms,
                properties: self.properties.clone(),
                value: self.value,
                decimal_value,
            },
            partition: self.kafka_partition,
            offset: self.kafka_offset,
            appended_at_ms: self.appended_at_ms,
            screened: None,
            ingested_at_ms: self.ingested_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::Row;

    #[test]
    fn the_row_type_writes_every_column_but_the_version() {
        let written: Vec<_> = EVENTS_RAW_COLUMNS.iter().map(|(n, _)| *n).filter(|n| *n != DEDUP_VERSION_COLUMN).collect();
        assert_eq!(EventRow::COLUMN_NAMES, written.as_slice());
    }

    /// The DDL file and the Rust column list must describe the same table.
    #[test]
    fn the_ddl_declares_exactly_these_columns() {
        let ddl = bxb_schemas::clickhouse::EVENTS_RAW_DDL;
        let body = &ddl[ddl.find("\n(").expect("column list")..ddl.find("\n)").expect("end of column list")];
        let declared: Vec<(String, String)> = body
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("--") && *l != "(")
            .map(|l| {
                let l = l.trim_end_matches(',');
                let (name, rest) = l.split_once(char::is_whitespace).expect("name and type");
                let ty = rest.trim().split(" MATERIALIZED").next().unwrap().trim();
                (name.to_owned(), ty.to_owned())
            })
            .collect();
        let expected: Vec<(String, String)> = EVENTS_RAW_COLUMNS.iter().map(|(n, t)| ((*n).into(), (*t).into())).collect();
        assert_eq!(declared, expected);
    }

    #[test]
    fn a_record_becomes_an_exact_row() {
        let record = Record {
            event: Event {
                code: "calls".into(),
                timestamp_ms: 1_700_000_000_999,
                properties: r#"{"a":1}"#.into(),
                value: Some(0.1),
                decimal_value: Some("-0.000000000001".parse().unwrap()),
                ..bxb_event::test_support::event_of(Uuid::from_u128(7), "tx")
            },
            partition: 2,
            offset: 9,
            appended_at_ms: 1_700_000_001_002,
            screened: None,
            ingested_at_ms: Some(1_700_000_001_000),
        };
        let row = EventRow::from_record(&record, 5).unwrap();
        assert_eq!(row.appended_at_ms, 1_700_000_001_002);
        assert_eq!(row.timestamp, 1_700_000_000);
        assert_eq!(row.timestamp_ms, 1_700_000_000_999);
        assert_eq!(row.decimal_value, Some(-1));
        assert_eq!((row.kafka_partition, row.kafka_offset, row.written_at_ms), (2, 9, 5));
        let back = row.to_record().unwrap();
        assert_eq!(back.event, record.event);
        assert_eq!(
            (back.partition, back.offset, back.appended_at_ms, back.ingested_at_ms),
            (2, 9, 1_700_000_001_002, Some(1_700_000_001_000))
        );
    }
}
