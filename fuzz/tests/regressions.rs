//! What the harness found, kept found: each hostile input it reported, rebuilt at its worst
//! and run under the harness's allocation checks. One test in this binary on purpose: the
//! allocation counts are process-wide.

use rackpoint_core::manifest::{Manifest, ManifestError, StripeEntry};
use rackpoint_fuzz::alloc::{Usage, Window};
use rackpoint_fuzz::mutate::varint;
use rackpoint_fuzz::runner::{ALLOCATION_CAP, PEAK_BYTES_PER_INPUT_BYTE, PEAK_FIXED_BYTES};
use rackpoint_fuzz::{default_corpus, seeds};
use rackpoint_proto::limits::{MAX_MANIFEST_BYTES, MAX_OBJECTS_PER_PART};

/// A real manifest from the corpus.
fn real() -> Manifest {
    let seed = seeds(&default_corpus(), "manifest").expect("the corpus reads").remove(0);
    Manifest::from_bytes(&seed).expect("a valid seed")
}

/// `bytes` with the first occurrence of `marker` replaced by `with`.
fn splice(bytes: &[u8], marker: &[u8], with: &[u8]) -> Vec<u8> {
    let at = bytes.windows(marker.len()).position(|w| w == marker).expect("the marker is there");
    [&bytes[..at], with, &bytes[at + marker.len()..]].concat()
}

/// What `from_bytes` allocated refusing `bytes`, and its error.
fn refusal(bytes: &[u8]) -> (Usage, ManifestError) {
    let window = Window::begin(ALLOCATION_CAP);
    let parsed = Manifest::from_bytes(bytes);
    let usage = window.end();
    (usage, parsed.expect_err("a hostile manifest is refused"))
}

/// The harness's budget for an input of `len` bytes; a refusal now stays far below it, within
/// the 1 MiB a sequence may be preallocated (2 MiB here, for the margin).
fn budget(len: usize) -> usize {
    (PEAK_FIXED_BYTES + PEAK_BYTES_PER_INPUT_BYTE * len).min(2 << 20)
}

/// Issue 16, "hostile bytes": the largest manifest a node accepts, made of stripes that list
/// no shards (one byte each on the wire, 24 in memory), took about 24 times its size before
/// anything was checked: a 2 GiB allocation for 64 MiB (the harness's cap refuses it, which
/// aborts). Many short metadata keys cost about 14 times their size. Counts are now checked
/// as they are decoded; the errors are those `validate` gives.
#[test]
fn manifests_of_many_small_elements_are_refused_within_the_allocation_budget() {
    let mut m = real();
    let marker_stripes = 1000;
    m.objects[0].stripes = vec![StripeEntry { shards: Vec::new() }; marker_stripes];
    let small = m.to_bytes();
    let marker = [varint(marker_stripes as u64), vec![0; marker_stripes]].concat();
    let n = MAX_MANIFEST_BYTES as usize - small.len();
    let stripes = splice(&small, &marker, &[varint(n as u64), vec![0; n]].concat());
    assert!(stripes.len() <= MAX_MANIFEST_BYTES as usize + 8);
    let (usage, e) = refusal(&stripes);
    assert!(usage.peak <= budget(stripes.len()), "{usage:?} for {} bytes", stripes.len());
    assert!(matches!(e, ManifestError::Malformed(ref why) if why.contains("0 shards")), "{e}");

    // Metadata: the map's count and its entries spliced in for an empty map and no `prev`.
    let mut m = real();
    m.user_meta.clear();
    m.prev = None;
    let small = m.to_bytes();
    assert_eq!(small[small.len() - 2..], [0, 0], "an empty map, then no prev");
    let count = 7_000_000u64;
    let mut meta = small[..small.len() - 2].to_vec();
    meta.extend(varint(count));
    for i in 0..count {
        let key = format!("{i:x}");
        meta.extend(varint(key.len() as u64));
        meta.extend(key.as_bytes());
        meta.push(0);
    }
    meta.push(0);
    assert!(meta.len() <= MAX_MANIFEST_BYTES as usize);
    let (usage, e) = refusal(&meta);
    assert!(usage.peak <= budget(meta.len()), "{usage:?} for {} bytes", meta.len());
    assert_eq!(e, ManifestError::TooManyUserMeta { count: count as usize });

    // Objects: one more than the limit, with enough bytes behind the count to be believed
    // (postcard gives no length hint for a count longer than the bytes left; such a count
    // fails at the end of the input, with nothing allocated for it).
    let mut m = real();
    m.objects.truncate(1);
    let one = m.to_bytes();
    let name = m.objects[0].name.as_str().as_bytes();
    let over = MAX_OBJECTS_PER_PART + 1;
    let marker = [&[1, name.len() as u8][..], name].concat();
    let objects = [splice(&one, &marker, &varint(over as u64)), vec![0; over]].concat();
    let (usage, e) = refusal(&objects);
    assert!(usage.peak <= budget(objects.len()), "{usage:?}");
    assert_eq!(e, ManifestError::TooManyObjects { count: over });
    let unbelievable = splice(&one, &marker, &varint(1 << 40));
    let (usage, e) = refusal(&unbelievable);
    assert!(usage.peak <= budget(unbelievable.len()), "{usage:?}");
    assert!(matches!(e, ManifestError::Malformed(_)), "{e}");
}
