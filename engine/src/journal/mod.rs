//! The journal: every command the engine takes, in engine order, in append-only segment files,
//! durable before any of its results leave the process; and the snapshots that let a restart
//! skip most of it. The on-disk format is in `docs/journal.md` and [`format`].
//!
//! ```text
//!  engine thread ── apply ──► record (one per run of commands) ──write──► segment file
//!        │                                                                   ▲
//!        │ batch (events, last index)                                         │ fdatasync
//!        ▼                                                                   │
//!  egress ring ──► consumer: batch not durable yet? sync what is written ──► feeds, clients
//! ```
//!
//! - [`Journal::open`] scans a data directory: it checks every segment header and record
//!   checksum and the continuity of command indexes, finds a torn tail (the crash case: repaired
//!   by cutting it off, reported in [`Journal::torn_tail`]) and refuses a damaged record in the
//!   middle with [`JournalError::Corrupt`] naming the file and offset (unless
//!   [`OpenOptions::truncate_corrupt`] asks to cut there on purpose).
//! - [`Journal::commands_from`] reads the commands back; [`Journal::into_writer`] repairs the
//!   tail and appends after it ([`JournalWriter`]).
//! - [`snapshot_file`] writes and reads snapshot files beside the segments; [`Journal::prune`]
//!   deletes snapshots beyond the newest `keep` and the segments they all cover.
//! - [`sync`]: group commit in the `batch` fsync mode: the egress consumer syncs, for every run
//!   written since its last sync at once.
//!
//! Command indexes start at 1 and have no gaps; a snapshot taken at index `n` holds the state
//! after command `n`, so recovery replays from `n + 1`.

pub mod format;
mod scan;
pub mod snapshot_file;
pub mod storage;
pub mod sync;
mod writer;

pub use scan::{CommandsFrom, Journal, OpenOptions, RecordsFrom, Run, SegmentInfo, TornTail};
pub use snapshot_file::{SnapshotFile, SnapshotSection};
pub use storage::{DirLock, DirStorage, SimStorage, Storage, StorageFile, SyncFile, Tear};
pub use writer::{Commit, JournalWriter, SegmentLayout};

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// When appended commands are synced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FsyncMode {
    /// Group commit: a run of commands' results are published only once an `fdatasync`
    /// covering it has returned. Survives power loss.
    #[default]
    Batch,
    /// Written before publishing but never synced while running (only at a clean stop): a
    /// crash of the process loses nothing, a crash of the machine loses what the kernel had not
    /// written back yet (by default up to ~30 s), results of which clients may have seen.
    Off,
}

/// The journal's settings; defaults in brackets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JournalConfig {
    /// The data directory [`./tickerd-data`].
    pub dir: PathBuf,
    pub fsync: FsyncMode,
    /// A segment is closed and a new one started once it reaches this size [64 MiB].
    pub segment_bytes: u64,
    /// Zero-fill each segment to `segment_bytes` before writing into it, so a group commit's
    /// `fdatasync` writes data alone [true]. See [`SegmentLayout`].
    pub preallocate: bool,
    /// Group commit, size bound: the engine thread waits for a sync before writing more when
    /// this many bytes are written but not yet durable [4 MiB].
    pub group_commit_bytes: u64,
    /// Group commit, time bound: how long a sync waits for more commands to gather into the
    /// same `fdatasync` [0: sync at once; a group is then whatever was written since the
    /// previous sync began].
    pub group_commit_delay: Duration,
    /// A snapshot is cut every this many commands [250,000], and at a clean shutdown.
    pub snapshot_every: u64,
    /// Snapshots kept; older ones and the segments they all cover are deleted [2].
    pub keep_snapshots: usize,
    pub open: OpenOptions,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            dir: PathBuf::from("tickerd-data"),
            fsync: FsyncMode::Batch,
            segment_bytes: 64 << 20,
            preallocate: true,
            group_commit_bytes: 4 << 20,
            group_commit_delay: Duration::ZERO,
            snapshot_every: 250_000,
            keep_snapshots: 2,
            open: OpenOptions::default(),
        }
    }
}

impl JournalConfig {
    /// How the writer lays out segment files.
    pub fn segments(&self) -> SegmentLayout {
        SegmentLayout {
            bytes: self.segment_bytes,
            preallocate: self.preallocate,
        }
    }
}

/// What went wrong with the journal; each names the file it concerns.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "journal damaged in {file} at byte {offset}: {reason}; nothing after it is used. \
         Restore the file from a replica, or start with the journal truncated there on purpose \
         (tickerd --set journal.truncate_corrupt=true) to lose the commands from this point on"
    )]
    Corrupt {
        file: String,
        offset: u64,
        reason: String,
    },
    #[error("snapshot {file} is unusable: {reason}")]
    BadSnapshot { file: String, reason: String },
    #[error(
        "the journal's oldest command is {first} but no usable snapshot covers the commands \
         before it"
    )]
    NoSnapshotCovers { first: u64 },
    #[error("the data directory {dir} is in use by another process (lock {lock})")]
    Locked { dir: String, lock: String },
    #[error("the journal failed earlier and takes no more commands: {0}")]
    Failed(String),
}

impl JournalError {
    /// Wraps an I/O error with what was being done: `.map_err(JournalError::io("reading x"))`.
    pub fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> JournalError {
        let context = context.into();
        move |source| JournalError::Io { context, source }
    }
}

/// File name of the segment whose first command has index `first`.
pub fn segment_name(first: u64) -> String {
    format!("{first:020}.journal")
}

/// File name of the snapshot cut after command `index`.
pub fn snapshot_name(index: u64) -> String {
    format!("{index:020}.snapshot")
}

fn parse_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    parse_name(name, ".journal")
}

pub(crate) fn parse_snapshot_name(name: &str) -> Option<u64> {
    parse_name(name, ".snapshot")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_in_index_order_and_parse_back() {
        assert_eq!(segment_name(1), "00000000000000000001.journal");
        assert_eq!(parse_segment_name(&segment_name(987_654)), Some(987_654));
        assert_eq!(
            parse_snapshot_name(&snapshot_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert!(segment_name(9) < segment_name(10));
        assert_eq!(parse_segment_name("1.journal"), None);
        assert_eq!(parse_segment_name("0000000000000000000x.journal"), None);
        assert_eq!(parse_snapshot_name(&segment_name(1)), None);
    }
}
