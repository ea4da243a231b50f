//! The benchmark's events: one shape everywhere (HTTP JSON, Avro records, rows), so every
//! measurement and its baseline move the same bytes.

use bxb_consumer::Record;
use bxb_event::Event;
use uuid::Uuid;

/// Billable in consumer-postgres through `BXB_BILLABLE_CODES`.
pub const CODE: &str = "bench_calls";
/// Not billable: one event in [`NOT_BILLABLE_EVERY`] has it, a mix like a platform's (usage
/// events beside analytics-only ones). consumer-postgres keeps their identities, not their rows.
pub const NOT_BILLABLE_CODE: &str = "bench_views";
pub const NOT_BILLABLE_EVERY: u64 = 4;

/// Whether event `seq` of the run is billable.
pub fn is_billable(seq: u64) -> bool {
    seq % NOT_BILLABLE_EVERY != NOT_BILLABLE_EVERY - 1
}
const PROPERTIES: &str = r#"{"region":"eu-west-1","plan":"pro","endpoint":"/v1/search"}"#;

pub fn event(organization_id: Uuid, transaction_id: String, seq: u64, timestamp_ms: i64) -> Event {
    Event {
        organization_id,
        transaction_id,
        external_customer_id: format!("customer-{}", seq % 1_000),
        code: if is_billable(seq) { CODE } else { NOT_BILLABLE_CODE }.to_owned(),
        timestamp_ms,
        properties: PROPERTIES.to_owned(),
        value: Some((seq % 100) as f64),
        decimal_value: None,
    }
}

/// The JSON object a client posts for `event` (organization from the key, time from the gateway).
pub fn json(event: &Event) -> serde_json::Value {
    let properties: serde_json::Value = serde_json::from_str(&event.properties).expect("fixed JSON");
    serde_json::json!({
        "transaction_id": event.transaction_id,
        "external_customer_id": event.external_customer_id,
        "code": event.code,
        "properties": properties,
        "value": event.value,
    })
}

/// A `POST /v1/events/batch` body of `count` events, transaction ids `<prefix>-<i>`.
pub fn batch_body(organization_id: Uuid, prefix: &str, count: usize, now_ms: i64) -> String {
    let events: Vec<serde_json::Value> =
        (0..count).map(|i| json(&event(organization_id, format!("{prefix}-{i}"), i as u64, now_ms))).collect();
    serde_json::json!({ "events": events }).to_string()
}

/// The records a consumer would hand its sink for events `range` of the backlog.
pub fn records(organization_ids: &[Uuid], range: std::ops::Range<u64>, timestamp_ms: i64) -> Vec<Record> {
    range
        .map(|seq| {
            let organization_id = organization_ids[(seq % organization_ids.len() as u64) as usize];
            Record {
                event: event(organization_id, format!("backlog-{seq}"), seq, timestamp_ms),
                partition: (seq % 4) as i32,
                offset: seq as i64,
                appended_at_ms: timestamp_ms,
                screened: None,
                ingested_at_ms: Some(timestamp_ms),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_body_is_what_the_gateway_parses() {
        let body: serde_json::Value = serde_json::from_str(&batch_body(Uuid::nil(), "r1", 3, 0)).unwrap();
        let events = body["events"].as_array().unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[2]["transaction_id"], "r1-2");
        assert_eq!(events[0]["code"], CODE);
        assert!(events[0]["properties"].is_object());
    }

    #[test]
    fn backlog_records_spread_over_organizations_with_unique_ids() {
        let orgs = [Uuid::from_u128(1), Uuid::from_u128(2)];
        let records = records(&orgs, 10..14, 5);
        assert_eq!(records.len(), 4);
        assert_eq!(records[0].event.transaction_id, "backlog-10");
        assert_ne!(records[0].event.organization_id, records[1].event.organization_id);
    }
}
