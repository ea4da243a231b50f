use serde_json::{json, Value};

use super::invariants::{ORGANIZATION as ORG, RECEIVED_AT_MS as NOW};
use super::*;

fn context() -> ParseContext {
    invariants::context(10)
}

fn single(body: &Value) -> Result<Vec<Event>, Refusal> {
    parse_single(body.to_string().as_bytes(), &context()).map_err(|r| r.refusal)
}

fn batch(events: Vec<Value>) -> Result<Vec<Event>, Refusal> {
    parse_batch(json!({ "events": events }).to_string().as_bytes(), &context()).map_err(|r| r.refusal)
}

fn parse_single_text(body: &str) -> Result<Vec<Event>, Refusal> {
    parse_single(body.as_bytes(), &context()).map_err(|r| r.refusal)
}

fn parse_batch_text(body: &[u8]) -> Result<Vec<Event>, Refusal> {
    parse_batch(body, &context()).map_err(|r| r.refusal)
}

fn problems(result: Result<Vec<Event>, Refusal>) -> Vec<(usize, String, &'static str)> {
    match result {
        Err(Refusal::Invalid { problems }) => problems.into_listed().into_iter().map(|e| (e.index, e.field, e.code)).collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn minimal() -> Value {
    json!({"transaction_id": "tx-1", "external_customer_id": "cust-1", "code": "api_calls"})
}

#[test]
fn a_minimal_event_gets_defaults() {
    let events = single(&minimal()).unwrap();
    assert_eq!(
        events,
        [Event {
            organization_id: ORG,
            transaction_id: "tx-1".into(),
            external_customer_id: "cust-1".into(),
            code: "api_calls".into(),
            timestamp_ms: NOW,
            properties: "{}".into(),
            value: None,
            decimal_value: None,
        }]
    );
}

#[test]
fn a_full_event_keeps_every_field() {
    let body = r#"{"transaction_id":"tx\u002d2","external_customer_id":"c","code":"gb","timestamp":"2024-05-01T11:59:00.5Z",
        "properties":{"region": "eu", "n": [1, 2.5]},"value":1.25,"decimal_value":"0010.500","organization_id":"12345678-9abc-def0-1234-56789abcdef0"}"#;
    let event = parse_single_text(body).unwrap().remove(0);
    assert_eq!(event.transaction_id, "tx-2");
    assert_eq!(event.timestamp_ms, NOW - 59_500);
    assert_eq!(event.properties, r#"{"region": "eu", "n": [1, 2.5]}"#, "properties are carried byte for byte");
    assert_eq!(event.value, Some(1.25));
    assert_eq!(event.decimal_value.unwrap().as_str(), "10.5");
}

#[test]
fn a_decimal_may_be_a_json_number_taken_exactly() {
    let mut body = minimal();
    body["decimal_value"] = serde_json::from_str("0.100000000001").unwrap();
    let event = parse_single_text(
        r#"{"transaction_id":"t","external_customer_id":"c","code":"x","decimal_value":123456789012345678901234.000000000001}"#,
    )
    .unwrap()
    .remove(0);
    assert_eq!(event.decimal_value.unwrap().as_str(), "123456789012345678901234.000000000001");
    assert_eq!(single(&body).unwrap()[0].decimal_value.as_ref().unwrap().as_str(), "0.100000000001");
}

#[test]
fn nulls_of_optional_fields_are_absent() {
    let mut body = minimal();
    for field in ["timestamp", "properties", "value", "decimal_value", "organization_id"] {
        body[field] = Value::Null;
    }
    let event = single(&body).unwrap().remove(0);
    assert_eq!((event.timestamp_ms, event.properties.as_str(), event.value), (NOW, "{}", None));
}

#[test]
fn every_problem_of_an_event_is_listed() {
    let body = json!({
        "transaction_id": 5,
        "code": "api calls",
        "timestamp": "yesterday",
        "properties": [1],
        "value": "1",
        "decimal_value": "1.0000000000001",
        "organization_id": "not-a-uuid",
        "colour": "red",
    });
    assert_eq!(
        problems(single(&body)),
        [
            (0, "colour".into(), "unknown_field"),
            (0, "organization_id".into(), "invalid_uuid"),
            (0, "transaction_id".into(), "invalid_type"),
            (0, "external_customer_id".into(), "required"),
            (0, "timestamp".into(), "invalid_format"),
            (0, "properties".into(), "not_an_object"),
            (0, "value".into(), "invalid_type"),
            (0, "decimal_value".into(), "too_many_fraction_digits"),
            (0, "code".into(), "invalid_characters"),
        ]
    );
}

#[test]
fn timestamps_outside_the_window_are_refused() {
    let mut old = minimal();
    old["timestamp"] = json!(NOW - 86_400_001);
    let mut future = minimal();
    future["timestamp"] = json!("2024-05-01T12:01:00.001Z");
    let mut late_but_fine = minimal();
    late_but_fine["timestamp"] = json!(NOW - 86_400_000);
    assert_eq!(
        problems(batch(vec![old, future, late_but_fine])),
        [(0, "timestamp".into(), "too_old"), (1, "timestamp".into(), "too_far_in_future")]
    );
}

#[test]
fn one_invalid_event_rejects_the_batch_with_its_index() {
    let mut bad = minimal();
    bad["external_customer_id"] = json!("");
    assert_eq!(
        problems(batch(vec![minimal(), bad, json!("oops")])),
        [(1, "external_customer_id".into(), "empty"), (2, "".into(), "not_an_object"),]
    );
}

#[test]
fn a_refused_batch_counts_every_event_also_those_that_are_not_objects() {
    // Found by fuzzing: `{"events":[161E0,0]}` was refused as holding 0 events, so the rejected
    // events metric missed them.
    let rejection = parse_batch(br#"{"events":[161E0, 0, {"code": 1}]}"#, &context()).unwrap_err();
    assert_eq!(rejection.events, 3);
}

#[test]
fn another_organization_is_forbidden_even_with_other_problems() {
    let mut foreign = minimal();
    foreign["organization_id"] = json!(Uuid::nil().to_string());
    let mut invalid = minimal();
    invalid["code"] = json!("");
    match batch(vec![invalid, foreign]) {
        Err(Refusal::OrganizationMismatch { problems }) => assert_eq!(problems.listed()[0].index, 1),
        other => panic!("expected 403, got {other:?}"),
    }
}

#[test]
fn properties_limits_come_from_the_shared_rules() {
    let mut deep = minimal();
    deep["properties"] = serde_json::from_str(&format!("{}1{}", r#"{"a":"#.repeat(17), "}".repeat(17))).unwrap();
    assert_eq!(problems(single(&deep)), [(0, "properties".into(), "too_deep")]);
    let mut big = minimal();
    big["properties"] = json!({"a": "x".repeat(validate::MAX_PROPERTIES_BYTES)});
    assert_eq!(problems(single(&big)), [(0, "properties".into(), "too_large")]);
}

#[test]
fn huge_numbers_are_not_finite() {
    let body = r#"{"transaction_id":"t","external_customer_id":"c","code":"x","value":1e400}"#;
    assert_eq!(problems(parse_single_text(body)), [(0, "value".into(), "not_finite")]);
}

#[test]
fn duplicate_fields_are_refused() {
    let body = r#"{"transaction_id":"t","transaction_id":"u","external_customer_id":"c","code":"x"}"#;
    assert_eq!(problems(parse_single_text(body)), [(0, "transaction_id".into(), "duplicate_field")]);
}

#[test]
fn body_shape_errors_are_bad_requests() {
    for body in ["", "{", "[]", "not json", "\u{feff}{}", r#"{"events": 1}"#] {
        assert!(matches!(parse_batch_text(body.as_bytes()), Err(Refusal::InvalidJson(_))), "batch {body:?}");
    }
    for body in ["", "[1]", "\"event\"", "{\"a\":1"] {
        assert!(matches!(parse_single_text(body), Err(Refusal::InvalidJson(_))), "single {body:?}");
    }
    assert!(matches!(parse_batch_text(br#"{"events": [], "more": 1}"#), Err(Refusal::InvalidJson(_))));
    assert!(matches!(parse_batch_text(&[0xff, 0xfe]), Err(Refusal::InvalidJson(_))));
}

#[test]
fn batch_count_limits() {
    assert_eq!(problems(batch(vec![])), [(0, "events".into(), "empty")]);
    assert!(matches!(batch(vec![minimal(); 11]), Err(Refusal::BatchTooLarge { events: 11, limit: 10 })));
    assert_eq!(batch(vec![minimal(); 10]).unwrap().len(), 10);
}

#[test]
fn countless_problems_are_listed_up_to_the_cap_and_all_counted() {
    // `{"":0,...}`: an unknown field every 5 bytes, plus the 3 required fields missing.
    let body = format!("{{{}}}", vec![r#""":0"#; 50_000].join(","));
    let refusal = parse_single_text(&body).unwrap_err();
    assert_eq!((refusal.problems().len(), refusal.total_problems()), (MAX_LISTED_PROBLEMS, 50_003));
    assert_eq!(refusal.to_string(), "50003 problem(s) in the events");
    assert!(refusal.problems().iter().all(|p| p.code == "unknown_field"), "the first problems are listed");

    // Fewer unknown names than the cap: every problem listed, in order.
    let mut event = minimal();
    for i in 0..40 {
        event[format!("x{i}")] = json!(i);
    }
    event["code"] = json!("");
    let found = problems(single(&event));
    assert_eq!(found.len(), 41);
    assert_eq!(found[40], (0, "code".into(), "invalid_length"));

    // A batch of events of 3 problems each: the first events' problems, then only counted.
    let refusal = parse_batch(json!({ "events": vec![json!({}); 10] }).to_string().as_bytes(), &invariants::context(10)).unwrap_err();
    assert_eq!((refusal.refusal.problems().len(), refusal.refusal.total_problems(), refusal.events), (30, 30, 10));
    let body = format!("{{\"events\":[{}]}}", [body.as_str(); 3].join(","));
    let refusal = parse_batch_text(body.as_bytes()).unwrap_err();
    assert_eq!((refusal.problems().len(), refusal.total_problems()), (MAX_LISTED_PROBLEMS, 3 * 50_003));
    assert!(refusal.problems().iter().all(|p| p.index == 0));
}

#[test]
fn a_message_that_would_quote_the_body_is_cut() {
    let long = "x".repeat(100_000);
    for body in [format!(r#"{{"events": "{long}"}}"#), format!(r#"{{"{long}": []}}"#), format!(r#"{{"events": [{{"code": "{long}"}}, ]}}"#)]
    {
        match parse_batch_text(body.as_bytes()) {
            Err(Refusal::InvalidJson(message)) => assert!(message.chars().count() <= MAX_MESSAGE_CHARS + 1, "{} characters", message.len()),
            other => panic!("expected invalid_json, got {other:?}"),
        }
    }
}
