//! A node's data folder stays readable by the next version. `tests/data/format-1/` is a data
//! folder this release's engine wrote (data format 1: the `index` and `data` RocksDB families,
//! index records of version 2 and 3, shard payloads in per-checkpoint segment files, deletion
//! marks, and its `FORMAT` file): every later build must open it and read back exactly what
//! it holds, so a change of layout that forgets old folders fails here. (It is written by the
//! ignored test `write_the_format_1_folder`, once per data format; a new format adds its own
//! folder next to this one and keeps this test.) A folder of a format newer than the build
//! reads is refused at open with an error naming both formats, and left as it was.

use std::path::Path;

use rackpoint_proto::{
    Digest, JobName, ManifestKey, ObjectName, Rank, ShardIndex, ShardKey, Step, StripeIndex,
};
use rackpoint_store::engine::{Engine, EngineError, EngineOptions, DATA_FORMAT, FORMAT_FILE};

const FOLDER: &str = "tests/data/format-1";

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(FOLDER)
}

fn job() -> JobName {
    JobName::new("format-job").expect("valid")
}

/// What the folder holds: two shards of step 10 (seeded bytes), its manifest, and a deletion
/// mark of step 9.
fn shards() -> Vec<(ShardKey, Vec<u8>)> {
    (0..2u8)
        .map(|i| {
            let key = ShardKey {
                job: job(),
                step: Step(10),
                rank: Rank(0),
                object: ObjectName::new("model.bin").expect("valid"),
                stripe: StripeIndex(0),
                index: ShardIndex(i),
            };
            let bytes: Vec<u8> = (0..4096u32).map(|b| (b.wrapping_mul(31) as u8) ^ i).collect();
            (key, bytes)
        })
        .collect()
}

fn manifest() -> (ManifestKey, u32, Vec<u8>) {
    (ManifestKey { job: job(), step: Step(10), rank: Rank(0) }, 1, b"a manifest's bytes".to_vec())
}

const MARKED: Step = Step(9);

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("readable") {
        let entry = entry.expect("an entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("a type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[test]
#[ignore = "writes tests/data/format-1; run once, by hand, when a data format is introduced"]
fn write_the_format_1_folder() {
    assert_eq!(DATA_FORMAT, 1, "the folder of format 1 is written by a build of format 1");
    let dir = fixture();
    let _ = std::fs::remove_dir_all(&dir);
    {
        let engine = Engine::open(&dir, EngineOptions::default()).expect("opens");
        for (key, bytes) in shards() {
            engine.put_shard(&key, Digest::of(&bytes), &bytes).expect("put shard");
        }
        let (key, world_size, bytes) = manifest();
        engine.put_manifest(&key, world_size, Digest::of(&bytes), &bytes).expect("put manifest");
        engine.mark_deleting(&job(), MARKED).expect("mark");
    }
    // RocksDB's own logs and lock are not part of the format.
    for entry in std::fs::read_dir(&dir).expect("readable") {
        let name = entry.expect("an entry").file_name().to_string_lossy().into_owned();
        if name == "LOCK" || name.starts_with("LOG") {
            std::fs::remove_file(dir.join(name)).expect("remove");
        }
    }
}

#[test]
fn the_format_1_folder_opens_and_reads_back_what_it_holds() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    copy_dir(&fixture(), &dir);
    let format = std::fs::read_to_string(dir.join(FORMAT_FILE)).expect("the folder's format");
    assert_eq!(format, "rackpoint-data-format 1\n");
    let engine = Engine::open(&dir, EngineOptions::default()).expect("a format 1 folder opens");
    for (key, bytes) in shards() {
        let stored = engine.get_shard(&key).expect("the shard reads back");
        assert_eq!(stored.hash, Digest::of(&bytes));
        assert!(stored.bytes[..] == bytes[..], "{key:?} byte for byte");
    }
    let (key, world_size, bytes) = manifest();
    let stored = engine.get_manifest(&key).expect("the manifest reads back");
    assert_eq!((stored.world_size, &stored.bytes[..]), (world_size, &bytes[..]));
    assert_eq!(engine.deletion_marks(&job()).expect("marks"), [MARKED]);
    let counts = engine.counts();
    assert_eq!((counts.shards, counts.shard_bytes, counts.manifests), (2, 8192, 1));
}

#[test]
fn a_folder_of_a_newer_format_is_refused_and_left_as_it_was() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    copy_dir(&fixture(), &dir);
    let newer = format!("rackpoint-data-format {}\n", DATA_FORMAT + 1);
    std::fs::write(dir.join(FORMAT_FILE), &newer).expect("write");
    let before = std::fs::read_dir(&dir).expect("readable").count();
    let err = Engine::open(&dir, EngineOptions::default()).expect_err("refused");
    assert!(
        matches!(&err, EngineError::NewerFormat { found, newest, .. } if *found == DATA_FORMAT + 1 && *newest == DATA_FORMAT),
        "{err}"
    );
    assert!(err.to_string().contains("run the release that wrote it"), "{err}");
    assert_eq!(std::fs::read_to_string(dir.join(FORMAT_FILE)).expect("kept"), newer);
    assert_eq!(std::fs::read_dir(&dir).expect("readable").count(), before, "nothing created");
}

#[test]
fn a_folder_from_before_the_format_file_is_format_1_and_gets_stamped() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    copy_dir(&fixture(), &dir);
    std::fs::remove_file(dir.join(FORMAT_FILE)).expect("as the previous release left it");
    let engine = Engine::open(&dir, EngineOptions::default()).expect("opens");
    assert_eq!(engine.counts().shards, 2);
    let format = std::fs::read_to_string(dir.join(FORMAT_FILE)).expect("stamped");
    assert_eq!(format, format!("rackpoint-data-format {DATA_FORMAT}\n"));
}
