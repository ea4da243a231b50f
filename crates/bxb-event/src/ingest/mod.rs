//! Request bodies to events: the JSON of `POST /v1/events` (one event object) and
//! `POST /v1/events/batch` (`{"events": [ ... ]}`) read field by field, the shared field rules of
//! [`crate::validate`] and a [`TimestampWindow`] around the receive time. Every problem of every
//! event is counted and the first ones listed, so a client can fix a batch in one round trip; one
//! bad event refuses the batch.
//!
//! ```text
//! bytes ──▶ RawEvent (raw JSON text per field) ──▶ Event + validate ──▶ Ok(events) | Rejection
//! ```
//!
//! The gateway parses every request with it and maps a [`Rejection`] to its HTTP answer;
//! `bxbctl produce` parses its input lines with it, so both entry points accept exactly the same
//! events. The property tests and the fuzz targets (`fuzz/`) check it through
//! `invariants::check_body` (with the `invariants` feature).
//!
//! Memory and answer stay proportional to the body with a small constant whatever it holds:
//! the problems are listed up to a cap and counted beyond it ([`ProblemList`]), an event keeps
//! only the unknown names that can be listed, a batch keeps at most `max_batch_events` elements
//! (the rest are only counted), and messages are cut ([`MAX_MESSAGE_CHARS`]), so the error
//! answer of any body stays within [`MAX_ERROR_BODY_BYTES`].

mod batch;
#[cfg(test)]
mod flood_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(any(test, feature = "invariants"))]
pub mod invariants;
mod problems;
mod raw_event;
mod refusal;
#[cfg(test)]
mod tests;
pub mod timestamp;

use std::borrow::Cow;

use serde_json::value::RawValue;
use uuid::Uuid;

use crate::{validate, Decimal, DecimalError, Event};
pub use problems::{
    Problem, ProblemList, MAX_ERROR_BODY_BYTES, MAX_FIELD_CHARS, MAX_LISTED_PROBLEMS, MAX_LISTED_PROBLEM_BYTES, MAX_MESSAGE_CHARS,
};
use raw_event::RawEvent;
pub use raw_event::FIELDS;
pub use refusal::{Refusal, Rejection};
pub use timestamp::TimestampWindow;

/// What the parser needs to know about the body.
#[derive(Debug, Clone, Copy)]
pub struct ParseContext {
    /// The owner of every event (in the gateway: the organization of the API key).
    pub organization_id: Uuid,
    /// Default timestamp and the reference of the timestamp window.
    pub received_at_ms: i64,
    pub window: TimestampWindow,
    pub max_batch_events: usize,
}

/// The parser's messages may quote the body (`invalid type: string "…"`): cut.
fn unreadable(message: String) -> Rejection {
    Rejection { refusal: Refusal::InvalidJson(problems::cut(message, MAX_MESSAGE_CHARS)), events: 0 }
}

/// `POST /v1/events`: the body is one event object.
pub fn parse_single(body: &[u8], context: &ParseContext) -> Result<Vec<Event>, Rejection> {
    let raw: &RawValue = serde_json::from_slice(body).map_err(|e| unreadable(e.to_string()))?;
    let event: RawEvent<'_> = serde_json::from_str(raw.get()).map_err(|_| unreadable("the body must be one event object".into()))?;
    let mut problems = Problems::default();
    let event = build_event(0, &event, context, &mut problems);
    problems.into_result(vec![event], 1)
}

/// `POST /v1/events/batch`: the body is `{"events": [ ... ]}`.
pub fn parse_batch(body: &[u8], context: &ParseContext) -> Result<Vec<Event>, Rejection> {
    let batch = batch::read(body, context.max_batch_events).map_err(|e| unreadable(e.to_string()))?;
    let count = batch.count;
    if count > context.max_batch_events {
        let refusal = Refusal::BatchTooLarge { events: count, limit: context.max_batch_events };
        return Err(Rejection { refusal, events: count });
    }
    if count == 0 {
        let problems = ProblemList::from_iter([Problem::new(0, "events", "empty", "the batch must hold at least one event")]);
        return Err(Rejection { refusal: Refusal::Invalid { problems }, events: 0 });
    }
    let mut problems = Problems::default();
    let mut events = Vec::with_capacity(batch.events.len());
    for (index, raw) in batch.events.iter().enumerate() {
        match serde_json::from_str::<RawEvent<'_>>(raw.get()) {
            Ok(event) => events.push(build_event(index, &event, context, &mut problems)),
            Err(_) => problems.invalid.add(|| Problem::new(index, "", "not_an_object", "an event must be a JSON object")),
        }
    }
    problems.into_result(events, count)
}

#[derive(Default)]
struct Problems {
    invalid: ProblemList,
    foreign_organization: ProblemList,
}

impl Problems {
    /// An organization mismatch outranks field problems: the client may not send these events at
    /// all. `count` is every event of the body, also those that were not even objects.
    fn into_result(self, events: Vec<Event>, count: usize) -> Result<Vec<Event>, Rejection> {
        let refusal = if !self.foreign_organization.is_empty() {
            Refusal::OrganizationMismatch { problems: self.foreign_organization }
        } else if !self.invalid.is_empty() {
            Refusal::Invalid { problems: self.invalid }
        } else {
            return Ok(events);
        };
        Err(Rejection { refusal, events: count })
    }
}

/// The problems of one event: added to the body's list, and which of its known fields already
/// failed (those hold a placeholder, so the shared rules must not report them again).
struct EventProblems<'p> {
    index: usize,
    list: &'p mut ProblemList,
    failed: [bool; FIELDS.len()],
}

impl EventProblems<'_> {
    fn report(&mut self, field: &str, code: &'static str, message: impl FnOnce() -> String) {
        if let Some(i) = FIELDS.iter().position(|f| *f == field) {
            self.failed[i] = true;
        }
        let index = self.index;
        self.list.add(|| Problem::new(index, field, code, message()));
    }

    fn failed(&self, field: &str) -> bool {
        FIELDS.iter().position(|f| *f == field).is_some_and(|i| self.failed[i])
    }
}

/// Builds the event, recording every problem. Fields that fail get a harmless placeholder so
/// the remaining rules can still be checked and reported.
fn build_event(index: usize, raw: &RawEvent<'_>, context: &ParseContext, problems: &mut Problems) -> Event {
    let mut event_problems = EventProblems { index, list: &mut problems.invalid, failed: [false; FIELDS.len()] };
    for name in &raw.unknown {
        event_problems.report(name, "unknown_field", || format!("{name:?} is not an event field"));
    }
    // Names past those kept are past a full list: counted only.
    event_problems.list.count_unlisted(raw.unknown_count - raw.unknown.len());
    for name in &raw.duplicate {
        event_problems.report(name, "duplicate_field", || format!("{name} is given more than once"));
    }
    let mut problem = |field: &str, code: &'static str, message: String| event_problems.report(field, code, || message);
    let mut foreign_organization = None;
    if let Some(value) = raw.get("organization_id") {
        match string(value).ok().and_then(|s| Uuid::parse_str(&s).ok()) {
            Some(id) if id == context.organization_id => {}
            Some(_) => foreign_organization = Some(()),
            None => problem("organization_id", "invalid_uuid", "organization_id must be a UUID string".into()),
        }
    }
    let mut required_string = |name: &'static str| match raw.get(name) {
        None => {
            problem(name, "required", format!("{name} is required"));
            String::new()
        }
        Some(value) => string(value).map(Cow::into_owned).unwrap_or_else(|(code, message)| {
            problem(name, code, format!("{name} {message}"));
            String::new()
        }),
    };
    let transaction_id = required_string("transaction_id");
    let external_customer_id = required_string("external_customer_id");
    let code = required_string("code");

    let timestamp_ms = match raw.get("timestamp").map(timestamp::parse) {
        None => context.received_at_ms,
        Some(Ok(ms)) => {
            if let Err(e) = context.window.check(ms, context.received_at_ms) {
                problem("timestamp", e.code, e.message);
            }
            ms
        }
        Some(Err(e)) => {
            problem("timestamp", e.code, e.message);
            context.received_at_ms
        }
    };
    let properties = match raw.get("properties") {
        None => "{}".to_owned(),
        Some(value) if value.get().starts_with('{') => value.get().to_owned(),
        Some(_) => {
            problem("properties", "not_an_object", "properties must be a JSON object".into());
            "{}".to_owned()
        }
    };
    let value = raw.get("value").and_then(|value| {
        let text = value.get();
        if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
            // JSON numbers are a subset of Rust's float syntax; an overflow becomes infinite
            // and is refused by the shared `not_finite` rule.
            text.parse::<f64>().ok()
        } else {
            problem("value", "invalid_type", "value must be a number".into());
            None
        }
    });
    let decimal_value = raw.get("decimal_value").and_then(|value| match decimal(value) {
        Ok(d) => Some(d),
        Err((code, message)) => {
            problem("decimal_value", code, message);
            None
        }
    });

    let event = Event {
        organization_id: context.organization_id,
        transaction_id,
        external_customer_id,
        code,
        timestamp_ms,
        properties,
        value,
        decimal_value,
    };
    if let Err(shared) = validate::validate(&event) {
        for e in shared.0 {
            // A field that already failed to parse holds a placeholder: do not report it twice.
            if !event_problems.failed(&e.field) {
                event_problems.list.add(|| Problem::new(index, e.field, e.code, e.message));
            }
        }
    }
    if foreign_organization.is_some() {
        problems.foreign_organization.add(|| {
            Problem::new(index, "organization_id", "organization_mismatch", "organization_id differs from the organization of the API key")
        });
    }
    event
}

/// A JSON string, unescaped (borrowed when it holds no escapes).
fn string(value: &RawValue) -> Result<Cow<'_, str>, (&'static str, &'static str)> {
    if !value.get().starts_with('"') {
        return Err(("invalid_type", "must be a string"));
    }
    match serde_json::from_str::<&str>(value.get()) {
        Ok(s) => Ok(Cow::Borrowed(s)),
        Err(_) => {
            serde_json::from_str::<String>(value.get()).map(Cow::Owned).map_err(|_| ("invalid_string", "is not a valid Unicode string"))
        }
    }
}

/// A decimal as a string, or as a JSON number taken by its exact text (never through a float).
fn decimal(value: &RawValue) -> Result<Decimal, (&'static str, String)> {
    let text = match value.get().as_bytes().first() {
        Some(b'"') => string(value).map_err(|(code, message)| (code, format!("decimal_value {message}")))?,
        Some(b'-' | b'0'..=b'9') => Cow::Borrowed(value.get()),
        _ => return Err(("invalid_type", "decimal_value must be a decimal string such as \"12.50\"".into())),
    };
    text.parse::<Decimal>().map_err(|e| {
        let code = match e {
            DecimalError::Syntax => "invalid_decimal",
            DecimalError::Scale => "too_many_fraction_digits",
            DecimalError::Precision => "too_many_digits",
        };
        (code, format!("decimal_value: {e}"))
    })
}
