//! The data folder's format version: a `FORMAT` file (`rackpoint-data-format N`) naming the
//! layout of everything the engine keeps there (its RocksDB families, key encodings, index
//! records, segment files and deletion marks). Checked at every open, before RocksDB is
//! touched: a folder of a newer format than this build reads is refused with an error that
//! names both formats, never opened and misread; an older one would be migrated here. A folder
//! without the file was written before it existed, in format 1, the layout this build writes.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::EngineError;

/// The file in the data folder that holds its format.
pub const FORMAT_FILE: &str = "FORMAT";
/// The format this build writes (and the newest it reads).
pub const DATA_FORMAT: u32 = 1;
/// The format of a folder without a `FORMAT` file (written before the file existed).
const UNSTAMPED_FORMAT: u32 = 1;
/// What the file holds before the number.
const FORMAT_PREFIX: &str = "rackpoint-data-format ";
/// Longest `FORMAT` file read.
const MAX_FORMAT_FILE_BYTES: usize = 64;

/// Checks the format of the folder `dir` (which exists) and stamps it with `DATA_FORMAT`
/// when it has no `FORMAT` file yet; returns the format the folder was in.
pub fn check_and_stamp(dir: &Path) -> Result<u32, EngineError> {
    let path = dir.join(FORMAT_FILE);
    let found = match std::fs::read(&path) {
        Ok(bytes) => parse(&bytes)
            .map_err(|reason| EngineError::BadFormatFile { path: path.clone(), reason })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => UNSTAMPED_FORMAT,
        Err(e) => return Err(EngineError::BadFormatFile { path, reason: e.to_string() }),
    };
    if found > DATA_FORMAT {
        return Err(EngineError::NewerFormat { dir: dir.to_owned(), found, newest: DATA_FORMAT });
    }
    if !path.exists() {
        stamp(dir).map_err(|e| EngineError::BadFormatFile { path, reason: e.to_string() })?;
    }
    Ok(found)
}

fn parse(bytes: &[u8]) -> Result<u32, String> {
    let text = std::str::from_utf8(bytes)
        .ok()
        .filter(|_| bytes.len() <= MAX_FORMAT_FILE_BYTES)
        .ok_or_else(|| {
            format!("not a format line (at most {MAX_FORMAT_FILE_BYTES} bytes of text)")
        })?;
    text.trim_end()
        .strip_prefix(FORMAT_PREFIX)
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("expected `{FORMAT_PREFIX}N` with N >= 1, found {text:?}"))
}

/// Writes `FORMAT` durably: a temporary file, synced, renamed over, the folder synced.
fn stamp(dir: &Path) -> io::Result<()> {
    let tmp: PathBuf = dir.join(format!("{FORMAT_FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(format!("{FORMAT_PREFIX}{DATA_FORMAT}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(FORMAT_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_folder_is_stamped_and_an_unstamped_one_is_format_1() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(check_and_stamp(dir.path()).expect("opens"), UNSTAMPED_FORMAT);
        let text = std::fs::read_to_string(dir.path().join(FORMAT_FILE)).expect("stamped");
        assert_eq!(text, format!("rackpoint-data-format {DATA_FORMAT}\n"));
        assert_eq!(check_and_stamp(dir.path()).expect("opens again"), DATA_FORMAT);
    }

    #[test]
    fn a_newer_or_unreadable_format_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(FORMAT_FILE);
        std::fs::write(&path, format!("rackpoint-data-format {}\n", DATA_FORMAT + 1)).expect("w");
        let err = check_and_stamp(dir.path()).expect_err("a newer format is refused");
        assert!(
            matches!(err, EngineError::NewerFormat { found, newest: DATA_FORMAT, .. } if found == DATA_FORMAT + 1),
            "{err}"
        );
        assert!(err.to_string().contains("format 2"), "{err}");
        for bad in ["", "rackpoint-data-format x", "rackpoint-data-format 0", "format 1"] {
            std::fs::write(&path, bad).expect("write");
            let err = check_and_stamp(dir.path()).expect_err("refused");
            assert!(matches!(err, EngineError::BadFormatFile { .. }), "{bad:?}: {err}");
            assert_eq!(std::fs::read_to_string(&path).expect("kept"), bad, "left as it was");
        }
    }
}
