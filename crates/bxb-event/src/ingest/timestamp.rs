//! Event timestamps: RFC 3339 text or epoch milliseconds in, milliseconds since the epoch out,
//! within a window around the receive time (the receive time itself comes from
//! [`crate::clock::now_ms`]).
//!
//! Timestamps are stored with millisecond precision: digits below the millisecond are truncated
//! (toward the past), so `…T10:00:00.123999Z` is stored as `…T10:00:00.123Z`.

use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Why a timestamp is not acceptable: a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampError {
    pub code: &'static str,
    pub message: String,
}

fn error(code: &'static str, message: impl Into<String>) -> TimestampError {
    TimestampError { code, message: message.into() }
}

/// Reads a JSON timestamp: a string in RFC 3339 (any offset, any fraction digits) or an integer
/// count of milliseconds since the Unix epoch.
pub fn parse(raw: &RawValue) -> Result<i64, TimestampError> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => {
            let s: std::borrow::Cow<'_, str> = serde_json::from_str(text)
                .map_err(|_| error("invalid_format", "timestamp must be an RFC 3339 string or epoch milliseconds"))?;
            parse_rfc3339(&s)
        }
        Some(b'-' | b'0'..=b'9') => text
            .parse::<i64>()
            .map_err(|_| error("invalid_format", "a numeric timestamp must be an integer number of milliseconds since the Unix epoch")),
        _ => Err(error("invalid_type", "timestamp must be an RFC 3339 string or an integer of epoch milliseconds")),
    }
}

/// Milliseconds since the epoch of an RFC 3339 date-time, sub-millisecond digits truncated.
pub fn parse_rfc3339(text: &str) -> Result<i64, TimestampError> {
    let parsed = OffsetDateTime::parse(text, &Rfc3339)
        .map_err(|_| error("invalid_format", "timestamp is not an RFC 3339 date-time such as 2024-05-01T12:00:00.123Z"))?;
    // Floor division so that instants before the epoch also truncate toward the past.
    let ms = parsed.unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(ms).map_err(|_| error("out_of_range", "timestamp is out of range"))
}

/// The accepted range of event timestamps, relative to the time the request was received.
#[derive(Debug, Clone, Copy)]
pub struct TimestampWindow {
    pub max_age_ms: u64,
    pub max_future_skew_ms: u64,
}

impl TimestampWindow {
    /// Late events within the window are fine; older ones or ones too far ahead are refused.
    pub fn check(&self, timestamp_ms: i64, received_at_ms: i64) -> Result<(), TimestampError> {
        let oldest = received_at_ms.saturating_sub_unsigned(self.max_age_ms);
        let latest = received_at_ms.saturating_add_unsigned(self.max_future_skew_ms);
        if timestamp_ms < oldest {
            return Err(error(
                "too_old",
                format!(
                    "timestamp is more than {} ms before the receive time (numeric timestamps are milliseconds, not seconds)",
                    self.max_age_ms
                ),
            ));
        }
        if timestamp_ms > latest {
            return Err(error(
                "too_far_in_future",
                format!("timestamp is more than {} ms after the receive time", self.max_future_skew_ms),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).unwrap()
    }

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        for (text, ms) in [
            (r#""2024-05-01T12:00:00Z""#, 1_714_564_800_000),
            (r#""2024-05-01T14:00:00+02:00""#, 1_714_564_800_000),
            (r#""2024-05-01T12:00:00.123Z""#, 1_714_564_800_123),
            (r#""2024-05-01T12:00:00.123999999Z""#, 1_714_564_800_123),
            (r#""2024-05-01T12:00:00.1Z""#, 1_714_564_800_100),
            (r#""1969-12-31T23:59:59.9995Z""#, -1),
        ] {
            assert_eq!(parse(&raw(text)), Ok(ms), "{text}");
        }
    }

    #[test]
    fn epoch_milliseconds() {
        assert_eq!(parse(&raw("1714564800123")), Ok(1_714_564_800_123));
        assert_eq!(parse(&raw("-5")), Ok(-5));
    }

    #[test]
    fn rejects_what_is_not_a_timestamp() {
        for (text, code) in [
            (r#""2024-05-01""#, "invalid_format"),
            (r#""2024-05-01 12:00:00""#, "invalid_format"),
            (r#""2024-05-01T12:00:00""#, "invalid_format"),
            (r#""yesterday""#, "invalid_format"),
            ("1714564800.5", "invalid_format"),
            ("1e12", "invalid_format"),
            ("99999999999999999999", "invalid_format"),
            ("true", "invalid_type"),
            ("{}", "invalid_type"),
            ("[1]", "invalid_type"),
        ] {
            assert_eq!(parse(&raw(text)).unwrap_err().code, code, "{text}");
        }
    }

    #[test]
    fn window_around_the_receive_time() {
        let window = TimestampWindow { max_age_ms: 1_000, max_future_skew_ms: 100 };
        let now = 1_000_000;
        assert!(window.check(now, now).is_ok());
        assert!(window.check(now - 1_000, now).is_ok());
        assert!(window.check(now + 100, now).is_ok());
        assert_eq!(window.check(now - 1_001, now).unwrap_err().code, "too_old");
        assert_eq!(window.check(now + 101, now).unwrap_err().code, "too_far_in_future");
        let huge = TimestampWindow { max_age_ms: u64::MAX, max_future_skew_ms: u64::MAX };
        assert!(huge.check(i64::MIN, now).is_ok() && huge.check(i64::MAX, now).is_ok());
    }

    proptest! {
        #[test]
        fn formatted_instants_parse_back_to_their_millisecond(ms in 0i64..253_402_300_799_000, sub_ms in 0i64..1_000_000) {
            let nanos = i128::from(ms) * 1_000_000 + i128::from(sub_ms);
            let text = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap().format(&Rfc3339).unwrap();
            prop_assert_eq!(parse_rfc3339(&text), Ok(ms));
        }

        #[test]
        fn any_string_is_parsed_or_refused_without_panicking(text in ".{0,64}") {
            let _ = parse_rfc3339(&text);
        }
    }
}
