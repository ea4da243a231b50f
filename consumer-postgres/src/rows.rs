//! Records as rows of `events`, in the binary `COPY` format, and their identity keys as the
//! arrays of the `event_keys` insert.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use bxb_consumer::Record;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::copy_binary::{BinaryCopyWriter, CopyEncodeError};
use crate::partitions::datetime;

/// The columns of `events` that come from the record; `written_at` takes its default, the
/// transaction's `now()`.
pub const COPY_EVENTS: &str = "COPY events (organization_id, transaction_id, \
    external_customer_id, code, \"timestamp\", properties, value, decimal_value, ingested_at, \
    kafka_partition, kafka_offset) FROM STDIN (FORMAT BINARY)";

const EVENT_COLUMNS: i16 = 11;

/// The identity keys of the batch, in the order of [`Keys::copy_stream`].
pub const COPY_KEYS: &str = "COPY event_keys (organization_id, transaction_id, \"timestamp\") FROM STDIN (FORMAT BINARY)";

/// The identity keys of a batch, sorted by (organization_id, transaction_id) in byte order (one
/// lock order for every writer), as parallel arrays bound as `uuid[]`, `text[]`, `timestamptz[]`.
#[derive(Debug, Default)]
pub struct Keys<'a> {
    pub organization_ids: Vec<Uuid>,
    pub transaction_ids: Vec<&'a str>,
    pub timestamps_ms: Vec<i64>,
}

impl<'a> Keys<'a> {
    pub fn of(records: &[&'a Record]) -> Self {
        let mut sorted = records.to_vec();
        sorted.sort_unstable_by(|a, b| {
            (a.event.organization_id, a.event.transaction_id.as_bytes()).cmp(&(b.event.organization_id, b.event.transaction_id.as_bytes()))
        });
        let mut keys = Self {
            organization_ids: Vec::with_capacity(records.len()),
            transaction_ids: Vec::with_capacity(records.len()),
            timestamps_ms: Vec::with_capacity(records.len()),
        };
        for record in sorted {
            let event = &record.event;
            keys.organization_ids.push(event.organization_id);
            keys.transaction_ids.push(&event.transaction_id);
            keys.timestamps_ms.push(event.timestamp_ms);
        }
        keys
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
        let mut w = BinaryCopyWriter::with_capacity(self.transaction_ids.len() * 64);
        for ((organization_id, transaction_id), &timestamp_ms) in
            self.organization_ids.iter().zip(&self.transaction_ids).zip(&self.timestamps_ms)
        {
            w.row(3).uuid(organization_id);
            w.text(transaction_id)?;
            w.timestamptz_ms(timestamp_ms);
        }
        Ok(w.finish())
    }
}

/// `records` whose identity is among `new_keys`, in their order.
pub fn only_new<'a>(records: &[&'a Record], new_keys: &[(Uuid, String)]) -> Vec<&'a Record> {
    if new_keys.len() == records.len() {
        // Every key of the batch went in (the usual case): the records are one per identity.
        return records.to_vec();
    }
    let mut by_organization: HashMap<Uuid, HashSet<&str>> = HashMap::new();
    for (organization_id, transaction_id) in new_keys {
        by_organization.entry(*organization_id).or_default().insert(transaction_id);
    }
    records
        .iter()
        .filter(|r| by_organization.get(&r.event.organization_id).is_some_and(|t| t.contains(r.event.transaction_id.as_str())))
        .copied()
        .collect()
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
    fn only_the_records_of_new_keys_are_copied() {
        let batch = [record(1, "a", 0), record(2, "a", 1), record(1, "b", 2)];
        let records: Vec<&Record> = batch.iter().collect();
        let keys = Keys::of(&records);
        assert_eq!(keys.organization_ids, [1, 1, 2].map(Uuid::from_u128));
        assert_eq!(keys.transaction_ids, ["a", "b", "a"]);
        assert!(keys.copy_stream().unwrap().len() > 3 * (16 + 1 + 8));
        assert_eq!(keys.timestamps()[0].unix_timestamp_nanos(), 1_795_000_000_123_000_000);
        let offsets = |new: &[(Uuid, String)]| only_new(&records, new).iter().map(|r| r.offset).collect::<Vec<_>>();
        assert_eq!(offsets(&[(Uuid::from_u128(2), "a".into())]), [1]);
        assert_eq!(offsets(&[(Uuid::from_u128(1), "b".into()), (Uuid::from_u128(1), "a".into())]), [0, 2]);
        assert_eq!(offsets(&[]), Vec::<i64>::new());
        let all: Vec<(Uuid, String)> = batch.iter().map(|r| (r.event.organization_id, r.event.transaction_id.clone())).collect();
        assert_eq!(offsets(&all), [0, 1, 2]);
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
