//! Group commit: the syncer thread of the `batch` fsync mode, and the durability watermark the
//! engine thread, the syncer and the egress consumer share.
//!
//! The engine thread writes each run of commands and raises `written`; the syncer calls
//! `fdatasync` on whatever has been written so far (one sync for every run written while the
//! previous one ran: the group) and raises `synced`; the consumer holds each batch of events
//! until `synced` reaches the batch's last command. No thread waits for another except the
//! consumer, for the disk — and the engine thread when more than
//! [`super::JournalConfig::group_commit_bytes`] are written but not yet synced.

use super::storage::{Storage, SyncFile};
use crate::ring::{Doorbell, SpscConsumer};
use crossbeam_utils::CachePadded;
use parking_lot::{Condvar, Mutex};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// Longest a parked syncer or waiting consumer sleeps without being woken: a safety net only,
/// every state change wakes them.
const PARK_NET: Duration = Duration::from_millis(50);

/// What a wait for durability came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synced {
    Durable,
    /// The journal failed: what was waited for will never be durable.
    Failed,
    TimedOut,
}

/// How far the journal has got, shared by its writer, its syncer and its readers.
#[derive(Debug, Default)]
pub struct Durability {
    /// Index of the last command written (to the page cache).
    written: CachePadded<AtomicU64>,
    written_bytes: AtomicU64,
    /// Index of the last command known durable.
    synced: CachePadded<AtomicU64>,
    synced_bytes: AtomicU64,
    /// Whether a consumer waits for `synced` (it then waits on `cond`).
    consumer_waiting: AtomicBool,
    lock: Mutex<()>,
    cond: Condvar,
    /// Set once: the journal failed, nothing more becomes durable.
    failure: OnceLock<String>,
    stop: AtomicBool,
    /// The syncer parks on this bell; the writer rings it after each write.
    pub(crate) syncer_bell: Doorbell,
    syncer: OnceLock<Thread>,
    /// The writer parks on this bell when too much is unsynced; the syncer rings it.
    pub(crate) writer_bell: Doorbell,
    writer: OnceLock<Thread>,
    syncs: AtomicU64,
    sync_nanos: AtomicU64,
    max_sync_nanos: AtomicU64,
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

    /// Why the journal stopped, if it failed.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// Records a failure (the first one wins) and wakes every waiter so it can see it.
    pub fn fail(&self, why: String) {
        let _ = self.failure.set(why);
        self.wake_all();
    }

    /// Writer side: commands up to `index` (and `bytes` more bytes) are written.
    pub(crate) fn wrote(&self, index: u64, bytes: u64) {
        self.written_bytes.fetch_add(bytes, Ordering::Release);
        self.written.store(index, Ordering::Release);
        if let Some(syncer) = self.syncer.get() {
            self.syncer_bell.ring(syncer);
        }
    }

    /// Writer side, without a syncer (`fsync = off`): written is as durable as it gets.
    pub(crate) fn wrote_unsynced(&self, index: u64, bytes: u64) {
        self.written_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.written.store(index, Ordering::Release);
        self.synced_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.synced.store(index, Ordering::Release);
    }

    pub(crate) fn register_writer(&self, thread: Thread) {
        let _ = self.writer.set(thread);
    }

    /// Consumer side: waits until command `index` is durable, or the journal failed first
    /// (the command's results must then never be published), or `deadline` passed.
    pub fn wait_synced_until(&self, index: u64, deadline: Option<Instant>) -> Synced {
        if self.synced() >= index {
            return Synced::Durable;
        }
        let mut guard = self.lock.lock();
        self.consumer_waiting.store(true, Ordering::SeqCst);
        let outcome = loop {
            if self.synced.load(Ordering::SeqCst) >= index {
                break Synced::Durable;
            }
            if self.failure.get().is_some() {
                break Synced::Failed;
            }
            let now = Instant::now();
            let until = match deadline {
                Some(d) if d <= now => break Synced::TimedOut,
                Some(d) => d.min(now + PARK_NET),
                None => now + PARK_NET,
            };
            self.cond.wait_until(&mut guard, until);
        };
        self.consumer_waiting.store(false, Ordering::Relaxed);
        outcome
    }

    fn synced_to(&self, index: u64, bytes: u64) {
        self.synced_bytes.store(bytes, Ordering::Release);
        self.synced.store(index, Ordering::SeqCst);
        if self.consumer_waiting.load(Ordering::SeqCst) {
            let _guard = self.lock.lock();
            self.cond.notify_all();
        }
        if let Some(writer) = self.writer.get() {
            self.writer_bell.ring(writer);
        }
    }

    fn wake_all(&self) {
        {
            let _guard = self.lock.lock();
            self.cond.notify_all();
        }
        if let Some(t) = self.syncer.get() {
            t.unpark();
        }
        if let Some(t) = self.writer.get() {
            t.unpark();
        }
    }

    /// Asks the syncer to sync what is written and stop.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.syncer.get() {
            t.unpark();
        }
    }
}

/// The syncer thread: see the module docs.
pub struct Syncer<S: Storage> {
    storage: S,
    current: <S::File as super::StorageFile>::Sync,
    /// New segments, in order, from the writer's rotations.
    rotations: SpscConsumer<<S::File as super::StorageFile>::Sync>,
    durability: Arc<Durability>,
    delay: Duration,
}

impl<S: Storage> Syncer<S> {
    /// Starts the syncer on the writer's current segment.
    pub fn spawn(
        storage: S,
        current: <S::File as super::StorageFile>::Sync,
        rotations: SpscConsumer<<S::File as super::StorageFile>::Sync>,
        durability: Arc<Durability>,
        delay: Duration,
    ) -> io::Result<JoinHandle<()>> {
        let syncer = Syncer {
            storage,
            current,
            rotations,
            durability: durability.clone(),
            delay,
        };
        let handle = thread::Builder::new()
            .name("ticker-journal-sync".into())
            .spawn(move || syncer.run())?;
        let _ = durability.syncer.set(handle.thread().clone());
        Ok(handle)
    }

    fn run(mut self) {
        let d = self.durability.clone();
        loop {
            let stopping = !self.wait_for_work();
            if d.failure().is_some() {
                return;
            }
            if !self.delay.is_zero() && !stopping {
                // Gather more into this group (the writer's rings may wake us early: sleep on).
                let deadline = Instant::now() + self.delay;
                while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                    thread::park_timeout(left);
                }
            }
            let target = d.written.load(Ordering::Acquire);
            let bytes = d.written_bytes.load(Ordering::Acquire);
            let started = Instant::now();
            if let Err(e) = self.sync() {
                d.fail(format!("journal fdatasync failed: {e}"));
                return;
            }
            let took = started.elapsed().as_nanos() as u64;
            d.syncs.fetch_add(1, Ordering::Relaxed);
            d.sync_nanos.fetch_add(took, Ordering::Relaxed);
            d.max_sync_nanos.fetch_max(took, Ordering::Relaxed);
            d.synced_to(target, bytes);
            if stopping && d.written() == target {
                return;
            }
        }
    }

    /// Syncs every segment that may hold unsynced bytes, oldest first.
    fn sync(&mut self) -> io::Result<()> {
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

    /// Parks until something is written past `synced`. `false` when asked to stop instead.
    fn wait_for_work(&self) -> bool {
        let d = &self.durability;
        loop {
            if d.written.load(Ordering::Acquire) > d.synced.load(Ordering::Acquire) {
                return true;
            }
            if d.stop.load(Ordering::Acquire) || d.failure.get().is_some() {
                return false;
            }
            d.syncer_bell.announce_sleep();
            let idle = d.written.load(Ordering::SeqCst) <= d.synced.load(Ordering::Acquire)
                && !d.stop.load(Ordering::SeqCst);
            if idle {
                thread::park_timeout(PARK_NET);
            }
            d.syncer_bell.withdraw();
        }
    }
}
