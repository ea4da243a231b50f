//! Record headers. An event record carries the W3C trace context and the time the gateway
//! accepted it; a dead-letter record carries the original headers plus why and where from.

use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Milliseconds since the Unix epoch when the gateway (or a direct producer) published the event.
pub const INGESTED_AT_MS: &str = "bxb-ingested-at-ms";
/// The stable reason a record was dead-lettered (e.g. `invalid_fields`).
pub const DLQ_REASON: &str = "bxb-dlq-reason";
/// The human-readable error of a dead-lettered record.
pub const DLQ_ERROR: &str = "bxb-dlq-error";
/// Where a dead-lettered record came from, and when it was dead-lettered.
pub const DLQ_SOURCE_TOPIC: &str = "bxb-dlq-source-topic";
pub const DLQ_SOURCE_PARTITION: &str = "bxb-dlq-source-partition";
pub const DLQ_SOURCE_OFFSET: &str = "bxb-dlq-source-offset";
pub const DLQ_CONSUMER_GROUP: &str = "bxb-dlq-consumer-group";
pub const DLQ_AT_MS: &str = "bxb-dlq-at-ms";

/// The headers of a new event record: the trace context of `span` and the ingestion time.
pub fn event_headers(span: &tracing::Span, ingested_at_ms: i64) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(3);
    for (key, value) in bxb_telemetry::trace_context::headers_of(span) {
        headers = headers.insert(Header { key: &key, value: Some(value.as_bytes()) });
    }
    let ingested = ingested_at_ms.to_string();
    headers.insert(Header { key: INGESTED_AT_MS, value: Some(ingested.as_bytes()) })
}

/// The value of the first header named `key`.
pub fn find<'a, H: Headers>(headers: &'a H, key: &str) -> Option<&'a [u8]> {
    headers.iter().find(|h| h.key == key).and_then(|h| h.value)
}

/// The ingestion time of a record, if it carries a well-formed one.
pub fn ingested_at_ms<H: Headers>(headers: &H) -> Option<i64> {
    std::str::from_utf8(find(headers, INGESTED_AT_MS)?).ok()?.parse().ok()
}

/// Copies `headers` (name, value) pairs, as when a record moves to the dead-letter topic.
pub fn copy<H: Headers>(headers: Option<&H>) -> OwnedHeaders {
    let mut out = OwnedHeaders::new();
    if let Some(headers) = headers {
        for h in headers.iter() {
            out = out.insert(Header { key: h.key, value: h.value });
        }
    }
    out
}
