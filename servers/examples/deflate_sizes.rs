//! What permessage-deflate buys and costs on real market data: bytes per message raw, in shared
//! mode (each message deflated alone, no context takeover, 15-bit window) and per connection
//! (one sliding window across a connection's messages), and nanoseconds to compress one message.
//!
//! ```sh
//! cargo run --release -p ticker-servers --example deflate_sizes [-- MESSAGES]
//! ```
//!
//! The messages are the feeds' own JSON: a seeded simulated market (the embedded default) is
//! run through the engine and the feeds, and the BTC-USD ticker, depth and trades topics are
//! recorded as a subscriber gets them. Per-connection figures compress each topic as the only
//! subscription of a connection, and all three interleaved as one connection subscribed to
//! all. Timings are the mean of the whole sequence repeated until at least 200 ms have passed.

use clap::Parser;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticker_engine::{Command, CommandKind, Engine, Instrument, InstrumentSpec};
use ticker_feeds::hub::{Hub, Subscription};
use ticker_feeds::sim::{SimConfig, Simulator};
use ticker_feeds::{Channel, FeedsConfig, Instruments, MarketData, Topic};
use ticker_servers::ws::deflate::{deflate_shared, MessageDeflater, SHARED_LEVEL};

/// What permessage-deflate buys and costs on real market data.
#[derive(Parser, Debug)]
struct Flags {
    /// Messages recorded per topic.
    #[arg(default_value_t = 2_000)]
    messages: usize,
}

fn specs() -> Vec<InstrumentSpec> {
    let d = |s: &str| s.parse::<rust_decimal::Decimal>().unwrap();
    let spec = |symbol: &str, lot: &str, max: &str, price: &str| InstrumentSpec {
        symbol: symbol.into(),
        tick_size: d("0.01"),
        lot_size: d(lot),
        min_size: d(lot),
        max_size: d(max),
        reference_price: d(price),
        band: d("0.1"),
    };
    vec![
        spec("BTC-USD", "0.00001", "100", "65000"),
        spec("ETH-USD", "0.0001", "1000", "3200"),
    ]
}

/// The JSON of `wanted` messages per topic (ticker, depth, trades of BTC-USD) and all of them
/// in the order one subscriber of all three would get them.
fn record(wanted: usize) -> ([Vec<Vec<u8>>; 3], Vec<Vec<u8>>) {
    let instruments: Vec<Instrument> = specs()
        .into_iter()
        .enumerate()
        .map(|(i, s)| Instrument::new(i as u32, s).unwrap())
        .collect();
    let hub = Arc::new(Hub::default());
    let mut md = MarketData::new(
        FeedsConfig::default(),
        hub.clone(),
        Arc::new(Instruments::default()),
    );
    let mut engine = Engine::default();
    for i in &instruments {
        let cmd = Command {
            deadline: 0,
            ts: 0,
            corr: 0,
            kind: CommandKind::AddInstrument(Box::new(i.spec.clone())),
        };
        md.apply(&engine.apply_collect(&cmd));
    }
    let channels = [Channel::Ticker, Channel::Depth, Channel::Trades];
    let mut subs: Vec<Subscription> = channels
        .iter()
        .map(|&channel| {
            hub.subscribe(
                Topic::Market {
                    channel,
                    instrument: 0,
                },
                None,
            )
        })
        .collect();
    let mut sim = Simulator::new(
        SimConfig::default(),
        &instruments,
        1_764_430_000_000_000_000,
    );
    let mut per_topic: [Vec<Vec<u8>>; 3] = Default::default();
    let mut all = Vec::new();
    while per_topic.iter().any(|t| t.len() < wanted) {
        md.apply(&engine.apply_collect(&sim.next_command()));
        for (i, sub) in subs.iter_mut().enumerate() {
            while let Ok(Some(delivery)) = sub.try_recv() {
                if let Some(m) = delivery.message() {
                    if per_topic[i].len() < wanted {
                        per_topic[i].push(m.json().to_vec());
                        all.push(m.json().to_vec());
                    }
                }
            }
        }
    }
    (per_topic, all)
}

struct Figures {
    bytes: f64,
    /// On-CPU time per message (this thread's run time from /proc, so other processes on a
    /// busy machine do not inflate it); wall time where /proc is unavailable.
    ns: f64,
}

/// This thread's time on a CPU in nanoseconds (Linux schedstat), if available.
fn cpu_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    stat.split_whitespace().next()?.parse().ok()
}

/// Mean output size and mean time per message of `compress` over `messages`, repeated for at
/// least 300 ms of CPU (`fresh` makes a new compressor for each repetition).
fn measure<C>(
    messages: &[Vec<u8>],
    mut fresh: impl FnMut() -> C,
    compress: impl Fn(&mut C, &[u8]) -> usize,
) -> Figures {
    let mut total_bytes = 0;
    let mut state = fresh();
    for m in messages {
        total_bytes += compress(&mut state, m);
    }
    let clock =
        || cpu_ns().unwrap_or_else(|| Instant::now().duration_since(*EPOCH).as_nanos() as u64);
    let (mut runs, started) = (0u64, clock());
    while clock() - started < Duration::from_millis(300).as_nanos() as u64 {
        let mut state = fresh();
        for m in messages {
            std::hint::black_box(compress(&mut state, m));
        }
        runs += 1;
    }
    let n = messages.len() as f64;
    Figures {
        bytes: total_bytes as f64 / n,
        ns: (clock() - started) as f64 / (n * runs as f64),
    }
}

static EPOCH: std::sync::LazyLock<Instant> = std::sync::LazyLock::new(Instant::now);

fn main() {
    let wanted = Flags::parse().messages;
    let (per_topic, all) = record(wanted);
    let clock = if cpu_ns().is_some() { "CPU" } else { "wall" };
    println!(
        "deflate_sizes: {wanted} messages per topic of a seeded simulated BTC-USD market, zlib-rs"
    );
    println!(
        "{:<24} {:<16} {:>5} {:>9} {:>6} {:>12}",
        "stream",
        "mode",
        "level",
        "B/msg",
        "ratio",
        format!("{clock} ns/msg")
    );
    let rows = [
        ("ticker", &per_topic[0]),
        ("depth", &per_topic[1]),
        ("trades", &per_topic[2]),
        ("all three, interleaved", &all),
    ];
    for (name, messages) in rows {
        let raw = messages.iter().map(Vec::len).sum::<usize>() as f64 / messages.len() as f64;
        println!(
            "{name:<24} {:<16} {:>5} {raw:>9.1} {:>5.0}% {:>12}",
            "raw", "-", 100.0, "-"
        );
        let row = |mode: &str, level: u32, f: Figures| {
            println!(
                "{name:<24} {mode:<16} {level:>5} {:>9.1} {:>5.0}% {:>12.0}",
                f.bytes,
                100.0 * f.bytes / raw,
                f.ns
            );
        };
        row(
            "shared",
            SHARED_LEVEL,
            measure(messages, || (), |_, m| deflate_shared(m).len()),
        );
        row(
            "shared",
            1,
            measure(
                messages,
                || MessageDeflater::new(15, true, 1),
                |d, m| d.compress(m).len(),
            ),
        );
        for level in [6, 1] {
            let f = measure(
                messages,
                || MessageDeflater::new(15, false, level),
                |d, m| d.compress(m).len(),
            );
            row("per-connection", level, f);
        }
    }
    for (name, messages) in &rows[..3] {
        println!(
            "sample {name}: {}",
            String::from_utf8_lossy(&messages[messages.len() / 2])
        );
    }
    println!("shared: paid once per message for all connections; per-connection: once per message per connection.");
}
