use std::future::Future;

use bxb_event::Event;

/// One decoded, valid event and where it came from.
#[derive(Debug, Clone)]
pub struct Record {
    pub event: Event,
    pub partition: i32,
    pub offset: i64,
    /// When the gateway (or a direct producer) published it, from the record header.
    pub ingested_at_ms: Option<i64>,
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
    /// write), returning only once the write would survive a crash of the store.
    fn write(&self, batch: &[Record]) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Whether the store is reachable, for `/readyz`.
    fn is_ready(&self) -> impl Future<Output = bool> + Send;
}
