//! Helpers for the integration suites: where the real services and tools are, names no other test uses,
//! and topics that live for one test.
//!
//! Service addresses come from the `BXB_*` variables that `./dev/up` and `./dev/test` write to
//! `.dev/env`; the defaults are the local stack's ports.

pub mod databases;
pub mod dead_letters;
pub mod kafka;
pub mod registry_stand_in;
pub mod tools;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bxb_kafka::KafkaArgs;
use rdkafka::ClientConfig;

pub fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

pub fn kafka_brokers() -> String {
    env_or("BXB_KAFKA_BROKERS", bxb_kafka::DEFAULT_BROKERS)
}

pub fn kafka_args() -> KafkaArgs {
    KafkaArgs::plaintext(kafka_brokers())
}

pub fn kafka_config() -> ClientConfig {
    kafka_args().client_config().expect("plaintext Kafka settings are valid")
}

pub fn schema_registry_url() -> String {
    env_or("BXB_SCHEMA_REGISTRY_URL", bxb_event::registry::DEFAULT_REGISTRY_URL)
}

pub fn postgres_url() -> String {
    env_or("BXB_POSTGRES_URL", bxb_consumer_postgres::DEFAULT_POSTGRES_URL)
}

pub fn clickhouse_url() -> String {
    env_or("BXB_CLICKHOUSE_URL", bxb_consumer_clickhouse::DEFAULT_CLICKHOUSE_URL)
}

/// Consumer settings for a test: its own topic, dead-letter topic and group, short waits and
/// backoffs so tests stay quick. Suites set the batch size they need on top.
pub fn consumer_args(topic: &str, dlq_topic: &str, group: &str) -> bxb_consumer::ConsumerArgs {
    let registry = bxb_event::registry::RegistryArgs::with_url(schema_registry_url());
    let mut args = bxb_consumer::ConsumerArgs::new(kafka_args(), registry);
    args.group_id = Some(group.to_owned());
    args.topic = topic.to_owned();
    args.dlq_topic = dlq_topic.to_owned();
    args.batch_max_wait_ms = 100;
    args.retry_initial_backoff_ms = 50;
    args.retry_max_backoff_ms = 500;
    args
}

/// A name unique to this test run and call, safe for topics, groups, tables and databases.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}_{}_{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed), rand::random::<u32>())
}

/// A topic created for one test and deleted when dropped.
pub struct EphemeralTopic {
    pub name: String,
}

impl EphemeralTopic {
    pub async fn new(prefix: &str, partitions: i32) -> Self {
        let name = unique(prefix);
        bxb_kafka::admin::ensure_topic(&kafka_config(), &name, partitions, 1, &[]).await.expect("create test topic");
        Self { name }
    }
}

impl Drop for EphemeralTopic {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Best effort, off the test's runtime: a leftover topic only costs disk.
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(runtime) = runtime {
                let _ = runtime.block_on(bxb_kafka::admin::delete_topic(&kafka_config(), &name));
            }
        });
    }
}

/// Polls `check` until it returns `Some`, failing the test with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
