//! Bodies made to hold as many problems, or as long a message, as their bytes allow: events of
//! countless unknown fields (empty names, names of control characters or of wide characters,
//! longer than a problem echoes), batches of such events past and within the limit, members and
//! values whose text the JSON parser would quote. Every body goes through [`check_body`], so
//! each answer is checked to list at most `MAX_LISTED_PROBLEMS` problems and to stay within
//! `MAX_ERROR_BODY_BYTES`; the code is checked where the body decides it.
//!
//! The case count is `BXB_FUZZ_CASES` / 20 (default 1 000).

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::json;

use super::invariants::{check_body, context, Endpoint};

const MAX_BATCH_EVENTS: usize = 10;

fn cases() -> u32 {
    std::env::var("BXB_FUZZ_CASES").ok().and_then(|v| v.parse::<u32>().ok()).unwrap_or(20_000) / 20
}

/// A name that is not an event field, from empty to well past what a problem echoes.
fn unknown_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        2 => "[a-z_]{1,12}".prop_filter("unknown", |n| !super::FIELDS.contains(&n.as_str())),
        2 => (select(vec!["\u{1}", "\u{7f}", "\"", "\\", "é", "\u{10ffff}", "\u{2028}"]), 1usize..100).prop_map(|(c, n)| format!("x{}", c.repeat(n))),
    ]
}

/// An event object of `members` unknown fields (names repeated to reach the count), plus some of
/// the required fields.
fn flooded_event() -> impl Strategy<Value = String> {
    (proptest::collection::vec(unknown_name(), 1..8), 1usize..300, any::<bool>()).prop_map(|(names, members, with_required)| {
        let mut fields: Vec<String> =
            (0..members).map(|i| format!("{}:0", json!(format!("{}{}", names[i % names.len()], i % 3)))).collect();
        if with_required {
            fields.extend([r#""transaction_id":"t""#.to_owned(), r#""external_customer_id":"c""#.into(), r#""code":"x""#.into()]);
        }
        format!("{{{}}}", fields.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn an_event_of_countless_unknown_fields(event in flooded_event()) {
        prop_assert_eq!(check_body(Endpoint::Single, event.as_bytes(), &context(MAX_BATCH_EVENTS)), Err("validation_failed"));
    }

    #[test]
    fn batches_of_such_events(events in proptest::collection::vec(flooded_event(), 1..=MAX_BATCH_EVENTS + 2)) {
        let body = format!("{{\"events\":[{}]}}", events.join(","));
        let expected = if events.len() > MAX_BATCH_EVENTS { "batch_too_large" } else { "validation_failed" };
        prop_assert_eq!(check_body(Endpoint::Batch, body.as_bytes(), &context(MAX_BATCH_EVENTS)), Err(expected));
    }

    #[test]
    fn text_the_parser_would_quote(text in "\\PC{0,40}", repeat in 1usize..5_000, at in 0usize..4) {
        let long = text.repeat(repeat);
        let body = match at {
            0 => json!({ long.clone(): [] }).to_string(),
            1 => json!({ "events": long }).to_string(),
            2 => json!({ "events": [], long.clone(): 1 }).to_string(),
            _ => format!(r#"{{"events":[{{"code":{}}}, ]}}"#, json!(long)),
        };
        prop_assert!(check_body(Endpoint::Batch, body.as_bytes(), &context(MAX_BATCH_EVENTS)).is_err());
    }
}
