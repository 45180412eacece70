//! `ticker-bench recovery`: how long tickerd takes to start on a data directory holding
//! `--commands` journaled commands, from the journal alone and from a snapshot plus the tail
//! after it.
//!
//! The directory is made first, untimed: the seeded simulator's flow over tickerd's default
//! instruments (stamped as if it ran at its default rate), journaled in records of up to 256
//! commands as the engine thread writes them, applied to an engine and the feeds as tickerd
//! would, and a snapshot cut `--tail` commands before the end (both halves, engine and feeds,
//! with full histories). Then `ticker_servers::recovery::recover` — exactly what `tickerd`
//! runs at start: lock, scan and checksum every segment, load the snapshot, replay the tail
//! through the engine and the feeds — is timed `--runs` times with the snapshot and as many
//! times without it (the snapshot file set aside), alternating.

use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticker_engine::journal::{
    snapshot_name, DirStorage, Journal, JournalConfig, OpenOptions, Storage,
};
use ticker_engine::{Command, CommandKind, Engine, EngineConfig, Instrument};
use ticker_feeds::sim::{SimConfig, Simulator};
use ticker_feeds::{FeedsConfig, Hub, Instruments, MarketData};
use ticker_servers::defaults;
use ticker_servers::recovery;
use ticker_servers::snapshot_writer::write_snapshot;

/// Arguments of `ticker-bench recovery`.
#[derive(Clone, Debug, clap::Args)]
pub struct RecoveryArgs {
    /// Commands in the journal.
    #[arg(long, default_value_t = 1_000_000)]
    pub commands: u64,
    /// Commands after the snapshot (tickerd cuts one every journal.snapshot_every = 250,000,
    /// so a start replays at most that many).
    #[arg(long, default_value_t = 250_000)]
    pub tail: u64,
    /// Timed starts of each kind.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Simulator seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where the data directory is made [default: a temporary directory, removed afterwards].
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

pub const LONG_ABOUT: &str = "\
How long a start takes on a data directory of --commands journaled commands: from the journal \
alone, and from a snapshot --tail commands before the end plus that tail. The directory is built \
first (untimed) from the seeded simulator over tickerd's default instruments; each start is \
ticker_servers::recovery::recover, what tickerd runs: lock, checksum every segment, load the \
snapshot, replay through the engine and the feeds.";

/// Simulated time starts here (2026-12-01T00:00:00Z), so candles and 24 h statistics are
/// those of a real day.
const EPOCH_NS: u64 = 1_796_083_200_000_000_000;
/// Commands per journal record, as the engine thread writes them under load.
const RUN: usize = 256;

pub fn run(args: &RecoveryArgs, out: &mut impl Write) -> anyhow::Result<()> {
    anyhow::ensure!(args.tail < args.commands, "--tail must be below --commands");
    let (dir, temporary) = match &args.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("ticker-bench-recovery-{}", std::process::id())),
            true,
        ),
    };
    let result = measure(args, &dir, out);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn measure(args: &RecoveryArgs, dir: &std::path::Path, out: &mut impl Write) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    let started = Instant::now();
    let snapshot_at = args.commands - args.tail;
    let (events, bytes) = build(args, dir, snapshot_at)?;
    writeln!(
        out,
        "data directory {}: {} commands ({} events, {:.1} MB of journal), snapshot after command {} (made in {:.1} s)",
        dir.display(),
        args.commands,
        events,
        bytes as f64 / 1e6,
        snapshot_at,
        started.elapsed().as_secs_f64()
    )?;
    let snapshot = dir.join(snapshot_name(snapshot_at));
    let aside = dir.with_extension("snapshot-aside");
    let config = JournalConfig {
        dir: dir.to_path_buf(),
        ..JournalConfig::default()
    };
    let mut with = Vec::new();
    let mut without = Vec::new();
    for _ in 0..args.runs.max(1) {
        with.push(start(&config)?);
        std::fs::rename(&snapshot, &aside)?;
        let took = start(&config);
        std::fs::rename(&aside, &snapshot)?;
        without.push(took?);
    }
    writeln!(
        out,
        "\n| start on {} commands | total | snapshot load | replay | commands replayed |",
        args.commands
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    for (name, starts) in [("snapshot + tail", &with), ("journal alone", &without)] {
        let best = starts
            .iter()
            .min_by_key(|s| s.total)
            .expect("at least one run");
        writeln!(
            out,
            "| {name} | {} (best {:.0} ms) | {:.0} ms | {:.0} ms | {} |",
            starts
                .iter()
                .map(|s| format!("{:.0} ms", ms(s.total)))
                .collect::<Vec<_>>()
                .join(" / "),
            ms(best.total),
            ms(best.restore),
            ms(best.replay),
            best.replayed
        )?;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

struct Start {
    total: Duration,
    restore: Duration,
    replay: Duration,
    replayed: u64,
}

/// One start of tickerd's recovery on the directory.
fn start(config: &JournalConfig) -> anyhow::Result<Start> {
    let hub = Arc::new(Hub::new(FeedsConfig::default().hub));
    let started = Instant::now();
    let recovered = recovery::recover(
        config,
        &EngineConfig::default(),
        &FeedsConfig::default(),
        hub,
        Arc::new(Instruments::default()),
    )?;
    let total = started.elapsed();
    let report = recovered.report;
    Ok(Start {
        total,
        restore: report.restore_time,
        replay: report.replay_time,
        replayed: report.replayed,
    })
}

/// Journals the simulator's flow into `dir`, cutting a snapshot after command `snapshot_at`.
/// Returns the events applied and the journal's bytes.
fn build(
    args: &RecoveryArgs,
    dir: &std::path::Path,
    snapshot_at: u64,
) -> anyhow::Result<(u64, u64)> {
    let storage = DirStorage::new(dir)?;
    let mut writer = Journal::open(storage.clone(), OpenOptions::default())?
        .into_writer(1, JournalConfig::default().segments())?;
    let mut engine = Engine::new(EngineConfig::default());
    let hub = Arc::new(Hub::new(FeedsConfig::default().hub));
    let mut feeds = MarketData::new(
        FeedsConfig::default(),
        hub,
        Arc::new(Instruments::default()),
    );
    let specs = defaults::instruments();
    let mut commands: Vec<Command> = specs
        .iter()
        .map(|s| Command::new(EPOCH_NS, 0, CommandKind::AddInstrument(Box::new(s.clone()))))
        .collect();
    let instruments: Vec<Instrument> = specs
        .into_iter()
        .enumerate()
        .map(|(i, s)| Instrument::new(i as u32, s))
        .collect::<Result<_, _>>()?;
    let mut sim = Simulator::new(
        SimConfig {
            seed: args.seed,
            ..SimConfig::default()
        },
        &instruments,
        EPOCH_NS,
    );
    let mut events = Vec::new();
    let mut total_events = 0u64;
    let mut bytes = 0u64;
    let mut index = 0u64;
    while index < args.commands {
        while commands.len() < RUN && index + (commands.len() as u64) < args.commands {
            commands.push(sim.next_command());
        }
        for c in commands.drain(..) {
            index = writer.push(&c);
            engine.apply(&c, &mut events);
            if index == snapshot_at {
                feeds.apply(&events);
                total_events += events.len() as u64;
                events.clear();
                bytes += writer.commit(index, None)?.map_or(0, |c| c.bytes);
                write_snapshot(&storage, index, &engine.snapshot(), &feeds.snapshot(), None)?;
            }
        }
        bytes += writer.commit(index, None)?.map_or(0, |c| c.bytes);
        feeds.apply(&events);
        total_events += events.len() as u64;
        events.clear();
    }
    writer.sync()?;
    anyhow::ensure!(
        storage.list()?.contains(&snapshot_name(snapshot_at)),
        "the snapshot after command {snapshot_at} was written"
    );
    Ok((total_events, bytes))
}
