//! `tickerd journal verify | inspect | replay DIR`: what an operator reaches for after an
//! incident. None of them writes to the directory, so they are safe on a copy or beside a
//! running tickerd (whose last record may then show as a torn tail still being written).
//!
//! DIR is a market's data directory, of one shard or sharded (`market.shards` > 1: one
//! journal per `shard-K` subdirectory, [`crate::shard_recovery`]). Sharded, each tool goes
//! through every shard's journal; `verify` also checks that every snapshot round shard 0
//! names is whole, `inspect` shows each record's merge ticket, and `replay` merges the
//! shards' runs by ticket as a start does.

use crate::shard_merge::{MergeState, ShardMerge};
use crate::shard_recovery::{
    restore_round, runs_in_ticket_order, shard_dir, shards_in, MergedReplay,
};
use crate::snapshot_writer::{ENGINE_SECTION, FEEDS_SECTION, MERGE_SECTION};
use anyhow::Context;
use parking_lot::Mutex;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use ticker_engine::journal::{
    snapshot_name, DirStorage, Journal, JournalError, OpenOptions, Storage,
};
use ticker_engine::shard::Shard;
use ticker_engine::{Command, CommandKind, Engine, EngineConfig, EngineSnapshot, OrderRef};
use ticker_feeds::snapshot::FeedsSnapshot;

/// The journal directories of a sharded data directory, in shard order; `None` when it is a
/// one-shard market's.
fn shard_dirs(dir: &Path) -> anyhow::Result<Option<Vec<PathBuf>>> {
    let shards = shards_in(dir).with_context(|| format!("reading {}", dir.display()))?;
    if shards == 0 {
        return Ok(None);
    }
    // A count no market can have would otherwise fail later, once per shard.
    Shard::new(0, shards).with_context(|| format!("{} shard directories", dir.display()))?;
    Ok(Some((0..shards).map(|k| shard_dir(dir, k)).collect()))
}

/// Each shard's engine configuration: the shard decides which order ids a restored engine
/// accepts as its own.
fn engine_configs(shards: usize) -> anyhow::Result<Vec<EngineConfig>> {
    Ok(Shard::all(shards)?
        .into_iter()
        .map(|shard| EngineConfig {
            shard,
            ..EngineConfig::default()
        })
        .collect())
}

fn open(dir: &Path) -> Result<Journal<DirStorage>, JournalError> {
    if !dir.is_dir() {
        return Err(JournalError::Io {
            context: format!("opening {}", dir.display()),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
        });
    }
    let storage =
        DirStorage::new(dir).map_err(JournalError::io(format!("opening {}", dir.display())))?;
    Journal::open(storage, OpenOptions::default())
}

/// Checks everything: segment and record checksums and index continuity (on open), that
/// every command decodes, and that every snapshot reads back and decodes. Returns whether all
/// is well. Sharded: every shard's journal, then every snapshot round.
pub fn verify(dir: &Path, out: &mut impl Write) -> anyhow::Result<bool> {
    let ok = match shard_dirs(dir)? {
        None => {
            let kind = SnapshotKind {
                engine: EngineConfig::default(),
                feeds: true,
            };
            verify_journal(&open(dir)?, dir, &kind, out)?
        }
        Some(dirs) => verify_shards(&dirs, out)?,
    };
    writeln!(out, "{}", if ok { "OK" } else { "DAMAGED" })?;
    Ok(ok)
}

/// What a journal's snapshot files hold.
struct SnapshotKind {
    /// The engine of this shard.
    engine: EngineConfig,
    /// The feeds too: a one-shard market's files, or shard 0's of a round (beside the merge,
    /// which the round check reads). Shard K > 0's hold only the engine.
    feeds: bool,
}

fn verify_shards(dirs: &[PathBuf], out: &mut impl Write) -> anyhow::Result<bool> {
    let configs = engine_configs(dirs.len())?;
    let mut ok = true;
    let mut journals = Vec::with_capacity(dirs.len());
    for (k, dir) in dirs.iter().enumerate() {
        let kind = SnapshotKind {
            engine: configs[k].clone(),
            feeds: k == 0,
        };
        match open(dir) {
            Ok(journal) => {
                ok &= verify_journal(&journal, dir, &kind, out)?;
                journals.push(journal);
            }
            Err(e) => {
                writeln!(out, "{}: ERROR: {e}", dir.display())?;
                ok = false;
            }
        }
    }
    if journals.len() < dirs.len() {
        writeln!(
            out,
            "snapshot rounds not checked: not every shard's journal opens"
        )?;
        return Ok(false);
    }
    Ok(verify_rounds(&journals, &configs, out)? && ok)
}

/// Every snapshot round shard 0's files name: each shard's file of it there and, all
/// together, what a start could restore from.
fn verify_rounds(
    journals: &[Journal<DirStorage>],
    configs: &[EngineConfig],
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let mut ok = true;
    for &index in journals[0].snapshots() {
        // A file that does not read back was reported with shard 0's journal.
        let Ok(file) = journals[0].read_snapshot(index) else {
            continue;
        };
        let state = match file.section(MERGE_SECTION).map(MergeState::decode) {
            Some(Ok(state)) => state,
            Some(Err(e)) => {
                writeln!(
                    out,
                    "ERROR: round of snapshot {index}: the merge section does not decode: {e}"
                )?;
                ok = false;
                continue;
            }
            None => {
                writeln!(
                    out,
                    "ERROR: snapshot {index} of shard 0 has no {MERGE_SECTION} section: \
                     no round a start can use"
                )?;
                ok = false;
                continue;
            }
        };
        match round_problem(journals, configs, index, &state) {
            None => writeln!(
                out,
                "round at cuts {:?}: whole (ticket {}, merged seq {})",
                state.cuts, state.ticket, state.seq
            )?,
            Some(why) => {
                writeln!(out, "ERROR: round at cuts {:?}: {why}", state.cuts)?;
                ok = false;
            }
        }
    }
    Ok(ok)
}

/// Why the round whose shard-0 file is snapshot `index` could not be restored, if it could
/// not.
fn round_problem(
    journals: &[Journal<DirStorage>],
    configs: &[EngineConfig],
    index: u64,
    state: &MergeState,
) -> Option<String> {
    if state.cuts.len() != journals.len() {
        return Some(format!(
            "it has cuts of {} shards, the directory holds {}",
            state.cuts.len(),
            journals.len()
        ));
    }
    let missing: Vec<String> = journals
        .iter()
        .zip(&state.cuts)
        .filter(|(journal, cut)| !journal.snapshots().contains(cut))
        .map(|(journal, &cut)| journal.storage().describe(&snapshot_name(cut)))
        .collect();
    if !missing.is_empty() {
        return Some(format!("incomplete, missing {}", missing.join(", ")));
    }
    restore_round(journals, index, &|k| configs[k].clone())
        .err()
        .map(|e| e.to_string())
}

/// One journal directory's part of [`verify`], headed by `dir`.
fn verify_journal(
    journal: &Journal<DirStorage>,
    dir: &Path,
    kind: &SnapshotKind,
    out: &mut impl Write,
) -> anyhow::Result<bool> {
    let mut ok = true;
    writeln!(
        out,
        "{}: {} segments",
        dir.display(),
        journal.segments().len()
    )?;
    for s in journal.segments() {
        writeln!(
            out,
            "  {}  commands {}..={}  {} records  {} bytes",
            s.name, s.first, s.last, s.records, s.len
        )?;
    }
    if let Some(t) = journal.torn_tail() {
        writeln!(
            out,
            "torn tail: {} bytes at byte {} of {} ({}); a start would cut it off",
            t.bytes, t.offset, t.file, t.reason
        )?;
    }
    let mut commands = 0u64;
    for item in journal.commands_from(journal.first_index()) {
        match item {
            Ok(_) => commands += 1,
            Err(e) => {
                writeln!(out, "ERROR: {e}")?;
                ok = false;
                break;
            }
        }
    }
    writeln!(
        out,
        "{commands} commands decode, indexes {}..={} without a gap",
        journal.first_index(),
        journal.last_index()
    )?;
    for &index in journal.snapshots() {
        match describe_snapshot(journal, index, kind) {
            Ok(line) => writeln!(out, "snapshot {index}: {line}")?,
            Err(e) => {
                writeln!(out, "ERROR: snapshot {index}: {e}")?;
                ok = false;
            }
        }
    }
    let covered = journal.first_index() == 1
        || journal
            .snapshots()
            .iter()
            .any(|&s| s + 1 >= journal.first_index());
    if !covered {
        writeln!(
            out,
            "ERROR: the journal starts at command {} and no snapshot covers what came before",
            journal.first_index()
        )?;
        ok = false;
    }
    Ok(ok)
}

fn describe_snapshot(
    journal: &Journal<DirStorage>,
    index: u64,
    kind: &SnapshotKind,
) -> anyhow::Result<String> {
    let file = journal.read_snapshot(index)?;
    let engine = file
        .section(ENGINE_SECTION)
        .ok_or_else(|| anyhow::anyhow!("no {ENGINE_SECTION} section"))?;
    let engine = describe_engine(engine, kind.engine.clone())?;
    if !kind.feeds {
        return Ok(engine);
    }
    let feeds = file
        .section(FEEDS_SECTION)
        .ok_or_else(|| anyhow::anyhow!("no {FEEDS_SECTION} section"))?;
    let f = FeedsSnapshot::decode(feeds)?;
    Ok(format!(
        "{engine}, feeds {} bytes (seq {}, {} history messages)",
        feeds.len(),
        f.last_seq(),
        f.history_messages()
    ))
}

/// An engine section that decodes and that the engine restores from.
fn describe_engine(engine: &[u8], config: EngineConfig) -> anyhow::Result<String> {
    let snapshot: EngineSnapshot = postcard::from_bytes(engine)?;
    Engine::restore(config, &snapshot)?;
    let orders: usize = snapshot
        .books
        .iter()
        .map(|b| {
            b.bids
                .iter()
                .chain(&b.asks)
                .map(|l| l.orders.len())
                .sum::<usize>()
                + b.buy_stops.len()
                + b.sell_stops.len()
        })
        .sum();
    Ok(format!(
        "engine {} bytes (seq {}, {} instruments, {} live orders)",
        engine.len(),
        snapshot.last_seq,
        snapshot.books.len(),
        orders,
    ))
}

/// Prints records' commands from `from` (default: the first on disk), at most `limit`.
/// Sharded: each shard's, from its own command `from`, each record's merge ticket first.
pub fn inspect(
    dir: &Path,
    from: Option<u64>,
    limit: u64,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let Some(dirs) = shard_dirs(dir)? else {
        let journal = open(dir)?;
        write_snapshots(&journal, out)?;
        let from = from.unwrap_or(journal.first_index());
        for item in journal.commands_from(from).take(limit as usize) {
            let (index, command) = item?;
            writeln!(out, "{index:>10}  {}", describe(&command))?;
        }
        return Ok(());
    };
    for dir in &dirs {
        writeln!(out, "{}:", dir.display())?;
        let journal = open(dir)?;
        write_snapshots(&journal, out)?;
        write_runs(&journal, from.unwrap_or(journal.first_index()), limit, out)?;
    }
    Ok(())
}

fn write_snapshots(journal: &Journal<DirStorage>, out: &mut impl Write) -> anyhow::Result<()> {
    for &index in journal.snapshots() {
        writeln!(out, "snapshot after command {index}")?;
    }
    Ok(())
}

/// A line per record with its merge ticket (the order the feeds took the shards' runs in),
/// then its commands; at most `limit` commands.
fn write_runs(
    journal: &Journal<DirStorage>,
    from: u64,
    limit: u64,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let mut left = limit as usize;
    for run in journal.records_from(from) {
        if left == 0 {
            break;
        }
        let run = run?;
        match run.ticket {
            Some(ticket) => writeln!(out, "  run ticket={ticket}")?,
            // It published nothing, so it has no place in the merged stream.
            None => writeln!(out, "  run without ticket")?,
        }
        for (index, command) in run.commands.iter().take(left) {
            writeln!(out, "{index:>10}  {}", describe(command))?;
        }
        left = left.saturating_sub(run.commands.len());
    }
    Ok(())
}

/// One line per command: time, correlation, what it asks.
pub fn describe(c: &Command) -> String {
    let what = match &c.kind {
        CommandKind::Place(p) => format!(
            "place account={} client_id={} instrument={} {:?} {:?} price={} trigger={} size={} {:?}{}{}{}",
            p.account,
            p.client_id,
            p.instrument,
            p.side,
            p.order_type,
            p.price,
            p.trigger,
            p.size,
            p.tif,
            if p.post_only { " post_only" } else { "" },
            if p.display > 0 { format!(" display={}", p.display) } else { String::new() },
            if p.session > 0 { format!(" session={}", p.session) } else { String::new() },
        ),
        CommandKind::Cancel(x) => format!("cancel account={} {}", x.account, order_ref(x.order)),
        CommandKind::Amend(a) => format!(
            "amend account={} {} price={:?} size={:?} trigger={:?}",
            a.account,
            order_ref(a.order),
            a.price,
            a.size,
            a.trigger
        ),
        CommandKind::MassCancel(m) => format!(
            "mass_cancel account={} instrument={:?} side={:?}",
            m.account, m.instrument, m.side
        ),
        CommandKind::SessionClosed { session } => format!("session_closed session={session}"),
        CommandKind::AddInstrument(spec) => format!(
            "add_instrument {} tick={} lot={} min={} max={} reference={} band={}",
            spec.symbol,
            spec.tick_size,
            spec.lot_size,
            spec.min_size,
            spec.max_size,
            spec.reference_price,
            spec.band
        ),
        CommandKind::Halt { instrument } => format!("halt instrument={instrument}"),
        CommandKind::Resume { instrument } => format!("resume instrument={instrument}"),
        CommandKind::Heartbeat => "heartbeat".into(),
        CommandKind::Snapshot => "snapshot".into(),
        CommandKind::SetLimits { account, limits } => {
            format!("set_limits account={account} limits={limits:?}")
        }
        CommandKind::DisableAccount { account } => format!("disable_account account={account}"),
        CommandKind::EnableAccount { account } => format!("enable_account account={account}"),
    };
    let deadline = if c.deadline > 0 {
        format!(" deadline={}", c.deadline)
    } else {
        String::new()
    };
    format!("ts={} corr={}{deadline}  {what}", c.ts, c.corr)
}

fn order_ref(r: OrderRef) -> String {
    match r {
        OrderRef::Id(id) => format!("order_id={id}"),
        OrderRef::Client(c) => format!("client_id={c}"),
    }
}

/// Rebuilds the engine from the newest snapshot and the journal after it (or, with `full`,
/// from the journal alone) and prints each book and the state's checksums. Sharded: every
/// shard's engine from the newest whole round, the runs after it merged by ticket, and the
/// merged `seq` besides each engine's.
pub fn replay(dir: &Path, full: bool, out: &mut impl Write) -> anyhow::Result<()> {
    match shard_dirs(dir)? {
        None => replay_journal(dir, full, out),
        Some(dirs) => replay_shards(dir, &dirs, full, out),
    }
}

fn replay_journal(dir: &Path, full: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let journal = open(dir)?;
    let started = Instant::now();
    let (mut engine, start) = match journal.snapshots().last() {
        Some(&index) if !full => {
            let file = journal.read_snapshot(index)?;
            let bytes = file.section(ENGINE_SECTION).ok_or_else(|| {
                anyhow::anyhow!("snapshot {index} has no {ENGINE_SECTION} section")
            })?;
            let snapshot: EngineSnapshot = postcard::from_bytes(bytes)?;
            (
                Engine::restore(EngineConfig::default(), &snapshot)?,
                index + 1,
            )
        }
        _ => {
            if journal.first_index() > 1 {
                anyhow::bail!(
                    "the journal starts at command {}: earlier segments were pruned, so only \
                     a replay from a snapshot is possible",
                    journal.first_index()
                );
            }
            (Engine::new(EngineConfig::default()), 1)
        }
    };
    let mut events = Vec::new();
    let mut replayed = 0u64;
    for item in journal.commands_from(start) {
        let (_, command) = item?;
        engine.apply(&command, &mut events);
        events.clear();
        replayed += 1;
    }
    let took = started.elapsed();
    writeln!(
        out,
        "{} from {} + {replayed} commands in {:.1} ms: last command {}, last event seq {}",
        dir.display(),
        if start > 1 {
            format!("snapshot {}", start - 1)
        } else {
            "the first command".into()
        },
        took.as_secs_f64() * 1e3,
        journal.last_index().max(start - 1),
        engine.last_seq()
    )?;
    write_books(&engine, out)
}

/// Per book: best prices, levels, orders, and a CRC32C of its whole logical state (every
/// level, every order in queue order with all its fields, armed stops); then the whole
/// engine's. Two engines print the same lines exactly when their states are equal.
pub fn write_books(engine: &Engine, out: &mut impl Write) -> anyhow::Result<()> {
    let snapshot = engine.snapshot();
    for book in &snapshot.books {
        let orders: usize = book
            .bids
            .iter()
            .chain(&book.asks)
            .map(|l| l.orders.len())
            .sum();
        let bytes = postcard::to_allocvec(book)?;
        writeln!(
            out,
            "{:<12} bid {:>12} ask {:>12}  levels {:>5}/{:<5} orders {:>7} stops {:>4}  {}  crc32c {:08x}",
            book.spec.symbol,
            book.bids.first().map_or("-".into(), |l| l.price.to_string()),
            book.asks.first().map_or("-".into(), |l| l.price.to_string()),
            book.bids.len(),
            book.asks.len(),
            orders,
            book.buy_stops.len() + book.sell_stops.len(),
            if book.halted { "halted " } else { "trading" },
            crc32c::crc32c(&bytes)
        )?;
    }
    writeln!(
        out,
        "engine state crc32c {:08x} (seq {}, trade id {})",
        crc32c::crc32c(&postcard::to_allocvec(&snapshot)?),
        snapshot.last_seq,
        snapshot.last_trade_id
    )?;
    Ok(())
}

/// Where a sharded replay starts: the engines and merge, and each shard's cut.
struct ShardedStart {
    replay: MergedReplay,
    cuts: Vec<u64>,
    /// Runs up to this ticket were merged before the round was cut.
    merged_up_to: u64,
    /// The round's shard-0 snapshot, if any.
    round: Option<u64>,
}

/// As a start does, without locking the directories or repairing a torn tail: whatever a
/// running tickerd writes meanwhile is not read.
fn replay_shards(
    dir: &Path,
    dirs: &[PathBuf],
    full: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let journals = dirs
        .iter()
        .map(|d| open(d))
        .collect::<Result<Vec<_>, _>>()?;
    let configs = engine_configs(dirs.len())?;
    let started = Instant::now();
    let newest = if full {
        None
    } else {
        newest_round(&journals, &configs, out)?
    };
    let mut start = match newest {
        Some(start) => start,
        None => from_the_first_command(&journals, &configs)?,
    };
    let mut merged = Vec::new();
    for item in runs_in_ticket_order(&journals, &start.cuts) {
        let (shard, run) = item?;
        let to_merge = run.ticket.unwrap_or(0) > start.merged_up_to;
        start
            .replay
            .apply(shard, &run, to_merge.then_some(&mut merged));
        merged.clear();
    }
    let took = started.elapsed();
    writeln!(
        out,
        "{} ({} shards) from {} + {} commands in {:.1} ms: last merged event seq {}",
        dir.display(),
        dirs.len(),
        match start.round {
            Some(_) => format!("the round at cuts {:?}", start.cuts),
            None => "the first command".into(),
        },
        start.replay.commands,
        took.as_secs_f64() * 1e3,
        start.replay.seq()
    )?;
    for (k, engine) in start.replay.engines().iter().enumerate() {
        writeln!(
            out,
            "{}: last command {}, last event seq {}",
            dirs[k].display(),
            journals[k].last_index().max(start.cuts[k]),
            engine.last_seq()
        )?;
        write_books(engine, out)?;
    }
    Ok(())
}

/// The newest round that restores, as a start picks it (saying why newer ones do not).
fn newest_round(
    journals: &[Journal<DirStorage>],
    configs: &[EngineConfig],
    out: &mut impl Write,
) -> anyhow::Result<Option<ShardedStart>> {
    for &index in journals[0].snapshots().iter().rev() {
        let (engines, _, state) = match restore_round(journals, index, &|k| configs[k].clone()) {
            Ok(round) => round,
            Err(e) => {
                writeln!(out, "skipped the round of snapshot {index}: {e}")?;
                continue;
            }
        };
        for (journal, &cut) in journals.iter().zip(&state.cuts) {
            if journal.first_index() > cut + 1 {
                return Err(JournalError::NoSnapshotCovers {
                    first: journal.first_index(),
                }
                .into());
            }
        }
        let fan_in = Arc::new(Mutex::new(state.fan_in));
        let merge = ShardMerge::resume(fan_in, state.seq, state.ticket);
        return Ok(Some(ShardedStart {
            replay: MergedReplay::resume(engines, merge),
            cuts: state.cuts,
            merged_up_to: state.ticket,
            round: Some(index),
        }));
    }
    Ok(None)
}

fn from_the_first_command(
    journals: &[Journal<DirStorage>],
    configs: &[EngineConfig],
) -> anyhow::Result<ShardedStart> {
    if let Some(journal) = journals.iter().find(|j| j.first_index() > 1) {
        anyhow::bail!(
            "{} starts at command {}: earlier segments were pruned, so only a replay from a \
             snapshot round is possible",
            journal.storage().describe(""),
            journal.first_index()
        );
    }
    let engines = configs.iter().cloned().map(Engine::new).collect();
    Ok(ShardedStart {
        replay: MergedReplay::new(engines),
        cuts: vec![0; journals.len()],
        merged_up_to: 0,
        round: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: impl FnOnce(&mut Vec<u8>) -> anyhow::Result<bool>) -> (bool, String) {
        let mut out = Vec::new();
        let ok = f(&mut out).unwrap();
        (ok, String::from_utf8(out).unwrap())
    }

    #[test]
    fn shard_directories_make_a_data_directory_sharded() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(shard_dirs(dir.path()).unwrap(), None);
        for k in 0..2 {
            std::fs::create_dir(shard_dir(dir.path(), k)).unwrap();
        }
        assert_eq!(
            shard_dirs(dir.path()).unwrap(),
            Some(vec![shard_dir(dir.path(), 0), shard_dir(dir.path(), 1)])
        );
        let (ok, verified) = run(|out| verify(dir.path(), out));
        assert!(ok, "two empty journals: {verified}");
        assert_eq!(verified.matches(" 0 segments").count(), 2, "{verified}");
    }

    #[test]
    fn a_missing_shard_directory_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(shard_dir(dir.path(), 0)).unwrap();
        std::fs::create_dir(shard_dir(dir.path(), 2)).unwrap();
        let (ok, verified) = run(|out| verify(dir.path(), out));
        assert!(!ok, "{verified}");
        let missing = format!("{}: ERROR: ", shard_dir(dir.path(), 1).display());
        assert!(verified.contains(&missing), "{verified}");
        assert!(verified.contains("rounds not checked"), "{verified}");
        assert!(verified.ends_with("DAMAGED\n"), "{verified}");
        let replayed = replay(dir.path(), false, &mut Vec::new()).unwrap_err();
        assert!(replayed.to_string().contains("shard-1"), "{replayed}");
    }

    #[test]
    fn one_shard_journal_files_beside_shard_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(shard_dir(dir.path(), 0)).unwrap();
        std::fs::write(dir.path().join(snapshot_name(3)), b"").unwrap();
        let refused = inspect(dir.path(), None, 10, &mut Vec::new()).unwrap_err();
        assert!(format!("{refused:#}").contains("both"), "{refused:#}");
    }
}
