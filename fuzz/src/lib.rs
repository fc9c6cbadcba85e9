//! Rackpoint's fuzz harness, on the stable toolchain: seeded, structure-aware mutation of
//! hostile bytes into three targets, each run watched for panics (on any thread), broken
//! properties, and allocations out of bounds.
//!
//! - [`targets::frame`]: `FramePrefix::parse`, `decode_header` and `decode_frame` of requests
//!   and responses.
//! - [`targets::manifest`]: `Manifest::from_bytes` and `validate`.
//! - [`targets::handler`]: `Handler::handle` over a real engine in a temporary folder.
//! - [`mutate`]: byte-level and frame-aware mutations; [`runner`]: the loop, the checks and
//!   the saved failures; [`alloc`]: the counting global allocator every binary linking this
//!   crate runs on; [`crash`]: the panic hook and the abort handler that saves the input.
//!
//! Inputs start from the corpus in `fuzz/corpus/<target>/` (real frames of every request and
//! response kind, and manifests written by the client's save), made by `rackpoint-fuzz corpus`.

pub mod alloc;
pub mod crash;
pub mod mutate;
pub mod rng;
pub mod runner;
pub mod targets;

use std::path::{Path, PathBuf};

use runner::Target;

#[global_allocator]
static GLOBAL: alloc::Counting = alloc::Counting;

/// The target names, in the order `.ci/fuzz` runs them.
pub const TARGETS: [&str; 3] = ["frame", "manifest", "handler"];

/// The target called `name`.
pub fn target(name: &str) -> Option<Box<dyn Target>> {
    match name {
        "frame" => Some(Box::new(targets::frame::FrameTarget::default())),
        "manifest" => Some(Box::new(targets::manifest::ManifestTarget::default())),
        "handler" => Some(Box::new(targets::handler::HandlerTarget::new())),
        _ => None,
    }
}

/// The corpus in the source tree (`fuzz/corpus`).
pub fn default_corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

fn read_dir_sorted(dir: &Path, prefix: &str) -> std::io::Result<Vec<Vec<u8>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    paths.sort();
    paths.iter().map(std::fs::read).collect()
}

/// The seeds of target `name` in `corpus`: its own folder, and for `handler` also every
/// request frame of `frame`'s.
pub fn seeds(corpus: &Path, name: &str) -> std::io::Result<Vec<Vec<u8>>> {
    let mut seeds = read_dir_sorted(&corpus.join(name), "")?;
    if name == "handler" {
        seeds.extend(read_dir_sorted(&corpus.join("frame"), "request-")?);
    }
    Ok(seeds)
}
