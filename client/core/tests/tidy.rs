//! Tidiness as a test: every module of the pure core has a `//!` header, and none reads the
//! clock, sleeps, or touches files, sockets or processes outside its tests.

use std::path::Path;

/// What the pure core must never do, outside `#[cfg(test)]` code.
const FORBIDDEN: &[&str] = &[
    "Instant::now",
    "SystemTime",
    "thread::sleep",
    "std::fs",
    "std::net::UdpSocket",
    "std::net::TcpStream",
    "std::process",
    "tokio",
];

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_pure_core_reads_no_clock_and_does_no_io() {
    let mut files = Vec::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    assert!(files.len() >= 9, "found the sources: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read source");
        let is_test_file = file.file_name().is_some_and(|n| n == "tests.rs");
        if !is_test_file {
            assert!(text.starts_with("//!"), "{} has no //! header", file.display());
        }
        let code = if is_test_file { "" } else { text.split("#[cfg(test)]").next().unwrap_or("") };
        for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
            for bad in FORBIDDEN {
                assert!(
                    !line.contains(bad),
                    "{}: `{bad}` in the pure core: {line}",
                    file.display()
                );
            }
        }
    }
}
