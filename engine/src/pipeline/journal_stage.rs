//! The journal as the engine thread writes it: every command pushed as it is applied, one
//! commit (and, in `batch` mode, one group sync) per run of commands.

use crate::command::Command;
use crate::journal::sync::Durability;
use crate::journal::{JournalWriter, Storage, StorageFile, SyncFile};
use crate::ring::{PushError, SpscProducer, WaitStrategy};
use std::sync::Arc;
use std::thread;

/// The journal as the engine thread sees it: commands pushed as applied, one commit per run.
pub(super) trait Journaling: Send {
    fn push(&mut self, command: &Command) -> u64;
    /// Writes the run; waits first if too much is written but not yet durable. Returns the
    /// index of the run's last command, or 0 if nothing was pending.
    fn commit(&mut self, wait: &WaitStrategy, ticket: Option<u64>) -> Result<u64, String>;
    /// A clean stop: everything written is made durable, whatever the mode.
    fn finish(&mut self);
    fn fail(&self, why: String);
    /// Called once on the engine thread, so the consumer's sync knows whom to wake.
    fn on_engine_thread(&self);
}

pub(super) struct JournalStage<S: Storage> {
    pub(super) writer: JournalWriter<S>,
    pub(super) durability: Arc<Durability>,
    pub(super) segments: Segments<<S::File as StorageFile>::Sync>,
    pub(super) group_commit_bytes: u64,
}

/// Where the sync handles of new segments go.
pub(super) enum Segments<F> {
    /// `batch`: to the consumer's sync, which syncs each in turn, oldest first.
    ToConsumer(SpscProducer<F>),
    /// `off`: kept, oldest first, for the sync at a clean stop (a segment is tens of MiB, so
    /// this grows by one every few hundred thousand commands).
    Kept(Vec<F>),
}

impl<S: Storage> Journaling for JournalStage<S> {
    fn push(&mut self, command: &Command) -> u64 {
        self.writer.push(command)
    }

    fn commit(&mut self, wait: &WaitStrategy, ticket: Option<u64>) -> Result<u64, String> {
        if self.writer.pending() == 0 {
            return Ok(0);
        }
        let d = &self.durability;
        if d.unsynced_bytes() >= self.group_commit_bytes {
            wait.wait_for(Some(&d.writer_bell), || {
                d.room_or_end(self.group_commit_bytes).then_some(())
            });
        }
        if let Some(why) = d.failure() {
            return Err(why.to_string());
        }
        let commit = match self.writer.commit(d.synced(), ticket) {
            Ok(Some(commit)) => commit,
            Ok(None) => return Ok(0),
            Err(e) => return Err(format!("journal write failed: {e}")),
        };
        if commit.rotated.is_some() {
            d.started_segment(commit.unprepared);
        }
        match &mut self.segments {
            Segments::ToConsumer(rotations) => {
                if let Some(next) = commit.rotated {
                    let mut next = Some(next);
                    // Every sync drains these; waiting here is near impossible.
                    wait.wait_for(None, || match rotations.try_push(next.take()?) {
                        Ok(()) => Some(()),
                        Err(PushError::Full(n)) | Err(PushError::Closed(n)) => {
                            next = Some(n);
                            None
                        }
                    });
                }
                d.wrote(commit.last, commit.bytes);
            }
            Segments::Kept(kept) => {
                kept.extend(commit.rotated);
                d.wrote_unsynced(commit.last, commit.bytes);
            }
        }
        Ok(commit.last)
    }

    fn finish(&mut self) {
        // With `batch`, whatever was published is durable; runs that published nothing
        // (heartbeats) wait for a sync that the consumer may still run, and syncing only the
        // current segment here could make it durable before older ones: syncs must go oldest
        // first, so recovery can tell a torn end from damage. With `off`, a clean stop syncs
        // every segment, oldest first.
        let Segments::Kept(kept) = &self.segments else {
            return;
        };
        let synced = kept
            .iter()
            .try_for_each(|segment| segment.sync_data())
            .and_then(|()| self.writer.storage().sync_dir());
        if let Err(e) = synced {
            self.durability
                .fail(format!("journal sync at shutdown failed: {e}"));
        }
    }

    fn fail(&self, why: String) {
        self.durability.fail(why);
    }

    fn on_engine_thread(&self) {
        self.durability.register_writer(thread::current());
    }
}
