//! A token bucket per organization, counted in events: `events_per_second` refill, `burst`
//! capacity. A request takes as many tokens as it has events, all or none, once they are counted
//! (after parsing); before its body is read, a request of an organization whose bucket is empty
//! (not a token left) is refused outright, so a flood of requests over the limit costs no reading
//! and no parsing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Buckets are spread over shards so that organizations rarely wait on each other's lock.
const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    events_per_second: f64,
    burst: f64,
    shards: [Mutex<HashMap<Uuid, Bucket>>; SHARDS],
}

impl RateLimiter {
    /// `None` when `events_per_second` is 0 (no limit).
    pub fn new(events_per_second: u32, burst: u32) -> Option<Self> {
        (events_per_second > 0).then(|| Self {
            events_per_second: f64::from(events_per_second),
            burst: f64::from(burst.max(1)),
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
        })
    }

    fn shard(&self, organization_id: &Uuid) -> &Mutex<HashMap<Uuid, Bucket>> {
        &self.shards[organization_id.as_bytes()[15] as usize % SHARDS]
    }

    /// Takes `events` tokens, or says how long until that many are available.
    pub fn try_acquire(&self, organization_id: Uuid, events: usize, now: Instant) -> Result<(), Duration> {
        let wanted = events as f64;
        let mut buckets = self.shard(&organization_id).lock().expect("rate limiter lock");
        let bucket = buckets.entry(organization_id).or_insert(Bucket { tokens: self.burst, updated: now });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.events_per_second).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= wanted {
            bucket.tokens -= wanted;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((wanted - bucket.tokens) / self.events_per_second))
        }
    }

    /// Whether the organization has a token left, taking none; if not, how long until it has
    /// one. An organization without a bucket has a full one.
    pub fn check_not_empty(&self, organization_id: Uuid, now: Instant) -> Result<(), Duration> {
        let buckets = self.shard(&organization_id).lock().expect("rate limiter lock");
        let Some(bucket) = buckets.get(&organization_id) else { return Ok(()) };
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        let tokens = (bucket.tokens + elapsed * self.events_per_second).min(self.burst);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / self.events_per_second))
        }
    }

    /// Forgets buckets that have refilled completely: they behave exactly like absent ones.
    /// Keeps memory bounded by the organizations active in the last `burst / rate` seconds.
    pub fn forget_idle(&self, now: Instant) {
        for shard in &self.shards {
            shard.lock().expect("rate limiter lock").retain(|_, bucket| {
                let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
                bucket.tokens + elapsed * self.events_per_second < self.burst
            });
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().len()).sum()
    }
}

/// Whole seconds for `Retry-After`, rounded up and at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_at_the_rate() {
        let limiter = RateLimiter::new(10, 20).unwrap();
        let (org, t0) = (Uuid::new_v4(), Instant::now());
        assert!(limiter.try_acquire(org, 15, t0).is_ok());
        let wait = limiter.try_acquire(org, 10, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(limiter.try_acquire(org, 10, t0 + Duration::from_millis(500)).is_ok());
        assert!(limiter.try_acquire(org, 1, t0 + Duration::from_millis(500)).is_err());
        // Refill stops at the burst.
        assert!(limiter.try_acquire(org, 21, t0 + Duration::from_secs(3600)).is_err());
        assert!(limiter.try_acquire(org, 20, t0 + Duration::from_secs(3600)).is_ok());
    }

    #[test]
    fn organizations_have_their_own_buckets() {
        let limiter = RateLimiter::new(1, 5).unwrap();
        let t0 = Instant::now();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(limiter.try_acquire(a, 5, t0).is_ok());
        assert!(limiter.try_acquire(a, 1, t0).is_err());
        assert!(limiter.try_acquire(b, 5, t0).is_ok());
    }

    #[test]
    fn a_refused_request_takes_nothing() {
        let limiter = RateLimiter::new(1, 5).unwrap();
        let (org, t0) = (Uuid::new_v4(), Instant::now());
        assert!(limiter.try_acquire(org, 6, t0).is_err());
        assert!(limiter.try_acquire(org, 5, t0).is_ok());
    }

    #[test]
    fn only_an_empty_bucket_is_refused_before_the_events_are_counted() {
        let limiter = RateLimiter::new(10, 20).unwrap();
        let (org, t0) = (Uuid::new_v4(), Instant::now());
        assert!(limiter.check_not_empty(org, t0).is_ok(), "no bucket yet: a full one");
        assert_eq!(limiter.tracked(), 0, "checking makes no bucket");
        limiter.try_acquire(org, 19, t0).unwrap();
        assert!(limiter.check_not_empty(org, t0).is_ok(), "one token left");
        assert!(limiter.try_acquire(org, 2, t0).is_err(), "but not enough for two events");
        limiter.try_acquire(org, 1, t0).unwrap();
        assert_eq!(limiter.check_not_empty(org, t0), Err(Duration::from_millis(100)));
        assert_eq!(limiter.check_not_empty(org, t0 + Duration::from_millis(50)), Err(Duration::from_millis(50)));
        assert!(limiter.check_not_empty(org, t0 + Duration::from_millis(100)).is_ok());
        // Checking takes nothing: the refilled token is still there.
        assert!(limiter.try_acquire(org, 1, t0 + Duration::from_millis(100)).is_ok());
        assert!(limiter.check_not_empty(Uuid::new_v4(), t0).is_ok(), "other organizations are unaffected");
    }

    #[test]
    fn idle_buckets_are_forgotten() {
        let limiter = RateLimiter::new(10, 10).unwrap();
        let t0 = Instant::now();
        limiter.try_acquire(Uuid::new_v4(), 10, t0).unwrap();
        limiter.try_acquire(Uuid::new_v4(), 1, t0).unwrap();
        limiter.forget_idle(t0 + Duration::from_millis(500));
        assert_eq!(limiter.tracked(), 1);
        limiter.forget_idle(t0 + Duration::from_secs(1));
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn zero_rate_means_no_limit_and_retry_after_rounds_up() {
        assert!(RateLimiter::new(0, 10).is_none());
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1_001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
