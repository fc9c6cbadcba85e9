//! Tidy checks on the simulator's own sources: every module says what it is for, and fast
//! mode never reads the wall clock (its one fixed `Instant` origin aside).

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn all() -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    sources(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("readable source");
            (p, text)
        })
        .collect()
}

#[test]
fn every_module_starts_with_a_doc_line() {
    for (path, text) in all() {
        assert!(text.starts_with("//!"), "{} has no //! header", path.display());
    }
}

#[test]
fn fast_mode_never_reads_the_clock() {
    for (path, text) in
        all().into_iter().filter(|(p, _)| p.components().any(|c| c.as_os_str() == "fast"))
    {
        for (n, line) in text.lines().enumerate() {
            let reads = ["SystemTime", "Instant::now", "tokio::time", "thread::sleep"]
                .iter()
                .any(|c| line.contains(c));
            let origin = line.contains("get_or_init(Instant::now)");
            assert!(
                !reads || origin,
                "{}:{}: fast mode reads a clock: {line}",
                path.display(),
                n + 1
            );
        }
    }
}
