//! The unit of work: records to write and poison records to dead-letter, completed together.
//!
//! A batch is flushed when it holds `batch_max_events` entries or when its first entry has
//! waited `batch_max_wait`, whichever comes first. Dead letters count towards the size because
//! their offsets, too, wait for the flush before they can be committed.

use std::time::Duration;

use tokio::time::Instant;

use rdkafka::message::OwnedMessage;

use crate::dead_letter::DeadLetter;
use crate::offsets::OffsetTracker;
use crate::Record;

#[derive(Default)]
pub(crate) struct Batch {
    /// Valid events, in the order they were consumed.
    pub records: Vec<Record>,
    /// The trace span of each record (parallel to `records`), ended once it is written.
    pub spans: Vec<tracing::Span>,
    /// The original message of each record the sink may refuse (parallel to `records`), so
    /// that a refusal can be dead-lettered as it was received.
    pub originals: Vec<Option<OwnedMessage>>,
    /// Poison records to produce to the dead-letter topic.
    pub dead_letters: Vec<DeadLetter>,
    /// The records the sink refused (after its write), to produce to the dead-letter topic.
    /// Their offsets are those of `records`.
    pub refusals: Vec<DeadLetter>,
    /// Whether the sink took `records` already: a retry for the dead-letter topic's sake does
    /// not write them again (nor dead-letter their refusals twice).
    pub sink_written: bool,
    opened_at: Option<Instant>,
    /// The tracker's revocation count when the batch was last checked against it.
    revocations_seen: u64,
}

impl Batch {
    pub fn new(revocations_seen: u64) -> Self {
        Self { revocations_seen, ..Self::default() }
    }

    pub fn len(&self) -> usize {
        self.records.len() + self.dead_letters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_full(&self, max_events: usize) -> bool {
        self.len() >= max_events
    }

    /// When the batch must be flushed even if not full; `None` while empty.
    pub fn deadline(&self, max_wait: Duration) -> Option<Instant> {
        self.opened_at.map(|opened| opened + max_wait)
    }

    pub fn push(&mut self, record: Record, span: tracing::Span, original: Option<OwnedMessage>) {
        self.opened_at.get_or_insert_with(Instant::now);
        self.records.push(record);
        self.spans.push(span);
        self.originals.push(original);
    }

    pub fn push_dead_letter(&mut self, dead_letter: DeadLetter) {
        self.opened_at.get_or_insert_with(Instant::now);
        self.dead_letters.push(dead_letter);
    }

    /// Drops the entries whose partition was revoked since the last check: they are no longer
    /// ours to write, and the next owner reads them again. Returns how many were dropped.
    pub fn drop_revoked(&mut self, tracker: &OffsetTracker) -> usize {
        if tracker.revocations() == self.revocations_seen {
            return 0;
        }
        self.revocations_seen = tracker.revocations();
        let before = self.len();
        let keep: Vec<bool> = self.records.iter().map(|r| tracker.is_in_flight(r.partition, r.offset)).collect();
        let mut keep_iter = keep.iter();
        self.records.retain(|_| *keep_iter.next().expect("one flag per record"));
        let mut keep_iter = keep.iter();
        self.spans.retain(|_| *keep_iter.next().expect("one flag per span"));
        let mut keep_iter = keep.iter();
        self.originals.retain(|_| *keep_iter.next().expect("one flag per original"));
        self.dead_letters.retain(|d| tracker.is_in_flight(d.partition(), d.offset()));
        self.refusals.retain(|d| tracker.is_in_flight(d.partition(), d.offset()));
        before - self.len()
    }

    /// Every (partition, offset) the batch completes once flushed.
    pub fn offsets(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        let records = self.records.iter().map(|r| (r.partition, r.offset));
        records.chain(self.dead_letters.iter().map(|d| (d.partition(), d.offset())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bxb_event::registry::PoisonReason;
    use rdkafka::message::{OwnedMessage, Timestamp};

    fn record(partition: i32, offset: i64) -> Record {
        Record {
            event: bxb_event::test_support::event_of(uuid::Uuid::nil(), format!("tx-{offset}")),
            partition,
            offset,
            appended_at_ms: 1_000 + offset,
            screened: None,
            ingested_at_ms: None,
        }
    }

    fn dead_letter(partition: i32, offset: i64) -> DeadLetter {
        let message = OwnedMessage::new(Some(vec![1]), None, "events".into(), Timestamp::NotAvailable, partition, offset, None);
        DeadLetter::new(message, PoisonReason::InvalidWireFormat, "bad".into())
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_runs_from_the_first_entry() {
        let mut batch = Batch::new(0);
        let wait = Duration::from_millis(1000);
        assert_eq!(batch.deadline(wait), None);
        let start = Instant::now();
        batch.push_dead_letter(dead_letter(0, 1));
        tokio::time::advance(Duration::from_millis(400)).await;
        batch.push(record(0, 2), tracing::Span::none(), None);
        assert_eq!(batch.deadline(wait), Some(start + wait));
    }

    #[test]
    fn dead_letters_count_towards_the_size() {
        let mut batch = Batch::new(0);
        batch.push(record(0, 0), tracing::Span::none(), None);
        assert!(!batch.is_full(2));
        batch.push_dead_letter(dead_letter(0, 1));
        assert!(batch.is_full(2));
        assert_eq!(batch.offsets().collect::<Vec<_>>(), [(0, 0), (0, 1)]);
    }

    #[test]
    fn entries_of_revoked_partitions_are_dropped_only_after_a_revocation() {
        let mut tracker = OffsetTracker::default();
        tracker.assign([0, 1]);
        let mut batch = Batch::new(tracker.revocations());
        for (p, o) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            tracker.received(p, o);
            batch.push(record(p, o), tracing::info_span!("record"), None);
        }
        tracker.received(1, 2);
        batch.push_dead_letter(dead_letter(1, 2));
        assert_eq!(batch.drop_revoked(&tracker), 0);
        tracker.revoke([1]);
        assert_eq!(batch.drop_revoked(&tracker), 3);
        assert_eq!(batch.offsets().collect::<Vec<_>>(), [(0, 0), (0, 1)]);
        assert_eq!(batch.spans.len(), batch.records.len());
    }
}
