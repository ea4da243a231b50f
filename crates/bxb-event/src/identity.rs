//! Which record of an identity counts: the rule both stores, `bxbctl backfill` and the checks
//! implement (argued in `docs/identity.md`).
//!
//! An identity is (organization_id, transaction_id). Of the Kafka records that carry one, the
//! FIRST is the one of lowest [`Rank`]: the broker's append time (the topic's
//! `message.timestamp.type=LogAppendTime`), then the partition, then the offset. It is the record
//! that reached Kafka first, by the clock of the broker that appended it; partition and offset
//! only break ties of one millisecond, deterministically. Event timestamps never rank: clients
//! choose them. The first record decides everything about its identity: code, timestamp,
//! values, and whether it is billable. A record that is dead-lettered is not stored and never
//! ranks.
//!
//! Rows stored before the rule existed have no append time; they rank with
//! [`LEGACY_APPENDED_AT_MS`], before every record ranked since, in (partition, offset) order,
//! which is the order the stores used before (see `docs/deployment.md`, upgrading).

/// The append time of rows written before the rule: before any real append time.
pub const LEGACY_APPENDED_AT_MS: i64 = 0;

/// The position of a record in the identity rule; lower is first. The derived order compares
/// the fields in declaration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    /// The record's Kafka timestamp: the broker's append time on a `LogAppendTime` topic.
    pub appended_at_ms: i64,
    pub partition: i32,
    pub offset: i64,
}

impl Rank {
    pub fn new(appended_at_ms: i64, partition: i32, offset: i64) -> Self {
        Self { appended_at_ms, partition, offset }
    }

    /// Whether this is the same Kafka record as `other` (a re-delivery): same partition and
    /// offset. Its append time may differ only for a legacy row.
    pub fn same_record(&self, other: &Rank) -> bool {
        self.partition == other.partition && self.offset == other.offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_append_time_ranks_before_partition_and_offset() {
        let early_in_a_later_partition = Rank::new(1_000, 5, 900);
        let late_in_partition_zero = Rank::new(1_001, 0, 1);
        assert!(early_in_a_later_partition < late_in_partition_zero);
        // One millisecond: the partition, then the offset, break the tie.
        assert!(Rank::new(1_000, 0, 900) < Rank::new(1_000, 1, 1));
        assert!(Rank::new(1_000, 1, 1) < Rank::new(1_000, 1, 2));
    }

    #[test]
    fn legacy_rows_rank_before_everything_ranked_since() {
        assert!(Rank::new(LEGACY_APPENDED_AT_MS, 7, 1 << 40) < Rank::new(1, 0, 0));
        assert!(Rank::new(LEGACY_APPENDED_AT_MS, 0, 5).same_record(&Rank::new(1_700_000_000_000, 0, 5)));
    }
}
