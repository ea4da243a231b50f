//! Helpers of the consumer-postgres suite: a PostgreSQL database per test, events and records,
//! and publishing to Kafka the way the gateway does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bxb_consumer::Record;
use bxb_consumer_postgres::{PostgresArgs, PostgresSink};
use bxb_event::registry::{value_subject, EventEncoder, RegistryArgs, SchemaRegistry};
use bxb_event::Event;
use bxb_tests::{kafka_config, postgres_url, schema_registry_url, unique};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

pub const DAY_MS: i64 = 86_400_000;

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A database of its own for one test, so migrations, partitions and advisory locks never meet
/// another test's; dropped (with its connections) when the test ends, pass or fail.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let name = unique("bxb_pg");
        let mut admin = PgConnection::connect(&postgres_url()).await.expect("connect to the shared database");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create test database");
        let base = postgres_url();
        let (server, _) = base.rsplit_once('/').expect("URL ends in a database name");
        Self { url: format!("{server}/{name}"), name }
    }

    pub async fn pool(&self) -> PgPool {
        PgPool::connect(&self.url).await.expect("connect to the test database")
    }

    pub fn args(&self) -> PostgresArgs {
        PostgresArgs::with_url(&self.url)
    }

    /// A started sink on this database: migrations applied, billable metrics loaded.
    pub async fn sink(&self, configure: impl FnOnce(&mut PostgresArgs)) -> PostgresSink {
        let mut args = self.args();
        configure(&mut args);
        PostgresSink::start(args).await.expect("sink starts")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // On its own runtime: Drop may run inside the test's runtime, which cannot block.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Ok(mut admin) = PgConnection::connect(&postgres_url()).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await;
                }
            });
        });
        let _ = dropper.join();
    }
}

pub fn event(organization_id: Uuid, transaction_id: &str, code: &str, timestamp_ms: i64) -> Event {
    Event {
        organization_id,
        transaction_id: transaction_id.to_owned(),
        external_customer_id: "customer-1".into(),
        code: code.to_owned(),
        timestamp_ms,
        properties: r#"{"region":"eu-west-1"}"#.into(),
        value: Some(2.5),
        decimal_value: Some("12.000000000345".parse().unwrap()),
    }
}

pub fn record(event: Event, offset: i64) -> Record {
    Record { event, partition: 0, offset, ingested_at_ms: Some(1_763_900_000_000 + offset) }
}

pub async fn make_billable(pool: &PgPool, organization_id: Uuid, code: &str) {
    sqlx::query("INSERT INTO billable_metrics (organization_id, code) VALUES ($1, $2)")
        .bind(organization_id)
        .bind(code)
        .execute(pool)
        .await
        .expect("insert billable metric");
}

pub async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The rows of one organization as (transaction_id, timestamp ms, kafka_offset), in key order.
pub async fn rows_of(pool: &PgPool, organization_id: Uuid) -> Vec<(String, i64, i64)> {
    sqlx::query_as(
        "SELECT transaction_id, (extract(epoch FROM \"timestamp\") * 1000)::int8, kafka_offset
         FROM events WHERE organization_id = $1 ORDER BY transaction_id, \"timestamp\"",
    )
    .bind(organization_id)
    .fetch_all(pool)
    .await
    .expect("read events")
}

pub async fn partition_names(pool: &PgPool) -> Vec<String> {
    let mut conn = pool.acquire().await.unwrap();
    bxb_consumer_postgres::partitions::list(&mut conn).await.unwrap().into_iter().map(|p| p.name).collect()
}

/// Publishes `events` to `topic` as the gateway does: Avro through the registry, keyed by
/// organization, with the ingestion-time header.
pub async fn publish(topic: &str, events: &[Event]) {
    let registry = SchemaRegistry::new(&RegistryArgs::with_url(schema_registry_url())).unwrap();
    let schema_id = registry.register_event_schema(&value_subject(topic)).await.expect("register schema");
    let encoder = EventEncoder::new(schema_id);
    let producer: FutureProducer = kafka_config().set("acks", "all").set("enable.idempotence", "true").create().unwrap();
    for event in events {
        let key = event.kafka_key();
        let value = encoder.encode(event);
        let ingested_at = now_ms().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: bxb_kafka::headers::INGESTED_AT_MS, value: Some(ingested_at.as_bytes()) });
        producer
            .send(FutureRecord::to(topic).key(&key).payload(&value).headers(headers), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce event");
    }
}

/// The offsets `group` has committed on `topic`, per partition (`None` when nothing is committed).
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = kafka_config().set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
    (0..partitions)
        .map(|p| match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect()
}

/// The end offsets of `topic`, per partition.
pub fn end_offsets(topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = kafka_config().set("group.id", unique("watermarks")).create().unwrap();
    (0..partitions)
        .map(|p| consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).expect("watermarks").1)
        .collect()
}
