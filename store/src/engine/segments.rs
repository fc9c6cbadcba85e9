//! Shard payloads in append-only segment files, one per checkpoint: `segments/<job>@<step>.seg`
//! in the data dir. The index in RocksDB says where each shard lies (its offset; its length
//! and blake3 are in the record already), so a payload's bytes are written to the disk once,
//! not twice (RocksDB's WAL, then a blob file at flush) as when RocksDB held them.
//!
//! Durability: an append returns once its bytes are on the disk (`fdatasync`, which also
//! commits the file's new length). Concurrent appends to one file share fsyncs (group
//! commit): each append takes a ticket after its write, and one `fdatasync` covers every
//! ticket taken before it began, so a writer that queued behind an fsync usually finds its
//! bytes covered and returns without one of its own. The engine writes the index record
//! (synced) only after the append returns, so a crash between the two leaves unreferenced
//! bytes in the file, never a record pointing at bytes that are not there.
//!
//! Space: a checkpoint's delete removes its file; a shard deleted alone (an orphan sweep, a
//! stale copy, the old place of a rewritten one) has its range punched out of the file
//! (`FALLOC_FL_PUNCH_HOLE`), so the disk space returns at once where the file system allows
//! it (ext4, xfs, btrfs, tmpfs), and with the checkpoint's delete elsewhere.
//!
//! Writes are buffered: `O_DIRECT` appends were measured and reverted (see ARCHITECTURE.md,
//! "Why buffered, not `O_DIRECT`").
//!
//! Open files are kept in a map so that appends to one file share one append offset and one
//! fsync queue; past [`MAX_OPEN_SEGMENTS`] the files no request is using are closed.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::fcntl::{fallocate, posix_fadvise, FallocateFlags, PosixFadviseAdvice};
use rackpoint_proto::{JobName, Step};

/// Segment files kept open at most (beyond those in use by a request at the moment).
pub(super) const MAX_OPEN_SEGMENTS: usize = 256;
/// The folder of segment files inside the data dir.
const SEGMENTS_DIR: &str = "segments";
const SEGMENT_SUFFIX: &str = ".seg";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One checkpoint's segment file.
#[derive(Debug)]
pub(super) struct Segment {
    file: File,
    /// Where the next append starts (the file's length at open, then growing).
    end: Mutex<u64>,
    /// Tickets taken: one per append whose bytes are written (not yet necessarily synced).
    written: AtomicU64,
    /// Tickets covered by the last completed `fdatasync`; held while one runs.
    synced: Mutex<u64>,
}

impl Segment {
    fn open(path: &Path, create: bool) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create(create).open(path)?;
        let end = file.metadata()?.len();
        Ok(Self { file, end: Mutex::new(end), written: AtomicU64::new(0), synced: Mutex::new(0) })
    }

    /// Appends `bytes` and returns their offset once they are durable. A failed append
    /// leaves at most unreferenced bytes behind.
    pub(super) fn append(&self, bytes: &[u8]) -> io::Result<u64> {
        let offset = {
            let mut end = lock(&self.end);
            let offset = *end;
            *end += bytes.len() as u64;
            offset
        };
        self.file.write_all_at(bytes, offset)?;
        let ticket = self.written.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = lock(&self.synced);
        if *synced < ticket {
            // Every ticket up to `covered` was taken after its write finished, so this
            // fsync covers it.
            let covered = self.written.load(Ordering::SeqCst);
            self.file.sync_data()?;
            *synced = covered;
        }
        Ok(offset)
    }

    /// Reads `len` bytes at `offset`; `UnexpectedEof` if the file ends first. With
    /// `fill_cache` false the pages are dropped from the page cache afterwards (the
    /// scrubber's reads should not push out what restores are reading).
    pub(super) fn read(&self, offset: u64, len: u32, fill_cache: bool) -> io::Result<Vec<u8>> {
        let mut bytes = vec![0u8; len as usize];
        self.file.read_exact_at(&mut bytes, offset)?;
        if !fill_cache {
            // Advice only: its failure changes nothing but the cache.
            let advice = PosixFadviseAdvice::POSIX_FADV_DONTNEED;
            let _ = posix_fadvise(self.file.as_raw_fd(), offset as i64, i64::from(len), advice);
        }
        Ok(bytes)
    }

    /// Frees the disk space of `len` bytes at `offset` (their reads return zeros after). A
    /// file system without hole punching keeps the space until the checkpoint's delete.
    pub(super) fn punch(&self, offset: u64, len: u32) {
        let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        match fallocate(self.file.as_raw_fd(), mode, offset as i64, i64::from(len)) {
            Ok(()) | Err(Errno::EOPNOTSUPP) => {}
            Err(e) => tracing::warn!("cannot free {len} bytes at {offset} of a segment file: {e}"),
        }
    }

    /// Test hook: writes `bytes` at `offset` and cuts the file there when they end before
    /// `len` (a disk that lost the tail), without any sync.
    #[cfg(test)]
    pub(super) fn damage_for_test(&self, offset: u64, len: u32, bytes: &[u8]) {
        self.file.write_all_at(bytes, offset).expect("test write");
        if bytes.len() < len as usize {
            self.file.set_len(offset + bytes.len() as u64).expect("test truncate");
        }
    }
}

/// The segment files of one data dir.
#[derive(Debug)]
pub(super) struct Segments {
    dir: PathBuf,
    open: Mutex<HashMap<(JobName, Step), Arc<Segment>>>,
}

impl Segments {
    /// Opens (creating if needed) the segment folder inside `data_dir`.
    pub(super) fn open(data_dir: &Path) -> io::Result<Self> {
        let dir = data_dir.join(SEGMENTS_DIR);
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir, open: Mutex::new(HashMap::new()) })
    }

    fn path(&self, job: &JobName, step: Step) -> PathBuf {
        // Job names are A-Z a-z 0-9 . _ - and at most 128 bytes, so this is one plain file
        // name (a job named ".." included) well under 255 bytes.
        self.dir.join(format!("{}@{}{SEGMENT_SUFFIX}", job.as_str(), step.0))
    }

    /// The segment of checkpoint `(job, step)`; `None` if it has no file and `create` is
    /// false. A new file's directory entry is synced before the first append can return.
    pub(super) fn get(
        &self,
        job: &JobName,
        step: Step,
        create: bool,
    ) -> io::Result<Option<Arc<Segment>>> {
        let mut open = lock(&self.open);
        if let Some(segment) = open.get(&(job.clone(), step)) {
            return Ok(Some(segment.clone()));
        }
        let path = self.path(job, step);
        let existed = path.exists();
        let segment = match Segment::open(&path, create) {
            Ok(s) => Arc::new(s),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if !existed {
            File::open(&self.dir)?.sync_all()?;
        }
        if open.len() >= MAX_OPEN_SEGMENTS {
            open.retain(|_, s| Arc::strong_count(s) > 1);
        }
        open.insert((job.clone(), step), segment.clone());
        Ok(Some(segment))
    }

    /// Closes and deletes checkpoint `(job, step)`'s file, if it has one. The caller makes
    /// sure no append is under way (the engine holds its delete lock exclusively).
    pub(super) fn remove(&self, job: &JobName, step: Step) -> io::Result<()> {
        lock(&self.open).remove(&(job.clone(), step));
        match std::fs::remove_file(self.path(job, step)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The checkpoints that have a segment file. A file whose name is not one this module
    /// writes is left alone, with a warning.
    pub(super) fn checkpoints(&self) -> io::Result<Vec<(JobName, Step)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            let parsed = name.to_str().and_then(parse_name);
            match parsed {
                Some(checkpoint) => out.push(checkpoint),
                None => tracing::warn!("ignoring {name:?} in {}", self.dir.display()),
            }
        }
        Ok(out)
    }
}

/// The checkpoint of a segment file name `<job>@<step>.seg`.
fn parse_name(name: &str) -> Option<(JobName, Step)> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    let (job, step) = stem.rsplit_once('@')?;
    Some((JobName::new(job).ok()?, Step(step.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str) -> JobName {
        JobName::new(name).expect("valid")
    }

    #[test]
    fn appends_read_back_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let segments = Segments::open(dir.path()).expect("opens");
        assert!(segments.get(&job("j"), Step(1), false).expect("get").is_none());
        let s = segments.get(&job("j"), Step(1), true).expect("get").expect("created");
        let a = s.append(b"first").expect("append");
        let b = s.append(b"second").expect("append");
        assert_eq!((a, b), (0, 5));
        assert_eq!(s.read(b, 6, true).expect("read"), b"second");
        let err = s.read(b, 7, false).expect_err("past the end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        drop((s, segments));
        let segments = Segments::open(dir.path()).expect("reopens");
        let s = segments.get(&job("j"), Step(1), false).expect("get").expect("exists");
        assert_eq!(s.append(b"third").expect("append"), 11, "appends continue at the end");
        assert_eq!(s.read(a, 5, true).expect("read"), b"first");
        assert_eq!(segments.checkpoints().expect("list"), [(job("j"), Step(1))]);
        segments.remove(&job("j"), Step(1)).expect("remove");
        segments.remove(&job("j"), Step(1)).expect("removing again is fine");
        assert!(segments.checkpoints().expect("list").is_empty());
    }

    #[test]
    fn concurrent_appends_get_disjoint_ranges() {
        let dir = tempfile::tempdir().expect("temp dir");
        let segments = Segments::open(dir.path()).expect("opens");
        let s = segments.get(&job("j"), Step(1), true).expect("get").expect("created");
        let placed: Vec<(u64, u8)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let s = &s;
                    scope.spawn(move || (s.append(&[i; 1000]).expect("append"), i))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("no panic")).collect()
        });
        for (offset, i) in placed {
            assert_eq!(s.read(offset, 1000, true).expect("read"), [i; 1000]);
        }
    }

    #[test]
    fn a_punched_range_reads_as_zeros_and_its_neighbours_stay() {
        let dir = tempfile::tempdir().expect("temp dir");
        let segments = Segments::open(dir.path()).expect("opens");
        let s = segments.get(&job("j"), Step(1), true).expect("get").expect("created");
        let a = s.append(&[7u8; 8192]).expect("append");
        let b = s.append(&[9u8; 8192]).expect("append");
        s.punch(a, 8192);
        assert_eq!(s.read(a, 8192, true).expect("read"), [0u8; 8192]);
        assert_eq!(s.read(b, 8192, true).expect("read"), [9u8; 8192]);
    }

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let segments = Segments::open(dir.path()).expect("opens");
        assert_eq!(parse_name("..@7.seg"), Some((job(".."), Step(7))));
        assert_eq!(parse_name("a@b@3.seg"), None, "'@' is not in job names");
        assert_eq!(parse_name("job@x.seg"), None);
        assert_eq!(parse_name("job@3.tmp"), None);
        std::fs::write(dir.path().join(SEGMENTS_DIR).join("notes.txt"), b"x").expect("write");
        segments.get(&job(".."), Step(7), true).expect("get").expect("created");
        assert_eq!(segments.checkpoints().expect("list"), [(job(".."), Step(7))]);
    }
}
