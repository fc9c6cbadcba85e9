//! The frame decoder: `FramePrefix::parse`, `decode_header` and `decode_frame`, for requests
//! and responses alike. A frame that decodes must encode again and decode to the same message.

use std::fmt::Debug;

use rackpoint_proto::wire::{decode_frame, decode_header, encode_frame, Message, PREFIX_BYTES};
use rackpoint_proto::{FramePrefix, Request, Response, WireError};

use crate::mutate::Mutator;
use crate::runner::{Signature, Target};

/// Frames of one request or response (and their prefixes and headers alone).
#[derive(Debug, Default)]
pub struct FrameTarget {
    requests: u64,
    responses: u64,
}

/// The outcome of a decode, for the signature: the message kind, or the error's kind and
/// (for a malformed header) what postcard said.
pub fn wire_outcome<M: Message>(r: &Result<M, WireError>) -> String {
    match r {
        Ok(m) => m.kind().to_owned(),
        // Without its numbers: "3 trailing bytes" and "4 trailing bytes" are one outcome.
        Err(WireError::Malformed(why)) => {
            why.chars().filter(|c| !c.is_ascii_digit()).take(80).collect()
        }
        Err(e) => format!("{:?}", e.code()),
    }
}

/// A decoded message must encode again (with the same payload length) and decode to itself.
pub fn round_trip<M: Message + PartialEq + Debug>(msg: &M, payload_len: u32) -> Result<(), String> {
    let frame = encode_frame(msg, payload_len)
        .map_err(|e| format!("a decoded {} does not encode again: {e}", msg.kind()))?;
    let back = decode_header::<M>(&frame[PREFIX_BYTES..], payload_len)
        .map_err(|e| format!("a re-encoded {} does not decode: {e}", msg.kind()))?;
    if back != *msg {
        return Err(format!("{} changed in a round trip: {msg:?} became {back:?}", msg.kind()));
    }
    Ok(())
}

/// Decodes `input` as a whole frame of `M`: whether it decoded.
fn whole<M: Message + PartialEq + Debug>(
    input: &[u8],
    sig: &mut Signature,
) -> Result<bool, String> {
    match decode_frame::<M>(input) {
        Ok((msg, payload)) => {
            sig.add(msg.kind());
            round_trip(&msg, payload.len() as u32).map(|()| true)
        }
        Err(e) => {
            sig.add(wire_outcome::<M>(&Err(e)));
            Ok(false)
        }
    }
}

impl Target for FrameTarget {
    fn name(&self) -> &'static str {
        "frame"
    }

    fn run(&mut self, input: &[u8]) -> Result<Signature, String> {
        let mut sig = Signature::default();
        // As a node or client reads: the prefix, then the header it announced.
        let prefix = input.get(..PREFIX_BYTES).and_then(|p| <[u8; PREFIX_BYTES]>::try_from(p).ok());
        let rest = input.get(PREFIX_BYTES..).unwrap_or_default();
        let (header, payload_len) = match prefix.map(FramePrefix::parse) {
            Some(Ok(p)) => {
                sig.add(("prefix", p.header_len.min(3), p.payload_len.min(3)));
                (rest.get(..p.header_len as usize).unwrap_or(rest), p.payload_len)
            }
            Some(Err(e)) => {
                sig.add(e.code());
                (rest, 0)
            }
            None => (rest, 0),
        };
        let request = decode_header::<Request>(header, payload_len);
        sig.add(wire_outcome(&request));
        if let Ok(msg) = &request {
            round_trip(msg, payload_len)?;
        }
        let response = decode_header::<Response>(header, payload_len);
        sig.add(wire_outcome(&response));
        if let Ok(msg) = &response {
            round_trip(msg, payload_len)?;
        }
        // As tests and tools read: the whole frame in memory.
        self.requests += u64::from(whole::<Request>(input, &mut sig)?);
        self.responses += u64::from(whole::<Response>(input, &mut sig)?);
        Ok(sig)
    }

    fn mutate(&mut self, m: &mut Mutator, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
        m.frame(input, pool);
    }

    fn default_max_len(&self) -> usize {
        128 * 1024
    }

    fn depth(&self) -> String {
        format!("whole frames decoded: {} requests, {} responses", self.requests, self.responses)
    }
}
