//! `fanout` mode: thousands of subscribers (WebSocket, or gRPC `Subscribe` streams) to one
//! instrument's channels, fed by the simulator. A sample of `--verify` connections checks
//! everything (inflate or decode, parse, `seq` continuity, engine → client latency); the others
//! count whole messages (frame_count.rs, grpc_count.rs), because a client that inflates and
//! parses every message of thousands of connections would measure the load tool, not the
//! server. The report says how many of each.
//!
//! In the same run (WebSocket kinds, unless `--no-trivial`), the same number of counting
//! connections is then opened to a trivial server inside the tool (trivial.rs) that publishes
//! frames of the size just measured at the topic's publish rate: what the tool counts from it
//! is the tool's own ceiling, reported beside the server's figure.

use super::flow::{Series, Server};
use super::frame_count::{self, Totals};
use super::subscribe::{self, Live, SubLog, Subscription};
use super::trivial::TrivialServer;
use super::{cpu_time, grpc_count, latency, Clock, FanoutArgs, Kind, Target, DEFLATE_OFFER};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use ticker_feeds::{Channel, Topic};
use tokio::sync::{oneshot, watch, Semaphore};

/// Simulator rate of a spawned tickerd when `--sim-rate` is not given.
pub const DEFAULT_SIM_RATE: u64 = 20_000;

pub fn run(args: &FanoutArgs) -> anyhow::Result<(Value, Vec<Series>)> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    let verify = args.verify.min(args.connections);
    // Each connection is two sockets when the server is in this process.
    let wanted = (args.connections as u64) * 2 + 1024;
    let nofile = rlimit::increase_nofile_limit(wanted)?;
    anyhow::ensure!(
        nofile >= wanted || !args.target.spawn && nofile >= args.connections as u64 + 512,
        "the open-file limit is {nofile}, {wanted} are needed: raise the hard limit (ulimit -Hn)"
    );
    let mut target = args.target.clone();
    if target.spawn && target.sim_rate.is_none() {
        target.sim_rate = Some(DEFAULT_SIM_RATE);
    }
    let via = match target.via.as_slice() {
        [one] => *one,
        _ => anyhow::bail!("fanout measures one deployment at a time: --via single or --via bus"),
    };
    let server = Server::start(&target, 1, args.connections + 100, via)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ticker-bench")
        .enable_all()
        .build()?;
    let published = PublishCounter::new(&server, args)?;
    let result = (|| {
        let (mut report, series, frame_bytes) =
            runtime.block_on(measure(args, &server, verify, &published))?;
        if args.kind != Kind::Grpc && !args.no_trivial {
            let rate = published.rate().unwrap_or(args.trivial_rate);
            let trivial = TrivialServer::start(rate, frame_bytes, args.target.server_threads)?;
            let calibration = runtime.block_on(calibrate(args, &trivial, rate));
            trivial.shutdown();
            report["trivial_server"] = calibration?;
        }
        anyhow::Ok((report, series))
    })();
    runtime.shutdown_timeout(Duration::from_secs(1));
    server.shutdown();
    let (report, series) = result?;
    Ok((
        json!({
            "mode": "fanout",
            "spawned": args.target.spawn,
            "simulator_rate": target.sim_rate,
            "instrument": args.target.instrument,
            "channels": args.channels,
            "kind": args.kind.name(),
            "connections": args.connections,
            "verified_connections": verify,
            "counted_connections": args.connections - verify,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "result": report,
            "method": "Counted connections read the socket and count whole WebSocket frames (no inflate, no parse) or whole gRPC messages (undecoded); verified connections inflate or decode and parse every message, check prev_seq continuity per channel and time each message from its engine timestamp to arrival. Totals are over the measured window. CPU: the tool's process CPU time in the window (with --spawn it includes the server). trivial_server: the same number of counting connections to a trivial server in the tool that writes each connection everything it is owed in one write, frames of the measured size at the topic's publish rate (measured with --spawn, else --trivial-rate): what the tool can count.",
        }),
        series,
    ))
}

async fn measure(
    args: &FanoutArgs,
    server: &Server,
    verify: usize,
    published: &PublishCounter,
) -> anyhow::Result<(Value, Vec<Series>, usize)> {
    let clock = Clock::start();
    let first = server.endpoints.subscriber(args.kind)?;
    // With several gateways, connections are spread over them, round robin.
    let targets: Vec<Target> = match first {
        Target::Ws { offer, .. } if server.ws_fronts.len() > 1 => server
            .ws_fronts
            .iter()
            .map(|&addr| Target::Ws { addr, offer })
            .collect(),
        other => vec![other],
    };
    let subscription = Subscription {
        instrument: args.target.instrument.clone(),
        channels: args.channels.clone(),
        ..Default::default()
    };
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut verifiers = Vec::new();
    for v in 0..verify {
        let (ready_tx, ready_rx) = oneshot::channel();
        let live = Arc::new(Live::default());
        let handle = tokio::spawn(subscribe::run(
            targets[v % targets.len()],
            subscription.clone(),
            clock.clone(),
            live.clone(),
            ready_tx,
            stop_rx.clone(),
        ));
        verifiers.push((live, handle, ready_rx));
    }

    let counted = args.connections - verify;
    let totals = Arc::new(Totals::default());
    let counters = open_counters(args, &targets, counted, &totals, &stop_rx).await?;
    let mut live_verifiers = Vec::new();
    for (live, handle, ready) in verifiers {
        if ready.await.is_err() {
            let err = match handle.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => anyhow::anyhow!("ended before subscribing"),
                Err(e) => e.into(),
            };
            anyhow::bail!("a verifying subscriber failed: {err:#}");
        }
        live_verifiers.push((live, handle));
    }
    let mut counters = counters;
    all_subscribed(&mut counters, &totals, counted).await?;
    let subscribed_at = clock.now_ns();

    let snap = |totals: &Totals, lives: &[(Arc<Live>, _)]| {
        let verified: (u64, u64) = lives.iter().fold((0, 0), |acc, (l, _): &(Arc<Live>, _)| {
            (
                acc.0 + l.messages.load(Ordering::Relaxed),
                acc.1 + l.wire_bytes.load(Ordering::Relaxed),
            )
        });
        (
            totals.frames.load(Ordering::Relaxed),
            totals.bytes.load(Ordering::Relaxed),
            verified.0,
            verified.1,
        )
    };
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let (t0, c0, s0) = (clock.now_ns(), cpu_time(), snap(&totals, &live_verifiers));
    published.start();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let (t1, c1, s1) = (clock.now_ns(), cpu_time(), snap(&totals, &live_verifiers));
    published.stop();
    let _ = stop_tx.send(true);

    let window_ns = t1 - t0;
    let per_s = |n: u64| n as f64 * 1e9 / window_ns as f64;
    let counted_frames = s1.0 - s0.0;
    let counted_bytes = s1.1 - s0.1;
    let verified_messages = s1.2 - s0.2;
    let verified_bytes = s1.3 - s0.3;
    let total = counted_frames + verified_messages;
    let cpu = c1.saturating_sub(c0);

    let mut engine = latency::histogram();
    let (mut gaps, mut conflated, mut ended) = (0u64, 0u64, Vec::new());
    for (_, handle) in live_verifiers {
        let log: SubLog = handle.await??;
        engine.add(&log.engine_to_client).expect("same bounds");
        gaps += log.gaps;
        conflated += log.conflated;
        if let Some(e) = log.ended {
            ended.push(e);
        }
    }
    for c in counters {
        c.await??;
    }
    let report = json!({
        "connect_and_subscribe_s": subscribed_at as f64 / 1e9,
        "measured_s": window_ns as f64 / 1e9,
        "messages_per_second_total": per_s(total),
        "messages_per_second_per_connection": per_s(total) / args.connections as f64,
        "counted": {
            "messages": counted_frames,
            "wire_bytes_per_message": if counted_frames > 0 { counted_bytes as f64 / counted_frames as f64 } else { 0.0 },
            "closed_by_server": totals.closed.load(Ordering::Relaxed),
            "last_close_code": totals.last_close_code.load(Ordering::Relaxed),
        },
        "verified": {
            "messages": verified_messages,
            "wire_bytes_per_message": if verified_messages > 0 { verified_bytes as f64 / verified_messages as f64 } else { 0.0 },
            "engine_to_client": latency::summary(&engine),
            "gaps": gaps,
            "conflated": conflated,
            "ended": ended,
        },
        "cpu_s": cpu.as_secs_f64(),
        "cpu_us_per_delivered_message": if total > 0 { cpu.as_secs_f64() * 1e6 / total as f64 } else { 0.0 },
    });
    let mut report = report;
    if let Some(rate) = published.rate() {
        report["published_per_second"] = json!(rate);
    }
    let series = vec![Series {
        label: format!("fanout {}: engine → verified client", args.kind.label()),
        histogram: engine,
    }];
    let frame_bytes = if counted_frames > 0 {
        (counted_bytes as f64 / counted_frames as f64).round() as usize
    } else {
        0
    };
    Ok((report, series, frame_bytes))
}

/// Opens `n` counting subscribers of `target`, at most `--connect-concurrency` at once.
async fn open_counters(
    args: &FanoutArgs,
    targets: &[Target],
    n: usize,
    totals: &Arc<Totals>,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let subscription = Subscription {
        instrument: args.target.instrument.clone(),
        channels: args.channels.clone(),
        ..Default::default()
    };
    let subscribe_json = subscribe::subscribe_json(&subscription);
    let grpc_channels = args
        .channels
        .iter()
        .map(|c| subscribe::grpc_channel(c))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut counters = Vec::with_capacity(n);
    for i in 0..n {
        let permit = gate.clone().acquire_owned().await?;
        let (totals, stop) = (totals.clone(), stop.clone());
        counters.push(match targets[i % targets.len()] {
            Target::Ws { addr, offer } => {
                let key = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes();
                let json = subscribe_json.clone();
                tokio::spawn(frame_count::run(
                    addr, offer, json, key, totals, permit, stop,
                ))
            }
            Target::Grpc(addr) => tokio::spawn(grpc_count::run(
                addr,
                args.target.instrument.clone(),
                grpc_channels.clone(),
                totals,
                permit,
                stop,
            )),
        });
    }
    Ok(counters)
}

/// Waits until every counting connection subscribed (or one failed: its task ends with the
/// error).
async fn all_subscribed(
    counters: &mut Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    totals: &Totals,
    n: usize,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let subscribed = totals.subscribed.load(Ordering::Relaxed) as usize;
        if subscribed >= n {
            return Ok(());
        }
        if let Some(i) = counters.iter().position(|c| c.is_finished()) {
            let failed = counters.swap_remove(i).await?;
            failed.map_err(|e| anyhow::anyhow!("a counting subscriber failed: {e:#}"))?;
            anyhow::bail!(
                "a counting subscriber was closed by the server (close code {}) while {subscribed} \
                 of {n} were subscribed: the load tool fell behind the stream",
                totals.last_close_code.load(Ordering::Relaxed)
            );
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "only {subscribed} of {n} connections subscribed within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Messages the spawned tickerd's topics published over the measured window (the topics the
/// subscribers follow), when the tool spawned it.
struct PublishCounter {
    topics: Vec<Arc<ticker_feeds::hub::TopicState>>,
    window: std::sync::Mutex<Window>,
}

/// When the measured window started with how many published, and the rate once it ended.
#[derive(Default)]
struct Window {
    start: Option<(std::time::Instant, u64)>,
    rate: Option<f64>,
}

impl PublishCounter {
    fn new(server: &Server, args: &FanoutArgs) -> anyhow::Result<PublishCounter> {
        let mut topics = Vec::new();
        if let Some(market) = server.market() {
            let wire = market
                .instruments()
                .by_symbol(&args.target.instrument)
                .ok_or_else(|| anyhow::anyhow!("no instrument {}", args.target.instrument))?;
            for name in &args.channels {
                let channel = Channel::parse(name, None)
                    .ok_or_else(|| anyhow::anyhow!("no channel {name}"))?;
                topics.push(market.hub().topic(Topic::Market {
                    channel,
                    instrument: wire.id(),
                }));
            }
        }
        Ok(PublishCounter {
            topics,
            window: std::sync::Mutex::new(Window::default()),
        })
    }

    fn total(&self) -> u64 {
        self.topics.iter().map(|t| t.end()).sum()
    }

    fn start(&self) {
        if !self.topics.is_empty() {
            self.window.lock().unwrap_or_else(|e| e.into_inner()).start =
                Some((std::time::Instant::now(), self.total()));
        }
    }

    fn stop(&self) {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((t0, n0)) = w.start {
            w.rate = Some((self.total() - n0) as f64 / t0.elapsed().as_secs_f64());
        }
    }

    /// Messages a second, once measured.
    fn rate(&self) -> Option<f64> {
        self.window.lock().unwrap_or_else(|e| e.into_inner()).rate
    }
}

/// The tool's own ceiling: the same number of counting WebSocket connections to `server`, a
/// trivial server publishing at `rate` a second.
async fn calibrate(args: &FanoutArgs, server: &TrivialServer, rate: f64) -> anyhow::Result<Value> {
    let target = Target::Ws {
        addr: server.addr,
        offer: Some(DEFLATE_OFFER),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let totals = Arc::new(Totals::default());
    let n = args.connections;
    let result = async {
        let mut counters = open_counters(args, &[target], n, &totals, &stop_rx).await?;
        all_subscribed(&mut counters, &totals, n).await?;
        tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
        let (f0, p0, c0) = (
            totals.frames.load(Ordering::Relaxed),
            server.published(),
            cpu_time(),
        );
        let t0 = std::time::Instant::now();
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
        let (f1, p1, c1) = (
            totals.frames.load(Ordering::Relaxed),
            server.published(),
            cpu_time(),
        );
        let seconds = t0.elapsed().as_secs_f64();
        let _ = stop_tx.send(true);
        for c in counters {
            c.await??;
        }
        let counted = f1 - f0;
        let offered = (p1 - p0) * n as u64;
        anyhow::Ok(json!({
            "connections": n,
            "publish_rate": rate,
            "frame_bytes": server.frame_len(),
            "messages_per_second_total": counted as f64 / seconds,
            "offered_per_second_total": offered as f64 / seconds,
            "counted_share_of_offered": if offered > 0 { counted as f64 / offered as f64 } else { 0.0 },
            "closed": totals.closed.load(Ordering::Relaxed),
            "cpu_s": c1.saturating_sub(c0).as_secs_f64(),
        }))
    }
    .await;
    result
}
