//! Publishing events the way the gateway does, and reading a group's progress.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bxb_event::registry::{value_subject, EventEncoder, RegistryArgs, SchemaRegistry};
use bxb_event::Event;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::{eventually, kafka_config, schema_registry_url};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as i64
}

/// Publishes to one topic like the gateway: Avro through the registry (the event schema
/// registered under `<topic>-value`), key = organization, trace and ingestion-time headers,
/// `acks=all` with idempotence.
pub struct EventPublisher {
    pub topic: String,
    pub registry: SchemaRegistry,
    pub encoder: EventEncoder,
    producer: FutureProducer,
}

impl EventPublisher {
    pub async fn new(topic: &str) -> Self {
        let registry = SchemaRegistry::new(&RegistryArgs::with_url(schema_registry_url())).expect("registry settings");
        let schema_id = registry.register_event_schema(&value_subject(topic)).await.expect("register the event schema");
        let producer = kafka_config().set("acks", "all").set("enable.idempotence", "true").create().expect("producer");
        Self { topic: topic.to_owned(), registry, encoder: EventEncoder::new(schema_id), producer }
    }

    pub async fn publish(&self, events: &[Event]) {
        for event in events {
            let span = tracing::info_span!("test.publish");
            let headers = bxb_kafka::headers::event_headers(&span, now_ms());
            self.publish_raw(&event.kafka_key(), &self.encoder.encode(event), headers).await;
        }
    }

    /// Publishes any bytes, acknowledged by all in-sync replicas.
    pub async fn publish_raw(&self, key: &str, value: &[u8], headers: OwnedHeaders) {
        self.producer
            .send(FutureRecord::to(&self.topic).key(key).payload(value).headers(headers), Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("the record is acknowledged");
    }
}

/// The offsets `group` has committed on `topic`, per partition that has one.
pub async fn committed_offsets(group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let (group, topic) = (group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka_config().set("group.id", &group).create().expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).expect("committed offsets");
        committed
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((e.partition(), o)),
                _ => None,
            })
            .collect()
    })
    .await
    .expect("no panic")
}

/// One past the last record of every partition of `topic` that holds records.
pub async fn end_offsets(topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = kafka_config().create().expect("consumer");
        (0..partitions)
            .map(|p| (p, consumer.fetch_watermarks(&topic, p, Duration::from_secs(10)).expect("watermarks").1))
            .filter(|(_, high)| *high > 0)
            .collect()
    })
    .await
    .expect("no panic")
}

/// Waits until `group` has committed the end of every non-empty partition of `topic`.
pub async fn wait_until_committed(group: &str, topic: &str, partitions: i32, timeout: Duration) {
    let end = end_offsets(topic, partitions).await;
    eventually(&format!("group {group} to commit {end:?} on {topic}"), timeout, || async {
        let committed = committed_offsets(group, topic, partitions).await;
        end.iter().all(|(p, o)| committed.get(p) == Some(o)).then_some(())
    })
    .await;
}
