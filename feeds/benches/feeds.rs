//! Cost of the feeds: applying engine events to every view (with JSON encoding) per event, hub
//! fan-out per subscriber, the drop copy's throughput to one consumer, and the engine
//! pipeline's throughput with and without subscribers that never read.
//!
//! `cargo bench -p ticker-feeds --bench feeds`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticker_engine::pipeline::{Pipeline, PipelineConfig};
use ticker_engine::*;
use ticker_feeds::hub::{Message, MessageKind};
use ticker_feeds::sim::{SimConfig, Simulator};
use ticker_feeds::*;

fn specs() -> Vec<InstrumentSpec> {
    let d = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap();
    vec![
        InstrumentSpec {
            symbol: "BTC-USD".into(),
            tick_size: d("0.01"),
            lot_size: d("0.00001"),
            min_size: d("0.00001"),
            max_size: d("100"),
            reference_price: d("65000"),
            band: d("0.1"),
        },
        InstrumentSpec {
            symbol: "ETH-USD".into(),
            tick_size: d("0.01"),
            lot_size: d("0.0001"),
            min_size: d("0.0001"),
            max_size: d("1000"),
            reference_price: d("3200"),
            band: d("0.1"),
        },
    ]
}

/// Commands of a seeded simulated market, instruments first.
fn commands(n: usize) -> Vec<Command> {
    let instruments: Vec<Instrument> = specs()
        .into_iter()
        .enumerate()
        .map(|(i, s)| Instrument::new(i as u32, s).unwrap())
        .collect();
    let mut cmds: Vec<Command> = instruments
        .iter()
        .map(|i| Command {
            deadline: 0,
            ts: 0,
            corr: 0,
            kind: CommandKind::AddInstrument(Box::new(i.spec.clone())),
        })
        .collect();
    let mut sim = Simulator::new(SimConfig::default(), &instruments, 1);
    cmds.extend((0..n).map(|_| sim.next_command()));
    cmds
}

/// The events of `commands`, one batch per command.
fn event_batches(cmds: &[Command]) -> Vec<Vec<Event>> {
    let mut engine = Engine::default();
    cmds.iter().map(|c| engine.apply_collect(c)).collect()
}

fn market_data_per_event(c: &mut Criterion) {
    let batches = event_batches(&commands(20_000));
    let events: usize = batches.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("market_data");
    g.throughput(Throughput::Elements(events as u64));
    g.sample_size(10);
    g.bench_function("apply_all_views_json_per_event", |b| {
        b.iter_batched(
            || {
                MarketData::new(
                    FeedsConfig::default(),
                    Arc::new(Hub::default()),
                    Arc::new(Instruments::default()),
                )
            },
            |mut md| {
                for batch in &batches {
                    md.apply(batch);
                }
                md
            },
            BatchSize::PerIteration,
        )
    });
    // Messages encode themselves when first read: the bench above, with no subscriber, does
    // no encoding at all. Here one subscriber per market-data topic and per account reads every
    // message's JSON after each batch, so each message is encoded once, as in a server where
    // every topic is watched (the subscriber's own cost included).
    g.bench_function("apply_all_views_every_topic_read_json_per_event", |b| {
        b.iter_batched(
            || {
                let md = MarketData::new(
                    FeedsConfig::default(),
                    Arc::new(Hub::default()),
                    Arc::new(Instruments::default()),
                );
                let mut subs = Vec::new();
                for instrument in 0..specs().len() as u32 {
                    for channel in Channel::ALL {
                        let topic = Topic::Market {
                            channel,
                            instrument,
                        };
                        subs.push(md.hub().subscribe(topic, None));
                    }
                }
                for account in 1_000_000..1_000_200 {
                    subs.push(md.accounts().subscribe(account, None));
                }
                (md, subs)
            },
            |(mut md, mut subs)| {
                for batch in &batches {
                    md.apply(batch);
                    for s in &mut subs {
                        while let Ok(Some(d)) = s.try_recv() {
                            if let Some(m) = d.message() {
                                black_box(m.json());
                            }
                        }
                    }
                }
                (md, subs)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// The drop copy as the feeds thread produces it: every batch applied to every view (the drop
/// copy and positions among them), then one drop-copy subscriber drains what was published
/// and reads each message's encoding (JSON as a WebSocket consumer would, protobuf as a gRPC
/// one), so each is encoded once. Throughput is in drop-copy messages; the engine events
/// behind them are printed once.
fn drop_copy_to_one_consumer(c: &mut Criterion) {
    let batches = event_batches(&commands(20_000));
    let events: usize = batches.iter().map(Vec::len).sum();
    let new_md = || {
        MarketData::new(
            FeedsConfig::default(),
            Arc::new(Hub::default()),
            Arc::new(Instruments::default()),
        )
    };
    let (messages, positions) = {
        let mut md = new_md();
        for batch in &batches {
            md.apply(batch);
        }
        (md.drop_copy().seq(), md.positions().seq())
    };
    eprintln!(
        "drop copy: 20,000 commands, {events} engine events, {messages} drop-copy messages \
         ({positions} position messages besides)"
    );
    let mut g = c.benchmark_group("drop_copy");
    g.throughput(Throughput::Elements(messages));
    g.sample_size(10);
    for (name, proto) in [
        ("apply_and_drain_json", false),
        ("apply_and_drain_proto", true),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let md = new_md();
                    let sub = md.drop_copy().subscribe(None);
                    (md, sub)
                },
                |(mut md, mut sub)| {
                    let mut received = 0u64;
                    for batch in &batches {
                        md.apply(batch);
                        while let Ok(Some(d)) = sub.try_recv() {
                            if let Some(m) = d.message() {
                                received += 1;
                                black_box(if proto { m.proto() } else { m.json() });
                            }
                        }
                    }
                    // The snapshot the subscription started from, then every message.
                    assert_eq!(received, messages + 1);
                    (md, sub)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

fn hub_fanout(c: &mut Criterion) {
    const SUBSCRIBERS: usize = 10_000;
    let hub = Hub::new(HubConfig {
        conflated_queue: 64,
        ..HubConfig::default()
    });
    let topic = Topic::Market {
        channel: Channel::Ticker,
        instrument: 0,
    };
    let state = hub.topic(topic);
    let mut subs: Vec<Subscription> = (0..SUBSCRIBERS)
        .map(|_| hub.subscribe(topic, None))
        .collect();
    let json = bytes::Bytes::from(vec![b'x'; 320]);
    let mut seq = 0;
    let mut g = c.benchmark_group("hub");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    g.bench_function("publish_and_deliver_to_10k_subscribers", |b| {
        b.iter(|| {
            seq += 1;
            state.publish(Message::encoded(
                seq,
                seq - 1,
                MessageKind::Update,
                json.clone(),
                json.clone(),
            ));
            for s in &mut subs {
                black_box(s.try_recv().unwrap());
            }
        })
    });
    g.bench_function("publish_only_with_10k_subscribers", |b| {
        b.iter(|| {
            seq += 1;
            state.publish(Message::encoded(
                seq,
                seq - 1,
                MessageKind::Update,
                json.clone(),
                json.clone(),
            ));
        })
    });
    g.finish();
}

/// Time to push `cmds` through the engine thread with a feeds consumer, with and without
/// `stalled` subscribers per topic that never read.
fn pipeline_time(cmds: &[Command], stalled: usize) -> Duration {
    let (pipeline, ingress, mut egress) = Pipeline::spawn(PipelineConfig::default()).unwrap();
    let hub = Arc::new(Hub::default());
    let instruments = Arc::new(Instruments::default());
    let mut md = MarketData::new(FeedsConfig::default(), hub.clone(), instruments);
    let mut held = Vec::new();
    for instrument in 0..specs().len() as u32 {
        for channel in Channel::ALL {
            for _ in 0..stalled {
                held.push(hub.subscribe(
                    Topic::Market {
                        channel,
                        instrument,
                    },
                    None,
                ));
            }
        }
    }
    for account in 1_000_000..1_000_200 {
        for _ in 0..stalled.min(2) {
            held.push(md.accounts().subscribe(account, None));
        }
    }
    let consumer = std::thread::spawn(move || {
        while let Some(batch) = egress.recv() {
            md.apply(&batch);
        }
        md
    });
    let start = Instant::now();
    for c in cmds {
        ingress.submit(c.clone()).unwrap();
    }
    drop(ingress);
    let md = consumer.join().unwrap();
    let elapsed = start.elapsed();
    pipeline.join();
    drop(md);
    drop(held);
    elapsed
}

fn stalled_subscribers(c: &mut Criterion) {
    let cmds = commands(200_000);
    let mut g = c.benchmark_group("pipeline_with_feeds");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Elements(cmds.len() as u64));
    for stalled in [0, 100] {
        g.bench_function(format!("stalled_subscribers_per_topic_{stalled}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += pipeline_time(&cmds, stalled);
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    market_data_per_event,
    drop_copy_to_one_consumer,
    hub_fanout,
    stalled_subscribers
);
criterion_main!(benches);
