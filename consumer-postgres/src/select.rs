//! What a batch does to PostgreSQL under the identity rule (`bxb_event::identity`): which record
//! of each identity can decide it, whether it is billable, which records are refused, and, given
//! what `event_keys` holds, what to write. Pure functions; the sink runs the statements.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use bxb_consumer::{Record, Refusal};
use bxb_event::identity::Rank;
use bxb_event::registry::PoisonReason;
use uuid::Uuid;

use crate::billable::BillableView;
use crate::partitions::Window;

/// A record that can decide its identity: the best ranked of the batch's records of it, not
/// refused, with its judgment at its append time.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub record: &'a Record,
    pub billable: bool,
}

impl Candidate<'_> {
    pub fn rank(&self) -> Rank {
        self.record.rank()
    }
}

/// The candidates of a batch (one per identity, in batch order), the refusals, and how many
/// records were set aside as worse-ranked records of an identity of the same batch.
#[derive(Debug, Default)]
pub struct Selection<'a> {
    pub candidates: Vec<Candidate<'a>>,
    pub refused: Vec<Refusal>,
    pub duplicates_in_batch: u64,
}

/// Picks each identity's candidate. A record screened at intake (near or outside the time range
/// the partitions keep) that is outside `window` now is refused when billable: it goes to the
/// dead-letter topic, and, dead-lettered, does not rank. When not billable it still decides its
/// identity (its key is kept, no row): a billable retry of worse rank must not be billed.
pub fn select<'a>(batch: &'a [Record], billable: &BillableView<'_>, window: Window) -> Selection<'a> {
    let mut selection = Selection::default();
    let mut candidate_of: HashMap<(Uuid, &str), usize> = HashMap::new();
    for (index, record) in batch.iter().enumerate() {
        let event = &record.event;
        let is_billable = billable.is_billable_at(&event.organization_id, &event.code, record.appended_at_ms);
        if record.screened.is_some() && is_billable && !window.contains(event.timestamp_ms) {
            let reason = if event.timestamp_ms < window.from_ms { PoisonReason::TooOld } else { PoisonReason::TooFarInFuture };
            selection.refused.push(Refusal {
                index,
                reason,
                error: format!(
                    "billable event with timestamp {} ms, outside the time range consumer-postgres stores (its retention and BXB_POSTGRES_MAX_FUTURE_DAYS)",
                    event.timestamp_ms
                ),
            });
            continue;
        }
        let candidate = Candidate { record, billable: is_billable };
        match candidate_of.entry((event.organization_id, event.transaction_id.as_str())) {
            Entry::Vacant(slot) => {
                slot.insert(selection.candidates.len());
                selection.candidates.push(candidate);
            }
            Entry::Occupied(slot) => {
                selection.duplicates_in_batch += 1;
                let kept = &mut selection.candidates[*slot.get()];
                if candidate.rank() < kept.rank() {
                    *kept = candidate;
                }
            }
        }
    }
    selection
}

/// What `event_keys` holds for an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredKey {
    pub rank: Rank,
    /// The timestamp of the stored record (and of its row in `events`, when billable).
    pub timestamp_ms: i64,
    pub billable: bool,
}

/// What a candidate does to its identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A new identity: its key, and its row when billable.
    Insert,
    /// A better-ranked record than the stored one: it takes the key; the old row (if any)
    /// goes, the new one (if billable) comes.
    Replace { old: StoredKey },
    /// The stored record itself, judged otherwise now (a metric made billable, or no longer,
    /// for its append time): the row comes or goes.
    Rejudge { old: StoredKey },
    /// The stored record stays as it is.
    Keep,
}

pub fn resolve(stored: Option<&StoredKey>, candidate: &Candidate<'_>) -> Action {
    let Some(old) = stored else { return Action::Insert };
    let rank = candidate.rank();
    if rank < old.rank {
        Action::Replace { old: *old }
    } else if rank == old.rank && candidate.billable != old.billable {
        Action::Rejudge { old: *old }
    } else {
        Action::Keep
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::billable::BillableMetrics;
    use bxb_event::{test_support, Event};

    const EVERYTHING: Window = Window { from_ms: i64::MIN, until_ms: i64::MAX };

    /// A record of the crate's unit tests: the identity, code, time and place that matter here;
    /// appended at 1 000 000 + offset.
    pub(crate) fn record(org: u128, tx: &str, code: &str, ts: i64, offset: i64) -> Record {
        Record {
            event: Event { code: code.into(), timestamp_ms: ts, ..test_support::event_of(Uuid::from_u128(org), tx) },
            partition: 0,
            offset,
            appended_at_ms: 1_000_000 + offset,
            screened: None,
            ingested_at_ms: None,
        }
    }

    fn with_view<T>(f: impl FnOnce(&BillableView<'_>) -> T) -> T {
        let billable = BillableMetrics::new(["calls".to_owned()]);
        billable.set_for_tests(Default::default());
        let view = billable.view().unwrap();
        f(&view)
    }

    fn ids<'a>(candidates: &[Candidate<'a>]) -> Vec<(&'a str, i64, bool)> {
        candidates.iter().map(|c| (c.record.event.transaction_id.as_str(), c.record.offset, c.billable)).collect()
    }

    #[test]
    fn non_billable_records_decide_their_identity_and_screened_billable_ones_are_refused() {
        let screened = |tx, code, ts, offset| Record { screened: Some(PoisonReason::TooOld), ..record(1, tx, code, ts, offset) };
        let batch = [
            record(1, "a", "calls", 150, 0),
            record(1, "b", "other", 150, 1),
            screened("c", "calls", 99, 2),
            screened("d", "other", 99, 3),
            screened("e", "calls", 201, 4),
            // Screened near the edge, inside the window now: stored.
            screened("f", "calls", 100, 5),
        ];
        let window = Window { from_ms: 100, until_ms: 200 };
        let selection = with_view(|view| select(&batch, view, window));
        assert_eq!(ids(&selection.candidates), [("a", 0, true), ("b", 1, false), ("d", 3, false), ("f", 5, true)]);
        let refused: Vec<_> = selection.refused.iter().map(|r| (r.index, r.reason)).collect();
        assert_eq!(refused, [(2, PoisonReason::TooOld), (4, PoisonReason::TooFarInFuture)]);
    }

    #[test]
    fn the_best_ranked_record_of_an_identity_is_its_candidate_whatever_the_order() {
        let mut other_partition_earlier = record(1, "a", "other", 13, 90);
        other_partition_earlier.partition = 3;
        other_partition_earlier.appended_at_ms = 1_000_004; // before offsets 5 and 7 of partition 0
        let batch =
            [record(1, "a", "calls", 10, 5), record(2, "a", "calls", 11, 6), record(1, "a", "calls", 12, 7), other_partition_earlier];
        let selection = with_view(|view| select(&batch, view, EVERYTHING));
        // The first record of (1, "a") is not billable: it decides, and the billable ones lose.
        assert_eq!(ids(&selection.candidates), [("a", 90, false), ("a", 6, true)]);
        assert_eq!(selection.duplicates_in_batch, 2);
    }

    #[test]
    fn a_refused_record_does_not_rank() {
        let refused = Record { screened: Some(PoisonReason::TooOld), ..record(1, "a", "calls", 10, 1) };
        let batch = [refused, record(1, "a", "calls", 20, 2)];
        let selection = with_view(|view| select(&batch, view, Window { from_ms: 15, until_ms: 100 }));
        assert_eq!(ids(&selection.candidates), [("a", 2, true)]);
        assert_eq!(selection.duplicates_in_batch, 0);
    }

    #[test]
    fn what_a_candidate_does_given_the_stored_key() {
        let batch = [record(1, "a", "calls", 10, 5)];
        let candidate = Candidate { record: &batch[0], billable: true };
        let stored = |rank: Rank, billable| StoredKey { rank, timestamp_ms: 7, billable };
        assert_eq!(resolve(None, &candidate), Action::Insert);
        let worse = stored(Rank::new(1_000_005, 0, 6), false);
        assert_eq!(resolve(Some(&worse), &candidate), Action::Replace { old: worse });
        let better = stored(Rank::new(1_000_004, 1, 0), false);
        assert_eq!(resolve(Some(&better), &candidate), Action::Keep);
        let same_not_billable = stored(candidate.rank(), false);
        assert_eq!(resolve(Some(&same_not_billable), &candidate), Action::Rejudge { old: same_not_billable });
        assert_eq!(resolve(Some(&stored(candidate.rank(), true)), &candidate), Action::Keep);
        // A legacy row of the same record ranks first: kept, whatever the judgment now.
        let legacy = stored(Rank::new(0, 0, 5), false);
        assert_eq!(resolve(Some(&legacy), &candidate), Action::Keep);
    }
}
