//! Latency summaries and rates: the pure arithmetic behind every figure.

use std::time::Duration;

use serde::Serialize;

/// The `q`-quantile (0..=1) of `sorted` by the nearest-rank method; `None` when empty.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let q = q.clamp(0.0, 1.0);
    // Nearest rank: the smallest value with at least q of the samples at or below it.
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
}

/// p50, p99 and max of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LatencySummary {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    /// Summarises `samples_ms` (any order); `None` when there is no sample.
    pub fn of(mut samples_ms: Vec<f64>) -> Option<Self> {
        samples_ms.retain(|v| v.is_finite());
        samples_ms.sort_by(f64::total_cmp);
        Some(Self {
            samples: samples_ms.len(),
            p50_ms: quantile(&samples_ms, 0.50)?,
            p99_ms: quantile(&samples_ms, 0.99)?,
            max_ms: *samples_ms.last()?,
        })
    }
}

/// Events per second of `count` events in `elapsed`; 0 for an empty interval.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let seconds = elapsed.as_secs_f64();
    if seconds <= 0.0 {
        0.0
    } else {
        count as f64 / seconds
    }
}

/// `measured / baseline`, rounded to 3 decimals; `None` when the baseline is not positive.
pub fn ratio(measured: f64, baseline: f64) -> Option<f64> {
    (baseline > 0.0 && measured.is_finite()).then(|| (measured / baseline * 1000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&values, 0.5), Some(50.0));
        assert_eq!(quantile(&values, 0.99), Some(99.0));
        assert_eq!(quantile(&values, 1.0), Some(100.0));
        assert_eq!(quantile(&values, 0.0), Some(1.0));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn a_summary_sorts_its_samples_and_ignores_non_finite_ones() {
        let summary = LatencySummary::of(vec![30.0, f64::NAN, 10.0, 20.0]).unwrap();
        assert_eq!(summary, LatencySummary { samples: 3, p50_ms: 20.0, p99_ms: 30.0, max_ms: 30.0 });
        assert_eq!(LatencySummary::of(vec![]), None);
    }

    #[test]
    fn rates_and_ratios() {
        assert_eq!(per_second(5_000, Duration::from_millis(500)), 10_000.0);
        assert_eq!(per_second(5, Duration::ZERO), 0.0);
        assert_eq!(ratio(2.0, 3.0), Some(0.667));
        assert_eq!(ratio(1.0, 0.0), None);
    }
}
