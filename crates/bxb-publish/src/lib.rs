//! Events to Kafka, the way the gateway publishes them; anything else that must publish exactly
//! like it (`bxbctl produce`) uses the same code.
//!
//! ```text
//! events ──encode (registry schema id)──▶ size check ──enqueue (queue-full backoff)──▶ librdkafka
//!        ──▶ Kafka `events` (acks=all, idempotent; key = organization_id; trace + ingested-at headers)
//!        ◀── every delivery report awaited (delivery timeout + grace) ── Ok only once Kafka holds all
//! ```
//!
//! - [`ProducerArgs`]: the producer settings (`BXB_KAFKA_DELIVERY_TIMEOUT_MS`, `..._ENQUEUE_...`,
//!   `..._LINGER_MS`, `..._COMPRESSION`, `..._QUEUE_MAX_MESSAGES`, `BXB_MAX_RECORD_BYTES`) over the
//!   connection settings of `bxb_kafka::KafkaArgs`; `acks=all` and idempotence are fixed.
//! - [`Publisher`]: one shared producer; [`Publisher::publish`] encodes through the registry
//!   encoder ([`EncodedBatch`]), refuses the whole call if one record is too large, enqueues every
//!   record in order and waits for every delivery report.
//! - [`PublishError`]: why not, and whether some events may be stored already.
//!
//! Metrics: `bxb_gateway_producer_queue_messages` and `bxb_gateway_delivery_duration_seconds`.

mod batch;
mod error;
mod publisher;
mod settings;

pub use batch::EncodedBatch;
pub use error::PublishError;
pub use publisher::{record_queue_depth, Publisher};
pub use settings::{Compression, ProducerArgs, SettingError, RECORD_BYTES_CEILING};
