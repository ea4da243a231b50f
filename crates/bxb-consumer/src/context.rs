//! The librdkafka callbacks: rebalances (commit before handing partitions over, start fresh on
//! assignment) and statistics (consumer lag); and the commits themselves.
//!
//! librdkafka calls these from inside the consumer's poll, which only the runtime's own loop
//! performs, so a rebalance never runs concurrently with the loop's bookkeeping; the state is
//! behind a mutex only because the context must be `Sync`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::metrics;
use crate::offsets::OffsetTracker;

/// What the loop and the callbacks share.
pub(crate) struct Shared {
    pub topic: String,
    pub sink: &'static str,
    tracker: Mutex<OffsetTracker>,
    /// Set while a batch is being retried: newly assigned partitions are paused too.
    pub paused: AtomicBool,
}

impl Shared {
    pub fn new(topic: String, sink: &'static str) -> Self {
        Self {
            topic,
            sink,
            tracker: Mutex::new(OffsetTracker::default()),
            paused: AtomicBool::new(false),
        }
    }

    pub fn tracker(&self) -> MutexGuard<'_, OffsetTracker> {
        // A panic while holding the lock leaves consistent-enough state: the tracker's methods
        // do not panic midway.
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

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

    pub fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<i32> {
        tpl.elements_for_topic(&self.topic).iter().map(|e| e.partition()).collect()
    }
}

pub(crate) struct RuntimeContext {
    pub shared: Arc<Shared>,
}

impl ClientContext for RuntimeContext {
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.shared.topic) else { return };
        for (partition, stats) in &topic.partitions {
            // -1 is the internal "unassigned" partition; a lag of -1 means not known (yet).
            if *partition >= 0 && stats.consumer_lag >= 0 {
                ::metrics::gauge!(metrics::LAG, "sink" => self.shared.sink, "partition" => partition.to_string())
                    .set(stats.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for RuntimeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let partitions = self.shared.partitions_of(tpl);
                let points = self.shared.tracker().revoke(partitions.iter().copied());
                tracing::info!(?partitions, ?points, "partitions revoked");
                if consumer.assignment_lost() {
                    // Another member may own them already: committing could move its position.
                    tracing::warn!(?partitions, "assignment lost; not committing");
                } else {
                    self.shared.commit_sync(consumer, &points);
                }
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => tracing::error!(%error, "rebalance failed"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions = self.shared.partitions_of(tpl);
            self.shared.tracker().assign(partitions.iter().copied());
            tracing::info!(?partitions, "partitions assigned");
            if self.shared.paused.load(Ordering::SeqCst) {
                if let Err(error) = consumer.pause(tpl) {
                    tracing::warn!(%error, "could not pause newly assigned partitions");
                }
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
