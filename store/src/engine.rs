//! The node's storage engine: shards and manifests, their hashes, and the node's counters, in
//! RocksDB and (shard payloads) in per-checkpoint segment files. This is the only module that
//! knows RocksDB or the segment files; its API is synchronous (callers on the async runtime
//! use `tokio::task::spawn_blocking`).
//!
//! Layout: two column families keyed by the proto key encodings ([`ShardKey::encode`] and
//! [`ManifestKey::encode`], whose tag bytes keep shards and manifests apart):
//! - `index`: key -> a small record (length, blake3, for manifests the world size, and for a
//!   shard in a segment file its offset there);
//! - `data`: key -> the raw bytes of manifests (and of shards written before segment files,
//!   or by the `Inline` and `BlobFiles` modes that the engine benchmark compares).
//!
//! Shard payloads go to the checkpoint's segment file (`ValueStorage::Segments`, the default;
//! see `segments.rs`): appended and fdatasynced (group commit), then the index record is
//! written with a synced WAL. So each payload byte is written to the disk once, where RocksDB
//! wrote it twice (its WAL, then a blob file at flush) and copied it into a memtable between.
//! Measured with `examples/engine_values.rs` (16 writers of 1 MiB synced puts, then 4
//! readers on a cold page cache, 1 GiB; same run, medians of 3): see the figures at
//! [`ValueStorage::Segments`].
//!
//! Index and bytes of a value in the `data` family are written in one `WriteBatch`, so they
//! agree after any crash; reads take a snapshot so that the two lookups see the same version.
//! A shard's record is written only after its segment append is durable, and a reader that
//! finds bytes not matching the record it read (a rewrite or delete raced it) looks again
//! before it reports corruption.
//!
//! Before segment files, payloads were kept by BlobDB (`ValueStorage::BlobFiles`): values of
//! 64 KiB or more go to blob files when a memtable flushes, and the LSM tree keeps only
//! references, so compaction never rewrites shard bytes. Measured with
//! `examples/engine_values.rs` (16 writers of 1 MiB synced puts, then 4 readers on a cold
//! page cache; a noisy shared 2-core VM, medians):
//! - write MB/s: plain values 318 at 2 GiB, 218 at 6 GiB; blob files 286 and 260;
//! - read MB/s: plain values 1302 (2 GiB) and 1475 (6 GiB); blob files 764 and 870;
//! - disk bytes written per payload byte (exact, immune to noise): plain values 3.9 at
//!   6 GiB and growing with the data as leveled compaction rewrites values; blob files 2.0
//!   (WAL + blob file) whatever the size.
//!
//! Plain values read faster here, but a checkpoint store writes without end and at rack
//! scale compaction's rewriting of every shard would cost several times the disk bandwidth
//! that the writes themselves need; that decided it.
//!
//! Blob garbage collection is off (it rewrote live blobs: 3.2 bytes per payload byte). A
//! checkpoint delete compacts its key range, which removes every blob file whose shards are
//! all deleted; a blob file shared with a checkpoint still kept (shards written around the
//! same time go to the same file) is freed when that checkpoint is deleted too.
//!
//! Durability: every mutation is written with `WriteOptions::set_sync(true)` and returns only
//! after its WAL fsync (a shard's payload is fdatasynced in its segment file before that). Concurrent writers are batched by RocksDB into a write group whose
//! leader appends and fsyncs the WAL once for the whole group (group commit), so many
//! concurrent puts share one fsync instead of paying one each. Measured with
//! `engine_values --shard-kib 16`: one writer 74 MB/s (4,500 synced puts/s), 16 writers
//! 206 MB/s (2.8x, the fsyncs shared). With 1 MiB shards one writer already reaches the
//! disk's bandwidth here (380 MB/s either way).
//!
//! Counters (shards, shard bytes, manifests) are counted once at open by scanning the small
//! `index` family, then kept in memory. Two puts of one key are serialized by a striped key
//! lock (so a rewrite is counted once); puts share, and a checkpoint delete takes
//! exclusively, a reader-writer lock, so a delete counts exactly what it removes.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use rackpoint_proto::failpoint;
use rackpoint_proto::limits::{MAX_LIST_ENTRIES, MAX_SHARD_BYTES};
use rackpoint_proto::wire::ManifestEntry;
use rackpoint_proto::{
    CheckpointRange, Digest, ErrorCode, JobName, ManifestKey, Rank, ShardKey, Step,
};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction, ErrorKind, IteratorMode,
    Options, ReadOptions, WriteBatch, WriteOptions, DB,
};
use segments::{Segment, Segments};

mod cluster_map;
mod format;
mod jobs;
mod lifecycle;
mod marks;
mod segments;

pub use format::{DATA_FORMAT, FORMAT_FILE};
pub use jobs::JobPage;
pub use lifecycle::{ContentCheck, OrphanSweep, PartsPage};

const INDEX_CF: &str = "index";
const DATA_CF: &str = "data";
/// Format byte of an index record whose value is in the `data` family.
const RECORD_VERSION: u8 = 2;
/// Format byte of an index record whose shard is in its checkpoint's segment file.
const RECORD_IN_SEGMENT: u8 = 3;
/// Stripes of the per-key put lock (a power of two; collisions only serialize two puts).
const KEY_LOCK_STRIPES: usize = 64;

/// RocksDB tuning: bytes per memtable of the `data` family.
const DATA_WRITE_BUFFER_BYTES: usize = 64 * 1024 * 1024;
/// RocksDB tuning: memtables of the `data` family (one active, the rest flushing).
const DATA_WRITE_BUFFERS: i32 = 3;
/// RocksDB tuning: WAL bytes kept before the small `index` family is flushed to free them.
const MAX_TOTAL_WAL_BYTES: u64 = 512 * 1024 * 1024;
/// RocksDB tuning: values at least this large go to blob files when blob files are on.
const MIN_BLOB_BYTES: u64 = 64 * 1024;
/// RocksDB tuning: size of one blob file.
const BLOB_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// RocksDB tuning: background flush and compaction threads.
const BACKGROUND_JOBS: i32 = 4;
/// Reads of one shard before giving up when each finds it rewritten meanwhile.
const SHARD_READ_ATTEMPTS: usize = 3;

/// Where the engine keeps shard payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueStorage {
    /// Per-checkpoint segment files (the default): each payload is written once, fdatasynced
    /// by group commit, and located by its index record. See `segments.rs`.
    Segments,
    /// Plain RocksDB values: in the WAL, the memtable, then SST files.
    Inline,
    /// RocksDB BlobDB: values of `MIN_BLOB_BYTES` or more are written to blob files at
    /// flush, and the LSM tree holds only references to them.
    BlobFiles,
}

/// How to open an [`Engine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Shard payload bytes the engine will hold; 0 means no limit beyond the disk.
    pub capacity_bytes: u64,
    /// Where payloads go (default `Segments`, chosen by measurement: see the module docs
    /// and `examples/engine_values.rs`).
    pub values: ValueStorage,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { capacity_bytes: 0, values: ValueStorage::Segments }
    }
}

/// Why an engine operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Another process (or another engine in this one) holds the data dir's RocksDB lock.
    #[error("data dir {dir} is locked by another process (is another rackpoint-store using it?)")]
    Locked {
        /// The data dir.
        dir: PathBuf,
    },
    /// The data dir could not be created.
    #[error("cannot create data dir {dir}: {error}")]
    CreateDir {
        /// The data dir.
        dir: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// No such shard or manifest.
    #[error("not found")]
    NotFound,
    /// A payload's length is outside what its kind allows.
    #[error("{what} of {len} bytes is outside the allowed 1..={max}")]
    BadLength {
        /// Shard or manifest.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: u32,
    },
    /// A payload's blake3 is not the declared one; nothing was stored.
    #[error("payload blake3 {actual} does not match the declared {declared}")]
    HashMismatch {
        /// Hash the request declared.
        declared: Digest,
        /// Hash of the bytes received.
        actual: Digest,
    },
    /// Stored bytes or their index record no longer match; they are not served.
    #[error("stored value is corrupt: {reason}")]
    Corrupt {
        /// What did not match.
        reason: String,
    },
    /// Storing the shard would take the node past its configured capacity.
    #[error("capacity full: storing {len} more bytes would exceed {capacity} ({used} used)")]
    CapacityFull {
        /// Bytes the put adds.
        len: u64,
        /// Bytes used (stored plus reserved by puts in progress).
        used: u64,
        /// The configured capacity.
        capacity: u64,
    },
    /// The disk is out of space.
    #[error("disk full: {0}")]
    NoSpace(String),
    /// The request contradicts what is stored (see [`ErrorCode::Conflict`]); nothing changed.
    #[error("conflict: {reason}")]
    Conflict {
        /// What is stored and what was refused.
        reason: String,
    },
    /// A per-job bound of what the node holds would be passed (deletion marks); nothing
    /// changed.
    #[error("over a limit: {reason}")]
    TooMany {
        /// What is held, and the bound.
        reason: String,
    },
    /// The data folder is of a newer format than this build reads (written by a newer
    /// release): it is not opened. Run that release, or a newer one, on it.
    #[error("data dir {dir} is in data format {found}, newer than this build reads (format {newest} at most): run the release that wrote it, or a newer one")]
    NewerFormat {
        /// The data dir.
        dir: PathBuf,
        /// The format its `FORMAT` file names.
        found: u32,
        /// The newest format this build reads.
        newest: u32,
    },
    /// The data folder's `FORMAT` file is unreadable or not a format line.
    #[error("cannot read the data format from {path}: {reason}")]
    BadFormatFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Any other RocksDB failure.
    #[error("rocksdb: {0}")]
    Db(rocksdb::Error),
    /// A segment file could not be written or read.
    #[error("segment file: {0}")]
    Io(io::Error),
}

impl EngineError {
    /// The wire error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::NotFound => ErrorCode::NotFound,
            EngineError::BadLength { .. } | EngineError::TooMany { .. } => ErrorCode::TooLarge,
            EngineError::HashMismatch { .. } => ErrorCode::HashMismatch,
            EngineError::Corrupt { .. } => ErrorCode::Corrupt,
            EngineError::CapacityFull { .. } | EngineError::NoSpace(_) => ErrorCode::DiskFull,
            EngineError::Conflict { .. } => ErrorCode::Conflict,
            EngineError::Locked { .. }
            | EngineError::CreateDir { .. }
            | EngineError::NewerFormat { .. }
            | EngineError::BadFormatFile { .. }
            | EngineError::Db(_)
            | EngineError::Io(_) => ErrorCode::Internal,
        }
    }
}

/// Maps a RocksDB error: checksum failures are corruption, ENOSPC is a full disk.
fn db_error(e: rocksdb::Error) -> EngineError {
    let text = e.as_ref();
    if e.kind() == ErrorKind::Corruption {
        EngineError::Corrupt { reason: text.to_owned() }
    } else if text.contains("No space left") || text.contains("NoSpace") {
        EngineError::NoSpace(text.to_owned())
    } else {
        EngineError::Db(e)
    }
}

/// Maps a segment file error: ENOSPC is a full disk.
fn io_error(e: io::Error) -> EngineError {
    if e.kind() == io::ErrorKind::StorageFull {
        EngineError::NoSpace(e.to_string())
    } else {
        EngineError::Io(e)
    }
}

fn open_error(dir: &Path, e: rocksdb::Error) -> EngineError {
    let text = e.as_ref();
    if text.contains("LOCK") && text.to_ascii_lowercase().contains("lock") {
        EngineError::Locked { dir: dir.to_owned() }
    } else {
        db_error(e)
    }
}

/// A stored shard, its hash verified on read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredShard {
    /// blake3 of `bytes`, as stored at put time and checked again now.
    pub hash: Digest,
    /// The shard bytes.
    pub bytes: Vec<u8>,
}

/// A shard re-hashed where it lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedShard {
    /// blake3 of its bytes, as stored at put time and computed again now.
    pub hash: Digest,
    /// Its length.
    pub len: u32,
}

/// A stored manifest, its hash verified on read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    /// Parts in the checkpoint.
    pub world_size: u32,
    /// blake3 of `bytes`.
    pub hash: Digest,
    /// The manifest bytes.
    pub bytes: Vec<u8>,
}

/// What a checkpoint delete removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deleted {
    /// Shards removed.
    pub shards: u64,
    /// Manifests removed.
    pub manifests: u64,
}

/// One page of a job's manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestPage {
    /// Entries in (step, rank) order.
    pub entries: Vec<ManifestEntry>,
    /// Whether more entries follow the last one.
    pub more: bool,
}

/// The engine's counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EngineCounts {
    /// Shards stored.
    pub shards: u64,
    /// Shard payload bytes stored.
    pub shard_bytes: u64,
    /// Manifests stored.
    pub manifests: u64,
}

/// The index record of one shard or manifest:
/// `[version 2][len u32][world_size u32][hash][written_at_ms u64][revision u32][base]`
/// (`world_size`, `revision` and `base` are 0 for shards; a manifest's `base` is the id of
/// its part's revision 0), its value in the `data` family; version 3, a shard in its
/// checkpoint's segment file, adds `[offset u64]` there. Version 1 records (without the
/// last three fields) are still read, as written at the Unix epoch, revision 0, base = hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IndexRecord {
    len: u32,
    world_size: u32,
    hash: Digest,
    /// When the value was written, in milliseconds since the Unix epoch (node clock).
    written_at_ms: u64,
    /// A manifest's revision (raised by each repair that rewrote it).
    revision: u32,
    /// A manifest's chain id: the id of its part's revision 0.
    base: Digest,
    /// Where a shard's bytes start in its checkpoint's segment file (`None`: in `data`).
    segment_offset: Option<u64>,
}

const RECORD_V1_BYTES: usize = 1 + 4 + 4 + 32;
const RECORD_BYTES: usize = RECORD_V1_BYTES + 8 + 4 + 32;
const RECORD_V3_BYTES: usize = RECORD_BYTES + 8;

/// Milliseconds since the Unix epoch by the node's clock (0 if the clock is before it).
fn unix_now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl IndexRecord {
    /// The record of a shard written now (at `segment_offset` of its segment file, if any).
    fn shard(len: u32, hash: Digest, segment_offset: Option<u64>) -> Self {
        let (written_at_ms, revision, base) = (unix_now_ms(), 0, Digest::default());
        Self { len, world_size: 0, hash, written_at_ms, revision, base, segment_offset }
    }

    /// The record of a manifest written now.
    fn manifest(len: u32, world_size: u32, hash: Digest, revision: u32, base: Digest) -> Self {
        let written_at_ms = unix_now_ms();
        Self { len, world_size, hash, written_at_ms, revision, base, segment_offset: None }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECORD_V3_BYTES);
        out.push(if self.segment_offset.is_some() { RECORD_IN_SEGMENT } else { RECORD_VERSION });
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&self.world_size.to_be_bytes());
        out.extend_from_slice(&self.hash.0);
        out.extend_from_slice(&self.written_at_ms.to_be_bytes());
        out.extend_from_slice(&self.revision.to_be_bytes());
        out.extend_from_slice(&self.base.0);
        if let Some(offset) = self.segment_offset {
            out.extend_from_slice(&offset.to_be_bytes());
        }
        out
    }

    fn decode(b: &[u8]) -> Result<Self, EngineError> {
        let corrupt = || EngineError::Corrupt { reason: format!("bad index record: {b:02x?}") };
        match (b.first(), b.len()) {
            (Some(1), RECORD_V1_BYTES)
            | (Some(&RECORD_VERSION), RECORD_BYTES)
            | (Some(&RECORD_IN_SEGMENT), RECORD_V3_BYTES) => {}
            _ => return Err(corrupt()),
        }
        let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let digest = |from: usize| {
            let mut d = [0u8; 32];
            d.copy_from_slice(&b[from..from + 32]);
            Digest(d)
        };
        let hash = digest(9);
        let (len, world_size) = (word(1), word(5));
        if b.len() == RECORD_V1_BYTES {
            let (written_at_ms, revision, base, segment_offset) = (0, 0, hash, None);
            return Ok(Self {
                len,
                world_size,
                hash,
                written_at_ms,
                revision,
                base,
                segment_offset,
            });
        }
        let long = |i: usize| {
            let mut v = [0u8; 8];
            v.copy_from_slice(&b[i..i + 8]);
            u64::from_be_bytes(v)
        };
        let written_at_ms = long(RECORD_V1_BYTES);
        let (revision, base) = (word(RECORD_V1_BYTES + 8), digest(RECORD_V1_BYTES + 12));
        let segment_offset = (b.len() == RECORD_V3_BYTES).then(|| long(RECORD_BYTES));
        Ok(Self { len, world_size, hash, written_at_ms, revision, base, segment_offset })
    }
}

fn blake3_digest(bytes: &[u8]) -> Digest {
    Digest(*blake3::hash(bytes).as_bytes())
}

fn check_payload(
    what: &'static str,
    bytes: &[u8],
    max: u32,
    declared: Digest,
) -> Result<(), EngineError> {
    if bytes.is_empty() || bytes.len() > max as usize {
        return Err(EngineError::BadLength { what, len: bytes.len(), max });
    }
    let actual = blake3_digest(bytes);
    if actual != declared {
        return Err(EngineError::HashMismatch { declared, actual });
    }
    Ok(())
}

/// Checks bytes read back against their index record.
fn check_stored(record: &IndexRecord, bytes: &[u8]) -> Result<(), EngineError> {
    if bytes.len() != record.len as usize {
        return Err(EngineError::Corrupt {
            reason: format!("stored length {} but the index says {}", bytes.len(), record.len),
        });
    }
    let actual = blake3_digest(bytes);
    if actual != record.hash {
        return Err(EngineError::Corrupt {
            reason: format!("stored blake3 {actual} but the index says {}", record.hash),
        });
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Counters {
    shards: AtomicU64,
    shard_bytes: AtomicU64,
    /// Bytes reserved by puts in progress (counted against the capacity).
    reserved_bytes: AtomicU64,
    manifests: AtomicU64,
    /// `shards` and `shard_bytes` per job (a job leaves the map with its last shard), raised
    /// and lowered with them, by [`Counters::shard_stored`] and [`Counters::shards_removed`].
    per_job: Mutex<HashMap<JobName, JobUsage>>,
}

/// The shards one job holds on this node, as [`Engine::job_usage`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobUsage {
    /// Shards of the job stored here.
    pub shards: u64,
    /// Their payload bytes.
    pub shard_bytes: u64,
}

impl Counters {
    fn per_job(&self) -> MutexGuard<'_, HashMap<JobName, JobUsage>> {
        self.per_job.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A shard of `job` of `len` bytes is stored, in place of one of `previous` bytes if any.
    fn shard_stored(&self, job: &JobName, len: u64, previous: Option<u64>) {
        // Add before subtracting: the counter may briefly over-count, never under-count.
        self.shard_bytes.fetch_add(len, Ordering::SeqCst);
        self.shard_bytes.fetch_sub(previous.unwrap_or(0), Ordering::SeqCst);
        if previous.is_none() {
            self.shards.fetch_add(1, Ordering::SeqCst);
        }
        let mut per_job = self.per_job();
        let usage = match per_job.get_mut(job) {
            Some(usage) => usage,
            None => per_job.entry(job.clone()).or_default(),
        };
        usage.shard_bytes = (usage.shard_bytes + len).saturating_sub(previous.unwrap_or(0));
        usage.shards += u64::from(previous.is_none());
    }

    /// `shards` shards of `job` holding `bytes` bytes are deleted.
    fn shards_removed(&self, job: &JobName, shards: u64, bytes: u64) {
        self.shards.fetch_sub(shards, Ordering::SeqCst);
        self.shard_bytes.fetch_sub(bytes, Ordering::SeqCst);
        let mut per_job = self.per_job();
        if let Some(usage) = per_job.get_mut(job) {
            usage.shards = usage.shards.saturating_sub(shards);
            usage.shard_bytes = usage.shard_bytes.saturating_sub(bytes);
            if usage.shards == 0 {
                per_job.remove(job);
            }
        }
    }
}

/// Capacity reserved by one put in progress; released on drop.
struct Reservation<'a> {
    counters: &'a Counters,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.counters.reserved_bytes.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// The storage engine. Share it behind an `Arc`; every method takes `&self`.
pub struct Engine {
    db: DB,
    /// Where shard payloads go; `None` keeps them in the `data` family.
    segments: Option<Segments>,
    capacity_bytes: u64,
    counters: Counters,
    key_locks: Vec<Mutex<()>>,
    delete_lock: RwLock<()>,
    /// Serializes deletion-mark writes, so a job's count of marks is checked and raised at once.
    marks_lock: Mutex<()>,
    sync_write: WriteOptions,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("path", &self.db.path()).finish_non_exhaustive()
    }
}

fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    o.set_max_background_jobs(BACKGROUND_JOBS);
    o.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
    o.set_bytes_per_sync(1024 * 1024);
    o.set_keep_log_file_num(4);
    o
}

fn index_cf_options() -> Options {
    let mut o = Options::default();
    o.set_compression_type(DBCompressionType::Lz4);
    o
}

fn data_cf_options(values: ValueStorage) -> Options {
    let mut o = Options::default();
    // Checkpoint shards are mostly incompressible; compressing them costs CPU for nothing.
    o.set_compression_type(DBCompressionType::None);
    o.set_write_buffer_size(DATA_WRITE_BUFFER_BYTES);
    o.set_max_write_buffer_number(DATA_WRITE_BUFFERS);
    o.set_target_file_size_base(DATA_WRITE_BUFFER_BYTES as u64);
    if values == ValueStorage::BlobFiles {
        o.set_enable_blob_files(true);
        o.set_min_blob_size(MIN_BLOB_BYTES);
        o.set_blob_file_size(BLOB_FILE_BYTES);
        o.set_blob_compression_type(DBCompressionType::None);
        // No blob GC: it relocates live blobs of the oldest files during compactions (disk
        // bytes written per payload byte rose from 2.0 to 3.2 in `engine_values`). Deleted
        // checkpoints free whole blob files instead (see `delete_checkpoint`).
        o.set_enable_blob_gc(false);
    }
    o
}

impl Engine {
    /// Opens (creating if needed) the store in `dir` and counts what it holds.
    pub fn open(dir: &Path, options: EngineOptions) -> Result<Self, EngineError> {
        std::fs::create_dir_all(dir)
            .map_err(|error| EngineError::CreateDir { dir: dir.to_owned(), error })?;
        format::check_and_stamp(dir)?;
        let families = [
            ColumnFamilyDescriptor::new(INDEX_CF, index_cf_options()),
            ColumnFamilyDescriptor::new(DATA_CF, data_cf_options(options.values)),
        ];
        let db = DB::open_cf_descriptors(&db_options(), dir, families)
            .map_err(|e| open_error(dir, e))?;
        let mut sync_write = WriteOptions::default();
        sync_write.set_sync(true);
        let segments = match options.values {
            ValueStorage::Segments => Some(
                Segments::open(dir)
                    .map_err(|error| EngineError::CreateDir { dir: dir.to_owned(), error })?,
            ),
            ValueStorage::Inline | ValueStorage::BlobFiles => None,
        };
        let engine = Self {
            db,
            segments,
            capacity_bytes: options.capacity_bytes,
            counters: Counters::default(),
            key_locks: (0..KEY_LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            delete_lock: RwLock::new(()),
            marks_lock: Mutex::new(()),
            sync_write,
        };
        engine.count_stored()?;
        engine.remove_unreferenced_segments()?;
        Ok(engine)
    }

    /// Deletes the segment files of checkpoints without a shard in the index: what a crash
    /// left between a checkpoint's index delete and its file's removal, or between a first
    /// append and its index record.
    fn remove_unreferenced_segments(&self) -> Result<(), EngineError> {
        let Some(segments) = &self.segments else { return Ok(()) };
        for (job, step) in segments.checkpoints().map_err(io_error)? {
            self.remove_segment_if_empty(&job, step)?;
        }
        Ok(())
    }

    /// Deletes checkpoint `(job, step)`'s segment file if the index lists none of its shards.
    /// Holds the delete lock, so no put is appending to it meanwhile.
    fn remove_segment_if_empty(&self, job: &JobName, step: Step) -> Result<(), EngineError> {
        let Some(segments) = &self.segments else { return Ok(()) };
        let _exclusive = self.delete_lock.write().unwrap_or_else(|p| p.into_inner());
        let range = ShardKey::checkpoint_range(job, step);
        if self.index_iter(&range.start, &range.end).next().is_none() {
            tracing::debug!(job = job.as_str(), step = step.0, "removing an unused segment file");
            segments.remove(job, step).map_err(io_error)?;
        }
        Ok(())
    }

    /// The segment file a shard record points into, if it has one (`create`: make the file).
    fn segment_of(
        &self,
        key: &ShardKey,
        create: bool,
    ) -> Result<Option<Arc<Segment>>, EngineError> {
        match &self.segments {
            Some(segments) => segments.get(&key.job, key.step, create).map_err(io_error),
            None => Ok(None),
        }
    }

    /// Frees the segment bytes of a shard record that the index no longer points to.
    fn free_segment_bytes(&self, key: &ShardKey, record: &IndexRecord) {
        let Some(offset) = record.segment_offset else { return };
        match self.segment_of(key, false) {
            Ok(Some(segment)) => segment.punch(offset, record.len),
            Ok(None) => {}
            Err(e) => tracing::warn!("cannot free the old bytes of {key:?}: {e}"),
        }
    }

    /// The configured capacity in shard payload bytes (0: unbounded).
    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// The counters now.
    pub fn counts(&self) -> EngineCounts {
        EngineCounts {
            shards: self.counters.shards.load(Ordering::SeqCst),
            shard_bytes: self.counters.shard_bytes.load(Ordering::SeqCst),
            manifests: self.counters.manifests.load(Ordering::SeqCst),
        }
    }

    fn index_cf(&self) -> &ColumnFamily {
        self.db.cf_handle(INDEX_CF).expect("the index family is created at open")
    }

    fn data_cf(&self) -> &ColumnFamily {
        self.db.cf_handle(DATA_CF).expect("the data family is created at open")
    }

    /// The shards and shard bytes of each job stored here, in no order.
    pub fn job_usage(&self) -> Vec<(JobName, JobUsage)> {
        self.counters.per_job().iter().map(|(job, usage)| (job.clone(), *usage)).collect()
    }

    /// The folder the store lives in.
    pub fn dir(&self) -> &Path {
        self.db.path()
    }

    fn count_stored(&self) -> Result<(), EngineError> {
        let mut manifests = 0;
        let iter = self.db.iterator_cf(self.index_cf(), IteratorMode::Start);
        for item in iter {
            let (key, value) = item.map_err(db_error)?;
            let len = IndexRecord::decode(&value).map(|r| u64::from(r.len)).unwrap_or(0);
            if let Some(shard) = ShardKey::decode(&key) {
                self.counters.shard_stored(&shard.job, len, None);
            } else if ManifestKey::decode(&key).is_some() {
                manifests += 1;
            }
        }
        self.counters.manifests.store(manifests, Ordering::SeqCst);
        Ok(())
    }

    fn lock_key(&self, key: &[u8]) -> MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let stripe = (h.finish() as usize) % KEY_LOCK_STRIPES;
        // The lock guards no data, so a poisoned one is as good as a healthy one.
        self.key_locks[stripe].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn read_record(&self, key: &[u8]) -> Result<Option<IndexRecord>, EngineError> {
        match self.db.get_pinned_cf(self.index_cf(), key).map_err(db_error)? {
            Some(v) => IndexRecord::decode(&v).map(Some),
            None => Ok(None),
        }
    }

    fn write(&self, batch: WriteBatch) -> Result<(), EngineError> {
        self.db.write_opt(batch, &self.sync_write).map_err(db_error)
    }

    fn put_batch(&self, key: &[u8], record: &IndexRecord, bytes: &[u8]) -> WriteBatch {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.index_cf(), key, record.encode());
        batch.put_cf(self.data_cf(), key, bytes);
        batch
    }

    /// Reserves `bytes` more against the capacity, or refuses with `CapacityFull`.
    fn reserve(&self, bytes: u64) -> Result<Reservation<'_>, EngineError> {
        let c = &self.counters;
        let reserved = c.reserved_bytes.fetch_add(bytes, Ordering::SeqCst) + bytes;
        let reservation = Reservation { counters: c, bytes };
        let used = c.shard_bytes.load(Ordering::SeqCst) + reserved;
        if self.capacity_bytes > 0 && used > self.capacity_bytes {
            return Err(EngineError::CapacityFull {
                len: bytes,
                used: used - bytes,
                capacity: self.capacity_bytes,
            });
        }
        Ok(reservation)
    }

    /// Stores a shard after checking its blake3 against `hash`; returns once it is durable
    /// (WAL synced). A key whose index record names another blake3 is never overwritten
    /// (`Conflict`, nothing changed): a stored shard changes only by a delete. The same
    /// shard again is written anew (how a repair fixes rotted or lost bytes), so the check is
    /// against the record's hash, not a re-hash of the stored bytes.
    pub fn put_shard(&self, key: &ShardKey, hash: Digest, bytes: &[u8]) -> Result<(), EngineError> {
        check_payload("shard", bytes, MAX_SHARD_BYTES, hash)?;
        let k = key.encode();
        let _shared = self.delete_lock.read().unwrap_or_else(|p| p.into_inner());
        let _key = self.lock_key(&k);
        let previous = self.read_record(&k)?;
        if let Some(stored) = previous.filter(|p| p.hash != hash) {
            return Err(EngineError::Conflict {
                reason: format!(
                    "holds shard {} under this key; a stored shard is never replaced by other bytes (refused {hash})",
                    stored.hash
                ),
            });
        }
        let previous_len = previous.map_or(0, |r| u64::from(r.len));
        let len = bytes.len() as u64;
        let reservation = self.reserve(len.saturating_sub(previous_len))?;
        failpoint::hit("node.shard_put.before_write");
        match self.segment_of(key, true)? {
            Some(segment) => {
                let offset = segment.append(bytes).map_err(io_error)?;
                failpoint::hit("node.shard_put.before_index");
                let record = IndexRecord::shard(bytes.len() as u32, hash, Some(offset));
                let mut batch = WriteBatch::default();
                batch.put_cf(self.index_cf(), &k, record.encode());
                if previous.is_some_and(|r| r.segment_offset.is_none()) {
                    batch.delete_cf(self.data_cf(), &k);
                }
                self.write(batch)?;
            }
            None => {
                let record = IndexRecord::shard(bytes.len() as u32, hash, None);
                self.write(self.put_batch(&k, &record, bytes))?;
            }
        }
        if let Some(previous) = &previous {
            self.free_segment_bytes(key, previous);
        }
        self.counters.shard_stored(&key.job, len, previous.map(|_| previous_len));
        drop(reservation);
        Ok(())
    }

    /// The stored length of a shard, from the index only (no payload read).
    pub fn shard_len(&self, key: &ShardKey) -> Result<Option<u32>, EngineError> {
        Ok(self.read_record(&key.encode())?.map(|r| r.len))
    }

    /// Reads a shard and checks its bytes against the stored blake3; a mismatch is
    /// `Corrupt` and the bytes are not returned.
    pub fn get_shard(&self, key: &ShardKey) -> Result<StoredShard, EngineError> {
        let (record, bytes) = self.read_shard(key, true)?;
        Ok(StoredShard { hash: record.hash, bytes })
    }

    /// Re-reads a shard and checks its hash, without filling the block cache (for the
    /// scrubber and `VerifyShard`). Returns the hash and length checked.
    pub fn verify_shard(&self, key: &ShardKey) -> Result<VerifiedShard, EngineError> {
        let (record, _bytes) = self.read_shard(key, false)?;
        Ok(VerifiedShard { hash: record.hash, len: record.len })
    }

    /// Reads a shard from wherever its record says and checks it. Bytes that do not match
    /// the record (or a segment file that is gone) are corruption only if the record is still
    /// the same when looked up again: a rewrite or delete between the two reads frees the
    /// old bytes (they read as zeros, or the file is removed), so the read then follows the
    /// new record, or reports `NotFound`.
    fn read_shard(
        &self,
        key: &ShardKey,
        fill_cache: bool,
    ) -> Result<(IndexRecord, Vec<u8>), EngineError> {
        let k = key.encode();
        let mut record = self.read_record(&k)?.ok_or(EngineError::NotFound)?;
        for _ in 0..SHARD_READ_ATTEMPTS {
            let Some(offset) = record.segment_offset else {
                return self.read_verified(&k, fill_cache);
            };
            let checked = match self.segment_of(key, false)? {
                None => Err(EngineError::Corrupt {
                    reason: "the index lists it but its segment file is missing".into(),
                }),
                Some(segment) => match segment.read(offset, record.len, fill_cache) {
                    Ok(bytes) => check_stored(&record, &bytes).map(|()| bytes),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                        Err(EngineError::Corrupt {
                            reason: format!(
                                "its segment file ends before its {} bytes",
                                record.len
                            ),
                        })
                    }
                    Err(e) => Err(io_error(e)),
                },
            };
            // Only a failed read looks the record up again: a good one costs one index read.
            let error = match checked {
                Ok(bytes) => return Ok((record, bytes)),
                Err(e) => e,
            };
            match self.read_record(&k)? {
                None => return Err(EngineError::NotFound),
                Some(now) if now != record => record = now,
                Some(_) => return Err(error),
            }
        }
        Err(EngineError::Conflict {
            reason: format!("rewritten {SHARD_READ_ATTEMPTS} times while being read; try again"),
        })
    }

    fn read_verified(
        &self,
        key: &[u8],
        fill_cache: bool,
    ) -> Result<(IndexRecord, Vec<u8>), EngineError> {
        let snapshot = self.db.snapshot();
        let options = || {
            let mut o = ReadOptions::default();
            o.fill_cache(fill_cache);
            o
        };
        let record = snapshot.get_cf_opt(self.index_cf(), key, options()).map_err(db_error)?;
        let record = IndexRecord::decode(&record.ok_or(EngineError::NotFound)?)?;
        let bytes = snapshot.get_cf_opt(self.data_cf(), key, options()).map_err(db_error)?;
        let bytes = bytes.ok_or_else(|| EngineError::Corrupt {
            reason: "the index lists it but its bytes are missing".into(),
        })?;
        check_stored(&record, &bytes)?;
        Ok((record, bytes))
    }

    /// Stores a manifest (revision 0) after checking its blake3; returns once it is durable.
    /// A stored manifest is never replaced by a put: the same bytes again (and world size)
    /// succeed, anything else is `Conflict` (see [`Engine::replace_manifest`] for a repair's
    /// rewrite).
    pub fn put_manifest(
        &self,
        key: &ManifestKey,
        world_size: u32,
        hash: Digest,
        bytes: &[u8],
    ) -> Result<(), EngineError> {
        self.store_manifest(key, (world_size, hash), bytes, lifecycle::ManifestWrite::Put, None)
    }

    /// The stored length of a manifest, from the index only.
    pub fn manifest_len(&self, key: &ManifestKey) -> Result<Option<u32>, EngineError> {
        Ok(self.read_record(&key.encode())?.map(|r| r.len))
    }

    /// Reads a manifest and checks its bytes against the stored blake3.
    pub fn get_manifest(&self, key: &ManifestKey) -> Result<StoredManifest, EngineError> {
        let (record, bytes) = self.read_verified(&key.encode(), true)?;
        Ok(StoredManifest { world_size: record.world_size, hash: record.hash, bytes })
    }

    /// Deletes every shard and manifest of checkpoint `(job, step)`; durable on return.
    pub fn delete_checkpoint(&self, job: &JobName, step: Step) -> Result<Deleted, EngineError> {
        let ranges =
            [ShardKey::checkpoint_range(job, step), ManifestKey::checkpoint_range(job, step)];
        let deleted = self.delete_ranges(&ranges, (job, step))?;
        if deleted != Deleted::default() {
            // Drop the deleted entries now rather than at some later compaction, so that
            // blob files holding only deleted payloads are removed and the disk space
            // returns promptly. The ranges hold only index records and blob references.
            // Puts go on meanwhile: the delete lock is no longer held.
            for range in &ranges {
                self.db.compact_range_cf(self.data_cf(), Some(&range.start), Some(&range.end));
                self.db.compact_range_cf(self.index_cf(), Some(&range.start), Some(&range.end));
            }
        }
        Ok(deleted)
    }

    /// Counts and deletes checkpoint `(job, step)`'s `[shards, manifests]` key ranges in one
    /// synced batch, then its segment file, holding the delete lock so that no put lands in
    /// them uncounted (or appends to the file being removed).
    fn delete_ranges(
        &self,
        ranges: &[CheckpointRange; 2],
        (job, step): (&JobName, Step),
    ) -> Result<Deleted, EngineError> {
        let _exclusive = self.delete_lock.write().unwrap_or_else(|p| p.into_inner());
        let [shard_range, manifest_range] = ranges;
        let (shards, shard_bytes) = self.sum_range(shard_range)?;
        let (manifests, _) = self.sum_range(manifest_range)?;
        if shards == 0 && manifests == 0 {
            return Ok(Deleted::default());
        }
        failpoint::hit("node.delete.before");
        let mut batch = WriteBatch::default();
        for range in ranges {
            batch.delete_range_cf(self.index_cf(), &range.start, &range.end);
            batch.delete_range_cf(self.data_cf(), &range.start, &range.end);
        }
        self.write(batch)?;
        self.counters.shards_removed(job, shards, shard_bytes);
        self.counters.manifests.fetch_sub(manifests, Ordering::SeqCst);
        failpoint::hit("node.delete.before_segment");
        if let Some(segments) = &self.segments {
            // The index no longer points into the file; a failure leaves it for the next
            // open's sweep of unreferenced files.
            if let Err(e) = segments.remove(job, step) {
                tracing::warn!(
                    job = job.as_str(),
                    step = step.0,
                    "cannot remove a segment file: {e}"
                );
            }
        }
        Ok(Deleted { shards, manifests })
    }

    fn index_iter(&self, start: &[u8], end: &[u8]) -> rocksdb::DBIteratorWithThreadMode<'_, DB> {
        let mut o = ReadOptions::default();
        o.set_iterate_upper_bound(end.to_vec());
        self.db.iterator_cf_opt(self.index_cf(), o, IteratorMode::From(start, Direction::Forward))
    }

    /// Entries and summed lengths in a key range of the index.
    fn sum_range(&self, range: &CheckpointRange) -> Result<(u64, u64), EngineError> {
        let (mut count, mut bytes) = (0u64, 0u64);
        for item in self.index_iter(&range.start, &range.end) {
            let (_, value) = item.map_err(db_error)?;
            count += 1;
            bytes += IndexRecord::decode(&value).map(|r| u64::from(r.len)).unwrap_or(0);
        }
        Ok((count, bytes))
    }

    /// Up to `limit` (capped at `MAX_LIST_ENTRIES`) of a job's manifests in (step, rank)
    /// order, starting after `after`.
    pub fn list_manifests(
        &self,
        job: &JobName,
        after: Option<(Step, Rank)>,
        limit: u32,
    ) -> Result<ManifestPage, EngineError> {
        let limit = limit.min(MAX_LIST_ENTRIES) as usize;
        let range = ManifestKey::job_range(job);
        let start = match after {
            Some((step, rank)) => key_after(ManifestKey { job: job.clone(), step, rank }.encode()),
            None => range.start.clone(),
        };
        let mut entries = Vec::new();
        for item in self.index_iter(&start, &range.end) {
            let (key, value) = item.map_err(db_error)?;
            if entries.len() == limit {
                return Ok(ManifestPage { entries, more: true });
            }
            entries.push(manifest_entry(&key, &value)?);
        }
        Ok(ManifestPage { entries, more: false })
    }

    /// Up to `limit` stored shards (key and length, 0 if its index record is unreadable) in
    /// key order, starting after the shard `after` (from the start if `None`). The scrubber
    /// walks the store with it.
    pub fn scan_shards(
        &self,
        after: Option<&ShardKey>,
        limit: usize,
    ) -> Result<Vec<(ShardKey, u32)>, EngineError> {
        let range = ShardKey::all_range();
        let start = after.map_or(range.start, |k| key_after(k.encode()));
        let mut out = Vec::new();
        for item in self.index_iter(&start, &range.end).take(limit) {
            let (raw_key, value) = item.map_err(db_error)?;
            let Some(key) = ShardKey::decode(&raw_key) else {
                tracing::warn!("skipping an index key that is not a shard key: {raw_key:02x?}");
                continue;
            };
            // A bad record still lists the shard: reading it reports the corruption.
            let len = IndexRecord::decode(&value).map_or(0, |r| r.len);
            out.push((key, len));
        }
        Ok(out)
    }

    /// Test hook: flushes every memtable, so that payloads land in SST or blob files.
    #[cfg(test)]
    pub(crate) fn flush_for_test(&self) {
        self.db.flush_cf(self.index_cf()).expect("flush index");
        self.db.flush_cf(self.data_cf()).expect("flush data");
    }

    /// Test hook: replaces the stored bytes of a key without touching its index record, as
    /// a failing disk would (in a segment file, bytes shorter than the record cut the file).
    #[cfg(test)]
    pub(crate) fn overwrite_bytes_for_test(&self, key: &[u8], bytes: &[u8]) {
        let record = self.read_record(key).expect("read").expect("stored");
        let shard = ShardKey::decode(key);
        match (record.segment_offset, shard) {
            (Some(offset), Some(shard)) => {
                let segment = self.segment_of(&shard, false).expect("open").expect("has a file");
                segment.damage_for_test(offset, record.len, bytes);
            }
            _ => self.db.put_cf(self.data_cf(), key, bytes).expect("test write"),
        }
    }
}

/// The smallest key greater than `key` (every key that starts with it, itself excluded,
/// sorts at or after this).
fn key_after(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}

fn manifest_entry(key: &[u8], value: &[u8]) -> Result<ManifestEntry, EngineError> {
    let key = ManifestKey::decode(key)
        .ok_or_else(|| EngineError::Corrupt { reason: format!("bad manifest key {key:02x?}") })?;
    let record = IndexRecord::decode(value)?;
    Ok(ManifestEntry {
        step: key.step,
        rank: key.rank,
        world_size: record.world_size,
        len: record.len,
        hash: record.hash,
        revision: record.revision,
        base: record.base,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rackpoint_proto::{ObjectName, ShardIndex, StripeIndex};

    fn job(name: &str) -> JobName {
        JobName::new(name).expect("valid job name")
    }

    fn shard_key(job_name: &str, step: u64, stripe: u32, index: u8) -> ShardKey {
        ShardKey {
            job: job(job_name),
            step: Step(step),
            rank: Rank(0),
            object: ObjectName::new("weights").expect("valid object name"),
            stripe: StripeIndex(stripe),
            index: ShardIndex(index),
        }
    }

    fn manifest_key(job_name: &str, step: u64, rank: u32) -> ManifestKey {
        ManifestKey { job: job(job_name), step: Step(step), rank: Rank(rank) }
    }

    fn bytes(seed: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn open(dir: &Path, capacity_bytes: u64) -> Engine {
        let options = EngineOptions { capacity_bytes, ..EngineOptions::default() };
        Engine::open(dir, options).expect("engine opens")
    }

    fn put(e: &Engine, key: &ShardKey, b: &[u8]) -> Result<(), EngineError> {
        e.put_shard(key, blake3_digest(b), b)
    }

    #[test]
    fn shards_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = shard_key("job", 1, 0, 0);
        let data = bytes(1, 4096);
        {
            let e = open(dir.path(), 0);
            put(&e, &key, &data).expect("put");
            let got = e.get_shard(&key).expect("get");
            assert_eq!(got, StoredShard { hash: blake3_digest(&data), bytes: data.clone() });
        }
        let e = open(dir.path(), 0);
        assert_eq!(e.get_shard(&key).expect("get after reopen").bytes, data);
        assert_eq!(e.counts(), EngineCounts { shards: 1, shard_bytes: 4096, manifests: 0 });
        assert!(matches!(e.get_shard(&shard_key("job", 1, 0, 1)), Err(EngineError::NotFound)));
    }

    #[test]
    fn a_wrong_hash_or_length_stores_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path(), 0);
        let key = shard_key("job", 1, 0, 0);
        let err = e.put_shard(&key, blake3_digest(b"other"), b"data");
        assert!(matches!(err, Err(EngineError::HashMismatch { .. })));
        assert!(matches!(put(&e, &key, b""), Err(EngineError::BadLength { .. })));
        let big = vec![0u8; MAX_SHARD_BYTES as usize + 1];
        assert_eq!(put(&e, &key, &big).map_err(|e| e.code()), Err(ErrorCode::TooLarge));
        assert!(matches!(e.get_shard(&key), Err(EngineError::NotFound)));
        assert_eq!(e.counts(), EngineCounts::default());
    }

    #[test]
    fn a_stored_shard_is_never_replaced_by_other_bytes_and_a_rewrite_is_counted_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path(), 0);
        let key = shard_key("job", 1, 0, 0);
        put(&e, &key, &bytes(1, 100)).expect("put");
        let err = put(&e, &key, &bytes(2, 60)).expect_err("other bytes under a stored key");
        assert!(matches!(err, EngineError::Conflict { .. }), "{err}");
        assert_eq!(err.code(), ErrorCode::Conflict);
        assert!(err.to_string().contains(&blake3_digest(&bytes(1, 100)).to_string()), "{err}");
        assert_eq!(e.get_shard(&key).expect("get").bytes, bytes(1, 100), "nothing changed");
        put(&e, &key, &bytes(1, 100)).expect("the same bytes again");
        assert_eq!(e.counts(), EngineCounts { shards: 1, shard_bytes: 100, manifests: 0 });
        assert_eq!(e.get_shard(&key).expect("get").bytes, bytes(1, 100));
        drop(e);
        assert_eq!(open(dir.path(), 0).counts().shard_bytes, 100, "the reopen scan agrees");
    }

    #[test]
    fn the_conflict_rule_reads_old_index_records_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path(), 0);
        let key = shard_key("job", 1, 0, 0);
        let data = bytes(4, 300);
        // A version 1 record (no write time, revision or base) with its bytes in `data`.
        let record = IndexRecord::shard(300, blake3_digest(&data), None).encode();
        let mut v1 = record[..RECORD_V1_BYTES].to_vec();
        v1[0] = 1;
        e.db.put_cf(e.index_cf(), key.encode(), &v1).expect("write");
        e.db.put_cf(e.data_cf(), key.encode(), &data).expect("write");
        drop(e);
        let e = open(dir.path(), 0);
        assert_eq!(e.get_shard(&key).expect("a version 1 shard reads").bytes, data);
        let err = put(&e, &key, &bytes(5, 300)).expect_err("other bytes");
        assert!(matches!(err, EngineError::Conflict { .. }), "{err}");
        assert_eq!(e.get_shard(&key).expect("get").bytes, data);
        put(&e, &key, &data).expect("the same bytes rewrite it, into a segment file");
        assert!(e.db.get_cf(e.data_cf(), key.encode()).expect("get").is_none());
        assert_eq!(e.get_shard(&key).expect("get").bytes, data);
        assert_eq!(e.counts(), EngineCounts { shards: 1, shard_bytes: 300, manifests: 0 });
    }

    #[test]
    fn delete_checkpoint_removes_exactly_its_range() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path(), 0);
        for (step, stripe, index) in [(1, 0, 0), (1, 0, 1), (1, 7, 2), (2, 0, 0)] {
            put(&e, &shard_key("job", step, stripe, index), &bytes(index, 10)).expect("put");
        }
        put(&e, &shard_key("job2", 1, 0, 0), &bytes(0, 10)).expect("put");
        for (j, step, rank) in [("job", 1, 0), ("job", 1, 1), ("job", 2, 0), ("job2", 1, 0)] {
            let m = bytes(rank as u8, 20);
            e.put_manifest(&manifest_key(j, step, rank), 2, blake3_digest(&m), &m).expect("put");
        }
        let deleted = e.delete_checkpoint(&job("job"), Step(1)).expect("delete");
        assert_eq!(deleted, Deleted { shards: 3, manifests: 2 });
        assert_eq!(e.counts(), EngineCounts { shards: 2, shard_bytes: 20, manifests: 2 });
        assert!(matches!(e.get_shard(&shard_key("job", 1, 7, 2)), Err(EngineError::NotFound)));
        assert!(e.get_shard(&shard_key("job", 2, 0, 0)).is_ok());
        assert!(e.get_shard(&shard_key("job2", 1, 0, 0)).is_ok());
        assert!(e.get_manifest(&manifest_key("job2", 1, 0)).is_ok());
        let again = e.delete_checkpoint(&job("job"), Step(1)).expect("delete again");
        assert_eq!(again, Deleted::default());
        drop(e);
        let counts = open(dir.path(), 0).counts();
        assert_eq!(counts, EngineCounts { shards: 2, shard_bytes: 20, manifests: 2 });
    }

    /// Disk space allocated under `dir` (holes in files not counted).
    fn disk_bytes(dir: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let entries = std::fs::read_dir(dir).expect("read dir");
        let sizes = entries.map(|e| {
            let e = e.expect("entry");
            let meta = e.metadata().expect("metadata");
            if meta.is_dir() {
                disk_bytes(&e.path())
            } else {
                meta.blocks() * 512
            }
        });
        sizes.sum()
    }

    #[test]
    fn deleting_a_checkpoint_returns_its_disk_space() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path(), 0);
        let empty = disk_bytes(dir.path());
        let shard = bytes(1, 1 << 20);
        for stripe in 0..16 {
            put(&e, &shard_key("job", 1, stripe, 0), &shard).expect("put");
        }
        e.flush_for_test();
        let full = disk_bytes(dir.path());
        assert!(full > empty + (16 << 20), "{full} bytes on disk after 16 MiB of shards");
        e.delete_checkpoint(&job("job"), Step(1)).expect("delete");
        let after = disk_bytes(dir.path());
        assert!(after < empty + (2 << 20), "{after} bytes left on disk (empty: {empty})");
    }

    fn segment_files(dir: &Path) -> Vec<String> {
        let entries = std::fs::read_dir(dir.join("segments")).expect("read dir");
        let mut names: Vec<String> =
            entries.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn shards_go_to_one_segment_file_per_checkpoint_and_leave_with_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path(), 0);
        for (j, step, stripe) in [("job", 1, 0), ("job", 1, 1), ("job", 2, 0), ("..", 1, 0)] {
            put(&e, &shard_key(j, step, stripe, 0), &bytes(stripe as u8, 100)).expect("put");
        }
        assert_eq!(segment_files(dir.path()), ["..@1.seg", "job@1.seg", "job@2.seg"]);
        let m = b"manifest".to_vec();
        e.put_manifest(&manifest_key("job", 3, 0), 1, blake3_digest(&m), &m).expect("put");
        assert_eq!(segment_files(dir.path()).len(), 3, "manifests stay in RocksDB");
        e.delete_checkpoint(&job("job"), Step(1)).expect("delete");
        assert_eq!(segment_files(dir.path()), ["..@1.seg", "job@2.seg"]);
        let last = shard_key("job", 2, 0, 0);
        let hash = e.get_shard(&last).expect("get").hash;
        assert!(e.delete_shard(&last, hash).expect("delete"));
        assert_eq!(segment_files(dir.path()), ["..@1.seg"], "its last shard took the file");
        assert_eq!(e.get_shard(&shard_key("..", 1, 0, 0)).expect("get").bytes, bytes(0, 100));
    }

    #[test]
    fn rewritten_and_deleted_shards_give_their_space_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path(), 0);
        let shard = bytes(1, 1 << 20);
        for stripe in 0..8 {
            put(&e, &shard_key("job", 1, stripe, 0), &shard).expect("put");
        }
        let full = disk_bytes(dir.path());
        for stripe in 0..8 {
            put(&e, &shard_key("job", 1, stripe, 0), &shard).expect("rewrite");
        }
        let rewritten = disk_bytes(dir.path());
        assert!(rewritten < full + (1 << 20), "{rewritten} bytes after rewrites, {full} before");
        for stripe in 0..4 {
            let key = shard_key("job", 1, stripe, 0);
            assert!(e.delete_shard(&key, blake3_digest(&shard)).expect("delete"));
        }
        let half = disk_bytes(dir.path());
        assert!(half < full - (3 << 20), "{half} bytes after deleting half of {full}");
        for stripe in 4..8 {
            assert_eq!(e.get_shard(&shard_key("job", 1, stripe, 0)).expect("get").bytes, shard);
        }
    }

    #[test]
    fn a_segment_file_nothing_points_into_is_removed_at_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(open(dir.path(), 0));
        std::fs::write(dir.path().join("segments").join("job@9.seg"), b"left by a crash")
            .expect("write");
        let e = open(dir.path(), 0);
        assert!(segment_files(dir.path()).is_empty());
        put(&e, &shard_key("job", 9, 0, 0), b"new").expect("put");
        assert_eq!(e.get_shard(&shard_key("job", 9, 0, 0)).expect("get").bytes, b"new");
    }

    #[test]
    fn shards_stored_in_rocksdb_stay_readable_and_move_to_a_segment_when_rewritten() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (old, new) = (shard_key("job", 1, 0, 0), shard_key("job", 1, 1, 0));
        {
            let blob = EngineOptions { values: ValueStorage::BlobFiles, ..Default::default() };
            let e = Engine::open(dir.path(), blob).expect("opens");
            put(&e, &old, &bytes(1, 1 << 17)).expect("put");
            put(&e, &new, &bytes(2, 1 << 17)).expect("put");
            e.flush_for_test();
        }
        let e = open(dir.path(), 0);
        assert_eq!(
            e.get_shard(&old).expect("a shard from before segments").bytes,
            bytes(1, 1 << 17)
        );
        let err = put(&e, &new, &bytes(3, 100)).expect_err("other bytes are refused");
        assert!(matches!(err, EngineError::Conflict { .. }), "{err}");
        put(&e, &new, &bytes(2, 1 << 17)).expect("rewrite");
        assert_eq!(e.get_shard(&new).expect("get").bytes, bytes(2, 1 << 17));
        assert!(e.db.get_cf(e.data_cf(), new.encode()).expect("get").is_none(), "old bytes gone");
        assert_eq!(e.counts(), EngineCounts { shards: 2, shard_bytes: 2 << 17, manifests: 0 });
        assert_eq!(e.verify_shard(&old).expect("verifies").len, 1 << 17);
    }

    #[test]
    fn manifests_round_trip_and_list_in_pages() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path(), 0);
        for step in [3u64, 1, 2] {
            for rank in 0..2 {
                let m = bytes(step as u8 + rank as u8, 50 + rank as usize);
                let key = manifest_key("job", step, rank);
                e.put_manifest(&key, 2, blake3_digest(&m), &m).expect("put manifest");
            }
        }
        let other = bytes(9, 5);
        e.put_manifest(&manifest_key("job-b", 1, 0), 1, blake3_digest(&other), &other)
            .expect("put manifest");
        let got = e.get_manifest(&manifest_key("job", 2, 1)).expect("get");
        assert_eq!((got.world_size, got.bytes.len()), (2, 51));

        let page = e.list_manifests(&job("job"), None, 4).expect("list");
        let order: Vec<_> = page.entries.iter().map(|m| (m.step.0, m.rank.0)).collect();
        assert_eq!(order, [(1, 0), (1, 1), (2, 0), (2, 1)]);
        assert!(page.more);
        let page = e.list_manifests(&job("job"), Some((Step(2), Rank(1))), 4).expect("list");
        let order: Vec<_> = page.entries.iter().map(|m| (m.step.0, m.rank.0)).collect();
        assert_eq!(order, [(3, 0), (3, 1)]);
        assert!(!page.more);
        assert_eq!(page.entries[1].len, 51);
        assert_eq!(page.entries[1].hash, blake3_digest(&bytes(4, 51)));
        let empty = e.list_manifests(&job("nobody"), None, 10).expect("list");
        assert_eq!(empty, ManifestPage { entries: vec![], more: false });
        assert_eq!(e.counts().manifests, 7);
    }

    #[test]
    fn list_limit_is_capped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path(), 0);
        let m = b"m".to_vec();
        for rank in 0..MAX_LIST_ENTRIES + 1 {
            e.put_manifest(&manifest_key("job", 1, rank), 1, blake3_digest(&m), &m).expect("put");
        }
        let page = e.list_manifests(&job("job"), None, u32::MAX).expect("list");
        assert_eq!(page.entries.len(), MAX_LIST_ENTRIES as usize);
        assert!(page.more);
    }

    #[test]
    fn corrupt_bytes_are_detected_and_never_returned() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path(), 0);
        let key = shard_key("job", 1, 0, 0);
        let data = bytes(3, 1000);
        put(&e, &key, &data).expect("put");
        let mut bad = data.clone();
        bad[500] ^= 1;
        e.overwrite_bytes_for_test(&key.encode(), &bad);
        assert!(matches!(e.get_shard(&key), Err(EngineError::Corrupt { .. })));
        assert!(matches!(e.verify_shard(&key), Err(EngineError::Corrupt { .. })));
        assert!(matches!(e.verify_shard(&shard_key("job", 9, 0, 0)), Err(EngineError::NotFound)));
        e.overwrite_bytes_for_test(&key.encode(), &data[..999]);
        assert_eq!(e.get_shard(&key).map_err(|e| e.code()), Err(ErrorCode::Corrupt));
        put(&e, &key, &data).expect("a rewrite repairs it");
        let verified = e.verify_shard(&key).expect("verifies");
        assert_eq!(verified, VerifiedShard { hash: blake3_digest(&data), len: 1000 });
    }

    #[test]
    fn capacity_refuses_puts_without_losing_earlier_data() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path(), 250);
        let keys: Vec<_> = (0..3).map(|i| shard_key("job", 1, i, 0)).collect();
        put(&e, &keys[0], &bytes(0, 100)).expect("fits");
        put(&e, &keys[1], &bytes(1, 100)).expect("fits");
        let err = put(&e, &keys[2], &bytes(2, 100)).expect_err("over capacity");
        assert!(matches!(err, EngineError::CapacityFull { len: 100, used: 200, capacity: 250 }));
        assert_eq!(err.code(), ErrorCode::DiskFull);
        put(&e, &keys[1], &bytes(1, 100)).expect("a rewrite of the same bytes needs no room");
        assert!(matches!(e.get_shard(&keys[2]), Err(EngineError::NotFound)));
        assert_eq!(e.get_shard(&keys[0]).expect("earlier data intact").bytes, bytes(0, 100));
        assert_eq!(e.counts(), EngineCounts { shards: 2, shard_bytes: 200, manifests: 0 });
        e.delete_checkpoint(&job("job"), Step(1)).expect("delete");
        put(&e, &keys[2], &bytes(2, 100)).expect("space is free again");
    }

    #[test]
    fn concurrent_puts_never_exceed_capacity() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path(), 10 * 64);
        let stored: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16u32)
                .map(|i| {
                    let e = &e;
                    s.spawn(move || put(e, &shard_key("job", 1, i, 0), &bytes(i as u8, 64)).is_ok())
                })
                .collect();
            handles.into_iter().map(|h| u64::from(h.join().expect("no panic"))).sum()
        });
        assert!(stored <= 10, "{stored} puts of 64 bytes fit in 640");
        assert_eq!(e.counts().shard_bytes, stored * 64);
    }

    #[test]
    fn scan_walks_every_shard_in_pages() {
        let dir = tempfile::tempdir().expect("temp dir");
        let e = open(dir.path(), 0);
        for stripe in 0..5 {
            put(&e, &shard_key("job", 1, stripe, 0), &bytes(0, 10 + stripe as usize)).expect("put");
        }
        let m = b"manifest".to_vec();
        e.put_manifest(&manifest_key("job", 1, 0), 1, blake3_digest(&m), &m).expect("put");
        let first = e.scan_shards(None, 3).expect("scan");
        assert_eq!(first.len(), 3);
        let rest = e.scan_shards(Some(&first[2].0), 3).expect("scan");
        let stripes: Vec<_> =
            first.iter().chain(&rest).map(|(k, len)| (k.stripe.0, *len)).collect();
        assert_eq!(stripes, [(0, 10), (1, 11), (2, 12), (3, 13), (4, 14)]);
    }

    #[test]
    fn a_second_open_of_the_same_dir_is_refused_as_locked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _first = open(dir.path(), 0);
        let err = Engine::open(dir.path(), EngineOptions::default()).expect_err("locked");
        assert!(matches!(err, EngineError::Locked { .. }), "{err}");
    }

    #[test]
    fn index_records_round_trip_and_reject_garbage() {
        let r = IndexRecord::manifest(7, 3, blake3_digest(b"x"), 5, blake3_digest(b"base"));
        assert_eq!(IndexRecord::decode(&r.encode()).expect("decodes"), r);
        assert!(IndexRecord::decode(&r.encode()[1..]).is_err());
        let mut v1 = r.encode()[..RECORD_V1_BYTES].to_vec();
        v1[0] = 1;
        let old = IndexRecord::decode(&v1).expect("a version 1 record still decodes");
        assert_eq!((old.len, old.world_size, old.written_at_ms, old.revision), (7, 3, 0, 0));
        assert_eq!(old.base, old.hash, "a version 1 manifest is its own base");
        v1.push(0);
        assert!(IndexRecord::decode(&v1).is_err(), "a version 1 record of the wrong length");
        let mut bad = r.encode();
        bad[0] = 9;
        assert!(IndexRecord::decode(&bad).is_err());
    }

    /// One step of [`the_engine_agrees_with_a_map_through_any_puts_rewrites_deletes_and_reopens`].
    #[derive(Debug, Clone)]
    enum Op {
        /// Put shard `key` (of 8: 2 steps x 4 stripes) with bytes of this seed and length
        /// (refused if the key holds other bytes).
        Put { key: u8, seed: u8, len: usize },
        /// Put shard `key` again with the bytes it holds (a repair's rewrite), if any.
        Rewrite { key: u8 },
        /// Delete shard `key` alone, naming its stored hash.
        DeleteShard { key: u8 },
        /// Delete checkpoint `step` (1 or 2).
        DeleteCheckpoint { step: u64 },
        /// Close the engine and open it again.
        Reopen,
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0u8..8, any::<u8>(), 1usize..20_000)
                .prop_map(|(key, seed, len)| Op::Put { key, seed, len }),
            1 => (0u8..8).prop_map(|key| Op::Rewrite { key }),
            2 => (0u8..8).prop_map(|key| Op::DeleteShard { key }),
            1 => (1u64..=2).prop_map(|step| Op::DeleteCheckpoint { step }),
            1 => Just(Op::Reopen),
        ]
    }

    fn model_key(i: u8) -> ShardKey {
        shard_key("job", 1 + u64::from(i / 4), u32::from(i % 4), 0)
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever the sequence of puts, rewrites, refused overwrites, single and checkpoint
        /// deletes and reopens, every shard reads back exactly as first put (or `NotFound`
        /// once deleted: only then may other bytes take the key), the counters match, and no
        /// segment file outlives its checkpoint's last shard.
        #[test]
        fn the_engine_agrees_with_a_map_through_any_puts_rewrites_deletes_and_reopens(
            ops in proptest::collection::vec(op(), 1..24)
        ) {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut e = open(dir.path(), 0);
            let mut model: std::collections::BTreeMap<u8, Vec<u8>> = Default::default();
            for op in ops {
                match op {
                    Op::Put { key, seed, len } => {
                        let b = bytes(seed, len);
                        match (put(&e, &model_key(key), &b), model.get(&key)) {
                            (Ok(()), None) => {
                                model.insert(key, b);
                            }
                            (Ok(()), Some(held)) => proptest::prop_assert_eq!(held, &b),
                            (Err(EngineError::Conflict { .. }), Some(held)) => {
                                proptest::prop_assert_ne!(held, &b);
                            }
                            (got, held) => proptest::prop_assert!(false, "put {key}: {got:?}, model {held:?}"),
                        }
                    }
                    Op::Rewrite { key } => {
                        if let Some(held) = model.get(&key) {
                            put(&e, &model_key(key), held).expect("the same bytes again");
                        }
                    }
                    Op::DeleteShard { key } => {
                        let hash = model.get(&key).map_or(Digest::default(), |b| blake3_digest(b));
                        let existed = e.delete_shard(&model_key(key), hash).expect("delete");
                        proptest::prop_assert_eq!(existed, model.remove(&key).is_some());
                    }
                    Op::DeleteCheckpoint { step } => {
                        e.delete_checkpoint(&job("job"), Step(step)).expect("delete");
                        model.retain(|k, _| 1 + u64::from(k / 4) != step);
                    }
                    Op::Reopen => {
                        drop(e);
                        e = open(dir.path(), 0);
                    }
                }
                for i in 0..8u8 {
                    match (e.get_shard(&model_key(i)), model.get(&i)) {
                        (Ok(got), Some(want)) => proptest::prop_assert_eq!(&got.bytes, want),
                        (Err(EngineError::NotFound), None) => {}
                        (got, want) => proptest::prop_assert!(false, "shard {i}: {got:?}, model {want:?}"),
                    }
                }
                let bytes_stored: u64 = model.values().map(|b| b.len() as u64).sum();
                let counts = EngineCounts { shards: model.len() as u64, shard_bytes: bytes_stored, manifests: 0 };
                proptest::prop_assert_eq!(e.counts(), counts);
                let mut steps: Vec<String> = model.keys().map(|k| format!("job@{}.seg", 1 + k / 4)).collect();
                steps.dedup();
                proptest::prop_assert_eq!(segment_files(dir.path()), steps);
            }
        }
    }
}
