//! Older wire versions stay byte-exact: `tests/wire_v1/` holds the frame seeds that the
//! release of wire version 1 (commit 72d3f15) wrote for its fuzz corpus, and `tests/wire_v2/`
//! those of the release of wire version 2 (commit 276f3db), one of every request and response
//! kind each had. This build must read each of them at its version and, encoding the message
//! again at that version, write the very same bytes; so a node or client of this build that
//! falls back to an older version talks to that release exactly as it talked to itself.

use std::path::Path;

use rackpoint_proto::limits::MIN_WIRE_VERSION;
use rackpoint_proto::wire::{
    decode_header_in, encode_frame_at, FramePrefix, Message, Versions, PREFIX_BYTES,
};
use rackpoint_proto::{Request, Response};

fn frames(version: u8) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/wire_v{version}"));
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("the older version's frames")
        .map(|e| {
            let path = e.expect("an entry").path();
            let name = path.file_name().expect("a name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("readable"))
        })
        .collect();
    out.sort();
    out
}

/// Decodes `bytes` as one frame at whatever version it says, which must be `at`, and
/// encodes it again at `at`.
fn reencode<M: Message>(name: &str, bytes: &[u8], at: u8) -> (Vec<u8>, &'static str) {
    let prefix = FramePrefix::parse(bytes[..PREFIX_BYTES].try_into().expect("8 bytes"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let header_end = PREFIX_BYTES + prefix.header_len as usize;
    let (msg, version) =
        decode_header_in::<M>(&bytes[PREFIX_BYTES..header_end], prefix.payload_len, Versions::ALL)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(version, at, "{name} is a version {at} frame");
    let mut again = encode_frame_at(&msg, prefix.payload_len, at)
        .unwrap_or_else(|e| panic!("{name} at version {at}: {e}"));
    again.extend_from_slice(&bytes[header_end..]);
    (again, msg.kind())
}

#[test]
fn every_frame_the_previous_release_wrote_is_read_and_written_again_byte_for_byte() {
    assert_eq!(MIN_WIRE_VERSION, 1, "this build still speaks version 1");
    the_frames_of_version_are_written_again(1);
}

#[test]
fn every_frame_the_version_2_release_wrote_is_read_and_written_again_byte_for_byte() {
    the_frames_of_version_are_written_again(2);
}

fn the_frames_of_version_are_written_again(version: u8) {
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
    let kinds = usize::from(<Request as Message>::variants_in(version));
    assert_eq!(requests.len(), kinds, "{requests:?}");
    assert_eq!(
        responses.len(),
        usize::from(<Response as Message>::variants_in(version)),
        "{responses:?}"
    );
}
