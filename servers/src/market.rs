//! The running market: the engine thread, the feeds thread that drains it, the optional
//! simulator, and the order-entry API the fronts share.
//!
//! ```text
//! fronts ──execute()──► ingress ring ──► engine thread ──► egress ring ──► feeds thread
//!   ▲                                                                        │  MarketData (views, hub)
//!   └──────────── the command's events (outcome first) ◄── reply routing ◄───┘
//! ```
//!
//! Each command gets a correlation id from one counter. The feeds thread applies every batch to
//! the views first, then hands each waiting caller the events of its command: the outcome
//! event and everything up to the next command's outcome (a command's events are contiguous and
//! never span batches). With `shards` > 1 there is one engine thread per shard, each with its
//! rings; the feeds thread merges their streams (`shard_merge`) and a command sent to
//! every shard is answered once all of them gave their part (`reply_routing`).

use crate::bus::publisher::Publisher;
use crate::bus::{BusConfig, BusStats};
use crate::limits::{LimitsTable, RiskLimits};
use crate::order_entry::Violations;
use crate::recovery::{self, RecoveryReport, Restored};
use crate::reply_routing::{route_replies, Replies, Waiting};
use crate::shard_merge::{self, ShardMerge, SharedFanIn};
use crate::snapshot_writer::{CutRounds, OtherShards, SnapshotJob, SnapshotStats, SnapshotWriter};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use ticker_engine::journal::sync::Durability;
use ticker_engine::journal::{DirLock, JournalConfig};
use ticker_engine::pipeline::{
    Clock, JournalSetup, PipelineConfig, RingFill, ShardedIngress, ShardedPipeline, SubmitError,
};
use ticker_engine::shard::route;
use ticker_engine::*;
use ticker_feeds::orders::Accounts;
use ticker_feeds::positions::Positions;
use ticker_feeds::sim::{LastPrices, SimConfig, Simulator};
use ticker_feeds::{FeedsConfig, Hub, Instruments, MarketData};
use tokio::sync::oneshot;

/// Everything the market runs with; defaults in brackets.
#[derive(Debug, Clone)]
pub struct MarketConfig {
    pub pipeline: PipelineConfig,
    pub feeds: FeedsConfig,
    /// Instruments added at start [`crate::defaults::instruments`].
    pub instruments: Vec<InstrumentSpec>,
    /// The simulator, or `None` to take orders from clients only [`SimConfig::default`].
    pub simulator: Option<SimConfig>,
    /// How often a heartbeat advances engine time (GTD expiry) [100 ms]. Candles close at the
    /// first event past their interval; a heartbeat emits none of its own.
    pub heartbeat: Duration,
    /// Journal every command, snapshot, and recover from the data directory at start
    /// [`None`: a library user opts in; `tickerd` journals by default].
    pub journal: Option<JournalConfig>,
    /// Pre-trade limits applied at start, after the instruments [none].
    pub risk: RiskLimits,
    /// Engine threads, each holding the instruments `id % shards` names
    /// ([`ticker_engine::shard`]) [1]. Each shard journals to its own directory
    /// (`journal.dir/shard-K`, [`crate::shard_recovery`]); a matcher publishes their merged
    /// stream to the bus.
    pub shards: usize,
}

impl Default for MarketConfig {
    fn default() -> Self {
        MarketConfig {
            // Timestamps come from the wall clock when the engine takes each command, so GTD
            // expiry and deadlines are judged on arrival at the engine.
            pipeline: PipelineConfig {
                clock: Clock::Wall,
                ..PipelineConfig::default()
            },
            feeds: FeedsConfig::default(),
            instruments: crate::defaults::instruments(),
            simulator: Some(SimConfig::default()),
            heartbeat: Duration::from_millis(100),
            journal: None,
            risk: RiskLimits::default(),
            shards: 1,
        }
    }
}

/// Why a command could not be executed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteError {
    #[error("the engine's ingress queue is full; retry later")]
    Busy,
    #[error("the market is shutting down")]
    ShuttingDown,
    /// A gateway could not get the matcher's answer (docs/scale-out.md).
    #[error("the matcher is unavailable: {0}")]
    Unavailable(String),
}

/// What a command's caller gets: its events (outcome first) or why there are none.
pub type ReplyResult = Result<Vec<Event>, ExecuteError>;

/// The wait for a submitted command's events.
pub struct PendingReply(oneshot::Receiver<ReplyResult>);

impl std::future::Future for PendingReply {
    type Output = ReplyResult;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<ReplyResult> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ExecuteError::ShuttingDown)))
    }
}

/// Where a command's events go: an async caller, or a thread outside any runtime.
pub(crate) enum Reply {
    Async(oneshot::Sender<ReplyResult>),
    Blocking(std::sync::mpsc::SyncSender<ReplyResult>),
}

impl Reply {
    pub(crate) fn send(self, result: ReplyResult) {
        // The caller may have gone (a cancelled request): nothing to do then.
        match self {
            Reply::Async(tx) => {
                let _ = tx.send(result);
            }
            Reply::Blocking(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// Where commands go: this process's engine, or (on a gateway) the matcher over the bus.
enum Entry {
    Local(ShardedIngress),
    Remote(crate::bus::commands::Forwarder),
}

/// Counters of the running market, read by `/metrics`.
#[derive(Debug)]
pub struct MarketStats {
    /// Commands stamped for the engine (from clients, the simulator and heartbeats).
    pub commands: AtomicU64,
    /// Of those, heartbeats and snapshot cuts (which have no outcome event).
    pub heartbeats: AtomicU64,
    pub events: AtomicU64,
    /// Commands submitted but refused by a full ingress ring (never stamped into the engine).
    pub busy_rejects: AtomicU64,
    /// Outcomes the feeds saw: accepted, and rejected in total and by reason.
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub rejects: [AtomicU64; RejectReason::ALL.len()],
    /// From the engine taking a command to the feeds having published its updates.
    pub engine_latency: crate::metrics::Histogram,
    /// Events stamped before this (ns) are the simulated past run at start: their age is not
    /// a latency [0].
    pub latency_from: AtomicU64,
    /// The gRPC front's calls against this market, by method and status.
    pub grpc: crate::metrics::grpc::GrpcStats,
}

// By hand: `Default` is derived for arrays of at most 32 elements, and there are more reasons.
impl Default for MarketStats {
    fn default() -> Self {
        MarketStats {
            commands: AtomicU64::default(),
            heartbeats: AtomicU64::default(),
            events: AtomicU64::default(),
            busy_rejects: AtomicU64::default(),
            accepted: AtomicU64::default(),
            rejected: AtomicU64::default(),
            rejects: std::array::from_fn(|_| AtomicU64::default()),
            engine_latency: crate::metrics::Histogram::default(),
            latency_from: AtomicU64::default(),
            grpc: crate::metrics::grpc::GrpcStats::default(),
        }
    }
}

impl MarketStats {
    /// Commands submitted whose outcome the feeds have not seen: what the ingress ring, the
    /// engine and the egress ring hold together.
    pub fn in_flight(&self) -> u64 {
        let submitted = self.commands.load(Ordering::Relaxed)
            - self.heartbeats.load(Ordering::Relaxed)
            - self.busy_rejects.load(Ordering::Relaxed);
        let decided = self.accepted.load(Ordering::Relaxed) + self.rejected.load(Ordering::Relaxed);
        submitted.saturating_sub(decided)
    }

    /// Counts the outcomes of a batch and how long its commands took to reach the feeds.
    fn observe(&self, events: &[Event], now: Timestamp) {
        self.events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let latency_from = self.latency_from.load(Ordering::Relaxed);
        for e in events {
            match e.kind {
                EventKind::PlaceAccepted { .. } | EventKind::Accepted { .. } => {
                    self.accepted.fetch_add(1, Ordering::Relaxed);
                }
                EventKind::Rejected { reason, .. } => {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                    if let Some(i) = RejectReason::ALL.iter().position(|r| *r == reason) {
                        self.rejects[i].fetch_add(1, Ordering::Relaxed);
                    }
                }
                _ => continue,
            }
            if e.ts >= latency_from {
                self.engine_latency.record_ns(now.saturating_sub(e.ts));
            }
        }
    }
}

/// The journal of a running market (see [`crate::recovery`] and `docs/journal.md`).
pub struct JournalState {
    /// Each shard's journal, in shard order.
    pub durability: Vec<Arc<Durability>>,
    pub snapshots: Arc<SnapshotStats>,
    /// With several shards, its indexes are totals over the shards' journals.
    pub recovery: RecoveryReport,
    pub config: JournalConfig,
    /// The data directory's locks (one per shard), held while the market runs.
    _locks: Vec<DirLock>,
}

/// One of the market's rings and how full it is.
#[derive(Debug, Clone)]
pub struct MarketRing {
    /// The shard whose ring it is, when there are several.
    pub shard: Option<usize>,
    pub fill: RingFill,
}

/// Where a simulator resumes after a restart.
struct SimResume {
    /// Above every client id the simulator could have used (one per command at most).
    position: u64,
    live: Vec<OrderView>,
    prices: Vec<(InstrumentId, LastPrices)>,
}

pub struct Market {
    entry: Entry,
    /// With several shards: how many outcomes each command sent to all of them gives.
    fan_in: Option<SharedFanIn>,
    replies: Arc<Replies>,
    next_corr: Arc<AtomicU64>,
    next_session: AtomicU64,
    hub: Arc<Hub>,
    instruments: Arc<Instruments>,
    /// The number of instruments, changed when one is added at run time.
    instrument_count: tokio::sync::watch::Receiver<usize>,
    accounts: Arc<Accounts>,
    positions: Arc<Positions>,
    limits: Arc<LimitsTable>,
    stop: Arc<AtomicBool>,
    stats: Arc<MarketStats>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    pipeline: Mutex<Option<ShardedPipeline>>,
    journal: Option<JournalState>,
    bus: Option<BusState>,
}

/// A matcher's or gateway's link to the bus (docs/scale-out.md).
pub struct BusState {
    pub config: BusConfig,
    pub stats: Arc<BusStats>,
    client: async_nats::Client,
    /// Matcher: the publisher, finished at shutdown after the feeds thread.
    publisher: Mutex<Option<Arc<Mutex<Publisher>>>>,
    /// Gateway: the tasks consuming the stream and saying it is alive.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Matcher: gateway sessions the engine recovered, for the command server.
    foreign_sessions: Mutex<Vec<SessionId>>,
}

impl BusState {
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// Wall-clock nanoseconds since the Unix epoch: the ingress timestamp.
pub fn now_ns() -> Timestamp {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

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

    /// The journal's progress, the snapshots written and what recovery did, when the market
    /// journals.
    pub fn journal(&self) -> Option<&JournalState> {
        self.journal.as_ref()
    }

    /// Why the journal stopped the market, if it did (a failed write or sync): the engine
    /// then takes no more commands, and the process should exit.
    pub fn journal_failure(&self) -> Option<String> {
        self.journal.as_ref().and_then(|j| {
            j.durability
                .iter()
                .find_map(|d| d.failure().map(str::to_string))
        })
    }

    /// The bus, on a matcher or a gateway.
    pub fn bus(&self) -> Option<&BusState> {
        self.bus.as_ref()
    }

    /// The gateway sessions the engine recovered (a matcher's command server closes them when
    /// their gateway announces a restart); empty after the first call.
    pub fn take_foreign_sessions(&self) -> Vec<SessionId> {
        self.bus
            .as_ref()
            .map(|b| std::mem::take(&mut *b.foreign_sessions.lock()))
            .unwrap_or_default()
    }

    /// Whether this process should get traffic: `Err` with the reason when its journal has
    /// failed, or (a gateway) it cannot reach NATS, has stopped following the stream or is
    /// further behind it than `bus.max_lag_messages` / `bus.max_lag_ms`.
    pub fn health(&self) -> Result<(), String> {
        if let Some(why) = self.journal_failure() {
            return Err(format!("journal failed: {why}"));
        }
        let Some(bus) = &self.bus else { return Ok(()) };
        if bus.client.connection_state() != async_nats::connection::State::Connected {
            return Err(format!("not connected to NATS at {}", bus.config.url));
        }
        if let Some(why) = bus.stats.failure.lock().as_ref() {
            return Err(format!("not following the stream: {why}"));
        }
        let (messages, time) = bus.stats.lag(now_ns());
        if messages > bus.config.max_lag_messages || time > bus.config.max_lag {
            return Err(format!(
                "{messages} messages ({} ms) behind the stream",
                time.as_millis()
            ));
        }
        Ok(())
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn instruments(&self) -> &Arc<Instruments> {
        &self.instruments
    }

    /// Changes whenever an instrument is added (to the number of instruments).
    pub fn instrument_changes(&self) -> tokio::sync::watch::Receiver<usize> {
        self.instrument_count.clone()
    }

    pub fn accounts(&self) -> &Arc<Accounts> {
        &self.accounts
    }

    /// The limits in force and the disabled accounts, as the engine accepted them.
    pub fn limits(&self) -> &Arc<LimitsTable> {
        &self.limits
    }

    /// An account's limits as `GetLimits` reports them: from this process's table, or on a
    /// gateway from the matcher's.
    pub async fn get_limits(
        &self,
        account: AccountId,
    ) -> Result<crate::limits::AccountLimitsView, ExecuteError> {
        match (&self.entry, &self.bus) {
            (Entry::Remote(_), Some(bus)) => {
                crate::bus::commands::remote_limits(&bus.client, &bus.config, account).await
            }
            _ => Ok(self.limits.get(account)),
        }
    }

    /// Sends the configured limits to the engine (before any order flow of this run). The
    /// first start of a market also turns the engine's risk tracking on with an empty default
    /// set when none is configured, so positions count from the first order: limits set later
    /// at run time then see every position.
    fn apply_limits(&self, risk: &RiskLimits, risk_active: bool) -> std::io::Result<()> {
        let mut v = Violations::default();
        let default = risk
            .default
            .as_ref()
            .map(|d| d.to_engine(&self.instruments, "risk.default_limits", &mut v));
        let accounts: Vec<_> = risk
            .accounts
            .iter()
            .map(|(account, spec)| {
                let field = format!("risk.accounts.{account}");
                (*account, spec.to_engine(&self.instruments, &field, &mut v))
            })
            .collect();
        if let Err(invalid) = v.finish(|| ()) {
            let detail: Vec<String> = invalid
                .violations
                .iter()
                .map(|(field, why)| format!("{field}: {why}"))
                .collect();
            return Err(std::io::Error::other(format!(
                "bad limits in the config: {}",
                detail.join("; ")
            )));
        }
        let mut changes: Vec<(AccountId, Option<Limits>)> = Vec::new();
        match default {
            Some(d) => changes.push((0, d)),
            None if !risk_active => changes.push((0, None)),
            None => {}
        }
        changes.extend(accounts);
        for (account, limits) in changes {
            let events = self.execute_blocking(CommandKind::SetLimits {
                account,
                limits: limits.clone().map(Box::new),
            });
            match events.first().map(|e| (e.seq, &e.kind)) {
                Some((seq, EventKind::Accepted { .. })) => self.limits.set(seq, account, limits),
                Some((_, EventKind::Rejected { reason, .. })) => {
                    return Err(std::io::Error::other(format!(
                        "the limits of account {account} were rejected: {reason}"
                    )))
                }
                _ => return Err(std::io::Error::other("the market stopped while starting")),
            }
        }
        Ok(())
    }

    /// Every account's positions (the drop copy is [`Accounts::drop_copy`]).
    pub fn positions(&self) -> &Arc<Positions> {
        &self.positions
    }

    pub fn stats(&self) -> &Arc<MarketStats> {
        &self.stats
    }

    /// How full the engine's rings are now (see [`ShardedPipeline::rings`]); on a gateway, its queue
    /// of commands for the matcher. None while the market shuts down.
    pub fn rings(&self) -> Vec<MarketRing> {
        // `try_lock`: shutdown holds the lock while the engine drains, and a scrape need not
        // wait for that.
        let mut rings = self
            .pipeline
            .try_lock()
            .and_then(|p| {
                p.as_ref().map(|p| {
                    let several = p.count() > 1;
                    p.rings()
                        .into_iter()
                        .map(|(shard, fill)| MarketRing {
                            shard: several.then_some(shard),
                            fill,
                        })
                        .collect::<Vec<_>>()
                })
            })
            .unwrap_or_default();
        if let Entry::Remote(forwarder) = &self.entry {
            rings.push(MarketRing {
                shard: None,
                fill: forwarder.fill(),
            });
        }
        rings
    }

    fn command(&self, kind: CommandKind) -> Command {
        self.stats.commands.fetch_add(1, Ordering::Relaxed);
        Command {
            deadline: 0,
            ts: now_ns(),
            corr: self.next_corr.fetch_add(1, Ordering::Relaxed),
            kind,
        }
    }

    /// A session id no other order-entry session of this market has, for cancel-on-disconnect
    /// (`Place::session`, `CommandKind::SessionClosed`).
    pub fn new_session(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Submits a command and waits for its events (outcome first). Never waits for room in the
    /// ingress ring: a full ring is [`ExecuteError::Busy`].
    pub async fn execute(&self, kind: CommandKind) -> Result<Vec<Event>, ExecuteError> {
        self.execute_with_deadline(kind, 0).await
    }

    /// [`execute`](Self::execute) for a caller that gives up at `deadline` (ns since the Unix
    /// epoch; 0 for none): a command stamped after it is rejected by the engine with
    /// [`RejectReason::DeadlineExceeded`] without being executed.
    pub async fn execute_with_deadline(
        &self,
        kind: CommandKind,
        deadline: Timestamp,
    ) -> Result<Vec<Event>, ExecuteError> {
        self.submit_for_reply(kind, deadline)?.await
    }

    /// Submits a command now and returns where its events will arrive: a caller that submits
    /// several before awaiting any keeps them in order and pipelines them.
    pub fn submit_for_reply(
        &self,
        kind: CommandKind,
        deadline: Timestamp,
    ) -> Result<PendingReply, ExecuteError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(ExecuteError::ShuttingDown);
        }
        let cmd = Command {
            deadline,
            ..self.command(kind)
        };
        let (tx, rx) = oneshot::channel();
        self.submit(cmd, Reply::Async(tx), false)?;
        Ok(PendingReply(rx))
    }

    /// Hands `cmd` to the engine (or the matcher), its events to go to `reply`.
    fn submit(&self, cmd: Command, reply: Reply, wait_for_room: bool) -> Result<(), ExecuteError> {
        let ingress = match &self.entry {
            Entry::Local(ingress) => ingress,
            Entry::Remote(forwarder) => {
                let r = forwarder.submit(cmd, reply);
                if r == Err(ExecuteError::Busy) {
                    self.stats.busy_rejects.fetch_add(1, Ordering::Relaxed);
                }
                return r;
            }
        };
        let corr = cmd.corr;
        let outcomes = outcomes(ingress, &cmd);
        self.replies
            .lock()
            .insert(corr, Waiting::new(reply, outcomes));
        let folded = self.expect(corr, outcomes);
        let submitted = if wait_for_room {
            ingress.submit(cmd).map_err(|_| ExecuteError::ShuttingDown)
        } else {
            ingress.try_submit(cmd).map_err(|e| match e {
                SubmitError::IngressFull(_) => {
                    self.stats.busy_rejects.fetch_add(1, Ordering::Relaxed);
                    ExecuteError::Busy
                }
                SubmitError::Closed(_) => ExecuteError::ShuttingDown,
            })
        };
        if submitted.is_err() {
            self.replies.lock().remove(&corr);
            if folded {
                self.forget(corr);
            }
        }
        submitted.map(drop)
    }

    /// Hands `cmd`, whose events nobody waits for (the simulator's, a snapshot cut), to the
    /// local engine, waiting for room. The merge of several shards is told its outcomes first,
    /// as for every command: a replay folds them, so the live stream must too.
    fn submit_unanswered(&self, ingress: &ShardedIngress, cmd: Command) -> Result<(), SubmitError> {
        let corr = cmd.corr;
        let folded = self.expect(corr, outcomes(ingress, &cmd));
        ingress.submit(cmd).map(drop).inspect_err(|_| {
            if folded {
                self.forget(corr);
            }
        })
    }

    /// With several shards, tells the feeds thread's merge that the command `corr` gives
    /// `outcomes` outcomes before it is submitted (see [`crate::shard_merge`]); true if it
    /// must be forgotten should the submission fail.
    fn expect(&self, corr: Correlation, outcomes: usize) -> bool {
        self.fan_in
            .as_ref()
            .is_some_and(|f| shard_merge::expect(f, corr, outcomes))
    }

    fn forget(&self, corr: Correlation) {
        if let Some(f) = &self.fan_in {
            shard_merge::forget(f, corr);
        }
    }

    /// [`execute`](Self::execute) for threads outside an async runtime (start-up, tools);
    /// waits for room in the ingress ring instead of failing.
    pub fn execute_blocking(&self, kind: CommandKind) -> Vec<Event> {
        let cmd = self.command(kind);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        if self.submit(cmd, Reply::Blocking(tx), true).is_err() {
            return Vec::new();
        }
        rx.recv().ok().and_then(Result::ok).unwrap_or_default()
    }

    /// Submits a command whose outcome nobody awaits (it still reaches the feeds).
    pub fn submit_detached(&self, kind: CommandKind) -> Result<(), ExecuteError> {
        let cmd = self.command(kind);
        match &self.entry {
            Entry::Local(ingress) => {
                let (corr, folded) = (cmd.corr, self.expect(cmd.corr, outcomes(ingress, &cmd)));
                ingress.try_submit(cmd).map(drop).map_err(|e| {
                    if folded {
                        self.forget(corr);
                    }
                    match e {
                        SubmitError::IngressFull(_) => {
                            self.stats.busy_rejects.fetch_add(1, Ordering::Relaxed);
                            ExecuteError::Busy
                        }
                        SubmitError::Closed(_) => ExecuteError::ShuttingDown,
                    }
                })
            }
            Entry::Remote(_) => {
                let (tx, _rx) = oneshot::channel();
                self.submit(cmd, Reply::Async(tx), false)
            }
        }
    }

    fn spawn_heartbeat(self: &Arc<Self>, every: Duration) -> std::io::Result<()> {
        let weak = Arc::downgrade(self);
        // Snapshots are cut by command count, checked on the heartbeat's beat. The count runs
        // from the snapshot recovery started from, not from this start: a market that crashes
        // before its own count comes round would otherwise never cut one, and each start would
        // replay a longer tail. With several shards the count is over all their journals.
        let mut next_cut = self.journal.as_ref().map(|j| {
            (
                j.durability.clone(),
                j.recovery.snapshot.unwrap_or(0) + j.config.snapshot_every,
                j.config.snapshot_every,
            )
        });
        let handle = std::thread::Builder::new()
            .name("ticker-heartbeat".into())
            .spawn(move || loop {
                std::thread::park_timeout(every);
                let Some(market) = weak.upgrade() else { return };
                if market.stop.load(Ordering::Relaxed) {
                    return;
                }
                // A full ingress means traffic is advancing time anyway.
                if market.submit_detached(CommandKind::Heartbeat).is_ok() {
                    market.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                }
                if let Some((durability, at, every)) = &mut next_cut {
                    let written: u64 = durability.iter().map(|d| d.written()).sum();
                    if written >= *at && market.submit_detached(CommandKind::Snapshot).is_ok() {
                        market.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                        *at = written + *every;
                    }
                }
            })?;
        self.threads.lock().push(handle);
        Ok(())
    }

    fn simulated_instruments(&self) -> Vec<Instrument> {
        self.instruments
            .all()
            .iter()
            .map(|w| w.instrument.clone())
            .collect()
    }

    /// Runs `config.history_secs` of simulated past through the engine before the market
    /// opens: commands at `history_rate` a second stamped from that long ago up to now,
    /// journaled and published like any flow, so the candles, the 24 h statistics and the
    /// books have a past on a fresh start. Returns the first command of the live market
    /// (already drawn), for [`spawn_simulator`](Self::spawn_simulator) to submit first.
    fn run_history(
        self: &Arc<Self>,
        sim: &mut Simulator,
        config: &SimConfig,
    ) -> std::io::Result<Option<Command>> {
        let Entry::Local(ingress) = &self.entry else {
            return Ok(None);
        };
        let closed = || std::io::Error::other("the engine stopped while simulating the past");
        let span = config.history_secs.saturating_mul(1_000_000_000);
        let started = Instant::now();
        let opened_at = now_ns();
        let past = opened_at.saturating_sub(span);
        self.stats.latency_from.store(opened_at, Ordering::Relaxed);
        sim.set_rate(config.history_rate);
        ingress.set_backfill(true);
        let mut commands = 0u64;
        let mut pending = sim.next_command();
        let first_live = loop {
            let next = sim.next_command();
            let cmd = Command {
                ts: past + pending.ts,
                ..self.command(pending.kind)
            };
            commands += 1;
            if next.ts >= span {
                // The past's last command: once it has its reply, every command before it
                // has been applied and published (one producer, one ring, in order).
                let (tx, rx) = std::sync::mpsc::sync_channel(1);
                self.submit(cmd, Reply::Blocking(tx), true)
                    .map_err(|_| closed())?;
                rx.recv().map_err(|_| closed())?.map_err(|_| closed())?;
                break next;
            }
            self.submit_unanswered(ingress, cmd).map_err(|_| closed())?;
            pending = next;
        };
        ingress.set_backfill(false);
        sim.set_rate(config.rate);
        tracing::info!(
            "simulated the past {} s: {commands} commands in {:.1} s",
            config.history_secs,
            started.elapsed().as_secs_f64()
        );
        Ok(Some(first_live))
    }

    /// The simulator's thread: submits its commands at the simulated pace, the first (if the
    /// past was simulated) being `carried`. Simulated time past the history maps to wall time
    /// from now.
    fn spawn_simulator(
        self: &Arc<Self>,
        mut sim: Simulator,
        carried: Option<Command>,
    ) -> std::io::Result<()> {
        let weak = Arc::downgrade(self);
        let offset = Duration::from_nanos(sim.now());
        let handle = std::thread::Builder::new()
            .name("ticker-simulator".into())
            .spawn(move || {
                let start = Instant::now();
                let mut carried = carried;
                loop {
                    let cmd = carried.take().unwrap_or_else(|| sim.next_command());
                    // Keep the simulated pace against the wall clock.
                    let due = Duration::from_nanos(cmd.ts).saturating_sub(offset);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        std::thread::park_timeout(wait);
                    }
                    let Some(market) = weak.upgrade() else { return };
                    if market.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let cmd = market.command(cmd.kind);
                    let Entry::Local(ingress) = &market.entry else {
                        return;
                    };
                    if market.submit_unanswered(ingress, cmd).is_err() {
                        return;
                    }
                }
            })?;
        self.threads.lock().push(handle);
        Ok(())
    }

    /// Stops taking commands, lets the engine drain, and joins every thread. Waiting callers
    /// get their events or [`ExecuteError::ShuttingDown`].
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.journal.is_some() {
            // A last snapshot, so the next start replays nothing; the pipeline applies every
            // command accepted before its shutdown, this one included.
            let cut = self.command(CommandKind::Snapshot);
            if matches!(&self.entry, Entry::Local(i) if self.submit_unanswered(i, cut).is_ok()) {
                self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
            }
        }
        let threads: Vec<_> = std::mem::take(&mut *self.threads.lock());
        for t in &threads {
            t.thread().unpark();
        }
        if let Some(p) = self.pipeline.lock().take() {
            p.shutdown();
            // The feeds thread ends when the engine thread has stopped and every batch is read.
            p.join();
        }
        if let Some(bus) = &self.bus {
            // The feeds thread ends when the consumer's channel closes.
            for task in bus.tasks.lock().drain(..) {
                task.abort();
            }
        }
        for t in threads {
            let _ = t.join();
        }
        if let Some(bus) = &self.bus {
            if let Some(p) = bus.publisher.lock().take() {
                p.lock().finish();
            }
        }
        self.replies.lock().clear();
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

/// How many outcomes `cmd` gives: one per shard `ingress` sends it to (none for time-only
/// commands).
fn outcomes(ingress: &ShardedIngress, cmd: &Command) -> usize {
    let shards = ingress.count();
    route(shards, &cmd.kind).outcomes(&cmd.kind, shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet() -> MarketConfig {
        MarketConfig {
            simulator: None,
            ..MarketConfig::default()
        }
    }

    #[tokio::test]
    async fn execute_returns_the_commands_own_events() {
        let market = Market::start(quiet()).unwrap();
        let btc = market.instruments().by_symbol("BTC-USD").unwrap().id();
        let ask = Place::limit(1, btc, Side::Sell, 6_500_000, 100);
        let events = market.execute(CommandKind::Place(ask)).await.unwrap();
        assert!(matches!(events[0].kind, EventKind::PlaceAccepted { .. }));
        assert!(matches!(events[1].kind, EventKind::OrderRested { .. }));
        let bid = Place::limit(2, btc, Side::Buy, 6_500_000, 40);
        let events = market.execute(CommandKind::Place(bid)).await.unwrap();
        assert!(events
            .iter()
            .any(|e| matches!(e.kind, EventKind::Trade { size: 40, .. })));
        let bad = Place::limit(2, 99, Side::Buy, 1, 1);
        let events = market.execute(CommandKind::Place(bad)).await.unwrap();
        assert!(matches!(
            events[0].kind,
            EventKind::Rejected {
                reason: RejectReason::UnknownInstrument,
                ..
            }
        ));
        market.shutdown();
        assert_eq!(
            market.execute(CommandKind::Heartbeat).await,
            Err(ExecuteError::ShuttingDown)
        );
    }

    #[tokio::test]
    async fn the_simulator_moves_the_market() {
        let market = Market::start(MarketConfig {
            simulator: Some(SimConfig {
                rate: 20_000,
                ..SimConfig::default()
            }),
            ..MarketConfig::default()
        })
        .unwrap();
        let topic = ticker_feeds::Topic::Market {
            channel: ticker_feeds::Channel::Trades,
            instrument: 0,
        };
        let mut sub = market.hub().subscribe(topic, None);
        for _ in 0..5 {
            let next = tokio::time::timeout(Duration::from_secs(20), sub.recv()).await;
            assert!(matches!(next, Ok(Ok(_))), "a trade arrives: {next:?}");
        }
        market.shutdown();
    }
}
