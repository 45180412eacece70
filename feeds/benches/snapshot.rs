//! Cost of a feeds snapshot in a realistic state: the three default instruments (as in
//! `servers/src/defaults.rs`) after a million simulator commands, every topic's history full.
//! Prints the time `MarketData::snapshot` takes on the feeds thread, `FeedsSnapshot::encode`
//! on the writer's thread (with history messages never read, so encoded there, and again
//! already encoded) and the bytes it writes, then `FeedsSnapshot::decode` and
//! `MarketData::restore`. Each figure is the least of several runs.
//!
//! `cargo bench -p ticker-feeds --bench snapshot` (`-- 200000` for fewer commands)

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticker_engine::*;
use ticker_feeds::sim::{SimConfig, Simulator};
use ticker_feeds::*;

/// The tests' event streams; the bench takes their instruments (`specs`).
#[path = "../tests/common/mod.rs"]
mod common;

use common::specs;

const RUNS: usize = 5;
/// Commands the engine applies into one batch for the feeds, as the pipeline's default.
const BATCH: usize = 256;

/// The least time of `RUNS` runs of `f`, and its last result.
fn least<T>(mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut last = None;
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = f();
        best = best.min(start.elapsed());
        last = Some(out);
    }
    (best, last.expect("RUNS > 0"))
}

/// Bytes as MiB with two decimals, in integers.
fn mib(bytes: usize) -> String {
    let hundredths = bytes * 100 / (1 << 20);
    format!("{}.{:02} MiB", hundredths / 100, hundredths % 100)
}

fn main() {
    // `cargo bench` passes `--bench`; a bare number sets the command count.
    let commands: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let instruments: Vec<Instrument> = specs()
        .into_iter()
        .enumerate()
        .map(|(i, s)| Instrument::new(i as u32, s).unwrap())
        .collect();
    let config = FeedsConfig::default();
    let mut engine = Engine::default();
    let mut md = MarketData::new(
        config.clone(),
        Arc::new(Hub::new(config.hub.clone())),
        Arc::new(Instruments::default()),
    );
    let mut events = Vec::new();
    for ins in &instruments {
        let add = CommandKind::AddInstrument(Box::new(ins.spec.clone()));
        engine.apply(&Command::new(0, 0, add), &mut events);
    }
    let mut sim = Simulator::new(SimConfig::default(), &instruments, 1);
    let start = Instant::now();
    for i in 0..commands {
        engine.apply(&sim.next_command(), &mut events);
        if i % BATCH == BATCH - 1 {
            md.apply(&events);
            events.clear();
        }
    }
    md.apply(&events);
    let fed = start.elapsed();

    let snapshot = md.snapshot();
    let levels: usize = (0..3)
        .filter_map(|i| md.depth_book(i))
        .map(|b| b.level_count(Side::Buy) + b.level_count(Side::Sell))
        .sum();
    println!(
        "feeds snapshot: 3 default instruments after {commands} simulator commands \
         ({} events, engine and feeds {fed:.2?}), default FeedsConfig (history {} per topic)",
        md.last_seq(),
        config.hub.history
    );
    println!(
        "  state: {} history messages, {} accounts with updates, {} live orders, {levels} depth levels",
        snapshot.history_messages(),
        md.accounts().len(),
        engine.live_order_count(),
    );
    drop(snapshot);

    let (took, _) = least(|| black_box(md.snapshot()));
    println!("  MarketData::snapshot (feeds thread):              {took:>9.2?}");
    // The first encode also encodes every history message nobody has read (a subscriber
    // would have); a fresh state per run would take minutes to build, so it runs once.
    let snapshot = md.snapshot();
    let start = Instant::now();
    let bytes = snapshot.encode();
    let first = start.elapsed();
    println!(
        "  FeedsSnapshot::encode, messages never read:       {first:>9.2?}  {} ({} bytes)",
        mib(bytes.len()),
        bytes.len()
    );
    let (took, again) = least(|| snapshot.encode());
    assert_eq!(again, bytes);
    println!("  FeedsSnapshot::encode, messages already encoded:  {took:>9.2?}");
    let (decode, decoded) = least(|| FeedsSnapshot::decode(&bytes).unwrap());
    println!("  FeedsSnapshot::decode:                            {decode:>9.2?}");
    drop(decoded);
    let mut restore = Duration::MAX;
    let mut restored = None;
    for _ in 0..RUNS {
        let decoded = FeedsSnapshot::decode(&bytes).unwrap();
        let hub = Arc::new(Hub::new(config.hub.clone()));
        let start = Instant::now();
        let md = MarketData::restore(config.clone(), hub, Arc::default(), decoded).unwrap();
        restore = restore.min(start.elapsed());
        restored = Some(md);
    }
    println!("  MarketData::restore:                              {restore:>9.2?}");
    println!(
        "  decode + restore:                                 {:>9.2?}",
        decode + restore
    );
    let restored = restored.expect("RUNS > 0");
    assert_eq!(restored.last_seq(), md.last_seq());
    assert_eq!(restored.snapshot().encode(), bytes, "restored as it was");
}
