//! Snapshot files: the state after one journaled command, in named sections (the engine's,
//! the feeds', ...) each with its own CRC32C, written so that a crash at any moment leaves
//! either the old set of snapshots or the new one: temp file, sync, rename, sync directory.
//!
//! | offset | size | header field |
//! |---|---|---|
//! | 0 | 8 | magic `TICKSNAP` |
//! | 8 | 2 | format version ([`SNAPSHOT_VERSION`]) |
//! | 10 | 2 | number of sections |
//! | 12 | 4 | reserved, zero |
//! | 16 | 8 | journal index of the last command the state includes |
//! | 24 | 4 | CRC32C of bytes 0..24 |
//! | 28 | 4 | reserved, zero |
//!
//! Then each section: name length (`u8`), the name (UTF-8), payload length (`u64`), CRC32C of
//! the section's name length, name, payload length and payload (`u32`), the payload. What a payload holds is its owner's business (the engine's
//! is a postcard-encoded [`crate::EngineSnapshot`]).

use super::storage::{Storage, StorageFile, SyncFile};
use super::{snapshot_name, JournalError};

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"TICKSNAP";
pub const SNAPSHOT_VERSION: u16 = 1;
const HEADER_LEN: usize = 32;

/// One named part of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSection {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A snapshot read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Journal index of the last command the state includes.
    pub index: u64,
    pub sections: Vec<SnapshotSection>,
}

impl SnapshotFile {
    pub fn section(&self, name: &str) -> Option<&[u8]> {
        self.sections
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.bytes.as_slice())
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let body: usize = self
            .sections
            .iter()
            .map(|s| 1 + s.name.len() + 12 + s.bytes.len())
            .sum();
        let mut out = Vec::with_capacity(HEADER_LEN + body);
        out.extend_from_slice(&SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.sections.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.index.to_le_bytes());
        let crc = crc32c::crc32c(&out[0..24]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        for s in &self.sections {
            let start = out.len();
            let name = s.name.as_bytes();
            out.push(name.len().min(255) as u8);
            out.extend_from_slice(&name[..name.len().min(255)]);
            out.extend_from_slice(&(s.bytes.len() as u64).to_le_bytes());
            let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..]), &s.bytes);
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&s.bytes);
        }
        out
    }

    /// Reads a snapshot's bytes; the error says what is wrong and where.
    pub fn decode(bytes: &[u8]) -> Result<SnapshotFile, String> {
        if bytes.len() < HEADER_LEN {
            return Err(format!("{} bytes, shorter than the header", bytes.len()));
        }
        if bytes[0..8] != SNAPSHOT_MAGIC {
            return Err("not a tickerd snapshot (bad magic)".into());
        }
        if crc32c::crc32c(&bytes[0..24]) != u32::from_le_bytes(bytes[24..28].try_into().expect("4"))
        {
            return Err("header checksum mismatch".into());
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != SNAPSHOT_VERSION {
            return Err(format!(
                "snapshot format version {version} is not supported (this build reads {SNAPSHOT_VERSION})"
            ));
        }
        let count = u16::from_le_bytes([bytes[10], bytes[11]]) as usize;
        let index = u64::from_le_bytes(bytes[16..24].try_into().expect("8"));
        let mut cursor = Cursor {
            bytes,
            pos: HEADER_LEN,
        };
        let mut sections = Vec::with_capacity(count);
        for _ in 0..count {
            let start = cursor.pos;
            let len = cursor.take(1, "a section name length")?[0] as usize;
            let name = String::from_utf8(cursor.take(len, "a section name")?.to_vec())
                .map_err(|_| "a section name is not UTF-8".to_string())?;
            let len =
                u64::from_le_bytes(cursor.take(8, "a section length")?.try_into().expect("8"));
            let described = crc32c::crc32c(&bytes[start..cursor.pos]);
            let crc =
                u32::from_le_bytes(cursor.take(4, "a section checksum")?.try_into().expect("4"));
            let len = usize::try_from(len).map_err(|_| format!("section {name} is too large"))?;
            let payload = cursor.take(len, "a section")?;
            if crc32c::crc32c_append(described, payload) != crc {
                return Err(format!("section {name} fails its checksum"));
            }
            sections.push(SnapshotSection {
                name,
                bytes: payload.to_vec(),
            });
        }
        if cursor.pos != bytes.len() {
            return Err(format!(
                "{} bytes after the last section",
                bytes.len() - cursor.pos
            ));
        }
        Ok(SnapshotFile { index, sections })
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.bytes.len() - self.pos < n {
            return Err(format!("ends inside {what} at byte {}", self.pos));
        }
        self.pos += n;
        Ok(&self.bytes[self.pos - n..self.pos])
    }
}

/// Writes a snapshot durably: a crash before the final directory sync leaves at most a
/// `.tmp` file, which the next open deletes.
pub fn write<S: Storage>(storage: &S, snapshot: &SnapshotFile) -> Result<(), JournalError> {
    let name = snapshot_name(snapshot.index);
    let tmp = format!("{name}.tmp");
    let err = |what: &str| JournalError::io(format!("{what} {}", storage.describe(&tmp)));
    let mut file = storage.create(&tmp).map_err(err("creating"))?;
    file.append(&snapshot.encode()).map_err(err("writing"))?;
    file.sync_handle()
        .and_then(|h| h.sync_data())
        .map_err(err("syncing"))?;
    drop(file);
    storage.rename(&tmp, &name).map_err(err("renaming"))?;
    storage.sync_dir().map_err(err("syncing the directory of"))
}

/// Reads the snapshot cut after command `index`.
pub fn read<S: Storage>(storage: &S, index: u64) -> Result<SnapshotFile, JournalError> {
    let name = snapshot_name(index);
    let file = storage.describe(&name);
    let bytes = storage
        .read(&name)
        .map_err(JournalError::io(format!("reading {file}")))?;
    let snapshot = SnapshotFile::decode(&bytes).map_err(|reason| JournalError::BadSnapshot {
        file: file.clone(),
        reason,
    })?;
    if snapshot.index != index {
        return Err(JournalError::BadSnapshot {
            file,
            reason: format!("it says it was cut after command {}", snapshot.index),
        });
    }
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::storage::{SimStorage, Tear};

    fn sample() -> SnapshotFile {
        SnapshotFile {
            index: 42,
            sections: vec![
                SnapshotSection {
                    name: "engine".into(),
                    bytes: (0..200u8).collect(),
                },
                SnapshotSection {
                    name: "feeds".into(),
                    bytes: vec![],
                },
            ],
        }
    }

    #[test]
    fn a_snapshot_reads_back_whole() {
        let disk = SimStorage::new();
        write(&disk, &sample()).unwrap();
        let back = read(&disk, 42).unwrap();
        assert_eq!(back, sample());
        assert_eq!(back.section("feeds"), Some(&[][..]));
        assert_eq!(back.section("nope"), None);
    }

    #[test]
    fn every_truncation_and_bit_flip_is_refused() {
        let bytes = sample().encode();
        for cut in 0..bytes.len() {
            assert!(SnapshotFile::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for byte in (0..bytes.len()).step_by(3) {
            let mut bad = bytes.clone();
            bad[byte] ^= 0x10;
            let decoded = SnapshotFile::decode(&bad);
            // The reserved word after the header checksum is not covered; everything else is.
            let reserved = (28..32).contains(&byte);
            assert_eq!(decoded.is_ok(), reserved, "flip at {byte}");
        }
    }

    #[test]
    fn a_crash_during_a_write_leaves_the_old_snapshots_only() {
        let disk = SimStorage::new();
        write(&disk, &sample()).unwrap();
        let mut newer = sample();
        newer.index = 99;
        // Crash right after the temp file is written, before the rename.
        let tmp = format!("{}.tmp", snapshot_name(99));
        let mut f = disk.create(&tmp).unwrap();
        f.append(&newer.encode()).unwrap();
        let after = disk.crash(|_| Tear::Keep(usize::MAX));
        let mut names = after.list().unwrap();
        names.sort();
        assert_eq!(names, vec![snapshot_name(42)]);
    }
}
