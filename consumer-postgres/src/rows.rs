//! Records as rows of `events`, in the binary `COPY` format, and their identity keys as the
//! arrays of the `event_keys` insert.

use std::borrow::Cow;

use bxb_consumer::Record;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::copy_binary::{BinaryCopyWriter, CopyEncodeError};
use crate::partitions::datetime;
use crate::select::Candidate;

/// The columns of `events` that come from the record; `written_at` takes its default, the
/// transaction's `now()`.
pub const COPY_EVENTS: &str = "COPY events (organization_id, transaction_id, \
    external_customer_id, code, \"timestamp\", properties, value, decimal_value, ingested_at, \
    kafka_partition, kafka_offset) FROM STDIN (FORMAT BINARY)";

const EVENT_COLUMNS: i16 = 11;

/// The identity keys of the batch, in the order of [`Keys::copy_stream`].
pub const COPY_KEYS: &str = "COPY event_keys (organization_id, transaction_id, \"timestamp\", appended_at_ms, \
    kafka_partition, kafka_offset, billable) FROM STDIN (FORMAT BINARY)";

/// The identity keys of a batch's candidates, sorted by (organization_id, transaction_id) in
/// byte order (one lock order for every writer), as parallel arrays bound as `uuid[]`, `text[]`,
/// `timestamptz[]`, `int8[]`, `int4[]`, `int8[]`, `bool[]`.
#[derive(Debug, Default)]
pub struct Keys<'a> {
    pub organization_ids: Vec<Uuid>,
    pub transaction_ids: Vec<&'a str>,
    pub timestamps_ms: Vec<i64>,
    pub appended_at_ms: Vec<i64>,
    pub partitions: Vec<i32>,
    pub offsets: Vec<i64>,
    pub billable: Vec<bool>,
}

impl<'a> Keys<'a> {
    pub fn of(candidates: &[Candidate<'a>]) -> Self {
        let mut sorted = candidates.to_vec();
        sorted.sort_unstable_by(|a, b| {
            let (a, b) = (&a.record.event, &b.record.event);
            (a.organization_id, a.transaction_id.as_bytes()).cmp(&(b.organization_id, b.transaction_id.as_bytes()))
        });
        let mut keys = Self::default();
        for candidate in sorted {
            let record = candidate.record;
            keys.organization_ids.push(record.event.organization_id);
            keys.transaction_ids.push(&record.event.transaction_id);
            keys.timestamps_ms.push(record.event.timestamp_ms);
            keys.appended_at_ms.push(record.appended_at_ms);
            keys.partitions.push(record.partition);
            keys.offsets.push(record.offset);
            keys.billable.push(candidate.billable);
        }
        keys
    }

    pub fn len(&self) -> usize {
        self.organization_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.organization_ids.is_empty()
    }
}

impl Keys<'_> {
    /// The timestamps to bind as `timestamptz[]`; exact, since event timestamps are validated to
    /// lie between 1970 and 2106.
    pub fn timestamps(&self) -> Vec<OffsetDateTime> {
        self.timestamps_ms.iter().map(|&ms| datetime(ms)).collect()
    }

    /// The binary `COPY` stream of [`COPY_KEYS`].
    pub fn copy_stream(&self) -> Result<Vec<u8>, CopyEncodeError> {
        let mut w = BinaryCopyWriter::with_capacity(self.len() * 96);
        for i in 0..self.len() {
            w.row(7).uuid(&self.organization_ids[i]);
            w.text(self.transaction_ids[i])?;
            w.timestamptz_ms(self.timestamps_ms[i]).int8(self.appended_at_ms[i]).int4(self.partitions[i]).int8(self.offsets[i]);
            w.bool(self.billable[i]);
        }
        Ok(w.finish())
    }
}

/// The binary `COPY` stream of `records`, in [`COPY_EVENTS`]'s column order.
pub fn encode(records: &[&Record]) -> Result<Vec<u8>, CopyEncodeError> {
    let estimate: usize = records.iter().map(|r| 160 + r.event.properties.len()).sum();
    let mut w = BinaryCopyWriter::with_capacity(estimate);
    for record in records {
        let event = &record.event;
        w.row(EVENT_COLUMNS).uuid(&event.organization_id);
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

    fn record(organization: u128, transaction_id: &str, offset: i64) -> Record {
        crate::select::tests::record(organization, transaction_id, "calls", 1_795_000_000_123, offset)
    }

    #[test]
    fn keys_are_sorted_by_identity_with_their_rank_and_judgment() {
        let mut batch = [record(1, "b", 0), record(2, "a", 1), record(1, "a", 2)];
        batch[1].partition = 4;
        let candidates: Vec<Candidate<'_>> = batch.iter().map(|record| Candidate { record, billable: record.offset != 1 }).collect();
        let keys = Keys::of(&candidates);
        assert_eq!(keys.organization_ids, [1, 1, 2].map(Uuid::from_u128));
        assert_eq!(keys.transaction_ids, ["a", "b", "a"]);
        assert_eq!(keys.offsets, [2, 0, 1]);
        assert_eq!(keys.partitions, [0, 0, 4]);
        assert_eq!(keys.appended_at_ms, [1_000_002, 1_000_000, 1_000_001]);
        assert_eq!(keys.billable, [true, true, false]);
        // Per row: field count, uuid, text, timestamptz, int8, int4, int8, bool (with lengths).
        assert_eq!(keys.copy_stream().unwrap().len(), 19 + 3 * (2 + 20 + 5 + 12 + 12 + 8 + 12 + 5) + 2);
        assert_eq!(keys.timestamps()[0].unix_timestamp_nanos(), 1_795_000_000_123_000_000);
    }

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
