//! Slow, idle and too many connections: whatever the protocol, a connection that sends nothing,
//! stops inside the HTTP/2 preface or idles between requests is closed after
//! `BXB_IDLE_CONNECTION_TIMEOUT_MS`; past `BXB_MAX_CONNECTIONS` and `BXB_MAX_REQUESTS_IN_FLIGHT`
//! the gateway answers 503 with `Retry-After` instead of growing, and good traffic passes again
//! once the load is gone. The times to close are printed (`--nocapture`) for RELIABILITY.md.

use std::time::Duration;

use bxb_tests::eventually;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::harness::*;

const IDLE_TIMEOUT_MS: u64 = 2_000;
/// Slack on top of the idle timeout: the assertions are about being closed at all, not when.
const SLACK: Duration = Duration::from_secs(5);
/// The first 24 bytes of every HTTP/2 connection with prior knowledge.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty HTTP/2 SETTINGS frame: length 0, type 4, no flags, stream 0.
const H2_EMPTY_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

fn address(gateway: &TestGateway) -> String {
    gateway.url.trim_start_matches("http://").to_owned()
}

/// Reads (and drops) whatever the server sends until it closes the connection; how long that
/// took, or `None` if it was still open after `limit`.
async fn time_until_closed(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(started + limit, stream.read(&mut buffer)).await {
            Err(_) => return None,
            Ok(Ok(0) | Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Opens a connection, sends `bytes`, then nothing: asserts the gateway closes it within the
/// idle timeout plus slack (and not long before the timeout), and returns how long it took.
async fn assert_closed_when_stalled(gateway: &TestGateway, what: &str, bytes: &[u8]) -> Duration {
    let mut stream = TcpStream::connect(address(gateway)).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let idle = Duration::from_millis(IDLE_TIMEOUT_MS);
    let closed = time_until_closed(&mut stream, idle + SLACK).await;
    let elapsed = closed.unwrap_or_else(|| panic!("{what}: still open {:?} after the idle timeout of {idle:?}", idle + SLACK));
    assert!(elapsed >= idle - Duration::from_millis(200), "{what}: closed after {elapsed:?}, before the idle timeout");
    eprintln!("connection closed: {what}: after {} ms (idle timeout {IDLE_TIMEOUT_MS} ms)", elapsed.as_millis());
    elapsed
}

/// One HTTP/1.1 request on a raw connection; status, lower-cased head and body of the answer.
async fn http1_exchange(stream: &mut TcpStream, request: &str) -> (u16, String, Vec<u8>) {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await.expect("an answer").unwrap();
        assert!(n > 0, "closed without an answer: {:?}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let length: usize =
        head.lines().find_map(|line| line.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().expect("a content length"));
    while received.len() < head_end + length {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await.expect("the body").unwrap();
        assert!(n > 0, "closed inside the body");
        received.extend_from_slice(&buffer[..n]);
    }
    (status, head, received[head_end..head_end + length].to_vec())
}

fn get_healthz(address: &str) -> String {
    format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n\r\n")
}

/// An HTTP/2 (h2c, prior knowledge) connection; the task drives it and ends when the server
/// closes it.
async fn h2_connect(address: &str) -> (h2::client::SendRequest<bytes::Bytes>, tokio::task::JoinHandle<Result<(), h2::Error>>) {
    let tcp = TcpStream::connect(address).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.expect("an HTTP/2 handshake");
    (client, tokio::spawn(connection))
}

/// A GET over HTTP/2: status, `Retry-After` and body.
async fn h2_get(client: &mut h2::client::SendRequest<bytes::Bytes>, url: &str) -> (u16, Option<String>, Vec<u8>) {
    let request = http::Request::get(url).body(()).unwrap();
    let (response, _) = client.clone().ready().await.unwrap().send_request(request, true).expect("a stream");
    let response = tokio::time::timeout(Duration::from_secs(10), response).await.expect("an answer").expect("a response");
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (status, retry_after, bytes)
}

/// A client that opens a new connection for every request, so that it is counted anew.
fn unpooled_client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap()
}

async fn post_event(client: &reqwest::Client, gateway: &TestGateway, key: &str, transaction_id: &str) -> Reply {
    let request = client.post(format!("{}/v1/events", gateway.url)).bearer_auth(key).json(&event_json(transaction_id));
    Reply::of(request.send().await.expect("an answer")).await
}

fn assert_overloaded(reply: &Reply) {
    reply.assert_error(503, "overloaded");
    assert_eq!(reply.retry_after.as_deref(), Some("1"), "{reply:?}");
}

#[tokio::test]
async fn idle_http1_connections_are_closed_after_the_idle_timeout() {
    let setup = Setup::new(1).await;
    let gateway = TestGateway::start_ready(setup.config(&[&format!("--idle-connection-timeout-ms={IDLE_TIMEOUT_MS}")])).await;
    let address = address(&gateway);

    assert_closed_when_stalled(&gateway, "HTTP/1, nothing sent", b"").await;

    // A keep-alive connection after a complete request (the header read timeout is 30 s).
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let (status, _, _) = http1_exchange(&mut stream, &get_healthz(&address)).await;
    assert_eq!(status, 200);
    let closed = time_until_closed(&mut stream, Duration::from_millis(IDLE_TIMEOUT_MS) + SLACK).await;
    let elapsed = closed.expect("an idle keep-alive connection stays open");
    eprintln!("connection closed: HTTP/1 keep-alive after a request: after {} ms", elapsed.as_millis());

    gateway.post("/v1/events", &setup.key, &event_json("after-idle-http1")).await.assert_accepted(1);
    gateway.stop().await.expect("clean stop");
}

#[tokio::test]
async fn stalled_http2_prefaces_are_closed_after_the_idle_timeout() {
    let setup = Setup::new(1).await;
    let gateway = TestGateway::start_ready(setup.config(&[&format!("--idle-connection-timeout-ms={IDLE_TIMEOUT_MS}")])).await;

    let half: &[u8] = &H2_PREFACE[..10];
    let preface_and_settings = [H2_PREFACE, H2_EMPTY_SETTINGS].concat();
    let ((), (), ()) = tokio::join!(
        async {
            assert_closed_when_stalled(&gateway, "HTTP/2, half of the preface", half).await;
        },
        async {
            assert_closed_when_stalled(&gateway, "HTTP/2, the preface and nothing else", H2_PREFACE).await;
        },
        async {
            assert_closed_when_stalled(&gateway, "HTTP/2, the preface and SETTINGS, then no request", &preface_and_settings).await;
        },
    );
    gateway.post("/v1/events", &setup.key, &event_json("after-stalled-h2")).await.assert_accepted(1);
    gateway.stop().await.expect("clean stop");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let setup = Setup::new(1).await;
    let gateway = TestGateway::start_ready(setup.config(&[&format!("--idle-connection-timeout-ms={IDLE_TIMEOUT_MS}")])).await;
    let address = address(&gateway);

    // A live client: it answers the server's pings, so only idle tracking can close it.
    let (mut client, connection) = h2_connect(&address).await;
    let (status, _, _) = h2_get(&mut client, &format!("{}/healthz", gateway.url)).await;
    assert_eq!(status, 200, "the gateway serves HTTP/2 with prior knowledge");
    let started = Instant::now();
    let limit = Duration::from_millis(IDLE_TIMEOUT_MS) + SLACK;
    let ended = tokio::time::timeout(limit, connection).await;
    let elapsed = started.elapsed();
    assert!(ended.is_ok(), "an idle HTTP/2 connection was still open after {elapsed:?}");
    eprintln!("connection closed: HTTP/2 idle after a request: after {} ms (outcome {:?})", elapsed.as_millis(), ended.unwrap().unwrap());
    drop(client);

    gateway.post("/v1/events", &setup.key, &event_json("after-idle-h2")).await.assert_accepted(1);
    gateway.stop().await.expect("clean stop");
}

#[tokio::test]
async fn past_the_connection_cap_new_connections_get_503_with_retry_after_then_recover() {
    const MAX_CONNECTIONS: usize = 4;
    let setup = Setup::new(1).await;
    let gateway = TestGateway::start_ready(setup.config(&[&format!("--max-connections={MAX_CONNECTIONS}")])).await;
    let address = address(&gateway);

    // Open connections until one is refused; the harness's own pooled connection may hold a slot.
    let mut held = Vec::new();
    let refused = loop {
        assert!(held.len() <= MAX_CONNECTIONS, "{} connections were served, the cap is {MAX_CONNECTIONS}", held.len());
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let (status, head, body) = http1_exchange(&mut stream, &get_healthz(&address)).await;
        if status == 200 {
            held.push(stream);
            continue;
        }
        break (status, head, body);
    };
    let (status, head, body) = refused;
    let body: Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!((status, body["code"].as_str()), (503, Some("overloaded")), "{head} {body}");
    assert!(head.contains("\r\nretry-after: 1\r\n"), "{head}");
    assert!(held.len() >= MAX_CONNECTIONS - 1, "only {} connections were served", held.len());

    // Any client, any protocol, gets the same answer while the cap is reached.
    let client = unpooled_client();
    assert_overloaded(&post_event(&client, &gateway, &setup.key, "over-the-cap").await);
    let (mut h2, _connection) = h2_connect(&address).await;
    let (status, retry_after, body) = h2_get(&mut h2, &format!("{}/v1/events", gateway.url)).await;
    let body: Value = serde_json::from_slice(&body).expect("a JSON body");
    assert_eq!((status, retry_after.as_deref(), body["code"].as_str()), (503, Some("1"), Some("overloaded")), "{body}");
    drop(h2);

    drop(held);
    eventually("a new connection to be served again", Duration::from_secs(10), || async {
        let reply = post_event(&client, &gateway, &setup.key, "after-the-cap").await;
        (reply.status == 202).then_some(())
    })
    .await;
    gateway.stop().await.expect("clean stop");
}

#[tokio::test]
async fn past_the_in_flight_cap_requests_get_503_with_retry_after_then_recover() {
    const MAX_IN_FLIGHT: usize = 2;
    let setup = Setup::new(1).await;
    let gateway = TestGateway::start_ready(setup.config(&[&format!("--max-requests-in-flight={MAX_IN_FLIGHT}")])).await;
    let address = address(&gateway);

    // Uploads that never finish their body keep their requests in flight (until the request timeout).
    let mut uploads = Vec::new();
    for _ in 0..MAX_IN_FLIGHT {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let head = format!(
            "POST /v1/events HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{",
            setup.key
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        uploads.push(stream);
    }
    let client = unpooled_client();
    let refused = eventually("a request past the in-flight cap to be refused", Duration::from_secs(10), || async {
        let reply = post_event(&client, &gateway, &setup.key, "over-the-in-flight-cap").await;
        (reply.status != 202).then_some(reply)
    })
    .await;
    assert_overloaded(&refused);
    assert_eq!(gateway.get("/healthz").await.status(), 200, "operational routes are not capped");

    drop(uploads);
    eventually("requests to be served again", Duration::from_secs(10), || async {
        (post_event(&client, &gateway, &setup.key, "after-the-in-flight-cap").await.status == 202).then_some(())
    })
    .await;
    gateway.stop().await.expect("clean stop");
}
