//! Writing snapshots off the hot threads. The engine thread cuts its state at a
//! `CommandKind::Snapshot`, the feeds thread adds its own at the same point (the end of that
//! batch) and hands both here; this thread encodes them, writes the file beside the journal
//! (temp file, sync, rename, directory sync) and prunes what the snapshots now cover.

use parking_lot::{Condvar, Mutex};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;
use ticker_engine::journal::{
    snapshot_file, snapshot_name, DirStorage, Journal, JournalError, SnapshotFile, SnapshotSection,
    Storage,
};
use ticker_engine::EngineSnapshot;
use ticker_feeds::snapshot::FeedsSnapshot;

/// Section names in a snapshot file.
pub const ENGINE_SECTION: &str = "engine";
pub const FEEDS_SECTION: &str = "feeds";

/// The state after one journaled command.
pub struct SnapshotJob {
    /// Journal index of the snapshot command.
    pub index: u64,
    pub engine: Box<EngineSnapshot>,
    pub feeds: FeedsSnapshot,
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
    /// Starts the writer on the data directory; it keeps the newest `keep` snapshots.
    pub fn spawn(storage: DirStorage, keep: usize) -> std::io::Result<Self> {
        let pending = Arc::new(Pending::default());
        let stats = Arc::new(SnapshotStats::default());
        let thread = {
            let (pending, stats) = (pending.clone(), stats.clone());
            std::thread::Builder::new()
                .name("ticker-snapshots".into())
                .spawn(move || loop {
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
                    write(&storage, keep, job, &stats);
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

fn write(storage: &DirStorage, keep: usize, job: SnapshotJob, stats: &SnapshotStats) {
    let started = Instant::now();
    let bytes = match write_snapshot(storage, job.index, &job.engine, &job.feeds) {
        Ok(bytes) => bytes,
        Err(e) => {
            stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(index = job.index, "snapshot not written: {e}");
            return;
        }
    };
    let pruned = match Journal::prune(storage, keep) {
        Ok(deleted) => deleted.len(),
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

/// Encodes both halves of a snapshot cut after command `index` and writes the file durably;
/// returns the bytes of its sections.
pub fn write_snapshot(
    storage: &DirStorage,
    index: u64,
    engine: &EngineSnapshot,
    feeds: &FeedsSnapshot,
) -> Result<usize, JournalError> {
    let engine = postcard::to_allocvec(engine).map_err(|e| JournalError::BadSnapshot {
        file: storage.describe(&snapshot_name(index)),
        reason: format!("encoding the engine failed: {e}"),
    })?;
    let file = SnapshotFile {
        index,
        sections: vec![
            SnapshotSection {
                name: ENGINE_SECTION.into(),
                bytes: engine,
            },
            SnapshotSection {
                name: FEEDS_SECTION.into(),
                bytes: feeds.encode(),
            },
        ],
    };
    snapshot_file::write(storage, &file)?;
    Ok(file.sections.iter().map(|s| s.bytes.len()).sum())
}
