//! The event on Kafka: the Avro schema of every record value of `events` (and of the originals
//! kept in `events.dlq`), registered under `<topic>-value` with BACKWARD compatibility.

/// The text of `avro/event.avsc`; `bxb_event::avro` parses it and maps events to it.
pub const EVENT_SCHEMA_JSON: &str = include_str!("event.avsc");
