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

mod config;
mod error;
mod sink;

pub use config::ConsumerArgs;
pub use error::RuntimeError;
pub use sink::{Record, Sink, SinkError};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Consumes `args.topic` in `args.group_id`, writing batches to `sink` and serving `/healthz`,
/// `/readyz` and `/metrics` on `listener`, until `shutdown` is cancelled; then writes and
/// commits the current batch and leaves the group.
pub async fn run<S: Sink>(
    args: ConsumerArgs,
    listener: TcpListener,
    sink: S,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    let _ = (listener, sink, shutdown);
    args.validate()?;
    Err(RuntimeError::Config { setting: "-", problem: "the runtime is being written".into() })
}
