//! Prometheus metrics (`GET /metrics` on the HTTP port), in the text exposition format.
//!
//! Counters live where the work happens (the market's [`MarketStats`], the hub's `HubStats`,
//! the WebSocket front's counters) as relaxed atomics, so recording costs one uncontended add
//! and nothing on the engine thread; this module only reads them when scraped. Latency is kept
//! in a fixed-bucket [`Histogram`] of atomics for the same reason.

use crate::market::{Market, MarketStats};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use ticker_engine::RejectReason;
use ticker_feeds::{Channel, HubStats, Topic};

/// Upper bounds of the latency buckets, in nanoseconds: 1-2-5 steps from 1 µs to 5 s.
const BUCKETS_NS: [u64; 21] = [
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

/// A latency histogram with Prometheus's cumulative `le` buckets, lock-free to record.
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

    /// Writes the histogram `name` in seconds, as Prometheus expects.
    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in BUCKETS_NS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{}\"}} {cumulative}",
                seconds(*bound)
            );
        }
        cumulative += self.counts[BUCKETS_NS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            seconds(self.sum_ns.load(Ordering::Relaxed))
        );
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

/// Nanoseconds as a decimal number of seconds, exactly (no float rounding in the output).
fn seconds(ns: u64) -> String {
    let whole = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:09}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// Starts a metric family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub fn sample(out: &mut String, name: &str, labels: &str, value: u64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

/// A source of more metric families (the WebSocket and gRPC fronts).
pub trait MetricSource: Send + Sync {
    fn write_metrics(&self, out: &mut String);
}

/// The whole exposition: the market's, the hub's and each front's metrics.
pub fn render(market: &Market, fronts: &[&dyn MetricSource]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    write_market(&mut out, market.stats());
    write_hub(&mut out, market);
    if let Some(journal) = market.journal() {
        write_journal(&mut out, journal);
    }
    if let Some(bus) = market.bus() {
        write_bus(&mut out, bus);
    }
    for front in fronts {
        front.write_metrics(&mut out);
    }
    write_runtime(&mut out);
    out
}

/// The tokio runtime that serves the scrape (tickerd's one runtime): the tasks alive on it. A
/// count that keeps growing under a steady load is a task leak (`ticker-bench soak` watches it).
/// Nothing is written outside a runtime.
fn write_runtime(out: &mut String) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    family(
        out,
        "tickerd_runtime_alive_tasks",
        "gauge",
        "Tasks alive on the server's tokio runtime.",
    );
    let alive = runtime.metrics().num_alive_tasks() as u64;
    sample(out, "tickerd_runtime_alive_tasks", "", alive);
}

/// The bus: what a matcher published, where a gateway is and how far behind
/// (docs/scale-out.md).
fn write_bus(out: &mut String, bus: &crate::market::BusState) {
    let s = &bus.stats;
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let (lag_messages, lag_time) = s.lag(crate::market::now_ns());
    let connected = bus.client().connection_state() == async_nats::connection::State::Connected;
    let role = bus.config.role.as_str();
    let gauges: [(&str, &str, u64); 7] = [
        (
            "tickerd_bus_connected",
            "1 while connected to NATS.",
            connected as u64,
        ),
        (
            "tickerd_bus_event_seq",
            "Newest event seq published and acknowledged (matcher) or applied (gateway).",
            get(&s.applied_seq),
        ),
        (
            "tickerd_bus_stream_seq",
            "JetStream sequence of that message.",
            get(&s.stream_seq),
        ),
        (
            "tickerd_bus_lag_messages",
            "Gateway: stream messages after the newest applied.",
            lag_messages,
        ),
        (
            "tickerd_bus_lag_ms",
            "Gateway: how long ago the newest applied message was published, while more wait.",
            lag_time.as_millis() as u64,
        ),
        (
            "tickerd_bus_snapshot_seq",
            "Event seq of the newest feeds snapshot stored (matcher) or loaded (gateway).",
            get(&s.snapshot_seq),
        ),
        (
            "tickerd_bus_failed",
            "Gateway: 1 once it stopped following the stream (see the log).",
            s.failure.lock().is_some() as u64,
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, "gauge", help);
        sample(out, name, &format!("role=\"{role}\""), value);
    }
    let counters: [(&str, &str, u64); 4] = [
        (
            "tickerd_bus_messages_total",
            "Event messages published and acknowledged (matcher) or applied (gateway).",
            get(&s.published),
        ),
        (
            "tickerd_bus_duplicates_total",
            "Publishes JetStream dropped as duplicates of a stored message (resends).",
            get(&s.duplicates),
        ),
        (
            "tickerd_bus_publish_retries_total",
            "Times the matcher re-read the stream's end after a failed publish.",
            get(&s.publish_retries),
        ),
        (
            "tickerd_bus_snapshots_total",
            "Feeds snapshots stored (matcher) or loaded (gateway).",
            get(&s.snapshots),
        ),
    ];
    for (name, help, value) in counters {
        family(out, name, "counter", help);
        sample(out, name, &format!("role=\"{role}\""), value);
    }
}

/// The journal's progress and the snapshots written (docs/journal.md).
fn write_journal(out: &mut String, j: &crate::market::JournalState) {
    let d = &j.durability;
    let (syncs, sync_time, sync_max) = d.sync_stats();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let gauges: [(&str, &str, u64); 5] = [
        (
            "tickerd_journal_written_index",
            "Journal index of the last command written.",
            d.written(),
        ),
        (
            "tickerd_journal_durable_index",
            "Journal index of the last command known durable (synced; with fsync = off, what the last start found on disk).",
            d.synced(),
        ),
        (
            "tickerd_journal_unsynced_bytes",
            "Bytes written to the journal but not yet synced.",
            d.unsynced_bytes(),
        ),
        (
            "tickerd_snapshot_last_index",
            "Journal index of the last snapshot written.",
            get(&j.snapshots.last_index),
        ),
        (
            "tickerd_snapshot_last_bytes",
            "Size of the last snapshot written.",
            get(&j.snapshots.last_bytes),
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, "gauge", help);
        sample(out, name, "", value);
    }
    let counters: [(&str, &str, u64); 5] = [
        (
            "tickerd_journal_written_bytes_total",
            "Bytes appended to the journal since start.",
            d.written_bytes(),
        ),
        (
            "tickerd_journal_fsyncs_total",
            "fdatasync calls of the journal's group commit.",
            syncs,
        ),
        (
            "tickerd_snapshots_written_total",
            "Snapshots written since start.",
            get(&j.snapshots.written),
        ),
        (
            "tickerd_snapshots_dropped_total",
            "Snapshot cuts superseded by a newer one while the writer was busy.",
            get(&j.snapshots.dropped),
        ),
        (
            "tickerd_snapshot_failures_total",
            "Snapshots that failed to be written.",
            get(&j.snapshots.failures),
        ),
    ];
    for (name, help, value) in counters {
        family(out, name, "counter", help);
        sample(out, name, "", value);
    }
    family(
        out,
        "tickerd_journal_fsync_seconds_total",
        "counter",
        "Time spent in the journal's fdatasync calls.",
    );
    let _ = writeln!(
        out,
        "tickerd_journal_fsync_seconds_total {}",
        seconds(sync_time.as_nanos() as u64)
    );
    family(
        out,
        "tickerd_journal_fsync_max_seconds",
        "gauge",
        "Longest fdatasync of the journal since start.",
    );
    let _ = writeln!(
        out,
        "tickerd_journal_fsync_max_seconds {}",
        seconds(sync_max.as_nanos() as u64)
    );
    family(
        out,
        "tickerd_journal_failed",
        "gauge",
        "1 once the journal failed (the market then takes no more commands).",
    );
    sample(
        out,
        "tickerd_journal_failed",
        "",
        d.failure().is_some() as u64,
    );
}

fn write_market(out: &mut String, s: &MarketStats) {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    family(
        out,
        "tickerd_commands_total",
        "counter",
        "Commands submitted to the engine (clients, simulator, heartbeats).",
    );
    sample(out, "tickerd_commands_total", "", get(&s.commands));
    family(
        out,
        "tickerd_orders_total",
        "counter",
        "Order commands the engine decided (place, cancel, amend, mass cancel), by outcome.",
    );
    sample(
        out,
        "tickerd_orders_total",
        "outcome=\"accepted\"",
        get(&s.accepted),
    );
    sample(
        out,
        "tickerd_orders_total",
        "outcome=\"rejected\"",
        get(&s.rejected),
    );
    family(
        out,
        "tickerd_rejects_total",
        "counter",
        "Commands the engine rejected, by reason.",
    );
    for (reason, count) in RejectReason::ALL.iter().zip(&s.rejects) {
        sample(
            out,
            "tickerd_rejects_total",
            &format!("reason=\"{}\"", reason.as_str()),
            get(count),
        );
    }
    family(
        out,
        "tickerd_busy_rejects_total",
        "counter",
        "Commands refused because the engine's ingress ring was full.",
    );
    sample(out, "tickerd_busy_rejects_total", "", get(&s.busy_rejects));
    family(
        out,
        "tickerd_events_total",
        "counter",
        "Events the engine published.",
    );
    sample(out, "tickerd_events_total", "", get(&s.events));
    family(
        out,
        "tickerd_commands_in_flight",
        "gauge",
        "Commands submitted whose outcome the feeds have not seen yet: the depth of the ingress \
         ring, the engine and the egress ring together.",
    );
    sample(out, "tickerd_commands_in_flight", "", s.in_flight());
    s.engine_latency.write(
        out,
        "tickerd_engine_to_feeds_seconds",
        "From the engine taking a command off the ingress ring to the feeds having published \
         its market-data and order updates.",
    );
}

fn write_hub(out: &mut String, market: &Market) {
    let stats = market.hub().stats();
    let kinds: Vec<(&str, Topic)> = Channel::ALL
        .iter()
        .map(|&channel| {
            (
                channel.name(),
                Topic::Market {
                    channel,
                    instrument: 0,
                },
            )
        })
        .chain(std::iter::once(("orders", Topic::Orders(1))))
        .collect();
    let families: [(&str, &str, &[AtomicU64; ticker_feeds::hub::KINDS]); 7] = [
        (
            "tickerd_feed_messages_total",
            "Messages published by the feeds, by channel.",
            &stats.published,
        ),
        (
            "tickerd_subscriptions_total",
            "Subscriptions opened, by channel.",
            &stats.subscribers,
        ),
        (
            "tickerd_slow_conflations_total",
            "Times a slow subscriber was conflated to the latest message, by channel.",
            &stats.conflations,
        ),
        (
            "tickerd_slow_resyncs_total",
            "Times a slow subscriber was resynced from a fresh snapshot, by channel.",
            &stats.resyncs,
        ),
        (
            "tickerd_slow_disconnects_total",
            "Subscribers ended for being too slow on a lossless channel, by channel.",
            &stats.disconnects,
        ),
        (
            "tickerd_resumes_total",
            "Subscriptions resumed from a sequence number, by channel.",
            &stats.resumes,
        ),
        (
            "tickerd_resumes_too_old_total",
            "Resumes older than the history (answered with a snapshot or a gap), by channel.",
            &stats.resumes_too_old,
        ),
    ];
    for (name, help, counter) in families {
        family(out, name, "counter", help);
        for (label, topic) in &kinds {
            sample(
                out,
                name,
                &format!("channel=\"{label}\""),
                HubStats::get(counter, *topic),
            );
        }
    }
    family(
        out,
        "tickerd_subscribers",
        "gauge",
        "Live subscribers, by channel (all instruments).",
    );
    let live = market.hub().live_subscribers();
    for ((label, _), n) in kinds.iter().zip(live) {
        sample(
            out,
            "tickerd_subscribers",
            &format!("channel=\"{label}\""),
            n,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_exact_decimals() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_000), "0.000001");
        assert_eq!(seconds(2_500_000_000), "2.5");
        assert_eq!(seconds(5_000_000_000), "5");
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_everything() {
        let h = Histogram::default();
        for ns in [500, 1_000, 1_001, 3_000_000, 9_000_000_000] {
            h.record_ns(ns);
        }
        let mut out = String::new();
        h.write(&mut out, "x_seconds", "test");
        assert!(
            out.contains("x_seconds_bucket{le=\"0.000001\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{le=\"0.000002\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_bucket{le=\"0.005\"} 4\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"5\"} 4\n"), "{out}");
        assert!(out.contains("x_seconds_bucket{le=\"+Inf\"} 5\n"), "{out}");
        assert!(out.contains("x_seconds_count 5\n"), "{out}");
        assert!(out.contains("x_seconds_sum 9.003002501\n"), "{out}");
        assert_eq!(h.count(), 5);
    }

    fn alive_tasks() -> u64 {
        let mut out = String::new();
        write_runtime(&mut out);
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
        let mut out = String::new();
        write_runtime(&mut out);
        assert_eq!(out, "");
    }
}
