use std::future::Future;

use bxb_event::identity::Rank;
use bxb_event::registry::PoisonReason;
use bxb_event::Event;

/// One decoded, valid event and where it came from.
#[derive(Debug, Clone)]
pub struct Record {
    pub event: Event,
    pub partition: i32,
    pub offset: i64,
    /// The record's Kafka timestamp: the broker's append time on a `LogAppendTime` topic, the
    /// first part of its [`Rank`] (see [`bxb_event::identity`]).
    pub appended_at_ms: i64,
    /// Why the sink may refuse it for good, as [`Sink::screen`] said when it was consumed; the
    /// runtime then keeps its original message, so that a refusal can be dead-lettered.
    pub screened: Option<PoisonReason>,
    /// When the gateway (or a direct producer) published it, from the record header.
    pub ingested_at_ms: Option<i64>,
}

impl Record {
    /// Its place in the identity rule: of several records of one identity, the lowest counts.
    pub fn rank(&self) -> Rank {
        Rank::new(self.appended_at_ms, self.partition, self.offset)
    }
}

/// A record a sink declines for good, by its index in the batch. The runtime dead-letters it
/// (original key, value and headers, with the reason) and commits it with the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub index: usize,
    pub reason: PoisonReason,
    pub error: String,
}

/// What a successful write did with records it did not store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Written {
    /// Records refused for good; only screened ones ([`Record::screened`]).
    pub refused: Vec<Refusal>,
}

/// Why a batch was not written. A sink never skips records: it writes the whole batch or
/// reports one of these, and the runtime commits nothing of a batch that failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Transient (network, timeout, overload, serialization conflict): the runtime backs off and
    /// writes the same batch again.
    #[error("transient write failure: {0}")]
    Retry(String),
    /// Misconfiguration or a store that cannot take the data (missing table, wrong columns,
    /// permissions): the runtime stops cleanly without committing.
    #[error("fatal write failure: {0}")]
    Fatal(String),
}

/// Where a consumer writes events. Writes must be idempotent: the runtime may hand the same
/// record to `write` more than once (retries, rebalances, a crash before the commit, replays),
/// and the store must end up counting each (organization_id, transaction_id) once.
pub trait Sink: Send + Sync + 'static {
    /// A short name for logs and metric labels, e.g. `clickhouse`.
    fn name(&self) -> &'static str;

    /// Writes every record of `batch` durably (or decides, like a filter, that some need no
    /// write, or refuses some for good), returning only once the write would survive a crash of
    /// the store.
    fn write(&self, batch: &[Record]) -> impl Future<Output = Result<Written, SinkError>> + Send;

    /// Why `write` may refuse this event for good, judged when it is consumed (for example:
    /// outside the time range the store keeps), or `None`. The runtime keeps the original
    /// message of exactly these and hands the reason over in [`Record::screened`]; `write`
    /// decides (a filter may not need the event at all) and refuses only screened records.
    fn screen(&self, _event: &Event) -> Option<PoisonReason> {
        None
    }

    /// Whether the store is reachable, for `/readyz`.
    fn is_ready(&self) -> impl Future<Output = bool> + Send;
}
