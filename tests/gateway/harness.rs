//! Helpers of the gateway suite: a real gateway served in-process by `bxb_gateway::run` on a
//! 127.0.0.1:0 listener, with its own topic and key file, and a reader of what it published.

use std::path::PathBuf;
use std::time::Duration;

use bxb_event::registry::{RegistryArgs, SchemaRegistry};
use bxb_event::Event;
use bxb_gateway::auth::file::{create_key, CreatedKey};
use bxb_gateway::GatewayConfig;
use bxb_tests::{eventually, kafka_brokers, kafka_config, schema_registry_url, unique, EphemeralTopic};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The text of a payload fixture of `tests/fixtures/gateway/`, with its timestamp placeholders
/// filled relative to `now_ms` so the events stay inside the gateway's window:
/// `"<<epoch_ms:OFFSET>>"` becomes the integer `now_ms + OFFSET`, and `"<<rfc3339:OFFSET>>"` an
/// RFC 3339 string of that millisecond at offset +02:00 with 456 extra microseconds (which the
/// gateway must truncate). The text is sent as is, so numbers keep their exact digits.
pub fn fixture(name: &str, now_ms: i64) -> String {
    let path = format!("{}/fixtures/gateway/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find("\"<<") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find(">>\"").expect("closed placeholder") + start;
        let (kind, offset) = rest[start + 3..end].split_once(':').expect("kind:offset");
        let ms = now_ms + offset.parse::<i64>().expect("offset in ms");
        match kind {
            "epoch_ms" => out.push_str(&ms.to_string()),
            "rfc3339" => out.push_str(&format!("\"{}\"", rfc3339_with_micros(ms, 456))),
            other => panic!("unknown placeholder {other}"),
        }
        rest = &rest[end + 3..];
    }
    out.push_str(rest);
    out
}

/// `ms` plus `extra_micros` as RFC 3339 at offset +02:00.
pub fn rfc3339_with_micros(ms: i64, extra_micros: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000 + i128::from(extra_micros) * 1_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap()
        .to_offset(time::macros::offset!(+2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// A key file of one test, removed when dropped.
pub struct KeyFile {
    pub path: PathBuf,
}

impl KeyFile {
    pub fn new() -> Self {
        Self { path: std::env::temp_dir().join(format!("{}.json", unique("bxb-gateway-keys"))) }
    }

    pub fn create(&self, organization_id: Uuid) -> CreatedKey {
        create_key(&self.path, organization_id).expect("create a key")
    }
}

impl Drop for KeyFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The settings of a test gateway: the real services, fast refreshes, and no PostgreSQL key
/// source unless a test sets one (the environment of `./dev/test` may name a database).
pub fn config(topic: &str, keys: &KeyFile, extra: &[&str]) -> GatewayConfig {
    let mut args = vec![
        "gateway".to_owned(),
        format!("--events-topic={topic}"),
        format!("--api-keys-file={}", keys.path.display()),
        format!("--kafka-brokers={}", kafka_brokers()),
        format!("--schema-registry-url={}", schema_registry_url()),
        "--api-keys-refresh-ms=200".to_owned(),
        "--kafka-health-interval-ms=500".to_owned(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    let mut config = GatewayConfig::try_from_args(args).expect("valid gateway flags");
    config.auth.postgres_url = None;
    config
}

/// A gateway served by `bxb_gateway::run` in this process.
pub struct TestGateway {
    pub url: String,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<anyhow::Result<()>>,
    pub http: reqwest::Client,
}

impl TestGateway {
    pub async fn start(config: GatewayConfig) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(bxb_gateway::run(config, listener, shutdown.clone()));
        Self { url, shutdown, handle, http: reqwest::Client::new() }
    }

    /// Starts and waits until `/readyz` answers 200 (schema registered, Kafka serving the topic).
    pub async fn start_ready(config: GatewayConfig) -> Self {
        let gateway = Self::start(config).await;
        gateway.wait_ready().await;
        gateway
    }

    pub async fn wait_ready(&self) {
        eventually("the gateway to be ready", Duration::from_secs(30), || async {
            let response = self.http.get(format!("{}/readyz", self.url)).send().await.ok()?;
            (response.status() == 200).then_some(())
        })
        .await;
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.url)).send().await.expect("GET")
    }

    /// POSTs JSON with `Authorization: Bearer <key>`.
    pub async fn post(&self, path: &str, key: &str, body: &Value) -> Reply {
        self.post_raw(path, Some(key), "application/json", body.to_string()).await
    }

    pub async fn post_raw(&self, path: &str, key: Option<&str>, content_type: &str, body: String) -> Reply {
        let mut request = self.http.post(format!("{}{path}", self.url)).header("content-type", content_type).body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        Reply::of(request.send().await.expect("POST")).await
    }

    /// Cancels the shutdown token and waits for `run` to return.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.handle).await.expect("the gateway stops").expect("run does not panic")
    }
}

/// Status, `Retry-After` and JSON body of a response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Reply {
    pub async fn of(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
        let text = response.text().await.expect("a body");
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("status {status}: body is not JSON: {text:?}"));
        Self { status, retry_after, body }
    }

    /// Asserts the status and `code` of an error.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!((self.status, self.body["code"].as_str()), (status, Some(code)), "{self:?}");
        assert!(self.body["message"].as_str().is_some_and(|m| !m.is_empty()), "{self:?}");
        assert!(self.body["errors"].is_array(), "{self:?}");
    }

    pub fn assert_accepted(&self, events: u64) {
        assert_eq!((self.status, self.body["accepted"].as_u64()), (202, Some(events)), "{self:?}");
    }
}

/// Reads the records of `topic` from the beginning of every partition.
pub struct TopicReader {
    consumer: StreamConsumer,
    registry: SchemaRegistry,
}

impl TopicReader {
    pub fn new(topic: &EphemeralTopic, partitions: i32) -> Self {
        let consumer: StreamConsumer =
            kafka_config().set("group.id", unique("bxb-gateway-test")).set("enable.auto.commit", "false").create().expect("a consumer");
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment.add_partition_offset(&topic.name, partition, Offset::Beginning).unwrap();
        }
        consumer.assign(&assignment).expect("assign partitions");
        let registry = SchemaRegistry::new(&RegistryArgs::with_url(schema_registry_url())).unwrap();
        Self { consumer, registry }
    }

    /// The next `count` records, failing the test if they do not arrive within 30 s.
    pub async fn read(&self, count: usize) -> Vec<OwnedMessage> {
        let mut records = Vec::with_capacity(count);
        while records.len() < count {
            match tokio::time::timeout(Duration::from_secs(30), self.consumer.recv()).await {
                Ok(Ok(message)) => records.push(message.detach()),
                Ok(Err(e)) => panic!("consuming failed: {e}"),
                Err(_) => panic!("timed out with {} of {count} records", records.len()),
            }
        }
        records
    }

    /// Asserts that no further record arrives within `wait`.
    pub async fn assert_no_more(&self, wait: Duration) {
        if let Ok(Ok(message)) = tokio::time::timeout(wait, self.consumer.recv()).await {
            panic!("unexpected record at offset {} of partition {}", message.offset(), message.partition());
        }
    }

    pub async fn decode(&self, record: &OwnedMessage) -> Event {
        self.registry.decoder().decode(record.payload()).await.expect("a decodable event")
    }
}

/// A topic and a key for one test, the usual starting point.
pub struct Setup {
    pub topic: EphemeralTopic,
    pub keys: KeyFile,
    pub organization_id: Uuid,
    pub key: String,
}

impl Setup {
    pub async fn new(partitions: i32) -> Self {
        bxb_telemetry::init_for_tests();
        let topic = EphemeralTopic::new("gateway", partitions).await;
        let keys = KeyFile::new();
        let organization_id = Uuid::new_v4();
        let key = keys.create(organization_id).key;
        Self { topic, keys, organization_id, key }
    }

    pub fn config(&self, extra: &[&str]) -> GatewayConfig {
        config(&self.topic.name, &self.keys, extra)
    }
}

/// A TCP port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A minimal valid event.
pub fn event_json(transaction_id: &str) -> Value {
    serde_json::json!({"transaction_id": transaction_id, "external_customer_id": "customer-1", "code": "api_calls"})
}

/// A PostgreSQL database of one test holding the `api_keys` table, dropped when the test ends.
pub struct KeyDatabase {
    pub name: String,
    pub url: String,
}

impl KeyDatabase {
    pub async fn create() -> Self {
        use sqlx::Connection;
        let name = unique("bxb_gateway_keys");
        let mut admin = sqlx::PgConnection::connect(&bxb_tests::postgres_url()).await.expect("connect to PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create the test database");
        let base = bxb_tests::postgres_url();
        let (server, _) = base.rsplit_once('/').expect("the URL ends in a database name");
        let db = Self { url: format!("{server}/{name}"), name };
        // Only this suite's migration: the table the gateway reads, as production creates it.
        let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect to the test database");
        sqlx::raw_sql(include_str!("../../schemas/postgres/migrations/20261123000100_gateway_api_keys.sql"))
            .execute(&mut conn)
            .await
            .expect("apply the api_keys migration");
        db
    }

    pub async fn execute(&self, sql: &str, key_id: &str, organization_id: Option<Uuid>, key: Option<&str>) {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&self.url).await.expect("connect to the test database");
        let mut query = sqlx::query(sql).bind(key_id);
        if let Some(org) = organization_id {
            query = query.bind(org);
        }
        if let Some(key) = key {
            query = query.bind(bxb_api_key::digest(key).to_vec());
        }
        query.execute(&mut conn).await.expect("SQL on the key table");
    }
}

impl Drop for KeyDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // On its own runtime: Drop may run inside the test's runtime, which cannot block.
        let dropper = std::thread::spawn(move || {
            use sqlx::Connection;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&bxb_tests::postgres_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await;
                }
            });
        });
        let _ = dropper.join();
    }
}
