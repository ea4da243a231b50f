//! Near-valid record values, many of them: the Confluent framing of valid events with one thing
//! broken (a field's value, a string's length, a union branch, bytes that are no UTF-8, a `NaN`,
//! the framing itself). Every value goes through [`invariants::check_record`]; where the
//! breakage decides the outcome, the outcome is checked too.
//!
//! The case count is `BXB_FUZZ_CASES` (default [`DEFAULT_CASES`]).

use proptest::prelude::*;
use proptest::sample::{select, Index};
use uuid::Uuid;

use crate::avro::{write_long, write_string};
use crate::invariants::{self, assert_same_event};
use crate::registry::{EventEncoder, PoisonReason};
use crate::validate::{MAX_PROPERTIES_BYTES, MAX_TIMESTAMP_MS};
use crate::Event;

const DEFAULT_CASES: u32 = 40_000;

fn cases() -> u32 {
    std::env::var("BXB_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_CASES)
}

prop_compose! {
    fn valid_event()(
        organization: u128,
        transaction_id in "[^\\p{Cc}]{1,40}",
        external_customer_id in "\\PC{1,20}".prop_filter("no control", |s| !s.chars().any(char::is_control)),
        code in "[A-Za-z0-9_.:-]{1,64}",
        timestamp_ms in prop_oneof![0..=MAX_TIMESTAMP_MS, Just(0), Just(MAX_TIMESTAMP_MS)],
        properties in proptest::collection::btree_map("\\PC{0,8}", prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            "\\PC{0,12}".prop_map(serde_json::Value::from),
            Just(serde_json::json!([1, {"a": null}])),
        ], 0..5),
        value in proptest::option::of(prop_oneof![
            any::<f64>().prop_filter("finite", |f| f.is_finite()), Just(-0.0), Just(f64::MIN_POSITIVE / 2.0),
        ]),
        decimal_value in proptest::option::of("-?[0-9]{1,26}(\\.[0-9]{1,12})?"),
    ) -> Event {
        Event {
            organization_id: Uuid::from_u128(organization),
            transaction_id, external_customer_id, code, timestamp_ms,
            properties: serde_json::Value::Object(properties.into_iter().collect()).to_string(),
            value,
            decimal_value: decimal_value.map(|d| d.parse().unwrap()),
        }
    }
}

/// The datum of `event`, one part per field, in schema order.
fn parts(event: &Event) -> Vec<Vec<u8>> {
    let string = |s: &str| {
        let mut out = Vec::new();
        write_string(s, &mut out);
        out
    };
    let mut timestamp = Vec::new();
    write_long(event.timestamp_ms, &mut timestamp);
    let value = match event.value {
        None => vec![0],
        Some(v) => [&[2][..], &v.to_le_bytes()].concat(),
    };
    let decimal = match &event.decimal_value {
        None => vec![0],
        Some(d) => [vec![2], string(d.as_str())].concat(),
    };
    vec![
        string(&event.organization_id.hyphenated().to_string()),
        string(&event.transaction_id),
        string(&event.external_customer_id),
        string(&event.code),
        timestamp,
        string(&event.properties),
        value,
        decimal,
    ]
}

const STRING_PARTS: [usize; 5] = [0, 1, 2, 3, 5];
const ORGANIZATION: usize = 0;
const TIMESTAMP: usize = 4;
const PROPERTIES: usize = 5;
const VALUE: usize = 6;
const DECIMAL: usize = 7;

/// What a record value must decode to, as far as its breakage decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Event,
    Poison(PoisonReason),
    /// Only the invariants hold (a flipped byte may still be an event).
    Either,
}

use Expect::Poison;
use PoisonReason::{InvalidAvro, InvalidFields, InvalidWireFormat};

/// One thing broken: a field's part of the datum replaced, or the framed bytes changed.
#[derive(Debug, Clone)]
enum Mutation {
    Part(usize, Vec<u8>, Expect),
    /// A string's length prefix changed, its bytes kept.
    Length(usize, i64, Expect),
    Truncate(Index),
    Append(Vec<u8>),
    Flip(Index, u8),
    Magic(u8),
}

fn long(n: i64) -> Vec<u8> {
    let mut out = Vec::new();
    write_long(n, &mut out);
    out
}

fn string(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_string(s, &mut out);
    out
}

fn union(branch: i64, rest: &[u8]) -> Vec<u8> {
    [long(branch), rest.to_vec()].concat()
}

fn field_rule_broken() -> impl Strategy<Value = Mutation> {
    let id = select(vec![1usize, 2]);
    prop_oneof![
        select(vec!["acme", "", "12345678-9abc-def0-1234-56789abcdef", "{12345678-9abc-def0-1234-56789abcdef0}x"])
            .prop_map(|o| Mutation::Part(ORGANIZATION, string(o), Poison(InvalidFields))),
        (id.clone(), select(vec![String::new(), "x".repeat(256), "é".repeat(256), "a\u{0}b".into(), "\u{7f}".into(), "\n".into()]))
            .prop_map(|(part, s)| Mutation::Part(part, string(&s), Poison(InvalidFields))),
        (id, 254usize..=255).prop_map(|(part, n)| Mutation::Part(part, string(&"é".repeat(n)), Expect::Event)),
        select(vec![String::new(), "api calls".into(), "é".into(), "c".repeat(65)]).prop_map(|c| Mutation::Part(
            3,
            string(&c),
            Poison(InvalidFields)
        )),
        select(vec![-1, MAX_TIMESTAMP_MS + 1, i64::MIN, i64::MAX]).prop_map(|ms| Mutation::Part(
            TIMESTAMP,
            long(ms),
            Poison(InvalidFields)
        )),
        select(vec!["[1]", "not json", "", "{", "\"{}\"", "{\"a\":1}{}"]).prop_map(|p| Mutation::Part(
            PROPERTIES,
            string(p),
            Poison(InvalidFields)
        )),
        (1usize..=24).prop_map(|depth| {
            let text = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
            let expect = if depth <= crate::validate::MAX_PROPERTIES_DEPTH { Expect::Event } else { Poison(InvalidFields) };
            Mutation::Part(PROPERTIES, string(&text), expect)
        }),
        (0usize..=1).prop_map(|over| {
            let bytes = MAX_PROPERTIES_BYTES + over;
            let expect = if over == 0 { Expect::Event } else { Poison(InvalidFields) };
            Mutation::Part(PROPERTIES, string(&format!("{{\"b\":\"{}\"}}", "x".repeat(bytes - 8))), expect)
        }),
        select(vec![f64::NAN, -f64::NAN, f64::INFINITY, f64::NEG_INFINITY]).prop_map(|v| Mutation::Part(
            VALUE,
            union(1, &v.to_le_bytes()),
            Poison(InvalidFields)
        )),
        select(vec!["NaN", "Infinity", "1e5", "", "-", "1.", ".5", "+1", "1.0000000000001", "123456789012345678901234567"])
            .prop_map(|d| Mutation::Part(DECIMAL, union(1, &string(d)), Poison(InvalidFields))),
    ]
}

fn avro_broken() -> impl Strategy<Value = Mutation> {
    let not_utf8: Vec<&'static [u8]> = vec![&[0xff], &[0x80], &[0xc3], &[0xc0, 0x80], &[0xed, 0xa0, 0x80], &[0xf4, 0x90, 0x80, 0x80]];
    prop_oneof![
        // Strings whose bytes are no UTF-8 (length kept right).
        (select(STRING_PARTS.to_vec()), "[a-z]{0,8}", select(not_utf8), "[a-z]{0,8}").prop_map(|(part, a, bad, b)| {
            let bytes = [a.as_bytes(), bad, b.as_bytes()].concat();
            Mutation::Part(part, [long(bytes.len() as i64), bytes].concat(), Poison(InvalidAvro))
        }),
        // Lengths that cannot be: negative, or past the end.
        (select(STRING_PARTS.to_vec()), select(vec![-1, -2, i64::MIN, i64::MAX, 1 << 40, 1 << 31, 100_000_000]))
            .prop_map(|(part, len)| Mutation::Length(part, len, Poison(InvalidAvro))),
        // Lengths a little off: everything after shifts.
        (select(STRING_PARTS.to_vec()), -3i64..=3).prop_map(|(part, delta)| Mutation::Length(part, delta, Expect::Either)),
        // Union branches that do not exist; a double cut short.
        (select(vec![VALUE, DECIMAL]), select(vec![2, 3, -1, i64::MAX, i64::MIN])).prop_map(|(part, branch)| Mutation::Part(
            part,
            long(branch),
            Poison(InvalidAvro)
        )),
        Just(Mutation::Part(VALUE, union(1, &[0; 7]), Poison(InvalidAvro))),
        // A long of more than 10 bytes.
        (select(vec![TIMESTAMP, VALUE]), 10usize..=16).prop_map(|(part, n)| Mutation::Part(
            part,
            [vec![0xff; n], vec![0x01]].concat(),
            Poison(InvalidAvro)
        )),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => field_rule_broken(),
        4 => avro_broken(),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => proptest::collection::vec(any::<u8>(), 1..8).prop_map(Mutation::Append),
        2 => (any::<Index>(), 1u8..=255).prop_map(|(at, xor)| Mutation::Flip(at, xor)),
        1 => (1u8..=255).prop_map(Mutation::Magic),
    ]
}

/// The framed record value of `parts` after `mutation`, and what it must decode to.
fn record(schema_id: u32, mut parts: Vec<Vec<u8>>, mutation: Option<&Mutation>) -> (Vec<u8>, Expect) {
    let mut expect = Expect::Event;
    match mutation {
        Some(Mutation::Part(part, bytes, e)) => {
            parts[*part] = bytes.clone();
            expect = *e;
        }
        Some(Mutation::Length(part, len, e)) => {
            let mut rest = &parts[*part][..];
            let old = crate::avro::read_long(&mut rest).expect("a length");
            let len = if matches!(e, Expect::Either) { old + len } else { *len };
            parts[*part] = [long(len), rest.to_vec()].concat();
            expect = *e;
        }
        _ => {}
    }
    let datum = parts.concat();
    let mut bytes = [&[0][..], &schema_id.to_be_bytes(), &datum].concat();
    match mutation {
        Some(Mutation::Truncate(at)) => {
            let at = at.index(bytes.len());
            bytes.truncate(at);
            expect = Poison(if at < 5 { InvalidWireFormat } else { InvalidAvro });
        }
        Some(Mutation::Append(extra)) => {
            bytes.extend_from_slice(extra);
            expect = Poison(InvalidAvro);
        }
        Some(Mutation::Flip(at, xor)) => {
            let at = at.index(bytes.len());
            bytes[at] ^= xor;
            expect = if at == 0 { Poison(InvalidWireFormat) } else { Expect::Either };
        }
        Some(Mutation::Magic(magic)) => {
            bytes[0] = *magic;
            expect = Poison(InvalidWireFormat);
        }
        _ => {}
    }
    (bytes, expect)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn near_valid_record_values(
        event in valid_event(),
        schema_id: u32,
        mutation in proptest::option::weighted(0.85, mutation()),
    ) {
        let (bytes, expect) = record(schema_id, parts(&event), mutation.as_ref());
        if mutation.is_none() {
            prop_assert_eq!(&bytes, &EventEncoder::new(schema_id).encode(&event), "the parts are the encoder's bytes");
        }
        let outcome = invariants::check_record(&bytes);
        match (expect, &outcome) {
            (Expect::Event, Ok(decoded)) => {
                if mutation.is_none() {
                    assert_same_event(decoded, &event);
                }
            }
            (Poison(reason), Err(got)) => prop_assert_eq!(reason, *got, "{:?}", mutation),
            (Expect::Either, _) => {}
            (expect, _) => prop_assert!(false, "expected {:?}, got {:?} after {:?}", expect, outcome, mutation),
        }
    }
}
