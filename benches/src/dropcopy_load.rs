//! `ticker-bench dropcopy`: how many drop-copy messages one gRPC consumer of
//! `RiskService/StreamDropCopy` takes a second from a real market.
//!
//! A market (engine, feeds, no simulator thread) and its gRPC front run in this process; one
//! risk client opens the drop copy on loopback and counts whole messages without decoding
//! them. A producer thread feeds the engine the seeded simulator's commands as fast as the
//! consumer keeps up: at most `--window` drop-copy messages published and not yet received,
//! and at most `--in-flight` commands not yet through the feeds, so the lossless stream never
//! outruns its queue (8,192 messages) and the figure is the stream's, not a disconnect's.
//! Rate = messages received / time from the first command submitted to the last message
//! received.

use crate::load::stream::RawCodec;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticker_engine::Instrument;
use ticker_feeds::sim::{SimConfig, Simulator};
use ticker_proto::v1 as pb;
use ticker_servers::auth::{AuthConfig, Principal, Role};
use ticker_servers::grpc::{GrpcConfig, GrpcServer};
use ticker_servers::market::{ExecuteError, Market, MarketConfig};

/// Arguments of `ticker-bench dropcopy`.
#[derive(Clone, Debug, clap::Args)]
pub struct DropCopyArgs {
    /// Simulator commands fed to the engine.
    #[arg(long, default_value_t = 300_000)]
    pub commands: u64,
    /// Drop-copy messages the producer may run ahead of the consumer.
    #[arg(long, default_value_t = 2048)]
    pub window: u64,
    /// Commands submitted and not yet through the feeds at most.
    #[arg(long, default_value_t = 512)]
    pub in_flight: u64,
    /// Times the measurement is repeated (each on a fresh market).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Simulator seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

pub const LONG_ABOUT: &str = "\
How many drop-copy messages one gRPC consumer of RiskService/StreamDropCopy takes a second: a \
market and its gRPC front in this process, the seeded simulator's commands fed to the engine as \
fast as the consumer keeps up (at most --window messages ahead of it), one risk client on \
loopback counting whole messages undecoded.";

const TOKEN: &str = "bench-risk";

pub fn run(args: &DropCopyArgs, out: &mut impl Write) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.window < 4096,
        "--window must stay below half the stream's queue"
    );
    let mut results = Vec::new();
    writeln!(
        out,
        "drop copy to one gRPC consumer: {} simulator commands per run, window {} messages, {} commands in flight\n",
        args.commands, args.window, args.in_flight
    )?;
    writeln!(
        out,
        "| run | messages | seconds | messages/s | bytes/message | commands/s |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    for run in 0..args.runs {
        let r = one(args)?;
        writeln!(
            out,
            "| {} | {} | {:.3} | {:.0} | {:.1} | {:.0} |",
            run + 1,
            r.messages,
            r.seconds,
            r.messages as f64 / r.seconds,
            r.bytes as f64 / r.messages as f64,
            args.commands as f64 / r.seconds
        )?;
        results.push(serde_json::json!({
            "messages": r.messages,
            "seconds": r.seconds,
            "messages_per_second": r.messages as f64 / r.seconds,
            "wire_bytes_per_message": r.bytes as f64 / r.messages as f64,
        }));
    }
    writeln!(
        out,
        "\n{}",
        serde_json::json!({"bench": "dropcopy", "commands": args.commands, "runs": results})
    )?;
    Ok(())
}

struct Outcome {
    messages: u64,
    bytes: u64,
    seconds: f64,
}

fn one(args: &DropCopyArgs) -> anyhow::Result<Outcome> {
    let market = Market::start(MarketConfig {
        simulator: None,
        ..MarketConfig::default()
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("ticker-bench")
        .enable_all()
        .build()?;
    let result = runtime.block_on(measure(market.clone(), args));
    runtime.shutdown_timeout(Duration::from_secs(1));
    market.shutdown();
    result
}

async fn measure(market: Arc<Market>, args: &DropCopyArgs) -> anyhow::Result<Outcome> {
    let mut auth = AuthConfig::default();
    auth.tokens.insert(
        TOKEN.into(),
        Principal {
            role: Role::Risk,
            account: None,
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = GrpcServer::start_on(
        listener,
        market.clone(),
        GrpcConfig {
            auth,
            ..GrpcConfig::default()
        },
    )
    .await?;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.local_addr()))?
            .tcp_nodelay(true)
            .connect()
            .await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let path = http::uri::PathAndQuery::from_static("/ticker.v1.RiskService/StreamDropCopy");
    let mut request = tonic::Request::new(pb::StreamDropCopyRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    let mut stream = grpc
        .server_streaming(
            request,
            path,
            RawCodec::<pb::StreamDropCopyRequest>::default(),
        )
        .await?
        .into_inner();
    // The snapshot of open orders (none yet) comes first and is not counted.
    stream
        .message()
        .await?
        .ok_or_else(|| anyhow::anyhow!("the drop copy ended before its snapshot"))?;

    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let producer = {
        let (market, received, done) = (market.clone(), received.clone(), done.clone());
        let args = args.clone();
        std::thread::spawn(move || produce(&market, &args, &received, &done))
    };
    let drop_copy = market.accounts().drop_copy().clone();
    let mut bytes = 0u64;
    let mut count = 0u64;
    loop {
        // Once the producer is done and the feeds have published everything, the last
        // message to wait for is known.
        if done.load(Ordering::Acquire) && count >= drop_copy.seq() {
            break;
        }
        let next = tokio::time::timeout(Duration::from_millis(50), stream.message()).await;
        match next {
            Ok(m) => {
                let m = m?.ok_or_else(|| anyhow::anyhow!("the drop copy ended"))?;
                // 5 bytes of gRPC framing per message; HTTP/2 frame headers not counted.
                bytes += m.len() as u64 + 5;
                count += 1;
                received.store(count, Ordering::Release);
            }
            // Nothing for 50 ms: the producer may be done, so look again.
            Err(_) => continue,
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    producer
        .join()
        .map_err(|_| anyhow::anyhow!("the producer panicked"))??;
    server.shutdown(Duration::from_secs(1)).await;
    Ok(Outcome {
        messages: count,
        bytes,
        seconds,
    })
}

/// Submits the simulator's commands, staying within the window of the consumer.
fn produce(
    market: &Market,
    args: &DropCopyArgs,
    received: &AtomicU64,
    done: &AtomicBool,
) -> anyhow::Result<()> {
    let instruments: Vec<Instrument> = market
        .instruments()
        .all()
        .iter()
        .map(|w| w.instrument.clone())
        .collect();
    let mut sim = Simulator::new(
        SimConfig {
            seed: args.seed,
            ..SimConfig::default()
        },
        &instruments,
        0,
    );
    let drop_copy = market.accounts().drop_copy();
    for i in 0..args.commands {
        // Checked every 32 commands: the drop copy's counter is behind its lock.
        if i % 32 == 0 {
            while market.stats().in_flight() > args.in_flight
                || drop_copy
                    .seq()
                    .saturating_sub(received.load(Ordering::Acquire))
                    > args.window
            {
                std::thread::yield_now();
            }
        }
        let kind = sim.next_command().kind;
        loop {
            match market.submit_detached(kind.clone()) {
                Ok(()) => break,
                Err(ExecuteError::Busy) => std::thread::yield_now(),
                Err(e) => return Err(e.into()),
            }
        }
    }
    while market.stats().in_flight() > 0 {
        std::thread::yield_now();
    }
    done.store(true, Ordering::Release);
    Ok(())
}
