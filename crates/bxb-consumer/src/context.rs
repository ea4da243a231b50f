//! The librdkafka callbacks: rebalances (commit before handing partitions over, start fresh on
//! assignment), asynchronous commit results, and statistics (consumer lag).
//!
//! librdkafka calls these from inside the consumer's poll, which only the runtime's own loop
//! performs, so a rebalance never runs concurrently with the loop's bookkeeping; the state is
//! behind a mutex only because the context must be `Sync`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
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
    /// When each outstanding asynchronous commit was issued, oldest first.
    async_commits: Mutex<VecDeque<Instant>>,
}

impl Shared {
    pub fn new(topic: String, sink: &'static str) -> Self {
        Self {
            topic,
            sink,
            tracker: Mutex::new(OffsetTracker::default()),
            paused: AtomicBool::new(false),
            async_commits: Mutex::new(VecDeque::new()),
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

    /// Commits `points` synchronously (shutdown, revocation), recording latency and failures.
    pub fn commit_sync<C: Consumer<X>, X: ConsumerContext>(&self, consumer: &C, points: &[(i32, i64)]) {
        if points.is_empty() {
            return;
        }
        let started = Instant::now();
        match consumer.commit(&self.commit_list(points), CommitMode::Sync) {
            Ok(()) => {
                ::metrics::histogram!(metrics::COMMIT_DURATION, "sink" => self.sink, "mode" => "sync")
                    .record(started.elapsed().as_secs_f64());
                tracing::debug!(?points, "committed offsets");
            }
            Err(error) => {
                ::metrics::counter!(metrics::COMMIT_FAILURES, "sink" => self.sink).increment(1);
                tracing::warn!(%error, ?points, "synchronous offset commit failed; the records will be read again");
            }
        }
    }

    /// Commits `points` without waiting; the result arrives in [`RuntimeContext::commit_callback`].
    pub fn commit_async<C: Consumer<X>, X: ConsumerContext>(&self, consumer: &C, points: &[(i32, i64)]) {
        if points.is_empty() {
            return;
        }
        self.async_commits.lock().unwrap_or_else(|e| e.into_inner()).push_back(Instant::now());
        if let Err(error) = consumer.commit(&self.commit_list(points), CommitMode::Async) {
            self.async_commits.lock().unwrap_or_else(|e| e.into_inner()).pop_back();
            ::metrics::counter!(metrics::COMMIT_FAILURES, "sink" => self.sink).increment(1);
            tracing::warn!(%error, "offset commit could not be issued; the next commit covers it");
        }
    }

    fn partitions_of(&self, tpl: &TopicPartitionList) -> Vec<i32> {
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

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let issued = self.shared.async_commits.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
        match result {
            Ok(()) => {
                if let Some(issued) = issued {
                    ::metrics::histogram!(metrics::COMMIT_DURATION, "sink" => self.shared.sink, "mode" => "async")
                        .record(issued.elapsed().as_secs_f64());
                }
            }
            Err(error) => {
                ::metrics::counter!(metrics::COMMIT_FAILURES, "sink" => self.shared.sink).increment(1);
                tracing::warn!(%error, ?offsets, "asynchronous offset commit failed; the next commit covers it");
            }
        }
    }
}
