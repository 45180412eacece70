//! Where the journal's files live: a directory on disk ([`DirStorage`]), or, in tests, a
//! simulated disk ([`SimStorage`]) that loses or tears whatever was not synced when it
//! "crashes", so recovery can be checked at every interesting moment deterministically instead
//! of hoping a `kill -9` lands there (TigerBeetle's approach).
//!
//! The contract the journal relies on, and the simulator enforces: bytes written to a file
//! survive a crash only once that file was synced after them (until then a crash keeps any
//! prefix of them, possibly with its last sector garbled, over what was there before); a
//! created, renamed or removed name survives only once the directory was synced after it.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A flat directory of named files.
pub trait Storage: Clone + Send + Sync + 'static {
    type File: StorageFile;

    /// Names of the files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// A whole file.
    fn read(&self, name: &str) -> io::Result<Vec<u8>>;
    /// The first `len` bytes of a file (fewer if it is shorter) into `into`, replacing what it
    /// held (its memory reused: a segment is tens of MiB, and fresh pages for each one cost
    /// more than reading it).
    fn read_prefix(&self, name: &str, len: u64, into: &mut Vec<u8>) -> io::Result<()>;
    /// Where a file's last byte that is not zero ends, and its length: what of a preallocated
    /// segment has been written, found without reading its zeros into memory.
    fn written_end(&self, name: &str) -> io::Result<(u64, u64)>;
    /// Creates a file (emptying one of that name) for writing from its start.
    fn create(&self, name: &str) -> io::Result<Self::File>;
    /// Opens an existing file for writing from byte `at` on (its end, or the end of the records
    /// in a preallocated file, whose zeros the writes then replace).
    fn write_at(&self, name: &str, at: u64) -> io::Result<Self::File>;
    /// Cuts a file to `len` bytes and syncs it.
    fn truncate(&self, name: &str, len: u64) -> io::Result<()>;
    /// Extends a file with zeros to `len` bytes and syncs the extension, size included (a file
    /// that long already is left as it is, unsynced): later writes inside those bytes change no metadata, so syncing them
    /// is a data write alone: no file-system journal commit for a new block or a new size (on
    /// this project's ext4 test machine, a mean 118–124 µs per group-commit sync against
    /// 150–153 µs when appending; README, "Durability").
    fn preallocate(&self, name: &str, len: u64) -> io::Result<()>;
    fn remove(&self, name: &str) -> io::Result<()>;
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes created, renamed and removed names durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Where the files are, for messages.
    fn describe(&self, name: &str) -> String;
}

/// A file open for writing, each write just after the previous one.
pub trait StorageFile: Send + 'static {
    type Sync: SyncFile;

    /// Writes `bytes` at the file's write position and moves the position past them.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// A handle another thread uses to sync this file while appends continue.
    fn sync_handle(&self) -> io::Result<Self::Sync>;
}

/// Syncs one file's data (`fdatasync`).
pub trait SyncFile: Send + 'static {
    fn sync_data(&self) -> io::Result<()>;
}

/// A directory on disk.
#[derive(Debug, Clone)]
pub struct DirStorage {
    dir: PathBuf,
}

impl DirStorage {
    /// Uses `dir`, creating it (and its parents) if needed.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        Ok(DirStorage { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes the directory's `LOCK` file for as long as the guard lives, so two processes
    /// never write one journal (an advisory `flock`, released by the kernel when the process
    /// dies, however it dies).
    pub fn lock(&self) -> Result<DirLock, super::JournalError> {
        let path = self.dir.join("LOCK");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(super::JournalError::io(format!(
                "opening {}",
                path.display()
            )))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(super::JournalError::Locked {
                dir: self.dir.display().to_string(),
                lock: path.display().to_string(),
            }),
            Err(fs::TryLockError::Error(e)) => Err(super::JournalError::Io {
                context: format!("locking {}", path.display()),
                source: e,
            }),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Storage for DirStorage {
    type File = DiskFile;

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Ok(name) = entry.file_name().into_string() {
                    names.push(name);
                }
            }
        }
        Ok(names)
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(name))
    }

    fn read_prefix(&self, name: &str, len: u64, into: &mut Vec<u8>) -> io::Result<()> {
        use std::io::Read;
        into.clear();
        File::open(self.path(name))?.take(len).read_to_end(into)?;
        Ok(())
    }

    fn written_end(&self, name: &str) -> io::Result<(u64, u64)> {
        use std::os::unix::fs::FileExt;
        const CHUNK: u64 = 1 << 20;
        let file = File::open(self.path(name))?;
        let len = file.metadata()?.len();
        let mut buf = vec![0u8; CHUNK.min(len) as usize];
        let mut end = len;
        while end > 0 {
            let start = end.saturating_sub(CHUNK);
            let chunk = &mut buf[..(end - start) as usize];
            file.read_exact_at(chunk, start)?;
            let written = super::format::written_len(chunk);
            if written > 0 {
                return Ok((start + written as u64, len));
            }
            end = start;
        }
        Ok((0, len))
    }

    fn create(&self, name: &str) -> io::Result<DiskFile> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(self.path(name))?;
        Ok(DiskFile { file, pos: 0 })
    }

    fn write_at(&self, name: &str, at: u64) -> io::Result<DiskFile> {
        let file = OpenOptions::new().write(true).open(self.path(name))?;
        Ok(DiskFile { file, pos: at })
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.path(name))?;
        file.set_len(len)?;
        file.sync_all()
    }

    fn preallocate(&self, name: &str, len: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        // Zeros written, not `fallocate`d: an allocated but unwritten extent still needs a
        // metadata commit when the first write converts it (measured: no faster than appending).
        const CHUNK: usize = 1 << 20;
        static ZEROS: [u8; CHUNK] = [0; CHUNK];
        let file = OpenOptions::new().write(true).open(self.path(name))?;
        let mut at = file.metadata()?.len();
        while at < len {
            let n = (len - at).min(CHUNK as u64) as usize;
            file.write_all_at(&ZEROS[..n], at)?;
            at += n as u64;
            // Synced chunk by chunk (`fdatasync` covers the new size too): the journal's own
            // syncs, running meanwhile, then queue behind at most one chunk of writeback, not
            // the whole file (measured: a 29 ms group-commit sync behind a 64 MiB fill synced
            // once; the whole fill takes ~60 ms instead of ~45).
            file.sync_data()?;
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from), self.path(to))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn describe(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

/// Holds a data directory's lock; see [`DirStorage::lock`].
#[derive(Debug)]
pub struct DirLock {
    /// Held for its lock, released when dropped (or when the process ends).
    _file: File,
}

/// A file on disk and where the next write goes: writes are positioned (`pwrite`), not
/// appended, so they can replace a preallocated segment's zeros.
#[derive(Debug)]
pub struct DiskFile {
    file: File,
    pos: u64,
}

impl StorageFile for DiskFile {
    type Sync = File;

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(bytes, self.pos)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn sync_handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }
}

impl SyncFile for File {
    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }
}

/// A simulated disk for crash tests. Cloning shares the disk.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    disk: Arc<Mutex<SimDisk>>,
}

#[derive(Debug, Default, Clone)]
struct SimDisk {
    /// What the directory lists now.
    files: BTreeMap<String, Arc<Mutex<SimFile>>>,
    /// What the directory listed when it was last synced: the names a crash keeps.
    durable_names: BTreeMap<String, Arc<Mutex<SimFile>>>,
    /// Fails every operation from now on (a dying disk).
    failing: bool,
}

#[derive(Debug, Default, Clone)]
struct SimFile {
    /// What reads see.
    data: Vec<u8>,
    /// What a crash keeps for sure: the file as of its last sync.
    durable: Vec<u8>,
    /// The bytes written since the last sync (writes follow one another, so one range).
    dirty: Option<std::ops::Range<usize>>,
}

impl SimFile {
    fn write(&mut self, at: usize, bytes: &[u8]) {
        let end = at + bytes.len();
        if self.data.len() < end {
            self.data.resize(end, 0);
        }
        self.data[at..end].copy_from_slice(bytes);
        self.dirty = Some(match self.dirty.take() {
            Some(r) => r.start.min(at)..r.end.max(end),
            None => at..end,
        });
    }

    fn sync(&mut self) {
        let len = self.data.len();
        self.durable.resize(len, 0);
        if let Some(r) = self.dirty.take() {
            let r = r.start.min(len)..r.end.min(len);
            self.durable[r.clone()].copy_from_slice(&self.data[r]);
        }
    }

    fn unsynced(&self) -> usize {
        self.dirty.as_ref().map_or(0, |r| r.len())
    }
}

/// How a crash treats the bytes that were written but not synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tear {
    /// They are all lost.
    Lose,
    /// The first `n` of them survive (fewer if fewer were written).
    Keep(usize),
    /// The first `n` survive and the last of those are garbage: a sector caught mid-write.
    Garble(usize),
}

impl SimStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// The disk as a machine would find it after losing power now: unsynced bytes of each file
    /// treated by `tear(name)`, names not yet made durable by a directory sync gone.
    pub fn crash(&self, mut tear: impl FnMut(&str) -> Tear) -> SimStorage {
        let disk = self.disk.lock();
        let mut files = BTreeMap::new();
        for (name, file) in &disk.durable_names {
            let f = file.lock();
            let mut data = f.durable.clone();
            if let Some(r) = &f.dirty {
                let unsynced = &f.data[r.start.min(f.data.len())..r.end.min(f.data.len())];
                let (kept, garbled) = match tear(name) {
                    Tear::Lose => (0, 0),
                    Tear::Keep(n) => (n.min(unsynced.len()), 0),
                    Tear::Garble(n) => (n.min(unsynced.len()), n.min(unsynced.len()).min(7)),
                };
                let end = r.start + kept;
                if data.len() < end {
                    data.resize(end, 0);
                }
                data[r.start..end].copy_from_slice(&unsynced[..kept]);
                for (i, b) in data[end - garbled..end].iter_mut().enumerate() {
                    *b = b.wrapping_mul(31).wrapping_add(0x5A ^ i as u8);
                }
            }
            let file = SimFile {
                durable: data.clone(),
                data,
                dirty: None,
            };
            files.insert(name.clone(), Arc::new(Mutex::new(file)));
        }
        SimStorage {
            disk: Arc::new(Mutex::new(SimDisk {
                durable_names: files.clone(),
                files,
                failing: false,
            })),
        }
    }

    /// Bytes written to `name` but not yet synced.
    pub fn unsynced(&self, name: &str) -> usize {
        let disk = self.disk.lock();
        disk.files.get(name).map_or(0, |f| f.lock().unsynced())
    }

    /// Makes every later operation fail with an I/O error.
    pub fn fail_from_now(&self) {
        self.disk.lock().failing = true;
    }

    /// Overwrites bytes of a file in place (tests of damage in the middle of a journal).
    pub fn poke(&self, name: &str, at: usize, f: impl FnOnce(&mut u8)) {
        let disk = self.disk.lock();
        let mut file = disk.files.get(name).expect("file exists").lock();
        f(&mut file.data[at]);
        // Damage on the medium: a crash keeps it too.
        if at < file.durable.len() {
            file.durable[at] = file.data[at];
        }
    }

    fn check(disk: &SimDisk) -> io::Result<()> {
        if disk.failing {
            return Err(io::Error::other("simulated disk failure"));
        }
        Ok(())
    }

    fn file(&self, name: &str) -> io::Result<Arc<Mutex<SimFile>>> {
        let disk = self.disk.lock();
        Self::check(&disk)?;
        disk.files
            .get(name)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {name}")))
    }
}

impl Storage for SimStorage {
    type File = SimWriter;

    fn list(&self) -> io::Result<Vec<String>> {
        let disk = self.disk.lock();
        Self::check(&disk)?;
        Ok(disk.files.keys().cloned().collect())
    }

    fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        Ok(self.file(name)?.lock().data.clone())
    }

    fn read_prefix(&self, name: &str, len: u64, into: &mut Vec<u8>) -> io::Result<()> {
        let file = self.file(name)?;
        let f = file.lock();
        into.clear();
        into.extend_from_slice(&f.data[..f.data.len().min(len as usize)]);
        Ok(())
    }

    fn written_end(&self, name: &str) -> io::Result<(u64, u64)> {
        let file = self.file(name)?;
        let f = file.lock();
        let end = super::format::written_len(&f.data);
        Ok((end as u64, f.data.len() as u64))
    }

    fn create(&self, name: &str) -> io::Result<SimWriter> {
        let mut disk = self.disk.lock();
        Self::check(&disk)?;
        let file = Arc::new(Mutex::new(SimFile::default()));
        disk.files.insert(name.to_string(), file.clone());
        Ok(SimWriter {
            file,
            disk: self.clone(),
            pos: 0,
        })
    }

    fn write_at(&self, name: &str, at: u64) -> io::Result<SimWriter> {
        Ok(SimWriter {
            file: self.file(name)?,
            disk: self.clone(),
            pos: at as usize,
        })
    }

    fn truncate(&self, name: &str, len: u64) -> io::Result<()> {
        let file = self.file(name)?;
        let mut f = file.lock();
        f.data.truncate(len as usize);
        f.sync();
        Ok(())
    }

    fn preallocate(&self, name: &str, len: u64) -> io::Result<()> {
        let file = self.file(name)?;
        let mut f = file.lock();
        if (f.data.len() as u64) < len {
            f.data.resize(len as usize, 0);
            f.sync();
        }
        Ok(())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut disk = self.disk.lock();
        Self::check(&disk)?;
        disk.files
            .remove(name)
            .map(drop)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {name}")))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.disk.lock();
        Self::check(&disk)?;
        let file = disk
            .files
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {from}")))?;
        disk.files.insert(to.to_string(), file);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut disk = self.disk.lock();
        Self::check(&disk)?;
        disk.durable_names = disk.files.clone();
        Ok(())
    }

    fn describe(&self, name: &str) -> String {
        format!("sim:{name}")
    }
}

/// A simulated file open for writing.
#[derive(Debug)]
pub struct SimWriter {
    file: Arc<Mutex<SimFile>>,
    disk: SimStorage,
    pos: usize,
}

impl StorageFile for SimWriter {
    type Sync = SimSync;

    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        SimStorage::check(&self.disk.disk.lock())?;
        self.file.lock().write(self.pos, bytes);
        self.pos += bytes.len();
        Ok(())
    }

    fn sync_handle(&self) -> io::Result<SimSync> {
        Ok(SimSync {
            file: self.file.clone(),
            disk: self.disk.clone(),
        })
    }
}

#[derive(Debug)]
pub struct SimSync {
    file: Arc<Mutex<SimFile>>,
    disk: SimStorage,
}

impl SyncFile for SimSync {
    fn sync_data(&self) -> io::Result<()> {
        SimStorage::check(&self.disk.disk.lock())?;
        self.file.lock().sync();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_synced_bytes_and_durable_names_only() {
        let disk = SimStorage::new();
        let mut a = disk.create("a").unwrap();
        disk.sync_dir().unwrap();
        a.append(b"hello").unwrap();
        a.sync_handle().unwrap().sync_data().unwrap();
        a.append(b" world").unwrap();
        let mut b = disk.create("b").unwrap();
        b.append(b"never named durably").unwrap();
        b.sync_handle().unwrap().sync_data().unwrap();

        let lost = disk.crash(|_| Tear::Lose);
        assert_eq!(lost.read("a").unwrap(), b"hello");
        assert!(lost.read("b").is_err(), "b's name was never synced");
        let torn = disk.crash(|_| Tear::Keep(3));
        assert_eq!(torn.read("a").unwrap(), b"hello wo");
        let garbled = disk.crash(|_| Tear::Garble(3));
        let g = garbled.read("a").unwrap();
        assert_eq!(&g[..5], b"hello");
        assert_ne!(&g[5..], b" wo");
    }

    #[test]
    fn a_crash_keeps_a_preallocated_files_zeros_under_unsynced_writes() {
        let disk = SimStorage::new();
        let mut a = disk.create("a").unwrap();
        a.append(b"head").unwrap();
        disk.preallocate("a", 10).unwrap();
        disk.sync_dir().unwrap();
        a.append(b"XYZ").unwrap();
        assert_eq!(disk.unsynced("a"), 3);
        assert_eq!(disk.read("a").unwrap(), b"headXYZ\0\0\0");
        let lost = disk.crash(|_| Tear::Lose);
        assert_eq!(lost.read("a").unwrap(), b"head\0\0\0\0\0\0");
        let torn = disk.crash(|_| Tear::Keep(2));
        assert_eq!(torn.read("a").unwrap(), b"headXY\0\0\0\0");
        a.sync_handle().unwrap().sync_data().unwrap();
        let kept = disk.crash(|_| Tear::Lose);
        assert_eq!(kept.read("a").unwrap(), b"headXYZ\0\0\0");
    }

    #[test]
    fn a_failing_disk_fails_every_operation() {
        let disk = SimStorage::new();
        let mut a = disk.create("a").unwrap();
        disk.fail_from_now();
        assert!(a.append(b"x").is_err());
        assert!(disk.sync_dir().is_err());
        assert!(disk.list().is_err());
    }

    #[test]
    fn the_directory_storage_appends_truncates_and_renames() {
        let dir = std::env::temp_dir().join(format!("tickerd-storage-{}", std::process::id()));
        let disk = DirStorage::new(&dir).unwrap();
        let mut f = disk.create("x.tmp").unwrap();
        f.append(b"abcdef").unwrap();
        f.sync_handle().unwrap().sync_data().unwrap();
        disk.rename("x.tmp", "x").unwrap();
        disk.sync_dir().unwrap();
        disk.truncate("x", 3).unwrap();
        let mut f = disk.write_at("x", 3).unwrap();
        f.append(b"Z").unwrap();
        assert_eq!(disk.read("x").unwrap(), b"abcZ");
        disk.preallocate("x", 6).unwrap();
        let mut f = disk.write_at("x", 1).unwrap();
        f.append(b"12").unwrap();
        f.append(b"3").unwrap();
        assert_eq!(disk.read("x").unwrap(), b"a123\0\0");
        let mut bytes = b"left over".to_vec();
        disk.read_prefix("x", 3, &mut bytes).unwrap();
        assert_eq!(bytes, b"a12");
        disk.read_prefix("x", 60, &mut bytes).unwrap();
        assert_eq!(bytes, b"a123\0\0");
        assert_eq!(disk.written_end("x").unwrap(), (4, 6));
        // Across the reads' chunk boundary, and a file of zeros only.
        disk.preallocate("x", (1 << 20) + 5).unwrap();
        assert_eq!(disk.written_end("x").unwrap(), (4, (1 << 20) + 5));
        let mut f = disk.write_at("x", 1 << 20).unwrap();
        f.append(b"q").unwrap();
        assert_eq!(
            disk.written_end("x").unwrap(),
            ((1 << 20) + 1, (1 << 20) + 5)
        );
        let mut z = disk.create("z").unwrap();
        z.append(&[0; 10]).unwrap();
        assert_eq!(disk.written_end("z").unwrap(), (0, 10));
        disk.remove("z").unwrap();
        assert_eq!(disk.list().unwrap(), vec!["x".to_string()]);
        disk.remove("x").unwrap();
        let lock = disk.lock().unwrap();
        assert!(matches!(
            disk.lock(),
            Err(super::super::JournalError::Locked { .. })
        ));
        drop(lock);
        disk.lock().unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
