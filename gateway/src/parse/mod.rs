//! Request bodies to events: JSON shape, field types, the shared field rules of
//! [`bxb_event::validate`] and the gateway's timestamp window. Every problem of every event is
//! collected so the client can fix a batch in one round trip; one bad event rejects the batch.

#[cfg(any(test, feature = "invariants"))]
pub mod invariants;
#[cfg(test)]
mod hostile_tests;
mod raw_event;
#[cfg(test)]
mod tests;

use std::borrow::Cow;

use bxb_event::{validate, Decimal, DecimalError, Event};
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::error::{EventError, GatewayError};
use crate::timestamp::{self, TimestampWindow};
pub use raw_event::FIELDS;
use raw_event::RawEvent;

/// What the parser needs to know about the request.
#[derive(Debug, Clone, Copy)]
pub struct ParseContext {
    /// The organization of the API key: the owner of every event.
    pub organization_id: Uuid,
    /// Default timestamp and the reference of the timestamp window.
    pub received_at_ms: i64,
    pub window: TimestampWindow,
    pub max_batch_events: usize,
}

/// A refused body, and how many events it held as far as they could be told apart (for the
/// rejected-events metric).
#[derive(Debug)]
pub struct Rejection {
    pub error: GatewayError,
    pub events: usize,
}

fn unreadable(message: String) -> Rejection {
    Rejection { error: GatewayError::InvalidJson(message), events: 0 }
}

/// `POST /v1/events`: the body is one event object.
pub fn parse_single(body: &[u8], context: &ParseContext) -> Result<Vec<Event>, Rejection> {
    let raw: &RawValue = serde_json::from_slice(body).map_err(|e| unreadable(e.to_string()))?;
    let event: RawEvent<'_> =
        serde_json::from_str(raw.get()).map_err(|_| unreadable("the body must be one event object".into()))?;
    let mut problems = Problems::default();
    let event = build_event(0, &event, context, &mut problems);
    problems.into_result(vec![event], 1)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

/// `POST /v1/events/batch`: the body is `{"events": [ ... ]}`.
pub fn parse_batch(body: &[u8], context: &ParseContext) -> Result<Vec<Event>, Rejection> {
    let batch: BatchBody<'_> = serde_json::from_slice(body).map_err(|e| unreadable(e.to_string()))?;
    let count = batch.events.len();
    if count > context.max_batch_events {
        let error = GatewayError::BatchTooLarge { events: count, limit: context.max_batch_events };
        return Err(Rejection { error, events: count });
    }
    if count == 0 {
        let error = GatewayError::Validation {
            errors: vec![EventError::new(0, "events", "empty", "the batch must hold at least one event")],
        };
        return Err(Rejection { error, events: 0 });
    }
    let mut problems = Problems::default();
    let mut events = Vec::with_capacity(batch.events.len());
    for (index, raw) in batch.events.iter().enumerate() {
        match serde_json::from_str::<RawEvent<'_>>(raw.get()) {
            Ok(event) => events.push(build_event(index, &event, context, &mut problems)),
            Err(_) => problems.invalid.push(EventError::new(index, "", "not_an_object", "an event must be a JSON object")),
        }
    }
    problems.into_result(events, count)
}

#[derive(Default)]
struct Problems {
    invalid: Vec<EventError>,
    foreign_organization: Vec<EventError>,
}

impl Problems {
    /// An organization mismatch outranks field problems: the client may not send these events at
    /// all. `count` is every event of the body, also those that were not even objects.
    fn into_result(self, events: Vec<Event>, count: usize) -> Result<Vec<Event>, Rejection> {
        let error = if !self.foreign_organization.is_empty() {
            GatewayError::OrganizationMismatch { errors: self.foreign_organization }
        } else if !self.invalid.is_empty() {
            GatewayError::Validation { errors: self.invalid }
        } else {
            return Ok(events);
        };
        Err(Rejection { error, events: count })
    }
}

/// Builds the event, recording every problem. Fields that fail get a harmless placeholder so
/// the remaining rules can still be checked and reported.
fn build_event(index: usize, raw: &RawEvent<'_>, context: &ParseContext, problems: &mut Problems) -> Event {
    let first_problem = problems.invalid.len();
    let mut problem = |field: &str, code: &'static str, message: String| {
        problems.invalid.push(EventError::new(index, field, code, message));
    };
    for name in &raw.unknown {
        problem(name, "unknown_field", format!("{name:?} is not an event field"));
    }
    for name in &raw.duplicate {
        problem(name, "duplicate_field", format!("{name} is given more than once"));
    }
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
            let reported = problems.invalid[first_problem..].iter().any(|p| p.field == e.field);
            if !reported {
                problems.invalid.push(EventError::new(index, e.field, e.code, e.message));
            }
        }
    }
    if foreign_organization.is_some() {
        problems.foreign_organization.push(EventError::new(
            index,
            "organization_id",
            "organization_mismatch",
            "organization_id differs from the organization of the API key",
        ));
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
        Err(_) => serde_json::from_str::<String>(value.get())
            .map(Cow::Owned)
            .map_err(|_| ("invalid_string", "is not a valid Unicode string")),
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
