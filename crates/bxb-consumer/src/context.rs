//! The librdkafka client context: the state the runtime's loop shares with librdkafka's
//! callbacks ([`Shared`]), and the statistics callback that reports consumer lag. The rebalance
//! callbacks are in `rebalance`, the commits in `commit`.
//!
//! librdkafka calls the callbacks from inside the consumer's poll, which only the runtime's own
//! loop performs, so a rebalance never runs concurrently with the loop's bookkeeping; the state
//! is behind a mutex only because the context must be `Sync`.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, TopicPartitionList};

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
        Self { topic, sink, tracker: Mutex::new(OffsetTracker::default()), paused: AtomicBool::new(false) }
    }

    pub fn tracker(&self) -> MutexGuard<'_, OffsetTracker> {
        // A panic while holding the lock leaves consistent-enough state: the tracker's methods
        // do not panic midway.
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
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
