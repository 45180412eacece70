//! Opening a journal: every segment and record checked, a torn tail told apart from damage in
//! the middle, commands read back, the tail repaired for appending, old files pruned.
//!
//! A record (or segment header) that does not check out is a **torn tail** — what a crash
//! leaves of writes that were never confirmed — unless an intact record further on (in the same
//! segment, found byte by byte, or in a later one) was written when the broken record's commands
//! were already durable: each record carries the index known durable when it was written. Then
//! it is **damage** (the bytes changed after they were durable) and recovery refuses it rather
//! than silently dropping acknowledged commands. Intact records out of order, a gap between
//! segments and another build's format are damage too.

use super::format::{
    parse_record, written_len, HeaderError, Parsed, SegmentHeader, SEGMENT_HEADER_LEN,
};
use super::snapshot_file::{self, SnapshotFile};
use super::storage::{DirStorage, Storage};
use super::writer::{JournalWriter, SegmentLayout};
use super::{parse_segment_name, parse_snapshot_name, JournalError};
use crate::command::Command;

/// How [`Journal::open`] treats damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OpenOptions {
    /// Cut the journal at a damaged record in the middle instead of refusing to open: the
    /// commands from there on are lost (operators choose this knowingly, e.g. after a disk
    /// error destroyed part of a segment). Default `false`.
    pub truncate_corrupt: bool,
}

/// One segment as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub name: String,
    /// Index of its first command.
    pub first: u64,
    /// Index of its last whole command (`first - 1` when it has none).
    pub last: u64,
    /// Bytes of header and whole records: where appending continues.
    pub len: u64,
    pub records: u64,
}

/// The end of the journal that [`Journal::into_writer`] cuts off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The file, as the storage describes it.
    pub file: String,
    pub offset: u64,
    /// Bytes discarded: from `offset` to the last byte that is not zero (zeros after it are
    /// a preallocated segment's unwritten rest, or nothing a reader could use).
    pub bytes: u64,
    pub reason: String,
    /// Whole segments after it that are dropped too (only when truncating damage on purpose).
    pub dropped_segments: Vec<String>,
    /// `true` when this is damage cut on purpose ([`OpenOptions::truncate_corrupt`]).
    pub deliberate: bool,
}

/// A scanned journal directory. Opening changes nothing on disk; [`Journal::into_writer`]
/// does the repairs.
pub struct Journal<S: Storage = DirStorage> {
    storage: S,
    segments: Vec<SegmentInfo>,
    snapshots: Vec<u64>,
    torn: Option<TornTail>,
    /// Files to delete before writing: interrupted snapshot writes, a segment whose header a
    /// crash cut short.
    stale: Vec<String>,
}

impl<S: Storage> Journal<S> {
    pub fn open(storage: S, options: OpenOptions) -> Result<Self, JournalError> {
        let names = storage.list().map_err(JournalError::io(format!(
            "listing {}",
            storage.describe("")
        )))?;
        let mut segment_names: Vec<(u64, String)> = Vec::new();
        let mut snapshots = Vec::new();
        let mut stale = Vec::new();
        for name in names {
            if let Some(first) = parse_segment_name(&name) {
                segment_names.push((first, name));
            } else if let Some(index) = parse_snapshot_name(&name) {
                snapshots.push(index);
            } else if name.ends_with(".tmp") {
                stale.push(name);
            }
        }
        segment_names.sort();
        snapshots.sort_unstable();
        let mut journal = Journal {
            storage,
            segments: Vec::with_capacity(segment_names.len()),
            snapshots,
            torn: None,
            stale,
        };
        // One buffer for every segment: its pages are faulted in once.
        let mut bytes = Vec::new();
        for (i, (first, name)) in segment_names.iter().enumerate() {
            let scanned = journal.scan_segment(*first, name, &mut bytes)?;
            let (info, offset, reason, tail_like, len) = match scanned {
                Scanned::Whole(info) => {
                    journal.segments.push(info);
                    continue;
                }
                Scanned::Broken {
                    info,
                    offset,
                    reason,
                    tail_like,
                    len,
                } => (info, offset, reason, tail_like, len),
            };
            // A crash leaves garbage only where writes were never confirmed durable, so the
            // break is a torn end unless an intact record further on says the commands here
            // were already durable when it was written: then they were damaged afterwards.
            let expected = info.as_ref().map_or(*first, |i| i.last + 1);
            let later = &segment_names[i + 1..];
            let claim = match tail_like {
                true => journal.durable_claim(name, offset as usize, later, expected)?,
                false => None,
            };
            let torn = tail_like && claim.is_none();
            let file = journal.storage.describe(name);
            let reason = match claim {
                Some((at, offset, durable)) => format!(
                    "{reason}; the intact record at byte {offset} of {at} was written when \
                     commands up to {durable} were durable"
                ),
                None => reason,
            };
            if !torn && !options.truncate_corrupt {
                return Err(JournalError::Corrupt {
                    file,
                    offset,
                    reason,
                });
            }
            journal.torn = Some(TornTail {
                file,
                offset,
                bytes: len - offset,
                reason,
                dropped_segments: later.iter().map(|(_, n)| n.clone()).collect(),
                deliberate: !torn,
            });
            match info {
                Some(info) => journal.segments.push(info),
                None => journal.stale.push(name.clone()),
            }
            break;
        }
        Ok(journal)
    }

    /// Checks segment `name` (read into `bytes`).
    fn scan_segment(
        &self,
        first: u64,
        name: &str,
        bytes: &mut Vec<u8>,
    ) -> Result<Scanned, JournalError> {
        let file = self.storage.describe(name);
        let io = || JournalError::io(format!("reading {file}"));
        // The records end where only zeros remain: a preallocated segment's unwritten rest,
        // which is not read (bytes past `written` that a record needs are known zeros).
        let (written, file_len) = self.storage.written_end(name).map_err(io())?;
        self.storage
            .read_prefix(name, written, bytes)
            .map_err(io())?;
        let zeros_up_to = |bytes: &mut Vec<u8>, len: usize| {
            let len = len.min(file_len as usize);
            if bytes.len() < len {
                bytes.resize(len, 0);
                return true;
            }
            false
        };
        let written = written as usize;
        let broken = |info, offset: usize, reason: String, tail_like| Scanned::Broken {
            info,
            offset: offset as u64,
            reason,
            tail_like,
            len: written.max(offset) as u64,
        };
        zeros_up_to(bytes, SEGMENT_HEADER_LEN);
        let header = match SegmentHeader::decode(bytes) {
            Ok(h) => h,
            // Written by another build: nothing a crash does.
            Err(e @ (HeaderError::Version(_) | HeaderError::Codec(_))) => {
                return Ok(broken(None, 0, e.to_string(), false))
            }
            // Created, then the crash came before its header was durable.
            Err(e) => return Ok(broken(None, 0, e.to_string(), true)),
        };
        if header.first != first {
            return Ok(broken(
                None,
                16,
                format!(
                    "header says the first command is {}, the name says {first}",
                    header.first
                ),
                false,
            ));
        }
        if let Some(prev) = self.segments.last() {
            // A gap is allowed only where a snapshot covers it: with `fsync = off` a machine
            // crash can lose a journal tail that a (always synced) snapshot had already covered.
            let covered = self.snapshots.contains(&(first - 1));
            if first != prev.last + 1 && !(first > prev.last + 1 && covered) {
                return Ok(broken(
                    None,
                    0,
                    format!(
                        "segment starts at command {first} but the previous one ends at {}",
                        prev.last
                    ),
                    false,
                ));
            }
        }
        let mut info = SegmentInfo {
            name: name.to_string(),
            first,
            last: first - 1,
            len: SEGMENT_HEADER_LEN as u64,
            records: 0,
        };
        let mut pos = SEGMENT_HEADER_LEN;
        while pos < written {
            let (reason, tail_like) = match parse_record(bytes, pos) {
                Parsed::Record(r) if r.first == info.last + 1 => {
                    info.last = r.last();
                    info.records += 1;
                    pos = r.end;
                    info.len = pos as u64;
                    continue;
                }
                Parsed::Record(r) => (
                    format!(
                        "record starts at command {} where {} was expected",
                        r.first,
                        info.last + 1
                    ),
                    false,
                ),
                Parsed::Incomplete { needed } => {
                    if zeros_up_to(bytes, bytes.len() + needed) {
                        // A record whose last bytes are zeros: they are in the file.
                        continue;
                    }
                    (format!("record cut short: {needed} bytes missing"), true)
                }
                Parsed::BadChecksum => ("record fails its checksum".into(), true),
                Parsed::BadHeader { reason } => (reason.into(), true),
            };
            return Ok(broken(Some(info), pos, reason, tail_like));
        }
        Ok(Scanned::Whole(info))
    }

    /// The first intact record after `offset` in segment `name`, or in the `later` segments,
    /// whose durable index reaches `expected`: where it is and what it says.
    fn durable_claim(
        &self,
        name: &str,
        offset: usize,
        later: &[(u64, String)],
        expected: u64,
    ) -> Result<Option<(String, u64, u64)>, JournalError> {
        let read = |name: &str| {
            self.storage.read(name).map_err(JournalError::io(format!(
                "reading {}",
                self.storage.describe(name)
            )))
        };
        let here = read(name)?;
        if let Some((at, durable)) = find_claim(&here, offset + 1, expected) {
            return Ok(Some((self.storage.describe(name), at as u64, durable)));
        }
        for (_, name) in later {
            let bytes = read(name)?;
            if let Some((at, durable)) = find_claim(&bytes, SEGMENT_HEADER_LEN, expected) {
                return Ok(Some((self.storage.describe(name), at as u64, durable)));
            }
        }
        Ok(None)
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    pub fn segments(&self) -> &[SegmentInfo] {
        &self.segments
    }

    /// Indexes of the snapshot files present, oldest first (not yet checked).
    pub fn snapshots(&self) -> &[u64] {
        &self.snapshots
    }

    /// The end that [`Journal::into_writer`] will cut off, if any.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }

    /// Index of the first command still on disk (1 when nothing was ever pruned, or when the
    /// journal is empty).
    pub fn first_index(&self) -> u64 {
        self.segments.first().map_or(1, |s| s.first)
    }

    /// Index of the last whole command (0 when there is none).
    pub fn last_index(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.last)
    }

    /// Reads a snapshot file, checking its checksums.
    pub fn read_snapshot(&self, index: u64) -> Result<SnapshotFile, JournalError> {
        snapshot_file::read(&self.storage, index)
    }

    /// The newest snapshot that reads back whole, and the errors of newer ones that did not
    /// (each is reported; recovery then starts from an older snapshot).
    pub fn newest_snapshot(&self) -> (Option<SnapshotFile>, Vec<JournalError>) {
        let mut skipped = Vec::new();
        for &index in self.snapshots.iter().rev() {
            match self.read_snapshot(index) {
                Ok(s) => return (Some(s), skipped),
                Err(e) => skipped.push(e),
            }
        }
        (None, skipped)
    }

    /// The commands from index `from` on, in order, up to the last whole command.
    pub fn commands_from(&self, from: u64) -> CommandsFrom<'_, S> {
        CommandsFrom {
            journal: self,
            segment: self.segments.iter().position(|s| s.last >= from),
            from,
            bytes: Vec::new(),
            pos: 0,
            loaded: false,
            pending: std::collections::VecDeque::new(),
            ticket: None,
        }
    }

    /// The records from the one holding index `from` on, each with its merge ticket (the
    /// first holds only the commands from `from`).
    pub fn records_from(&self, from: u64) -> RecordsFrom<'_, S> {
        RecordsFrom(self.commands_from(from))
    }

    /// Makes the repairs found by [`Journal::open`] (cuts the torn tail, deletes interrupted
    /// writes) and opens the last segment for appending. `next` is the index the next command
    /// gets: one past the last whole command, or past a newer snapshot (see [`FsyncMode::Off`]).
    ///
    /// [`FsyncMode::Off`]: super::FsyncMode::Off
    pub fn into_writer(
        self,
        next: u64,
        layout: impl Into<SegmentLayout>,
    ) -> Result<JournalWriter<S>, JournalError> {
        let layout = layout.into();
        let Journal {
            storage,
            mut segments,
            torn,
            stale,
            ..
        } = self;
        let io =
            |what: &str, name: &str| JournalError::io(format!("{what} {}", storage.describe(name)));
        for name in &stale {
            storage.remove(name).map_err(io("removing", name))?;
        }
        if let Some(torn) = &torn {
            for name in &torn.dropped_segments {
                storage.remove(name).map_err(io("removing", name))?;
            }
            if let Some(last) = segments.last() {
                storage
                    .truncate(&last.name, last.len)
                    .map_err(io("truncating", &last.name))?;
            }
        }
        if !stale.is_empty() || torn.is_some() {
            storage.sync_dir().map_err(io("syncing", ""))?;
        }
        let end = segments.last().map_or(0, |s| s.last);
        assert!(
            next > end,
            "the next command ({next}) must come after the journal's last ({end})"
        );
        match segments.pop() {
            Some(last) if last.last + 1 == next => {
                JournalWriter::append(storage, &last.name, last.first, last.len, next, layout)
            }
            _ => JournalWriter::create(storage, next, layout),
        }
    }

    /// Deletes all snapshots but the newest `keep` (at least one is kept), and every segment
    /// whose commands the oldest kept snapshot covers, except the last segment. Safe while a
    /// writer appends: the segment it writes to is always the last. Returns the files deleted.
    pub fn prune(storage: &S, keep: usize) -> Result<Vec<String>, JournalError> {
        Self::prune_to(storage, &Self::newest_snapshots(storage, keep)?)
    }

    /// The indexes of the newest `keep` snapshot files in `storage` (at least one if any),
    /// oldest first: what [`Journal::prune`] keeps.
    pub fn newest_snapshots(storage: &S, keep: usize) -> Result<Vec<u64>, JournalError> {
        let mut snapshots = Self::snapshots_in(storage)?;
        snapshots.drain(..snapshots.len().saturating_sub(keep.max(1)));
        Ok(snapshots)
    }

    /// The indexes of the snapshot files in `storage`, oldest first (whether they read back
    /// whole or not).
    pub fn snapshots_in(storage: &S) -> Result<Vec<u64>, JournalError> {
        let mut snapshots: Vec<u64> = Self::names(storage)?
            .iter()
            .filter_map(|n| parse_snapshot_name(n))
            .collect();
        snapshots.sort_unstable();
        Ok(snapshots)
    }

    /// Deletes every snapshot but those at `kept`, and every segment whose commands the oldest
    /// of them covers, except the last segment; with nothing in `kept`, deletes nothing. For a
    /// shard of a sharded market, whose snapshots count only as part of a whole round (the
    /// caller knows which). Returns the files deleted.
    pub fn prune_to(storage: &S, kept: &[u64]) -> Result<Vec<String>, JournalError> {
        let Some(&covered) = kept.iter().min() else {
            return Ok(Vec::new());
        };
        let names = Self::names(storage)?;
        let mut segments: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        segments.sort_unstable();
        let mut deleted: Vec<String> = names
            .iter()
            .filter(|n| parse_snapshot_name(n).is_some_and(|i| !kept.contains(&i)))
            .cloned()
            .collect();
        for pair in segments.windows(2) {
            // The segment's last command is one before the next segment's first.
            if pair[1] - 1 <= covered {
                deleted.push(super::segment_name(pair[0]));
            }
        }
        for name in &deleted {
            storage.remove(name).map_err(JournalError::io(format!(
                "removing {}",
                storage.describe(name)
            )))?;
        }
        if !deleted.is_empty() {
            storage.sync_dir().map_err(JournalError::io(format!(
                "syncing {}",
                storage.describe("")
            )))?;
        }
        Ok(deleted)
    }

    fn names(storage: &S) -> Result<Vec<String>, JournalError> {
        storage.list().map_err(JournalError::io(format!(
            "listing {}",
            storage.describe("")
        )))
    }
}

/// Looks from `start` on for an intact record claiming `expected` durable: record by record
/// while they check out, byte by byte after a break (where the next record starts is then
/// unknown), with cheap checks before any checksum.
fn find_claim(bytes: &[u8], start: usize, expected: u64) -> Option<(usize, u64)> {
    let u32_at = |p: usize| u32::from_le_bytes(bytes[p..p + 4].try_into().expect("4 bytes"));
    let u64_at = |p: usize| u64::from_le_bytes(bytes[p..p + 8].try_into().expect("8 bytes"));
    let mut pos = start;
    // No record starts among the zeros at the end (its kind and count are not zero).
    let written = written_len(bytes);
    while pos < written && pos + super::format::RECORD_HEADER_LEN <= bytes.len() {
        let kind = u32_at(pos + 20);
        let plausible = (kind == super::format::RECORD_COMMANDS
            || kind == super::format::RECORD_TICKETED_COMMANDS)
            && u32_at(pos + 16) != 0
            && u64_at(pos + 8) >= expected
            && u64_at(pos + 24) >= expected;
        if plausible {
            if let Parsed::Record(r) = parse_record(bytes, pos) {
                return Some((pos, r.durable));
            }
        }
        match parse_record(bytes, pos) {
            Parsed::Record(r) => pos = r.end,
            _ => pos += 1,
        }
    }
    None
}

enum Scanned {
    Whole(SegmentInfo),
    /// Something at `offset` does not check out: `info` is the part of the segment before it
    /// (when its header is good), `tail_like` whether a crash can leave it (bytes that do not
    /// check out), as opposed to intact records out of order or another build's format.
    Broken {
        info: Option<SegmentInfo>,
        offset: u64,
        reason: String,
        tail_like: bool,
        /// Where the file's bytes that are not zeros end.
        len: u64,
    },
}

/// Iterator of [`Journal::commands_from`]: `(index, command)` pairs.
pub struct CommandsFrom<'a, S: Storage> {
    journal: &'a Journal<S>,
    segment: Option<usize>,
    from: u64,
    bytes: Vec<u8>,
    pos: usize,
    loaded: bool,
    pending: std::collections::VecDeque<(u64, Command)>,
    /// The merge ticket of the record `pending` came from.
    ticket: Option<u64>,
}

/// One record read back by [`Journal::records_from`]: a run of commands and, in a sharded
/// market's journal, its merge ticket.
#[derive(Debug)]
pub struct Run {
    pub ticket: Option<u64>,
    /// `(index, command)`, from the first index asked for on.
    pub commands: Vec<(u64, Command)>,
}

/// Iterator of [`Journal::records_from`].
pub struct RecordsFrom<'a, S: Storage>(CommandsFrom<'a, S>);

impl<S: Storage> Iterator for RecordsFrom<'_, S> {
    type Item = Result<Run, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.0.next_record() {
            Ok(true) => Some(Ok(Run {
                ticket: self.0.ticket,
                commands: self.0.pending.drain(..).collect(),
            })),
            Ok(false) => None,
            Err(e) => {
                self.0.segment = None;
                Some(Err(e))
            }
        }
    }
}

impl<S: Storage> CommandsFrom<'_, S> {
    fn corrupt(&self, info: &SegmentInfo, offset: usize, reason: String) -> JournalError {
        JournalError::Corrupt {
            file: self.journal.storage.describe(&info.name),
            offset: offset as u64,
            reason,
        }
    }

    /// Decodes the next record into `pending`; `false` at the end of the journal.
    fn next_record(&mut self) -> Result<bool, JournalError> {
        loop {
            let Some(i) = self.segment else {
                return Ok(false);
            };
            let Some(info) = self.journal.segments.get(i) else {
                self.segment = None;
                return Ok(false);
            };
            if !self.loaded {
                self.journal
                    .storage
                    .read_prefix(&info.name, info.len, &mut self.bytes)
                    .map_err(JournalError::io(format!(
                        "reading {}",
                        self.journal.storage.describe(&info.name)
                    )))?;
                self.pos = SEGMENT_HEADER_LEN;
                self.loaded = true;
            }
            if self.pos as u64 >= info.len {
                self.segment = Some(i + 1);
                self.loaded = false;
                continue;
            }
            let at = self.pos;
            let record = match parse_record(&self.bytes, at) {
                Parsed::Record(r) => r,
                // The file changed since it was scanned.
                _ => return Err(self.corrupt(info, at, "record no longer checks out".into())),
            };
            self.pos = record.end;
            if record.last() < self.from {
                continue;
            }
            self.ticket = record.ticket;
            for (k, command) in record.commands().enumerate() {
                let command = command.map_err(|e| self.corrupt(info, at, e.to_string()))?;
                let index = record.first + k as u64;
                if index >= self.from {
                    self.pending.push_back((index, command));
                }
            }
            return Ok(true);
        }
    }
}

impl<S: Storage> Iterator for CommandsFrom<'_, S> {
    type Item = Result<(u64, Command), JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Some(Ok(c));
            }
            match self.next_record() {
                Ok(true) => continue,
                Ok(false) => return None,
                Err(e) => {
                    self.segment = None;
                    return Some(Err(e));
                }
            }
        }
    }
}
