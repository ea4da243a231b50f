//! The `gateway` binary itself, against the real local Kafka and schema registry: the `api-key`
//! subcommands print only what scripts need, logs are JSON, SIGTERM shuts down cleanly, and no
//! API key ever appears in the logs, whatever the request.
//!
//! (The behaviour of the API is tested in-process by `tests/gateway.rs`; this file exists because
//! only this package can run its own binary.)

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use uuid::Uuid;

const BINARY: &str = env!("CARGO_BIN_EXE_gateway");

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), rand::random::<u32>())
}

fn api_key(args: &[&str]) -> (String, String) {
    let output = Command::new(BINARY).arg("api-key").args(args).env_remove("BXB_API_KEYS_FILE").output().unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "api-key {args:?} failed: {stderr}");
    (stdout, stderr)
}

#[tokio::test]
async fn the_binary_manages_keys_serves_and_never_logs_a_key() {
    let keys_file = std::env::temp_dir().join(format!("{}.json", unique("bxb-gateway-binary-keys")));
    let file = keys_file.to_str().unwrap();
    let org = Uuid::new_v4().to_string();

    // `api-key create` prints exactly the key on stdout, and says what it did on stderr.
    let (stdout, stderr) = api_key(&["create", "--organization-id", &org, "--file", file]);
    let key = stdout.strip_suffix('\n').expect("one line").to_owned();
    assert!(key.starts_with("bxb_") && !key.contains(char::is_whitespace) && !key.contains('\n'), "{stdout:?}");
    assert!(stderr.contains("created API key key_") && !stderr.contains(&key), "{stderr}");
    let (revoked_key, _) = api_key(&["create", "--organization-id", &org, "--file", file]);
    let revoked_key = revoked_key.trim().to_owned();
    let (listing, _) = api_key(&["list", "--file", file]);
    let revoked_id = listing.lines().nth(1).unwrap().split('\t').next().unwrap().to_owned();
    api_key(&["revoke", "--key-id", &revoked_id, "--file", file]);
    let unknown_key = format!("bxb_{}", "A".repeat(43));
    let stored = std::fs::read_to_string(&keys_file).unwrap();
    assert!(!stored.contains(&key) && !stored.contains(&revoked_key));

    let brokers = env_or("BXB_KAFKA_BROKERS", bxb_kafka::DEFAULT_BROKERS);
    let kafka = bxb_kafka::KafkaArgs::plaintext(brokers.clone()).client_config().unwrap();
    let topic = unique("gateway_binary");
    bxb_kafka::admin::ensure_topic(&kafka, &topic, 1, 1, &[]).await.unwrap();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(BINARY)
        .env_remove("BXB_POSTGRES_URL")
        .env("BXB_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("BXB_EVENTS_TOPIC", &topic)
        .env("BXB_API_KEYS_FILE", &keys_file)
        .env("BXB_KAFKA_BROKERS", &brokers)
        .env("BXB_SCHEMA_REGISTRY_URL", env_or("BXB_SCHEMA_REGISTRY_URL", bxb_event::registry::DEFAULT_REGISTRY_URL))
        .env("BXB_LOG", "trace")
        .env_remove("BXB_LOG_FORMAT")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // Drain stderr continuously so the child never blocks on a full pipe.
    let mut stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });

    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http.get(format!("{url}/readyz")).send().await.map(|r| r.status() == 200).unwrap_or(false);
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the gateway binary did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let event = serde_json::json!({"transaction_id": "tx-1", "external_customer_id": "c", "code": "api_calls"});
    let invalid = serde_json::json!({"transaction_id": "", "code": "x"});
    let post = |header: &'static str, value: String, body: &serde_json::Value| {
        http.post(format!("{url}/v1/events")).header(header, value).json(body).send()
    };
    assert_eq!(post("authorization", format!("Bearer {key}"), &event).await.unwrap().status(), 202);
    assert_eq!(post("x-api-key", key.clone(), &event).await.unwrap().status(), 202);
    assert_eq!(post("authorization", format!("Bearer {key}"), &invalid).await.unwrap().status(), 422);
    assert_eq!(post("authorization", format!("Bearer {revoked_key}"), &event).await.unwrap().status(), 401);
    assert_eq!(post("x-api-key", unknown_key.clone(), &event).await.unwrap().status(), 401);
    assert_eq!(post("authorization", format!("Basic {key}"), &event).await.unwrap().status(), 401);

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the gateway did not stop after SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let logs = logs.join().unwrap();
    let _ = bxb_kafka::admin::delete_topic(&kafka, &topic).await;
    std::fs::remove_file(&keys_file).unwrap();

    assert!(status.success(), "exit status {status}; logs:\n{logs}");
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object()), "not a JSON log line: {line}");
    }
    for expected in
        ["gateway listening", "event schema registered", "revoked_api_key", "invalid_api_key", "SIGTERM received", "producer flushed"]
    {
        assert!(logs.contains(expected), "the logs lack {expected:?}:\n{logs}");
    }
    for secret in [&key, &revoked_key, &unknown_key] {
        let body = &secret["bxb_".len()..];
        assert!(!logs.contains(body), "an API key appears in the logs");
    }
}
