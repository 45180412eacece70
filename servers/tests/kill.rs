//! The kill test (issue 12): a real tickerd under order flow is killed with SIGKILL at random
//! moments and restarted on the same data directory, again and again; then it is stopped
//! cleanly and the whole journal is replayed in this process.
//!
//! Each round starts tickerd (simulator on, snapshots every few thousand commands, small
//! segments, nothing pruned), connects a gRPC order-entry client that places and cancels
//! orders and records every answer, and resumes the client's two streams — its order updates
//! over gRPC and BTC-USD trades over the WebSocket — from the last `seq` it saw: the first
//! message after the resume must continue the chain (`prev_seq` = that `seq`), as must every
//! later one. Once both streams have spoken, the round waits a random time and kills.
//!
//! At the end, one more start (no simulator, so nothing moves but the client), the same
//! resume checks, the client's view of its open orders against a fresh snapshot of them, a
//! SIGTERM, and then the replay: every acknowledged order, rejection and cancel is in the
//! journal at the engine seq it was answered with, and every acknowledged order is resting or
//! ended by a later journaled event; every snapshot on disk equals the replay at its command,
//! the last one (the clean stop's) included; the client's open orders are the replay's.
//!
//! It runs on a market of one shard and on one of two (`market.shards`: each shard journals
//! in its own directory, and the final replay interleaves the journals by merge ticket and
//! checks the merged `seq`s the client was answered with).
//!
//! CI size by default (20 kills on one shard, 10 on two); longer through the environment (see
//! `kill/run.sh`):
//! `TICKERD_KILL_ROUNDS` kills at least [20], `TICKERD_KILL_SECONDS` goes on killing for at
//! least this long [0], `TICKERD_KILL_SEED` replays a run's random choices (not its timing)
//! [from the clock, printed], `TICKERD_KILL_MAX_DELAY_MS` the longest wait before a kill [1500],
//! `TICKERD_KILL_SNAPSHOT_EVERY` tickerd's `journal.snapshot_every` [5000].

#![cfg(unix)]

// The crate root of a test resolves modules beside it, so the parts in kill/ are named.
#[path = "kill/process.rs"]
mod process;
#[path = "kill/replay.rs"]
mod replay;
#[path = "kill/streams.rs"]
mod streams;
#[path = "kill/trader.rs"]
mod trader;

use process::{DataDir, Tickerd};
use replay::Replay;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use streams::{Log, OpenOrders};
use ticker_engine::{AccountId, Instrument, Lots};
use ticker_feeds::sim::Rng;
use ticker_proto::v1 as pb;
use ticker_proto::v1::market_data_service_client::MarketDataServiceClient;
use ticker_proto::v1::order_service_client::OrderServiceClient;
use ticker_servers::config::TickerdConfig;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use trader::{Ledger, Trader};

/// Failure guard for anything awaited; never a wait for something to happen.
const GUARD: Duration = Duration::from_secs(30);

/// The client's account, and a second one that trades with it when the simulator is off.
const TRADER: (&str, AccountId) = ("kill-trader", 71);
const TAKER: (&str, AccountId) = ("kill-taker", 72);
/// Order-entry tasks of the client: two, so that more than one order is in flight at a kill.
const WORKERS: u64 = 2;
/// Simulator commands per second: enough that trades, heartbeats and the simulator's own
/// commands fill the journal around the client's, little enough for a 2-core machine.
const SIM_RATE: u64 = 500;
/// Rounds (per mille) that begin with an extra kill during start-up, and how soon after the
/// start it comes (tickerd takes a few hundred milliseconds to serve in the test profile).
const EARLY_KILLS_PER_MILLE: u64 = 200;
const EARLY_KILL_WITHIN_MS: u64 = 300;
/// Segment size: small, so segments rotate during the run and kills land around rotations.
const SEGMENT_BYTES: u64 = 256 << 10;

struct Settings {
    seed: u64,
    rounds: u64,
    seconds: u64,
    max_delay_ms: u64,
    /// Commands between snapshots: every second or two under the client's flow, so kills land
    /// before, during and after snapshot writes (each is a few MB, mostly the feeds' resume
    /// histories, and every one is kept: more would fill the disk).
    snapshot_every: u64,
    shards: usize,
}

impl Settings {
    /// `default_rounds` kills unless the environment asks for more.
    fn from_env(shards: usize, default_rounds: u64) -> Settings {
        let var = |name: &str| {
            std::env::var(name).ok().map(|v| {
                v.parse::<u64>()
                    .unwrap_or_else(|e| panic!("{name}={v:?} is not a whole number: {e}"))
            })
        };
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as u64;
        Settings {
            seed: var("TICKERD_KILL_SEED").unwrap_or(clock),
            rounds: var("TICKERD_KILL_ROUNDS").unwrap_or(default_rounds),
            seconds: var("TICKERD_KILL_SECONDS").unwrap_or(0),
            max_delay_ms: var("TICKERD_KILL_MAX_DELAY_MS").unwrap_or(1_500),
            snapshot_every: var("TICKERD_KILL_SNAPSHOT_EVERY").unwrap_or(5_000),
            shards,
        }
    }
}

/// tickerd's command line: the same data directory, shards and tokens for every start.
fn args(dir: &Path, settings: &Settings, simulator: bool) -> Vec<String> {
    let mut args: Vec<String> = [
        "--grpc-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--data-dir",
        &dir.display().to_string(),
        "--token",
        &format!("{}={}", TRADER.0, TRADER.1),
        "--token",
        &format!("{}={}", TAKER.0, TAKER.1),
        "--set",
        &format!("journal.snapshot_every={}", settings.snapshot_every),
        // Every snapshot is kept, so the oldest stays the first clean stop's and no segment
        // is pruned (see the test): the final check replays the journal from command 1.
        "--set",
        "journal.keep_snapshots=1000000",
        "--set",
        &format!("journal.segment_bytes={SEGMENT_BYTES}"),
        "--set",
        &format!("market.shards={}", settings.shards),
    ]
    .map(String::from)
    .to_vec();
    if simulator {
        for set in [
            format!("market.sim_rate={SIM_RATE}"),
            // No simulated past: its snapshot would prune the journal the final check
            // replays from command 1 (tests/restart.rs covers the past and a restart).
            "market.sim_history_s=0".to_string(),
            format!("market.sim_seed={}", settings.seed),
        ] {
            args.extend(["--set".to_string(), set]);
        }
    } else {
        args.push("--no-sim".into());
    }
    args
}

/// What the client keeps across every process.
struct Client {
    instrument: Arc<Instrument>,
    ledger: Arc<Mutex<Ledger>>,
    client_ids: Arc<AtomicU64>,
    updates: Log,
    trades: Log,
    /// Its open orders, as the order updates tell them.
    view: Arc<Mutex<OpenOrders>>,
    /// Subscriptions that resumed, per stream (each must have continued the chain).
    resumes: u64,
}

/// The client connected to one process.
struct Connection {
    channel: Channel,
    readers: Vec<JoinHandle<()>>,
    stopping: Arc<AtomicBool>,
}

impl Client {
    fn new() -> Client {
        let btc = ticker_servers::defaults::instruments().remove(0);
        assert_eq!(btc.symbol, "BTC-USD");
        Client {
            // tickerd adds its default instruments in order: BTC-USD is instrument 0.
            instrument: Arc::new(Instrument::new(0, btc).expect("a valid instrument")),
            ledger: Arc::default(),
            client_ids: Arc::new(AtomicU64::new(1)),
            updates: streams::new_log(),
            trades: streams::new_log(),
            view: Arc::default(),
            resumes: 0,
        }
    }

    /// Connects to `tickerd` and subscribes to both streams, resuming each after the last
    /// `seq` seen (the first time: a snapshot of the open orders, and live trades).
    async fn connect(&mut self, tickerd: &Tickerd) -> Connection {
        let endpoint = Channel::from_shared(format!("http://{}", tickerd.grpc)).expect("a URI");
        let channel = tokio::time::timeout(GUARD, endpoint.connect())
            .await
            .expect("gRPC connects in time")
            .expect("gRPC connects");
        let stopping = Arc::new(AtomicBool::new(false));
        let from_update = streams::subscribing(&self.updates);
        let request =
            self.trader(&channel, TRADER.0, &stopping)
                .authed(pb::SubscribeOrderUpdatesRequest {
                    from_seq: from_update,
                });
        let updates = tokio::time::timeout(
            GUARD,
            OrderServiceClient::new(channel.clone()).subscribe_order_updates(request),
        )
        .await
        .expect("SubscribeOrderUpdates answers in time")
        .expect("SubscribeOrderUpdates")
        .into_inner();
        let from_trade = streams::subscribing(&self.trades);
        let ws = tokio::time::timeout(GUARD, streams::subscribe_trades(&tickerd.http, from_trade))
            .await
            .expect("the WebSocket subscribes in time");
        if from_update.is_some() && from_trade.is_some() {
            self.resumes += 1;
        } else {
            assert_eq!(self.resumes, 0, "only the first connection starts afresh");
        }
        let readers = vec![
            tokio::spawn(streams::follow_order_updates(
                updates,
                from_update,
                self.updates.clone(),
                self.view.clone(),
                self.instrument.clone(),
                stopping.clone(),
            )),
            tokio::spawn(streams::follow_trades(
                ws,
                from_trade,
                self.trades.clone(),
                stopping.clone(),
            )),
        ];
        Connection {
            channel,
            readers,
            stopping,
        }
    }

    fn trader(&self, channel: &Channel, token: &'static str, stopping: &Arc<AtomicBool>) -> Trader {
        Trader {
            orders: OrderServiceClient::new(channel.clone()),
            market_data: MarketDataServiceClient::new(channel.clone()),
            token,
            instrument: self.instrument.clone(),
            ledger: self.ledger.clone(),
            view: self.view.clone(),
            client_ids: self.client_ids.clone(),
            stopping: stopping.clone(),
        }
    }

    /// Waits until both streams have delivered a message since they were subscribed (the
    /// one a resume is judged by), or broke a rule.
    async fn first_messages(&self) {
        for (name, log) in [("order updates", &self.updates), ("trades", &self.trades)] {
            let mut watch = log.subscribe();
            tokio::time::timeout(
                GUARD,
                watch.wait_for(|l| l.since_subscribe > 0 || !l.violations.is_empty()),
            )
            .await
            .unwrap_or_else(|_| panic!("a message on {name} in time"))
            .expect("the log lives");
        }
        self.assert_sound();
    }

    fn assert_sound(&self) {
        for (name, log) in [("order updates", &self.updates), ("trades", &self.trades)] {
            let l = log.borrow();
            assert!(l.violations.is_empty(), "{name}: {:#?}", l.violations);
        }
        let ledger = self.ledger.lock().unwrap();
        assert!(ledger.violations.is_empty(), "{:#?}", ledger.violations);
    }
}

impl Connection {
    /// Marks the coming end of tickerd as expected by the readers and the traders.
    fn stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// Waits for the readers to see the end of their streams.
    async fn closed(self) {
        for reader in self.readers {
            tokio::time::timeout(GUARD, reader)
                .await
                .expect("a stream ends in time once tickerd is gone")
                .expect("a stream reader");
        }
    }
}

/// What the kills hit, for the summary.
#[derive(Default)]
struct Tally {
    kills: u64,
    /// Extra kills during start-up.
    early: u64,
    /// The most commands a start replayed after its snapshot: what snapshots bound.
    longest_tail: u64,
    /// Starts that cut a torn journal tail (a kill of the process leaves none: the kernel
    /// finishes every write(2) it began).
    torn: usize,
    /// Kills that left a snapshot half-written (a `.tmp` file the next start deletes).
    half_written: usize,
}

impl Tally {
    /// Notes what a process said on stderr (a start that cut a torn tail says so).
    fn ended(&mut self, stderr: &[String]) {
        self.torn += stderr
            .iter()
            .filter(|l| l.contains("torn journal tail"))
            .count();
    }

    fn killed(&mut self, dir: &Path, stderr: &[String]) {
        self.ended(stderr);
        self.half_written += usize::from(half_written(dir) > 0);
    }

    /// Notes a start's journal line ("…, N journaled commands replayed (…)").
    fn started(&mut self, recovery: &str) {
        let (before, _) = recovery
            .split_once(" journaled commands replayed")
            .expect("the journal line says what was replayed");
        let count = before.rsplit(' ').next().expect("a count");
        let replayed: u64 = count.parse().expect("a whole number");
        self.longest_tail = self.longest_tail.max(replayed);
    }
}

/// Snapshot files left half-written (`.tmp`) in `dir` and its shard directories.
fn half_written(dir: &Path) -> usize {
    let entries = std::fs::read_dir(dir).expect("the data directory lists");
    entries
        .filter_map(Result::ok)
        .map(|e| {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                half_written(&e.path())
            } else {
                usize::from(e.file_name().to_string_lossy().ends_with(".tmp"))
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_orders_and_both_streams_survive_kill_9() {
    kill_test(Settings::from_env(1, 20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_orders_and_both_streams_survive_kill_9_on_two_shards() {
    kill_test(Settings::from_env(2, 10)).await;
}

async fn kill_test(settings: Settings) {
    eprintln!(
        "kill test on {} shard(s): seed {} (TICKERD_KILL_SEED={} replays its choices), {} kills and {} s at least",
        settings.shards, settings.seed, settings.seed, settings.rounds, settings.seconds
    );
    let dir = DataDir::new(settings.seed, settings.shards);
    let mut rng = Rng::new(settings.seed);
    let mut client = Client::new();
    let mut tally = Tally::default();
    let started = Instant::now();
    // Pruning deletes the segments that every kept snapshot covers. Every snapshot is kept
    // here, and the oldest is this clean stop's, a few commands after the first start: it
    // covers no whole segment, so the whole journal stays for the final replay.
    Tickerd::start(&args(&dir.0, &settings, true))
        .await
        .terminate()
        .await;
    while tally.kills < settings.rounds || started.elapsed() < Duration::from_secs(settings.seconds)
    {
        if rng.chance(EARLY_KILLS_PER_MILLE) {
            // Now and then a kill before the client could connect, in the middle of start-up.
            let after = Duration::from_millis(rng.below(EARLY_KILL_WITHIN_MS));
            let stderr = process::start_and_kill(&args(&dir.0, &settings, true), after).await;
            tally.early += 1;
            tally.killed(&dir.0, &stderr);
        }
        let tickerd = Tickerd::start(&args(&dir.0, &settings, true)).await;
        tally.started(&tickerd.recovery);
        let connection = client.connect(&tickerd).await;
        let traders: Vec<_> = (0..WORKERS)
            .map(|_| {
                let trader = client.trader(&connection.channel, TRADER.0, &connection.stopping);
                tokio::spawn(trader.run(Rng::new(rng.next_u64())))
            })
            .collect();
        client.first_messages().await;
        // The point of the test: a kill at a moment nobody chose.
        let delay = rng.below(settings.max_delay_ms + 1);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        connection.stopping();
        let recovery = tickerd.recovery.clone();
        let stderr = tickerd.kill().await;
        tally.kills += 1;
        tally.killed(&dir.0, &stderr);
        for t in traders {
            tokio::time::timeout(GUARD, t)
                .await
                .expect("the traders stop once tickerd is gone")
                .expect("a trader");
        }
        connection.closed().await;
        client.assert_sound();
        eprintln!(
            "kill {} at {:.1} s, {delay} ms after both streams spoke, in a run that began with {recovery}",
            tally.kills,
            started.elapsed().as_secs_f64(),
        );
    }
    let killing = started.elapsed();

    // The last start: no simulator, so that nothing but the client moves its orders.
    let tickerd = Tickerd::start(&args(&dir.0, &settings, false)).await;
    tally.started(&tickerd.recovery);
    let recovery = tickerd.recovery.clone();
    let connection = client.connect(&tickerd).await;
    cross(&client, &connection).await;
    client.first_messages().await;
    let (seq, open) = open_orders_now(&client, &connection).await;
    let mut watch = client.updates.subscribe();
    tokio::time::timeout(GUARD, watch.wait_for(|l| l.last == Some(seq)))
        .await
        .expect("the live order updates reach the fresh snapshot's seq")
        .expect("the log lives");
    let view = client.view.lock().unwrap().clone();
    assert_eq!(
        view, open,
        "the open orders the client followed are the server's"
    );
    connection.stopping();
    let stderr = tickerd.terminate().await;
    tally.ended(&stderr);
    connection.closed().await;
    client.assert_sound();
    for (name, log) in [
        ("order updates", &client.updates),
        ("trades", &client.trades),
    ] {
        assert_eq!(
            log.borrow().resumes_continued,
            client.resumes,
            "{name}: every resume continued the chain"
        );
    }
    assert_eq!(
        client.resumes, tally.kills,
        "both streams resumed after every kill"
    );

    let replaying = Instant::now();
    let engine = TickerdConfig::default().market_config().pipeline.engine;
    let replay = Replay::run(&dir.0, engine, TRADER.1, settings.shards);
    let ledger = client.ledger.lock().unwrap();
    let wrong = replay.disagreements(&ledger, TRADER.1);
    assert!(
        wrong.is_empty(),
        "{} of the server's answers are not what the journal holds:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
    assert_eq!(
        replay.open_orders(TRADER.1),
        view,
        "the client's open orders are the replayed engine's"
    );
    let replayed = replaying.elapsed();

    let (updates, trades) = (
        client.updates.borrow().messages,
        client.trades.borrow().messages,
    );
    eprintln!(
        "kill test passed on {} shard(s), seed {}:\n\
         - {} kills after the client connected and {} during start-up in {:.1} s; {} left a \
         snapshot half-written; {} torn tails cut; at most {} commands replayed at a start\n\
         - {} places answered ({} accepted; {} more accepted whose answers died with the \
         process), {} cancels answered, {} requests unanswered\n\
         - {} order updates and {} trades followed, both resumed {} times\n\
         - the clean stop's run began with {recovery}\n\
         - {} journaled commands replayed and {} snapshots compared in {:.1} s; {} orders open \
         at the end\n\
         - {:.1} s in all",
        settings.shards,
        settings.seed,
        tally.kills,
        tally.early,
        killing.as_secs_f64(),
        tally.half_written,
        tally.torn,
        tally.longest_tail,
        ledger.places.len(),
        ledger.accepted(),
        replay.accepted_places() - ledger.accepted(),
        ledger.cancels.len(),
        ledger.unanswered,
        updates,
        trades,
        client.resumes,
        replay.commands,
        replay.snapshots,
        replayed.as_secs_f64(),
        view.0.len(),
        started.elapsed().as_secs_f64(),
    );
}

/// With the simulator off, the client makes the trade its trades stream resumes with: a sell
/// of its own above the book, and the other account buying up to it.
async fn cross(client: &Client, connection: &Connection) {
    let seller = client.trader(&connection.channel, TRADER.0, &connection.stopping);
    let buyer = Trader {
        token: TAKER.0,
        ledger: Arc::default(),
        ..seller.clone()
    };
    let touch = seller.touch().await.expect("a depth snapshot");
    let price = (touch.ask.max(touch.bid) + 100).min(client.instrument.band_high);
    let size: Lots = 100;
    let sell = seller
        .place(seller.limit(pb::Side::Sell, price, size, false))
        .await
        .expect("the sell is answered");
    assert!(
        sell.result.is_some_and(|r| r.accepted),
        "the sell is accepted"
    );
    let buy = buyer
        .place(buyer.limit(pb::Side::Buy, price, size, true))
        .await
        .expect("the buy is answered");
    let order = buy.order.expect("the buy is accepted");
    assert!(!order.fills.is_empty(), "the buy trades: {order:?}");
}

/// A fresh subscription's snapshot of the client's open orders: its seq and the orders.
async fn open_orders_now(client: &Client, connection: &Connection) -> (u64, OpenOrders) {
    let trader = client.trader(&connection.channel, TRADER.0, &connection.stopping);
    let request = trader.authed(pb::SubscribeOrderUpdatesRequest { from_seq: None });
    let mut orders = OrderServiceClient::new(connection.channel.clone());
    let mut stream = tokio::time::timeout(GUARD, orders.subscribe_order_updates(request))
        .await
        .expect("SubscribeOrderUpdates answers in time")
        .expect("SubscribeOrderUpdates")
        .into_inner();
    let first = tokio::time::timeout(GUARD, stream.message())
        .await
        .expect("a snapshot in time")
        .expect("the stream")
        .expect("a first message");
    let Some(pb::order_update::Event::Snapshot(open)) = &first.event else {
        panic!("a fresh subscription starts with a snapshot: {first:?}");
    };
    let open = OpenOrders::from_snapshot(open, &client.instrument).expect("a readable snapshot");
    (first.seq, open)
}
