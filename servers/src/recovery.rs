//! Starting from the data directory: the newest usable snapshot, then every journaled command
//! after it replayed through the engine and the feeds, before any client connects. The market
//! then continues where it stopped: the same books and order ids, the same event sequence,
//! the same topic sequences and resume history.
//!
//! ```text
//!  snapshot n ──► Engine::restore ─┐
//!             └─► MarketData::restore ─┐
//!  journal n+1.. ──► engine.apply ──► feeds.apply (publishing into the hub's history)
//!                                        └─► writer appends from the last index + 1
//! ```
//!
//! A snapshot that does not read back (checksum, format, or contents the engine or the feeds
//! refuse) is skipped for an older one, as long as the journal still reaches back to it.

use crate::snapshot_writer::{ENGINE_SECTION, FEEDS_SECTION};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};
use ticker_engine::journal::{
    DirLock, DirStorage, Journal, JournalConfig, JournalError, JournalWriter, Storage, TornTail,
};
use ticker_engine::{Engine, EngineConfig, EngineSnapshot, Event};
use ticker_feeds::snapshot::FeedsSnapshot;
use ticker_feeds::{FeedsConfig, Hub, Instruments, MarketData};

/// Events handed from the engine to the feeds at once during replay (at a command boundary,
/// as the engine thread's batches are).
const REPLAY_BATCH_EVENTS: usize = 4096;
/// Batches the engine may run ahead of the feeds during replay.
const REPLAY_BATCHES_IN_FLIGHT: usize = 8;

/// What recovery found and did, for the start-up log.
#[derive(Debug, Clone)]
pub struct RecoveryReport {
    /// The snapshot started from, if any.
    pub snapshot: Option<u64>,
    /// Newer snapshots that could not be used, and why.
    pub skipped: Vec<String>,
    /// Commands replayed from the journal after the snapshot.
    pub replayed: u64,
    /// Index of the last command recovered (0 for an empty data directory).
    pub last_index: u64,
    /// The end of the journal cut off (a crash mid-write), if any.
    pub torn: Option<TornTail>,
    /// Reading and restoring the snapshot.
    pub restore_time: Duration,
    /// Replaying the journal through the engine and the feeds.
    pub replay_time: Duration,
}

impl std::fmt::Display for RecoveryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.snapshot {
            Some(n) => write!(f, "snapshot at command {n} ({:?})", self.restore_time)?,
            None => write!(f, "no snapshot")?,
        }
        write!(
            f,
            ", {} journaled commands replayed ({:?}); continuing after command {}",
            self.replayed, self.replay_time, self.last_index
        )
    }
}

/// A recovered market of any number of shards, ready to run.
pub struct RecoveredMarket {
    /// In shard order.
    pub engines: Vec<Engine>,
    pub feeds: MarketData,
    pub restored: Restored,
}

/// What a recovered market goes on from besides its engines and feeds.
pub struct Restored {
    /// Each shard's journal, positioned after its last command.
    pub writers: Vec<JournalWriter<DirStorage>>,
    /// Held while the market runs: no other process may use the directories.
    pub locks: Vec<DirLock>,
    pub report: RecoveryReport,
    /// Several shards: the merged `seq` of the last event (0 with one shard: the engine's
    /// own `seq`s are the stream's).
    pub merged_seq: u64,
    /// The merge ticket the next published run takes.
    pub next_ticket: u64,
    /// The correlation id the next command gets.
    pub next_corr: u64,
    /// Several shards: the merge's fan-in, holding the commands of `unfinished` only.
    pub fan_in: ticker_engine::shard::FanIn,
    /// Commands sent to every shard that a crash left in some shards' journals only: the
    /// market sends each to the shards that lack it before anything else.
    pub unfinished: Vec<crate::shard_recovery::Unfinished>,
}

/// Recovers a market of `shards` shards from `config.dir` (`crate::shard_recovery` for
/// several), refusing a directory written with another number of shards.
pub fn recover_market(
    config: &JournalConfig,
    shards: usize,
    engine_config: &EngineConfig,
    feeds_config: &FeedsConfig,
    hub: Arc<Hub>,
    instruments: Arc<Instruments>,
    replayed: &mut dyn FnMut(&[Event]),
) -> Result<RecoveredMarket, JournalError> {
    if shards > 1 {
        return crate::shard_recovery::recover_shards(
            config,
            shards,
            engine_config,
            feeds_config,
            hub,
            instruments,
            replayed,
        );
    }
    crate::shard_recovery::check_layout(&config.dir, 1)?;
    let r = recover_with(
        config,
        engine_config,
        feeds_config,
        hub,
        instruments,
        replayed,
    )?;
    Ok(RecoveredMarket {
        engines: vec![r.engine],
        feeds: r.feeds,
        restored: Restored {
            writers: vec![r.writer],
            locks: vec![r.lock],
            report: r.report,
            merged_seq: 0,
            next_ticket: ticker_engine::pipeline::FIRST_TICKET,
            next_corr: 1,
            fan_in: Default::default(),
            unfinished: Vec::new(),
        },
    })
}

/// The recovered market of one engine, ready to run.
pub struct Recovered {
    pub engine: Engine,
    pub feeds: MarketData,
    pub writer: JournalWriter<DirStorage>,
    /// Held while the market runs: no other process may use the directory.
    pub lock: DirLock,
    pub report: RecoveryReport,
}

/// Opens `config.dir` (creating it), locks it, and rebuilds the engine and the feeds from
/// it. The feeds publish into `hub` as they replay, so its history holds the replayed tail.
pub fn recover(
    config: &JournalConfig,
    engine_config: &EngineConfig,
    feeds_config: &FeedsConfig,
    hub: Arc<Hub>,
    instruments: Arc<Instruments>,
) -> Result<Recovered, JournalError> {
    recover_with(
        config,
        engine_config,
        feeds_config,
        hub,
        instruments,
        &mut |_| {},
    )
}

/// [`recover`], handing `replayed` every event the journal's tail produces, in order, after
/// the feeds have applied it (a matcher republishes those the bus has not got).
pub fn recover_with(
    config: &JournalConfig,
    engine_config: &EngineConfig,
    feeds_config: &FeedsConfig,
    hub: Arc<Hub>,
    instruments: Arc<Instruments>,
    replayed: &mut dyn FnMut(&[Event]),
) -> Result<Recovered, JournalError> {
    let storage = DirStorage::new(&config.dir).map_err(JournalError::io(format!(
        "creating the data directory {}",
        config.dir.display()
    )))?;
    let lock = storage.lock()?;
    let journal = Journal::open(storage, config.open)?;
    let started = Instant::now();
    let mut skipped = Vec::new();
    let mut restored = None;
    for &index in journal.snapshots().iter().rev() {
        match restore(&journal, index, engine_config) {
            Ok(parts) => {
                restored = Some((index, parts));
                break;
            }
            Err(e) => skipped.push(e.to_string()),
        }
    }
    let (start, engine, mut feeds) = match restored {
        Some((index, (engine, feeds_snapshot))) => {
            let feeds = MarketData::restore(feeds_config.clone(), hub, instruments, feeds_snapshot)
                .map_err(|e| JournalError::BadSnapshot {
                    file: journal
                        .storage()
                        .describe(&ticker_engine::journal::snapshot_name(index)),
                    reason: format!("the feeds refuse it: {e}"),
                })?;
            (index + 1, engine, feeds)
        }
        None => (
            1,
            Engine::new(engine_config.clone()),
            MarketData::new(feeds_config.clone(), hub, instruments),
        ),
    };
    if journal.first_index() > start {
        return Err(JournalError::NoSnapshotCovers {
            first: journal.first_index(),
        });
    }
    let restore_time = started.elapsed();
    let started = Instant::now();
    let (replayed, engine) = replay(&journal, start, engine, &mut feeds, replayed)?;
    let replay_time = started.elapsed();
    let last_index = journal.last_index().max(start - 1);
    let torn = journal.torn_tail().cloned();
    let writer = journal.into_writer(last_index + 1, config.segments())?;
    Ok(Recovered {
        engine,
        feeds,
        writer,
        lock,
        report: RecoveryReport {
            snapshot: (start > 1).then_some(start - 1),
            skipped,
            replayed,
            last_index,
            torn,
            restore_time,
            replay_time,
        },
    })
}

/// Replays the journal from command `start` through the engine (on a thread of its own) and
/// the feeds (on this one), so the two overlap on two cores. Returns the commands replayed and
/// the engine.
fn replay(
    journal: &Journal<DirStorage>,
    start: u64,
    mut engine: Engine,
    feeds: &mut MarketData,
    on_events: &mut dyn FnMut(&[Event]),
) -> Result<(u64, Engine), JournalError> {
    let (full_tx, full_rx) = sync_channel::<Vec<Event>>(REPLAY_BATCHES_IN_FLIGHT);
    let (empty_tx, empty_rx) = sync_channel::<Vec<Event>>(REPLAY_BATCHES_IN_FLIGHT + 1);
    std::thread::scope(|s| {
        let matching = s.spawn(move || -> Result<(u64, Engine), JournalError> {
            let mut replayed = 0;
            let mut events = Vec::with_capacity(2 * REPLAY_BATCH_EVENTS);
            for item in journal.commands_from(start) {
                let (_, command) = item?;
                engine.apply(&command, &mut events);
                replayed += 1;
                // Handed over at a command boundary, as the engine thread's batches are.
                if events.len() >= REPLAY_BATCH_EVENTS {
                    let next = empty_rx
                        .try_recv()
                        .unwrap_or_else(|_| Vec::with_capacity(2 * REPLAY_BATCH_EVENTS));
                    if full_tx.send(std::mem::replace(&mut events, next)).is_err() {
                        break;
                    }
                }
            }
            let _ = full_tx.send(events);
            Ok((replayed, engine))
        });
        for mut events in full_rx {
            feeds.apply(&events);
            on_events(&events);
            events.clear();
            // The engine side may have finished: then the buffer is simply dropped.
            let _ = empty_tx.try_send(events);
        }
        matching
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Reads snapshot `index` and restores the engine from it; the feeds' part is decoded (and
/// checked) but restored by the caller, into the hub.
fn restore(
    journal: &Journal<DirStorage>,
    index: u64,
    engine_config: &EngineConfig,
) -> Result<(Engine, FeedsSnapshot), JournalError> {
    let file = journal.read_snapshot(index)?;
    let name = journal
        .storage()
        .describe(&ticker_engine::journal::snapshot_name(index));
    let bad = |reason: String| JournalError::BadSnapshot {
        file: name.clone(),
        reason,
    };
    let engine_bytes = file
        .section(ENGINE_SECTION)
        .ok_or_else(|| bad(format!("it has no {ENGINE_SECTION} section")))?;
    let feeds_bytes = file
        .section(FEEDS_SECTION)
        .ok_or_else(|| bad(format!("it has no {FEEDS_SECTION} section")))?;
    let snapshot: EngineSnapshot = postcard::from_bytes(engine_bytes)
        .map_err(|e| bad(format!("the engine section does not decode: {e}")))?;
    let engine = Engine::restore(engine_config.clone(), &snapshot)
        .map_err(|e| bad(format!("the engine refuses it: {e}")))?;
    let feeds = FeedsSnapshot::decode(feeds_bytes)
        .map_err(|e| bad(format!("the feeds section does not decode: {e}")))?;
    // Both halves were cut at the same command, so they end at the same event.
    if feeds.last_seq() != snapshot.last_seq {
        return Err(bad(format!(
            "its feeds end at event {} but its engine at event {}",
            feeds.last_seq(),
            snapshot.last_seq
        )));
    }
    Ok((engine, feeds))
}
