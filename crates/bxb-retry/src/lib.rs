//! How long every retry loop of the pipeline waits before its next attempt: the consumers
//! between writes of the same batch, while decoding waits for the schema registry and while the
//! topics cannot be checked; the gateway while it registers the event schema.

use std::time::Duration;

use rand::Rng;

/// The pause before each next attempt: `initial * 2^attempt`, capped at `max`, then drawn
/// uniformly from its upper half ("equal jitter") so that many consumers failing at once do not
/// retry in lockstep, while every pause still grows.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// The first pause is at most `initial`; `max` caps every later one (raised to `initial`
    /// if it is lower).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max: max.max(initial), attempt: 0 }
    }

    /// The cap of the next pause, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The next pause, drawn with `rng`.
    pub fn next_with(&mut self, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + rng.random_range(Duration::ZERO..=ceiling - half)
    }

    /// The next pause.
    #[allow(clippy::should_implement_trait, reason = "a backoff never ends, so it is no Iterator: its next pause is not an Option")]
    pub fn next(&mut self) -> Duration {
        self.next_with(&mut rand::rng())
    }

    /// Starts again from the initial pause, after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn pauses_double_up_to_the_cap_and_stay_in_the_upper_half() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let ceilings = [100, 200, 400, 800, 1000, 1000, 1000];
        for ceiling in ceilings {
            let ceiling = Duration::from_millis(ceiling);
            assert_eq!(backoff.ceiling(), ceiling);
            let pause = backoff.next_with(&mut rng);
            assert!(pause >= ceiling / 2 && pause <= ceiling, "{pause:?} outside [{:?}, {ceiling:?}]", ceiling / 2);
        }
        assert_eq!(backoff.attempts(), ceilings.len() as u32);
    }

    #[test]
    fn jitter_spreads_pauses() {
        let mut rng = StdRng::seed_from_u64(1);
        let pauses: std::collections::HashSet<_> =
            (0..20).map(|_| Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).next_with(&mut rng)).collect();
        assert!(pauses.len() > 10, "jitter produced only {} distinct pauses", pauses.len());
    }

    #[test]
    fn many_attempts_never_overflow() {
        let mut backoff = Backoff::new(Duration::from_millis(1), Duration::from_secs(30));
        for _ in 0..200 {
            assert!(backoff.next() <= Duration::from_secs(30));
        }
    }
}
