//! Comparing a store with what the gateway accepted: which accepted identities are missing
//! (lost), and how many more events the store counts than the accepted identities it holds
//! (double counted). Identities nobody was told were accepted are reported apart.

use std::collections::HashSet;

use uuid::Uuid;

/// (organization_id, transaction_id): what the pipeline counts once.
pub type Identity = (Uuid, String);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoreTally {
    pub store: String,
    /// Distinct accepted identities this store must hold.
    pub expected: usize,
    /// Distinct identities found in the store.
    pub found: usize,
    pub lost: usize,
    /// What the store's billing count says (rows, or the billing query's events).
    pub counted: u64,
    pub double_counted: u64,
    /// Identities in the store that were never offered (or offered and never accepted).
    pub unexpected: usize,
}

impl StoreTally {
    pub fn exact(&self) -> bool {
        self.lost == 0 && self.double_counted == 0 && self.unexpected == 0
    }
}

pub fn tally(store: &str, expected: &HashSet<Identity>, found: &HashSet<Identity>, counted: u64) -> StoreTally {
    let held = expected.intersection(found).count();
    let unexpected = found.len() - held;
    StoreTally {
        store: store.to_owned(),
        expected: expected.len(),
        found: found.len(),
        lost: expected.len() - held,
        counted,
        // Every count beyond one per identity held is a double count; unexpected identities
        // are reported on their own line, not here.
        double_counted: counted.saturating_sub(found.len() as u64),
        unexpected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(range: std::ops::Range<u32>) -> HashSet<Identity> {
        range.map(|i| (Uuid::from_u128(1), format!("t{i}"))).collect()
    }

    #[test]
    fn an_exact_store() {
        let t = tally("x", &ids(0..10), &ids(0..10), 10);
        assert!(t.exact(), "{t:?}");
    }

    #[test]
    fn missing_identities_are_lost_and_extra_counts_double_counted() {
        let t = tally("x", &ids(0..10), &ids(0..8), 9);
        assert_eq!((t.lost, t.double_counted, t.unexpected), (2, 1, 0));
        assert!(!t.exact());
    }

    #[test]
    fn identities_never_accepted_are_unexpected() {
        let t = tally("x", &ids(0..10), &ids(0..12), 12);
        assert_eq!((t.lost, t.double_counted, t.unexpected), (0, 0, 2));
        assert!(!t.exact());
    }
}
