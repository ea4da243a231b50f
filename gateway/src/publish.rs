//! Events to Kafka: one shared idempotent producer, every record of a request enqueued in order,
//! then every delivery report awaited. A request is only acknowledged when Kafka holds all of
//! its events (`acks=all`).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bxb_event::registry::EventEncoder;
use bxb_event::Event;
use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::config::GatewayConfig;
use crate::error::{EventError, GatewayError};

/// The producer's request size cap: above any record BXB_MAX_RECORD_BYTES allows (at most
/// 1 000 000 bytes of key and value, plus small headers) and below the broker's default
/// `message.max.bytes` of 1 048 588.
const PRODUCER_MESSAGE_MAX_BYTES: &str = "1048576";
/// How much longer than `message.timeout.ms` the gateway waits for delivery reports before it
/// answers 503 itself. librdkafka times messages out on a periodic scan and, with idempotence,
/// can hold reports of messages caught in a broker disconnect longer (a 503 took 14.8 s with a
/// 10 s timeout in the chaos run); the client's answer must not depend on that.
const DELIVERY_REPORT_GRACE: Duration = Duration::from_millis(250);
/// Pause between attempts to enqueue into a full producer queue.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);

/// The producer settings of the gateway on top of the connection settings of `KafkaArgs`.
pub fn producer_config(config: &GatewayConfig) -> anyhow::Result<ClientConfig> {
    let producer = &config.producer;
    let mut client = config.kafka.client_config()?;
    client
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", producer.compression.as_str())
        .set("linger.ms", producer.linger_ms.to_string())
        .set("message.timeout.ms", producer.delivery_timeout_ms.to_string())
        .set("queue.buffering.max.messages", producer.queue_max_messages.to_string())
        .set("message.max.bytes", PRODUCER_MESSAGE_MAX_BYTES)
        .set("client.id", "bxb-gateway");
    Ok(client)
}

/// Publishes the events of requests. Cheap to share: the producer is reference-counted.
pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    /// Set once the event schema is registered; until then nothing can be encoded.
    encoder: Arc<OnceLock<EventEncoder>>,
    max_record_bytes: usize,
    enqueue_timeout: Duration,
    delivery_timeout: Duration,
}

impl Publisher {
    pub fn new(config: &GatewayConfig, encoder: Arc<OnceLock<EventEncoder>>) -> anyhow::Result<Self> {
        let producer: FutureProducer = producer_config(config)?.create()?;
        Ok(Self {
            producer,
            topic: config.events_topic.clone(),
            encoder,
            max_record_bytes: config.limits.max_record_bytes,
            enqueue_timeout: Duration::from_millis(config.producer.enqueue_timeout_ms),
            delivery_timeout: Duration::from_millis(config.producer.delivery_timeout_ms),
        })
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Encodes every event, checks every record size, then publishes all of them and waits for
    /// every delivery report. Nothing is sent if any record is too large.
    pub async fn publish(&self, events: &[Event], headers: &OwnedHeaders) -> Result<(), GatewayError> {
        let encoder = self.encoder.get().ok_or(GatewayError::SchemaNotRegistered)?;
        let Some(first) = events.first() else { return Ok(()) };
        // Every event of a request belongs to the key's organization: one key for all records.
        let key = first.kafka_key();
        let payloads = EncodedBatch::encode(encoder, events);
        self.check_record_sizes(&payloads, key.len())?;

        let started = Instant::now();
        let mut deliveries = Vec::with_capacity(events.len());
        let mut enqueue_error = None;
        for payload in payloads.iter() {
            let record = FutureRecord::to(&self.topic).key(&key).payload(payload).headers(headers.clone());
            match self.enqueue(record).await {
                Ok(delivery) => deliveries.push(delivery),
                Err(error) => {
                    enqueue_error = Some(error);
                    break;
                }
            }
        }
        drop(payloads);
        metrics::gauge!("bxb_gateway_producer_queue_messages").set(f64::from(self.producer.in_flight_count()));
        // Wait for what was enqueued even when the rest failed, but never past the delivery
        // timeout: a report arriving later belongs to a request already answered 503, whose
        // client retries (the stores count a transaction id once).
        let reports = tokio::time::timeout(self.delivery_timeout + DELIVERY_REPORT_GRACE, join_all(deliveries)).await;
        metrics::histogram!("bxb_gateway_delivery_duration_seconds").record(started.elapsed().as_secs_f64());
        if let Some(error) = enqueue_error {
            return Err(error);
        }
        let Ok(reports) = reports else {
            return Err(GatewayError::KafkaUnavailable(format!("no delivery report within {} ms", self.delivery_timeout.as_millis())));
        };
        for report in reports {
            match report {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(GatewayError::KafkaUnavailable(error.to_string())),
                Err(_canceled) => return Err(GatewayError::KafkaUnavailable("the producer was shut down".into())),
            }
        }
        Ok(())
    }

    fn check_record_sizes(&self, payloads: &EncodedBatch, key_bytes: usize) -> Result<(), GatewayError> {
        // Headers are small and bounded (trace context, a timestamp): the producer cap leaves room.
        let limit = self.max_record_bytes;
        let errors: Vec<EventError> = payloads
            .iter()
            .enumerate()
            .filter(|(_, payload)| payload.len() + key_bytes > limit)
            .map(|(index, payload)| {
                EventError::new(
                    index,
                    "",
                    "record_too_large",
                    format!("the event encodes to {} bytes, more than the record limit of {limit} bytes", payload.len() + key_bytes),
                )
            })
            .collect();
        if errors.is_empty() { Ok(()) } else { Err(GatewayError::RecordTooLarge { errors }) }
    }

    /// Enqueues one record, waiting up to the enqueue timeout while the producer queue is full.
    async fn enqueue(&self, mut record: FutureRecord<'_, String, [u8]>) -> Result<DeliveryFuture, GatewayError> {
        let deadline = Instant::now() + self.enqueue_timeout;
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    if Instant::now() >= deadline {
                        return Err(GatewayError::KafkaQueueFull);
                    }
                    record = returned;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((error, _)) => return Err(GatewayError::KafkaUnavailable(error.to_string())),
            }
        }
    }

    /// Delivers what is still queued, waiting at most `timeout`; used on shutdown.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout))
            .await
            .unwrap_or(Err(KafkaError::Canceled))
    }
}

/// The record values of a request in one buffer: one allocation per request, not per event.
/// librdkafka copies each value when it is enqueued, so the buffer lives only until then.
struct EncodedBatch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl EncodedBatch {
    fn encode(encoder: &EventEncoder, events: &[Event]) -> Self {
        let mut scratch = Vec::with_capacity(256);
        let mut bytes = Vec::with_capacity(events.len() * 256);
        let mut ends = Vec::with_capacity(events.len());
        for event in events {
            encoder.encode_into(event, &mut scratch);
            bytes.extend_from_slice(&scratch);
            ends.push(bytes.len());
        }
        Self { bytes, ends }
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(self.ends.iter().copied()).map(|(start, end)| &self.bytes[start..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_holds_exactly_the_encoded_events() {
        let event = |tx: &str, properties: &str| Event {
            organization_id: uuid::Uuid::from_u128(7),
            transaction_id: tx.into(),
            external_customer_id: "c".into(),
            code: "api_calls".into(),
            timestamp_ms: 1_700_000_000_000,
            properties: properties.into(),
            value: None,
            decimal_value: None,
        };
        let events = [event("a", "{}"), event("bb", &format!(r#"{{"x":"{}"}}"#, "y".repeat(1_000))), event("c", "{}")];
        let encoder = EventEncoder::new(3);
        let batch = EncodedBatch::encode(&encoder, &events);
        let encoded: Vec<&[u8]> = batch.iter().collect();
        assert_eq!(encoded.len(), 3);
        for (bytes, event) in encoded.iter().zip(&events) {
            assert_eq!(*bytes, encoder.encode(event).as_slice());
        }
    }
}
