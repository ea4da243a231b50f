//! An organization over its rate limit is refused before its body is read or parsed: once its
//! bucket is empty, an invalid body gets 429 (not 400 or 422) and a body that would take many
//! seconds to arrive gets 429 at once; other organizations are unaffected.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::harness::*;

/// The bucket: 5 events, refilled at 1 a second, so it stays empty for about a second after a
/// batch of 5.
const FLAGS: [&str; 4] =
    ["--max-batch-events=5", "--rate-limit-events-per-second=1", "--rate-limit-burst-events=5", "--request-timeout-ms=15000"];

/// Empties the organization's bucket: posts one event after the other until one gets 429.
async fn empty_the_bucket(gateway: &TestGateway, key: &str) {
    let five = json!({"events": (0..5).map(|i| event_json(&format!("tx-fill-{i}"))).collect::<Vec<_>>()});
    let _ = gateway.post("/v1/events/batch", key, &five).await;
    for i in 0..20 {
        if gateway.post("/v1/events", key, &event_json(&format!("tx-drain-{i}"))).await.status == 429 {
            return;
        }
    }
    panic!("the bucket never emptied");
}

#[tokio::test]
async fn an_organization_over_its_limit_is_refused_before_its_body_is_read() {
    let setup = Setup::new(1).await;
    let other = setup.keys.create(uuid::Uuid::new_v4()).key;
    let gateway = TestGateway::start_ready(setup.config(&FLAGS)).await;
    let key = setup.key.as_str();

    // An invalid body: parsed, it would get 422.
    empty_the_bucket(&gateway, key).await;
    let reply = gateway.post_raw("/v1/events", Some(key), "application/json", r#"{"transaction_id": 5}"#.into()).await;
    reply.assert_error(429, "rate_limited");
    assert_eq!(reply.retry_after.as_deref(), Some("1"));
    // Not JSON at all: read, it would get 400.
    empty_the_bucket(&gateway, key).await;
    let reply = gateway.post_raw("/v1/events/batch", Some(key), "application/json", "{\"events\": [".into()).await;
    reply.assert_error(429, "rate_limited");

    // A body announced as 100 000 bytes of which 1 is sent: read, it would get 408 after the
    // request timeout (15 s).
    empty_the_bucket(&gateway, key).await;
    let address = gateway.url.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{"
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buffer[..n]),
            other => panic!("no answer within 5 s of an unfinished body ({other:?}); got {:?}", String::from_utf8_lossy(&answer)),
        }
    }
    let elapsed = started.elapsed();
    let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 429"), "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(elapsed < Duration::from_secs(2), "answered after {elapsed:?}");
    eprintln!("over the limit, unfinished body: 429 after {} ms", elapsed.as_millis());

    // Another organization has its own bucket: its bodies are read and judged.
    empty_the_bucket(&gateway, key).await;
    let reply = gateway.post_raw("/v1/events", Some(&other), "application/json", r#"{"transaction_id": 5}"#.into()).await;
    reply.assert_error(422, "validation_failed");
    gateway.post("/v1/events", &other, &event_json("tx-other")).await.assert_accepted(1);
    gateway.stop().await.expect("clean stop");
}
