//! The consume → batch → write → commit loop, and decoding each record into the batch
//! (`accept`). Getting to the loop — settings, topics, subscription — is in `start`; writing one
//! batch and settling its offsets in `write_batch`.
//!
//! Why a [`StreamConsumer`] polled from one task: librdkafka runs rebalance callbacks inside the
//! poll, and only this loop polls. So a revocation can only happen at the points where the loop
//! waits for Kafka — between records, while a batch is written and during retry pauses — never
//! in the middle of its bookkeeping, and the write's future, polled by the same task, needs no
//! locks. A `BaseConsumer` on a blocking thread would need a channel to the async sink and a
//! second place that owns the in-flight state for no gain.
//!
//! Pipelining: while batch n is written, the loop goes on fetching, decoding and batching n+1,
//! so the write overlaps everything else. At most one batch is in flight: when n+1 is full
//! before n is written, the loop stops polling until it is. Batch n is completed (its offsets
//! marked done and committed) before n+1 starts writing, so commits move strictly in order and
//! only past what is written or dead-lettered. A revocation while n is written commits the
//! revoked partitions' last completed point; n's records of them are dropped before its next
//! attempt, or written anyway if the attempt was already under way (the stores are idempotent).
//!
//! Backpressure: while a failed batch waits for its next attempt, and while records wait for
//! their writer schema (`intake`), every assigned partition is paused (librdkafka then drops
//! what it prefetched and resumes from the last record handed to us), so memory stays bounded
//! by two batches plus librdkafka's fetch queue. The loop keeps polling during the pause so that
//! group membership and rebalances are served; the few records that arrive meanwhile go to the
//! batch being built, or wait behind the records already waiting.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bxb_event::registry::EventDecoder;
use bxb_kafka::headers;
use bxb_retry::Backoff;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::batch::Batch;
use crate::breaker::PoisonBreaker;
use crate::commit::Committer;
use crate::config::Settings;
use crate::context::{RuntimeContext, Shared};
use crate::dead_letter::DeadLetterProducer;
use crate::{RuntimeError, Sink};

mod intake;
mod start;
mod write_batch;

use intake::{Origin, SchemaWait};
use write_batch::InFlightWrite;

/// How often commits the broker refused (typically during a rebalance) are repeated when no
/// new batch brings a commit of its own.
const COMMIT_RETRY_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct Pipeline<S: Sink> {
    settings: Settings,
    consumer: Arc<StreamConsumer<RuntimeContext>>,
    shared: Arc<Shared>,
    committer: std::sync::Mutex<Committer>,
    decoder: EventDecoder,
    dead_letters: DeadLetterProducer,
    sink: Arc<S>,
    sink_ready: Arc<AtomicBool>,
    /// False while the registry cannot give a writer schema that records wait for.
    registry_ready: Arc<AtomicBool>,
    /// How many parts of the loop want the partitions paused (a retried batch, records waiting
    /// for their schema); they are paused while any does.
    pause_holds: AtomicUsize,
    /// `bxb_consumer_events_consumed_total`, looked up once rather than per record.
    consumed: ::metrics::Counter,
    /// `bxb_consumer_records_waiting_for_schema`.
    records_waiting: ::metrics::Gauge,
}

impl<S: Sink> Pipeline<S> {
    /// Consumes until `shutdown` or a fatal error, then commits what is written (and nothing
    /// else) synchronously.
    pub async fn run(self, shutdown: &CancellationToken) -> Result<(), RuntimeError> {
        let outcome = self.consume(shutdown).await;
        let mut in_flight = std::mem::take(&mut *self.committer.lock().unwrap_or_else(|e| e.into_inner()));
        in_flight.finish().await;
        let points = self.shared.tracker().take_commit_points(true);
        self.shared.commit_sync(self.consumer.as_ref(), &points);
        // Closing the consumer leaves the group (its revocation callback commits the same
        // points again) and blocks while it does: keep that off the async threads.
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
        outcome
    }

    async fn consume(&self, shutdown: &CancellationToken) -> Result<(), RuntimeError> {
        let (max_events, max_wait) = (self.settings.batch_max_events, self.settings.batch_max_wait);
        let mut building = self.new_batch();
        let mut writing: Option<InFlightWrite<'_>> = None;
        let mut wait = SchemaWait::new(Backoff::new(self.settings.retry_initial_backoff, self.settings.retry_max_backoff), max_events);
        let mut breaker = PoisonBreaker::new(self.settings.poison_breaker_max, self.settings.poison_breaker_window);
        let mut commit_retry = tokio::time::interval(COMMIT_RETRY_INTERVAL);
        commit_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Created once, not per record: a timer entry and a cancellation waiter registered and
        // dropped for every record cost more than the rest of the loop's bookkeeping.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let batch_due = tokio::time::sleep_until(Instant::now());
        tokio::pin!(batch_due);
        let mut armed: Option<Instant> = None;
        loop {
            if wait.is_waiting() {
                self.forget_revoked(&mut wait);
            }
            if wait.can_drain() {
                self.drain_waiting(&mut wait, &mut building, max_events, &mut breaker)?;
            }
            if writing.is_none() && (building.is_full(max_events) || building.deadline(max_wait).is_some_and(|d| d <= Instant::now())) {
                let batch = std::mem::replace(&mut building, self.new_batch());
                writing = Some(Box::pin(self.write_until_done(batch, shutdown)));
            }
            let deadline = if writing.is_none() { building.deadline(max_wait) } else { None };
            if deadline != armed {
                if let Some(deadline) = deadline {
                    batch_due.as_mut().reset(deadline);
                }
                armed = deadline;
            }
            // A full batch waits for the one in flight; while that one is retried the
            // partitions are paused, and polling goes on so that rebalances are served.
            let receive = !building.is_full(max_events) || self.shared.paused.load(Ordering::SeqCst);
            tokio::select! {
                biased;
                () = &mut cancelled => break,
                (batch, outcome) = async { writing.as_mut().expect("checked").await }, if writing.is_some() => {
                    writing = None;
                    self.finish_write(&batch, outcome)?;
                }
                (schema_id, outcome) = async { wait.lookup().expect("checked").await }, if wait.lookup().is_some() => {
                    self.lookup_finished(&mut wait, schema_id, outcome);
                }
                () = &mut batch_due, if armed.is_some() => {}
                _ = commit_retry.tick() => self.commit_pending(),
                message = self.consumer.recv(), if receive => self.accept(message, &mut building, &mut wait, &mut breaker)?,
            }
        }
        if let Some(in_flight) = writing.take() {
            let (batch, outcome) = in_flight.await;
            self.finish_write(&batch, outcome)?;
        }
        tracing::info!(pending = building.len(), "shutting down: writing the current batch");
        let (batch, outcome) = self.write_until_done(building, shutdown).await;
        self.finish_write(&batch, outcome)
    }

    fn new_batch(&self) -> Batch {
        Batch::new(self.shared.tracker().revocations())
    }

    /// Takes one record in: into the batch as an event or a dead letter, or behind the records
    /// waiting for a writer schema (`intake`). Never waits for anything, so the loop keeps
    /// polling Kafka and driving the write in flight whatever the registry does.
    fn accept<'a>(
        &'a self,
        message: KafkaResult<BorrowedMessage<'_>>,
        batch: &mut Batch,
        wait: &mut SchemaWait<'a>,
        breaker: &mut PoisonBreaker,
    ) -> Result<(), RuntimeError> {
        let message = match message {
            Ok(message) => message,
            Err(error @ KafkaError::MessageConsumptionFatal(_)) => return Err(error.into()),
            Err(error) => {
                // Broker or topic trouble librdkafka recovers from by itself.
                tracing::warn!(%error, "consumer error");
                return Ok(());
            }
        };
        let (partition, offset) = (message.partition(), message.offset());
        {
            let mut tracker = self.shared.tracker();
            if !tracker.received(partition, offset) {
                tracing::debug!(partition, offset, "record of a partition no longer assigned; skipped for its new owner");
                return Ok(());
            }
            breaker.forget_after(tracker.revocations());
        }
        self.consumed.increment(1);
        let span = record_span(&message);
        if wait.is_waiting() {
            // Behind a waiting record, so that each partition's records keep their order.
            self.wait_for_schema(wait, None, message.detach(), span);
            return Ok(());
        }
        match self.judge(&message) {
            Ok(verdict) => self.place(verdict, Origin::of(&message), span, || message.detach(), batch, breaker),
            Err(schema_id) => {
                self.wait_for_schema(wait, Some(schema_id), message.detach(), span);
                Ok(())
            }
        }
    }

    fn commit_pending(&self) {
        self.committer.lock().unwrap_or_else(|e| e.into_inner()).commit_pending(&self.consumer, &self.shared);
    }

    /// Pauses every assigned partition unless another part of the loop already holds a pause.
    fn hold_pause(&self) {
        if self.pause_holds.fetch_add(1, Ordering::SeqCst) == 0 {
            self.set_paused(true);
        }
    }

    /// Resumes every assigned partition once no part of the loop holds a pause any more.
    fn release_pause(&self) {
        if self.pause_holds.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.set_paused(false);
        }
    }

    fn set_paused(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::SeqCst);
        let result =
            self.consumer.assignment().and_then(
                |assignment| {
                    if paused {
                        self.consumer.pause(&assignment)
                    } else {
                        self.consumer.resume(&assignment)
                    }
                },
            );
        if let Err(error) = result {
            tracing::warn!(%error, paused, "could not pause or resume partitions");
        }
    }
}

/// The span of one record, continuing the trace of its producer; it ends when the record is
/// written. Records without trace context get no span, so untraced traffic costs nothing.
fn record_span(message: &BorrowedMessage<'_>) -> tracing::Span {
    let Some(record_headers) = message.headers() else { return tracing::Span::none() };
    if headers::find(record_headers, "traceparent").is_none() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!("bxb_consumer.record", partition = message.partition(), offset = message.offset());
    let pairs = record_headers.iter().filter_map(|h| Some((h.key, h.value?)));
    bxb_telemetry::trace_context::set_parent_from(&span, pairs);
    span
}
