//! `tickerd journal verify | inspect | replay DIR`: what an operator reaches for after an
//! incident. None of them writes to the directory, so they are safe on a copy or beside a
//! running tickerd (whose last record may then show as a torn tail still being written).

use crate::snapshot_writer::{ENGINE_SECTION, FEEDS_SECTION};
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use ticker_engine::journal::{DirStorage, Journal, JournalError, OpenOptions};
use ticker_engine::{Command, CommandKind, Engine, EngineConfig, EngineSnapshot, OrderRef};
use ticker_feeds::snapshot::FeedsSnapshot;

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
/// is well.
pub fn verify(dir: &Path, out: &mut impl Write) -> anyhow::Result<bool> {
    let journal = open(dir)?;
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
        match describe_snapshot(&journal, index) {
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
    writeln!(out, "{}", if ok { "OK" } else { "DAMAGED" })?;
    Ok(ok)
}

fn describe_snapshot(journal: &Journal<DirStorage>, index: u64) -> anyhow::Result<String> {
    let file = journal.read_snapshot(index)?;
    let engine = file
        .section(ENGINE_SECTION)
        .ok_or_else(|| anyhow::anyhow!("no {ENGINE_SECTION} section"))?;
    let feeds = file
        .section(FEEDS_SECTION)
        .ok_or_else(|| anyhow::anyhow!("no {FEEDS_SECTION} section"))?;
    let snapshot: EngineSnapshot = postcard::from_bytes(engine)?;
    Engine::restore(EngineConfig::default(), &snapshot)?;
    let f = FeedsSnapshot::decode(feeds)?;
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
        "engine {} bytes (seq {}, {} instruments, {} live orders), feeds {} bytes (seq {}, {} history messages)",
        engine.len(),
        snapshot.last_seq,
        snapshot.books.len(),
        orders,
        feeds.len(),
        f.last_seq(),
        f.history_messages()
    ))
}

/// Prints records' commands from `from` (default: the first on disk), at most `limit`.
pub fn inspect(
    dir: &Path,
    from: Option<u64>,
    limit: u64,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let journal = open(dir)?;
    for &index in journal.snapshots() {
        writeln!(out, "snapshot after command {index}")?;
    }
    let from = from.unwrap_or(journal.first_index());
    for item in journal.commands_from(from).take(limit as usize) {
        let (index, command) = item?;
        writeln!(out, "{index:>10}  {}", describe(&command))?;
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
/// from the journal alone) and prints each book and the state's checksums.
pub fn replay(dir: &Path, full: bool, out: &mut impl Write) -> anyhow::Result<()> {
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
