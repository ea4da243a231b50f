//! Hostile HTTP input: every case gets a clear 4xx with a stable code, nothing panics, and the
//! gateway keeps accepting good events afterwards.

#[path = "gateway/bounded_errors.rs"]
mod bounded_errors;
#[path = "gateway/connections.rs"]
mod connections;
#[path = "gateway/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "gateway/over_limit.rs"]
mod over_limit;

use std::time::{Duration, Instant};

use harness::{event_json, Setup, TestGateway};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn post_bytes(gateway: &TestGateway, key: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = gateway
        .http
        .post(format!("{}/v1/events", gateway.url))
        .bearer_auth(key)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("the gateway answers");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn assert_still_accepts(gateway: &TestGateway, key: &str, n: usize) {
    let reply = gateway.post("/v1/events", key, &event_json(&format!("after-hostile-{n}"))).await;
    reply.assert_accepted(1);
}

#[tokio::test]
async fn malformed_bodies_get_a_clear_client_error() {
    let setup = Setup::new(1).await;
    let gateway = TestGateway::start_ready(setup.config(&[])).await;
    let deep = format!(
        "{{\"transaction_id\":\"t\",\"external_customer_id\":\"c\",\"code\":\"x\",\"properties\":{}1{}}}",
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    let wide = format!(
        "{{\"transaction_id\":\"t\",\"external_customer_id\":\"c\",\"code\":\"x\",\"properties\":{{\"blob\":\"{}\"}}}}",
        "x".repeat(200_000)
    );
    let cases: Vec<(&str, &str, Vec<u8>, &[u16])> = vec![
        ("malformed JSON", "application/json", b"{\"transaction_id\": ".to_vec(), &[400]),
        ("not an object", "application/json", b"[1, 2, 3]".to_vec(), &[400]),
        ("wrong types", "application/json", br#"{"transaction_id": 5, "external_customer_id": [], "code": {}}"#.to_vec(), &[400, 422]),
        (
            "NaN literal",
            "application/json",
            br#"{"transaction_id": "t", "external_customer_id": "c", "code": "x", "value": NaN}"#.to_vec(),
            &[400],
        ),
        (
            "Infinity literal",
            "application/json",
            br#"{"transaction_id": "t", "external_customer_id": "c", "code": "x", "value": Infinity}"#.to_vec(),
            &[400],
        ),
        (
            "a number beyond f64",
            "application/json",
            br#"{"transaction_id": "t", "external_customer_id": "c", "code": "x", "value": 1e400}"#.to_vec(),
            &[400, 422],
        ),
        (
            "a decimal beyond 38 digits",
            "application/json",
            br#"{"transaction_id": "t", "external_customer_id": "c", "code": "x", "decimal_value": "123456789012345678901234567890.5"}"#
                .to_vec(),
            &[422],
        ),
        (
            "invalid UTF-8",
            "application/json",
            b"{\"transaction_id\": \"\xff\xfe\", \"external_customer_id\": \"c\", \"code\": \"x\"}".to_vec(),
            &[400],
        ),
        ("properties nested 10 000 deep", "application/json", deep.into_bytes(), &[400, 422]),
        ("properties of 200 KB", "application/json", wide.into_bytes(), &[413, 422]),
        ("a 10 MB body", "application/json", vec![b' '; 10 * 1024 * 1024], &[413]),
        ("a form body", "application/x-www-form-urlencoded", b"transaction_id=t".to_vec(), &[415]),
        ("no content type", "", event_json("no-type").to_string().into_bytes(), &[415]),
    ];
    for (i, (what, content_type, body, expected)) in cases.into_iter().enumerate() {
        let (status, reply) = post_bytes(&gateway, &setup.key, content_type, body).await;
        assert!(expected.contains(&status), "{what}: got {status} {reply}, expected one of {expected:?}");
        assert!(reply["code"].as_str().is_some_and(|c| !c.is_empty()), "{what}: the body names a code: {reply}");
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: the body explains: {reply}");
        assert_still_accepts(&gateway, &setup.key, i).await;
    }
    gateway.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_slow_body_is_cut_off_by_the_request_timeout() {
    let setup = Setup::new(1).await;
    let gateway = TestGateway::start_ready(setup.config(&[
        "--request-timeout-ms=3000",
        "--kafka-delivery-timeout-ms=1500",
        "--kafka-enqueue-timeout-ms=500",
    ]))
    .await;
    let address = gateway.url.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{",
        setup.key
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Trickle one byte a second, far slower than the body could ever complete within the timeout.
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if stream.write_all(b" ").await.is_err() { break; }
            }
        }
        assert!(started.elapsed() < Duration::from_secs(20), "the slow request was not cut off");
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    let status: u16 = answer.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    assert!(status == 408 || (status == 0 && answer.is_empty()), "a slow body gets 408 (or the connection is closed): {answer:?}");
    assert_still_accepts(&gateway, &setup.key, 0).await;
    gateway.stop().await.expect("clean stop");
}

#[tokio::test]
async fn slow_headers_are_cut_off_by_the_header_read_timeout() {
    let setup = Setup::new(1).await;
    let gateway = TestGateway::start_ready(setup.config(&["--header-read-timeout-ms=2000"])).await;
    let address = gateway.url.trim_start_matches("http://").to_owned();
    let started = Instant::now();
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream.write_all(b"POST /v1/events HTTP/1.1\r\nHost: ").await.unwrap();
    // One byte of a header line a second: the request head never completes.
    let mut buffer = [0u8; 1024];
    let closed = loop {
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break true,
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if stream.write_all(b"x").await.is_err() { break true; }
            }
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
    };
    assert!(closed, "a client trickling its headers kept the connection open for {:?}", started.elapsed());
    assert_still_accepts(&gateway, &setup.key, 0).await;
    gateway.stop().await.expect("clean stop");
}
