//! Prometheus metrics (`GET /metrics` on the HTTP port), in the text exposition format
//! (version 0.0.4), written by the Prometheus project's Rust client, `prometheus-client`.
//! Every metric is listed in `docs/metrics.md`.
//!
//! Counters live where the work happens (the market's [`MarketStats`], the hub's `HubStats`,
//! the journal's `Durability`, the WebSocket writers, the gRPC front's [`grpc::GrpcStats`]) as
//! relaxed atomics made at start, so recording costs one uncontended add and nothing on the
//! engine thread. Scraping reads them through prometheus-client's [`Collector`] API (the values
//! are taken at scrape time, as `ConstCounter`s and `ConstGauge`s, rather than copied into the
//! crate's own metric types), so recording stays as it was. Latency is kept in a fixed-bucket
//! [`Histogram`] of atomics for the same reason; it implements the crate's `EncodeMetric`.
//!
//! [`MarketStats`]: crate::market::MarketStats

pub mod grpc;
mod histogram;
mod market;

pub use histogram::{Histogram, BUCKETS_NS};

use crate::market::Market;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::fmt;
use std::sync::Arc;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What `/metrics` encodes: the market's families (engine, rings, feeds, journal, bus, gRPC
/// front), the runtime's, and those of the front that serves the scrape.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// The market's and the runtime's metrics.
    pub fn new(market: Arc<Market>) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(market::MarketCollector(market)));
        registry.register_collector(Box::new(RuntimeCollector));
        Metrics { registry }
    }

    /// Adds a front's own families (the WebSocket front's).
    pub fn register(&mut self, collector: impl Collector) {
        self.registry.register_collector(Box::new(collector));
    }

    /// The exposition, as of now.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The market's and the runtime's metrics, as `/metrics` serves them (without a front's).
pub fn render(market: &Arc<Market>) -> String {
    Metrics::new(market.clone()).encode()
}

/// Writes metric families through a [`Collector`]'s encoder. Names are given in full as
/// exposed: prometheus-client adds a counter's `_total` itself, so it is taken off here.
pub struct Families<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl<'a> Families<'a> {
    pub fn new(encoder: DescriptorEncoder<'a>) -> Families<'a> {
        Families { encoder }
    }

    pub fn counter(
        &mut self,
        name: &str,
        help: &str,
        value: impl EncodeCounterValue,
    ) -> fmt::Result {
        let metric =
            self.encoder
                .encode_descriptor(counter_base(name), help, None, MetricType::Counter)?;
        ConstCounter::new(value).encode(metric)
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: impl EncodeGaugeValue) -> fmt::Result {
        let metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        ConstGauge::new(value).encode(metric)
    }

    /// A counter family with one label: a sample per `(label value, count)`.
    pub fn counters<'v>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (&'v str, u64)>,
    ) -> fmt::Result {
        let mut metric =
            self.encoder
                .encode_descriptor(counter_base(name), help, None, MetricType::Counter)?;
        for (value, count) in samples {
            let labels = [(label, value)];
            ConstCounter::new(count).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A gauge family with one label: a sample per `(label value, figure)`.
    pub fn gauges<'v, V: EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        label: &str,
        samples: impl IntoIterator<Item = (&'v str, V)>,
    ) -> fmt::Result {
        let mut metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (value, figure) in samples {
            let labels = [(label, value)];
            ConstGauge::new(figure).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }

    pub fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) -> fmt::Result {
        let metric = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        histogram.encode(metric)
    }

    /// The encoder itself, for families of several labels.
    pub fn encoder(&mut self) -> &mut DescriptorEncoder<'a> {
        &mut self.encoder
    }
}

/// A counter's name as registered: without the `_total` the encoder adds.
pub(crate) fn counter_base(name: &str) -> &str {
    debug_assert!(
        name.ends_with("_total"),
        "counter {name} must end in _total"
    );
    name.strip_suffix("_total").unwrap_or(name)
}

/// The tokio runtime that serves the scrape (tickerd's one runtime): the tasks alive on it. A
/// count that keeps growing under a steady load is a task leak (`ticker-bench soak` watches it).
/// Nothing is written outside a runtime.
#[derive(Debug)]
struct RuntimeCollector;

impl Collector for RuntimeCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Ok(());
        };
        Families::new(encoder).gauge(
            "tickerd_runtime_alive_tasks",
            "Tasks alive on the server's tokio runtime.",
            runtime.metrics().num_alive_tasks() as u64,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::prometheus_text::encode;

    fn exposition(collector: impl Collector) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(collector));
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        out
    }

    #[derive(Debug)]
    struct Sample;

    impl Collector for Sample {
        fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
            let mut f = Families::new(encoder);
            f.counter("t_events_total", "Events.", 7u64)?;
            f.counter("t_fsync_seconds_total", "Time in fsync.", 0.25f64)?;
            f.gauge("t_depth", "Depth.", 3u64)?;
            f.counters("t_orders_total", "Orders.", "outcome", [("accepted", 2)])?;
            f.gauges("t_ring_depth", "Rings.", "ring", [("ingress", 5u64)])
        }
    }

    /// The exposition keeps the names, types and label sets tickerd had before
    /// prometheus-client wrote it: `_total` in the counters' TYPE lines too, and help as
    /// given.
    #[test]
    fn families_are_written_with_their_full_names_types_and_labels() {
        let out = exposition(Sample);
        assert_eq!(
            out,
            "# HELP t_events_total Events.\n\
             # TYPE t_events_total counter\n\
             t_events_total 7\n\
             # HELP t_fsync_seconds_total Time in fsync.\n\
             # TYPE t_fsync_seconds_total counter\n\
             t_fsync_seconds_total 0.25\n\
             # HELP t_depth Depth.\n\
             # TYPE t_depth gauge\n\
             t_depth 3\n\
             # HELP t_orders_total Orders.\n\
             # TYPE t_orders_total counter\n\
             t_orders_total{outcome=\"accepted\"} 2\n\
             # HELP t_ring_depth Rings.\n\
             # TYPE t_ring_depth gauge\n\
             t_ring_depth{ring=\"ingress\"} 5\n"
        );
    }

    fn alive_tasks() -> u64 {
        let out = exposition(RuntimeCollector);
        assert!(
            out.contains("# TYPE tickerd_runtime_alive_tasks gauge\n"),
            "{out}"
        );
        out.lines()
            .find_map(|l| l.strip_prefix("tickerd_runtime_alive_tasks "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no alive-tasks sample in {out}"))
    }

    // On the current-thread runtime of #[tokio::test] a task is released before the test's
    // own future runs again, so the count is exact.
    #[tokio::test]
    async fn alive_tasks_gauge_counts_spawned_tasks_until_they_end() {
        let before = alive_tasks();
        let (release, released) = tokio::sync::watch::channel(false);
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let mut released = released.clone();
                tokio::spawn(async move { released.wait_for(|r| *r).await.map(|_| ()) })
            })
            .collect();
        assert_eq!(alive_tasks(), before + 10);
        release.send(true).unwrap();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(alive_tasks(), before);
    }

    #[test]
    fn alive_tasks_gauge_is_absent_outside_a_runtime() {
        assert_eq!(exposition(RuntimeCollector), "");
    }
}
