//! Hostile, broken and misconfigured input to the consumers, against the real services: writer
//! schemas made to crash or exhaust a reader, a key that is not the payload's organization, a
//! registry that answers 404, 500, 401 or garbage, a registry that goes away while records wait
//! for it, and a stream of garbage. The consumer never crashes or stalls, and no good record is
//! dead-lettered or lost.

#[path = "consumer_clickhouse/harness.rs"]
#[allow(dead_code, unused_imports)]
mod harness;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bxb_event::avro::{self, EVENT_SCHEMA_JSON};
use bxb_event::registry::{frame, value_subject};
use bxb_event::Event;
use bxb_kafka::headers;
use bxb_tests::dead_letters::read_dead_letters;
use bxb_tests::kafka::end_offsets;
use bxb_tests::registry_stand_in::{Answer, RegistryStandIn};
use bxb_tests::{eventually, kafka_config, schema_registry_url, unique};
use harness::{Pipeline, Proxy, Running, WAIT};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use uuid::Uuid;

/// A record named like the event record whose only field is the next one of itself: a chain of
/// ~400 000 of them is a 400 KB record, one byte per level.
const RECURSIVE_EVENT: &str =
    r#"{"type":"record","name":"Event","namespace":"dev.bxb.events","fields":[{"name":"next","type":["null","Event"]}]}"#;

/// The event schema with one more field in front of the others.
fn event_schema_with_field_in_front(name: &str, field_type: &str) -> String {
    let with = EVENT_SCHEMA_JSON.replacen(r#""fields": ["#, &format!(r#""fields": [ {{"name": "{name}", "type": {field_type}}},"#), 1);
    assert_ne!(with, EVENT_SCHEMA_JSON);
    with
}

/// A newer version of the event schema: an optional field added in front, with a default.
fn newer_event_schema() -> String {
    event_schema_with_field_in_front("region", r#"["null", "string"], "default": null"#)
}

/// The datum of `event` in [`newer_event_schema`] (region null).
fn newer_datum(event: &Event) -> Vec<u8> {
    [vec![0], avro::to_datum(event)].concat()
}

fn long(n: i64) -> Vec<u8> {
    let z = ((n << 1) ^ (n >> 63)) as u64;
    let mut out = Vec::new();
    let mut z = z;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
    out
}

fn events_of(organization_id: Uuid, prefix: &str, count: usize) -> Vec<Event> {
    (0..count)
        .map(|i| Event {
            organization_id,
            transaction_id: format!("{prefix}-{i}"),
            external_customer_id: "customer-1".into(),
            code: "api_calls".into(),
            timestamp_ms: 1_763_900_000_000 + i as i64 * 1_000,
            properties: format!(r#"{{"i":{i}}}"#),
            value: Some(i as f64),
            decimal_value: None,
        })
        .collect()
}

/// A producer of any bytes with any key or none, as a careless or hostile direct producer is.
struct DirectProducer {
    topic: String,
    producer: FutureProducer,
}

impl DirectProducer {
    fn new(topic: &str) -> Self {
        let producer = kafka_config().set("acks", "all").set("enable.idempotence", "true").create().expect("producer");
        Self { topic: topic.to_owned(), producer }
    }

    async fn send(&self, key: Option<&[u8]>, value: &[u8]) {
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic).payload(value);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("the record is acknowledged");
    }
}

async fn register(pipeline: &Pipeline, schema: &str) -> u32 {
    pipeline
        .publisher
        .registry
        .register_schema(&value_subject(&unique("hostile_subject")), schema)
        .await
        .expect("the registry takes the schema")
}

async fn readiness_fails_on(consumer: &Running, check: &str) {
    eventually(&format!("/readyz to report {check}"), WAIT, || async {
        let (status, body) = consumer.get("/readyz").await;
        (status == 503 && body.contains(check)).then_some(())
    })
    .await;
}

async fn dead_letter_count(pipeline: &Pipeline) -> i64 {
    end_offsets(&pipeline.dlq.name).await.values().sum()
}

fn real_registry_addr() -> SocketAddr {
    let url = schema_registry_url();
    let host = url.trim_start_matches("http://").split('/').next().expect("a host");
    host.parse().expect("the registry URL is http://ip:port/...")
}

fn real_registry_path() -> String {
    let url = schema_registry_url();
    url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_writer_schemas_and_a_key_mismatch_are_dead_lettered_and_the_good_records_written() {
    let pipeline = Pipeline::new().await;
    let producer = DirectProducer::new(&pipeline.topic.name);
    let org = Uuid::new_v4();
    let key = org.hyphenated().to_string();
    let good = events_of(org, "good", 2);
    let encoder = pipeline.publisher.encoder;

    let recursive_id = register(&pipeline, RECURSIVE_EVENT).await;
    let recursive = frame(recursive_id, &[vec![2u8; 400_000], vec![0]].concat());

    let mut deep_type = r#""long""#.to_owned();
    for level in 0..100 {
        deep_type = if level % 2 == 0 {
            format!(r#"{{"type":"array","items":{deep_type}}}"#)
        } else {
            format!(r#"{{"type":"map","values":{deep_type}}}"#)
        };
    }
    let deep_id = register(&pipeline, &event_schema_with_field_in_front("deep", &deep_type)).await;
    // An empty map in front of the event's fields: small, valid, but nested 100 deep.
    let deep = frame(deep_id, &[vec![0], avro::to_datum(&events_of(org, "deep", 1)[0])].concat());

    let amplifier_id =
        register(&pipeline, &event_schema_with_field_in_front("blowup", r#"{"type":"array","items":{"type":"array","items":"null"}}"#))
            .await;
    // 200 arrays of 50 000 nulls each in about a kilobyte: ten million values for a reader that
    // materialises them.
    let mut blowup = long(200);
    for _ in 0..200 {
        blowup.extend(long(50_000));
        blowup.extend(long(0));
    }
    blowup.extend(long(0));
    let amplifier = frame(amplifier_id, &[blowup, avro::to_datum(&events_of(org, "amplified", 1)[0])].concat());

    let invoice_id = register(&pipeline, include_str!("fixtures/clickhouse/other_record.avsc")).await;
    let invoice = frame(invoice_id, &[&[14u8][..], &1.5f64.to_le_bytes()].concat());

    let mismatched = encoder.encode(&events_of(org, "mismatched", 1)[0]);
    let keyless = encoder.encode(&events_of(org, "keyless", 1)[0]);
    let other_key = Uuid::new_v4().hyphenated().to_string();
    let uppercase_key = key.to_uppercase();
    let uppercase = encoder.encode(&events_of(org, "uppercase", 1)[0]);

    // (what it is, its Kafka key, its value, the dead-letter reason it must get)
    #[allow(clippy::type_complexity, reason = "a table of cases, its columns named above")]
    let cases: Vec<(&str, Option<&[u8]>, &[u8], &str)> = vec![
        ("a recursive writer schema, 400 KB deep", Some(key.as_bytes()), &recursive, "incompatible_schema"),
        ("a writer schema nested 100 deep", Some(key.as_bytes()), &deep, "incompatible_schema"),
        ("a kilobyte of nested arrays of nulls", Some(key.as_bytes()), &amplifier, "budget_exceeded"),
        ("another record type", Some(key.as_bytes()), &invoice, "incompatible_schema"),
        ("the key of another organization", Some(other_key.as_bytes()), &mismatched, "key_mismatch"),
        ("no key", None, &keyless, "key_mismatch"),
        ("the organization in upper case", Some(uppercase_key.as_bytes()), &uppercase, "key_mismatch"),
    ];
    producer.send(Some(key.as_bytes()), &encoder.encode(&good[0])).await;
    for (_, key, value, _) in &cases {
        producer.send(*key, value).await;
    }
    producer.send(Some(key.as_bytes()), &encoder.encode(&good[1])).await;

    let consumer = pipeline.start_default().await;
    pipeline.wait_for_rows(2).await;
    pipeline.wait_until_all_committed(&pipeline.group).await;
    let written: Vec<String> = pipeline.rows().await.into_iter().map(|r| r.transaction_id).collect();
    assert_eq!(written, ["good-0", "good-1"]);

    let letters = read_dead_letters(&pipeline.dlq.name, cases.len(), WAIT).await;
    for (what, key, value, reason) in &cases {
        let letter = letters.iter().find(|l| l.value == *value).unwrap_or_else(|| panic!("{what}: no dead letter"));
        assert_eq!(letter.header(headers::DLQ_REASON).as_deref(), Some(*reason), "{what}: {:?}", letter.header(headers::DLQ_ERROR));
        assert!(letter.header(headers::DLQ_ERROR).is_some_and(|e| !e.is_empty()), "{what}: an error message");
        assert_eq!(letter.key.as_deref(), *key, "{what}: the original key");
    }
    assert!(!consumer.task.is_finished(), "the consumer is still running");
    let (status, _) = consumer.get("/readyz").await;
    assert_eq!(status, 200);
    consumer.stop().await.expect("a clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_answers_404_500_401_or_garbage_dead_letters_nothing_and_the_consumer_heals() {
    let pipeline = Pipeline::new().await;
    let stand_in = RegistryStandIn::start(Answer::Forward).await;
    let mut config = pipeline.config(&pipeline.group);
    config.consumer.registry.url = stand_in.url();
    let consumer = pipeline.start(config).await;
    let org = Uuid::new_v4();
    pipeline.produce(&events_of(org, "before", 5)).await;
    pipeline.wait_for_rows(5).await;
    pipeline.wait_until_all_committed(&pipeline.group).await;
    let committed_before = pipeline.committed(&pipeline.group).await;

    // Records of a newer writer version, whose schema the consumer has not seen yet.
    let newer_id = register(&pipeline, &newer_event_schema()).await;
    let key = org.hyphenated().to_string();
    let mut first = true;
    for answer in [Answer::NotFound, Answer::ServerError, Answer::Unauthorized, Answer::Garbage] {
        stand_in.answer(answer);
        let asked = stand_in.requests();
        if first {
            for event in events_of(org, "later", 10) {
                pipeline.produce_raw(&key, &frame(newer_id, &newer_datum(&event)), Default::default()).await;
            }
            first = false;
        }
        eventually(&format!("the consumer to ask the registry ({answer:?})"), WAIT, || async {
            (stand_in.requests() > asked).then_some(())
        })
        .await;
        // Longer than a batch's wait and a write: what would be dead-lettered would be by now.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(dead_letter_count(&pipeline).await, 0, "{answer:?}: nothing is dead-lettered");
        assert_eq!(
            pipeline.committed(&pipeline.group).await,
            committed_before,
            "{answer:?}: nothing past the last good record is committed"
        );
        assert_eq!(pipeline.row_count().await, 5);
        readiness_fails_on(&consumer, "schema_registry").await;
        // Asked again: a failed lookup is not cached.
        eventually(&format!("the consumer to ask the registry again ({answer:?})"), WAIT, || async {
            (stand_in.requests() >= asked + 2).then_some(())
        })
        .await;
    }
    stand_in.answer(Answer::Forward);
    pipeline.wait_for_rows(15).await;
    pipeline.wait_until_all_committed(&pipeline.group).await;
    assert_eq!(dead_letter_count(&pipeline).await, 0);
    eventually("/readyz to be 200 again", WAIT, || async { (consumer.get("/readyz").await.0 == 200).then_some(()) }).await;
    let (_, metrics) = consumer.get("/metrics").await;
    assert!(metrics.contains("bxb_consumer_schema_lookup_failures_total"), "lookup failures are counted");
    consumer.stop().await.expect("a clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_garbage_trips_the_poison_breaker_and_nothing_past_it_is_committed() {
    let pipeline = Pipeline::new().await;
    let org = Uuid::new_v4();
    let key = org.hyphenated().to_string();
    pipeline.produce(&events_of(org, "good", 2)).await;
    // A producer writing JSON into an Avro topic; default breaker: more than 100 of the last 1 000.
    for i in 0..300 {
        pipeline.produce_raw(&key, format!(r#"{{"transaction_id":"json-{i}"}}"#).as_bytes(), Default::default()).await;
    }
    pipeline.produce(&events_of(org, "after", 1)).await;

    let consumer = pipeline.start_default().await;
    let outcome = tokio::time::timeout(WAIT, consumer.task).await.expect("the breaker stops the consumer").expect("no panic");
    let error = outcome.expect_err("a tripped breaker is fatal").to_string();
    assert!(error.contains("poison breaker"), "{error}");
    let committed: i64 = pipeline.committed(&pipeline.group).await.values().sum();
    assert!(committed <= 2 + 100, "committed {committed}: nothing past the 101st poison record");
    let dead = dead_letter_count(&pipeline).await;
    assert!(dead <= 100, "{dead} dead letters: at most the breaker's limit");
    let rows = pipeline.row_count().await;
    assert!(rows <= 2, "{rows} rows: at most the two good records before the garbage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_pauses_the_consumer_which_serves_rebalances_and_carries_on_by_itself() {
    let pipeline = Pipeline::new().await;
    let mut proxy = Proxy::start_to(real_registry_addr()).await;
    let mut config = pipeline.config(&pipeline.group);
    config.consumer.registry.url = format!("{}{}", proxy.url(), real_registry_path());
    config.consumer.registry.timeout_ms = 1_000;
    let consumer = pipeline.start(config).await;
    let org = Uuid::new_v4();
    let key = org.hyphenated().to_string();
    pipeline.produce(&events_of(org, "first", 5)).await;
    pipeline.wait_for_rows(5).await;
    pipeline.wait_until_all_committed(&pipeline.group).await;

    proxy.close();
    let newer_id = register(&pipeline, &newer_event_schema()).await;
    pipeline.produce(&events_of(org, "before-outage", 5)).await;
    for event in events_of(org, "newer", 5) {
        pipeline.produce_raw(&key, &frame(newer_id, &newer_datum(&event)), Default::default()).await;
    }
    pipeline.produce(&events_of(org, "after-newer", 5)).await;

    // What came before the first record the registry must resolve is written and committed.
    pipeline.wait_for_rows(10).await;
    let partition = *end_offsets(&pipeline.topic.name).await.keys().next().expect("one partition holds the records");
    eventually("the commit up to the first record of the newer schema", WAIT, || async {
        (pipeline.committed(&pipeline.group).await.get(&partition) == Some(&10)).then_some(())
    })
    .await;
    readiness_fails_on(&consumer, "schema_registry").await;

    // A second member joins: it gets partitions only if the consumer serves the rebalance.
    let member: Arc<StreamConsumer> = Arc::new(
        kafka_config()
            .set("group.id", &pipeline.group)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // If its leave is lost, its partitions come back within this, not librdkafka's 45 s.
            .set("session.timeout.ms", "6000")
            .create()
            .expect("a second member"),
    );
    member.subscribe(&[&pipeline.topic.name]).unwrap();
    let polling = tokio::spawn({
        let member = member.clone();
        async move {
            loop {
                let _ = member.recv().await;
            }
        }
    });
    eventually("the second member to be given partitions", Duration::from_secs(30), || async {
        member.assignment().ok().filter(|a| a.count() > 0).map(drop)
    })
    .await;
    polling.abort();
    let _ = polling.await;
    let member = Arc::try_unwrap(member).unwrap_or_else(|_| panic!("the member is not shared any more"));
    // Leaves the group: its partitions, possibly the one whose records wait, go back to the consumer.
    member.unsubscribe();
    tokio::task::spawn_blocking(move || drop(member)).await.unwrap();
    assert_eq!(pipeline.row_count().await, 10);

    proxy.open().await;
    pipeline.wait_for_rows(20).await;
    pipeline.wait_until_all_committed(&pipeline.group).await;
    assert_eq!(dead_letter_count(&pipeline).await, 0);
    eventually("/readyz to be 200 again", WAIT, || async { (consumer.get("/readyz").await.0 == 200).then_some(()) }).await;
    consumer.stop().await.expect("a clean shutdown");
}
