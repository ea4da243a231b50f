//! Events to Kafka: one shared idempotent producer, every record of a call enqueued in order,
//! then every delivery report awaited. A call only succeeds when Kafka holds all of its events
//! (`acks=all`).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bxb_event::ingest::{Problem, ProblemList};
use bxb_event::registry::EventEncoder;
use bxb_event::Event;
use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;

use crate::batch::EncodedBatch;
use crate::error::PublishError;
use crate::settings::ProducerArgs;

/// How much longer than `message.timeout.ms` a publisher waits for delivery reports before it
/// gives up itself. librdkafka times messages out on a periodic scan and, with idempotence, can
/// hold reports of messages caught in a broker disconnect longer (a 503 took 14.8 s with a 10 s
/// timeout in the chaos run); the caller's answer must not depend on that.
const DELIVERY_REPORT_GRACE: Duration = Duration::from_millis(250);
/// Pause between attempts to enqueue into a full producer queue.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(5);

// The names are the gateway's: it is the publisher that serves metrics (`bxbctl` records into
// no exporter), and dashboards and the benchmarks read these names.
/// Gauge: messages in the producer queue, enqueued but not yet acknowledged.
const QUEUE_MESSAGES_GAUGE: &str = "bxb_gateway_producer_queue_messages";
/// Histogram: from the first enqueue of a call to its last delivery report.
const DELIVERY_DURATION_HISTOGRAM: &str = "bxb_gateway_delivery_duration_seconds";

/// Records how many messages `producer` holds that Kafka has not acknowledged yet.
pub fn record_queue_depth(producer: &FutureProducer) {
    metrics::gauge!(QUEUE_MESSAGES_GAUGE).set(f64::from(producer.in_flight_count()));
}

/// Publishes events to one topic. Cheap to share: the producer is reference-counted.
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
    /// A producer with `settings` over `connection` (the brokers, TLS and SASL of
    /// `bxb_kafka::KafkaArgs`), named `client_id`. `encoder` may be set later, once the schema is
    /// registered; publishing fails with [`PublishError::SchemaNotRegistered`] until then.
    pub fn new(
        settings: &ProducerArgs,
        connection: &ClientConfig,
        client_id: &str,
        topic: impl Into<String>,
        encoder: Arc<OnceLock<EventEncoder>>,
    ) -> Result<Self, KafkaError> {
        let producer: FutureProducer = settings.client_config(connection, client_id).create()?;
        Ok(Self {
            producer,
            topic: topic.into(),
            encoder,
            max_record_bytes: settings.max_record_bytes,
            enqueue_timeout: Duration::from_millis(settings.enqueue_timeout_ms),
            delivery_timeout: Duration::from_millis(settings.delivery_timeout_ms),
        })
    }

    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Encodes every event, checks every record size, then publishes all of them (key =
    /// organization id; headers: the trace context of `span` and `ingested_at_ms`, see
    /// `bxb_kafka::headers::event_headers`) and waits for every delivery report. Nothing is sent
    /// if any record is too large.
    pub async fn publish(&self, events: &[Event], span: &tracing::Span, ingested_at_ms: i64) -> Result<(), PublishError> {
        let encoder = self.encoder.get().ok_or(PublishError::SchemaNotRegistered)?;
        if events.is_empty() {
            return Ok(());
        }
        let headers = bxb_kafka::headers::event_headers(span, ingested_at_ms);
        let keys = RecordKeys::of(events);
        let payloads = EncodedBatch::encode(encoder, events);
        self.check_record_sizes(&payloads, &keys)?;

        let started = Instant::now();
        let mut deliveries = Vec::with_capacity(events.len());
        let mut enqueue_error = None;
        for (key, payload) in keys.iter().zip(payloads.iter()) {
            let record = FutureRecord::to(&self.topic).key(key).payload(payload).headers(headers.clone());
            match self.enqueue(record).await {
                Ok(delivery) => deliveries.push(delivery),
                Err(error) => {
                    enqueue_error = Some(error);
                    break;
                }
            }
        }
        drop(payloads);
        record_queue_depth(&self.producer);
        // Wait for what was enqueued even when the rest failed, but never past the delivery
        // timeout: a report arriving later belongs to a call already failed, whose client
        // retries (the stores count a transaction id once).
        let reports = tokio::time::timeout(self.delivery_timeout + DELIVERY_REPORT_GRACE, join_all(deliveries)).await;
        metrics::histogram!(DELIVERY_DURATION_HISTOGRAM).record(started.elapsed().as_secs_f64());
        if let Some(error) = enqueue_error {
            return Err(error);
        }
        let Ok(reports) = reports else {
            return Err(PublishError::KafkaUnavailable(format!("no delivery report within {} ms", self.delivery_timeout.as_millis())));
        };
        for report in reports {
            match report {
                Ok(Ok(_)) => {}
                Ok(Err((error, _))) => return Err(PublishError::KafkaUnavailable(error.to_string())),
                Err(_canceled) => return Err(PublishError::KafkaUnavailable("the producer was shut down".into())),
            }
        }
        Ok(())
    }

    fn check_record_sizes(&self, payloads: &EncodedBatch, keys: &RecordKeys) -> Result<(), PublishError> {
        // Headers are small and bounded (trace context, a timestamp): the producer cap leaves room.
        let limit = self.max_record_bytes;
        let mut problems = ProblemList::default();
        for (index, (key, payload)) in keys.iter().zip(payloads.iter()).enumerate() {
            let bytes = payload.len() + key.len();
            if bytes > limit {
                problems.add(|| {
                    let message = format!("the event encodes to {bytes} bytes, more than the record limit of {limit} bytes");
                    Problem::new(index, "", "record_too_large", message)
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PublishError::RecordTooLarge { problems })
        }
    }

    /// Enqueues one record, waiting up to the enqueue timeout while the producer queue is full.
    async fn enqueue(&self, mut record: FutureRecord<'_, String, [u8]>) -> Result<DeliveryFuture, PublishError> {
        let deadline = Instant::now() + self.enqueue_timeout;
        loop {
            match self.producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    if Instant::now() >= deadline {
                        return Err(PublishError::QueueFull);
                    }
                    record = returned;
                    tokio::time::sleep(QUEUE_FULL_BACKOFF).await;
                }
                Err((error, _)) => return Err(PublishError::KafkaUnavailable(error.to_string())),
            }
        }
    }

    /// Delivers what is still queued, waiting at most `timeout`; used on shutdown.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(timeout)).await.unwrap_or(Err(KafkaError::Canceled))
    }
}

/// The record key of every event (its organization id), each distinct key made once: the events
/// of a gateway request share one organization, those of a `bxbctl produce` file may not.
struct RecordKeys {
    keys: Vec<String>,
    /// For each event, its key in `keys`.
    of_event: Vec<usize>,
}

impl RecordKeys {
    fn of(events: &[Event]) -> Self {
        let mut keys = Self { keys: Vec::new(), of_event: Vec::with_capacity(events.len()) };
        let mut last = None;
        for event in events {
            if last != Some(event.organization_id) {
                keys.keys.push(event.kafka_key());
                last = Some(event.organization_id);
            }
            keys.of_event.push(keys.keys.len() - 1);
        }
        keys
    }

    fn iter(&self) -> impl Iterator<Item = &String> {
        self.of_event.iter().map(|&i| &self.keys[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bxb_event::test_support;
    use uuid::Uuid;

    fn event(organization: u128) -> Event {
        test_support::event_of(Uuid::from_u128(organization), "t")
    }

    /// A publisher whose broker is never reached: enough for what fails before anything is sent.
    fn unconnected(settings: &ProducerArgs, encoder: Option<EventEncoder>) -> Publisher {
        let connection = bxb_kafka::KafkaArgs::plaintext("127.0.0.1:1").client_config().unwrap();
        let encoder = Arc::new(encoder.map(OnceLock::from).unwrap_or_default());
        Publisher::new(settings, &connection, "bxb-publish-test", "events", encoder).unwrap()
    }

    #[tokio::test]
    async fn nothing_is_encoded_before_the_schema_is_registered() {
        let publisher = unconnected(&ProducerArgs::default(), None);
        let result = publisher.publish(&[event(1)], &tracing::Span::none(), 0).await;
        assert!(matches!(result, Err(PublishError::SchemaNotRegistered)), "{result:?}");
    }

    #[tokio::test]
    async fn a_record_over_the_limit_refuses_the_call_naming_each_such_event() {
        let settings = ProducerArgs { max_record_bytes: 300, ..ProducerArgs::default() };
        let publisher = unconnected(&settings, Some(EventEncoder::new(1)));
        let mut big = event(2);
        big.properties = format!(r#"{{"x":"{}"}}"#, "y".repeat(300));
        let started = Instant::now();
        let result = publisher.publish(&[event(1), big.clone(), event(1), big], &tracing::Span::none(), 0).await;
        let Err(PublishError::RecordTooLarge { problems }) = result else { panic!("expected record_too_large, got {result:?}") };
        let found: Vec<_> = problems.listed().iter().map(|p| (p.index, p.code)).collect();
        assert_eq!(found, [(1, "record_too_large"), (3, "record_too_large")]);
        assert_eq!(problems.total(), 2);
        // Anything enqueued would wait out the delivery timeout against a broker that is not there.
        assert!(started.elapsed() < Duration::from_secs(1), "refused before anything was sent");
    }

    #[tokio::test]
    async fn a_thousand_records_over_the_limit_list_the_first_and_count_all() {
        let settings = ProducerArgs { max_record_bytes: 256, ..ProducerArgs::default() };
        let publisher = unconnected(&settings, Some(EventEncoder::new(1)));
        let mut big = event(2);
        big.properties = format!(r#"{{"x":"{}"}}"#, "y".repeat(300));
        let result = publisher.publish(&vec![big; 1_000], &tracing::Span::none(), 0).await;
        let Err(PublishError::RecordTooLarge { problems }) = result else { panic!("expected record_too_large, got {result:?}") };
        assert_eq!((problems.listed().len(), problems.total()), (bxb_event::ingest::MAX_LISTED_PROBLEMS, 1_000));
    }

    #[test]
    fn every_record_is_keyed_by_its_own_organization() {
        let events = [event(1), event(1), event(2), event(1)];
        let keys = RecordKeys::of(&events);
        let expected: Vec<String> = events.iter().map(Event::kafka_key).collect();
        assert_eq!(keys.iter().cloned().collect::<Vec<_>>(), expected);
        assert_eq!(keys.keys.len(), 3, "a key is made once per run of one organization");
    }
}
