//! The poison breaker: a consumer that finds more than `max` poison records among the last
//! `window` records of a partition stops instead of dead-lettering on.
//!
//! One bad record is a producer's mistake and goes to the dead-letter topic. A partition that is
//! mostly poison is something else — a producer writing another format, a schema mix-up — and
//! dead-lettering it would move the whole stream into the DLQ and commit past it. Stopping
//! (fatal: nothing from the tripping record on is committed) leaves it in the topic for an
//! operator to look at. Only undecodable and invalid records count
//! ([`bxb_event::registry::PoisonClass::counts_towards_breaker`]); records refused by policy do
//! not, since a replay may legitimately refuse many.

use std::collections::{HashMap, VecDeque};

use bxb_event::registry::PoisonReason;

/// More than this many poison records among the last [`DEFAULT_POISON_BREAKER_WINDOW`] of a
/// partition stop the consumer.
pub const DEFAULT_POISON_BREAKER_MAX: usize = 100;
/// How many of a partition's latest records the breaker looks at.
pub const DEFAULT_POISON_BREAKER_WINDOW: usize = 1_000;

/// The breaker tripped: the record that did it and what the window held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tripped {
    pub partition: i32,
    pub offset: i64,
    pub reason: PoisonReason,
    pub poison: usize,
    pub window: usize,
}

#[derive(Default)]
struct Window {
    /// Whether each of the latest records (oldest first) counted as poison.
    poison_flags: VecDeque<bool>,
    poison: usize,
}

pub(crate) struct PoisonBreaker {
    max: usize,
    window: usize,
    partitions: HashMap<i32, Window>,
    /// The offset tracker's revocation count when the windows were last valid.
    revocations_seen: u64,
}

impl PoisonBreaker {
    pub fn new(max: usize, window: usize) -> Self {
        Self { max, window: window.max(1), partitions: HashMap::new(), revocations_seen: 0 }
    }

    /// Forgets every window after a revocation: a partition that comes back is read again from
    /// its committed offset, and its records must not count twice.
    pub fn forget_after(&mut self, revocations: u64) {
        if revocations != self.revocations_seen {
            self.revocations_seen = revocations;
            self.partitions.clear();
        }
    }

    /// Records a decoded record (`poison` `None`) or a poison one, and trips when the partition's
    /// window now holds more than `max` that count.
    pub fn record(&mut self, partition: i32, offset: i64, poison: Option<PoisonReason>) -> Result<(), Tripped> {
        let counts = poison.is_some_and(|reason| reason.class().counts_towards_breaker());
        let window = self.partitions.entry(partition).or_default();
        window.poison_flags.push_back(counts);
        window.poison += usize::from(counts);
        if window.poison_flags.len() > self.window && window.poison_flags.pop_front() == Some(true) {
            window.poison -= 1;
        }
        match poison {
            Some(reason) if counts && window.poison > self.max => {
                Err(Tripped { partition, offset, reason, poison: window.poison, window: window.poison_flags.len() })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BAD: Option<PoisonReason> = Some(PoisonReason::InvalidAvro);

    #[test]
    fn trips_on_the_first_poison_record_past_the_limit() {
        let mut breaker = PoisonBreaker::new(2, 5);
        assert_eq!(breaker.record(0, 0, BAD), Ok(()));
        assert_eq!(breaker.record(0, 1, None), Ok(()));
        assert_eq!(breaker.record(0, 2, BAD), Ok(()));
        let tripped = breaker.record(0, 3, BAD).unwrap_err();
        assert_eq!((tripped.partition, tripped.offset, tripped.poison, tripped.window), (0, 3, 3, 4));
    }

    #[test]
    fn poison_that_left_the_window_no_longer_counts() {
        let mut breaker = PoisonBreaker::new(1, 3);
        for offset in 0..100 {
            // One poison record in every three: never more than one in a window of three.
            let poison = if offset % 3 == 0 { BAD } else { None };
            assert_eq!(breaker.record(0, offset, poison), Ok(()), "offset {offset}");
        }
    }

    #[test]
    fn partitions_count_apart_and_a_revocation_forgets() {
        let mut breaker = PoisonBreaker::new(1, 10);
        assert_eq!(breaker.record(0, 0, BAD), Ok(()));
        assert_eq!(breaker.record(1, 0, BAD), Ok(()));
        breaker.forget_after(1);
        assert_eq!(breaker.record(0, 1, BAD), Ok(()));
        assert!(breaker.record(0, 2, BAD).is_err());
    }

    #[test]
    fn a_max_as_large_as_the_window_never_trips() {
        let mut breaker = PoisonBreaker::new(4, 4);
        for offset in 0..50 {
            assert_eq!(breaker.record(0, offset, BAD), Ok(()));
        }
    }

    #[test]
    fn key_mismatches_count_like_undecodable_records() {
        let mut breaker = PoisonBreaker::new(0, 4);
        assert!(breaker.record(0, 0, Some(PoisonReason::KeyMismatch)).is_err());
    }
}
