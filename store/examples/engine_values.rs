//! Measures how the engine should keep 1 MiB shard payloads: per-checkpoint segment files
//! (appended once, fdatasynced by group commit, the index in RocksDB), plain RocksDB values
//! (synced WAL, memtable, SST files) or BlobDB (values in blob files, references in the LSM
//! tree). The process's CPU seconds per GiB written and read are printed too.
//!
//! Write: `--writers` threads each put their share of `--total-mib` shards through
//! `Engine::put_shard` (blake3 check + synced write; concurrent writers share WAL fsyncs by
//! group commit); the disk bytes the process wrote per payload byte (write amplification:
//! WAL, flushes, compactions) is printed too, being immune to the machine's noise. Read: the engine is closed, the page cache dropped when the OS allows it,
//! the engine reopened, and `--readers` threads read every shard back (hash re-checked).
//!
//! ```text
//! cargo run --release -p rackpoint-store --example engine_values -- --values segments
//! cargo run --release -p rackpoint-store --example engine_values -- --values inline
//! cargo run --release -p rackpoint-store --example engine_values -- --values blob
//! ```

use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use rackpoint_proto::{Digest, JobName, ObjectName, Rank, ShardIndex, ShardKey, Step, StripeIndex};
use rackpoint_store::{Engine, EngineOptions, ValueStorage};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Values {
    Segments,
    Inline,
    Blob,
}

/// Engine value-storage benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Where payloads go.
    #[arg(long, value_enum)]
    values: Values,
    /// Total MiB written and read.
    #[arg(long, default_value_t = 1024)]
    total_mib: u32,
    /// Shard size in KiB.
    #[arg(long, default_value_t = 1024)]
    shard_kib: u32,
    /// Concurrent writer threads.
    #[arg(long, default_value_t = 16)]
    writers: u32,
    /// Concurrent reader threads.
    #[arg(long, default_value_t = 4)]
    readers: u32,
    /// Parent folder of the temporary store (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
}

fn key(i: u32) -> ShardKey {
    ShardKey {
        job: JobName::new("bench").expect("a valid job name"),
        step: Step(1),
        rank: Rank(0),
        object: ObjectName::new("weights").expect("a valid object name"),
        stripe: StripeIndex(i),
        index: ShardIndex(0),
    }
}

/// Deterministic, incompressible-looking bytes for shard `i` (xorshift).
fn payload(i: u32, len: usize) -> Vec<u8> {
    let mut x = u64::from(i) * 0x9E37_79B9_7F4A_7C15 + 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn mb_per_sec(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs
}

fn write_all(engine: &Engine, shards: u32, len: usize, writers: u32) -> f64 {
    let payloads: Vec<(Vec<u8>, Digest)> = (0..writers)
        .map(|w| {
            let p = payload(w, len);
            let hash = Digest(*blake3::hash(&p).as_bytes());
            (p, hash)
        })
        .collect();
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..writers {
            let (p, hash) = &payloads[w as usize];
            s.spawn(move || {
                for i in (w..shards).step_by(writers as usize) {
                    engine.put_shard(&key(i), *hash, p).expect("put");
                }
            });
        }
    });
    start.elapsed().as_secs_f64()
}

fn read_all(engine: &Engine, shards: u32, readers: u32) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for r in 0..readers {
            s.spawn(move || {
                for i in (r..shards).step_by(readers as usize) {
                    engine.get_shard(&key(i)).expect("get");
                }
            });
        }
    });
    start.elapsed().as_secs_f64()
}

/// Bytes this process has caused to be written to storage (`write_bytes` of
/// `/proc/self/io`), if the OS reports it.
fn disk_bytes_written() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    let line = io.lines().find(|l| l.starts_with("write_bytes:"))?;
    line["write_bytes:".len()..].trim().parse().ok()
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (clock ticks
/// of 1/100 s).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn drop_page_cache() -> bool {
    std::fs::write("/proc/sys/vm/drop_caches", "3\n").is_ok()
}

fn main() {
    let args = Args::parse();
    let values = match args.values {
        Values::Segments => ValueStorage::Segments,
        Values::Inline => ValueStorage::Inline,
        Values::Blob => ValueStorage::BlobFiles,
    };
    let parent = args.dir.unwrap_or_else(std::env::temp_dir);
    let dir = tempfile::tempdir_in(parent).expect("temp dir");
    let options = EngineOptions { capacity_bytes: 0, values };
    let len = args.shard_kib as usize * 1024;
    let shards = (u64::from(args.total_mib) * 1024 / u64::from(args.shard_kib)) as u32;
    let bytes = u64::from(shards) * len as u64;

    let engine = Engine::open(dir.path(), options).expect("open");
    let written_before = disk_bytes_written();
    let cpu_before = cpu_secs();
    let write_secs = write_all(&engine, shards, len, args.writers);
    drop(engine);
    let write_cpu = cpu_secs() - cpu_before;
    let amplification = written_before
        .zip(disk_bytes_written())
        .map(|(before, after)| format!("{:.2}", (after - before) as f64 / bytes as f64))
        .unwrap_or_else(|| "?".into());
    let cold = drop_page_cache();
    let engine = Engine::open(dir.path(), options).expect("reopen");
    let cpu_before = cpu_secs();
    let read_secs = read_all(&engine, shards, args.readers);
    let read_cpu = cpu_secs() - cpu_before;
    let gib = bytes as f64 / f64::from(1u32 << 30);
    println!(
        "values={:?} shards={shards} x {} KiB writers={} readers={} | write {:.0} MB/s ({:.2} s, {:.2} core-s/GiB, disk bytes written per payload byte {amplification}) | read{} {:.0} MB/s ({:.2} s, {:.2} core-s/GiB)",
        args.values,
        args.shard_kib,
        args.writers,
        args.readers,
        mb_per_sec(bytes, write_secs),
        write_secs,
        write_cpu / gib,
        if cold { " (cold cache)" } else { " (warm cache)" },
        mb_per_sec(bytes, read_secs),
        read_secs,
        read_cpu / gib,
    );
}
