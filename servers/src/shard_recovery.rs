//! Starting a sharded market (`market.shards` > 1) from its data directory: every shard's
//! journal in `shard-K/`, the newest snapshot round every shard has, then every shard's
//! journaled runs after its cut, interleaved by their merge tickets — the order the market's
//! feeds took them in — and merged into one stream exactly as the running market merged them
//! ([`crate::shard_merge`]). The market then goes on with the same books, the same merged
//! `seq`s, topic sequences and resume history.
//!
//! ```text
//!  shard-0/ snapshot n0 (engine, feeds, merge: cuts n0, n1, …) ──► engine 0, feeds, merge
//!  shard-1/ snapshot n1 (engine) ──────────────────────────────► engine 1
//!  shard-0/ journal n0+1.. ─┐
//!  shard-1/ journal n1+1.. ─┴─ by ticket ─► engine K ─► merge ─► feeds (runs after the
//!                                                                 feeds' cut only)
//! ```
//!
//! The feeds were cut when the round's last shard cut arrived, so runs with tickets up to
//! then are in the feeds already: they go through their engine only. A round any of whose
//! files does not read back is skipped for an older one.

use crate::recovery::{RecoveredMarket, RecoveryReport, Restored};
use crate::shard_merge::{MergeState, ShardMerge};
use crate::snapshot_writer::{ENGINE_SECTION, FEEDS_SECTION, MERGE_SECTION};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::Instant;
use ticker_engine::journal::{
    snapshot_name, DirStorage, Journal, JournalConfig, JournalError, RecordsFrom, Run, Storage,
};
use ticker_engine::shard::{route, FanIn, Shard};
use ticker_engine::{Command, Correlation, Engine, EngineConfig, EngineSnapshot, Event};
use ticker_feeds::snapshot::FeedsSnapshot;
use ticker_feeds::{FeedsConfig, Hub, Instruments, MarketData};

/// Merged events handed to the feeds thread at once during replay.
const REPLAY_BATCH_EVENTS: usize = 4096;
const REPLAY_BATCHES_IN_FLIGHT: usize = 8;

/// Shard `k`'s directory inside the data directory.
pub fn shard_dir(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("shard-{k}"))
}

/// The shard directories a data directory holds, and whether it holds a one-engine journal
/// (files of its own).
fn layout(dir: &Path) -> std::io::Result<(usize, bool)> {
    let mut shards = 0;
    let mut own = false;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, false)),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name
            .strip_prefix("shard-")
            .is_some_and(|k| k.parse::<usize>().is_ok())
        {
            shards += 1;
        } else if name.ends_with(".journal") || name.ends_with(".snapshot") {
            own = true;
        }
    }
    Ok((shards, own))
}

/// How many shards' journals a data directory holds: one per `shard-K` subdirectory, 0 when
/// it has none (a one-shard market's journal, if any, is in the directory itself). Files of a
/// one-shard journal beside shard directories are no one market's, so that is an error.
pub fn shards_in(dir: &Path) -> std::io::Result<usize> {
    match layout(dir)? {
        (shards, true) if shards > 0 => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} holds both a one-shard journal and {shards} shard directories",
                dir.display()
            ),
        )),
        (shards, _) => Ok(shards),
    }
}

/// Refuses a data directory written by a market of another number of shards: instruments
/// would land on other shards than their journals.
pub fn check_layout(dir: &Path, shards: usize) -> Result<(), JournalError> {
    let (found, own) = layout(dir).map_err(JournalError::io(format!(
        "listing the data directory {}",
        dir.display()
    )))?;
    let wrong = match (shards, found, own) {
        (1, 0, _) => None,
        (1, n, _) => Some(format!("a market of {n} shards")),
        (_, _, true) => Some("a market of one shard".to_string()),
        (n, found, false) if found == 0 || found == n => None,
        (_, found, false) => Some(format!("a market of {found} shards")),
    };
    match wrong {
        None => Ok(()),
        Some(writer) => Err(JournalError::Io {
            context: format!("opening the data directory {}", dir.display()),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "it was written by {writer}, and this market has market.shards = {shards}: \
                     start with the number of shards it was written with (the shard of an \
                     instrument depends on it), or use another data directory"
                ),
            ),
        }),
    }
}

/// Opens (creating) and locks `config.dir/shard-K` for every shard and rebuilds the engines,
/// the feeds and the merge from them. The feeds publish into `hub` as they replay;
/// `replayed` gets every merged event the journals' tails produce, in order.
pub fn recover_shards(
    config: &JournalConfig,
    shards: usize,
    engine_config: &EngineConfig,
    feeds_config: &FeedsConfig,
    hub: Arc<Hub>,
    instruments: Arc<Instruments>,
    replayed: &mut dyn FnMut(&[Event]),
) -> Result<RecoveredMarket, JournalError> {
    check_layout(&config.dir, shards)?;
    let mut journals = Vec::with_capacity(shards);
    let mut locks = Vec::with_capacity(shards);
    for k in 0..shards {
        let dir = shard_dir(&config.dir, k);
        let storage = DirStorage::new(&dir).map_err(JournalError::io(format!(
            "creating the shard directory {}",
            dir.display()
        )))?;
        locks.push(storage.lock()?);
        journals.push(Journal::open(storage, config.open)?);
    }
    let engine_config_of = |k: usize| EngineConfig {
        shard: Shard::new(k, shards).expect("shard counts are checked at start"),
        ..engine_config.clone()
    };
    let started = Instant::now();
    let mut skipped = Vec::new();
    let mut restored = None;
    for &index in journals[0].snapshots().iter().rev() {
        match restore_round(&journals, index, &engine_config_of) {
            Ok(round) => {
                restored = Some((index, round));
                break;
            }
            Err(e) => skipped.push(e.to_string()),
        }
    }
    let (engines, mut feeds, state) = match restored {
        Some((index, (engines, feeds_snapshot, state))) => {
            let feeds = MarketData::restore(feeds_config.clone(), hub, instruments, feeds_snapshot)
                .map_err(|e| JournalError::BadSnapshot {
                    file: journals[0].storage().describe(&snapshot_name(index)),
                    reason: format!("the feeds refuse it: {e}"),
                })?;
            (engines, feeds, state)
        }
        None => (
            (0..shards)
                .map(|k| Engine::new(engine_config_of(k)))
                .collect(),
            MarketData::new(feeds_config.clone(), hub, instruments),
            MergeState {
                ticket: 0,
                seq: 0,
                cuts: vec![0; shards],
                fan_in: FanIn::default(),
            },
        ),
    };
    for (journal, &cut) in journals.iter().zip(&state.cuts) {
        if journal.first_index() > cut + 1 {
            return Err(JournalError::NoSnapshotCovers {
                first: journal.first_index(),
            });
        }
    }
    let restore_time = started.elapsed();
    let started = Instant::now();
    let cuts = state.cuts.clone();
    let feeds_ticket = state.ticket;
    let merge = ShardMerge::resume(Arc::new(Mutex::new(state.fan_in)), state.seq, state.ticket);
    let mut replay = replay(
        &journals,
        &cuts,
        MergedReplay::resume(engines, merge),
        feeds_ticket,
        &mut feeds,
        replayed,
    )?;
    let replay_time = started.elapsed();
    let mut writers = Vec::with_capacity(shards);
    let mut last_index = 0;
    let mut torn = None;
    for (journal, &cut) in journals.into_iter().zip(&cuts) {
        let last = journal.last_index().max(cut);
        last_index += last;
        torn = torn.or_else(|| journal.torn_tail().cloned());
        writers.push(journal.into_writer(last + 1, config.segments())?);
    }
    let snapshot_total: u64 = cuts.iter().sum();
    let (unfinished, fan_in) = replay.take_unfinished();
    let (seq, commands, max_ticket, max_corr) = (
        replay.seq(),
        replay.commands,
        replay.max_ticket,
        replay.max_corr,
    );
    Ok(RecoveredMarket {
        engines: replay.into_engines(),
        feeds,
        restored: Restored {
            writers,
            locks,
            report: RecoveryReport {
                snapshot: (snapshot_total > 0).then_some(snapshot_total),
                skipped,
                replayed: commands,
                last_index,
                torn,
                restore_time,
                replay_time,
            },
            merged_seq: seq,
            next_ticket: max_ticket.max(feeds_ticket) + 1,
            // Above every correlation id the journals hold, so a command of this run never
            // shares one with a command of an earlier run still folding in a later replay.
            next_corr: max_corr + 1,
            fan_in,
            unfinished,
        },
    })
}

/// Reads the snapshot round whose shard-0 file is at `index`: every shard's engine, the
/// feeds and the merge state.
pub(crate) fn restore_round(
    journals: &[Journal<DirStorage>],
    index: u64,
    engine_config_of: &dyn Fn(usize) -> EngineConfig,
) -> Result<(Vec<Engine>, FeedsSnapshot, MergeState), JournalError> {
    let file = journals[0].read_snapshot(index)?;
    let name = journals[0].storage().describe(&snapshot_name(index));
    let bad = |file: &str, reason: String| JournalError::BadSnapshot {
        file: file.to_string(),
        reason,
    };
    let section = |s: &'static str| {
        file.section(s)
            .ok_or_else(|| bad(&name, format!("it has no {s} section")))
    };
    let state = MergeState::decode(section(MERGE_SECTION)?)
        .map_err(|e| bad(&name, format!("the merge section does not decode: {e}")))?;
    if state.cuts.len() != journals.len() || state.cuts[0] != index {
        return Err(bad(
            &name,
            format!(
                "its merge section names cuts {:?}, not {} shards' starting at {index}",
                state.cuts,
                journals.len()
            ),
        ));
    }
    let feeds = FeedsSnapshot::decode(section(FEEDS_SECTION)?)
        .map_err(|e| bad(&name, format!("the feeds section does not decode: {e}")))?;
    let mut engines = Vec::with_capacity(journals.len());
    for (k, (journal, &cut)) in journals.iter().zip(&state.cuts).enumerate() {
        let (file, name) = if k == 0 {
            (None, name.clone())
        } else {
            (
                Some(journal.read_snapshot(cut)?),
                journal.storage().describe(&snapshot_name(cut)),
            )
        };
        let bytes = match &file {
            None => section(ENGINE_SECTION)?,
            Some(f) => f
                .section(ENGINE_SECTION)
                .ok_or_else(|| bad(&name, format!("it has no {ENGINE_SECTION} section")))?,
        };
        let snapshot: EngineSnapshot = postcard::from_bytes(bytes)
            .map_err(|e| bad(&name, format!("the engine section does not decode: {e}")))?;
        let engine = Engine::restore(engine_config_of(k), &snapshot)
            .map_err(|e| bad(&name, format!("the engine refuses it: {e}")))?;
        engines.push(engine);
    }
    Ok((engines, feeds, state))
}

/// Every shard's journaled runs after its cut, in the order the market's feeds took them: by
/// merge ticket, a run without one (it published nothing, so its place among the other
/// shards' runs changes no event) as soon as it is at the head of its shard's journal.
pub struct RunsInTicketOrder<'a> {
    runs: Vec<std::iter::Peekable<RecordsFrom<'a, DirStorage>>>,
}

/// The runs of `journals[k]` after command `cuts[k]`, for every shard `k`, in ticket order.
pub fn runs_in_ticket_order<'a>(
    journals: &'a [Journal<DirStorage>],
    cuts: &[u64],
) -> RunsInTicketOrder<'a> {
    RunsInTicketOrder {
        runs: journals
            .iter()
            .zip(cuts)
            .map(|(j, &cut)| j.records_from(cut + 1).peekable())
            .collect(),
    }
}

impl Iterator for RunsInTicketOrder<'_> {
    /// The shard and its run.
    type Item = Result<(usize, Run), JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut next: Option<(u64, usize)> = None;
        for (k, shard_runs) in self.runs.iter_mut().enumerate() {
            let ticket = match shard_runs.peek() {
                None => continue,
                Some(Ok(run)) => run.ticket.unwrap_or(0),
                Some(Err(_)) => return shard_runs.next().map(|r| r.map(|run| (k, run))),
            };
            if next.is_none_or(|(t, _)| ticket < t) {
                next = Some((ticket, k));
            }
        }
        let (_, k) = next?;
        self.runs[k].next().map(|run| run.map(|run| (k, run)))
    }
}

/// The shards' engines and the merge, replaying journaled runs as the market ran them.
pub struct MergedReplay {
    engines: Vec<Engine>,
    merge: ShardMerge,
    events: Vec<Event>,
    /// Commands applied.
    pub commands: u64,
    /// The highest merge ticket replayed.
    pub max_ticket: u64,
    /// The highest correlation id replayed or still folding.
    pub max_corr: u64,
    /// Commands sent to every shard that may not have all their outcomes merged, with the
    /// shards whose copies were replayed (a bit each). Such commands reach every shard in one
    /// order (`ShardedIngress`), so one still folding at the snapshot round had no copy before
    /// any shard's cut: the copies replayed are all the copies there are.
    in_flight: HashMap<Correlation, (Command, u64)>,
}

/// A command sent to every shard that a crash left in the journals of some shards only (its
/// caller was never answered): a start sends it to the others, so every shard has it.
#[derive(Debug, Clone)]
pub struct Unfinished {
    pub command: Command,
    /// The shards whose journals lack it, ascending.
    pub missing: Vec<usize>,
}

impl MergedReplay {
    /// Engines of a market that starts from nothing (`Engine::new` of each shard's config).
    pub fn new(engines: Vec<Engine>) -> Self {
        Self::resume(engines, ShardMerge::resume(Default::default(), 0, 0))
    }

    /// Engines restored from a snapshot round, going on with its merge.
    pub(crate) fn resume(engines: Vec<Engine>, merge: ShardMerge) -> Self {
        let max_corr = merge.fan_in().lock().max_pending().unwrap_or(0);
        MergedReplay {
            engines,
            merge,
            events: Vec::with_capacity(REPLAY_BATCH_EVENTS),
            commands: 0,
            max_ticket: 0,
            max_corr,
            in_flight: HashMap::new(),
        }
    }

    /// Applies one run of `shard` through its engine. With `merged`, the run's events are
    /// merged — renumbered and folded as the market's feeds thread did — and appended to it;
    /// without, they were merged before the feeds were cut and only the engine moves.
    pub fn apply(&mut self, shard: usize, run: &Run, merged: Option<&mut Vec<Event>>) {
        let shards = self.engines.len();
        let ticket = run.ticket.unwrap_or(0);
        self.max_ticket = self.max_ticket.max(ticket);
        for (_, command) in &run.commands {
            self.max_corr = self.max_corr.max(command.corr);
            // As its submitter told the fan-in, before its first copy went in.
            let outcomes = route(shards, &command.kind).outcomes(&command.kind, shards);
            if outcomes > 1 {
                // A run the feeds had merged before their cut is in the snapshot's fan-in
                // already; its copy still counts as one a shard has.
                if merged.is_some() {
                    let mut fan_in = self.merge.fan_in().lock();
                    if !fan_in.is_pending(command.corr) {
                        fan_in.expect(command.corr, outcomes);
                    }
                }
                let copies = self
                    .in_flight
                    .entry(command.corr)
                    .or_insert_with(|| (command.clone(), 0));
                copies.1 |= 1 << shard;
            }
            self.engines[shard].apply(command, &mut self.events);
            self.commands += 1;
        }
        if let Some(merged) = merged {
            merged.extend_from_slice(self.merge.merge(ticket, &mut self.events));
            // Only this run's commands can have been completed by it.
            let fan_in = self.merge.fan_in().lock();
            for (_, command) in &run.commands {
                if !fan_in.is_pending(command.corr) {
                    self.in_flight.remove(&command.corr);
                }
            }
        }
        self.events.clear();
    }

    /// The commands sent to every shard that only some shards' journals hold, and the merge's
    /// fan-in kept for them alone (so their missing outcomes fold as if they had come late).
    /// One the fan-in still waits for that no shard's journal holds never ran anywhere: it is
    /// dropped, like any command a crash lost before its journal write.
    pub(crate) fn take_unfinished(&mut self) -> (Vec<Unfinished>, FanIn) {
        let shards = self.engines.len();
        let mut fan_in = std::mem::take(&mut *self.merge.fan_in().lock());
        let mut unfinished: Vec<Unfinished> = self
            .in_flight
            .drain()
            .filter(|(corr, _)| fan_in.is_pending(*corr))
            .map(|(_, (command, seen))| Unfinished {
                command,
                missing: (0..shards).filter(|k| seen & (1 << k) == 0).collect(),
            })
            // Every shard has it yet its outcomes did not all fold: nothing to send, and
            // nothing more will come for the fan-in to wait for.
            .filter(|u| !u.missing.is_empty())
            .collect();
        unfinished.sort_by_key(|u| u.command.corr);
        let keep: HashSet<Correlation> = unfinished.iter().map(|u| u.command.corr).collect();
        fan_in.retain(|corr| keep.contains(&corr));
        (unfinished, fan_in)
    }

    /// The engines, in shard order.
    pub fn engines(&self) -> &[Engine] {
        &self.engines
    }

    /// The merged `seq` of the last event.
    pub fn seq(&self) -> u64 {
        self.merge.seq()
    }

    pub fn into_engines(self) -> Vec<Engine> {
        self.engines
    }
}

/// Replays every shard's runs after its cut, by ticket, through its engine and the merge (on
/// a thread of its own), handing the merged events of runs after `feeds_ticket` to the feeds
/// (on this one).
fn replay(
    journals: &[Journal<DirStorage>],
    cuts: &[u64],
    mut replay: MergedReplay,
    feeds_ticket: u64,
    feeds: &mut MarketData,
    on_events: &mut dyn FnMut(&[Event]),
) -> Result<MergedReplay, JournalError> {
    let (full_tx, full_rx) = sync_channel::<Vec<Event>>(REPLAY_BATCHES_IN_FLIGHT);
    std::thread::scope(|s| {
        let matching = s.spawn(move || -> Result<MergedReplay, JournalError> {
            let mut merged = Vec::with_capacity(2 * REPLAY_BATCH_EVENTS);
            for item in runs_in_ticket_order(journals, cuts) {
                let (shard, run) = item?;
                let to_feeds = run.ticket.unwrap_or(0) > feeds_ticket;
                replay.apply(shard, &run, to_feeds.then_some(&mut merged));
                if merged.len() >= REPLAY_BATCH_EVENTS {
                    let full =
                        std::mem::replace(&mut merged, Vec::with_capacity(2 * REPLAY_BATCH_EVENTS));
                    if full_tx.send(full).is_err() {
                        break;
                    }
                }
            }
            let _ = full_tx.send(merged);
            Ok(replay)
        });
        for events in full_rx {
            feeds.apply(&events);
            on_events(&events);
        }
        matching
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ticker_engine::shard::Shard;
    use ticker_engine::CommandKind;

    fn shard_engines(count: usize) -> Vec<Engine> {
        (0..count)
            .map(|k| {
                Engine::new(EngineConfig {
                    shard: Shard::new(k, count).unwrap(),
                    ..EngineConfig::default()
                })
            })
            .collect()
    }

    /// A kill switch still folding at the snapshot round had reached shard 0 after its cut
    /// (in a run the feeds had merged before theirs) and never shard 1: the replay names it
    /// for shard 1. One still folding that no shard's journal holds never ran: dropped.
    #[test]
    fn a_command_still_folding_at_the_snapshot_is_completed_where_it_is_missing() {
        let mut snapshot_fan_in = FanIn::new();
        snapshot_fan_in.expect(5, 2);
        snapshot_fan_in.expect(6, 2);
        let merge = ShardMerge::resume(Arc::new(Mutex::new(snapshot_fan_in)), 40, 9);
        let mut replay = MergedReplay::resume(shard_engines(2), merge);
        let kill = Command::new(5, 5, CommandKind::DisableAccount { account: 3 });
        let run = Run {
            ticket: Some(8),
            commands: vec![(12, kill.clone())],
        };
        replay.apply(0, &run, None);
        let (unfinished, fan_in) = replay.take_unfinished();
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].command, kill);
        assert_eq!(unfinished[0].missing, [1]);
        assert!(
            fan_in.is_pending(5),
            "its last outcome will fold as if late"
        );
        assert!(!fan_in.is_pending(6), "never ran: nothing to wait for");
    }

    #[test]
    fn a_data_directory_of_another_shard_count_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        check_layout(dir.path(), 1).unwrap();
        check_layout(dir.path(), 4).unwrap();
        std::fs::create_dir(shard_dir(dir.path(), 0)).unwrap();
        std::fs::create_dir(shard_dir(dir.path(), 1)).unwrap();
        check_layout(dir.path(), 2).unwrap();
        let refused = check_layout(dir.path(), 4).unwrap_err().to_string();
        assert!(refused.contains("a market of 2 shards"), "{refused}");
        let refused = check_layout(dir.path(), 1).unwrap_err().to_string();
        assert!(refused.contains("market.shards = 1"), "{refused}");
        let one = tempfile::tempdir().unwrap();
        std::fs::write(
            one.path().join(ticker_engine::journal::segment_name(1)),
            b"",
        )
        .unwrap();
        check_layout(one.path(), 1).unwrap();
        let refused = check_layout(one.path(), 2).unwrap_err().to_string();
        assert!(refused.contains("a market of one shard"), "{refused}");
    }

    #[test]
    fn the_shards_a_data_directory_holds_are_its_shard_directories() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(shards_in(&dir.path().join("absent")).unwrap(), 0);
        assert_eq!(shards_in(dir.path()).unwrap(), 0);
        for k in 0..3 {
            std::fs::create_dir(shard_dir(dir.path(), k)).unwrap();
        }
        std::fs::create_dir(dir.path().join("shard-x")).unwrap();
        assert_eq!(shards_in(dir.path()).unwrap(), 3);
        std::fs::write(
            dir.path().join(ticker_engine::journal::snapshot_name(4)),
            b"",
        )
        .unwrap();
        let mixed = shards_in(dir.path()).unwrap_err().to_string();
        assert!(mixed.contains("both"), "{mixed}");
    }
}
