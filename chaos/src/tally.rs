//! Comparing a store with the truth ([`crate::truth`]): per (organization, code, hour) the
//! events the store bills against the truth's (fewer is lost, more is double counted, the same
//! number with other sums is a value mismatch), and per identity which ones it lacks. Nothing
//! is clamped, so a store that drops events while holding their identities elsewhere shows.
//! Identities nobody was told were accepted are reported apart.

use std::collections::HashSet;

use uuid::Uuid;

use crate::truth::{Bucket, BucketKey, Buckets, EXAMPLES};

/// (organization_id, transaction_id): what the pipeline counts once.
pub type Identity = (Uuid, String);

/// Relative difference beyond which two value sums differ (the stores sum floats in another
/// order than the truth).
const VALUE_SUM_TOLERANCE: f64 = 1e-9;

/// One bucket where a store and the truth differ.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BucketMismatch {
    pub organization_id: Uuid,
    pub code: String,
    /// The hour's start, UTC.
    pub hour: String,
    pub expected: Bucket,
    pub found: Bucket,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StoreTally {
    pub store: String,
    /// Distinct identities the truth says this store must hold.
    pub expected: usize,
    /// Distinct identities found in the store.
    pub found: usize,
    /// Identities of the truth the store does not hold.
    pub identities_lost: usize,
    /// Identities in the store that were never offered (or offered and never accepted).
    pub unexpected: usize,
    /// Buckets of the truth or of the store.
    pub buckets: usize,
    /// Events of the truth's buckets.
    pub truth_events: u64,
    /// What the store's billing says (the billing query's events, or rows of `events`).
    pub counted: u64,
    /// Events the store's buckets lack, plus the accepted identities the topic lacks.
    pub lost: u64,
    /// Events the store's buckets have beyond the truth's.
    pub double_counted: u64,
    /// Buckets with the right count and another value or decimal value sum.
    pub value_mismatch: u64,
    /// The first buckets that differ, in key order.
    pub mismatching_buckets: Vec<BucketMismatch>,
}

impl StoreTally {
    pub fn exact(&self) -> bool {
        self.identities_lost == 0 && self.unexpected == 0 && self.lost == 0 && self.double_counted == 0 && self.value_mismatch == 0
    }
}

/// What a store must hold.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub identities: &'a HashSet<Identity>,
    pub buckets: &'a Buckets,
    /// Every identity a `202` covered.
    pub accepted: &'a HashSet<Identity>,
    /// Accepted identities the topic lacks, so the truth cannot have them: lost all the same.
    pub missing_from_topic: usize,
}

/// What a store holds.
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub identities: HashSet<Identity>,
    pub buckets: Buckets,
}

pub fn tally(store: &str, expected: Expected<'_>, held: &Held) -> StoreTally {
    let mut tally = StoreTally {
        store: store.to_owned(),
        expected: expected.identities.len(),
        found: held.identities.len(),
        identities_lost: expected.identities.difference(&held.identities).count(),
        unexpected: held.identities.difference(expected.accepted).count(),
        buckets: 0,
        truth_events: 0,
        counted: 0,
        lost: expected.missing_from_topic as u64,
        double_counted: 0,
        value_mismatch: 0,
        mismatching_buckets: Vec::new(),
    };
    let keys: std::collections::BTreeSet<&BucketKey> = expected.buckets.keys().chain(held.buckets.keys()).collect();
    for key in keys {
        let truth = expected.buckets.get(key).copied().unwrap_or_default();
        let found = held.buckets.get(key).copied().unwrap_or_default();
        tally.buckets += 1;
        tally.truth_events += truth.events;
        tally.counted += found.events;
        let differs = if found.events < truth.events {
            tally.lost += truth.events - found.events;
            true
        } else if found.events > truth.events {
            tally.double_counted += found.events - truth.events;
            true
        } else if !same_sums(&truth, &found) {
            tally.value_mismatch += 1;
            true
        } else {
            false
        };
        if differs && tally.mismatching_buckets.len() < EXAMPLES {
            tally.mismatching_buckets.push(BucketMismatch {
                organization_id: key.organization_id,
                code: key.code.clone(),
                hour: rfc3339(key.hour_start_ms),
                expected: truth,
                found,
            });
        }
    }
    tally
}

fn same_sums(a: &Bucket, b: &Bucket) -> bool {
    let (x, y) = (a.value_sum, b.value_sum);
    (x - y).abs() <= VALUE_SUM_TOLERANCE * x.abs().max(y.abs()) && a.decimal_value_sum == b.decimal_value_sum
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::truth::{DecimalSum, HOUR_MS};

    /// 2026-01-01T00:00:00Z
    const H0: i64 = 1_767_225_600_000;

    fn ids(range: std::ops::Range<u32>) -> HashSet<Identity> {
        range.map(|i| (Uuid::from_u128(1), format!("t{i}"))).collect()
    }

    fn key(hour: i64) -> BucketKey {
        BucketKey { organization_id: Uuid::from_u128(1), code: "api_calls".into(), hour_start_ms: H0 + hour * HOUR_MS }
    }

    fn bucket(events: u64, value_sum: f64, decimal: i128) -> Bucket {
        Bucket { events, value_sum, decimal_value_sum: DecimalSum(decimal) }
    }

    /// Ten identities: six in hour 0, four in hour 1.
    fn truth() -> Buckets {
        [(key(0), bucket(6, 12.5, 7)), (key(1), bucket(4, 0.25, 0))].into()
    }

    fn check(held: &Held) -> StoreTally {
        let (identities, accepted, buckets) = (ids(0..10), ids(0..10), truth());
        tally("x", Expected { identities: &identities, buckets: &buckets, accepted: &accepted, missing_from_topic: 0 }, held)
    }

    #[test]
    fn an_exact_store() {
        let t = check(&Held { identities: ids(0..10), buckets: truth() });
        assert!(t.exact(), "{t:?}");
        assert_eq!((t.buckets, t.truth_events, t.counted), (2, 10, 10));
        assert!(t.mismatching_buckets.is_empty());
    }

    #[test]
    fn float_sums_may_differ_in_the_last_bits_only() {
        let mut buckets = truth();
        buckets.get_mut(&key(0)).unwrap().value_sum = 12.5 * (1.0 + 1e-12);
        assert!(check(&Held { identities: ids(0..10), buckets }).exact());
    }

    #[test]
    fn a_store_that_drops_events_while_holding_their_identities_loses_them() {
        // Every identity is held, so identity counts and `counted - found` see nothing; the
        // billing query drops two events of hour 1.
        let mut buckets = truth();
        buckets.insert(key(1), bucket(2, 0.25, 0));
        let t = check(&Held { identities: ids(0..10), buckets });
        assert_eq!((t.identities_lost, t.lost, t.double_counted, t.value_mismatch), (0, 2, 0, 0));
        assert_eq!((t.truth_events, t.counted), (10, 8));
        assert!(!t.exact());
        assert_eq!(t.mismatching_buckets.len(), 1);
        assert_eq!(t.mismatching_buckets[0].hour, "2026-01-01T01:00:00Z");
        assert_eq!((t.mismatching_buckets[0].expected.events, t.mismatching_buckets[0].found.events), (4, 2));
    }

    #[test]
    fn an_event_in_the_wrong_hour_is_lost_in_one_and_double_counted_in_the_other() {
        let buckets: Buckets = [(key(0), bucket(5, 12.5, 7)), (key(1), bucket(5, 0.25, 0))].into();
        let t = check(&Held { identities: ids(0..10), buckets });
        assert_eq!((t.lost, t.double_counted, t.value_mismatch), (1, 1, 0));
        assert_eq!(t.mismatching_buckets.len(), 2);
    }

    #[test]
    fn a_bucket_the_truth_lacks_is_double_counted() {
        let mut buckets = truth();
        buckets.insert(BucketKey { code: "page_views".into(), ..key(0) }, bucket(3, 1.0, 0));
        let t = check(&Held { identities: ids(0..10), buckets });
        assert_eq!((t.lost, t.double_counted, t.buckets), (0, 3, 3));
        assert_eq!(t.mismatching_buckets[0].expected, Bucket::default());
    }

    #[test]
    fn the_right_count_with_another_value_or_decimal_is_a_value_mismatch() {
        for wrong in [bucket(6, 12.75, 7), bucket(6, 12.5, 8)] {
            let mut buckets = truth();
            buckets.insert(key(0), wrong);
            let t = check(&Held { identities: ids(0..10), buckets });
            assert_eq!((t.lost, t.double_counted, t.value_mismatch), (0, 0, 1), "{wrong:?}");
            assert!(!t.exact());
            assert_eq!(t.mismatching_buckets[0].found, wrong);
        }
    }

    #[test]
    fn missing_identities_are_lost_and_identities_never_accepted_unexpected() {
        let mut buckets = truth();
        buckets.insert(key(0), bucket(4, 12.5, 7));
        let t = check(&Held { identities: ids(0..8), buckets });
        assert_eq!((t.identities_lost, t.lost, t.unexpected), (2, 2, 0));
        let t = check(&Held { identities: ids(0..12), buckets: truth() });
        assert_eq!((t.identities_lost, t.lost, t.double_counted, t.unexpected), (0, 0, 0, 2));
        assert!(!t.exact());
    }

    #[test]
    fn accepted_identities_the_topic_lacks_are_lost() {
        let (identities, buckets) = (ids(0..10), truth());
        let accepted = ids(0..13);
        let expected = Expected { identities: &identities, buckets: &buckets, accepted: &accepted, missing_from_topic: 3 };
        let t = tally("x", expected, &Held { identities: ids(0..10), buckets: truth() });
        assert_eq!((t.identities_lost, t.lost, t.double_counted), (0, 3, 0));
        assert!(!t.exact());
    }

    #[test]
    fn examples_are_bounded() {
        let truth: Buckets = (0..50).map(|h| (key(h), bucket(1, 0.0, 0))).collect();
        let (identities, accepted) = (ids(0..50), ids(0..50));
        let expected = Expected { identities: &identities, buckets: &truth, accepted: &accepted, missing_from_topic: 0 };
        let t = tally("x", expected, &Held { identities: ids(0..50), buckets: Buckets::new() });
        assert_eq!((t.lost, t.mismatching_buckets.len()), (50, EXAMPLES));
    }
}
