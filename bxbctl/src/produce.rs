//! `bxbctl produce`: publish events straight to Kafka, the way any direct producer must
//! (docs/producer-contract.md). Each input line is one event in the JSON of `POST /v1/events`
//! plus its `organization_id`; lines are parsed and validated by the gateway's parser
//! ([`bxb_event::ingest`]) and published by its publisher ([`bxb_publish`]), so the two entry
//! points accept exactly the same events and put exactly the same records on Kafka.

use std::io::BufRead;
use std::sync::{Arc, OnceLock};

use bxb_event::clock::now_ms;
use bxb_event::ingest::{parse_single, ParseContext, Problem, TimestampWindow};
use bxb_event::registry::{value_subject, EventEncoder, SchemaRegistry};
use bxb_event::Event;
use bxb_publish::{ProducerArgs, Publisher};
use rdkafka::ClientConfig;
use uuid::Uuid;

/// A line that is not an event, with its 1-based number.
#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// Parses JSON lines into events; blank lines are skipped.
pub fn parse_lines(input: impl BufRead, window: TimestampWindow) -> (Vec<Event>, Vec<LineError>) {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let line_number = index + 1;
        let line = match line {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => line,
            Err(e) => {
                errors.push(LineError { line: line_number, message: e.to_string() });
                continue;
            }
        };
        match parse_line(line.as_bytes(), window) {
            Ok(event) => events.push(event),
            Err(message) => errors.push(LineError { line: line_number, message }),
        }
    }
    (events, errors)
}

/// A refused line as it is reported: the shape of the gateway's error body.
#[derive(serde::Serialize)]
struct LineRefusal<'a> {
    code: &'static str,
    message: String,
    errors: &'a [Problem],
    total_errors: usize,
}

fn parse_line(line: &[u8], window: TimestampWindow) -> Result<Event, String> {
    #[derive(serde::Deserialize)]
    struct Owner {
        organization_id: Uuid,
    }
    let owner: Owner = serde_json::from_slice(line).map_err(|e| format!("needs a UUID organization_id: {e}"))?;
    let context = ParseContext { organization_id: owner.organization_id, received_at_ms: now_ms(), window, max_batch_events: 1 };
    match parse_single(line, &context) {
        Ok(mut events) => Ok(events.remove(0)),
        Err(rejection) => {
            let refusal = &rejection.refusal;
            let shown = LineRefusal {
                code: refusal.code(),
                message: refusal.to_string(),
                errors: refusal.problems(),
                total_errors: refusal.total_problems(),
            };
            Err(serde_json::to_string(&shown).unwrap_or(shown.message))
        }
    }
}

/// Publishes `events` to `topic` exactly as the gateway does (`bxb_publish`: `acks=all`,
/// idempotence, key = organization id, trace context and ingestion time headers, every record
/// size-checked first), registering the event schema under `<topic>-value` first; returns once
/// every record is acknowledged.
pub async fn publish(
    connection: &ClientConfig,
    settings: &ProducerArgs,
    registry: &SchemaRegistry,
    topic: &str,
    events: &[Event],
) -> anyhow::Result<()> {
    let schema_id = registry.register_event_schema(&value_subject(topic)).await?;
    let encoder = Arc::new(OnceLock::from(EventEncoder::new(schema_id)));
    let publisher = Publisher::new(settings, connection, "bxbctl", topic, encoder)?;
    let span = tracing::info_span!("bxbctl.produce", topic, events = events.len());
    publisher.publish(events, &span, now_ms()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: TimestampWindow = TimestampWindow { max_age_ms: 30 * 86_400_000, max_future_skew_ms: 300_000 };

    #[test]
    fn lines_are_parsed_like_gateway_requests() {
        let org = Uuid::new_v4();
        let input = format!(
            "{{\"organization_id\":\"{org}\",\"transaction_id\":\"t1\",\"external_customer_id\":\"c\",\"code\":\"api_calls\",\"value\":2}}\n\
             \n\
             {{\"transaction_id\":\"t2\"}}\n\
             {{\"organization_id\":\"{org}\",\"transaction_id\":\"\",\"external_customer_id\":\"c\",\"code\":\"api calls\"}}\n"
        );
        let (events, errors) = parse_lines(input.as_bytes(), WINDOW);
        assert_eq!(events.len(), 1);
        assert_eq!((events[0].organization_id, events[0].value), (org, Some(2.0)));
        assert_eq!(errors.iter().map(|e| e.line).collect::<Vec<_>>(), [3, 4]);
        assert!(errors[1].message.contains("transaction_id") && errors[1].message.contains("code"), "{:?}", errors[1]);
    }
}
