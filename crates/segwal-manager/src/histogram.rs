//! A fixed-bucket histogram updated with relaxed atomics, cheap enough for
//! the write path, read as a [`HistogramSnapshot`] (by [`Statistics`] and
//! by the Prometheus collector of the `segwal` crate).
//!
//! [`Statistics`]: crate::Statistics

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, in nanoseconds: 10 µs to 10 s,
/// about three per decade (1, 2.5, 5).
pub const LATENCY_BOUNDS_NANOS: &[u64] = &[
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Upper bounds of the buckets of counts (such as batches per sync).
pub const COUNT_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// A histogram over `u64` samples with fixed upper bounds (inclusive, as
/// Prometheus's `le`), plus one bucket above the last bound.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// One count per bound, then the overflow bucket (not cumulative).
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
}

impl Histogram {
    /// An empty histogram with upper bounds `bounds` (ascending).
    pub fn new(bounds: &'static [u64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "ascending bounds");
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Counts one sample.
    pub fn observe(&self, value: u64) {
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// The counts so far. Samples observed while it runs may be counted in
    /// their bucket but not yet in the sum (or the reverse); nothing is
    /// lost.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(self.buckets.len());
        let mut total = 0;
        for bucket in &self.buckets[..] {
            total += bucket.load(Ordering::Relaxed);
            cumulative.push(total);
        }
        let count = cumulative.pop().unwrap_or(0);
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            count,
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time copy of a [`Histogram`], in Prometheus's shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// The buckets' upper bounds (inclusive).
    pub bounds: &'static [u64],
    /// For each bound, how many samples were at most that bound.
    pub cumulative: Vec<u64>,
    /// How many samples in all (the implicit `+Inf` bucket).
    pub count: u64,
    /// The sum of every sample.
    pub sum: u64,
}

impl HistogramSnapshot {
    /// The smallest bound at or above the `q` quantile (0 to 1) of the
    /// samples, or `None` if there are none or it lies above every bound.
    pub fn quantile_bound(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * self.count as f64).ceil().max(1.0) as u64;
        let bucket = self.cumulative.iter().position(|&c| c >= rank)?;
        Some(self.bounds[bucket])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves that samples land in the first bucket whose bound is at
    /// least the sample (bounds inclusive), that counts are cumulative with
    /// the overflow only in `count`, and that the sum is exact.
    #[test]
    fn samples_land_in_inclusive_buckets_and_counts_are_cumulative() {
        let histogram = Histogram::new(&[10, 100, 1000]);
        for value in [0, 10, 11, 100, 999, 1000, 1001, 5000] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.cumulative, vec![2, 4, 6]);
        assert_eq!(snapshot.count, 8);
        assert_eq!(snapshot.sum, 10 + 11 + 100 + 999 + 1000 + 1001 + 5000);
        assert_eq!(snapshot.quantile_bound(0.5), Some(100));
        assert_eq!(snapshot.quantile_bound(0.75), Some(1000));
        assert_eq!(snapshot.quantile_bound(1.0), None, "above every bound");
        assert_eq!(Histogram::new(&[1]).snapshot().quantile_bound(0.5), None);
    }

    /// Proves that concurrent observers lose no sample.
    #[test]
    fn concurrent_observers_lose_nothing() {
        let histogram = Histogram::new(LATENCY_BOUNDS_NANOS);
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let histogram = &histogram;
                s.spawn(move || {
                    for i in 0..10_000u64 {
                        histogram.observe((t * 10_000 + i) * 1_000);
                    }
                });
            }
        });
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 40_000);
        assert_eq!(snapshot.sum, (0..40_000u64).map(|v| v * 1_000).sum::<u64>());
    }
}
