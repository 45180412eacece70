//! `ticker-bench soak`: tickerd as a real child process under mixed load for as long as asked,
//! a table row every interval, and a verdict at the end.
//!
//! ```sh
//! bash benches/soak.sh 1h 60s        # builds release, then runs the line below
//! target/release/ticker-bench soak --duration 1h --interval 60s
//! ```
//!
//! The load, all at modest rates so that a 2-core machine carries it for an hour:
//! - [`grpc_flow`]: place/cancel pairs over one gRPC `OrderSession` (order → ack latency per
//!   interval), and the account's order-update stream, reopened with `from_seq`, checked for
//!   an unbroken `seq`;
//! - [`touch_flow`]: orders of the same account priced from the live book, which cross it
//!   (post-only rejects) and are filled by it, so the order updates carry fills;
//! - [`churn`]: WebSocket (permessage-deflate) and gRPC market-data subscribers that stay
//!   5–30 s, leave and come back resuming trades with `from_seq`, every `prev_seq` checked;
//! - [`slow_readers`]: readers that pause, and readers that stall until the server conflates,
//!   resyncs or closes them 1013, then start again;
//! - [`bad_inputs`]: malformed, unknown, over-long and over-limit requests on both fronts,
//!   each of which must get its documented typed error.
//!
//! Every interval [`process`] samples tickerd's RSS, open fds, threads and CPU from `/proc`,
//! [`scrape`] reads its alive tasks and slow-consumer counters from `/metrics`, and [`tally`]
//! gives what the load counted; [`report`] prints the row and, at the end, judges the rows:
//! any lost sequence or unexpected answer, growth that does not level off, or a latency drift
//! fails the run (non-zero exit).
//!
//! Legitimate clients stay within tickerd's default WebSocket limits (50 messages/s per
//! connection: they send a subscribe and little else), so tickerd runs with its defaults; the
//! bad-input client's burst of pings is the one that hits the rate limit, on purpose.

pub mod bad_inputs;
pub mod churn;
pub mod grpc_flow;
pub mod process;
pub mod report;
pub mod scrape;
pub mod slow_readers;
pub mod tally;
pub mod touch_flow;

use crate::load::{Clock, Target, DEFLATE_OFFER};
use clap::Args;
use process::{Launch, Tickerd};
use report::{AckLatency, Row, SlowConsumers};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tally::Tally;
use ticker_proto::v1 as pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The order flow's token (account 1): the order session and the order-update stream.
pub const ORDER_ACCOUNT_TOKEN: &str = "soak-orders";
/// The bad-input client's token (account 2), so its refusals never touch the flow's account.
pub const BAD_INPUT_TOKEN: &str = "soak-bad";

/// Time the load gets to wind down after the last row (the order flow waits for the replies
/// to everything it sent).
const WIND_DOWN: Duration = Duration::from_secs(30);
/// Time tickerd gets to exit after SIGTERM (its own grace for the fronts is 5 s).
const STOP_GRACE: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    /// How long to run: `90s`, `10m`, `1h`, `1h30m` (a bare number is seconds).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub duration: Duration,
    /// A table row every this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub interval: Duration,
    /// The tickerd binary [default: the one beside this executable].
    #[arg(long)]
    pub tickerd: Option<PathBuf>,
    /// Order commands a second over gRPC (place/cancel pairs).
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Rounds a second of orders at the touch (two post-only places each, and their cancels);
    /// 0 runs none.
    #[arg(long, default_value_t = 4)]
    pub touch_rounds: u64,
    /// WebSocket subscribers that connect, stay 5–30 s and reconnect.
    #[arg(long, default_value_t = 6)]
    pub ws_subscribers: usize,
    /// gRPC `Subscribe` streams that do the same.
    #[arg(long, default_value_t = 2)]
    pub grpc_subscribers: usize,
    /// WebSocket readers that read 1 s in 4.
    #[arg(long, default_value_t = 2)]
    pub slow_readers: usize,
    /// WebSocket readers that stop reading for 20–35 s at a time.
    #[arg(long, default_value_t = 2)]
    pub stalled_readers: usize,
    /// The instrument the flow trades and the churners watch.
    #[arg(long, default_value = "BTC-USD")]
    pub instrument: String,
    /// Seed of the stays and stalls.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// What every load task shares.
pub struct Ctx {
    pub clock: Clock,
    pub tally: Arc<Tally>,
    /// Turns true when the soak ends.
    pub stop: watch::Receiver<bool>,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub instrument: pb::Instrument,
    /// Every instrument's symbol.
    pub symbols: Vec<String>,
}

pub fn run(args: &SoakArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    anyhow::ensure!(
        !args.interval.is_zero() && args.duration >= args.interval,
        "--duration ({:?}) must be at least one --interval ({:?})",
        args.duration,
        args.interval
    );
    let binary = match &args.tickerd {
        Some(path) => path.clone(),
        None => process::default_binary()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("soak")
        .enable_all()
        .build()?;
    let result = runtime.block_on(soak(args, &binary, out));
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn soak(args: &SoakArgs, binary: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let tickerd = Tickerd::start(&Launch {
        binary: binary.to_path_buf(),
        tokens: vec![
            (ORDER_ACCOUNT_TOKEN.to_string(), 1),
            (BAD_INPUT_TOKEN.to_string(), 2),
        ],
    })
    .await?;
    let (grpc, http) = (tickerd.grpc, tickerd.http);
    writeln!(
        out,
        "soak: {} with a row every {}; tickerd pid {} (gRPC {grpc}, HTTP {http}, simulator on, journal on)\n\
         load: {} order commands/s over a gRPC OrderSession + its order-update stream; {} rounds/s \
         of orders at the touch; {} WebSocket \
         (deflate) and {} gRPC subscribers staying 5–30 s and resuming; {} slow and {} stalled \
         readers; a round of bad inputs on both fronts every 2 s\n",
        report::clock(args.duration),
        report::clock(args.interval),
        tickerd.pid,
        args.rate,
        args.touch_rounds,
        args.ws_subscribers,
        args.grpc_subscribers,
        args.slow_readers,
        args.stalled_readers,
    )?;
    let instruments = list_instruments(grpc).await?;
    let instrument = instruments
        .iter()
        .find(|i| i.symbol == args.instrument)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("tickerd has no instrument {:?}", args.instrument))?;
    let (stop, stopped) = watch::channel(false);
    let ctx = Arc::new(Ctx {
        clock: Clock::start(),
        tally: Arc::new(Tally::default()),
        stop: stopped,
        grpc,
        http,
        instrument,
        symbols: instruments.into_iter().map(|i| i.symbol).collect(),
    });
    let load = start_load(&ctx, args);
    let outcome = measure(args, &ctx, tickerd, out).await;
    let _ = stop.send(true);
    let (rows, tickerd) = outcome?;
    finish(&ctx, rows, load, tickerd, args.touch_rounds > 0, out).await
}

/// Spawns every load task.
fn start_load(ctx: &Arc<Ctx>, args: &SoakArgs) -> Vec<(String, JoinHandle<()>)> {
    let mut load = Vec::new();
    let mut spawn = |name: String, task: tokio::task::JoinHandle<()>| load.push((name, task));
    spawn(
        "gRPC order flow".into(),
        tokio::spawn(grpc_flow::orders(ctx.clone(), args.rate)),
    );
    if args.touch_rounds > 0 {
        spawn(
            "orders at the touch".into(),
            tokio::spawn(touch_flow::run(
                ctx.clone(),
                args.touch_rounds,
                args.seed * 1_000 + 400,
            )),
        );
    }
    spawn(
        "order updates".into(),
        tokio::spawn(grpc_flow::order_updates(ctx.clone(), args.seed)),
    );
    let churner = |target: Target, k: usize| churn::Churner {
        target,
        stay_ms: (5_000, 30_000),
        pauses: None,
        seed: args.seed * 1_000 + k as u64,
    };
    let ws = Target::Ws {
        addr: ctx.http,
        offer: Some(DEFLATE_OFFER),
    };
    for k in 0..args.ws_subscribers {
        spawn(
            format!("WebSocket subscriber {k}"),
            tokio::spawn(churn::run(ctx.clone(), churner(ws, k))),
        );
    }
    for k in 0..args.grpc_subscribers {
        spawn(
            format!("gRPC subscriber {k}"),
            tokio::spawn(churn::run(
                ctx.clone(),
                churner(Target::Grpc(ctx.grpc), 100 + k),
            )),
        );
    }
    for k in 0..args.slow_readers {
        let slow = slow_readers::slow(ctx, args.seed * 1_000 + 200 + k as u64);
        spawn(
            format!("slow reader {k}"),
            tokio::spawn(churn::run(ctx.clone(), slow)),
        );
    }
    for k in 0..args.stalled_readers {
        spawn(
            format!("stalled reader {k}"),
            tokio::spawn(slow_readers::stalled(
                ctx.clone(),
                args.seed * 1_000 + 300 + k as u64,
            )),
        );
    }
    spawn(
        "bad inputs".into(),
        tokio::spawn(bad_inputs::run(ctx.clone())),
    );
    load
}

/// Prints the header and a row every interval until the duration is over.
async fn measure(
    args: &SoakArgs,
    ctx: &Ctx,
    mut tickerd: Tickerd,
    out: &mut dyn Write,
) -> anyhow::Result<(Vec<Row>, Tickerd)> {
    writeln!(out, "{}", report::header())?;
    let intervals = (args.duration.as_secs_f64() / args.interval.as_secs_f64()).round() as u64;
    let start = tokio::time::Instant::now();
    let mut ticks = tokio::time::interval_at(start + args.interval, args.interval);
    let mut process_before = tickerd.sample()?;
    let mut server_before = scrape::scrape(ctx.http).await?;
    let mut wall_before = start;
    let mut rows = Vec::new();
    for _ in 0..intervals {
        ticks.tick().await;
        if let Some(status) = tickerd.exited()? {
            anyhow::bail!(
                "tickerd exited during the soak ({status}); its log:\n{}",
                tickerd.log_tail(20)
            );
        }
        let now = tokio::time::Instant::now();
        let process = tickerd.sample()?;
        let server = scrape::scrape(ctx.http).await?;
        let (counts, acks) = ctx.tally.take();
        let row = Row {
            elapsed: now - start,
            cpu_percent: process.cpu_ns.saturating_sub(process_before.cpu_ns) as f64
                / (now - wall_before).as_nanos() as f64
                * 100.0,
            process,
            tasks: server.alive_tasks,
            ack: (!acks.is_empty()).then(|| AckLatency {
                p50: acks.value_at_quantile(0.50),
                p99: acks.value_at_quantile(0.99),
                p999: acks.value_at_quantile(0.999),
            }),
            counts,
            slow: SlowConsumers {
                conflated: server.conflations - server_before.conflations,
                resynced: server.resyncs - server_before.resyncs,
                too_slow: server.too_slow - server_before.too_slow,
            },
        };
        writeln!(out, "{}", report::row(&row))?;
        out.flush()?;
        rows.push(row);
        (process_before, server_before, wall_before) = (process, server, now);
    }
    Ok((rows, tickerd))
}

/// Winds the load down, stops tickerd, prints the totals and the verdict.
async fn finish(
    ctx: &Ctx,
    rows: Vec<Row>,
    load: Vec<(String, JoinHandle<()>)>,
    tickerd: Tickerd,
    touching: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut problems = report::verdict(&rows);
    let server = scrape::scrape(ctx.http).await?;
    for (name, task) in load {
        match tokio::time::timeout(WIND_DOWN, task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("{name} panicked: {e}")),
            Err(_) => problems.push(format!("{name} did not stop within {WIND_DOWN:?}")),
        }
    }
    let (after, _) = ctx.tally.take();
    if after.lost + after.failures > 0 {
        problems.push(format!(
            "while the load wound down: {} lost sequence numbers, {} failures",
            after.lost, after.failures
        ));
    }
    let log = tickerd.log_tail(20);
    match tickerd.stop(STOP_GRACE).await {
        Ok(status) if status.success() => {}
        Ok(status) => problems.push(format!(
            "tickerd exited with {status} on SIGTERM; log:\n{log}"
        )),
        Err(e) => problems.push(format!("{e:#}")),
    }
    // The totals include what was counted while the load wound down (sessions open at the
    // last row are judged when they end).
    let sum =
        |f: fn(&tally::Counts) -> u64| rows.iter().map(|r| f(&r.counts)).sum::<u64>() + f(&after);
    // An order at the far touch crosses unless the market moved away within the round trip:
    // none crossing means the flow is not reading the book it trades against.
    if touching && sum(|c| c.touch_crossed) == 0 {
        problems
            .push("no order at the touch crossed the book: the flow is not at the market".into());
    }
    writeln!(
        out,
        "\ntotals: {} order commands answered ({} expected engine rejects of the session flow: \
         post-only would cross, unknown order); orders at the touch: {} rejected as crossing, {} \
         filled before their cancel; {} WebSocket connections and {} gRPC streams opened; {} resumes verified \
         (server: {} resumes, {} too old); stalled and slow readers: {} closed 1013, {} caught up \
         after a short stall, {} dropped after a long one (write_timeout); {} bad inputs answered \
         as documented",
        sum(|c| c.commands),
        sum(|c| c.engine_rejects),
        sum(|c| c.touch_crossed),
        sum(|c| c.touch_filled),
        sum(|c| c.ws_connects),
        sum(|c| c.grpc_streams),
        sum(|c| c.resumes_verified),
        server.resumes,
        server.resumes_too_old,
        sum(|c| c.too_slow_closes),
        sum(|c| c.stalls_survived),
        sum(|c| c.stalls_dropped),
        sum(|c| c.bad_inputs),
    )?;
    for note in ctx.tally.notes() {
        writeln!(out, "  {note}")?;
    }
    if let Some(note) = report::rss_trend(&rows) {
        writeln!(out, "{note}")?;
    }
    if problems.is_empty() {
        writeln!(
            out,
            "verdict: PASS — no lost sequence, no unexpected answer, RSS/fds/tasks within their growth limits, no latency drift, tickerd exited 0 on SIGTERM"
        )?;
        Ok(())
    } else {
        writeln!(out, "verdict: FAIL")?;
        for p in &problems {
            writeln!(out, "  - {p}")?;
        }
        anyhow::bail!("soak failed: {}", problems.join("; "))
    }
}

async fn list_instruments(grpc: SocketAddr) -> anyhow::Result<Vec<pb::Instrument>> {
    let mut client =
        pb::market_data_service_client::MarketDataServiceClient::connect(format!("http://{grpc}"))
            .await?;
    Ok(client
        .list_instruments(pb::ListInstrumentsRequest {})
        .await?
        .into_inner()
        .instruments)
}

/// `90s`, `10m`, `1h`, `1h30m`, `2h5m30s`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(format!("{text:?}: unknown unit {c:?} (use h, m, s)")),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?}: a number must come before {c:?}"))?;
        total += n * unit;
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(format!("{text:?}: expected e.g. 90s, 10m, 1h30m"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_hours_minutes_and_seconds() {
        let s = Duration::from_secs;
        assert_eq!(parse_duration("60s"), Ok(s(60)));
        assert_eq!(parse_duration("10m"), Ok(s(600)));
        assert_eq!(parse_duration("1h"), Ok(s(3600)));
        assert_eq!(parse_duration("1h30m"), Ok(s(5400)));
        assert_eq!(parse_duration("2h5m30s"), Ok(s(7530)));
        assert_eq!(parse_duration("90"), Ok(s(90)));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("10m5").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
