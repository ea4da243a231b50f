//! What must hold for any request body, whatever its bytes. The property tests
//! (`hostile_tests.rs`) and the coverage-guided fuzz targets (`fuzz/`) both drive the parser
//! through [`check_body`], so a rule stated here is checked by both.
//!
//! Compiled for tests and with the `invariants` feature (which the fuzz targets enable).

use uuid::Uuid;

use super::problems::json_len;
use super::{parse_batch, parse_single, ParseContext, Refusal, TimestampWindow, MAX_ERROR_BODY_BYTES, MAX_LISTED_PROBLEMS};
use crate::avro::{self, EVENT_SCHEMA};
use crate::invariants::assert_same_event;
use crate::registry::decode_event_datum;
use crate::{validate, Event};

/// The organization of the API key the checked bodies come with.
pub const ORGANIZATION: Uuid = Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
/// When the checked bodies are received: 2024-05-01T12:00:00Z.
pub const RECEIVED_AT_MS: i64 = 1_714_564_800_000;

/// The context of the checked bodies: events up to a day late or a minute ahead, at most
/// `max_batch_events` in a batch.
pub fn context(max_batch_events: usize) -> ParseContext {
    ParseContext {
        organization_id: ORGANIZATION,
        received_at_ms: RECEIVED_AT_MS,
        window: TimestampWindow { max_age_ms: 86_400_000, max_future_skew_ms: 60_000 },
        max_batch_events,
    }
}

/// Which handler the body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Single,
    Batch,
}

/// Parses `body` as the handler of `endpoint` does and panics when an invariant breaks:
///
/// - a refused body gets a stable code, a message and, when the refusal is about events (invalid
///   or of another organization), its first problems by event index and field, at least one and
///   at most [`MAX_LISTED_PROBLEMS`], and the count of all of them (the gateway answers every
///   refusal with a client error: 400, 403, 413 or 422);
/// - the answer to a refused body ([`answer`]) is at most [`MAX_ERROR_BODY_BYTES`] long, whatever
///   the body echoes into it;
/// - a body that is not UTF-8 is always `invalid_json`;
/// - accepted events belong to the key's organization, pass the shared field rules, keep their
///   timestamp in the window, and come back unchanged from the Avro datum the gateway writes,
///   through both readers the consumers use.
///
/// Returns the accepted events or the refusal's code.
pub fn check_body(endpoint: Endpoint, body: &[u8], context: &ParseContext) -> Result<Vec<Event>, &'static str> {
    let parsed = match endpoint {
        Endpoint::Single => parse_single(body, context),
        Endpoint::Batch => parse_batch(body, context),
    };
    match parsed {
        Ok(events) => {
            assert!(std::str::from_utf8(body).is_ok(), "a body that is not UTF-8 was accepted");
            match endpoint {
                Endpoint::Single => assert_eq!(events.len(), 1, "one event per single body"),
                Endpoint::Batch => assert!((1..=context.max_batch_events).contains(&events.len()), "{} events", events.len()),
            }
            for event in &events {
                check_accepted(event, context);
            }
            Ok(events)
        }
        Err(rejection) => {
            let code = check_refusal(&rejection.refusal, rejection.events, endpoint, context);
            if std::str::from_utf8(body).is_err() {
                assert_eq!(code, "invalid_json", "a body that is not UTF-8");
            }
            Err(code)
        }
    }
}

fn check_accepted(event: &Event, context: &ParseContext) {
    assert_eq!(event.organization_id, context.organization_id, "an event of another organization was accepted");
    if let Err(errors) = validate::validate(event) {
        panic!("an accepted event breaks the shared rules: {errors}\n{event:?}");
    }
    let in_window = context.window.check(event.timestamp_ms, context.received_at_ms).is_ok();
    assert!(in_window, "timestamp {} outside the window", event.timestamp_ms);

    let mut datum = Vec::new();
    avro::write_datum(event, &mut datum);
    for direct in [true, false] {
        match decode_event_datum(&EVENT_SCHEMA, direct, &datum) {
            Ok(read) => assert_same_event(&read, event),
            Err(e) => panic!("the datum of an accepted event does not decode (direct: {direct}): {e}\n{event:?}"),
        }
    }
}

fn check_refusal(refusal: &Refusal, events: usize, endpoint: Endpoint, context: &ParseContext) -> &'static str {
    if let Refusal::BatchTooLarge { events: count, limit } = *refusal {
        assert_eq!(endpoint, Endpoint::Batch);
        assert!(count > limit && limit == context.max_batch_events, "{count} events, limit {limit}");
    }
    let per_event = matches!(refusal, Refusal::Invalid { .. } | Refusal::OrganizationMismatch { .. });
    let (code, message) = (refusal.code(), refusal.to_string());
    assert!(!code.is_empty() && !message.is_empty(), "{refusal:?}");
    let (listed, total) = (refusal.problems().len(), refusal.total_problems());
    assert!(listed <= MAX_LISTED_PROBLEMS && listed <= total, "{listed} problems listed of {total}");
    if per_event {
        assert!(listed >= 1, "a {code} without its problems");
        for problem in refusal.problems() {
            assert!(problem.index < events.max(1), "problem of event {} in a body of {events}", problem.index);
            assert!(!problem.code.is_empty() && !problem.message.is_empty(), "{problem:?}");
        }
    } else {
        assert_eq!(total, 0, "a {code} is about the body as a whole");
    }
    let bytes = json_len(&answer(refusal));
    assert!(bytes <= MAX_ERROR_BODY_BYTES, "a {bytes}-byte answer to a {code} with {listed} of {total} problems");
    code
}

/// The error answer the gateway sends for `refusal` (its `ErrorBody`), with the refusal's own
/// message where the gateway words a few in a sentence of its own of about the same length; the
/// gateway's tests compare the two.
pub fn answer(refusal: &Refusal) -> serde_json::Value {
    serde_json::json!({
        "code": refusal.code(),
        "message": refusal.to_string(),
        "errors": refusal.problems(),
        "total_errors": refusal.total_problems(),
    })
}
