//! Writing snapshots off the hot threads. The engine thread cuts its state at a
//! `CommandKind::Snapshot`, the feeds thread adds its own at the same point (the end of that
//! batch) and hands both here; this thread encodes them, writes the file beside the journal
//! (temp file, sync, rename, directory sync) and prunes what the snapshots now cover.
//!
//! A sharded market cuts every shard at the same snapshot command (sent to every shard) and
//! the feeds once the last shard's cut has arrived; each shard's engine goes beside that
//! shard's journal, shard 0's file last with the feeds and where the merged stream stood
//! ([`MERGE_SECTION`]: the index each shard was cut at). Pruning waits until the whole
//! round is written, so a crash part-way leaves the previous round whole, and keeps whole
//! rounds: the newest `keep` of shard 0's files, and in every other shard exactly the files
//! those rounds name — a shard's file of a round that failed before shard 0's (an orphan) is
//! deleted rather than counted, so it never pushes out a round recovery could fall back to.

use crate::shard_merge::MergeState;
use parking_lot::{Condvar, Mutex};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use ticker_engine::journal::{
    snapshot_file, snapshot_name, DirStorage, Journal, JournalError, SnapshotFile, SnapshotSection,
    Storage,
};
use ticker_engine::pipeline::Cut;
use ticker_engine::EngineSnapshot;
use ticker_feeds::snapshot::FeedsSnapshot;

/// Section names in a snapshot file.
pub const ENGINE_SECTION: &str = "engine";
pub const FEEDS_SECTION: &str = "feeds";
/// In shard 0's snapshot of a sharded market: the merge state (`crate::shard_merge::MergeState`).
pub const MERGE_SECTION: &str = "merge";

/// The state after one journaled command.
pub struct SnapshotJob {
    /// Journal index of the snapshot command (shard 0's, with several shards).
    pub index: u64,
    pub engine: Box<EngineSnapshot>,
    pub feeds: FeedsSnapshot,
    /// With several shards: the other shards' cuts and the merge state.
    pub shards: Option<OtherShards>,
}

/// The rest of a sharded market's snapshot round.
pub struct OtherShards {
    /// Shard 1, 2, …: the journal index each was cut at, and its engine.
    pub cuts: Vec<(u64, Box<EngineSnapshot>)>,
    /// `crate::shard_merge::MergeState`, encoded.
    pub merge: Vec<u8>,
}

/// What the writer has done, for `/metrics` and logs.
#[derive(Debug)]
pub struct SnapshotStats {
    pub written: AtomicU64,
    /// The journal index of each snapshot as it is written, for whoever awaits one.
    written_index: tokio::sync::watch::Sender<u64>,
    pub last_index: AtomicU64,
    pub last_bytes: AtomicU64,
    /// Time to encode and write the last one, in µs.
    pub last_micros: AtomicU64,
    /// Cuts superseded by a newer one before the writer, busy with an earlier one, got to
    /// them (only the newest waiting cut is worth writing).
    pub dropped: AtomicU64,
    pub failures: AtomicU64,
}

impl Default for SnapshotStats {
    fn default() -> Self {
        SnapshotStats {
            written: AtomicU64::new(0),
            written_index: tokio::sync::watch::Sender::new(0),
            last_index: AtomicU64::new(0),
            last_bytes: AtomicU64::new(0),
            last_micros: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

impl SnapshotStats {
    /// Follows the journal index of the snapshots written from now on.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.written_index.subscribe()
    }
}

/// Gathers the shards' cuts of each snapshot command (sent to every shard) until every
/// shard's has arrived. Each shard cuts the rounds in the order they were sent, so a shard's
/// k-th cut belongs to the k-th round.
pub(crate) struct CutRounds {
    waiting: Vec<std::collections::VecDeque<Cut>>,
}

impl CutRounds {
    pub(crate) fn new(shards: usize) -> Self {
        CutRounds {
            waiting: (0..shards).map(|_| Default::default()).collect(),
        }
    }

    /// Adds shard `shard`'s cut; returns the whole round, in shard order, once it is.
    pub(crate) fn add(&mut self, shard: usize, cut: Cut) -> Option<Vec<Cut>> {
        self.waiting[shard].push_back(cut);
        self.waiting.iter().all(|w| !w.is_empty()).then(|| {
            self.waiting
                .iter_mut()
                .map(|w| w.pop_front().expect("every shard has one"))
                .collect()
        })
    }
}

pub struct SnapshotWriter {
    pending: Arc<Pending>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<SnapshotStats>,
}

/// The cut waiting for the writer: at most one, the newest.
#[derive(Default)]
struct Pending {
    slot: Mutex<Slot>,
    ready: Condvar,
}

#[derive(Default)]
struct Slot {
    job: Option<SnapshotJob>,
    finished: bool,
}

impl SnapshotWriter {
    /// Starts the writer on the data directory (one per shard, shard 0 first); it keeps the
    /// newest `keep` snapshots.
    pub fn spawn(storages: Vec<DirStorage>, keep: usize) -> std::io::Result<Self> {
        let pending = Arc::new(Pending::default());
        let stats = Arc::new(SnapshotStats::default());
        let thread = {
            let (pending, stats) = (pending.clone(), stats.clone());
            std::thread::Builder::new()
                .name("ticker-snapshots".into())
                .spawn(move || {
                    let mut rounds = Rounds::default();
                    loop {
                        let job = {
                            let mut slot = pending.slot.lock();
                            loop {
                                if let Some(job) = slot.job.take() {
                                    break job;
                                }
                                if slot.finished {
                                    return;
                                }
                                pending.ready.wait(&mut slot);
                            }
                        };
                        write(&storages, keep, job, &stats, &mut rounds);
                    }
                })?
        };
        Ok(SnapshotWriter {
            pending,
            thread: Some(thread),
            stats,
        })
    }

    pub fn stats(&self) -> &Arc<SnapshotStats> {
        &self.stats
    }

    /// Hands a cut to the writer without waiting for it. A cut still waiting from before is
    /// superseded: the newest state is the one worth writing, and the last cut (a clean stop's)
    /// is always written.
    pub fn submit(&self, job: SnapshotJob) {
        let index = job.index;
        let superseded = self.pending.slot.lock().job.replace(job);
        self.pending.ready.notify_one();
        if let Some(old) = superseded {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                index = old.index,
                newer = index,
                "snapshot skipped: the writer was still busy and a newer cut came"
            );
        }
    }

    /// Writes the cut still waiting, if any, and stops.
    pub fn finish(&mut self) {
        self.pending.slot.lock().finished = true;
        self.pending.ready.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        self.finish();
    }
}

fn write(
    storages: &[DirStorage],
    keep: usize,
    job: SnapshotJob,
    stats: &SnapshotStats,
    rounds: &mut Rounds,
) {
    let started = Instant::now();
    let bytes = match write_round(storages, &job) {
        Ok(bytes) => bytes,
        Err(e) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(index = job.index, "snapshot not written: {e}");
            return;
        }
    };
    if let Some(shards) = &job.shards {
        let cuts = std::iter::once(job.index)
            .chain(shards.cuts.iter().map(|(index, _)| *index))
            .collect();
        rounds.0.insert(job.index, cuts);
    }
    let pruned = match prune(storages, keep, rounds) {
        Ok(deleted) => deleted,
        Err(e) => {
            tracing::warn!("pruning after snapshot {}: {e}", job.index);
            0
        }
    };
    let took = started.elapsed();
    stats.written.fetch_add(1, Ordering::Relaxed);
    stats.last_index.store(job.index, Ordering::Relaxed);
    stats.last_bytes.store(bytes as u64, Ordering::Relaxed);
    stats
        .last_micros
        .store(took.as_micros() as u64, Ordering::Relaxed);
    stats.written_index.send_replace(job.index);
    tracing::info!(
        index = job.index,
        bytes,
        pruned,
        "snapshot written in {:.1} ms",
        took.as_secs_f64() * 1e3
    );
}

/// The whole snapshot rounds of a sharded market: shard 0's index → the index each shard was
/// cut at. Learnt when this writer writes a round; read from shard 0's file for a round an
/// earlier run wrote.
#[derive(Default)]
struct Rounds(BTreeMap<u64, Vec<u64>>);

/// Keeps the newest `keep` snapshots (whole rounds with several shards) and what they need of
/// the journals; returns how many files went. With several shards, a shard-0 file whose
/// round cannot be read stops the pruning of the other shards (they keep more, never less).
fn prune<S: Storage>(
    storages: &[S],
    keep: usize,
    rounds: &mut Rounds,
) -> Result<usize, JournalError> {
    let kept = Journal::newest_snapshots(&storages[0], keep)?;
    let mut pruned = Journal::prune_to(&storages[0], &kept)?.len();
    if storages.len() == 1 {
        return Ok(pruned);
    }
    rounds.0.retain(|index, _| kept.contains(index));
    for &index in &kept {
        if let std::collections::btree_map::Entry::Vacant(unknown) = rounds.0.entry(index) {
            unknown.insert(round_cuts(&storages[0], index)?);
        }
    }
    let mut cuts = Vec::with_capacity(kept.len());
    for &index in &kept {
        let round = &rounds.0[&index];
        if round.len() != storages.len() {
            return Err(JournalError::BadSnapshot {
                file: storages[0].describe(&snapshot_name(index)),
                reason: format!(
                    "its round names {} shards' cuts, not {}",
                    round.len(),
                    storages.len()
                ),
            });
        }
        cuts.push(round);
    }
    for (k, storage) in storages.iter().enumerate().skip(1) {
        let mine: Vec<u64> = cuts.iter().map(|round| round[k]).collect();
        pruned += Journal::prune_to(storage, &mine)?.len();
    }
    Ok(pruned)
}

/// The index each shard was cut at in the round of shard 0's snapshot `index`.
fn round_cuts<S: Storage>(storage: &S, index: u64) -> Result<Vec<u64>, JournalError> {
    let file = snapshot_file::read(storage, index)?;
    let bad = |reason: String| JournalError::BadSnapshot {
        file: storage.describe(&snapshot_name(index)),
        reason,
    };
    let merge = file
        .section(MERGE_SECTION)
        .ok_or_else(|| bad(format!("it has no {MERGE_SECTION} section")))?;
    MergeState::decode(merge)
        .map(|state| state.cuts)
        .map_err(|e| bad(format!("the merge section does not decode: {e}")))
}

/// Writes every shard's file of a snapshot round, shard 0's last; returns the bytes written.
fn write_round(storages: &[DirStorage], job: &SnapshotJob) -> Result<usize, JournalError> {
    let Some(shards) = &job.shards else {
        return write_snapshot(&storages[0], job.index, &job.engine, &job.feeds, None);
    };
    let mut bytes = 0;
    for ((index, engine), storage) in shards.cuts.iter().zip(&storages[1..]) {
        let file = SnapshotFile {
            index: *index,
            sections: vec![engine_section(storage, *index, engine)?],
        };
        snapshot_file::write(storage, &file)?;
        bytes += file.sections[0].bytes.len();
    }
    Ok(bytes
        + write_snapshot(
            &storages[0],
            job.index,
            &job.engine,
            &job.feeds,
            Some(&shards.merge),
        )?)
}

fn engine_section(
    storage: &DirStorage,
    index: u64,
    engine: &EngineSnapshot,
) -> Result<SnapshotSection, JournalError> {
    let bytes = postcard::to_allocvec(engine).map_err(|e| JournalError::BadSnapshot {
        file: storage.describe(&snapshot_name(index)),
        reason: format!("encoding the engine failed: {e}"),
    })?;
    Ok(SnapshotSection {
        name: ENGINE_SECTION.into(),
        bytes,
    })
}

/// Encodes both halves of a snapshot cut after command `index` (and, in shard 0 of a sharded
/// market, the merge state) and writes the file durably; returns the bytes of its sections.
pub fn write_snapshot(
    storage: &DirStorage,
    index: u64,
    engine: &EngineSnapshot,
    feeds: &FeedsSnapshot,
    merge: Option<&[u8]>,
) -> Result<usize, JournalError> {
    let mut sections = vec![
        engine_section(storage, index, engine)?,
        SnapshotSection {
            name: FEEDS_SECTION.into(),
            bytes: feeds.encode(),
        },
    ];
    if let Some(merge) = merge {
        sections.push(SnapshotSection {
            name: MERGE_SECTION.into(),
            bytes: merge.to_vec(),
        });
    }
    let file = SnapshotFile { index, sections };
    snapshot_file::write(storage, &file)?;
    Ok(file.sections.iter().map(|s| s.bytes.len()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard_merge::ShardMerge;
    use ticker_engine::journal::SimStorage;

    /// Shard 0's file of a round cut at `cuts` (shard 0's index first), and the other shards'.
    fn round(storages: &[SimStorage], cuts: &[u64]) {
        let merge = ShardMerge::resume(Default::default(), 0, 0).encode_state(cuts);
        for (k, (storage, &index)) in storages.iter().zip(cuts).enumerate().rev() {
            let sections = if k == 0 {
                vec![SnapshotSection {
                    name: MERGE_SECTION.into(),
                    bytes: merge.clone(),
                }]
            } else {
                vec![]
            };
            snapshot_file::write(storage, &SnapshotFile { index, sections }).unwrap();
        }
    }

    fn orphan(storage: &SimStorage, index: u64) {
        let file = SnapshotFile {
            index,
            sections: vec![],
        };
        snapshot_file::write(storage, &file).unwrap();
    }

    #[test]
    fn pruning_keeps_whole_rounds_and_drops_a_failed_rounds_orphans() {
        let storages = [SimStorage::new(), SimStorage::new()];
        round(&storages, &[10, 7]);
        // A round that failed after shard 1's file: shard 0 never got its file.
        orphan(&storages[1], 15);
        round(&storages, &[30, 21]);
        let mut rounds = Rounds::default();
        // Two rounds kept: shard 1 keeps both rounds' files, not the orphan in their place.
        assert_eq!(prune(&storages, 2, &mut rounds).unwrap(), 1);
        assert_eq!(Journal::snapshots_in(&storages[0]).unwrap(), [10, 30]);
        assert_eq!(Journal::snapshots_in(&storages[1]).unwrap(), [7, 21]);
        // Learnt from shard 0's files (an earlier run's rounds).
        assert_eq!(rounds.0[&10], [10, 7]);
        orphan(&storages[1], 40);
        round(&storages, &[50, 44]);
        assert_eq!(prune(&storages, 1, &mut rounds).unwrap(), 5);
        assert_eq!(Journal::snapshots_in(&storages[0]).unwrap(), [50]);
        assert_eq!(Journal::snapshots_in(&storages[1]).unwrap(), [44]);
        assert_eq!(rounds.0.keys().copied().collect::<Vec<_>>(), [50]);
    }

    #[test]
    fn a_round_shard_0_cannot_read_prunes_no_other_shard() {
        let storages = [SimStorage::new(), SimStorage::new()];
        round(&storages, &[10, 7]);
        orphan(&storages[0], 30);
        orphan(&storages[1], 21);
        let mut rounds = Rounds::default();
        assert!(prune(&storages, 1, &mut rounds).is_err());
        assert_eq!(Journal::snapshots_in(&storages[0]).unwrap(), [30]);
        assert_eq!(Journal::snapshots_in(&storages[1]).unwrap(), [7, 21]);
    }

    fn cut(index: u64) -> Cut {
        Cut {
            index,
            engine: Box::new(ticker_engine::Engine::default().snapshot()),
        }
    }

    #[test]
    fn a_round_is_whole_once_every_shard_cut_and_rounds_keep_their_order() {
        let mut rounds = CutRounds::new(3);
        assert!(rounds.add(1, cut(10)).is_none());
        assert!(rounds.add(1, cut(20)).is_none(), "shard 1 cut twice");
        assert!(rounds.add(0, cut(11)).is_none());
        let first = rounds.add(2, cut(12)).expect("every shard cut once");
        assert_eq!(
            first.iter().map(|c| c.index).collect::<Vec<_>>(),
            [11, 10, 12]
        );
        assert!(rounds.add(2, cut(22)).is_none());
        let second = rounds.add(0, cut(21)).expect("the second round");
        assert_eq!(
            second.iter().map(|c| c.index).collect::<Vec<_>>(),
            [21, 20, 22]
        );
        // One shard: every cut is a round.
        let mut one = CutRounds::new(1);
        assert_eq!(one.add(0, cut(5)).map(|r| r.len()), Some(1));
    }
}
