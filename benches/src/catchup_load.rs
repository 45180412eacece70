//! `ticker-bench catchup`: how fast a gateway catches up with the stream when it starts
//! `--messages` messages behind (issue 15's target: ≥ 200 k messages/s).
//!
//! A `nats-server -js` started by the tool (temporary store), a matcher market in this process
//! (no simulator thread, no journal, no periodic bus snapshot: only the one at start) fed the
//! seeded simulator's commands until JetStream has acknowledged `--messages` event messages
//! (one per command); then the matcher goes quiet and a gateway market starts: it loads the
//! start snapshot and applies every message after it, and `Market::start_gateway` returns once
//! it has applied the stream as it was at its start. Rate = messages applied / that time. Then
//! what NATS alone delivers to a consumer that only counts, push (the gateway's kind) and pull.

use crate::load::nats::NatsServer;
use crate::load::spawn::start_matcher;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use ticker_engine::Instrument;
use ticker_feeds::sim::{SimConfig, Simulator};
use ticker_servers::bus::{BusConfig, Role};
use ticker_servers::market::{ExecuteError, Market, MarketConfig};

#[derive(Clone, Debug, clap::Args)]
pub struct CatchupArgs {
    /// Event messages in the stream before the gateway starts.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Times the gateway part is repeated (each a fresh gateway on the same stream).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The nats-server binary.
    #[arg(long, default_value = "nats-server")]
    pub nats_server: String,
    /// Simulator seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

pub const LONG_ABOUT: &str = "\
How fast a gateway catches up with the JetStream stream when it starts --messages behind: a \
nats-server started by the tool, a matcher in this process fed the seeded simulator's commands \
until that many event messages are acknowledged, then a gateway that loads the start snapshot \
and applies every message after it. Prints messages/s per run, then what NATS alone delivers to an ordered consumer that only counts the same stream (push, the gateway's kind, and pull).";

pub fn run(args: &CatchupArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let nats = NatsServer::start(&args.nats_server)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("catchup")
        .enable_all()
        .build()?;
    let bus = BusConfig {
        url: nats.url.clone(),
        connect_timeout: Duration::from_secs(60),
        // Only the snapshot at start: the gateway replays everything after it.
        snapshot_every: u64::MAX / 2,
        ..BusConfig::default()
    };
    let quiet = MarketConfig {
        simulator: None,
        journal: None,
        ..MarketConfig::default()
    };
    let matcher = runtime.block_on(start_matcher(quiet.clone(), bus.clone()))?;
    let filled = Instant::now();
    produce(&matcher, args)?;
    writeln!(
        out,
        "stream filled: {} messages in {:.1} s (matcher publishing, acknowledged)",
        args.messages,
        filled.elapsed().as_secs_f64()
    )?;
    let mut rates = Vec::new();
    for run in 0..args.runs {
        let gateway = BusConfig {
            role: Role::Gateway,
            node: run as u16 + 1,
            ..bus.clone()
        };
        let started = Instant::now();
        let market = runtime.block_on(Market::start_gateway(quiet.clone(), gateway))?;
        let seconds = started.elapsed().as_secs_f64();
        let stats = &market.bus().expect("a gateway has a bus").stats;
        let applied = stats.published.load(Ordering::Relaxed);
        let events = stats.applied_seq.load(Ordering::Relaxed);
        let rate = applied as f64 / seconds;
        rates.push(rate);
        writeln!(
            out,
            "{{\"run\":{run},\"messages\":{applied},\"last_event_seq\":{events},\"seconds\":{seconds:.3},\"messages_per_second\":{rate:.0}}}"
        )?;
        market.shutdown();
    }
    rates.sort_by(f64::total_cmp);
    writeln!(
        out,
        "catch-up: median {:.0} messages/s over {} runs ({} messages behind)",
        rates[rates.len() / 2],
        rates.len(),
        args.messages
    )?;
    for kind in [Consumer::Push, Consumer::Pull] {
        let (read, seconds) = runtime.block_on(nats_alone(&bus, kind))?;
        writeln!(
            out,
            "NATS alone, one ordered {kind:?} consumer counting the stream from its start: {read} messages in {seconds:.3} s, {:.0} messages/s",
            read as f64 / seconds
        )?;
    }
    matcher.shutdown();
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(nats);
    Ok(())
}

/// The two ways JetStream hands a stream to a consumer.
#[derive(Clone, Copy, Debug)]
enum Consumer {
    /// The server sends as flow control allows (what a gateway uses).
    Push,
    /// The client asks for batches.
    Pull,
}

/// What JetStream delivers on this machine to one ordered consumer reading the same stream from
/// its first message to its last and only counting: how much of the catch-up time is NATS's
/// own, and why the gateway reads with a push consumer.
async fn nats_alone(bus: &BusConfig, kind: Consumer) -> anyhow::Result<(u64, f64)> {
    use async_nats::jetstream::{self, consumer};
    use futures_util::{Stream, StreamExt};
    async fn count<M, E>(mut messages: M, last: u64) -> anyhow::Result<u64>
    where
        M: Stream<Item = Result<jetstream::Message, E>> + Unpin,
        E: std::error::Error + Send + Sync + 'static,
    {
        let mut read = 0;
        while let Some(message) = messages.next().await {
            read += 1;
            let info = message?
                .info()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .stream_sequence;
            if info >= last {
                break;
            }
        }
        Ok(read)
    }
    let client = async_nats::connect(bus.url.as_str()).await?;
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream(&bus.stream).await?;
    let last = stream.info().await?.state.last_sequence;
    let started = Instant::now();
    let read = match kind {
        Consumer::Push => {
            let consumer = stream
                .create_consumer(consumer::push::OrderedConfig {
                    deliver_subject: client.new_inbox(),
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                })
                .await?;
            count(consumer.messages().await?, last).await?
        }
        Consumer::Pull => {
            let consumer = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    deliver_policy: consumer::DeliverPolicy::All,
                    ..Default::default()
                })
                .await?;
            count(consumer.messages().await?, last).await?
        }
    };
    Ok((read, started.elapsed().as_secs_f64()))
}

/// Feeds the matcher simulator commands until `--messages` are published and acknowledged.
fn produce(market: &Market, args: &CatchupArgs) -> anyhow::Result<()> {
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
    let stats = &market.bus().expect("a matcher has a bus").stats;
    let published = || stats.published.load(Ordering::Relaxed);
    let mut submitted = 0u64;
    while published() < args.messages {
        // Every simulator command is one message; keep a few thousand ahead of the acks.
        if submitted.saturating_sub(published()) > 20_000 {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let kind = sim.next_command().kind;
        loop {
            match market.submit_detached(kind.clone()) {
                Ok(()) => break,
                Err(ExecuteError::Busy) => std::thread::yield_now(),
                Err(e) => return Err(e.into()),
            }
        }
        submitted += 1;
    }
    Ok(())
}
