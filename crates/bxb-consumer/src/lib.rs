//! The consumer runtime shared by `consumer-clickhouse` and `consumer-postgres`.
//!
//! ```text
//! Kafka `events` ──▶ decode + validate ──┬─▶ batch ──▶ Sink::write ──▶ commit offsets
//!                                        └─▶ poison ──▶ `events.dlq` (acked) ──▶ commit offsets
//! ```
//!
//! A binary supplies a [`Sink`] and calls [`run`]; the runtime owns everything else:
//!
//! - **Offsets**: auto-commit is off. Per partition the runtime commits exactly the offset after
//!   the longest prefix of records that are written or dead-lettered, never past a record that
//!   is neither — also across rebalances: on revocation it commits that point synchronously and
//!   drops the revoked partitions' in-flight records (their new owner reads them again); on
//!   assignment it starts from the committed offset.
//! - **Errors** are exactly one of: *retry* (sink or network trouble, a registry that cannot
//!   give a writer schema for whatever reason: unreachable, 404, 401, 500, garbage):
//!   exponential backoff with jitter, the same batch or record again, nothing skipped, nothing
//!   committed past it, partitions paused, `/readyz` failing; *poison* (undecodable bytes, a
//!   writer schema that does not resolve to the event record, a datum over its decoding budget,
//!   broken field rules, a key that is not the event's organization): produced to the
//!   dead-letter topic with the original key, value and headers plus `bxb-dlq-*` headers,
//!   committed once the broker acknowledged it; *fatal* (misconfiguration, a store that cannot
//!   take the data, the poison breaker: more than `BXB_POISON_BREAKER_MAX` poison records among
//!   the last `BXB_POISON_BREAKER_WINDOW` of a partition): [`run`] commits what is written and
//!   nothing else, and returns the error.
//! - **Shutdown**: cancelling the token writes and commits the current batch and leaves the group.
//! - **Memory**: at most two batches (one written, one being built), a bounded librdkafka
//!   prefetch, and no unscraped metric samples piling up (see the `memory` module).
//! - **Telemetry**: each record's span continues the W3C trace from its headers and ends when
//!   the record is written; `/healthz`, `/readyz` (Kafka topics found and subscribed, sink
//!   reachable, the registry giving the writer schemas records wait for) and `/metrics`
//!   (`bxb_consumer_*`, see the `metrics` module) are served on the listener given to [`run`].
//!
//! Where each part lives: `runtime` (the loop; `runtime/start`, `runtime/write_batch`), `batch`,
//! `offsets` (which offset each partition may commit), `commit` (committing them), `rebalance`
//! (the librdkafka rebalance callbacks), `context` (what the loop and the callbacks share, and
//! the lag statistics), `dead_letter`, `memory`, `metrics`, `config`, `error`, `sink`.

mod batch;
mod breaker;
mod commit;
mod config;
mod context;
mod dead_letter;
mod error;
mod memory;
mod metrics;
mod offsets;
mod rebalance;
mod record_key;
mod runtime;
mod sink;

pub use breaker::{DEFAULT_POISON_BREAKER_MAX, DEFAULT_POISON_BREAKER_WINDOW};
pub use config::ConsumerArgs;
pub use error::RuntimeError;
pub use sink::{Record, Refusal, Sink, SinkError, Written};

use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bxb_event::registry::SchemaRegistry;
use bxb_telemetry::health::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::runtime::Pipeline;

/// Consumes `args.topic` in `args.group_id`, writing batches to `sink` and serving `/healthz`,
/// `/readyz` and `/metrics` on `listener`, until `shutdown` is cancelled; then writes and
/// commits the current batch and leaves the group. Returns an error only for fatal problems,
/// after committing what was written.
pub async fn run<S: Sink>(args: ConsumerArgs, listener: TcpListener, sink: S, shutdown: CancellationToken) -> Result<(), RuntimeError> {
    let settings = args.validate()?;
    let decoder = SchemaRegistry::new(&args.registry)?.decoder();
    bxb_telemetry::metrics::install();
    metrics::describe();
    memory::return_large_buffers_to_the_system();

    let readiness = Readiness::default();
    let kafka_ready = readiness.check("kafka");
    let sink_ready = readiness.check("sink");
    let registry_ready = readiness.check("schema_registry");
    registry_ready.store(true, Ordering::Relaxed);
    let sink = Arc::new(sink);
    let stop_background = CancellationToken::new();

    let router = bxb_telemetry::health::router(readiness);
    let server =
        tokio::spawn(axum::serve(listener, router).with_graceful_shutdown(stop_background.clone().cancelled_owned()).into_future());
    let probe = tokio::spawn(probe_sink(sink.clone(), sink_ready.clone(), settings.sink_ready_interval, stop_background.clone()));
    let upkeep = tokio::spawn(memory::upkeep_metrics(stop_background.clone()));

    let outcome = async {
        let Some(pipeline) = Pipeline::start(settings, decoder, sink, (sink_ready, registry_ready), &shutdown).await? else {
            return Ok(());
        };
        kafka_ready.store(true, Ordering::Relaxed);
        pipeline.run(&shutdown).await
    }
    .await;
    if let Err(error) = &outcome {
        tracing::error!(%error, "consumer stopped");
    }

    stop_background.cancel();
    let _ = probe.await;
    let _ = upkeep.await;
    match server.await {
        Ok(Ok(())) => outcome,
        Ok(Err(error)) => outcome.and(Err(RuntimeError::Serve(error))),
        Err(join) => outcome.and(Err(RuntimeError::Serve(std::io::Error::other(join)))),
    }
}

/// Keeps the sink's readiness check current (a failed write also flips it at once).
async fn probe_sink<S: Sink>(
    sink: Arc<S>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    interval: std::time::Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            is_ready = sink.is_ready() => ready.store(is_ready, Ordering::Relaxed),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoStore;

    impl Sink for NoStore {
        fn name(&self) -> &'static str {
            "none"
        }
        async fn write(&self, _batch: &[Record]) -> Result<Written, SinkError> {
            Ok(Written::default())
        }
        async fn is_ready(&self) -> bool {
            true
        }
    }

    fn assert_send<T: Send>(_: &T) {}

    #[tokio::test]
    async fn run_can_be_spawned_and_refuses_a_consumer_without_a_group() {
        let args = ConsumerArgs::new(
            bxb_kafka::KafkaArgs::plaintext("127.0.0.1:1"),
            bxb_event::registry::RegistryArgs::with_url("http://127.0.0.1:1"),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let future = run(args, listener, NoStore, CancellationToken::new());
        assert_send(&future);
        match future.await {
            Err(RuntimeError::Config { setting, .. }) => assert_eq!(setting, "BXB_CONSUMER_GROUP"),
            other => panic!("expected a config error, got {other:?}"),
        }
    }
}
