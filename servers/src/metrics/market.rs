//! The market's families, read at scrape time: the engine's commands and outcomes, its rings,
//! the feeds' hub, the journal, the bus and the gRPC front.

use super::Families;
use crate::market::{BusState, JournalState, Market, MarketStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use ticker_engine::journal::sync::Durability;
use ticker_engine::pipeline::RingFill;
use ticker_engine::RejectReason;
use ticker_feeds::{Channel, HubStats, Topic};

/// Everything `/metrics` reads from a [`Market`].
pub(super) struct MarketCollector(pub Arc<Market>);

impl fmt::Debug for MarketCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MarketCollector")
    }
}

impl Collector for MarketCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let market = &*self.0;
        let mut f = Families::new(encoder);
        write_market(&mut f, market.stats())?;
        write_rings(&mut f, market)?;
        write_hub(&mut f, market)?;
        if let Some(journal) = market.journal() {
            write_journal(&mut f, journal)?;
        }
        if let Some(bus) = market.bus() {
            write_bus(&mut f, bus)?;
        }
        market.stats().grpc.write(&mut f)
    }
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn write_market(f: &mut Families, s: &MarketStats) -> fmt::Result {
    f.counter(
        "tickerd_commands_total",
        "Commands submitted to the engine (clients, simulator, heartbeats).",
        get(&s.commands),
    )?;
    f.counters(
        "tickerd_orders_total",
        "Order commands the engine decided (place, cancel, amend, mass cancel), by outcome.",
        "outcome",
        [
            ("accepted", get(&s.accepted)),
            ("rejected", get(&s.rejected)),
        ],
    )?;
    f.counters(
        "tickerd_rejects_total",
        "Commands the engine rejected, by reason.",
        "reason",
        RejectReason::ALL
            .iter()
            .zip(&s.rejects)
            .map(|(reason, count)| (reason.as_str(), get(count))),
    )?;
    f.counter(
        "tickerd_busy_rejects_total",
        "Commands refused because the engine's ingress ring was full.",
        get(&s.busy_rejects),
    )?;
    f.counter(
        "tickerd_events_total",
        "Events the engine published.",
        get(&s.events),
    )?;
    f.gauge(
        "tickerd_commands_in_flight",
        "Commands submitted whose outcome the feeds have not seen yet: the depth of the ingress \
         ring, the engine and the egress ring together.",
        s.in_flight(),
    )?;
    f.histogram(
        "tickerd_engine_to_feeds_seconds",
        "From the engine taking a command off the ingress ring to the feeds having published \
         its market-data and order updates.",
        &s.engine_latency,
    )
}

/// Each ring's depth and capacity (none once the market has shut down), with a `shard` label
/// when the market runs several.
fn write_rings(f: &mut Families, market: &Market) -> fmt::Result {
    let rings = market.rings();
    for (name, help, figure) in [
        (
            "tickerd_ring_depth",
            "Items in each of the engine's rings now: commands (ingress), event batches \
             (egress), empty batch buffers on their way back to the engine (batch_return), \
             journal segments waiting for their sync (journal_rotations); on a gateway, \
             commands waiting to be forwarded to the matcher (bus_commands).",
            (|r: &RingFill| r.len) as fn(&RingFill) -> usize,
        ),
        (
            "tickerd_ring_capacity",
            "Items each ring holds at most.",
            |r: &RingFill| r.capacity,
        ),
    ] {
        let mut metric = f
            .encoder()
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for r in &rings {
            let shard = r.shard.map(|s| s.to_string());
            let mut labels = vec![("ring", r.fill.ring)];
            if let Some(shard) = &shard {
                labels.push(("shard", shard));
            }
            ConstGauge::new(figure(&r.fill) as i64).encode(metric.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn write_hub(f: &mut Families, market: &Market) -> fmt::Result {
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
        f.counters(
            name,
            help,
            "channel",
            kinds
                .iter()
                .map(|(label, topic)| (*label, HubStats::get(counter, *topic))),
        )?;
    }
    let live = market.hub().live_subscribers();
    f.gauges(
        "tickerd_subscribers",
        "Live subscribers, by channel (all instruments).",
        "channel",
        kinds.iter().zip(live).map(|((label, _), n)| (*label, n)),
    )
}

/// The journal's progress and the snapshots written (docs/journal.md). With several shards,
/// each shard's indexes carry a `shard` label (each journal counts its own commands) and the
/// byte, sync and failure figures are over all of them.
fn write_journal(f: &mut Families, j: &JournalState) -> fmt::Result {
    let d = &j.durability;
    let (mut syncs, mut sync_time, mut sync_max) = (0, Duration::ZERO, Duration::ZERO);
    for shard in d {
        let (n, time, max) = shard.sync_stats();
        syncs += n;
        sync_time += time;
        sync_max = sync_max.max(max);
    }
    let sum = |figure: fn(&Durability) -> u64| d.iter().map(|s| figure(s)).sum::<u64>();
    type Figure = fn(&Durability) -> u64;
    let indexes: [(&str, &str, Figure); 2] = [
        (
            "tickerd_journal_written_index",
            "Journal index of the last command written.",
            Durability::written,
        ),
        (
            "tickerd_journal_durable_index",
            "Journal index of the last command known durable (synced; with fsync = off, what the last start found on disk).",
            Durability::synced,
        ),
    ];
    for (name, help, figure) in indexes {
        match d.as_slice() {
            [one] => f.gauge(name, help, figure(one))?,
            shards => {
                let labels: Vec<String> = (0..shards.len()).map(|k| k.to_string()).collect();
                f.gauges(
                    name,
                    help,
                    "shard",
                    labels
                        .iter()
                        .map(String::as_str)
                        .zip(shards.iter().map(|s| figure(s))),
                )?
            }
        }
    }
    let gauges: [(&str, &str, u64); 3] = [
        (
            "tickerd_journal_unsynced_bytes",
            "Bytes written to the journal but not yet synced.",
            sum(Durability::unsynced_bytes),
        ),
        (
            "tickerd_snapshot_last_index",
            "Journal index of the last snapshot written (shard 0's, with several shards).",
            get(&j.snapshots.last_index),
        ),
        (
            "tickerd_snapshot_last_bytes",
            "Size of the last snapshot written (every shard's file of it).",
            get(&j.snapshots.last_bytes),
        ),
    ];
    for (name, help, value) in gauges {
        f.gauge(name, help, value)?;
    }
    let counters: [(&str, &str, u64); 7] = [
        (
            "tickerd_journal_written_bytes_total",
            "Bytes appended to the journal since start.",
            sum(Durability::written_bytes),
        ),
        (
            "tickerd_journal_segments_started_total",
            "Journal segments started by rotations since start.",
            sum(Durability::segments_started),
        ),
        (
            "tickerd_journal_segments_unprepared_total",
            "Of those, segments started empty because no zero-filled spare was ready (journal.preallocate): writes outran the spare thread, or it failed (a full disk).",
            sum(Durability::segments_unprepared),
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
        f.counter(name, help, value)?;
    }
    f.counter(
        "tickerd_journal_fsync_seconds_total",
        "Time spent in the journal's fdatasync calls.",
        sync_time.as_secs_f64(),
    )?;
    f.gauge(
        "tickerd_journal_fsync_max_seconds",
        "Longest fdatasync of the journal since start.",
        sync_max.as_secs_f64(),
    )?;
    f.gauge(
        "tickerd_journal_failed",
        "1 once the journal failed (the market then takes no more commands).",
        d.iter().any(|s| s.failure().is_some()) as u64,
    )
}

/// The bus: what a matcher published, where a gateway is and how far behind
/// (docs/scale-out.md).
fn write_bus(f: &mut Families, bus: &BusState) -> fmt::Result {
    let s = &bus.stats;
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
        f.gauges(name, help, "role", [(role, value)])?;
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
        f.counters(name, help, "role", [(role, value)])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::market::{Market, MarketConfig};
    use std::collections::BTreeMap;
    use ticker_engine::journal::{FsyncMode, JournalConfig};

    /// Every family a journaled market exposes, with its type, as tickerd named them before
    /// prometheus-client wrote the exposition, and the rings since.
    const FAMILIES: [(&str, &str); 35] = [
        ("tickerd_commands_total", "counter"),
        ("tickerd_orders_total", "counter"),
        ("tickerd_rejects_total", "counter"),
        ("tickerd_busy_rejects_total", "counter"),
        ("tickerd_events_total", "counter"),
        ("tickerd_commands_in_flight", "gauge"),
        ("tickerd_engine_to_feeds_seconds", "histogram"),
        ("tickerd_ring_depth", "gauge"),
        ("tickerd_ring_capacity", "gauge"),
        ("tickerd_feed_messages_total", "counter"),
        ("tickerd_subscriptions_total", "counter"),
        ("tickerd_slow_conflations_total", "counter"),
        ("tickerd_slow_resyncs_total", "counter"),
        ("tickerd_slow_disconnects_total", "counter"),
        ("tickerd_resumes_total", "counter"),
        ("tickerd_resumes_too_old_total", "counter"),
        ("tickerd_subscribers", "gauge"),
        ("tickerd_journal_written_index", "gauge"),
        ("tickerd_journal_durable_index", "gauge"),
        ("tickerd_journal_unsynced_bytes", "gauge"),
        ("tickerd_snapshot_last_index", "gauge"),
        ("tickerd_snapshot_last_bytes", "gauge"),
        ("tickerd_journal_written_bytes_total", "counter"),
        ("tickerd_journal_segments_started_total", "counter"),
        ("tickerd_journal_segments_unprepared_total", "counter"),
        ("tickerd_journal_fsyncs_total", "counter"),
        ("tickerd_snapshots_written_total", "counter"),
        ("tickerd_snapshots_dropped_total", "counter"),
        ("tickerd_snapshot_failures_total", "counter"),
        ("tickerd_journal_fsync_seconds_total", "counter"),
        ("tickerd_journal_fsync_max_seconds", "gauge"),
        ("tickerd_journal_failed", "gauge"),
        ("tickerd_grpc_requests_started_total", "counter"),
        ("tickerd_grpc_requests_total", "counter"),
        ("tickerd_grpc_request_duration_seconds", "histogram"),
    ];

    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn a_journaled_market_exposes_every_family_with_its_type_and_labels() {
        let dir = TempDir(std::env::temp_dir().join(format!(
            "tickerd-metrics-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        )));
        let market = Market::start(MarketConfig {
            simulator: None,
            journal: Some(JournalConfig {
                dir: dir.0.clone(),
                fsync: FsyncMode::Batch,
                ..JournalConfig::default()
            }),
            ..MarketConfig::default()
        })
        .unwrap();
        let out = super::super::render(&market);
        let types: BTreeMap<&str, &str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        let mut expected: BTreeMap<&str, &str> = FAMILIES.into_iter().collect();
        expected.insert("tickerd_runtime_alive_tasks", "gauge");
        assert_eq!(types, expected);
        // Every HELP line comes before its TYPE line, once.
        let helps = out.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(helps, expected.len());
        for sample in [
            "tickerd_commands_total ",
            "tickerd_orders_total{outcome=\"accepted\"} ",
            "tickerd_orders_total{outcome=\"rejected\"} ",
            "tickerd_rejects_total{reason=\"",
            "tickerd_busy_rejects_total 0\n",
            "tickerd_commands_in_flight 0\n",
            "tickerd_engine_to_feeds_seconds_bucket{le=\"1e-06\"} ",
            "tickerd_engine_to_feeds_seconds_bucket{le=\"+Inf\"} ",
            "tickerd_engine_to_feeds_seconds_count ",
            "tickerd_feed_messages_total{channel=\"orders\"} ",
            "tickerd_subscribers{channel=\"orders\"} 0\n",
            "tickerd_journal_failed 0\n",
            "tickerd_journal_segments_unprepared_total 0\n",
            "tickerd_journal_fsync_seconds_total ",
            "tickerd_ring_depth{ring=\"ingress\"} 0\n",
            "tickerd_ring_capacity{ring=\"ingress\"} 65536\n",
            "tickerd_ring_capacity{ring=\"egress\"} 256\n",
            "tickerd_ring_capacity{ring=\"batch_return\"} 1024\n",
            "tickerd_ring_capacity{ring=\"journal_rotations\"} 8\n",
        ] {
            assert!(out.contains(sample), "{sample} in\n{out}");
        }
        let reasons = out
            .lines()
            .filter(|l| l.starts_with("tickerd_rejects_total{"))
            .count();
        assert_eq!(reasons, ticker_engine::RejectReason::ALL.len());
        tokio::task::spawn_blocking(move || market.shutdown())
            .await
            .unwrap();
    }
}
