//! `latency` and `throughput` modes: for each order-entry front in turn, N order-entry clients
//! send the same place/cancel flow while M subscribers of every kind watch the instrument;
//! afterwards the logs are joined into latency histograms and rated over the measured window.
//!
//! `latency` paces the flow from one thread at a fixed total rate, commands spread evenly
//! over the clients; a slow reply never delays the next command (open loop), and each command
//! is timed from the moment it is handed to its client's writer. `throughput` keeps `--window` commands in
//! flight per client, as fast as the server answers.

use super::latency::{self, Sent};
use super::order_flow::{OrderClient, OrderLog, Plan};
use super::spawn::{BusSpawn, SpawnOptions, Spawned};
use super::subscribe::{self, Live, SubLog, Subscription};
use super::{cpu_time, Clock, FlowArgs, Front, Kind, Target, TargetArgs, Via, DEFLATE_OFFER};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use ticker_proto::v1 as pb;
use tokio::sync::{oneshot, watch};

/// How the flow is paced.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Commands a second per client, at fixed intervals.
    Fixed(u64),
    /// Commands in flight per client.
    Window(usize),
}

/// The fronts of the tickerd under load.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    pub grpc: SocketAddr,
    pub ws: SocketAddr,
    pub ws_per_connection: Option<SocketAddr>,
}

/// Every shared-compressor WebSocket front of the server (several gateways with `--via bus`).
pub type WsFronts = Vec<SocketAddr>;

impl Endpoints {
    pub fn subscriber(&self, kind: Kind) -> anyhow::Result<Target> {
        Ok(match kind {
            Kind::Grpc => Target::Grpc(self.grpc),
            Kind::WsRaw => Target::Ws {
                addr: self.ws,
                offer: None,
            },
            Kind::WsShared => Target::Ws {
                addr: self.ws,
                offer: Some(DEFLATE_OFFER),
            },
            Kind::WsPerConnection => Target::Ws {
                addr: self.ws_per_connection.ok_or_else(|| {
                    anyhow::anyhow!(
                        "ws-per-connection subscribers need --ws-per-connection (or --spawn)"
                    )
                })?,
                offer: Some(DEFLATE_OFFER),
            },
        })
    }

    fn order_entry(&self, front: Front) -> Target {
        match front {
            Front::Grpc => Target::Grpc(self.grpc),
            Front::Ws => Target::Ws {
                addr: self.ws,
                offer: None,
            },
        }
    }
}

/// A spawned tickerd or the addresses of a running one.
pub struct Server {
    pub endpoints: Endpoints,
    pub ws_fronts: WsFronts,
    spawned: Option<Spawned>,
    /// Order-entry token of client `i`.
    tokens: Vec<String>,
}

impl Server {
    /// Starts (with `--spawn`) or names the server; `via` is one of `--via`'s values.
    pub fn start(
        args: &TargetArgs,
        clients: usize,
        max_connections: usize,
        via: Via,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            args.spawn || via == Via::Single,
            "--via bus needs --spawn (the tool starts nats-server, the matcher and the gateways)"
        );
        if args.spawn {
            let tokens: Vec<String> = (0..clients.max(1)).map(|i| format!("bench-{i}")).collect();
            let spawned = Spawned::start(&SpawnOptions {
                tokens: tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| (t.clone(), i as u64 + 1))
                    .collect(),
                simulator_rate: args.sim_rate.filter(|r| *r > 0),
                max_connections,
                workers: args.server_threads,
                journal: args.journal,
                bus: (via == Via::Bus).then(|| BusSpawn {
                    nats_server: args.nats_server.clone(),
                    gateways: args.gateways,
                }),
                shards: args.shards,
            })?;
            Ok(Server {
                ws_fronts: spawned.ws_shared_all.clone(),
                endpoints: Endpoints {
                    grpc: spawned.grpc,
                    ws: spawned.ws_shared,
                    ws_per_connection: Some(spawned.ws_per_connection),
                },
                spawned: Some(spawned),
                tokens,
            })
        } else {
            Ok(Server {
                endpoints: Endpoints {
                    grpc: args.grpc,
                    ws: args.ws,
                    ws_per_connection: args.ws_per_connection,
                },
                ws_fronts: vec![args.ws],
                spawned: None,
                tokens: vec![args.token.clone(); clients.max(1)],
            })
        }
    }

    /// The spawned tickerd's market, if the tool started one.
    pub fn market(&self) -> Option<&Arc<ticker_servers::market::Market>> {
        self.spawned.as_ref().map(Spawned::market)
    }

    /// The NATS server the tool started for `--via bus`.
    pub fn nats_url(&self) -> Option<&str> {
        self.spawned.as_ref().and_then(Spawned::nats_url)
    }

    pub fn token(&self, client: usize) -> &str {
        &self.tokens[client % self.tokens.len()]
    }

    pub fn shutdown(self) {
        if let Some(s) = self.spawned {
            s.shutdown();
        }
    }
}

/// The instrument's grid, from the gRPC front.
pub async fn instrument(grpc: SocketAddr, symbol: &str) -> anyhow::Result<pb::Instrument> {
    let mut client =
        pb::market_data_service_client::MarketDataServiceClient::connect(format!("http://{grpc}"))
            .await?;
    let list = client
        .list_instruments(pb::ListInstrumentsRequest {})
        .await?
        .into_inner();
    list.instruments
        .into_iter()
        .find(|i| i.symbol == symbol)
        .ok_or_else(|| anyhow::anyhow!("the server has no instrument {symbol:?}"))
}

/// A labelled latency distribution, for the plot.
pub struct Series {
    pub label: String,
    pub histogram: Histogram<u64>,
}

/// One deployment's phases (every order-entry front in `args`).
fn run_via(pace: Pace, args: &FlowArgs, via: Via) -> anyhow::Result<(Vec<Value>, Vec<Series>)> {
    let server = Server::start(
        &args.target,
        args.clients,
        args.subscribers * args.kinds.len() + args.clients + 100,
        via,
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ticker-bench")
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let instrument = instrument(server.endpoints.grpc, &args.target.instrument).await?;
        let mut phases = Vec::new();
        let mut series = Vec::new();
        for &front in &args.order_entry {
            let (report, mut s) = phase(front, pace, args, &server, &instrument).await?;
            phases.push(report);
            series.append(&mut s);
        }
        if let Pace::Fixed(rate) = pace {
            let total = rate * args.clients as u64;
            // Half of what the flow sent over one front, for each of the two kinds.
            let half = (args.duration * total as f64 / 2.0) as u64;
            let endpoints = &server.endpoints;
            let front = super::front_alone::round_trips(
                endpoints.grpc,
                endpoints.ws,
                server.token(0),
                &args.target.instrument,
                total,
                half.max(50),
            )
            .await?;
            phases.push(json!({ "front_alone": front }));
            if let Some(url) = server.nats_url() {
                let each = half.max(1000);
                phases.push(json!({ "nats_alone": super::nats::one_hop(url, total, each).await? }));
            }
        }
        anyhow::Ok((phases, series))
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    server.shutdown();
    result
}

/// Runs the flow over every order-entry front in `args`, once per `--via`; returns the JSON
/// report and the distributions.
pub fn run(
    mode: &'static str,
    pace: Pace,
    args: &FlowArgs,
) -> anyhow::Result<(Value, Vec<Series>)> {
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(args.duration > 0.0, "--duration must be positive");
    if let Pace::Fixed(rate) = pace {
        anyhow::ensure!(rate > 0, "--rate must be at least 1");
    }
    let mut phases = Vec::new();
    let mut series = Vec::new();
    let several = args.target.via.len() > 1;
    for &via in &args.target.via {
        let (mut p, mut s) = run_via(pace, args, via)?;
        for phase in &mut p {
            phase["via"] = json!(via.name());
        }
        if several {
            for one in &mut s {
                one.label = format!("{} {}", via.name(), one.label);
            }
        }
        phases.append(&mut p);
        series.append(&mut s);
    }
    let report = json!({
        "mode": mode,
        "pace": match pace {
            Pace::Fixed(rate) => json!({"commands_per_second_per_client": rate}),
            Pace::Window(w) => json!({"in_flight_per_client": w}),
        },
        "spawned": args.target.spawn,
        "instrument": args.target.instrument,
        "channels": args.channels,
        "clients": args.clients,
        "subscribers_per_kind": args.subscribers,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "phases": phases,
        "method": "Each order-entry client alternates a post-only buy 1-5 ticks under the reference price and its cancel. Ack latency: command handed to the client's writer -> its reply read. Market-data latency: the same send time -> arrival of the first message on the subscriber with seq >= the command's engine_seq (joined after the run). engine_to_client: the message's engine timestamp -> arrival (wall clock). CPU: the tool's process CPU time during the measured window (with --spawn it includes the server). front_alone (latency only): after the flow, orders with a price that is not a decimal, which the front refuses without the engine, sent one at a time at the flow's rate over a gRPC OrderSession and a signed-in WebSocket and timed from the send call to the reply read in one task: the floor under order -> ack.",
    });
    Ok((report, series))
}

async fn phase(
    front: Front,
    pace: Pace,
    args: &FlowArgs,
    server: &Server,
    instrument: &pb::Instrument,
) -> anyhow::Result<(Value, Vec<Series>)> {
    let clock = Clock::start();
    let (stop_tx, stop_rx) = watch::channel(false);
    let subscription = Subscription {
        instrument: args.target.instrument.clone(),
        channels: args.channels.clone(),
        ..Default::default()
    };
    let mut subs = Vec::new();
    for &kind in &args.kinds {
        for _ in 0..args.subscribers {
            let (ready_tx, ready_rx) = oneshot::channel();
            let live = Arc::new(Live::default());
            let handle = tokio::spawn(subscribe::run(
                server.endpoints.subscriber(kind)?,
                subscription.clone(),
                clock.clone(),
                live.clone(),
                ready_tx,
                stop_rx.clone(),
            ));
            subs.push((kind, live, handle, Some(ready_rx)));
        }
    }
    for (kind, _, handle, ready) in &mut subs {
        let ready = ready.take().expect("each subscriber is awaited once");
        if ready.await.is_err() {
            let err = match handle.await {
                Ok(Err(e)) => e,
                Ok(Ok(_)) => anyhow::anyhow!("ended before subscribing"),
                Err(e) => e.into(),
            };
            anyhow::bail!("a {} subscriber failed: {err:#}", kind.name());
        }
    }

    let mut clients = Vec::new();
    for i in 0..args.clients {
        let plan = Plan::new(i, instrument)?;
        let window = match pace {
            Pace::Window(w) => w.max(1),
            // Open loop: the pacing thread never waits for replies.
            Pace::Fixed(_) => usize::MAX >> 4,
        };
        clients.push(
            OrderClient::connect(
                &server.endpoints.order_entry(front),
                plan,
                server.token(i),
                clock.clone(),
                window,
            )
            .await?,
        );
    }

    let start_ns = clock.now_ns();
    let from_ns = start_ns + (args.warmup * 1e9) as u64;
    let to_ns = from_ns + (args.duration * 1e9) as u64;
    let sampler = {
        let clock = clock.clone();
        let lives: Vec<Arc<Live>> = subs.iter().map(|s| s.1.clone()).collect();
        tokio::spawn(async move {
            let snap = |lives: &[Arc<Live>]| -> Vec<(u64, u64)> {
                lives
                    .iter()
                    .map(|l| {
                        (
                            l.messages.load(Ordering::Relaxed),
                            l.wire_bytes.load(Ordering::Relaxed),
                        )
                    })
                    .collect()
            };
            tokio::time::sleep_until(clock.instant(from_ns).into()).await;
            let (cpu0, s0) = (cpu_time(), snap(&lives));
            tokio::time::sleep_until(clock.instant(to_ns).into()).await;
            let (cpu1, s1) = (cpu_time(), snap(&lives));
            let deltas: Vec<(u64, u64)> = s0
                .iter()
                .zip(&s1)
                .map(|(a, b)| (b.0 - a.0, b.1 - a.1))
                .collect();
            (cpu1.saturating_sub(cpu0), deltas)
        })
    };

    let clients = match pace {
        Pace::Fixed(rate) => {
            let clock = clock.clone();
            tokio::task::spawn_blocking(move || pace_fixed(clients, rate, &clock, start_ns, to_ns))
                .await??
        }
        Pace::Window(_) => {
            let tasks: Vec<_> = clients
                .into_iter()
                .map(|mut c| {
                    let clock = clock.clone();
                    tokio::spawn(async move {
                        let window = c.window.clone();
                        loop {
                            window.acquire().await?.forget();
                            if clock.now_ns() >= to_ns {
                                break;
                            }
                            c.submit()?;
                        }
                        anyhow::Ok(c)
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await??);
            }
            out
        }
    };
    let mut logs: Vec<OrderLog> = Vec::new();
    for c in clients {
        logs.push(c.finish().await?);
    }
    let (cpu, deltas) = sampler.await?;

    // Let every subscriber receive the update of the last command before stopping it.
    let last_seq = logs
        .iter()
        .flat_map(|l| l.accepted.iter().map(|s| s.engine_seq))
        .max()
        .unwrap_or(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline
        && subs
            .iter()
            .any(|s| !s.2.is_finished() && s.1.highest_seq.load(Ordering::Relaxed) < last_seq)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _ = stop_tx.send(true);
    let mut sub_logs: Vec<(Kind, SubLog, (u64, u64))> = Vec::new();
    for ((kind, _, handle, _), delta) in subs.into_iter().zip(deltas) {
        sub_logs.push((kind, handle.await??, delta));
    }

    Ok(summarize(
        front, args, &logs, &sub_logs, cpu, from_ns, to_ns,
    ))
}

/// Sends the flow at a fixed total rate from the calling (blocking) thread.
fn pace_fixed(
    mut clients: Vec<OrderClient>,
    rate_per_client: u64,
    clock: &Clock,
    start_ns: u64,
    end_ns: u64,
) -> anyhow::Result<Vec<OrderClient>> {
    let n = clients.len() as u64;
    let interval = (1_000_000_000 / (rate_per_client * n)).max(1);
    let mut due = start_ns;
    let mut k = 0u64;
    while due < end_ns {
        wait_until(clock, due);
        clients[(k % n) as usize].submit()?;
        k += 1;
        due += interval;
    }
    Ok(clients)
}

/// Sleeps until `due_ns`. The OS may oversleep by tens of µs; that only delays the command,
/// it does not bias its latency, which is timed from when it is actually handed over. (A spin
/// for exact timing would take a core from the server on a 2-core machine.)
fn wait_until(clock: &Clock, due_ns: u64) {
    let now = clock.now_ns();
    if now < due_ns {
        std::thread::sleep(Duration::from_nanos(due_ns - now));
    }
}

fn rate(count: u64, window_ns: u64) -> f64 {
    count as f64 * 1e9 / window_ns as f64
}

fn summarize(
    front: Front,
    args: &FlowArgs,
    logs: &[OrderLog],
    subs: &[(Kind, SubLog, (u64, u64))],
    cpu: Duration,
    from_ns: u64,
    to_ns: u64,
) -> (Value, Vec<Series>) {
    let window_ns = to_ns - from_ns;
    let mut sent: Vec<Sent> = logs
        .iter()
        .flat_map(|l| l.accepted.iter().copied())
        .filter(|s| (from_ns..to_ns).contains(&s.sent_ns))
        .collect();
    sent.sort_unstable_by_key(|s| s.engine_seq);
    let mut acks = latency::histogram();
    latency::record_acks(&sent, &mut acks);
    let per_client: Vec<f64> = logs
        .iter()
        .map(|l| rate(l.replies_between(from_ns, to_ns), window_ns))
        .collect();
    let mut rejects = std::collections::BTreeMap::<String, u64>::new();
    for l in logs {
        for (reason, n) in l.rejects_between(from_ns, to_ns) {
            *rejects.entry(reason).or_default() += n;
        }
    }
    let mut series = vec![Series {
        label: format!("{} order entry: ack", front_label(front)),
        histogram: acks.clone(),
    }];
    let mut kinds = Vec::new();
    let mut delivered = 0u64;
    for &kind in &args.kinds {
        let of_kind: Vec<_> = subs.iter().filter(|s| s.0 == kind).collect();
        let mut md = latency::histogram();
        let mut engine = latency::histogram();
        let mut unmatched = 0;
        let (mut gaps, mut conflated, mut resyncs, mut ok, mut bad) = (0, 0, 0, 0, 0);
        let mut ended = Vec::new();
        let mut rates = Vec::new();
        let (mut messages, mut bytes) = (0u64, 0u64);
        for (_, log, (m, b)) in &of_kind {
            unmatched += latency::record_market_data(&sent, &log.received, &mut md);
            engine.add(&log.engine_to_client).expect("same bounds");
            gaps += log.gaps;
            conflated += log.conflated;
            resyncs += log.resyncs;
            ok += log.checksums_ok;
            bad += log.checksums_bad;
            if let Some(e) = &log.ended {
                ended.push(e.clone());
            }
            rates.push(rate(*m, window_ns));
            messages += m;
            bytes += b;
        }
        delivered += messages;
        series.push(Series {
            label: format!(
                "{} order entry → {} update",
                front_label(front),
                kind.label()
            ),
            histogram: md.clone(),
        });
        kinds.push(json!({
            "kind": kind.name(),
            "subscribers": of_kind.len(),
            "order_to_update": latency::summary(&md),
            "commands_not_reflected": unmatched,
            "engine_to_client": latency::summary(&engine),
            "messages": messages,
            "messages_per_second_per_connection": rates,
            "messages_per_second_total": rate(messages, window_ns),
            "wire_bytes_per_message": if messages > 0 { bytes as f64 / messages as f64 } else { 0.0 },
            "gaps": gaps,
            "conflated": conflated,
            "resyncs": resyncs,
            "checksums_ok": ok,
            "checksums_bad": bad,
            "ended": ended,
        }));
    }
    let commands: u64 = logs.iter().map(|l| l.replies_between(from_ns, to_ns)).sum();
    let report = json!({
        "order_entry": front.name(),
        "measured_s": window_ns as f64 / 1e9,
        "commands_acked": commands,
        "commands_per_second_total": rate(commands, window_ns),
        "commands_per_second_per_client": per_client,
        "ack": latency::summary(&acks),
        "rejects": rejects,
        "subscribers": kinds,
        "cpu_s": cpu.as_secs_f64(),
        "cpu_us_per_command": if commands > 0 { cpu.as_secs_f64() * 1e6 / commands as f64 } else { 0.0 },
        "cpu_us_per_delivered_message": if delivered > 0 { cpu.as_secs_f64() * 1e6 / delivered as f64 } else { 0.0 },
    });
    (report, series)
}

fn front_label(front: Front) -> &'static str {
    match front {
        Front::Grpc => "gRPC",
        Front::Ws => "WS",
    }
}
