//! Guards the set-up step that a bare machine depends on: `.ci/libclang.sh` must find exactly
//! the libraries bindgen loads when it builds RocksDB's bindings (`libclang.so`,
//! `libclang-<N>.so`), and must not take `libclang-cpp.so.<N>`, which a bare Debian machine
//! ships and bindgen cannot use. Each case runs the script's `find_libclang` against a fake
//! library folder.

use std::path::Path;
use std::process::Command;

/// Runs `find_libclang DIR` with only `files` in DIR; returns what it printed when it found one.
fn find_libclang_with(files: &[&str]) -> Option<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    for f in files {
        std::fs::write(dir.path().join(f), b"").expect("fake library");
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/libclang.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"source "$0" && find_libclang "$1""#)
        .arg(&script)
        .arg(dir.path())
        .output()
        .expect("run bash");
    let printed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match out.status.code() {
        Some(0) => {
            Some(Path::new(&printed).file_name().expect("a path").to_string_lossy().into_owned())
        }
        Some(1) => {
            assert!(printed.is_empty(), "printed {printed:?} but found nothing");
            None
        }
        other => panic!("find_libclang exited {other:?}: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[test]
fn a_bare_machine_has_only_libclang_cpp_which_does_not_count() {
    assert_eq!(find_libclang_with(&["libclang-cpp.so.14"]), None);
    assert_eq!(find_libclang_with(&["libclang-cpp.so", "libclang-cpp.so.14"]), None);
}

#[test]
fn soname_only_files_do_not_count() {
    // libclang1-14 without -dev: bindgen's build-time search wants an unversioned name.
    assert_eq!(find_libclang_with(&["libclang.so.1", "libclang-14.so.1"]), None);
}

#[test]
fn the_libraries_bindgen_loads_are_found() {
    assert_eq!(find_libclang_with(&["libclang.so"]).as_deref(), Some("libclang.so"));
    assert_eq!(find_libclang_with(&["libclang-14.so"]).as_deref(), Some("libclang-14.so"));
    assert_eq!(
        find_libclang_with(&["libclang-cpp.so.14", "libclang-14.0.6.so"]).as_deref(),
        Some("libclang-14.0.6.so")
    );
}

#[test]
fn an_empty_folder_has_none() {
    assert_eq!(find_libclang_with(&[]), None);
}
