//! A latency histogram of atomics, encoded as a Prometheus histogram.
//!
//! prometheus-client's own `Histogram` takes a lock on every observation; this one records
//! with two relaxed adds (its bucket and the sum), so the feeds thread and every gRPC call can
//! record without waiting on each other. It implements the crate's `EncodeMetric`, so it is
//! exposed like any of the crate's metrics.

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, in nanoseconds: 1-2-5 steps from 1 µs to 5 s.
pub const BUCKETS_NS: [u64; 21] = [
    1_000,
    2_000,
    5_000,
    10_000,
    20_000,
    50_000,
    100_000,
    200_000,
    500_000,
    1_000_000,
    2_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    5_000_000_000,
];

const NS_PER_SECOND: f64 = 1e9;

/// A latency histogram with Prometheus's `le` buckets ([`BUCKETS_NS`]), lock-free to record.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per-bucket counts (not cumulative), the last one for values above every bound.
    counts: [AtomicU64; BUCKETS_NS.len() + 1],
    sum_ns: AtomicU64,
}

impl Histogram {
    pub fn record_ns(&self, ns: u64) {
        let i = BUCKETS_NS.partition_point(|&b| b < ns);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl EncodeMetric for Histogram {
    /// In seconds, as Prometheus expects; the encoder makes the buckets cumulative.
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0); BUCKETS_NS.len()];
        for ((bucket, bound), count) in buckets.iter_mut().zip(BUCKETS_NS).zip(&self.counts) {
            *bucket = (bound as f64 / NS_PER_SECOND, count.load(Ordering::Relaxed));
        }
        let above = self.counts[BUCKETS_NS.len()].load(Ordering::Relaxed);
        let count = buckets.iter().map(|(_, n)| n).sum::<u64>() + above;
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / NS_PER_SECOND;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text::encode;
    use prometheus_client::registry::Registry;
    use std::sync::Arc;

    /// A histogram registered like any prometheus-client metric (through a shared handle).
    #[derive(Debug, Default, Clone)]
    struct Shared(Arc<Histogram>);

    impl EncodeMetric for Shared {
        fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
            self.0.encode(encoder)
        }
        fn metric_type(&self) -> MetricType {
            self.0.metric_type()
        }
    }

    fn exposition(h: &Shared) -> String {
        let mut registry = Registry::default();
        registry.register("x_seconds", "test", h.clone());
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn buckets_are_cumulative_in_seconds_and_count_everything() {
        let h = Shared::default();
        for ns in [500, 1_000, 1_001, 3_000_000, 9_000_000_000] {
            h.0.record_ns(ns);
        }
        let out = exposition(&h);
        assert!(out.starts_with("# HELP x_seconds test.\n# TYPE x_seconds histogram\n"));
        // A value on a bound falls in that bucket; the bounds are written as Go's clients
        // write them.
        for line in [
            "x_seconds_bucket{le=\"1e-06\"} 2\n",
            "x_seconds_bucket{le=\"2e-06\"} 3\n",
            "x_seconds_bucket{le=\"0.0001\"} 3\n",
            "x_seconds_bucket{le=\"0.005\"} 4\n",
            "x_seconds_bucket{le=\"5\"} 4\n",
            "x_seconds_bucket{le=\"+Inf\"} 5\n",
            "x_seconds_count 5\n",
            "x_seconds_sum 9.003002501\n",
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
        let buckets = out.lines().filter(|l| l.contains("_bucket{")).count();
        assert_eq!(buckets, BUCKETS_NS.len() + 1, "{out}");
        assert_eq!(h.0.count(), 5);
    }

    #[test]
    fn an_empty_histogram_has_every_bucket_at_zero() {
        let out = exposition(&Shared::default());
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 0\n"), "{out}");
        assert!(out.contains("x_seconds_sum 0.0\n"), "{out}");
        assert!(out.contains("x_seconds_count 0\n"), "{out}");
    }
}
