//! Group commit in the `batch` fsync mode: the durability watermark the engine thread and the
//! egress consumer share, and the sync the consumer runs.
//!
//! The engine thread writes each run of commands and raises `written`. The consumer must hold
//! each batch of events until its last command is durable, and it has nothing else to do
//! meanwhile (batches leave in order), so it is the consumer that calls `fdatasync` — on
//! whatever has been written by then: one sync for every run written since the previous one
//! (the group) — and raises `synced`. No extra thread, and no wake-up between the sync and the
//! publication. The engine thread never waits for the disk, except when more than
//! [`super::JournalConfig::group_commit_bytes`] are written but not yet synced.

use super::storage::{Storage, SyncFile};
use crate::ring::{Doorbell, SpscConsumer};
use crossbeam_utils::CachePadded;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How far the journal has got, shared by its writer, the consumer that syncs it, and readers.
#[derive(Debug, Default)]
pub struct Durability {
    /// Index of the last command written (to the page cache).
    written: CachePadded<AtomicU64>,
    written_bytes: AtomicU64,
    /// Index of the last command known durable.
    synced: CachePadded<AtomicU64>,
    synced_bytes: AtomicU64,
    /// Set once: the journal failed, nothing more becomes durable.
    failure: OnceLock<String>,
    /// The consumer that syncs is gone: a writer must not wait for its syncs.
    abandoned: AtomicBool,
    /// The writer parks on this bell when too much is unsynced; the consumer's sync rings it.
    pub(crate) writer_bell: Doorbell,
    writer: OnceLock<Thread>,
    syncs: AtomicU64,
    sync_nanos: AtomicU64,
    max_sync_nanos: AtomicU64,
    segments_started: AtomicU64,
    segments_unprepared: AtomicU64,
}

impl Durability {
    /// Starts with everything up to `index` already durable (what recovery found on disk).
    pub fn new(index: u64) -> Arc<Self> {
        let d = Durability::default();
        d.written.store(index, Ordering::Relaxed);
        d.synced.store(index, Ordering::Relaxed);
        Arc::new(d)
    }

    /// Index of the last command written.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Index of the last command durable.
    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Bytes written since the journal was opened.
    pub fn written_bytes(&self) -> u64 {
        self.written_bytes.load(Ordering::Acquire)
    }

    /// Bytes written but not yet durable.
    pub fn unsynced_bytes(&self) -> u64 {
        self.written_bytes
            .load(Ordering::Acquire)
            .saturating_sub(self.synced_bytes.load(Ordering::Acquire))
    }

    /// `fdatasync` calls made, their total and their longest duration.
    pub fn sync_stats(&self) -> (u64, Duration, Duration) {
        (
            self.syncs.load(Ordering::Relaxed),
            Duration::from_nanos(self.sync_nanos.load(Ordering::Relaxed)),
            Duration::from_nanos(self.max_sync_nanos.load(Ordering::Relaxed)),
        )
    }

    /// Segments started by rotations since the journal was opened.
    pub fn segments_started(&self) -> u64 {
        self.segments_started.load(Ordering::Relaxed)
    }

    /// Of those, the ones started empty although segments are preallocated: no zero-filled
    /// spare was ready (writes outran the spare thread, or it failed, as on a full disk).
    pub fn segments_unprepared(&self) -> u64 {
        self.segments_unprepared.load(Ordering::Relaxed)
    }

    /// Writer side: a rotation started a segment.
    pub(crate) fn started_segment(&self, unprepared: bool) {
        self.segments_started.fetch_add(1, Ordering::Relaxed);
        if unprepared {
            self.segments_unprepared.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Why the journal stopped, if it failed.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Records a failure (the first one wins) and wakes a writer waiting for room.
    pub fn fail(&self, why: String) {
        let _ = self.failure.set(why);
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    /// Consumer side: it will sync no more (it is gone); wakes a writer waiting for room.
    pub(crate) fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    /// Whether a writer waiting for room under the group bound should stop waiting: the
    /// room came, the journal failed, or nobody will sync any more.
    pub(crate) fn room_or_end(&self, bound: u64) -> bool {
        self.unsynced_bytes() < bound
            || self.failure.get().is_some()
            || self.abandoned.load(Ordering::Acquire)
    }

    /// Writer side: commands up to `index` (and `bytes` more bytes) are written.
    pub(crate) fn wrote(&self, index: u64, bytes: u64) {
        self.written_bytes.fetch_add(bytes, Ordering::Release);
        self.written.store(index, Ordering::Release);
    }

    /// Writer side, with nobody syncing (`fsync = off`): `synced` stays where recovery left it
    /// (or the last clean stop), which is what is known durable.
    pub(crate) fn wrote_unsynced(&self, index: u64, bytes: u64) {
        self.written_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.written.store(index, Ordering::Release);
    }

    pub(crate) fn register_writer(&self, thread: Thread) {
        let _ = self.writer.set(thread);
    }

    fn synced_to(&self, index: u64, bytes: u64) {
        self.synced_bytes.store(bytes, Ordering::Release);
        self.synced.store(index, Ordering::Release);
        if let Some(writer) = self.writer.get() {
            self.writer_bell.ring(writer);
        }
    }
}

/// The sync the consumer runs: every segment written so far, oldest first, then the
/// directory when a segment was started since the last sync.
pub struct SyncDuty<S: Storage> {
    storage: S,
    current: <S::File as super::StorageFile>::Sync,
    /// New segments, in order, from the writer's rotations.
    rotations: SpscConsumer<<S::File as super::StorageFile>::Sync>,
    durability: Arc<Durability>,
    delay: Duration,
}

/// [`SyncDuty`] without its storage type, for the egress consumer to hold.
pub trait GroupSync: Send {
    /// Makes everything written so far durable and publishes it; `false` if the journal has
    /// failed (now or before).
    fn sync_written(&mut self) -> bool;
}

impl<S: Storage> SyncDuty<S> {
    pub fn new(
        storage: S,
        current: <S::File as super::StorageFile>::Sync,
        rotations: SpscConsumer<<S::File as super::StorageFile>::Sync>,
        durability: Arc<Durability>,
        delay: Duration,
    ) -> Self {
        SyncDuty {
            storage,
            current,
            rotations,
            durability,
            delay,
        }
    }

    fn sync_files(&mut self) -> io::Result<()> {
        let mut rotated = false;
        while let Ok(next) = self.rotations.try_pop() {
            // Everything before the rotation is in the segment being left.
            self.current.sync_data()?;
            self.current = next;
            rotated = true;
        }
        self.current.sync_data()?;
        if rotated {
            // The new segment's name must survive a crash too.
            self.storage.sync_dir()?;
        }
        Ok(())
    }
}

impl<S: Storage> GroupSync for SyncDuty<S> {
    fn sync_written(&mut self) -> bool {
        let d = self.durability.clone();
        if d.failure().is_some() {
            return false;
        }
        if !self.delay.is_zero() {
            // Gather more commands into this group.
            std::thread::sleep(self.delay);
        }
        // Loaded before the sync: every byte up to it is in a file this sync covers.
        let target = d.written.load(Ordering::Acquire);
        let bytes = d.written_bytes.load(Ordering::Acquire);
        let started = Instant::now();
        if let Err(e) = self.sync_files() {
            d.fail(format!("journal fdatasync failed: {e}"));
            return false;
        }
        let took = started.elapsed().as_nanos() as u64;
        d.syncs.fetch_add(1, Ordering::Relaxed);
        d.sync_nanos.fetch_add(took, Ordering::Relaxed);
        d.max_sync_nanos.fetch_max(took, Ordering::Relaxed);
        d.synced_to(target, bytes);
        true
    }
}
