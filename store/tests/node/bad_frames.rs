//! Bad frames on raw streams (from a client with a valid certificate) get typed error
//! replies, the same connection goes on serving, and a concurrent good client never
//! notices.

use std::sync::Arc;

use bytes::Bytes;
use rackpoint_proto::limits::{MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES, MAX_SHARD_BYTES, WIRE_VERSION};
use rackpoint_proto::wire::{encode_frame, header_fields_bytes, PREFIX_BYTES};
use rackpoint_proto::{Digest, ErrorCode, Request, Response};
use tokio::task::JoinSet;

use crate::common::*;

/// A prefix declaring `header_len` and `payload_len`.
fn prefix(header_len: u32, payload_len: u32) -> Vec<u8> {
    let mut p = header_len.to_be_bytes().to_vec();
    p.extend_from_slice(&payload_len.to_be_bytes());
    p
}

/// A frame whose header is `header` (version byte included) and payload `payload`.
fn frame(header: &[u8], payload_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = prefix(header.len() as u32, payload_len);
    f.extend_from_slice(header);
    f.extend_from_slice(payload);
    f
}

/// A valid PutShard frame for `bytes` declaring `hash`, with the declared payload length
/// `declared` (the bytes sent are `bytes` whatever is declared).
fn put_frame(i: u32, hash: Digest, declared: u32, bytes: &[u8]) -> Vec<u8> {
    let req = Request::PutShard { key: shard_key(5, i), hash };
    let mut f = encode_frame(&req, declared.clamp(1, MAX_SHARD_BYTES)).expect("encodes");
    f[4..PREFIX_BYTES].copy_from_slice(&declared.to_be_bytes());
    f.extend_from_slice(bytes);
    f
}

fn code_of(response: &Response) -> Option<ErrorCode> {
    match response {
        Response::Error { code, .. } => Some(*code),
        _ => None,
    }
}

/// A header of the newest wire version with request id 7 and then `message`.
fn header(message: &[u8]) -> Vec<u8> {
    let mut h = vec![WIRE_VERSION];
    h.resize(header_fields_bytes(WIRE_VERSION) - 1, 0);
    h.push(7);
    h.extend_from_slice(message);
    h
}

/// Each bad request and the error code the node must answer it with.
fn bad_requests() -> Vec<(&'static str, Vec<u8>, ErrorCode)> {
    let shard = payload(1, 4096);
    let stats_header = encode_frame(&Request::Stats, 0).expect("encodes")[PREFIX_BYTES..].to_vec();
    vec![
        ("header over the limit", prefix(MAX_HEADER_BYTES + 1, 0), ErrorCode::TooLarge),
        ("zero-length header", prefix(0, 0), ErrorCode::TooLarge),
        ("payload over the limit", prefix(10, MAX_PAYLOAD_BYTES + 1), ErrorCode::TooLarge),
        (
            "shard over the shard limit",
            put_frame(0, Digest::default(), MAX_SHARD_BYTES + 1, &[]),
            ErrorCode::TooLarge,
        ),
        ("payload on Stats", frame(&stats_header, 1, b"x"), ErrorCode::TooLarge),
        ("another wire version", frame(&[WIRE_VERSION + 1, 7], 0, &[]), ErrorCode::BadVersion),
        ("unknown message tag", frame(&header(&[200]), 0, &[]), ErrorCode::UnknownMessage),
        (
            "garbage header",
            frame(&header(&[1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), 0, &[]),
            ErrorCode::Malformed,
        ),
        (
            "header shorter than its request id",
            frame(&[WIRE_VERSION, 0, 0, 7], 0, &[]),
            ErrorCode::Malformed,
        ),
        (
            "trailing header bytes",
            frame(&[&stats_header[..], &[0]].concat(), 0, &[]),
            ErrorCode::Malformed,
        ),
        ("empty stream", Vec::new(), ErrorCode::LengthMismatch),
        ("truncated prefix", prefix(10, 0)[..5].to_vec(), ErrorCode::LengthMismatch),
        (
            "truncated header",
            prefix(100, 0).into_iter().chain([WIRE_VERSION, 1]).collect(),
            ErrorCode::LengthMismatch,
        ),
        (
            "payload shorter than declared",
            put_frame(1, digest(&shard), shard.len() as u32, &shard[..1000]),
            ErrorCode::LengthMismatch,
        ),
        (
            "payload not matching its hash",
            put_frame(2, digest(b"something else"), shard.len() as u32, &shard),
            ErrorCode::HashMismatch,
        ),
    ]
}

#[test]
fn bad_frames_get_typed_errors_while_a_good_client_keeps_working() {
    let rt = runtime();
    let (_dir, cluster) = start(&options(1));
    rt.block_on(async {
        let good = transport(&cluster);
        let good_client = {
            let t = good.clone();
            tokio::spawn(async move {
                for i in 0..64u32 {
                    let key = shard_key(6, i);
                    let bytes = payload(1000 + u64::from(i), SHARD_BYTES);
                    put_shard(&t, ONE, &key, bytes.clone()).await.expect("good put");
                    assert_eq!(get_shard(&t, ONE, &key).await.expect("good get"), bytes.to_vec());
                }
            })
        };

        let raw = Arc::new(RawClient::connect(&cluster, ONE).await);
        let cases = bad_requests();
        let mut sent = JoinSet::new();
        for (name, bytes, want) in cases.clone() {
            let raw = raw.clone();
            sent.spawn(async move { (name, raw.send(&bytes).await, want) });
        }
        while let Some(done) = sent.join_next().await {
            let (name, reply, want) = done.expect("task");
            assert_eq!(code_of(&reply), Some(want), "{name}: {reply:?}");
        }
        // The connection that sent them is still served.
        let hello = raw.send(&encode_frame(&Request::Hello, 0).expect("encodes")).await;
        assert!(matches!(hello, Response::Hello { .. }), "{hello:?}");
        good_client.await.expect("the good client never failed");

        let s = stats(&good, ONE).await;
        assert_eq!(s.shards, 64, "no bad request stored anything");
        let failed: u64 = s.requests.iter().map(|c| c.failed).sum();
        assert_eq!(failed, cases.len() as u64, "each bad request is counted as failed");
        assert_eq!(served_failed(&s, "PutShard").0, 64);
        good.close().await;
    });
}

#[test]
fn an_oversized_shard_is_refused_before_its_payload_is_read() {
    let rt = runtime();
    let (_dir, cluster) = start(&options(1));
    rt.block_on(async {
        let raw = RawClient::connect(&cluster, ONE).await;
        // Declares a shard over the limit and starts sending it: the node answers at once,
        // without waiting for (or buffering) the payload.
        let frame = put_frame(9, Digest::default(), MAX_SHARD_BYTES + 1, &[]);
        let (mut send, mut recv) = raw.conn.open_bi().await.expect("stream");
        send.write_all(&frame).await.expect("header");
        let _ = send.write_chunk(Bytes::from(vec![0u8; 1 << 20])).await;
        let reply = raw.read_reply(&mut recv).await;
        assert_eq!(code_of(&reply), Some(ErrorCode::TooLarge), "{reply:?}");
    });
}
