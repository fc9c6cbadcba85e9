//! Shard payloads in append-only segment files, one per checkpoint: `segments/<job>@<step>.seg`
//! in the data dir. The index in RocksDB says where each shard lies (its offset; its length
//! and blake3 are in the record already), so a payload's bytes are written to the disk once,
//! not twice (RocksDB's WAL, then a blob file at flush) as when RocksDB held them.
//!
//! Writes bypass the page cache (`O_DIRECT`) where the file system allows it: the disk reads
//! the payload straight from the request's buffer, so the node's CPU does not copy each byte
//! into the page cache (in a profile of a save, that kernel copy was 27% of the nodes' CPU).
//! Appends start at multiples of [`SEGMENT_ALIGN`] and direct writes are whole multiples of
//! it: a payload in an aligned buffer of a whole number of blocks (the service receives
//! shards into such buffers) is written as it is, any other through an aligned, zero-padded
//! copy. Reads go through the page cache as before. A file system that refuses `O_DIRECT`
//! (tmpfs) gets buffered writes. Direct appends that grow a file take ext4's inode lock
//! exclusively, one at a time, so the file is grown ahead in steps of
//! [`SEGMENT_PREALLOC_BYTES`] (`fallocate`), and appends into the allocated blocks run side by
//! side; closing the file gives back what was allocated past its last append.
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
//! stale copy, an overwrite) has its range punched out of the file
//! (`FALLOC_FL_PUNCH_HOLE`), so the disk space returns at once where the file system allows
//! it (ext4, xfs, btrfs, tmpfs), and with the checkpoint's delete elsewhere.
//!
//! Open files are kept in a map so that appends to one file share one append offset and one
//! fsync queue; past [`MAX_OPEN_SEGMENTS`] the files no request is using are closed.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::fcntl::{fallocate, posix_fadvise, FallocateFlags, OFlag, PosixFadviseAdvice};
use rackpoint_proto::{JobName, Step};

/// Segment files kept open at most (beyond those in use by a request at the moment); each
/// takes two descriptors (buffered and `O_DIRECT`), well inside the usual limit of 1024 beside
/// RocksDB's files and the node's sockets.
pub(super) const MAX_OPEN_SEGMENTS: usize = 128;
/// Appends start at multiples of this many bytes, and direct writes are multiples of it (the
/// largest logical block size of common disks).
pub const SEGMENT_ALIGN: usize = 4096;
/// How far ahead of its appends a segment file taking direct writes is allocated.
pub(super) const SEGMENT_PREALLOC_BYTES: u64 = 16 * 1024 * 1024;
/// The folder of segment files inside the data dir.
const SEGMENTS_DIR: &str = "segments";
const SEGMENT_SUFFIX: &str = ".seg";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `n` rounded up to a multiple of [`SEGMENT_ALIGN`].
fn round_up(n: u64) -> u64 {
    n.div_ceil(SEGMENT_ALIGN as u64) * SEGMENT_ALIGN as u64
}

/// Whether `bytes` can be written with `O_DIRECT` as they are: an aligned start and a whole
/// number of blocks.
fn direct_ready(bytes: &[u8]) -> bool {
    bytes.as_ptr().align_offset(SEGMENT_ALIGN) == 0 && bytes.len().is_multiple_of(SEGMENT_ALIGN)
}

/// A buffer for `len` bytes that start on a [`SEGMENT_ALIGN`] boundary: it holds `start`
/// padding bytes, and the next `len` bytes pushed (without growing it past its capacity, so
/// it never moves) are the aligned ones. No unsafe code: the `Vec` is over-allocated and the
/// padding pushed first.
pub fn aligned_vec(len: usize) -> (Vec<u8>, usize) {
    let mut buf: Vec<u8> = Vec::with_capacity(len + SEGMENT_ALIGN - 1);
    let start = buf.as_ptr().align_offset(SEGMENT_ALIGN);
    buf.resize(start, 0);
    (buf, start)
}

/// The end of a segment file's appends and of its allocated blocks.
#[derive(Debug)]
struct Tail {
    /// Where the next append starts (the file's length at open, rounded up, then growing).
    end: u64,
    /// The file's length: `end` or more, when allocated ahead.
    allocated: u64,
}

/// One checkpoint's segment file.
#[derive(Debug)]
pub(super) struct Segment {
    file: File,
    /// The same file opened with `O_DIRECT`, if the file system allows it.
    direct: Option<File>,
    /// Where the next append starts, and how far the file is allocated.
    tail: Mutex<Tail>,
    /// Tickets taken: one per append whose bytes are written (not yet necessarily synced).
    written: AtomicU64,
    /// Tickets covered by the last completed `fdatasync`; held while one runs.
    synced: Mutex<u64>,
}

impl Segment {
    fn open(path: &Path, create: bool) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create(create).open(path)?;
        let direct = OpenOptions::new().write(true).custom_flags(OFlag::O_DIRECT.bits()).open(path);
        let direct = direct
            .inspect_err(|e| tracing::debug!("buffered writes to {}: {e}", path.display()))
            .ok();
        let len = file.metadata()?.len();
        let tail = Mutex::new(Tail { end: round_up(len), allocated: len });
        Ok(Self { file, direct, tail, written: AtomicU64::new(0), synced: Mutex::new(0) })
    }

    /// Writes `bytes` at the aligned `offset`: directly when the file and the buffer allow it
    /// (through an aligned, zero-padded copy when the buffer does not), else buffered.
    fn write_at(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let Some(direct) = &self.direct else { return self.file.write_all_at(bytes, offset) };
        if direct_ready(bytes) {
            return direct.write_all_at(bytes, offset);
        }
        let padded = round_up(bytes.len() as u64) as usize;
        let (mut copy, start) = aligned_vec(padded);
        copy.extend_from_slice(bytes);
        copy.resize(start + padded, 0);
        direct.write_all_at(&copy[start..], offset)
    }

    /// Appends `bytes` and returns their offset once they are durable. A failed append
    /// leaves at most unreferenced bytes behind.
    pub(super) fn append(&self, bytes: &[u8]) -> io::Result<u64> {
        let offset = {
            let mut tail = lock(&self.tail);
            let offset = tail.end;
            tail.end += round_up(bytes.len() as u64);
            if self.direct.is_some() && tail.end > tail.allocated {
                self.allocate_ahead(&mut tail);
            }
            offset
        };
        self.write_at(bytes, offset)?;
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

    /// Grows the file to the next multiple of [`SEGMENT_PREALLOC_BYTES`] past `tail.end`. If
    /// the file system cannot, the appends grow the file themselves.
    fn allocate_ahead(&self, tail: &mut Tail) {
        let to = tail.end.next_multiple_of(SEGMENT_PREALLOC_BYTES);
        let (from, len) = (tail.allocated as i64, (to - tail.allocated) as i64);
        match fallocate(self.file.as_raw_fd(), FallocateFlags::empty(), from, len) {
            Ok(()) => tail.allocated = to,
            Err(e) => tracing::debug!("cannot allocate a segment file ahead: {e}"),
        }
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

impl Drop for Segment {
    /// Gives back the blocks allocated past the last append (a crash leaves them, at most
    /// [`SEGMENT_PREALLOC_BYTES`] a file, until the checkpoint's delete).
    fn drop(&mut self) {
        let tail = lock(&self.tail);
        if tail.allocated > tail.end {
            if let Err(e) = self.file.set_len(tail.end) {
                tracing::warn!("cannot trim a segment file's allocation: {e}");
            }
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
        assert_eq!((a, b), (0, SEGMENT_ALIGN as u64), "appends start on block boundaries");
        assert_eq!(s.read(b, 6, true).expect("read"), b"second");
        drop((s, segments));
        let segments = Segments::open(dir.path()).expect("reopens");
        let s = segments.get(&job("j"), Step(1), false).expect("get").expect("exists");
        let err = s.read(b, SEGMENT_ALIGN as u32 + 1, false).expect_err("past the end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "closing gave back the allocation");
        let c = s.append(b"third").expect("append");
        assert_eq!(c, 2 * SEGMENT_ALIGN as u64, "appends continue at the end");
        assert_eq!(s.read(a, 5, true).expect("read"), b"first");
        assert_eq!(segments.checkpoints().expect("list"), [(job("j"), Step(1))]);
        segments.remove(&job("j"), Step(1)).expect("remove");
        segments.remove(&job("j"), Step(1)).expect("removing again is fine");
        assert!(segments.checkpoints().expect("list").is_empty());
    }

    #[test]
    fn aligned_and_unaligned_payloads_read_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let segments = Segments::open(dir.path()).expect("opens");
        let s = segments.get(&job("j"), Step(1), true).expect("get").expect("created");
        assert!(s.direct.is_some(), "the test's file system takes O_DIRECT writes");
        let block: Vec<u8> = (0..2 * SEGMENT_ALIGN).map(|i| (i % 251) as u8).collect();
        let (mut buf, start) = aligned_vec(block.len());
        let before = buf.as_ptr();
        buf.extend_from_slice(&block);
        assert_eq!(buf.as_ptr(), before, "filling it never moves it");
        assert!(direct_ready(&buf[start..]));
        let a = s.append(&buf[start..]).expect("an aligned append");
        let odd = &block[1..1001];
        assert!(!direct_ready(odd));
        let b = s.append(odd).expect("an unaligned append");
        assert_eq!(s.read(a, block.len() as u32, true).expect("read"), block);
        assert_eq!(s.read(b, 1000, true).expect("read"), odd);
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
