//! The consumer runtime shared by `consumer-clickhouse` and `consumer-postgres`.
//!
//! ```text
//! Kafka `events` ──▶ decode + validate ──┬─▶ batch ──▶ Sink::write ──▶ commit offsets
//!                                        └─▶ poison ──▶ `events.dlq` (acked) ──▶ commit offsets
//! ```
//!
//! A binary supplies a [`Sink`]; the runtime owns everything else. See the module docs for the
//! offset rule (commit only the contiguous prefix that is written or dead-lettered) and the
//! error rule (retry, poison or fatal).

mod sink;

pub use sink::{Record, Sink, SinkError};
