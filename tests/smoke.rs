//! The local stack is real: each service answers a Rust client the way production code uses it.

use std::time::Duration;

use bxb_event::registry::{value_subject, EventEncoder, RegistryArgs, SchemaRegistry};
use bxb_event::Event;
use bxb_tests::{clickhouse_url, kafka_config, postgres_url, schema_registry_url, unique, EphemeralTopic};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

fn sample_event() -> Event {
    Event {
        timestamp_ms: 1_763_900_000_123,
        properties: r#"{"region":"eu-west-1"}"#.into(),
        value: Some(3.5),
        decimal_value: Some("0.000000000001".parse().unwrap()),
        ..bxb_event::test_support::event_of(Uuid::new_v4(), unique("tx"))
    }
}

#[tokio::test]
async fn kafka_produces_and_consumes_on_a_fresh_topic() {
    let topic = EphemeralTopic::new("smoke", 3).await;
    let producer: FutureProducer = kafka_config().set("acks", "all").create().unwrap();
    for i in 0..10 {
        let key = format!("key-{i}");
        let payload = format!("payload-{i}");
        producer
            .send(FutureRecord::to(&topic.name).key(&key).payload(&payload), Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("delivered");
    }
    let consumer: StreamConsumer =
        kafka_config().set("group.id", unique("smoke-group")).set("auto.offset.reset", "earliest").create().unwrap();
    consumer.subscribe(&[&topic.name]).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 10 {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv()).await.expect("a message within 30 s").unwrap();
        seen.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
    }
    seen.sort();
    let mut expected: Vec<_> = (0..10).map(|i| format!("payload-{i}")).collect();
    expected.sort();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn the_registry_registers_and_serves_the_event_schema() {
    let registry = SchemaRegistry::new(&RegistryArgs::with_url(schema_registry_url())).unwrap();
    let subject = value_subject(&unique("smoke-topic"));
    let id = registry.register_event_schema(&subject).await.expect("registered");
    // Registering the same schema again is idempotent.
    assert_eq!(registry.register_event_schema(&subject).await.unwrap(), id);

    let event = sample_event();
    let bytes = EventEncoder::new(id).encode(&event);
    let decoded = registry.decoder().decode(Some(&bytes)).await.expect("decoded through the registry");
    assert_eq!(decoded, event);

    // The compatibility rule the gateway relies on is really in force: an incompatible change
    // (a new field without a default) is refused.
    let incompatible =
        bxb_event::avro::EVENT_SCHEMA_JSON.replacen(r#""fields": ["#, r#""fields": [ {"name": "required_new", "type": "string"},"#, 1);
    let refused = registry.register_schema(&subject, &incompatible).await;
    assert!(refused.is_err(), "BACKWARD compatibility must refuse a field without a default");
}

#[tokio::test]
async fn postgres_answers_sqlx() {
    let pool = sqlx::PgPool::connect(&postgres_url()).await.expect("connect");
    let table = unique("smoke");
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query(&format!("CREATE TEMPORARY TABLE {table} (id bigint, note text)")).execute(&mut *conn).await.unwrap();
    sqlx::query(&format!("INSERT INTO {table} VALUES ($1, $2)")).bind(7_i64).bind("seven").execute(&mut *conn).await.unwrap();
    let (id, note): (i64, String) = sqlx::query_as(&format!("SELECT id, note FROM {table}")).fetch_one(&mut *conn).await.unwrap();
    assert_eq!((id, note.as_str()), (7, "seven"));
}

#[derive(Debug, PartialEq, clickhouse::Row, serde::Serialize, serde::Deserialize)]
struct SmokeRow {
    id: u64,
    #[serde(with = "clickhouse::serde::uuid")]
    organization_id: Uuid,
    note: String,
}

#[tokio::test]
async fn clickhouse_inserts_and_selects() {
    let database = unique("smoke");
    // The Debian ClickHouse (18.16) predates the crate's schema validation queries.
    let admin = clickhouse::Client::default().with_url(clickhouse_url()).with_validation(false);
    admin.query(&format!("CREATE DATABASE {database}")).execute().await.unwrap();
    let client = admin.clone().with_database(&database);
    client.query("CREATE TABLE t (id UInt64, organization_id UUID, note String) ENGINE = MergeTree ORDER BY id").execute().await.unwrap();
    let rows: Vec<SmokeRow> = (0..1000).map(|id| SmokeRow { id, organization_id: Uuid::new_v4(), note: format!("row {id}") }).collect();
    let mut insert = client.insert::<SmokeRow>("t").await.unwrap();
    for row in &rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
    let back: Vec<SmokeRow> = client.query("SELECT ?fields FROM t ORDER BY id").fetch_all().await.unwrap();
    assert_eq!(back, rows);
    admin.query(&format!("DROP DATABASE {database}")).execute().await.unwrap();
}
