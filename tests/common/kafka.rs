//! Publishing events the way the gateway does, and reading a group's progress.

use std::collections::BTreeMap;
use std::time::Duration;

use bxb_event::registry::{value_subject, EventEncoder, RegistryArgs, SchemaRegistry};
use bxb_event::Event;
use bxb_kafka::admin::{group_positions, PartitionPosition};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::{eventually, kafka_config, schema_registry_url};

pub use bxb_event::clock::now_ms;

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

    /// Publishes to one partition, as a producer that places records itself does (a Java
    /// client's partitioner, or placement after the topic grew). Returns the offsets.
    pub async fn publish_to(&self, partition: i32, events: &[Event]) -> Vec<i64> {
        let mut offsets = Vec::with_capacity(events.len());
        for event in events {
            let headers = bxb_kafka::headers::event_headers(&tracing::info_span!("test.publish"), now_ms());
            let value = self.encoder.encode(event);
            let key = event.kafka_key();
            let record = FutureRecord::to(&self.topic).key(&key).payload(&value).headers(headers).partition(partition);
            let delivery =
                self.producer.send(record, Duration::from_secs(30)).await.map_err(|(e, _)| e).expect("the record is acknowledged");
            offsets.push(delivery.offset);
        }
        offsets
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

/// Where `group` stands on every partition of `topic` (read without joining the group).
async fn positions(group: &str, topic: &str) -> Vec<PartitionPosition> {
    let (group, topic) = (group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || group_positions(&kafka_config(), &group, &topic, Duration::from_secs(10)).expect("group positions"))
        .await
        .expect("no panic")
}

/// The offsets `group` has committed on `topic`, per partition that has one.
pub async fn committed_offsets(group: &str, topic: &str) -> BTreeMap<i32, i64> {
    positions(group, topic).await.into_iter().filter_map(|p| Some((p.partition, p.committed?))).collect()
}

/// One past the last record of every partition of `topic` that holds records.
pub async fn end_offsets(topic: &str) -> BTreeMap<i32, i64> {
    // Watermarks do not depend on the group; this one never commits anything.
    positions("bxb-tests-watermarks", topic).await.into_iter().filter(|p| p.high > 0).map(|p| (p.partition, p.high)).collect()
}

/// Waits until `group` has committed the end of every non-empty partition of `topic`.
pub async fn wait_until_committed(group: &str, topic: &str, timeout: Duration) {
    let end = end_offsets(topic).await;
    eventually(&format!("group {group} to commit {end:?} on {topic}"), timeout, || async {
        let committed = committed_offsets(group, topic).await;
        end.iter().all(|(p, o)| committed.get(p) == Some(o)).then_some(())
    })
    .await;
}
