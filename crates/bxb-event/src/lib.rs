//! The bxb usage event, shared by every part of the pipeline.
//!
//! ```text
//! gateway ──(JSON → Event → validate → Avro)──▶ Kafka `events` ──(Avro → Event → validate)──▶ consumers
//! ```
//!
//! - [`Event`] is the one Rust type of an event; [`Decimal`] keeps `decimal_value` exact.
//! - [`ingest`] parses the JSON of a request body (or of a `bxbctl produce` line) into events, with
//!   its problems by event index and field (the first listed, all counted), and checks
//!   timestamps against a window around the receive time.
//! - [`validate`] holds the field rules. The gateway applies them before publishing; the consumers
//!   apply them again after decoding, because direct Kafka producers bypass the gateway. A record
//!   that breaks them is poison and goes to the dead-letter topic.
//! - [`avro`] maps an [`Event`] to and from the Avro schema in `schemas/avro/event.avsc`, the single
//!   source of truth of the wire format.
//! - [`registry`] registers that schema under subject `events-value` and encodes and decodes the
//!   Confluent wire format (magic byte, schema id, Avro datum) through a Confluent-compatible
//!   schema registry.
//! - [`identity`] is the rule that picks the record of an identity that counts, by its rank in
//!   Kafka.
//! - [`writer_schema`] decides which writer schemas a consumer reads (those that resolve to the
//!   event record) and reads their datums under a budget, so no record can exhaust a consumer.

pub mod avro;
pub mod clock;
mod decimal;
mod event;
#[cfg(test)]
mod hostile_tests;
pub mod identity;
pub mod ingest;
#[cfg(any(test, feature = "invariants"))]
pub mod invariants;
pub mod registry;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
pub mod validate;
pub mod writer_schema;

pub use decimal::{Decimal, DecimalError, DECIMAL_MAX_PRECISION, DECIMAL_MAX_SCALE};
pub use event::Event;
pub use validate::{FieldError, FieldErrors};
