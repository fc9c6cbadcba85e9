//! Older wire versions stay byte-exact. `tests/wire_v1/` holds the frame seeds that the release
//! speaking wire version 1 only (commit 72d3f15) wrote for its fuzz corpus, and
//! `tests/wire_v2/` those the release speaking versions 1 and 2 wrote (its `fuzz/corpus/frame`
//! at commit 276f3db, every frame at version 2): one of every request and response kind each
//! had. This build must read each of them at its version and, encoding the message again at
//! that version, write the very same bytes; so a node or client of this build that falls back
//! to an older version talks to that release exactly as it talked to itself. (Neither older
//! version carries a request id: a frame read at them has none.)

use std::path::Path;

use rackpoint_proto::limits::MIN_WIRE_VERSION;
use rackpoint_proto::wire::{
    decode_header_meta, encode_frame_at, FramePrefix, Message, Versions, PREFIX_BYTES,
};
use rackpoint_proto::{Request, Response};

fn frames(version: u8) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/wire_v{version}"));
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("the frames of the version")
        .map(|e| {
            let path = e.expect("an entry").path();
            let name = path.file_name().expect("a name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("readable"))
        })
        .collect();
    out.sort();
    out
}

/// Decodes `bytes` as one frame at whatever version it says, checks that it is `version`
/// without a request id, and encodes it again at `version`.
fn reencode<M: Message>(name: &str, bytes: &[u8], version: u8) -> (Vec<u8>, &'static str) {
    let prefix = FramePrefix::parse(bytes[..PREFIX_BYTES].try_into().expect("8 bytes"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let header_end = PREFIX_BYTES + prefix.header_len as usize;
    let (msg, meta) = decode_header_meta::<M>(
        &bytes[PREFIX_BYTES..header_end],
        prefix.payload_len,
        Versions::ALL,
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(meta.version, version, "{name} is a version {version} frame");
    assert_eq!(meta.request_id, None, "{name}: version {version} has no request id");
    let mut again = encode_frame_at(&msg, prefix.payload_len, version)
        .unwrap_or_else(|e| panic!("{name} at version {version}: {e}"));
    again.extend_from_slice(&bytes[header_end..]);
    (again, msg.kind())
}

/// Every frame of `tests/wire_v{version}` is written again byte for byte, and there is one of
/// every kind the version has.
fn every_frame_is_written_again_byte_for_byte(version: u8) {
    let mut requests = Vec::new();
    let mut responses = Vec::new();
    for (name, bytes) in frames(version) {
        let (again, kind) = if name.starts_with("request-") {
            let (again, kind) = reencode::<Request>(&name, &bytes, version);
            requests.push(kind);
            (again, kind)
        } else {
            let (again, kind) = reencode::<Response>(&name, &bytes, version);
            responses.push(kind);
            (again, kind)
        };
        assert_eq!(again, bytes, "{name} ({kind}) is written again byte for byte");
    }
    requests.sort();
    requests.dedup();
    responses.sort();
    responses.dedup();
    let variants = |n: u8| usize::from(n);
    assert_eq!(
        requests.len(),
        variants(<Request as Message>::variants_in(version)),
        "{requests:?}"
    );
    assert_eq!(
        responses.len(),
        variants(<Response as Message>::variants_in(version)),
        "{responses:?}"
    );
}

#[test]
fn every_frame_the_version_1_release_wrote_is_read_and_written_again_byte_for_byte() {
    assert_eq!(MIN_WIRE_VERSION, 1, "this build still speaks version 1");
    every_frame_is_written_again_byte_for_byte(1);
}

#[test]
fn every_frame_the_version_2_release_wrote_is_read_and_written_again_byte_for_byte() {
    every_frame_is_written_again_byte_for_byte(2);
}
