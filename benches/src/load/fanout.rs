//! `fanout` mode: thousands of WebSocket subscribers to one instrument's channels, fed by the
//! simulator. A sample of `--verify` connections checks everything (inflate, parse, `seq`
//! continuity, engine → client latency); the others count whole frames (see frame_count.rs),
//! because a client that inflates and parses every message of thousands of connections would
//! measure the load tool, not the server. The report says how many of each.

use super::flow::{Series, Server};
use super::frame_count::{self, Totals};
use super::latency;
use super::subscribe::{self, Live, SubLog, Subscription};
use super::{cpu_time, Clock, FanoutArgs, Kind};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch, Semaphore};

/// Simulator rate of a spawned tickerd when `--sim-rate` is not given.
pub const DEFAULT_SIM_RATE: u64 = 20_000;

pub fn run(args: &FanoutArgs) -> anyhow::Result<(Value, Vec<Series>)> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(
        args.kind != Kind::Grpc,
        "fanout mode is for WebSocket subscribers"
    );
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
    let server = Server::start(&target, 1, args.connections + 100)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ticker-bench")
        .enable_all()
        .build()?;
    let result = runtime.block_on(measure(args, &server, verify));
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
            "method": "Counted connections read the socket and count whole WebSocket frames (no inflate, no parse); verified connections inflate and parse every message, check prev_seq continuity per channel and time each message from its engine timestamp to arrival. Totals are over the measured window. CPU: the tool's process CPU time in the window (with --spawn it includes the server).",
        }),
        series,
    ))
}

async fn measure(
    args: &FanoutArgs,
    server: &Server,
    verify: usize,
) -> anyhow::Result<(Value, Vec<Series>)> {
    let clock = Clock::start();
    let target = server.endpoints.subscriber(args.kind)?;
    let super::Target::Ws { addr, offer } = target else {
        anyhow::bail!("fanout mode is for WebSocket subscribers");
    };
    let subscription = Subscription {
        instrument: args.target.instrument.clone(),
        channels: args.channels.clone(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);

    let mut verifiers = Vec::new();
    for _ in 0..verify {
        let (ready_tx, ready_rx) = oneshot::channel();
        let live = Arc::new(Live::default());
        let handle = tokio::spawn(subscribe::run(
            target,
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
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let subscribe_json = subscribe::subscribe_json(&subscription);
    let mut counters = Vec::with_capacity(counted);
    for i in 0..counted {
        let permit = gate.clone().acquire_owned().await?;
        let totals = totals.clone();
        let stop = stop_rx.clone();
        let json = subscribe_json.clone();
        let key = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes();
        counters.push(tokio::spawn(frame_count::run(
            addr, offer, json, key, totals, permit, stop,
        )));
    }
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
    // Every counting connection subscribed (or failed: its task ends with the error).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let subscribed = totals.subscribed.load(Ordering::Relaxed) as usize;
        if subscribed >= counted {
            break;
        }
        if let Some(i) = counters.iter().position(|c| c.is_finished()) {
            let failed = counters.swap_remove(i).await?;
            failed.map_err(|e| anyhow::anyhow!("a counting subscriber failed: {e:#}"))?;
            anyhow::bail!(
                "a counting subscriber was closed by the server (close code {}) while {subscribed} \
                 of {counted} were subscribed: the load tool fell behind the stream",
                totals.last_close_code.load(Ordering::Relaxed)
            );
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "only {subscribed} of {counted} connections subscribed within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let (t1, c1, s1) = (clock.now_ns(), cpu_time(), snap(&totals, &live_verifiers));
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
    let series = vec![Series {
        label: format!("fanout {}: engine → verified client", args.kind.label()),
        histogram: engine,
    }];
    Ok((report, series))
}
