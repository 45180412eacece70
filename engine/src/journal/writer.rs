//! Appending to the journal: commands gather into one record per engine run, written with one
//! `write` into the current segment; a full segment is closed and the next one started.
//!
//! The writer never syncs on its own (the engine thread must not wait for the disk): in
//! `batch` mode the egress consumer syncs what [`Commit`]s report; [`JournalWriter::sync`] is
//! for a clean stop and for tools.

use super::format::{RecordBuilder, SegmentHeader};
use super::storage::{Storage, StorageFile};
use super::{segment_name, JournalError};
use crate::command::Command;
use std::io;

/// Bytes the record buffer starts with: a full run of a few hundred commands.
const RECORD_BUFFER: usize = 64 << 10;

/// Appends records to the journal. Owned by the engine thread.
pub struct JournalWriter<S: Storage> {
    storage: S,
    file: S::File,
    segment_len: u64,
    segment_bytes: u64,
    next_index: u64,
    record: RecordBuilder,
}

/// What one [`JournalWriter::commit`] wrote.
pub struct Commit<F> {
    /// Index of the last command written.
    pub last: u64,
    /// Bytes appended (the record, and a new segment's header after a rotation).
    pub bytes: u64,
    /// After a rotation: the new segment's sync handle. Every byte before it belongs to the
    /// previous segment, which must be synced before this one counts as durable.
    pub rotated: Option<F>,
}

impl<S: Storage> JournalWriter<S> {
    /// Starts a new segment whose first command is `next`, durable (header and name) at once.
    pub(crate) fn create(storage: S, next: u64, segment_bytes: u64) -> Result<Self, JournalError> {
        let name = segment_name(next);
        let mut file = new_segment(&storage, next).map_err(JournalError::io(format!(
            "creating {}",
            storage.describe(&name)
        )))?;
        let synced = file
            .sync_handle()
            .and_then(|h| super::storage::SyncFile::sync_data(&h))
            .and_then(|()| storage.sync_dir());
        synced.map_err(JournalError::io(format!(
            "syncing {}",
            storage.describe(&name)
        )))?;
        // Appends go through a fresh handle so `create` and `append` behave the same.
        file = storage.append_to(&name).map_err(JournalError::io(format!(
            "opening {}",
            storage.describe(&name)
        )))?;
        Ok(JournalWriter {
            storage,
            file,
            segment_len: super::format::SEGMENT_HEADER_LEN as u64,
            segment_bytes,
            next_index: next,
            record: RecordBuilder::with_capacity(RECORD_BUFFER),
        })
    }

    /// Continues the segment `name` (first command `first`, `len` valid bytes).
    pub(crate) fn append(
        storage: S,
        name: &str,
        first: u64,
        len: u64,
        next: u64,
        segment_bytes: u64,
    ) -> Result<Self, JournalError> {
        debug_assert!(next >= first);
        let file = storage.append_to(name).map_err(JournalError::io(format!(
            "opening {}",
            storage.describe(name)
        )))?;
        Ok(JournalWriter {
            storage,
            file,
            segment_len: len,
            segment_bytes,
            next_index: next,
            record: RecordBuilder::with_capacity(RECORD_BUFFER),
        })
    }

    /// The index the next pushed command gets.
    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Commands pushed but not yet committed.
    pub fn pending(&self) -> u32 {
        self.record.count()
    }

    /// Adds a command to the current record and returns its index.
    pub fn push(&mut self, command: &Command) -> u64 {
        if self.record.count() == 0 {
            self.record.begin(self.next_index);
        }
        self.record.push(command);
        self.next_index += 1;
        self.next_index - 1
    }

    /// Writes the pending commands as one record (nothing if none are pending), then starts a
    /// new segment if this one is full. `durable` is the index known durable now (written into
    /// the record for recovery; see [`super::format`]); `ticket` the run's merge ticket in a
    /// sharded market.
    pub fn commit(
        &mut self,
        durable: u64,
        ticket: Option<u64>,
    ) -> io::Result<Option<Commit<<S::File as StorageFile>::Sync>>> {
        if self.record.count() == 0 {
            return Ok(None);
        }
        let record = self.record.finish(durable, ticket);
        self.file.append(record)?;
        let mut bytes = record.len() as u64;
        self.segment_len += bytes;
        self.record.begin(self.next_index);
        let mut rotated = None;
        if self.segment_len >= self.segment_bytes {
            let file = new_segment(&self.storage, self.next_index)?;
            rotated = Some(file.sync_handle()?);
            self.file = file;
            self.segment_len = super::format::SEGMENT_HEADER_LEN as u64;
            bytes += self.segment_len;
        }
        Ok(Some(Commit {
            last: self.next_index - 1,
            bytes,
            rotated,
        }))
    }

    /// A handle to sync the current segment from another thread.
    pub fn sync_handle(&self) -> io::Result<<S::File as StorageFile>::Sync> {
        self.file.sync_handle()
    }

    /// Syncs the current segment and the directory now. Earlier segments must have been
    /// synced already (the consumer's syncs do it), or be synced by the caller.
    pub fn sync(&self) -> io::Result<()> {
        super::storage::SyncFile::sync_data(&self.file.sync_handle()?)?;
        self.storage.sync_dir()
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }
}

fn new_segment<S: Storage>(storage: &S, first: u64) -> io::Result<S::File> {
    let mut file = storage.create(&segment_name(first))?;
    file.append(&SegmentHeader::new(first).encode())?;
    Ok(file)
}
