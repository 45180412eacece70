//! Starting a market: recovering the engines and the feeds from the journal (or a fresh
//! start), spawning the engine and feeds threads, and a gateway's start from the bus.

use super::simulate::SimResume;
use super::{now_ns, BusState, Entry, JournalState, Market, MarketConfig, MarketStats};
use crate::bus::publisher::Publisher;
use crate::bus::BusConfig;
use crate::limits::LimitsTable;
use crate::recovery::{self, Restored};
use crate::reply_routing::{route_replies, Replies};
use crate::shard_merge::{ShardMerge, SharedFanIn};
use crate::snapshot_writer::{CutRounds, OtherShards, SnapshotJob, SnapshotWriter};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticker_engine::journal::sync::Durability;
use ticker_engine::pipeline::{JournalSetup, ShardedPipeline};
use ticker_engine::*;
use ticker_feeds::sim::{LastPrices, Simulator};
use ticker_feeds::{Hub, Instruments, MarketData};

impl Market {
    /// Starts the engine and feeds threads — after recovering from the data directory when
    /// `config.journal` is set —, adds the configured instruments the market does not have yet
    /// and, if configured, starts (or resumes) the simulator. Returns once the instruments are
    /// in place and orders of order-entry sessions from before a restart are cancelled.
    pub fn start(config: MarketConfig) -> std::io::Result<Arc<Market>> {
        Self::start_with(config, None)
    }

    /// [`start`](Self::start) for `--role matcher`: every event is also published to the bus
    /// (those a restart replays from the journal too, when the stream does not have them yet),
    /// with a feeds snapshot at start and every `bus.snapshot_every` events.
    pub fn start_matcher(
        config: MarketConfig,
        bus: BusConfig,
        publisher: Publisher,
    ) -> std::io::Result<Arc<Market>> {
        Self::start_with(config, Some((bus, publisher)))
    }

    fn start_with(
        config: MarketConfig,
        bus: Option<(BusConfig, Publisher)>,
    ) -> std::io::Result<Arc<Market>> {
        let hub = Arc::new(Hub::new(config.feeds.hub.clone()));
        let instruments = Arc::new(Instruments::default());
        let (engines, mut md, mut journal) = match &config.journal {
            None => (
                Shard::all(config.shards)
                    .map_err(std::io::Error::other)?
                    .into_iter()
                    .map(|shard| {
                        Engine::new(EngineConfig {
                            shard,
                            ..config.pipeline.engine.clone()
                        })
                    })
                    .collect::<Vec<_>>(),
                MarketData::new(config.feeds.clone(), hub.clone(), instruments.clone()),
                None,
            ),
            Some(j) => {
                let mut republish = |events: &[Event]| {
                    if let Some((_, p)) = &bus {
                        p.events(events);
                    }
                };
                let r = recovery::recover_market(
                    j,
                    config.shards,
                    &config.pipeline.engine,
                    &config.feeds,
                    hub.clone(),
                    instruments.clone(),
                    &mut republish,
                )
                .map_err(std::io::Error::other)?;
                let report = &r.restored.report;
                for skipped in &report.skipped {
                    tracing::warn!("snapshot skipped: {skipped}");
                }
                if let Some(t) = &report.torn {
                    if t.deliberate {
                        tracing::warn!(
                            "journal cut on purpose at byte {} of {} ({}): {} bytes and {} later segments dropped",
                            t.offset, t.file, t.reason, t.bytes, t.dropped_segments.len()
                        );
                    } else {
                        tracing::warn!(
                            "torn journal tail cut off: {} bytes at byte {} of {} ({}); those commands were never acknowledged",
                            t.bytes, t.offset, t.file, t.reason
                        );
                    }
                }
                tracing::info!("recovered {}: {}", j.dir.display(), report);
                (r.engines, r.feeds, Some((r.restored, j.clone())))
            }
        };
        if let Some((_, p)) = &bus {
            if p.after() > md.last_seq() {
                return Err(std::io::Error::other(format!(
                    "the bus stream holds events up to {} but this market ends at {}: another \
                     matcher publishes there, or the journal lost acknowledged commands \
                     (journal.fsync = \"off\"); give this market its own stream or clear it",
                    p.after(),
                    md.last_seq()
                )));
            }
            // Gateways start from here (and after a gap, only from here).
            p.snapshot(md.snapshot());
        }
        // What the restored engines say about the time before this start. Sessions a gateway
        // opened are its own to close (it may still be up): only this process's are stale.
        // Every shard knows every instrument, session and account's limits; each instrument's
        // prices and live orders are on its own shard.
        let engine = &engines[0];
        let (stale_sessions, foreign_sessions): (Vec<SessionId>, Vec<SessionId>) = engine
            .sessions()
            .partition(|s| bus.is_none() || crate::bus::session_node(*s) == 0);
        let present: Vec<String> = engine
            .books()
            .iter()
            .map(|b| b.instrument().spec.symbol.clone())
            .collect();
        let position: u64 = engines.iter().map(Engine::last_seq).sum();
        let resume_from = (position > 0).then(|| SimResume {
            position,
            live: engines.iter().flat_map(Engine::live_orders).collect(),
            prices: engines
                .iter()
                .enumerate()
                .flat_map(|(k, engine)| {
                    let count = engines.len();
                    engine
                        .books()
                        .iter()
                        .filter(move |b| Shard::of_instrument(count, b.instrument().id) == k)
                        .map(|b| {
                            (
                                b.instrument().id,
                                LastPrices {
                                    last_trade: b.last_price(),
                                    bid: b.best_bid(),
                                    ask: b.best_ask(),
                                },
                            )
                        })
                })
                .collect(),
        });
        // What the engine recovered (nothing on a fresh market), for `GetLimits`.
        let limits = Arc::new(LimitsTable::default());
        let recovered_seq = engine.last_seq();
        if let Some(d) = engine.default_limits() {
            limits.set(recovered_seq, 0, Some(d.clone()));
        }
        for (account, own, disabled) in engine.risk_accounts() {
            limits.set(recovered_seq, account, own.cloned());
            limits.set_disabled(recovered_seq, account, disabled);
        }
        let risk_active = engine.risk_active();
        let (merged_seq, next_corr) = journal
            .as_ref()
            .map_or((0, 1), |(r, _)| (r.merged_seq, r.next_corr));
        let (recovered_fan_in, unfinished) = match &mut journal {
            Some((r, _)) => (
                std::mem::take(&mut r.fan_in),
                std::mem::take(&mut r.unfinished),
            ),
            None => Default::default(),
        };
        let (pipeline, ingress, mut egress, journaled) = match journal {
            None => {
                let (p, i, e) = ShardedPipeline::spawn_with(engines, config.pipeline.clone())?;
                (p, i, e, None)
            }
            Some((restored, j)) => {
                let Restored {
                    writers,
                    locks,
                    report,
                    next_ticket,
                    ..
                } = restored;
                let storages = writers.iter().map(|w| w.storage().clone()).collect();
                let setups = writers
                    .into_iter()
                    .map(|writer| JournalSetup {
                        writer,
                        fsync: j.fsync,
                        group_commit_bytes: j.group_commit_bytes,
                        group_commit_delay: j.group_commit_delay,
                    })
                    .collect();
                let (p, i, e) = ShardedPipeline::spawn_journaled(
                    engines,
                    config.pipeline.clone(),
                    setups,
                    next_ticket,
                )?;
                let writer = SnapshotWriter::spawn(storages, j.keep_snapshots)?;
                (p, i, e, Some((writer, locks, report, j)))
            }
        };
        let durability: Vec<Arc<Durability>> = pipeline
            .shards()
            .iter()
            .filter_map(|p| p.durability().cloned())
            .collect();
        let accounts = md.accounts().clone();
        let positions = md.positions().clone();
        let replies: Arc<Replies> = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(MarketStats::default());
        let (mut snapshots, journal) = match journaled {
            None => (None, None),
            Some((writer, locks, report, config)) => {
                let state = JournalState {
                    durability,
                    snapshots: writer.stats().clone(),
                    recovery: report,
                    config,
                    _locks: locks,
                };
                (Some(writer), Some(state))
            }
        };
        let (bus_config, publisher) = match bus {
            Some((c, p)) => (Some(c), Some(Arc::new(Mutex::new(p)))),
            None => (None, None),
        };
        let fan_in: Option<SharedFanIn> =
            (ingress.count() > 1).then(|| Arc::new(Mutex::new(recovered_fan_in)));
        // Commands sent to every shard that a crash let only some shards journal go to the
        // others first, so every shard has them (a kill switch, an instrument); the fan-in
        // still waits for their outcomes and folds them as if they had come late.
        for u in &unfinished {
            for &shard in &u.missing {
                ingress
                    .submit_to(shard, u.command.clone())
                    .map_err(|_| std::io::Error::other("the engine stopped at start"))?;
            }
        }
        if !unfinished.is_empty() {
            tracing::warn!(
                "{} commands sent to every shard had reached only some of them before the \
                 crash; sent to the others now: {:?}",
                unfinished.len(),
                unfinished
                    .iter()
                    .map(|u| (u.command.corr, &u.missing))
                    .collect::<Vec<_>>()
            );
        }
        let feeds = {
            let fan_in = fan_in.clone();
            let replies = replies.clone();
            let stats = stats.clone();
            let publisher = publisher.clone();
            let shards = ingress.count();
            let mut next_bus_snapshot = publisher.as_ref().map(|p| {
                let every = p.lock().snapshot_every();
                (md.last_seq() + every, every)
            });
            std::thread::Builder::new()
                .name("ticker-feeds".into())
                .spawn(move || {
                    // No wall-clock `md.tick`: the views take time from event timestamps
                    // only, so a replay of the journal after a restart publishes what this
                    // thread published (see `ticker_feeds::snapshot`).
                    // Several shards' streams are merged in the order of their merge tickets
                    // (crate::shard_merge); replies are folded from the raw batches.
                    let mut merge = fan_in.map(|f| ShardMerge::resume(f, merged_seq, 0));
                    let mut rounds = CutRounds::new(shards);
                    while let Some((shard, mut batch)) = egress.recv() {
                        let events: &[Event] = match &mut merge {
                            Some(m) => m.merge(batch.ticket(), &mut batch),
                            None => &batch,
                        };
                        md.apply(events);
                        if let Some(p) = &publisher {
                            let p = p.lock();
                            p.events(events);
                            if let Some((at, every)) = &mut next_bus_snapshot {
                                if md.last_seq() >= *at {
                                    p.snapshot(md.snapshot());
                                    *at = md.last_seq() + *every;
                                }
                            }
                        }
                        stats.observe(events, now_ns());
                        route_replies(&replies, &batch);
                        let cut = batch.take_cut();
                        if let (Some(cut), Some(writer)) = (cut, &snapshots) {
                            // A sharded snapshot is whole once every shard has cut.
                            if let Some(mut round) = rounds.add(shard, *cut) {
                                let first = round.remove(0);
                                let shards = merge.as_ref().map(|m| {
                                    let cuts: Vec<u64> = std::iter::once(first.index)
                                        .chain(round.iter().map(|c| c.index))
                                        .collect();
                                    OtherShards {
                                        merge: m.encode_state(&cuts),
                                        cuts: round
                                            .into_iter()
                                            .map(|c| (c.index, c.engine))
                                            .collect(),
                                    }
                                });
                                writer.submit(SnapshotJob {
                                    index: first.index,
                                    engine: first.engine,
                                    feeds: md.snapshot(),
                                    shards,
                                });
                            }
                        }
                    }
                    // Whatever cut is queued is written before the feeds thread ends.
                    if let Some(writer) = snapshots.as_mut() {
                        writer.finish();
                    }
                    // The last snapshot saves a restarted gateway the replay.
                    if let Some(p) = &publisher {
                        p.lock().snapshot(md.snapshot());
                    }
                })?
        };
        let max_stale_session = stale_sessions.iter().copied().max().unwrap_or(0);
        let bus = match (bus_config, publisher) {
            (Some(config), Some(p)) => {
                let (stats, client) = {
                    let p = p.lock();
                    (p.stats().clone(), p.client().clone())
                };
                Some(BusState {
                    config,
                    stats,
                    client,
                    publisher: Mutex::new(Some(p)),
                    tasks: Mutex::new(Vec::new()),
                    foreign_sessions: Mutex::new(foreign_sessions),
                })
            }
            _ => None,
        };
        let (count_tx, instrument_count) = tokio::sync::watch::channel(instruments.all().len());
        instruments.on_insert(move |n| {
            count_tx.send_replace(n);
        });
        let market = Arc::new(Market {
            entry: Entry::Local(ingress),
            fan_in,
            replies,
            next_corr: Arc::new(AtomicU64::new(next_corr)),
            next_session: AtomicU64::new(max_stale_session + 1),
            hub,
            instruments,
            instrument_count,
            accounts,
            positions,
            limits,
            stop,
            stats,
            threads: Mutex::new(vec![feeds]),
            pipeline: Mutex::new(Some(pipeline)),
            journal,
            bus,
        });
        for spec in config
            .instruments
            .iter()
            .filter(|s| !present.contains(&s.symbol))
        {
            let events =
                market.execute_blocking(CommandKind::AddInstrument(Box::new(spec.clone())));
            if let Some(Event {
                kind: EventKind::Rejected { reason, .. },
                ..
            }) = events.first()
            {
                return Err(std::io::Error::other(format!(
                    "instrument {} rejected: {reason}",
                    spec.symbol
                )));
            }
        }
        // Their connections died with the previous process: cancel-on-disconnect applies.
        for session in &stale_sessions {
            market.execute_blocking(CommandKind::SessionClosed { session: *session });
        }
        if !stale_sessions.is_empty() {
            tracing::info!(
                "cancelled the orders of {} order-entry sessions of the previous run",
                stale_sessions.len()
            );
        }
        market.apply_limits(&config.risk, risk_active)?;
        if let Some(sim) = config.simulator {
            let fresh = resume_from.is_none();
            let instruments = market.simulated_instruments();
            let mut simulator = match resume_from {
                None => Simulator::new(sim.clone(), &instruments, 0),
                Some(r) => {
                    Simulator::resume(sim.clone(), &instruments, 0, r.position, r.live, r.prices)
                }
            };
            let carried = if fresh && sim.history_secs > 0 && !instruments.is_empty() {
                market.run_history(&mut simulator, &sim)?
            } else {
                None
            };
            // The past runs before the heartbeat starts: a beat stamped now in between would
            // move engine time (and the candles) forward and back.
            market.spawn_heartbeat(config.heartbeat)?;
            market.spawn_simulator(simulator, carried)?;
        } else {
            market.spawn_heartbeat(config.heartbeat)?;
        }
        Ok(market)
    }

    /// `--role gateway`: no engine. Loads the newest feeds snapshot from the bus and follows
    /// the matcher's event stream from it (the views, topics and `seq`s are the matcher's);
    /// commands go to the matcher over NATS. Returns once the snapshot is loaded; the
    /// gateway then catches up while it serves (health says how far behind it is).
    pub async fn start_gateway(
        config: MarketConfig,
        bus: BusConfig,
    ) -> std::io::Result<Arc<Market>> {
        use crate::bus::gateway::{follow, Following};
        let hub = Arc::new(Hub::new(config.feeds.hub.clone()));
        let instruments = Arc::new(Instruments::default());
        let Following {
            mut md,
            mut deliveries,
            stats: bus_stats,
            client,
            consumer,
            start_seq,
            head,
            from_stream_seq,
        } = follow(&bus, config.feeds.clone(), hub.clone(), instruments.clone())
            .await
            .map_err(std::io::Error::other)?;
        tracing::info!(
            "gateway {}: following {} from event {start_seq}",
            bus.node,
            bus.stream
        );
        let accounts = md.accounts().clone();
        let positions = md.positions().clone();
        let stats = Arc::new(MarketStats::default());
        let (applied_tx, mut applied) = tokio::sync::watch::channel(start_seq);
        let feeds = {
            let stats = stats.clone();
            let bus_stats = bus_stats.clone();
            std::thread::Builder::new()
                .name("ticker-feeds".into())
                .spawn(move || {
                    while let Some(d) = deliveries.blocking_recv() {
                        applied_tx.send_replace(d.stream_seq);
                        if let Some(last) = d.events.last() {
                            md.apply(&d.events);
                            stats.observe(&d.events, now_ns());
                            bus_stats.applied_seq.store(last.seq, Ordering::Relaxed);
                        }
                        bus_stats.stream_seq.store(d.stream_seq, Ordering::Relaxed);
                        bus_stats.pending.store(d.pending, Ordering::Relaxed);
                        bus_stats
                            .applied_published_ns
                            .store(d.published_ns, Ordering::Relaxed);
                        bus_stats.published.fetch_add(d.messages, Ordering::Relaxed);
                    }
                })?
        };
        // Serve only once caught up with the stream as it was at start.
        let started = Instant::now();
        if head >= from_stream_seq {
            if applied.wait_for(|s| *s >= head).await.is_err() {
                let why = bus_stats.failure.lock().clone();
                return Err(std::io::Error::other(format!(
                    "the gateway stopped while catching up: {}",
                    why.unwrap_or_else(|| "the stream ended".into())
                )));
            }
            let messages = head + 1 - from_stream_seq;
            let took = started.elapsed();
            tracing::info!(
                "gateway {}: caught up {messages} messages in {took:?} ({:.0} messages/s)",
                bus.node,
                messages as f64 / took.as_secs_f64().max(1e-9)
            );
        }
        let epoch = now_ns() / 1_000_000_000;
        announce_node(client.clone(), bus.clone(), epoch);
        let alive = keep_alive(client.clone(), &bus, epoch);
        let forwarder = crate::bus::commands::Forwarder::start(
            client.clone(),
            &bus,
            config.pipeline.ingress_capacity,
        );
        let (count_tx, instrument_count) = tokio::sync::watch::channel(instruments.all().len());
        instruments.on_insert(move |n| {
            count_tx.send_replace(n);
        });
        Ok(Arc::new(Market {
            fan_in: None,
            entry: Entry::Remote(forwarder),
            replies: Arc::new(Mutex::new(HashMap::new())),
            next_corr: Arc::new(AtomicU64::new(1)),
            next_session: AtomicU64::new(crate::bus::first_session(bus.node, epoch)),
            hub,
            instruments,
            instrument_count,
            accounts,
            positions,
            limits: Arc::new(LimitsTable::default()),
            stop: Arc::new(AtomicBool::new(false)),
            stats,
            threads: Mutex::new(vec![feeds]),
            pipeline: Mutex::new(None),
            journal: None,
            bus: Some(BusState {
                config: bus,
                stats: bus_stats,
                client,
                publisher: Mutex::new(None),
                tasks: Mutex::new(vec![consumer, alive]),
                foreign_sessions: Mutex::new(Vec::new()),
            }),
        }))
    }
}

/// Tells the matcher this gateway (re)started, so it cancels the orders of the sessions the
/// gateway's previous run left open; retried until a matcher answers.
fn announce_node(client: async_nats::Client, bus: BusConfig, epoch: u64) {
    tokio::spawn(async move {
        let payload = bytes::Bytes::from(format!("{} {epoch}", bus.node));
        loop {
            let asked = client.request(bus.node_subject(), payload.clone());
            match tokio::time::timeout(bus.request_timeout, asked).await {
                Ok(Ok(answer)) => {
                    let closed = String::from_utf8_lossy(&answer.payload).to_string();
                    tracing::info!(
                        "gateway {}: the matcher closed {closed} sessions of earlier runs",
                        bus.node
                    );
                    return;
                }
                Ok(Err(_)) | Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    });
}

/// Tells the matcher this gateway is alive, five times per `bus.gateway_timeout`, for as long
/// as the runtime runs.
fn keep_alive(
    client: async_nats::Client,
    bus: &BusConfig,
    epoch: u64,
) -> tokio::task::JoinHandle<()> {
    let (subject, every) = (bus.alive_subject(), bus.gateway_timeout / 5);
    let payload = bytes::Bytes::from(format!("{} {epoch}", bus.node));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let _ = client.publish(subject.clone(), payload.clone()).await;
        }
    })
}
