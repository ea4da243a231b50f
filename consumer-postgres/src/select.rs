//! Which records of a batch are written: billable, inside the accepted time window, and the
//! first of their identity within the batch.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use bxb_consumer::Record;
use uuid::Uuid;

use crate::billable::BillableView;
use crate::partitions::Window;

/// Why a record of a batch was not handed to PostgreSQL. The runtime commits these offsets like
/// written ones: `write` succeeded for the batch as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skip {
    /// The code is not a billable metric of the organization.
    NotBillable,
    /// Older than the oldest partition retention keeps: it would be dropped at once, and its
    /// identity key may already be forgotten, so writing it could count it twice.
    TooOld,
    /// Further in the future than `BXB_POSTGRES_MAX_FUTURE_DAYS`.
    TooFarInFuture,
    /// Another record of the same batch has the same identity and comes first.
    DuplicateInBatch,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotBillable => "not_billable",
            Self::TooOld => "too_old",
            Self::TooFarInFuture => "too_far_in_future",
            Self::DuplicateInBatch => "duplicate_in_batch",
        }
    }
}

/// The records to write, in batch order, and how many were skipped for each reason.
#[derive(Debug, Default)]
pub struct Selection<'a> {
    pub records: Vec<&'a Record>,
    pub skipped: HashMap<Skip, u64>,
}

/// Picks the records of `batch` to write.
///
/// Within a batch, of several records with one (organization_id, transaction_id) the FIRST — the
/// lowest (partition, offset) — is kept. Across batches the key table does the same: the batch
/// written earlier wins and later ones find the key taken. The ClickHouse billing queries resolve
/// duplicates by the same earliest-offset rule, so both stores agree on which version of a
/// retried event counts.
pub fn select<'a>(batch: &'a [Record], billable: &BillableView<'_>, window: Window) -> Selection<'a> {
    let mut selection = Selection::default();
    let mut first_of: HashMap<(Uuid, &str), usize> = HashMap::new();
    let mut keep: Vec<Option<&Record>> = Vec::with_capacity(batch.len());
    for record in batch {
        let event = &record.event;
        let skip = if !billable.is_billable(&event.organization_id, &event.code) {
            Some(Skip::NotBillable)
        } else if event.timestamp_ms < window.from_ms {
            Some(Skip::TooOld)
        } else if event.timestamp_ms > window.until_ms {
            Some(Skip::TooFarInFuture)
        } else {
            None
        };
        if let Some(skip) = skip {
            *selection.skipped.entry(skip).or_default() += 1;
            continue;
        }
        match first_of.entry((event.organization_id, event.transaction_id.as_str())) {
            Entry::Vacant(slot) => {
                slot.insert(keep.len());
                keep.push(Some(record));
            }
            Entry::Occupied(slot) => {
                *selection.skipped.entry(Skip::DuplicateInBatch).or_default() += 1;
                let kept = keep[*slot.get()].expect("kept records stay");
                // The runtime hands records over in offset order, but do not rely on it.
                if (record.partition, record.offset) < (kept.partition, kept.offset) {
                    keep[*slot.get()] = Some(record);
                }
            }
        }
    }
    selection.records = keep.into_iter().flatten().collect();
    selection
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::billable::BillableMetrics;
    use bxb_event::{test_support, Event};

    /// A record of the crate's unit tests: the identity, code, time and offset that matter here.
    pub(crate) fn record(org: u128, tx: &str, code: &str, ts: i64, offset: i64) -> Record {
        Record {
            event: Event { code: code.into(), timestamp_ms: ts, ..test_support::event_of(Uuid::from_u128(org), tx) },
            partition: 0,
            offset,
            ingested_at_ms: None,
        }
    }

    fn with_view<T>(f: impl FnOnce(&BillableView<'_>) -> T) -> T {
        let billable = BillableMetrics::new(["calls".to_owned()]);
        billable.set_for_tests(Default::default());
        let view = billable.view().unwrap();
        f(&view)
    }

    #[test]
    fn skips_what_is_not_billable_or_outside_the_window() {
        let window = Window { from_ms: 100, until_ms: 200 };
        let batch = [
            record(1, "a", "calls", 150, 0),
            record(1, "b", "other", 150, 1),
            record(1, "c", "calls", 99, 2),
            record(1, "d", "calls", 201, 3),
            record(1, "e", "calls", 100, 4),
            record(1, "f", "calls", 200, 5),
        ];
        let selection = with_view(|view| select(&batch, view, window));
        let kept: Vec<_> = selection.records.iter().map(|r| r.event.transaction_id.as_str()).collect();
        assert_eq!(kept, ["a", "e", "f"]);
        assert_eq!(selection.skipped[&Skip::NotBillable], 1);
        assert_eq!(selection.skipped[&Skip::TooOld], 1);
        assert_eq!(selection.skipped[&Skip::TooFarInFuture], 1);
    }

    #[test]
    fn the_first_record_of_an_identity_wins() {
        let window = Window { from_ms: 0, until_ms: i64::MAX };
        let batch = [
            record(1, "a", "calls", 10, 5),
            record(2, "a", "calls", 11, 6),
            record(1, "a", "calls", 12, 7),
            record(1, "a", "calls", 13, 4), // out of order: the lowest offset still wins
        ];
        let selection = with_view(|view| select(&batch, view, window));
        let kept: Vec<_> = selection.records.iter().map(|r| (r.event.timestamp_ms, r.offset)).collect();
        assert_eq!(kept, [(13, 4), (11, 6)]);
        assert_eq!(selection.skipped[&Skip::DuplicateInBatch], 2);
    }
}
