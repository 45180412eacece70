//! Writing snapshots off the hot threads. The engine thread cuts its state at a
//! `CommandKind::Snapshot`, the feeds thread adds its own at the same point (the end of that
//! batch) and hands both here; this thread encodes them, writes the file beside the journal
//! (temp file, sync, rename, directory sync) and prunes what the snapshots now cover.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
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

/// Snapshots waiting to be written; one more found waiting is dropped (the next cut will do).
const QUEUED: usize = 1;

/// The state after one journaled command.
pub struct SnapshotJob {
    /// Journal index of the snapshot command.
    pub index: u64,
    pub engine: Box<EngineSnapshot>,
    pub feeds: FeedsSnapshot,
}

/// What the writer has done, for `/metrics` and logs.
#[derive(Debug, Default)]
pub struct SnapshotStats {
    pub written: AtomicU64,
    pub last_index: AtomicU64,
    pub last_bytes: AtomicU64,
    /// Time to encode and write the last one, in µs.
    pub last_micros: AtomicU64,
    /// Cuts dropped because the writer was still busy with earlier ones.
    pub dropped: AtomicU64,
    pub failures: AtomicU64,
}

pub struct SnapshotWriter {
    jobs: Option<SyncSender<SnapshotJob>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<SnapshotStats>,
}

impl SnapshotWriter {
    /// Starts the writer on the data directory; it keeps the newest `keep` snapshots.
    pub fn spawn(storage: DirStorage, keep: usize) -> std::io::Result<Self> {
        let (jobs, rx) = sync_channel::<SnapshotJob>(QUEUED);
        let stats = Arc::new(SnapshotStats::default());
        let thread = {
            let stats = stats.clone();
            std::thread::Builder::new()
                .name("ticker-snapshots".into())
                .spawn(move || {
                    for job in rx {
                        write(&storage, keep, job, &stats);
                    }
                })?
        };
        Ok(SnapshotWriter {
            jobs: Some(jobs),
            thread: Some(thread),
            stats,
        })
    }

    pub fn stats(&self) -> &Arc<SnapshotStats> {
        &self.stats
    }

    /// Hands a cut to the writer without waiting for it.
    pub fn submit(&self, job: SnapshotJob) {
        let Some(jobs) = &self.jobs else { return };
        match jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    index = job.index,
                    "snapshot dropped: the writer is still busy with an earlier one"
                );
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Writes what is queued and stops.
    pub fn finish(&mut self) {
        self.jobs = None;
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
