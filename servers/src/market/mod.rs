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
use crate::recovery::RecoveryReport;
use crate::reply_routing::{Replies, Waiting};
use crate::shard_merge::{self, SharedFanIn};
use crate::snapshot_writer::SnapshotStats;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use ticker_engine::journal::sync::Durability;
use ticker_engine::journal::{DirLock, JournalConfig};
use ticker_engine::pipeline::{
    Clock, PipelineConfig, RingFill, ShardedIngress, ShardedPipeline, SubmitError,
};
use ticker_engine::shard::route;
use ticker_engine::*;
use ticker_feeds::orders::Accounts;
use ticker_feeds::positions::Positions;
use ticker_feeds::sim::SimConfig;
use ticker_feeds::{FeedsConfig, Hub, Instruments};
use tokio::sync::oneshot;

mod simulate;
mod start;
mod stats;

pub use stats::MarketStats;

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
