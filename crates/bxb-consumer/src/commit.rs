//! Committing offsets: the points the offset tracker hands out, synchronously with the broker
//! (at shutdown and on revocation) or off the loop on a blocking thread ([`Committer`]).

use std::sync::Arc;
use std::time::Instant;

use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::context::{RuntimeContext, Shared};
use crate::metrics;

impl Shared {
    /// The topic-partition list of `points` to commit.
    pub fn commit_list(&self, points: &[(i32, i64)]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::with_capacity(points.len());
        for &(partition, offset) in points {
            // Adding a partition of a valid topic with an absolute offset cannot fail.
            let _ = tpl.add_partition_offset(&self.topic, partition, Offset::Offset(offset));
        }
        tpl
    }

    /// Commits `points` and waits for the broker, recording latency and failures. Returns
    /// whether the broker took them.
    pub fn commit_sync<C: Consumer<X>, X: ConsumerContext>(&self, consumer: &C, points: &[(i32, i64)]) -> bool {
        if points.is_empty() {
            return true;
        }
        let started = Instant::now();
        match consumer.commit(&self.commit_list(points), CommitMode::Sync) {
            Ok(()) => {
                ::metrics::histogram!(metrics::COMMIT_DURATION, "sink" => self.sink).record(started.elapsed().as_secs_f64());
                tracing::debug!(?points, "committed offsets");
                true
            }
            Err(error) => {
                ::metrics::counter!(metrics::COMMIT_FAILURES, "sink" => self.sink).increment(1);
                tracing::warn!(%error, ?points, "offset commit failed; it is repeated later, or the records are read again");
                false
            }
        }
    }
}

/// Commits written offsets off the consumer loop, one commit at a time so that commits reach
/// the broker in order. librdkafka reports the result of an asynchronous manual commit only
/// through a callback rdkafka's event API does not install, so commits are synchronous calls on
/// a blocking thread: the loop never waits for them, and a refused commit (typically during a
/// rebalance) is noticed and repeated.
#[derive(Default)]
pub(crate) struct Committer {
    in_flight: Option<tokio::task::JoinHandle<()>>,
}

impl Committer {
    /// Starts committing every point that moved or was refused, unless a commit is still
    /// running (the next call, at the latest a second later, commits what it left).
    pub fn commit_pending(&mut self, consumer: &Arc<StreamConsumer<RuntimeContext>>, shared: &Arc<Shared>) {
        if self.in_flight.as_ref().is_some_and(|commit| !commit.is_finished()) {
            return;
        }
        let points = shared.tracker().take_commit_points(false);
        if points.is_empty() {
            self.in_flight = None;
            return;
        }
        let (consumer, shared) = (consumer.clone(), shared.clone());
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            if !shared.commit_sync(consumer.as_ref(), &points) {
                shared.tracker().commit_failed(points.iter().map(|(p, _)| *p));
            }
        }));
    }

    /// Waits for the commit in flight, if any.
    pub async fn finish(&mut self) {
        if let Some(commit) = self.in_flight.take() {
            let _ = commit.await;
        }
    }
}
