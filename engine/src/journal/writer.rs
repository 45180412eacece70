//! Appending to the journal: commands gather into one record per engine run, written with one
//! `write` into the current segment; a full segment is closed and the next one started.
//!
//! With [`SegmentLayout::preallocate`], every segment is zero-filled to its full size before
//! records go into it: the first one when the writer opens, the next ones ahead of need by a
//! thread of their own ([`Spares`]), so a rotation on the engine thread costs a rename. Syncing
//! a write into zeros that are already on disk is a data write alone, with no file-system
//! journal commit for new blocks or a new size (`ticker-bench journal` has the difference).
//!
//! The writer never syncs on its own (the engine thread must not wait for the disk): in
//! `batch` mode the egress consumer syncs what [`Commit`]s report; [`JournalWriter::sync`] is
//! for a clean stop and for tools.

use super::format::{RecordBuilder, SegmentHeader};
use super::storage::{Storage, StorageFile};
use super::{segment_name, JournalError};
use crate::command::Command;
use std::io;
use std::sync::mpsc::{sync_channel, Receiver, SendError};
use std::thread::JoinHandle;

/// Bytes the record buffer starts with: a full run of a few hundred commands.
const RECORD_BUFFER: usize = 64 << 10;

/// How the writer lays out segment files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentLayout {
    /// A segment is closed, and the next one started, once it reaches this size.
    pub bytes: u64,
    /// Zero-fill each segment to `bytes` before writing records into it.
    pub preallocate: bool,
}

/// Segments of `bytes`, written by appending (no preallocation).
impl From<u64> for SegmentLayout {
    fn from(bytes: u64) -> Self {
        SegmentLayout {
            bytes,
            preallocate: false,
        }
    }
}

/// Appends records to the journal. Owned by the engine thread.
pub struct JournalWriter<S: Storage> {
    storage: S,
    file: S::File,
    segment_len: u64,
    segment_bytes: u64,
    next_index: u64,
    record: RecordBuilder,
    spares: Option<Spares<S>>,
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
    /// After a rotation: segments are preallocated but no zero-filled spare was ready, so the
    /// new one started empty (it grows as it is written, syncs costing what appends cost).
    pub unprepared: bool,
}

impl<S: Storage> JournalWriter<S> {
    /// Starts a new segment whose first command is `next`, durable (header and name) at once.
    pub(crate) fn create(
        storage: S,
        next: u64,
        layout: SegmentLayout,
    ) -> Result<Self, JournalError> {
        let name = segment_name(next);
        let file = new_segment(&storage, next).map_err(JournalError::io(format!(
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
        drop(file);
        // Writes go through a fresh handle so `create` and `append` behave the same.
        let len = super::format::SEGMENT_HEADER_LEN as u64;
        Self::append(storage, &name, next, len, next, layout)
    }

    /// Continues the segment `name` (first command `first`, `len` valid bytes, anything after
    /// them zeros or cut off already).
    pub(crate) fn append(
        storage: S,
        name: &str,
        first: u64,
        len: u64,
        next: u64,
        layout: SegmentLayout,
    ) -> Result<Self, JournalError> {
        debug_assert!(next >= first);
        if layout.preallocate {
            storage
                .preallocate(name, layout.bytes)
                .map_err(JournalError::io(format!(
                    "preallocating {}",
                    storage.describe(name)
                )))?;
        }
        let file = storage
            .write_at(name, len)
            .map_err(JournalError::io(format!(
                "opening {}",
                storage.describe(name)
            )))?;
        let spares = match layout.preallocate {
            true => Some(
                Spares::start(storage.clone(), layout.bytes)
                    .map_err(JournalError::io("starting the journal-spare thread"))?,
            ),
            false => None,
        };
        Ok(JournalWriter {
            storage,
            file,
            segment_len: len,
            segment_bytes: layout.bytes,
            next_index: next,
            record: RecordBuilder::with_capacity(RECORD_BUFFER),
            spares,
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
        let mut unprepared = false;
        if self.segment_len >= self.segment_bytes {
            let (file, spare) = self.start_segment(self.next_index)?;
            rotated = Some(file.sync_handle()?);
            unprepared = self.spares.is_some() && !spare;
            self.file = file;
            self.segment_len = super::format::SEGMENT_HEADER_LEN as u64;
            bytes += self.segment_len;
        }
        Ok(Some(Commit {
            last: self.next_index - 1,
            bytes,
            rotated,
            unprepared,
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

    /// The next segment: a zero-filled spare renamed into place when one is ready, a new
    /// empty file otherwise (never a wait for one); and whether it was a spare.
    fn start_segment(&mut self, first: u64) -> io::Result<(S::File, bool)> {
        let Some((spare, mut file)) = self.spares.as_mut().and_then(Spares::take) else {
            return Ok((new_segment(&self.storage, first)?, false));
        };
        self.storage.rename(&spare, &segment_name(first))?;
        file.append(&SegmentHeader::new(first).encode())?;
        Ok((file, true))
    }
}

fn new_segment<S: Storage>(storage: &S, first: u64) -> io::Result<S::File> {
    let mut file = storage.create(&segment_name(first))?;
    file.append(&SegmentHeader::new(first).encode())?;
    Ok(file)
}

/// Zero-filled segment files made ready ahead of need on a thread of their own, one at a time:
/// the thread fills one, waits until a rotation takes it, then fills the next. Their names end
/// in `.tmp`, so one a crash leaves behind is deleted when the journal next opens.
struct Spares<S: Storage> {
    ready: Option<Receiver<(String, S::File)>>,
    thread: Option<JoinHandle<()>>,
    /// One received ahead of its rotation (tests wait for it to make a rotation use it).
    held: Option<(String, S::File)>,
}

impl<S: Storage> Spares<S> {
    fn start(storage: S, bytes: u64) -> io::Result<Self> {
        // A rendezvous: `take` succeeds only while a finished spare is waiting to be handed over.
        let (hand_over, ready) = sync_channel::<(String, S::File)>(0);
        let thread = std::thread::Builder::new()
            .name("journal-spare".into())
            .spawn(move || {
                for n in 0u64.. {
                    // Unique names: the one just handed over may not be renamed yet.
                    let name = format!("spare-{n}.journal.tmp");
                    let made = storage
                        .create(&name)
                        .and_then(|file| storage.preallocate(&name, bytes).map(|()| file));
                    // A failing disk: rotations fall back to plain segments, whose own writes
                    // then report the error where the journal can act on it.
                    let spare = match made {
                        Ok(file) => (name, file),
                        Err(_) => {
                            let _ = storage.remove(&name);
                            break;
                        }
                    };
                    if let Err(SendError((name, _))) = hand_over.send(spare) {
                        // The writer is gone.
                        let _ = storage.remove(&name);
                        break;
                    }
                }
            })?;
        Ok(Spares {
            ready: Some(ready),
            thread: Some(thread),
            held: None,
        })
    }

    fn take(&mut self) -> Option<(String, S::File)> {
        self.held
            .take()
            .or_else(|| self.ready.as_ref()?.try_recv().ok())
    }

    #[cfg(test)]
    fn wait(&mut self) {
        self.held = self.ready.as_ref().and_then(|r| r.recv().ok());
    }
}

impl<S: Storage> Drop for Spares<S> {
    fn drop(&mut self) {
        // Closing the rendezvous ends the thread once its current spare is filled (or at
        // once, when it is waiting); joined so no spare is written after the writer is gone.
        self.ready = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandKind;
    use crate::journal::{Journal, OpenOptions, SimStorage};

    #[test]
    fn a_rotation_renames_a_zero_filled_spare_into_place_and_no_spare_outlives_the_writer() {
        let disk = SimStorage::new();
        let layout = SegmentLayout {
            bytes: 2_048,
            preallocate: true,
        };
        let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
        let mut w = journal.into_writer(1, layout).unwrap();
        let first = segment_name(1);
        assert_eq!(disk.read(&first).unwrap().len(), 2_048, "filled at open");
        w.spares.as_mut().unwrap().wait();
        let mut rotated = None;
        let mut i = 0;
        while rotated.is_none() {
            i += 1;
            w.push(&Command::new(i, i, CommandKind::Heartbeat));
            let commit = w.commit(0, None).unwrap().unwrap();
            assert!(!commit.unprepared);
            rotated = commit.rotated.map(|_| commit.last + 1);
        }
        let second = segment_name(rotated.unwrap());
        let bytes = disk.read(&second).unwrap();
        assert_eq!(bytes.len(), 2_048, "the spare, zero-filled");
        assert_eq!(
            SegmentHeader::decode(&bytes).unwrap().first,
            rotated.unwrap()
        );
        assert!(!disk
            .list()
            .unwrap()
            .contains(&"spare-0.journal.tmp".to_string()));
        w.push(&Command::new(i + 1, i + 1, CommandKind::Heartbeat));
        w.commit(0, None).unwrap();
        w.sync().unwrap();
        drop(w);
        let mut names = disk.list().unwrap();
        names.sort();
        assert_eq!(names, vec![first, second], "the next spare is removed");
        let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
        assert!(journal.torn_tail().is_none());
        assert_eq!(journal.last_index(), i + 1);
        assert_eq!(journal.commands_from(1).count() as u64, i + 1);
    }

    #[test]
    fn with_no_spare_ready_a_rotation_starts_an_empty_segment_and_says_so() {
        let disk = SimStorage::new();
        let layout = SegmentLayout {
            bytes: 1_024,
            preallocate: true,
        };
        let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
        let mut w = journal.into_writer(1, layout).unwrap();
        // As if the spare thread had failed (a full disk): nothing will be handed over.
        w.spares.as_mut().unwrap().ready = None;
        let mut i = 0;
        let commit = loop {
            i += 1;
            w.push(&Command::new(i, i, CommandKind::Heartbeat));
            let commit = w.commit(0, None).unwrap().unwrap();
            if commit.rotated.is_some() {
                break commit;
            }
            assert!(!commit.unprepared);
        };
        assert!(commit.unprepared);
        let next = segment_name(commit.last + 1);
        let header = super::super::format::SEGMENT_HEADER_LEN;
        assert_eq!(disk.read(&next).unwrap().len(), header, "empty, growing");
        w.push(&Command::new(i + 1, i + 1, CommandKind::Heartbeat));
        w.commit(0, None).unwrap();
        w.sync().unwrap();
        let journal = Journal::open(disk.clone(), OpenOptions::default()).unwrap();
        assert_eq!(journal.commands_from(1).count() as u64, i + 1);
    }
}
