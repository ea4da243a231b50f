//! Which offset each partition may commit.
//!
//! The rule: per partition, commit exactly the offset after the longest prefix of received
//! records that are all written or dead-lettered. A record still in flight (being batched,
//! written or retried) holds the commit point at its own offset, however many later records are
//! done. Offsets Kafka never delivers (transaction markers, compacted records) are skipped
//! naturally because the point only ever lands on a delivered in-flight offset or just after
//! the highest delivered one. A partition with nothing done since its assignment has no commit
//! point at all, so the group's committed offset is left exactly as it was.
//!
//! A partition exists here only while it is assigned: revocation forgets its state, and records
//! of it that are still in flight must then be dropped by the caller (the next owner reads them
//! again from the committed offset).

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
struct PartitionOffsets {
    /// Received and neither written nor dead-lettered yet.
    in_flight: BTreeSet<i64>,
    /// The first offset received since the assignment: a commit point there is no progress.
    first_received: Option<i64>,
    /// One past the highest offset received.
    next_after_received: Option<i64>,
    /// The last commit point handed out for committing.
    committed: Option<i64>,
}

impl PartitionOffsets {
    /// `None` until something is done: committing the first received offset would only
    /// restate where the group already is (or create a commit where there was none).
    fn commit_point(&self) -> Option<i64> {
        let point = self.in_flight.first().copied().or(self.next_after_received)?;
        (Some(point) != self.first_received).then_some(point)
    }
}

/// The commit state of every assigned partition of one topic.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    partitions: BTreeMap<i32, PartitionOffsets>,
    /// Bumped on every revocation, so holders of in-flight records know to re-check them.
    revocations: u64,
}

impl OffsetTracker {
    /// Starts tracking newly assigned partitions from scratch.
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = i32>) {
        for partition in partitions {
            self.partitions.insert(partition, PartitionOffsets::default());
        }
    }

    /// Stops tracking revoked partitions and returns the commit point of each (the last one to
    /// commit before handing the partition over), whether or not it was committed before.
    pub fn revoke(&mut self, partitions: impl IntoIterator<Item = i32>) -> Vec<(i32, i64)> {
        self.revocations += 1;
        partitions.into_iter().filter_map(|p| self.partitions.remove(&p).and_then(|state| Some((p, state.commit_point()?)))).collect()
    }

    /// How many revocations happened so far.
    pub fn revocations(&self) -> u64 {
        self.revocations
    }

    #[cfg(test)]
    pub fn is_assigned(&self, partition: i32) -> bool {
        self.partitions.contains_key(&partition)
    }

    /// Records that `offset` arrived. Returns false when the partition is not assigned (a
    /// record fetched before a revocation): the caller must drop it unprocessed.
    pub fn received(&mut self, partition: i32, offset: i64) -> bool {
        let Some(state) = self.partitions.get_mut(&partition) else {
            return false;
        };
        state.in_flight.insert(offset);
        state.first_received.get_or_insert(offset);
        state.next_after_received = Some(state.next_after_received.map_or(offset + 1, |n| n.max(offset + 1)));
        true
    }

    /// Whether `offset` is still awaiting its write under the current assignment.
    pub fn is_in_flight(&self, partition: i32, offset: i64) -> bool {
        self.partitions.get(&partition).is_some_and(|s| s.in_flight.contains(&offset))
    }

    /// Records that `offset` is written or dead-lettered. Unknown offsets (of a partition
    /// revoked meanwhile) are ignored.
    pub fn done(&mut self, partition: i32, offset: i64) {
        if let Some(state) = self.partitions.get_mut(&partition) {
            state.in_flight.remove(&offset);
        }
    }

    /// Forgets that the points of `partitions` were handed out, after the broker refused their
    /// commit (e.g. during a rebalance), so the next [`Self::take_commit_points`] repeats them.
    pub fn commit_failed(&mut self, partitions: impl IntoIterator<Item = i32>) {
        for partition in partitions {
            if let Some(state) = self.partitions.get_mut(&partition) {
                state.committed = None;
            }
        }
    }

    /// The partitions whose commit point moved since it was last handed out, with that point,
    /// remembered as handed out. With `all`, every partition's point (for a final synchronous
    /// commit that must also cover an asynchronous commit that may have failed).
    pub fn take_commit_points(&mut self, all: bool) -> Vec<(i32, i64)> {
        let mut points = Vec::new();
        for (&partition, state) in &mut self.partitions {
            let Some(point) = state.commit_point() else { continue };
            if all || state.committed.is_none_or(|c| point > c) {
                state.committed = Some(point);
                points.push((partition, point));
            }
        }
        points
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tracker(partitions: &[i32]) -> OffsetTracker {
        let mut t = OffsetTracker::default();
        t.assign(partitions.iter().copied());
        t
    }

    #[test]
    fn nothing_to_commit_before_anything_arrives() {
        let mut t = tracker(&[0]);
        assert_eq!(t.take_commit_points(true), []);
    }

    #[test]
    fn an_unwritten_record_holds_the_commit_point_however_many_later_ones_are_done() {
        let mut t = tracker(&[0]);
        for offset in 10..15 {
            assert!(t.received(0, offset));
        }
        // 11 and 13 dead-lettered, the rest still in the batch: no progress yet.
        t.done(0, 11);
        t.done(0, 13);
        assert_eq!(t.take_commit_points(true), []);
        t.done(0, 10);
        assert_eq!(t.take_commit_points(false), [(0, 12)]);
        t.done(0, 12);
        t.done(0, 14);
        assert_eq!(t.take_commit_points(false), [(0, 15)]);
        // Nothing moved: nothing to commit again, unless asked for all.
        assert_eq!(t.take_commit_points(false), []);
        assert_eq!(t.take_commit_points(true), [(0, 15)]);
    }

    #[test]
    fn a_refused_commit_is_handed_out_again() {
        let mut t = tracker(&[0, 1]);
        for p in [0, 1] {
            t.received(p, 0);
            t.done(p, 0);
        }
        assert_eq!(t.take_commit_points(false), [(0, 1), (1, 1)]);
        assert_eq!(t.take_commit_points(false), []);
        t.commit_failed([1]);
        assert_eq!(t.take_commit_points(false), [(1, 1)]);
    }

    #[test]
    fn gaps_kafka_never_delivers_are_committed_past() {
        let mut t = tracker(&[3]);
        t.received(3, 5);
        t.received(3, 7); // 6 is a transaction marker
        t.done(3, 5);
        assert_eq!(t.take_commit_points(false), [(3, 7)]);
        t.done(3, 7);
        assert_eq!(t.take_commit_points(false), [(3, 8)]);
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = tracker(&[0, 1]);
        t.received(0, 0);
        t.received(1, 100);
        t.received(1, 101);
        t.done(1, 100);
        t.done(1, 101);
        assert_eq!(t.take_commit_points(false), [(1, 102)]);
        t.done(0, 0);
        assert_eq!(t.take_commit_points(false), [(0, 1)]);
    }

    #[test]
    fn revocation_hands_back_the_point_and_forgets_in_flight_records() {
        let mut t = tracker(&[0, 1]);
        t.received(0, 1);
        t.received(0, 2);
        t.received(1, 7);
        t.done(0, 1);
        let before = t.revocations();
        assert_eq!(t.revoke([0, 1]), [(0, 2)], "partition 1 made no progress: nothing to commit");
        assert!(t.revocations() > before);
        assert!(!t.is_assigned(0));
        assert!(!t.is_in_flight(0, 2));
        // A record fetched before the revocation is refused; marking it done changes nothing.
        assert!(!t.received(0, 3));
        t.done(0, 2);
        assert_eq!(t.take_commit_points(true), []);
    }

    #[test]
    fn reassignment_starts_fresh_so_stale_completions_cannot_move_the_point() {
        let mut t = tracker(&[0]);
        t.received(0, 50);
        t.revoke([0]);
        t.assign([0]);
        // The old batch finishes writing offset 50 after the partition came back ...
        t.done(0, 50);
        // ... but the new epoch re-reads from the committed offset 40 and 40 is not written.
        t.received(0, 40);
        t.received(0, 41);
        assert_eq!(t.take_commit_points(true), []);
        t.done(0, 40);
        assert_eq!(t.take_commit_points(false), [(0, 41)]);
    }

    proptest! {
        /// Whatever order records finish in, the commit point is never past an unfinished
        /// record and always at the first unfinished one (or after the last received).
        #[test]
        fn the_point_is_the_first_unfinished_offset(done_mask in proptest::collection::vec(any::<bool>(), 1..200)) {
            let mut t = tracker(&[0]);
            for offset in 0..done_mask.len() as i64 {
                t.received(0, offset);
            }
            for (offset, done) in done_mask.iter().enumerate() {
                if *done {
                    t.done(0, offset as i64);
                }
            }
            let expected = done_mask.iter().position(|d| !d).unwrap_or(done_mask.len()) as i64;
            let points = if expected == 0 { vec![] } else { vec![(0, expected)] };
            prop_assert_eq!(t.take_commit_points(true), points);
        }
    }
}
