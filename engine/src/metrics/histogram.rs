//! A latency histogram that one task updates and anyone reads, without locks.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Buckets double from 1 µs: bucket `i` counts values up to `2^i` µs.
const BUCKETS: usize = 40;

/// Latencies in power-of-two buckets of microseconds: enough precision for
/// p50/p90/p99 at a few atomic adds per observation.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    pub fn observe(&self, latency: Duration) {
        self.observe_micros(latency.as_micros().min(u64::MAX as u128) as u64);
    }

    pub fn observe_micros(&self, us: u64) {
        let bucket = (64 - us.saturating_sub(1).leading_zeros() as usize).min(BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let count = self.count.load(Relaxed);
        let quantile = |q: f64| -> u64 {
            if count == 0 {
                return 0;
            }
            let target = (q * count as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= target {
                    return 1u64 << i;
                }
            }
            1u64 << (BUCKETS - 1)
        };
        let max_us = self.max_us.load(Relaxed);
        HistogramSnapshot {
            count,
            sum_us: self.sum_us.load(Relaxed),
            max_us,
            p50_us: quantile(0.50).min(max_us),
            p90_us: quantile(0.90).min(max_us),
            p99_us: quantile(0.99).min(max_us),
            buckets: counts
                .iter()
                .enumerate()
                .map(|(i, c)| (1u64 << i, *c))
                .collect(),
        }
    }
}

/// A copy of a [`LatencyHistogram`]; quantiles are bucket upper bounds
/// (at most a factor of two high), capped by the maximum.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub count: u64,
    pub sum_us: u64,
    pub max_us: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    /// (upper bound in µs, count in that bucket)
    pub buckets: Vec<(u64, u64)>,
}

impl HistogramSnapshot {
    /// Adds another histogram's counts (quantiles recomputed roughly from
    /// the merged buckets).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.buckets.is_empty() {
            *self = other.clone();
            return;
        }
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            mine.1 += theirs.1;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
        let quantile = |q: f64| -> u64 {
            let target = (q * self.count as f64).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (upper, c) in &self.buckets {
                seen += c;
                if seen >= target {
                    return *upper;
                }
            }
            self.max_us
        };
        let (p50, p90, p99) = (quantile(0.5), quantile(0.9), quantile(0.99));
        self.p50_us = p50.min(self.max_us);
        self.p90_us = p90.min(self.max_us);
        self.p99_us = p99.min(self.max_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_land_in_the_right_buckets() {
        let h = LatencyHistogram::default();
        for us in 1..=1000u64 {
            h.observe_micros(us);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 1000);
        assert_eq!(s.max_us, 1000);
        // p50 = 500 µs falls in the (256, 512] bucket.
        assert_eq!(s.p50_us, 512);
        assert_eq!(s.p99_us, 1000);
        assert_eq!(s.sum_us, 500_500);
    }
}
