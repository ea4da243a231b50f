//! Near-valid request bodies, many of them: valid events with one thing broken (a wrong type, a
//! huge number, `NaN`, deep or huge `properties`, a field too many or too few), and whole bodies
//! cut short or spliced with bytes that are not UTF-8. Every body goes through
//! [`check_body`]; where the breakage decides the answer, the answer is checked too.
//!
//! The case count is `BXB_FUZZ_CASES` (default [`DEFAULT_CASES`] for each test).

use proptest::prelude::*;
use proptest::sample::{select, Index};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::invariants::{check_body, context, Endpoint, ORGANIZATION, RECEIVED_AT_MS};
use crate::validate::{MAX_PROPERTIES_BYTES, MAX_PROPERTIES_DEPTH};

const DEFAULT_CASES: u32 = 20_000;
const MAX_BATCH_EVENTS: usize = 10;
const OLDEST_MS: i64 = RECEIVED_AT_MS - 86_400_000;
const LATEST_MS: i64 = RECEIVED_AT_MS + 60_000;

fn cases() -> u32 {
    std::env::var("BXB_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES)
}

/// A valid event and the fields it must come out with.
#[derive(Debug, Clone)]
struct ValidEvent {
    transaction_id: String,
    external_customer_id: String,
    code: String,
    timestamp_ms: Option<i64>,
    rfc3339: bool,
    properties: Option<String>,
    value: Option<f64>,
    decimal_value: Option<(String, bool)>,
    with_organization: bool,
}

impl ValidEvent {
    /// The event object as (name, raw JSON text) pairs, in a shuffled order.
    fn fields(&self) -> Vec<(String, String)> {
        let mut fields = vec![
            ("transaction_id".to_owned(), json!(self.transaction_id).to_string()),
            ("external_customer_id".to_owned(), json!(self.external_customer_id).to_string()),
            ("code".to_owned(), json!(self.code).to_string()),
        ];
        if let Some(ms) = self.timestamp_ms {
            let text = if self.rfc3339 {
                let instant = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
                json!(instant.format(&Rfc3339).unwrap()).to_string()
            } else {
                ms.to_string()
            };
            fields.push(("timestamp".to_owned(), text));
        }
        if let Some(properties) = &self.properties {
            fields.push(("properties".to_owned(), properties.clone()));
        }
        if let Some(value) = self.value {
            fields.push(("value".to_owned(), json!(value).to_string()));
        }
        if let Some((decimal, as_string)) = &self.decimal_value {
            // As a bare number only where that is JSON (no leading zeros).
            let as_number = !*as_string && serde_json::from_str::<Value>(decimal).is_ok();
            fields.push(("decimal_value".to_owned(), if as_number { decimal.clone() } else { json!(decimal).to_string() }));
        }
        if self.with_organization {
            fields.push(("organization_id".to_owned(), json!(ORGANIZATION.to_string()).to_string()));
        }
        fields
    }

    fn assert_kept_by(&self, event: &crate::Event) {
        assert_eq!(event.transaction_id, self.transaction_id);
        assert_eq!(event.external_customer_id, self.external_customer_id);
        assert_eq!(event.code, self.code);
        assert_eq!(event.timestamp_ms, self.timestamp_ms.unwrap_or(RECEIVED_AT_MS));
        assert_eq!(event.properties, self.properties.as_deref().unwrap_or("{}"), "properties are carried byte for byte");
        assert_eq!(event.value.map(f64::to_bits), self.value.map(f64::to_bits));
        let decimal = self.decimal_value.as_ref().map(|(d, _)| d.parse::<crate::Decimal>().unwrap());
        assert_eq!(event.decimal_value, decimal);
    }
}

fn small_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("\\PC{0,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

prop_compose! {
    fn valid_event()(
        transaction_id in "[^\\p{Cc}]{1,40}",
        external_customer_id in prop_oneof!["[a-z0-9-]{1,20}", "\\PC{1,20}".prop_filter("no control", |s| !s.chars().any(char::is_control))],
        code in "[A-Za-z0-9_.:-]{1,64}",
        timestamp_ms in proptest::option::of(OLDEST_MS..=LATEST_MS),
        rfc3339: bool,
        properties in proptest::option::of(proptest::collection::btree_map("\\PC{0,8}", small_json(), 0..5)),
        pretty: bool,
        value in proptest::option::of(prop_oneof![any::<f64>().prop_filter("finite", |f| f.is_finite()), Just(-0.0), Just(f64::MAX)]),
        decimal_value in proptest::option::of(("-?[0-9]{1,26}(\\.[0-9]{1,12})?", any::<bool>())),
        with_organization: bool,
    ) -> ValidEvent {
        let properties = properties.map(|p| {
            let object = Value::Object(p.into_iter().collect());
            if pretty { serde_json::to_string_pretty(&object).unwrap() } else { object.to_string() }
        });
        ValidEvent {
            transaction_id, external_customer_id, code, timestamp_ms, rfc3339, properties, value, decimal_value,
            with_organization,
        }
    }
}

/// What a body must get, as far as its breakage decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Accepted,
    Refused(&'static str),
    /// The breakage may or may not be acceptable (a flipped byte): only the invariants hold.
    Either,
}

/// One thing broken in an otherwise valid event.
#[derive(Debug, Clone)]
enum EventMutation {
    /// A field's value replaced by raw text, with what that must lead to.
    Replace(&'static str, String, Expect),
    Remove(&'static str),
    Add(String, String, Expect),
}

const REQUIRED: [&str; 3] = ["transaction_id", "external_customer_id", "code"];
const STRINGS: [&str; 4] = ["transaction_id", "external_customer_id", "code", "organization_id"];

fn refused() -> Expect {
    Expect::Refused("validation_failed")
}

/// Tokens that are not JSON at all: whatever the field, the body is not JSON.
fn not_json() -> impl Strategy<Value = String> {
    select(vec![
        "NaN",
        "-NaN",
        "Infinity",
        "-Infinity",
        "nan",
        "inf",
        "0x10",
        "+1",
        ".5",
        "1.",
        "01",
        "-",
        "1e",
        "tru",
        "nul",
        "'x'",
        "\"unterminated",
        "\"bad \\x escape\"",
        "\"\\u12\"",
        "\"tab\there\"",
        "{\"a\" 1}",
        "[1,]",
        "{,}",
        "undefined",
    ])
    .prop_map(str::to_owned)
}

/// Values of a type no field has.
fn wrong_type() -> impl Strategy<Value = String> {
    select(vec!["true", "false", "[]", "[1, \"a\"]", "[{}]"]).prop_map(str::to_owned)
}

fn nested(depth: usize, arrays: bool) -> String {
    // The object itself is depth 1, each level inside one more.
    let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
    format!("{{\"a\":{}1{}}}", open.repeat(depth - 1), close.repeat(depth - 1))
}

fn event_mutation() -> impl Strategy<Value = EventMutation> {
    let field = select(super::FIELDS.to_vec());
    prop_oneof![
        3 => (field.clone(), not_json()).prop_map(|(f, raw)| EventMutation::Replace(f, raw, Expect::Refused("invalid_json"))),
        2 => (field.clone(), wrong_type()).prop_map(|(f, raw)| EventMutation::Replace(f, raw, refused())),
        1 => field.clone().prop_map(|f| {
            let expect = if REQUIRED.contains(&f) { refused() } else { Expect::Accepted };
            EventMutation::Replace(f, "null".into(), expect)
        }),
        2 => field.clone().prop_map(EventMutation::Remove),
        // Numbers where strings belong, strings where numbers belong.
        2 => (select(STRINGS.to_vec()), any::<i64>()).prop_map(|(f, n)| EventMutation::Replace(f, n.to_string(), refused())),
        1 => (select(vec!["value", "timestamp"]), "\\PC{0,10}").prop_map(|(f, s)| EventMutation::Replace(f, json!(s).to_string(), refused())),
        // Huge and tiny numbers.
        2 => select(vec!["1e400", "-1e400", "1e309", "-1.8e308"]).prop_map(|n| EventMutation::Replace("value", n.into(), refused())),
        1 => select(vec!["1e-400", "-1e-400", "5e-324", "1.7976931348623157e308"]).prop_map(|n| EventMutation::Replace("value", n.into(), Expect::Accepted)),
        1 => (1usize..400).prop_map(|digits| EventMutation::Replace("value", format!("1{}", "0".repeat(digits)), if digits > 308 { refused() } else { Expect::Accepted })),
        1 => select(vec!["9223372036854775808", "-9223372036854775809", "1e12", "1714564800000.5", "99999999999999999999999"])
            .prop_map(|n| EventMutation::Replace("timestamp", n.into(), refused())),
        1 => select(vec![OLDEST_MS - 1, LATEST_MS + 1, i64::MAX, i64::MIN, 0, -1, RECEIVED_AT_MS / 1000])
            .prop_map(|ms| EventMutation::Replace("timestamp", ms.to_string(), refused())),
        1 => select(vec!["\"2024-05-01\"", "\"2024-13-01T00:00:00Z\"", "\"2024-05-01T12:00:00\"", "\"9999-12-31T23:59:59Z\"", "\"2024-05-01T12:00:00+25:00\"", "\"NaN\""])
            .prop_map(|t| EventMutation::Replace("timestamp", t.into(), refused())),
        // Decimals at and past their limits, and what only looks like one.
        1 => select(vec!["\"NaN\"", "\"Infinity\"", "\"1e5\"", "1e5", "\"1.\"", "\".5\"", "\"+1\"", "\"1.0000000000001\"", "\"123456789012345678901234567\"", "-0.0000000000001"])
            .prop_map(|d| EventMutation::Replace("decimal_value", d.into(), refused())),
        1 => (1usize..=30, 0usize..=14).prop_map(|(int, frac)| {
            let text = if frac == 0 { "9".repeat(int) } else { format!("{}.{}", "9".repeat(int), "9".repeat(frac)) };
            let expect = if int <= 26 && frac <= 12 { Expect::Accepted } else { refused() };
            EventMutation::Replace("decimal_value", json!(text).to_string(), expect)
        }),
        // Ids at and past their limits, with control characters.
        1 => (select(REQUIRED[..2].to_vec()), 250usize..=260, any::<bool>()).prop_map(|(f, n, wide)| {
            let text = if wide { "é".repeat(n) } else { "x".repeat(n) };
            let expect = if n <= 255 { Expect::Accepted } else { refused() };
            EventMutation::Replace(f, json!(text).to_string(), expect)
        }),
        1 => (select(REQUIRED[..2].to_vec()), select(vec!["\"a\\u0000b\"", "\"\\n\"", "\"x\\u007f\"", "\"\""]))
            .prop_map(|(f, s)| EventMutation::Replace(f, s.into(), refused())),
        1 => select(vec!["\"api calls\"", "\"é\"", "\"a/b\"", "\"\""]).prop_map(|c| EventMutation::Replace("code", c.into(), refused())),
        1 => (60usize..=70).prop_map(|n| EventMutation::Replace("code", json!("c".repeat(n)).to_string(), if n <= 64 { Expect::Accepted } else { refused() })),
        // Unicode escapes that are no characters: refused as JSON or as a string.
        1 => (select(STRINGS.to_vec()), select(vec!["\"\\ud800\"", "\"\\udfff x\"", "\"\\ud83d\\u0041\""]))
            .prop_map(|(f, s)| EventMutation::Replace(f, s.into(), Expect::Either)),
        // Organizations.
        1 => Just(EventMutation::Replace("organization_id", json!(uuid::Uuid::nil().to_string()).to_string(), Expect::Refused("organization_mismatch"))),
        1 => select(vec!["\"acme\"", "\"\"", "\"12345678-9abc-def0-1234-56789abcdef\""]).prop_map(|o| EventMutation::Replace("organization_id", o.into(), refused())),
        // Deep and huge properties.
        2 => (1usize..=40, any::<bool>()).prop_map(|(depth, arrays)| {
            let expect = if depth <= MAX_PROPERTIES_DEPTH { Expect::Accepted } else { refused() };
            EventMutation::Replace("properties", nested(depth, arrays), expect)
        }),
        1 => (0usize..=1, 0usize..=40).prop_map(|(over, by)| {
            // {"b":"xx…"} is the blob and 8 bytes.
            let bytes = if over == 1 { MAX_PROPERTIES_BYTES + 1 + by } else { MAX_PROPERTIES_BYTES - by };
            let expect = if over == 1 { refused() } else { Expect::Accepted };
            EventMutation::Replace("properties", format!("{{\"b\":\"{}\"}}", "x".repeat(bytes - 8)), expect)
        }),
        1 => select(vec!["[]", "\"{}\"", "1", "\"\""]).prop_map(|p| EventMutation::Replace("properties", p.into(), refused())),
        // A field too many: unknown, or a known one twice.
        1 => ("[a-z_]{1,12}", small_json()).prop_filter("unknown", |(n, _)| !super::FIELDS.contains(&n.as_str()))
            .prop_map(|(name, value)| EventMutation::Add(name, value.to_string(), refused())),
        1 => select(REQUIRED.to_vec()).prop_map(|f| EventMutation::Add(f.into(), "\"again\"".into(), refused())),
    ]
}

impl EventMutation {
    fn expect(&self) -> Expect {
        match self {
            Self::Replace(_, _, expect) | Self::Add(_, _, expect) => *expect,
            Self::Remove(field) => {
                if REQUIRED.contains(field) {
                    refused()
                } else {
                    Expect::Accepted
                }
            }
        }
    }

    fn apply(&self, fields: &mut Vec<(String, String)>) {
        match self {
            Self::Replace(name, raw, _) => match fields.iter_mut().find(|(n, _)| n == name) {
                Some(field) => field.1 = raw.clone(),
                None => fields.push(((*name).to_owned(), raw.clone())),
            },
            Self::Remove(name) => fields.retain(|(n, _)| n != name),
            Self::Add(name, raw, _) => fields.push((name.clone(), raw.clone())),
        }
    }
}

/// A whole body broken after rendering.
#[derive(Debug, Clone)]
enum BodyMutation {
    None,
    /// Cut short before its last byte.
    Truncate(Index),
    /// Bytes that are no UTF-8 spliced in.
    NotUtf8(Index, &'static [u8]),
    /// One byte changed.
    Flip(Index, u8),
}

fn body_mutation() -> impl Strategy<Value = BodyMutation> {
    let not_utf8: Vec<&'static [u8]> =
        vec![&[0xff], &[0xfe], &[0x80], &[0xc3], &[0xc0, 0x80], &[0xed, 0xa0, 0x80], &[0xf4, 0x90, 0x80, 0x80], &[0xe2, 0x82]];
    prop_oneof![
        6 => Just(BodyMutation::None),
        1 => any::<Index>().prop_map(BodyMutation::Truncate),
        1 => (any::<Index>(), select(not_utf8)).prop_map(|(at, bytes)| BodyMutation::NotUtf8(at, bytes)),
        1 => (any::<Index>(), 1u8..=255).prop_map(|(at, xor)| BodyMutation::Flip(at, xor)),
    ]
}

impl BodyMutation {
    /// Applies the mutation; says what it decides about the answer, if anything.
    fn apply(&self, body: &mut Vec<u8>) -> Option<Expect> {
        match self {
            Self::None => None,
            Self::Truncate(at) => {
                body.truncate(at.index(body.len()));
                Some(Expect::Refused("invalid_json"))
            }
            Self::NotUtf8(at, bytes) => {
                let at = at.index(body.len() + 1);
                body.splice(at..at, bytes.iter().copied());
                std::str::from_utf8(body).is_err().then_some(Expect::Refused("invalid_json"))
            }
            Self::Flip(at, xor) => {
                let at = at.index(body.len());
                body[at] ^= xor;
                Some(Expect::Either)
            }
        }
    }
}

fn render(fields: &[(String, String)]) -> String {
    let members: Vec<String> = fields.iter().map(|(name, raw)| format!("{}:{raw}", json!(name))).collect();
    format!("{{{}}}", members.join(","))
}

fn check(endpoint: Endpoint, body: &[u8], expect: Expect, kept: Option<&[ValidEvent]>) -> Result<(), TestCaseError> {
    let result = check_body(endpoint, body, &context(MAX_BATCH_EVENTS));
    let shown = || {
        let text: String = String::from_utf8_lossy(body).chars().take(600).collect();
        format!("{text}… ({} bytes)", body.len())
    };
    match (expect, &result) {
        (Expect::Accepted, Ok(events)) => {
            if let Some(valid) = kept {
                for (event, valid) in events.iter().zip(valid) {
                    valid.assert_kept_by(event);
                }
            }
        }
        (Expect::Refused(code), Err(got)) => prop_assert_eq!(code, *got, "{}", shown()),
        (Expect::Either, _) => {}
        (expect, _) => prop_assert!(false, "expected {:?}, got {:?} for {}", expect, result.map(|e| e.len()), shown()),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn near_valid_single_bodies(
        event in valid_event(),
        mutation in proptest::option::weighted(0.8, event_mutation()),
        body_mutation in body_mutation(),
    ) {
        let mut fields = event.fields();
        if let Some(m) = &mutation {
            m.apply(&mut fields);
        }
        let mut body = render(&fields).into_bytes();
        let expect = body_mutation.apply(&mut body).unwrap_or(mutation.as_ref().map_or(Expect::Accepted, EventMutation::expect));
        let untouched = mutation.is_none() && matches!(body_mutation, BodyMutation::None);
        check(Endpoint::Single, &body, expect, untouched.then_some(std::slice::from_ref(&event)))?;
    }

    #[test]
    fn near_valid_batches(
        events in prop_oneof![
            8 => proptest::collection::vec(valid_event(), 1..=MAX_BATCH_EVENTS),
            1 => proptest::collection::vec(valid_event(), MAX_BATCH_EVENTS + 1..=MAX_BATCH_EVENTS + 3),
            1 => Just(Vec::new()),
        ],
        mutation in proptest::option::weighted(0.8, (any::<Index>(), event_mutation())),
        body_mutation in body_mutation(),
    ) {
        let mut objects: Vec<_> = events.iter().map(ValidEvent::fields).collect();
        let mutation = mutation.filter(|_| !objects.is_empty());
        if let Some((at, m)) = &mutation {
            let at = at.index(objects.len());
            m.apply(&mut objects[at]);
        }
        let rendered: Vec<String> = objects.iter().map(|fields| render(fields)).collect();
        let mut body = format!("{{\"events\":[{}]}}", rendered.join(",")).into_bytes();
        let event_expect = mutation.as_ref().map_or(Expect::Accepted, |(_, m)| m.expect());
        let expect = body_mutation.apply(&mut body).unwrap_or(if event_expect == Expect::Refused("invalid_json") {
            event_expect
        } else if events.len() > MAX_BATCH_EVENTS {
            Expect::Refused("batch_too_large")
        } else if events.is_empty() {
            refused()
        } else {
            event_expect
        });
        let untouched = mutation.is_none() && matches!(body_mutation, BodyMutation::None);
        check(Endpoint::Batch, &body, expect, untouched.then_some(&events[..]))?;
    }
}
