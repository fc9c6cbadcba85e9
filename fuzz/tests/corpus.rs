//! The checked-in corpus is what `rackpoint-fuzz corpus` makes, and still valid: a frame of
//! every request and response kind that decodes, manifests that parse, request sequences
//! whose every frame decodes. (A format change that breaks a seed fails here, and the corpus
//! is made again.)

use rackpoint_core::manifest::Manifest;
use rackpoint_fuzz::mutate::split_frames;
use rackpoint_fuzz::{default_corpus, seeds};
use rackpoint_proto::wire::{decode_frame, decode_header, Message};
use rackpoint_proto::{Request, Response};

fn files(dir: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(default_corpus().join(dir))
        .expect("the corpus folder")
        .map(|e| {
            let path = e.expect("an entry").path();
            let name = path.file_name().expect("a name").to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("readable"))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_request_and_response_kind_has_a_frame_that_decodes() {
    let mut requests = Vec::new();
    let mut responses = Vec::new();
    for (name, bytes) in files("frame") {
        if name.starts_with("request-") {
            let (r, _) = decode_frame::<Request>(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            requests.push(r.kind());
        } else {
            let (r, _) = decode_frame::<Response>(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            responses.push(r.kind());
        }
    }
    requests.sort();
    let mut kinds = Request::KINDS.to_vec();
    kinds.sort();
    assert_eq!(requests, kinds);
    responses.sort();
    responses.dedup();
    assert_eq!(responses.len(), <Response as Message>::VARIANTS as usize, "{responses:?}");
}

#[test]
fn every_manifest_parses() {
    let manifests = files("manifest");
    assert!(manifests.len() >= 4);
    for (name, bytes) in manifests {
        let m = Manifest::from_bytes(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!m.objects.is_empty(), "{name}");
    }
}

#[test]
fn every_handler_seed_is_a_sequence_of_requests() {
    let all = seeds(&default_corpus(), "handler").expect("the corpus reads");
    assert!(all.len() > Request::KINDS.len());
    for bytes in all {
        let (frames, rest) = split_frames(&bytes);
        assert!(rest.is_empty() && !frames.is_empty());
        for f in frames {
            decode_header::<Request>(&f.header, f.payload.len() as u32).expect("decodes");
        }
    }
}
