//! The consume → batch → write → commit loop.
//!
//! Why a [`StreamConsumer`] polled from one task: librdkafka runs rebalance callbacks inside the
//! poll, and only this loop polls. So a revocation can only happen at the points where the loop
//! waits for Kafka — between records and during retry pauses — never in the middle of its
//! bookkeeping, and the sink's future can borrow the batch without locks. A `BaseConsumer` on a
//! blocking thread would need a channel to the async sink and a second place that owns the
//! in-flight state for no gain.
//!
//! Backpressure: the loop does not poll while a batch is being written, and while a failed
//! batch waits for its next attempt every assigned partition is paused (librdkafka then drops
//! what it prefetched and resumes from the last record handed to us), so memory stays bounded
//! by one batch plus librdkafka's fetch queue. The loop keeps polling during the pause so that
//! group membership and rebalances are served.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bxb_event::registry::{DecodeError, EventDecoder};
use bxb_kafka::headers;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::ClientConfig;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::batch::Batch;
use crate::config::Settings;
use crate::context::{Committer, RuntimeContext, Shared};
use crate::dead_letter::{now_ms, DeadLetter, DeadLetterProducer};
use crate::{metrics, Record, RuntimeError, Sink, SinkError};

/// How long one metadata request at start may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
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
}

impl<S: Sink> Pipeline<S> {
    /// Creates the consumer and the dead-letter producer, checks that both topics exist and
    /// subscribes. Returns `None` if `shutdown` came first.
    pub async fn start(
        settings: Settings,
        decoder: EventDecoder,
        sink: Arc<S>,
        sink_ready: Arc<AtomicBool>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Self>, RuntimeError> {
        let topics = [settings.topic.clone(), settings.dlq_topic.clone()];
        if !wait_for_topics(&settings, &topics, shutdown).await? {
            return Ok(None);
        }
        let shared = Arc::new(Shared::new(settings.topic.clone(), sink.name()));
        let consumer: StreamConsumer<RuntimeContext> =
            consumer_config(&settings).create_with_context(RuntimeContext { shared: shared.clone() })?;
        let dead_letters = DeadLetterProducer::new(&settings.kafka, &settings.dlq_topic, &settings.group_id)?;
        consumer.subscribe(&[&settings.topic])?;
        tracing::info!(topic = %settings.topic, group = %settings.group_id, sink = sink.name(), "consuming");
        let (consumer, committer) = (Arc::new(consumer), Default::default());
        Ok(Some(Self { settings, consumer, shared, committer, decoder, dead_letters, sink, sink_ready }))
    }

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
        let mut batch = Batch::new(self.shared.tracker().revocations());
        let mut commit_retry = tokio::time::interval(COMMIT_RETRY_INTERVAL);
        commit_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = batch.deadline(self.settings.batch_max_wait);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = sleep_until(deadline) => self.flush(&mut batch, shutdown).await?,
                _ = commit_retry.tick() => self.commit_pending(),
                message = self.consumer.recv() => {
                    self.accept(message, &mut batch, shutdown).await?;
                    if batch.is_full(self.settings.batch_max_events) {
                        self.flush(&mut batch, shutdown).await?;
                    }
                }
            }
        }
        tracing::info!(pending = batch.len(), "shutting down: writing the current batch");
        self.flush(&mut batch, shutdown).await
    }

    /// Decodes one record into the batch: an event, or a dead letter when it is poison. A
    /// registry outage is retried here, so the record is never skipped.
    async fn accept(
        &self,
        message: KafkaResult<BorrowedMessage<'_>>,
        batch: &mut Batch,
        shutdown: &CancellationToken,
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
        if !self.shared.tracker().received(partition, offset) {
            tracing::debug!(partition, offset, "record of a partition no longer assigned; skipped for its new owner");
            return Ok(());
        }
        ::metrics::counter!(metrics::CONSUMED, "sink" => self.shared.sink).increment(1);
        let span = record_span(&message);
        let mut backoff = Backoff::new(self.settings.retry_initial_backoff, self.settings.retry_max_backoff);
        loop {
            match self.decoder.decode(message.payload()).instrument(span.clone()).await {
                Ok(event) => {
                    let ingested_at_ms = message.headers().and_then(headers::ingested_at_ms);
                    batch.push(Record { event, partition, offset, ingested_at_ms }, span);
                    return Ok(());
                }
                Err(DecodeError::Poison { reason, message: error }) => {
                    tracing::warn!(parent: &span, partition, offset, %reason, %error, "poison record: dead-lettering");
                    batch.push_dead_letter(DeadLetter::new(message.detach(), reason, error));
                    return Ok(());
                }
                Err(DecodeError::Unavailable(error)) => {
                    // The record stays in flight: nothing at or after it is committed.
                    if shutdown.is_cancelled() {
                        return Ok(());
                    }
                    let pause = backoff.next();
                    tracing::warn!(partition, offset, %error, ?pause, "schema registry unavailable; retrying");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// Writes the batch (events to the sink, poison to the dead-letter topic) until it succeeds,
    /// then commits. A retried batch is written again whole, never skipped; after shutdown a
    /// failed batch is left uncommitted for the next owner instead.
    async fn flush(&self, batch: &mut Batch, shutdown: &CancellationToken) -> Result<(), RuntimeError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut backoff = Backoff::new(self.settings.retry_initial_backoff, self.settings.retry_max_backoff);
        let mut overflow: Option<Batch> = None;
        let mut paused = false;
        let outcome = loop {
            let handed_over = batch.drop_revoked(&self.shared.tracker());
            if handed_over > 0 {
                ::metrics::counter!(metrics::HANDED_OVER, "sink" => self.shared.sink).increment(handed_over as u64);
                tracing::info!(handed_over, "dropped in-flight records of revoked partitions");
            }
            if batch.is_empty() {
                break Ok(true);
            }
            match self.write_once(batch, backoff.attempts()).await {
                Ok(()) => break Ok(true),
                Err(WriteFailure::Fatal(error)) => break Err(error),
                Err(WriteFailure::Retry(error)) => {
                    self.sink_ready.store(false, Ordering::Relaxed);
                    ::metrics::counter!(metrics::WRITE_RETRIES, "sink" => self.shared.sink).increment(1);
                    if shutdown.is_cancelled() {
                        tracing::warn!(%error, records = batch.len(), "shutting down with an unwritten batch; it stays uncommitted");
                        break Ok(false);
                    }
                    if !paused {
                        self.set_paused(true);
                        paused = true;
                    }
                    let pause = backoff.next();
                    tracing::warn!(%error, attempt = backoff.attempts(), ?pause, records = batch.len(), "write failed; retrying the same batch");
                    self.pause_serving_rebalances(pause, &mut overflow, shutdown).await?;
                }
            }
        };
        if paused {
            self.set_paused(false);
        }
        if outcome? {
            self.complete(batch);
        }
        *batch = overflow.unwrap_or_else(|| Batch::new(self.shared.tracker().revocations()));
        Ok(())
    }

    /// One attempt at the whole batch: dead letters and the sink write run concurrently, and
    /// the batch is done only if both are.
    async fn write_once(&self, batch: &mut Batch, attempt: u32) -> Result<(), WriteFailure> {
        let span = tracing::info_span!(
            "bxb_consumer.write_batch",
            sink = self.shared.sink,
            events = batch.records.len(),
            dead_letters = batch.dead_letters.len(),
            attempt,
        );
        let started = Instant::now();
        let records = &batch.records;
        let write = async {
            if records.is_empty() { Ok(()) } else { self.sink.write(records).await }
        };
        let (dead_lettered, written) =
            tokio::join!(self.dead_letters.deliver(&mut batch.dead_letters), write.instrument(span));
        let sink = self.shared.sink;
        let outcome = match (dead_lettered, written) {
            (Err(SinkError::Fatal(message)), _) => Err(WriteFailure::Fatal(RuntimeError::DeadLetter(message))),
            (_, Err(SinkError::Fatal(message))) => Err(WriteFailure::Fatal(RuntimeError::Sink { sink, message })),
            (Err(SinkError::Retry(message)), _) | (_, Err(SinkError::Retry(message))) => Err(WriteFailure::Retry(message)),
            (Ok(()), Ok(())) => Ok(()),
        };
        let label = match &outcome {
            Ok(()) => "ok",
            Err(WriteFailure::Retry(_)) => "retry",
            Err(WriteFailure::Fatal(_)) => "fatal",
        };
        ::metrics::histogram!(metrics::WRITE_DURATION, "sink" => self.shared.sink, "outcome" => label)
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    /// Waits out a retry pause while serving rebalances. Partitions are paused, so records
    /// arrive only if fetched just before the pause; they go to the next batch.
    async fn pause_serving_rebalances(
        &self,
        pause: Duration,
        overflow: &mut Option<Batch>,
        shutdown: &CancellationToken,
    ) -> Result<(), RuntimeError> {
        let until = Instant::now() + pause;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep_until(until) => return Ok(()),
                message = self.consumer.recv() => {
                    let revocations = self.shared.tracker().revocations();
                    let next = overflow.get_or_insert_with(|| Batch::new(revocations));
                    self.accept(message, next, shutdown).await?;
                }
            }
        }
    }

    /// Marks the batch's offsets done, commits asynchronously and records what was written.
    fn complete(&self, batch: &mut Batch) {
        {
            let mut tracker = self.shared.tracker();
            for (partition, offset) in batch.offsets() {
                tracker.done(partition, offset);
            }
        }
        self.commit_pending();
        self.sink_ready.store(true, Ordering::Relaxed);

        let sink = self.shared.sink;
        ::metrics::histogram!(metrics::BATCH_SIZE, "sink" => sink).record(batch.len() as f64);
        ::metrics::counter!(metrics::WRITTEN, "sink" => sink).increment(batch.records.len() as u64);
        for letter in &batch.dead_letters {
            ::metrics::counter!(metrics::DEAD_LETTERED, "sink" => sink, "reason" => letter.reason().as_str()).increment(1);
        }
        let now = now_ms();
        let latency = ::metrics::histogram!(metrics::END_TO_END_LATENCY, "sink" => sink);
        for ingested in batch.records.iter().filter_map(|r| r.ingested_at_ms) {
            latency.record((now - ingested).max(0) as f64 / 1000.0);
        }
        tracing::debug!(written = batch.records.len(), dead_lettered = batch.dead_letters.len(), "batch complete");
    }

    fn commit_pending(&self) {
        self.committer.lock().unwrap_or_else(|e| e.into_inner()).commit_pending(&self.consumer, &self.shared);
    }

    fn set_paused(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::SeqCst);
        let result = self.consumer.assignment().and_then(|assignment| {
            if paused { self.consumer.pause(&assignment) } else { self.consumer.resume(&assignment) }
        });
        if let Err(error) = result {
            tracing::warn!(%error, paused, "could not pause or resume partitions");
        }
    }
}

/// How an attempt to write a batch failed.
enum WriteFailure {
    /// Try the same batch again after a pause.
    Retry(String),
    /// Stop: the sink or the dead-letter topic can never take it.
    Fatal(RuntimeError),
}

fn consumer_config(settings: &Settings) -> ClientConfig {
    let mut config = settings.kafka.clone();
    config
        .set("group.id", &settings.group_id)
        // Offsets move only through the runtime's explicit commits.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // Incremental rebalances revoke only the partitions that move, so the other
        // partitions' in-flight batches survive a member joining or leaving.
        .set("partition.assignment.strategy", "cooperative-sticky")
        .set("statistics.interval.ms", settings.statistics_interval_ms.to_string())
        .set("enable.partition.eof", "false");
    config
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

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Checks that every topic exists, retrying while the brokers cannot be reached. Returns false
/// if `shutdown` came first.
async fn wait_for_topics(settings: &Settings, topics: &[String], shutdown: &CancellationToken) -> Result<bool, RuntimeError> {
    let mut backoff = Backoff::new(settings.retry_initial_backoff, settings.retry_max_backoff);
    loop {
        let config = settings.kafka.clone();
        let names = topics.to_vec();
        let checked = tokio::task::spawn_blocking(move || missing_topic(&config, &names))
            .await
            .unwrap_or_else(|e| Err(KafkaError::Canceled).inspect_err(|_| tracing::error!(%e, "metadata task failed")));
        match checked {
            Ok(None) => return Ok(true),
            Ok(Some(missing)) => return Err(RuntimeError::MissingTopic(missing)),
            Err(error) => {
                let pause = backoff.next();
                tracing::warn!(%error, ?pause, "cannot read topic metadata; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return Ok(false),
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

fn missing_topic(config: &ClientConfig, topics: &[String]) -> KafkaResult<Option<String>> {
    let client: BaseConsumer = config.create()?;
    for topic in topics {
        let metadata = client.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
        let found = metadata.topics().iter().any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty());
        if !found {
            return Ok(Some(topic.clone()));
        }
    }
    Ok(None)
}
