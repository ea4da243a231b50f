//! The rebalance callbacks: before partitions are handed over, commit what is written of them
//! and forget their in-flight records (the new owner reads them again); after an assignment,
//! start the new partitions fresh, paused if the loop holds a pause and resumed otherwise.

use std::sync::atomic::Ordering;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};

use crate::context::RuntimeContext;

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
            // Set the state either way: librdkafka keeps a partition's pause across its revocation,
            // so a partition revoked while paused and assigned again after the pause ended would
            // otherwise never be fetched again (found by tests/hostile_consumer.rs).
            let paused = self.shared.paused.load(Ordering::SeqCst);
            let set = if paused { consumer.pause(tpl) } else { consumer.resume(tpl) };
            if let Err(error) = set {
                tracing::warn!(%error, paused, "could not pause or resume newly assigned partitions");
            }
        }
    }
}
