//! Shared pieces of the side-by-side baseline harness (`rackpoint-harness`): seeded data,
//! the local-file baselines (chunked writes with fsync, reads), dropping the page cache, the
//! process's resident-memory readings, medians, and the printed table; CPU and UDP counters
//! from `/proc` in [`proc_stats`].

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

pub mod proc_stats;

/// Bytes in a MiB.
pub const MIB: usize = 1 << 20;

pub use rackpoint_client::local_cluster::seeded_bytes;

/// Throughput in MiB/s of `bytes` moved in `elapsed` (a zero duration counts as 1 ns).
pub fn mib_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / MIB as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
/// NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Writes `data` to a new file at `path` in `chunk_bytes` writes, calling `fsync` after every
/// `fsync_every` chunks and once at the end; returns the time from open to the last fsync.
/// A `chunk_bytes` or `fsync_every` of 0 is taken as 1.
pub fn write_with_fsync(
    path: &Path,
    data: &[u8],
    chunk_bytes: usize,
    fsync_every: usize,
) -> io::Result<Duration> {
    let started = Instant::now();
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    let fsync_every = fsync_every.max(1);
    let mut unsynced = 0;
    for chunk in data.chunks(chunk_bytes.max(1)) {
        file.write_all(chunk)?;
        unsynced += 1;
        if unsynced == fsync_every {
            file.sync_all()?;
            unsynced = 0;
        }
    }
    if unsynced > 0 || data.is_empty() {
        file.sync_all()?;
    }
    Ok(started.elapsed())
}

/// Reads the whole file at `path`; returns its bytes and the time from open to the last read.
pub fn read_whole(path: &Path) -> io::Result<(Vec<u8>, Duration)> {
    let started = Instant::now();
    let mut file = File::open(path)?;
    let len = usize::try_from(file.metadata()?.len())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut bytes = Vec::with_capacity(len);
    file.read_to_end(&mut bytes)?;
    Ok((bytes, started.elapsed()))
}

/// Flushes dirty pages (`sync`) and drops the clean page cache, dentries and inodes stay
/// (`echo 1 > /proc/sys/vm/drop_caches`). Needs root; the error says why it could not.
pub fn drop_page_cache() -> io::Result<()> {
    let status = std::process::Command::new("sync").status()?;
    if !status.success() {
        return Err(io::Error::other(format!("sync exited with {status}")));
    }
    std::fs::write("/proc/sys/vm/drop_caches", b"1")
}

/// The process's resident memory, in KiB, as `/proc/self/status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size since start or the last [`reset_peak_rss`] (`VmHWM`).
    pub hwm_kib: u64,
}

/// Reads [`Memory`] from `/proc/self/status`.
pub fn memory_now() -> io::Result<Memory> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| {
        status_kib(&status, name).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("no {name} in /proc/self/status"))
        })
    };
    Ok(Memory { rss_kib: field("VmRSS")?, hwm_kib: field("VmHWM")? })
}

/// Resets the process's peak resident set size (`VmHWM`) to its current size, by writing `5`
/// to `/proc/self/clear_refs` (Linux 4.0 and later).
pub fn reset_peak_rss() -> io::Result<()> {
    std::fs::write("/proc/self/clear_refs", b"5")
}

/// The value in KiB of a `Name:   1234 kB` line of a `/proc/<pid>/status` text.
pub fn status_kib(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(':')?;
        rest.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// A text table with a header row, columns padded to their widest cell; the first column is
/// left-aligned, the others right-aligned.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self { header: header.iter().map(|h| (*h).to_owned()).collect(), rows: Vec::new() }
    }

    /// Appends a row; missing cells print empty, extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.header.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as lines of text, each ending in a newline.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|c| {
                let cells = std::iter::once(&self.header).chain(&self.rows);
                cells.map(|r| r[c].chars().count()).max().unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(
                    |(c, (cell, &w))| {
                        if c == 0 {
                            format!("{cell:<w$}")
                        } else {
                            format!("{cell:>w$}")
                        }
                    },
                )
                .collect();
            format!("{}\n", padded.join("  ").trim_end())
        };
        let rule: Vec<String> = widths.iter().map(|&w| "-".repeat(w)).collect();
        let mut out = line(&self.header);
        out.push_str(&line(&rule));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_bytes_are_reproducible_and_depend_on_the_seed() {
        let a = seeded_bytes(7, 1001);
        assert_eq!(a.len(), 1001);
        assert_eq!(a, seeded_bytes(7, 1001));
        assert_ne!(a, seeded_bytes(8, 1001));
        assert_eq!(&seeded_bytes(7, 2000)[..1001], &a[..], "a longer stream extends a shorter one");
        assert!(seeded_bytes(1, 0).is_empty());
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[5.0]), Some(5.0));
    }

    #[test]
    fn throughput_in_mib_per_second() {
        assert_eq!(mib_per_s(4 * MIB as u64, Duration::from_secs(2)), 2.0);
        assert!(mib_per_s(1, Duration::ZERO).is_finite());
    }

    #[test]
    fn written_files_read_back_identical() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let data = seeded_bytes(3, 3 * 1000 + 17);
        for (i, (chunk, every)) in [(1000, 1), (1000, 16), (0, 0), (5000, 2)].iter().enumerate() {
            let path = dir.path().join(format!("f{i}"));
            write_with_fsync(&path, &data, *chunk, *every).expect("write");
            let (back, _) = read_whole(&path).expect("read");
            assert_eq!(back, data);
        }
        let empty = dir.path().join("empty");
        write_with_fsync(&empty, &[], 1000, 1).expect("write empty");
        assert!(read_whole(&empty).expect("read empty").0.is_empty());
    }

    #[test]
    fn an_existing_file_is_not_overwritten() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"keep").expect("write");
        let err = write_with_fsync(&path, b"new", 1, 1).expect_err("create_new refuses");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).expect("read"), b"keep");
    }

    #[test]
    fn status_fields_parse() {
        let status = "Name:\tx\nVmHWM:\t  123456 kB\nVmRSS:\t    789 kB\nVmRSSX: 1 kB\n";
        assert_eq!(status_kib(status, "VmHWM"), Some(123_456));
        assert_eq!(status_kib(status, "VmRSS"), Some(789));
        assert_eq!(status_kib(status, "VmSwap"), None);
        assert_eq!(status_kib("VmRSS: lots kB\n", "VmRSS"), None);
    }

    #[test]
    fn memory_of_this_process_is_readable_and_consistent() {
        let m = memory_now().expect("/proc/self/status on Linux");
        assert!(m.rss_kib > 0);
        assert!(m.hwm_kib >= m.rss_kib);
    }

    #[test]
    fn table_columns_align() {
        let mut t = Table::new(&["what", "MiB/s"]);
        t.row(vec!["node".into(), "12.5".into()]);
        t.row(vec!["local file".into(), "1234.0".into(), "dropped".into()]);
        t.row(vec!["short".into()]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "what         MiB/s");
        assert_eq!(lines[1], "----------  ------");
        assert_eq!(lines[2], "node          12.5");
        assert_eq!(lines[3], "local file  1234.0");
        assert_eq!(lines[4], "short");
    }
}
