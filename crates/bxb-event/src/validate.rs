//! The field rules of an event. Everything here is pure and cheap; the gateway runs it on every
//! request and the consumers on every decoded record.

use std::fmt;

use serde::Serialize;

use crate::Event;

/// `transaction_id` and `external_customer_id` are at most this many characters.
pub const MAX_ID_CHARS: usize = 255;
/// `code` is at most this many characters of `[A-Za-z0-9_.:-]`.
pub const MAX_CODE_CHARS: usize = 64;
/// `properties`, serialised, is at most this many bytes.
pub const MAX_PROPERTIES_BYTES: usize = 64 * 1024;
/// `properties` nests objects and arrays at most this deep (the object itself is depth 1).
pub const MAX_PROPERTIES_DEPTH: usize = 16;
/// The latest timestamp any store can hold: ClickHouse `DateTime` ends in 2106.
pub const MAX_TIMESTAMP_MS: i64 = u32::MAX as i64 * 1000 + 999;

/// One broken rule: which field, a stable machine-readable code, and a human message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub code: &'static str,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: &'static str, message: impl Into<String>) -> Self {
        Self { field: field.into(), code, message: message.into() }
    }
}

/// Every rule an event breaks, not only the first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct FieldErrors(pub Vec<FieldError>);

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.field, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldErrors {}

/// Checks every field rule of a complete event.
pub fn validate(event: &Event) -> Result<(), FieldErrors> {
    let mut errors = Vec::new();
    check_id("transaction_id", &event.transaction_id, &mut errors);
    check_id("external_customer_id", &event.external_customer_id, &mut errors);
    if let Err(e) = check_code(&event.code) {
        errors.push(e);
    }
    if let Err(e) = check_timestamp_range(event.timestamp_ms) {
        errors.push(e);
    }
    if let Err(e) = check_properties_text(&event.properties) {
        errors.push(e);
    }
    if let Some(v) = event.value {
        if !v.is_finite() {
            errors.push(FieldError::new("value", "not_finite", "value must be a finite number"));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(FieldErrors(errors))
    }
}

fn check_id(field: &'static str, id: &str, errors: &mut Vec<FieldError>) {
    let chars = id.chars().count();
    if chars == 0 {
        errors.push(FieldError::new(field, "empty", format!("{field} must not be empty")));
    } else if chars > MAX_ID_CHARS {
        errors.push(FieldError::new(field, "too_long", format!("{field} has {chars} characters, at most {MAX_ID_CHARS} are allowed")));
    } else if id.chars().any(char::is_control) {
        errors.push(FieldError::new(field, "control_character", format!("{field} must not contain control characters")));
    }
}

/// `code`: 1 to 64 characters of `[A-Za-z0-9_.:-]`.
pub fn check_code(code: &str) -> Result<(), FieldError> {
    if code.is_empty() || code.len() > MAX_CODE_CHARS {
        return Err(FieldError::new("code", "invalid_length", format!("code must have 1 to {MAX_CODE_CHARS} characters")));
    }
    if !code.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-')) {
        return Err(FieldError::new("code", "invalid_characters", "code may only contain A-Z, a-z, 0-9, '_', '.', ':' and '-'"));
    }
    Ok(())
}

/// The timestamp is representable in every store (1970-01-01 to 2106-02-07 UTC).
pub fn check_timestamp_range(timestamp_ms: i64) -> Result<(), FieldError> {
    if (0..=MAX_TIMESTAMP_MS).contains(&timestamp_ms) {
        Ok(())
    } else {
        Err(FieldError::new("timestamp", "out_of_range", "timestamp must be between 1970-01-01 and 2106-02-07 UTC"))
    }
}

/// `properties` is the text of a JSON object within the size and depth limits.
pub fn check_properties_text(text: &str) -> Result<(), FieldError> {
    if text.len() > MAX_PROPERTIES_BYTES {
        return Err(properties_too_large(text.len()));
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => check_properties_value(&value),
        Err(_) => Err(FieldError::new("properties", "invalid_json", "properties must be a JSON object")),
    }
}

/// `properties` as parsed JSON: an object, nested at most [`MAX_PROPERTIES_DEPTH`] deep.
pub fn check_properties_value(value: &serde_json::Value) -> Result<(), FieldError> {
    if !value.is_object() {
        return Err(FieldError::new("properties", "not_an_object", "properties must be a JSON object"));
    }
    if depth(value) > MAX_PROPERTIES_DEPTH {
        return Err(FieldError::new("properties", "too_deep", format!("properties nests deeper than {MAX_PROPERTIES_DEPTH} levels")));
    }
    Ok(())
}

pub fn properties_too_large(bytes: usize) -> FieldError {
    FieldError::new("properties", "too_large", format!("properties is {bytes} bytes, at most {MAX_PROPERTIES_BYTES} are allowed"))
}

fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            properties: r#"{"region":"eu"}"#.into(),
            value: Some(1.5),
            decimal_value: Some("2.25".parse().unwrap()),
            ..crate::test_support::event()
        }
    }

    #[test]
    fn a_complete_event_is_valid() {
        assert_eq!(validate(&event()), Ok(()));
    }

    #[test]
    fn every_broken_rule_is_listed() {
        let mut e = event();
        e.transaction_id = String::new();
        e.external_customer_id = "x".repeat(256);
        e.code = "api calls".into();
        e.timestamp_ms = -1;
        e.properties = "[1]".into();
        e.value = Some(f64::NAN);
        let errors = validate(&e).unwrap_err().0;
        let fields: Vec<_> = errors.iter().map(|e| (e.field.as_str(), e.code)).collect();
        assert_eq!(
            fields,
            [
                ("transaction_id", "empty"),
                ("external_customer_id", "too_long"),
                ("code", "invalid_characters"),
                ("timestamp", "out_of_range"),
                ("properties", "not_an_object"),
                ("value", "not_finite"),
            ]
        );
    }

    #[test]
    fn properties_depth_and_size_are_bounded() {
        let deep = format!("{}1{}", r#"{"a":"#.repeat(17), "}".repeat(17));
        assert_eq!(check_properties_text(&deep).unwrap_err().code, "too_deep");
        let ok = format!("{}1{}", r#"{"a":"#.repeat(16), "}".repeat(16));
        assert_eq!(check_properties_text(&ok), Ok(()));
        let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(MAX_PROPERTIES_BYTES));
        assert_eq!(check_properties_text(&big).unwrap_err().code, "too_large");
    }

    #[test]
    fn ids_count_characters_not_bytes() {
        let mut e = event();
        e.transaction_id = "é".repeat(255);
        assert_eq!(validate(&e), Ok(()));
    }
}
