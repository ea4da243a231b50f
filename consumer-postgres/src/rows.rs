//! Records as rows of the staging table, in the binary `COPY` format.

use std::borrow::Cow;

use bxb_consumer::Record;

use crate::copy_binary::{BinaryCopyWriter, CopyEncodeError};

/// The staging table of one write transaction: the columns of `events` that come from the record.
/// Temporary and dropped at commit, so it needs no cleanup and works through a transaction-mode
/// connection pooler.
pub(crate) const CREATE_STAGING: &str = "CREATE TEMPORARY TABLE bxb_events_staging (
    organization_id uuid NOT NULL,
    transaction_id text NOT NULL,
    external_customer_id text NOT NULL,
    code text NOT NULL,
    \"timestamp\" timestamptz NOT NULL,
    properties jsonb NOT NULL,
    value double precision,
    decimal_value numeric,
    ingested_at timestamptz,
    kafka_partition integer NOT NULL,
    kafka_offset bigint NOT NULL
) ON COMMIT DROP";

pub(crate) const COPY_STAGING: &str = "COPY bxb_events_staging (organization_id, transaction_id, \
    external_customer_id, code, \"timestamp\", properties, value, decimal_value, ingested_at, \
    kafka_partition, kafka_offset) FROM STDIN (FORMAT BINARY)";

const STAGING_COLUMNS: i16 = 11;

/// The binary `COPY` stream of `records`, in [`COPY_STAGING`]'s column order.
pub fn encode(records: &[&Record]) -> Result<Vec<u8>, CopyEncodeError> {
    let estimate: usize = records.iter().map(|r| 160 + r.event.properties.len()).sum();
    let mut w = BinaryCopyWriter::with_capacity(estimate);
    for record in records {
        let event = &record.event;
        w.row(STAGING_COLUMNS).uuid(&event.organization_id);
        w.text(&event.transaction_id)?;
        w.text(&event.external_customer_id)?;
        w.text(&event.code)?;
        w.timestamptz_ms(event.timestamp_ms);
        w.jsonb(&storable_json(&event.properties))?;
        match event.value {
            Some(v) => w.float8(v),
            None => w.null(),
        };
        match &event.decimal_value {
            Some(d) => w.numeric(d.as_str())?,
            None => w.null(),
        };
        match record.ingested_at_ms {
            Some(ms) => w.timestamptz_ms(ms),
            None => w.null(),
        };
        w.int4(record.partition).int8(record.offset);
    }
    Ok(w.finish())
}

/// `jsonb` refuses the escape `\u0000` (its strings cannot hold NUL), although it is valid JSON
/// and the event rules accept it. Rather than stall the partition on a record PostgreSQL can never
/// take, such a character is stored as U+FFFD, the Unicode replacement character; the exact text
/// stays in Kafka and ClickHouse. Only real escapes are replaced: in `\\u0000` the backslash is
/// itself escaped and the text is left alone.
pub fn storable_json(json: &str) -> Cow<'_, str> {
    if !json.contains("\\u0000") {
        return Cow::Borrowed(json);
    }
    let bytes = json.as_bytes();
    let mut out = String::with_capacity(json.len());
    let mut copied_to = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            i += 1;
            continue;
        }
        if bytes[i + 1..].starts_with(b"u0000") {
            out.push_str(&json[copied_to..i]);
            out.push_str("\\ufffd");
            i += 6;
            copied_to = i;
            metrics::counter!("bxb_consumer_postgres_nul_characters_replaced_total").increment(1);
        } else {
            i += 2; // skip the escaped character, whatever it is
        }
    }
    out.push_str(&json[copied_to.min(json.len())..]);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_nul_escapes_are_replaced() {
        assert!(matches!(storable_json(r#"{"a":"b"}"#), Cow::Borrowed(_)));
        assert_eq!(storable_json(r#"{"a":"x\u0000y"}"#), r#"{"a":"x\ufffdy"}"#);
        assert_eq!(storable_json(r#"{"\u0000":"\u0000"}"#), r#"{"\ufffd":"\ufffd"}"#);
        assert_eq!(storable_json(r#"{"a":"\\u0000"}"#), r#"{"a":"\\u0000"}"#);
        assert_eq!(storable_json(r#"{"a":"\\\u0000"}"#), r#"{"a":"\\\ufffd"}"#);
        assert_eq!(storable_json(r#"{"a":"\"\u00001"}"#), r#"{"a":"\"\ufffd1"}"#);
    }
}
