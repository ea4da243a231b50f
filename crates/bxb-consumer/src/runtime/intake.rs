//! From a received record to the batch: its verdict (an event, or poison for the dead-letter
//! topic, with the poison breaker counting), or a wait for its writer schema.
//!
//! A record whose writer schema is not loaded yet waits, and so does every record received after
//! it (of any partition, so that each partition's order holds), while the loop looks the schema
//! up. The lookup is a future the loop polls next to Kafka and the write in flight, never
//! awaited in place: so while the registry is away the loop keeps serving rebalances, finishes
//! the write of what came before, and commits it. Once a lookup fails, or a batch's worth of
//! records waits, every partition is paused so that waiting records stay few; a first lookup
//! that succeeds at once (a new schema id, a consumer starting) pauses nothing. A failed lookup
//! is retried with backoff until the registry answers, and the waiting records then go on by
//! themselves; they are never dead-lettered for it. Nothing at or after the first waiting record
//! is committed meanwhile, because the offset tracker holds it in flight.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;

use bxb_event::registry::{DecodeError, LookupError, PoisonReason};
use bxb_event::Event;
use bxb_kafka::headers;
use rdkafka::message::{Message, OwnedMessage, Timestamp};

use super::Pipeline;
use crate::batch::Batch;
use crate::breaker::PoisonBreaker;
use crate::dead_letter::DeadLetter;
use crate::record_key::key_mismatch;
use crate::{metrics, Record, RuntimeError, Sink};
use bxb_retry::Backoff;

/// A lookup of a writer schema in flight (after its backoff pause, if it is a retry).
type SchemaLookup<'a> = Pin<Box<dyn Future<Output = (u32, Result<(), LookupError>)> + Send + 'a>>;

/// What a record is, once its writer schema is known.
pub(super) enum Verdict {
    Event(Event),
    Poison(PoisonReason, String),
}

struct Waiting {
    message: OwnedMessage,
    span: tracing::Span,
}

/// The records waiting for a writer schema, and the lookup that will release them.
pub(super) struct SchemaWait<'a> {
    waiting: VecDeque<Waiting>,
    lookup: Option<SchemaLookup<'a>>,
    backoff: Backoff,
    /// Whether the last lookup failed (the registry is not ready).
    failing: bool,
    /// Whether this wait holds the partitions paused.
    pausing: bool,
    /// From this many waiting records on, the partitions are paused.
    pause_at: usize,
    /// The offset tracker's revocation count when the waiting records were last checked.
    revocations_seen: u64,
}

impl<'a> SchemaWait<'a> {
    pub fn new(backoff: Backoff, pause_at: usize) -> Self {
        Self { waiting: VecDeque::new(), lookup: None, backoff, failing: false, pausing: false, pause_at, revocations_seen: 0 }
    }

    pub fn is_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Whether waiting records can go on: their lookup is done.
    pub fn can_drain(&self) -> bool {
        self.lookup.is_none() && !self.waiting.is_empty()
    }

    /// The lookup in flight, for the loop to poll.
    pub fn lookup(&mut self) -> Option<&mut SchemaLookup<'a>> {
        self.lookup.as_mut()
    }
}

/// Where a record came from: its place in Kafka, the time it ranks by, and the publisher's
/// ingestion-time header.
#[derive(Debug, Clone, Copy)]
pub(super) struct Origin {
    partition: i32,
    offset: i64,
    appended_at_ms: i64,
    ingested_at_ms: Option<i64>,
}

impl Origin {
    pub(super) fn of<M: Message>(message: &M) -> Self {
        let appended_at_ms = match message.timestamp() {
            Timestamp::LogAppendTime(ms) => ms,
            // The topic is not `LogAppendTime` (the consumer checks it at start; it may have
            // been altered since): the producer's time is all there is. Counted, so it shows.
            Timestamp::CreateTime(ms) => {
                ::metrics::counter!(metrics::NOT_APPEND_TIME, "type" => "create_time").increment(1);
                ms
            }
            // Only the message formats before Kafka 0.10 lack a timestamp; Kafka 4 no longer
            // writes them. Such a record ranks like a legacy row.
            Timestamp::NotAvailable => {
                ::metrics::counter!(metrics::NOT_APPEND_TIME, "type" => "none").increment(1);
                bxb_event::identity::LEGACY_APPENDED_AT_MS
            }
        };
        Self {
            partition: message.partition(),
            offset: message.offset(),
            appended_at_ms,
            ingested_at_ms: message.headers().and_then(headers::ingested_at_ms),
        }
    }
}

impl<S: Sink> Pipeline<S> {
    /// The verdict on a record, or the schema id it waits for.
    pub(super) fn judge<M: Message>(&self, message: &M) -> Result<Verdict, u32> {
        match self.decoder.decode_known(message.payload()) {
            Ok(event) => Ok(match key_mismatch(message.key(), &event) {
                None => Verdict::Event(event),
                Some(problem) => Verdict::Poison(PoisonReason::KeyMismatch, problem),
            }),
            Err(DecodeError::Poison { reason, message }) => Ok(Verdict::Poison(reason, message)),
            Err(DecodeError::SchemaNotLoaded(schema_id)) => Err(schema_id),
            Err(DecodeError::Unavailable(error)) => Err(error.schema_id()),
        }
    }

    /// Puts a judged record into the batch: an event, or a dead letter once the breaker let it
    /// through. A tripped breaker is fatal, and the record that tripped it stays unwritten. The
    /// caller has brought the breaker up to date with revocations.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn place(
        &self,
        verdict: Verdict,
        origin: Origin,
        span: tracing::Span,
        into_owned: impl FnOnce() -> OwnedMessage,
        batch: &mut Batch,
        breaker: &mut PoisonBreaker,
    ) -> Result<(), RuntimeError> {
        let Origin { partition, offset, .. } = origin;
        match verdict {
            Verdict::Event(event) => {
                let _ = breaker.record(partition, offset, None);
                let screened = self.sink.screen(&event);
                let original = screened.is_some().then(into_owned);
                let Origin { appended_at_ms, ingested_at_ms, .. } = origin;
                batch.push(Record { event, partition, offset, appended_at_ms, screened, ingested_at_ms }, span, original);
            }
            Verdict::Poison(reason, error) => {
                if let Err(tripped) = breaker.record(partition, offset, Some(reason)) {
                    return Err(RuntimeError::PoisonBreaker {
                        partition: tripped.partition,
                        offset: tripped.offset,
                        reason: tripped.reason,
                        poison: tripped.poison,
                        window: tripped.window,
                    });
                }
                tracing::warn!(parent: &span, partition, offset, %reason, %error, "poison record: dead-lettering");
                batch.push_dead_letter(DeadLetter::new(into_owned(), reason, error));
            }
        }
        Ok(())
    }

    /// Makes `message` wait behind the records already waiting; the first to wait starts the
    /// lookup of `schema_id`.
    pub(super) fn wait_for_schema<'a>(
        &'a self,
        wait: &mut SchemaWait<'a>,
        schema_id: Option<u32>,
        message: OwnedMessage,
        span: tracing::Span,
    ) {
        wait.waiting.push_back(Waiting { message, span });
        if wait.waiting.len() >= wait.pause_at {
            self.pause_for(wait);
        }
        if let Some(schema_id) = schema_id.filter(|_| wait.lookup.is_none()) {
            wait.lookup = Some(Box::pin(async move { (schema_id, self.decoder.load_schema(schema_id).await) }));
        }
        self.records_waiting.set(wait.waiting.len() as f64);
    }

    /// Settles a finished lookup: the waiting records can go on, or the lookup is tried again
    /// after a pause.
    pub(super) fn lookup_finished<'a>(&'a self, wait: &mut SchemaWait<'a>, schema_id: u32, outcome: Result<(), LookupError>) {
        wait.lookup = None;
        match outcome {
            Ok(()) => {
                if wait.failing {
                    tracing::info!(schema_id, waiting = wait.waiting.len(), "the schema registry answers again; the waiting records go on");
                }
                wait.failing = false;
                wait.backoff.reset();
                self.registry_ready.store(true, Ordering::Relaxed);
            }
            Err(error) => {
                wait.failing = true;
                self.pause_for(wait);
                self.registry_ready.store(false, Ordering::Relaxed);
                ::metrics::counter!(metrics::SCHEMA_LOOKUP_FAILURES, "sink" => self.shared.sink, "kind" => error.kind()).increment(1);
                let pause = wait.backoff.next();
                tracing::warn!(
                    %error, schema_id, kind = error.kind(), waiting = wait.waiting.len(), ?pause,
                    "no writer schema from the registry; its records wait, partitions are paused and nothing after them is committed"
                );
                wait.lookup = Some(Box::pin(async move {
                    tokio::time::sleep(pause).await;
                    (schema_id, self.decoder.load_schema(schema_id).await)
                }));
            }
        }
    }

    /// Drops the waiting records of partitions revoked since the last check (their new owner
    /// reads them again). The lookup is dropped with them, so that the records left are judged
    /// again: they may need another schema, or none. Nothing left waiting, nothing is paused.
    pub(super) fn forget_revoked(&self, wait: &mut SchemaWait<'_>) {
        let tracker = self.shared.tracker();
        if tracker.revocations() == wait.revocations_seen {
            return;
        }
        wait.revocations_seen = tracker.revocations();
        let before = wait.waiting.len();
        wait.waiting.retain(|w| tracker.is_in_flight(w.message.partition(), w.message.offset()));
        drop(tracker);
        if wait.waiting.len() == before {
            return;
        }
        tracing::info!(
            handed_over = before - wait.waiting.len(),
            waiting = wait.waiting.len(),
            "dropped waiting records of revoked partitions"
        );
        wait.lookup = None;
        self.records_waiting.set(wait.waiting.len() as f64);
        if !wait.is_waiting() {
            wait.failing = false;
            self.registry_ready.store(true, Ordering::Relaxed);
            if wait.pausing {
                wait.pausing = false;
                self.release_pause();
            }
        }
    }

    /// Moves waiting records into the batch, in order, until one needs a schema that is not
    /// loaded (its lookup starts) or the batch is full. Records of partitions revoked meanwhile
    /// are dropped: their new owner reads them again.
    pub(super) fn drain_waiting<'a>(
        &'a self,
        wait: &mut SchemaWait<'a>,
        batch: &mut Batch,
        max_events: usize,
        breaker: &mut PoisonBreaker,
    ) -> Result<(), RuntimeError> {
        while !batch.is_full(max_events) {
            let Some(Waiting { message, span }) = wait.waiting.pop_front() else { break };
            let at = (message.partition(), message.offset());
            {
                let tracker = self.shared.tracker();
                if !tracker.is_in_flight(at.0, at.1) {
                    continue;
                }
                breaker.forget_after(tracker.revocations());
            }
            match self.judge(&message) {
                Ok(verdict) => {
                    self.place(verdict, Origin::of(&message), span, || message, batch, breaker)?;
                }
                Err(schema_id) => {
                    wait.waiting.push_front(Waiting { message, span });
                    wait.lookup = Some(Box::pin(async move { (schema_id, self.decoder.load_schema(schema_id).await) }));
                    break;
                }
            }
        }
        self.records_waiting.set(wait.waiting.len() as f64);
        if !wait.is_waiting() && wait.pausing {
            wait.pausing = false;
            self.release_pause();
        }
        Ok(())
    }

    fn pause_for(&self, wait: &mut SchemaWait<'_>) {
        if !wait.pausing {
            wait.pausing = true;
            self.hold_pause();
        }
    }
}
