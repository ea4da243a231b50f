//! Bodies made to produce as many problems, or as long a message, as their bytes allow: the
//! answer stays a small 4xx (at most [`MAX_ERROR_BODY_BYTES`], at most [`MAX_LISTED_PROBLEMS`]
//! problems listed, `total_errors` counting all of them), and the gateway serves good events
//! right after.

use serde_json::{json, Value};

use super::harness::*;

const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;
const MAX_LISTED_PROBLEMS: usize = 100;
const MAX_BODY_BYTES: usize = 1024 * 1024;
const MAX_BATCH_EVENTS: usize = 1_000;

/// Posts `body` and returns the status, the size of the answer's body and the answer.
async fn post_sized(gateway: &TestGateway, path: &str, key: &str, body: String) -> (u16, usize, Value) {
    let response = gateway
        .http
        .post(format!("{}{path}", gateway.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("a body");
    let answer = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, bytes.len(), answer)
}

/// An object of `count` members named `name(i)` with the value 0, at most `limit` bytes long.
fn object_of_fields(limit: usize, name: impl Fn(usize) -> String) -> (String, usize) {
    let mut body = String::from("{");
    let mut count = 0;
    loop {
        let member = format!("{}:0", json!(name(count)));
        if body.len() + member.len() + 2 > limit {
            break;
        }
        if count > 0 {
            body.push(',');
        }
        body.push_str(&member);
        count += 1;
    }
    body.push('}');
    (body, count)
}

/// Asserts a small answer with the first problems listed and every problem counted.
fn assert_bounded(what: &str, (status, size, answer): &(u16, usize, Value), expected_status: u16, code: &str, total: Option<usize>) {
    let head: String = answer.to_string().chars().take(300).collect();
    assert_eq!((*status, answer["code"].as_str()), (expected_status, Some(code)), "{what}: {head}");
    assert!(*size <= MAX_ERROR_BODY_BYTES, "{what}: a {size}-byte answer, at most {MAX_ERROR_BODY_BYTES} allowed: {head}");
    let listed = answer["errors"].as_array().map_or(usize::MAX, Vec::len);
    assert!(listed <= MAX_LISTED_PROBLEMS, "{what}: {listed} problems listed, at most {MAX_LISTED_PROBLEMS} allowed");
    if let Some(total) = total {
        assert_eq!(answer["total_errors"].as_u64(), Some(total as u64), "{what}: every problem is counted: {head}");
        assert!(listed >= 1 && listed <= total, "{what}: {listed} listed of {total}");
    }
    eprintln!("{what}: {status} {code}, {size} bytes, {listed} problems listed of {:?}", answer["total_errors"]);
}

#[tokio::test]
async fn a_body_of_countless_problems_gets_a_small_answer_that_counts_them() {
    let setup = Setup::new(1).await;
    let limits =
        [format!("--max-body-bytes={MAX_BODY_BYTES}"), format!("--max-batch-events={MAX_BATCH_EVENTS}"), "--max-record-bytes=256".into()];
    let limits: Vec<&str> = limits.iter().map(String::as_str).collect();
    let gateway = TestGateway::start_ready(setup.config(&limits)).await;
    let key = setup.key.as_str();

    // `{"":0,"":0,...}`: one unknown field every 5 bytes, and the 3 required fields missing.
    let (body, fields) = object_of_fields(MAX_BODY_BYTES, |_| String::new());
    let answer = post_sized(&gateway, "/v1/events", key, body).await;
    assert_bounded("empty-named fields", &answer, 422, "validation_failed", Some(fields + 3));
    assert_eq!(answer.2["errors"][0]["code"], "unknown_field");

    // Distinct names of control characters: each echoed (cut to 64 characters) in `field` and in
    // the message, where JSON escapes every character to 6 bytes or more.
    let (body, fields) = object_of_fields(MAX_BODY_BYTES, |i| format!("{i:06}{}", "\u{1}".repeat(80)));
    let answer = post_sized(&gateway, "/v1/events", key, body).await;
    assert_bounded("long control-character names", &answer, 422, "validation_failed", Some(fields + 3));

    // A full batch of empty events: 3 problems each.
    let body = json!({"events": vec![json!({}); MAX_BATCH_EVENTS]}).to_string();
    let answer = post_sized(&gateway, "/v1/events/batch", key, body).await;
    assert_bounded("a full batch of empty events", &answer, 422, "validation_failed", Some(3 * MAX_BATCH_EVENTS));
    assert_eq!((answer.2["errors"][0]["index"].as_u64(), answer.2["errors"][0]["field"].as_str()), (Some(0), Some("transaction_id")));

    // A full batch whose events each hold empty-named fields.
    let per_event = MAX_BODY_BYTES / MAX_BATCH_EVENTS - 8;
    let (event, fields) = object_of_fields(per_event, |_| String::new());
    let body = format!("{{\"events\":[{}]}}", vec![event; MAX_BATCH_EVENTS].join(","));
    let answer = post_sized(&gateway, "/v1/events/batch", key, body).await;
    assert_bounded(
        "a full batch of events with empty-named fields",
        &answer,
        422,
        "validation_failed",
        Some((fields + 3) * MAX_BATCH_EVENTS),
    );

    // Another organization in every event of a full batch.
    let mut foreign = event_json("tx-foreign");
    foreign["organization_id"] = json!(uuid::Uuid::new_v4());
    let body = json!({"events": vec![foreign; MAX_BATCH_EVENTS]}).to_string();
    let answer = post_sized(&gateway, "/v1/events/batch", key, body).await;
    assert_bounded("a full batch naming another organization", &answer, 403, "organization_mismatch", Some(MAX_BATCH_EVENTS));

    // Every event of a full batch encodes past the record limit (256 bytes).
    let mut large = event_json("tx-large");
    large["properties"] = json!({"blob": "x".repeat(300)});
    let body = json!({"events": vec![large; MAX_BATCH_EVENTS]}).to_string();
    let answer = post_sized(&gateway, "/v1/events/batch", key, body).await;
    assert_bounded("a full batch of records too large", &answer, 413, "record_too_large", Some(MAX_BATCH_EVENTS));

    // Messages that would echo what the body holds: a long unknown member of the batch object,
    // a long string where the events belong.
    let long = "k".repeat(MAX_BODY_BYTES - 100);
    let answer = post_sized(&gateway, "/v1/events/batch", key, format!("{{\"{long}\":[]}}")).await;
    assert_bounded("a long unknown member of the batch object", &answer, 400, "invalid_json", None);
    let answer = post_sized(&gateway, "/v1/events/batch", key, format!("{{\"events\":\"{long}\"}}")).await;
    assert_bounded("a long string for the events", &answer, 400, "invalid_json", None);

    gateway.post("/v1/events", key, &event_json("tx-after")).await.assert_accepted(1);
    gateway.stop().await.expect("clean stop");
}
