//! Writing one batch: the sink and the dead-letter topic, retried until both took it, then the
//! bookkeeping that lets its offsets be committed.
//!
//! The loop keeps at most one batch in this state while it builds the next; a batch is
//! completed (its offsets marked done) only after the one before it, so commit points move
//! strictly in order.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;

use bxb_event::clock::now_ms;
use bxb_retry::Backoff;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Pipeline;
use rdkafka::message::Message;

use crate::batch::Batch;
use crate::dead_letter::DeadLetter;
use crate::{metrics, Refusal, RuntimeError, Sink, SinkError, Written};

/// The write of one batch, polled by the loop next to Kafka. It owns its batch and gives it back
/// with the outcome: written (`true`), left unwritten at shutdown (`false`), or fatal.
pub(super) type InFlightWrite<'a> = Pin<Box<dyn Future<Output = (Batch, Result<bool, RuntimeError>)> + Send + 'a>>;

/// How an attempt to write a batch failed.
enum WriteFailure {
    /// Try the same batch again after a pause.
    Retry(String),
    /// Stop: the sink or the dead-letter topic can never take it.
    Fatal(RuntimeError),
}

impl<S: Sink> Pipeline<S> {
    /// Writes the batch (events to the sink, poison to the dead-letter topic) until it succeeds.
    /// A retried batch is written again whole, never skipped, with every assigned partition
    /// paused meanwhile; after shutdown a failed batch is left uncommitted for the next owner.
    pub(super) async fn write_until_done(&self, mut batch: Batch, shutdown: &CancellationToken) -> (Batch, Result<bool, RuntimeError>) {
        let mut backoff = Backoff::new(self.settings.retry_initial_backoff, self.settings.retry_max_backoff);
        let mut paused = false;
        let outcome = loop {
            // Partitions may have been revoked while this batch waited or was written.
            let handed_over = batch.drop_revoked(&self.shared.tracker());
            if handed_over > 0 {
                ::metrics::counter!(metrics::HANDED_OVER, "sink" => self.shared.sink).increment(handed_over as u64);
                tracing::info!(handed_over, "dropped in-flight records of revoked partitions");
            }
            if batch.is_empty() {
                break Ok(true);
            }
            match self.write_once(&mut batch, backoff.attempts()).await {
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
                        self.hold_pause();
                        paused = true;
                    }
                    let pause = backoff.next();
                    tracing::warn!(%error, attempt = backoff.attempts(), ?pause, records = batch.len(), "write failed; retrying the same batch");
                    // The loop keeps polling Kafka meanwhile (rebalances are served there).
                    tokio::select! {
                        () = shutdown.cancelled() => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        };
        if paused {
            self.release_pause();
        }
        (batch, outcome)
    }

    /// One attempt at the whole batch: dead letters and the sink write run concurrently, then
    /// the records the sink refused are dead-lettered; the batch is done only once all are. A
    /// batch the sink took already is not written to it again.
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
            if records.is_empty() || batch.sink_written {
                Ok(None)
            } else {
                self.sink.write(records).await.map(Some)
            }
        };
        let (dead_lettered, written) = tokio::join!(self.dead_letters.deliver(&mut batch.dead_letters), write.instrument(span));
        let sink = self.shared.sink;
        let mut outcome = match (dead_lettered, written) {
            (Err(SinkError::Fatal(message)), _) => Err(WriteFailure::Fatal(RuntimeError::DeadLetter(message))),
            (_, Err(SinkError::Fatal(message))) => Err(WriteFailure::Fatal(RuntimeError::Sink { sink, message })),
            (Err(SinkError::Retry(message)), _) | (_, Err(SinkError::Retry(message))) => Err(WriteFailure::Retry(message)),
            (Ok(()), Ok(written)) => match written {
                Some(written) => refusals(batch, written).map_err(|message| WriteFailure::Fatal(RuntimeError::Sink { sink, message })),
                None => Ok(()),
            },
        };
        if outcome.is_ok() && !batch.refusals.is_empty() {
            outcome = self.dead_letters.deliver(&mut batch.refusals).await.map_err(|error| match error {
                SinkError::Fatal(message) => WriteFailure::Fatal(RuntimeError::DeadLetter(message)),
                SinkError::Retry(message) => WriteFailure::Retry(message),
            });
        }
        let label = match &outcome {
            Ok(()) => "ok",
            Err(WriteFailure::Retry(_)) => "retry",
            Err(WriteFailure::Fatal(_)) => "fatal",
        };
        ::metrics::histogram!(metrics::WRITE_DURATION, "sink" => self.shared.sink, "outcome" => label)
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    /// Settles a batch's write: a written batch is completed, an unwritten one stays
    /// uncommitted, a fatal failure stops the loop.
    pub(super) fn finish_write(&self, batch: &Batch, outcome: Result<bool, RuntimeError>) -> Result<(), RuntimeError> {
        if outcome? {
            self.complete(batch);
        }
        Ok(())
    }

    /// Marks the batch's offsets done, commits asynchronously and records what was written.
    fn complete(&self, batch: &Batch) {
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
        ::metrics::counter!(metrics::WRITTEN, "sink" => sink).increment((batch.records.len() - batch.refusals.len()) as u64);
        for letter in batch.dead_letters.iter().chain(&batch.refusals) {
            ::metrics::counter!(metrics::DEAD_LETTERED, "sink" => sink, "reason" => letter.reason().as_str()).increment(1);
        }
        let now = now_ms();
        let latency = ::metrics::histogram!(metrics::END_TO_END_LATENCY, "sink" => sink);
        for ingested in batch.records.iter().filter_map(|r| r.ingested_at_ms) {
            latency.record((now - ingested).max(0) as f64 / 1000.0);
        }
        tracing::debug!(
            written = batch.records.len() - batch.refusals.len(),
            dead_lettered = batch.dead_letters.len() + batch.refusals.len(),
            "batch complete"
        );
    }
}

/// Records the sink's write as done and turns its refusals into dead letters of the original
/// messages. A refusal of a record that was not screened (no original kept), or of one outside
/// the batch, is a defect of the sink: fatal, rather than a record lost.
fn refusals(batch: &mut Batch, written: Written) -> Result<(), String> {
    let mut letters = Vec::with_capacity(written.refused.len());
    for Refusal { index, reason, error } in written.refused {
        let original = batch
            .originals
            .get(index)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("the sink refused record {index} of the batch ({reason}: {error}), one it had not screened"))?;
        tracing::warn!(partition = original.partition(), offset = original.offset(), %reason, %error, "refused by the sink: dead-lettering");
        letters.push(DeadLetter::new(original.clone(), reason, error));
    }
    batch.sink_written = true;
    batch.refusals = letters;
    Ok(())
}
