//! Byte-level mutations (bit flips, interesting values, inserts, deletes, copies, splices,
//! truncation, postcard varints and big-endian length fields, long runs and repeated chunks)
//! and the frame-aware ones built on them (mutate a frame's header or payload and re-frame
//! it with true or edited lengths; reorder, drop, copy and splice the frames of a sequence).

use rackpoint_proto::limits::{MAX_HEADER_BYTES, MAX_MANIFEST_BYTES, MAX_SHARD_BYTES};
use rackpoint_proto::wire::{header_fields_bytes, PREFIX_BYTES};

use crate::rng::Rng;

/// Values worth writing into a varint or a length field.
const INTERESTING: [u64; 22] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x3fff,
    0x4000,
    0xffff,
    0x1_0000,
    MAX_HEADER_BYTES as u64,
    MAX_HEADER_BYTES as u64 + 1,
    MAX_SHARD_BYTES as u64,
    MAX_SHARD_BYTES as u64 + 1,
    MAX_MANIFEST_BYTES as u64,
    MAX_MANIFEST_BYTES as u64 + 1,
    i32::MAX as u64,
    u32::MAX as u64,
    1 << 32,
    i64::MAX as u64,
    u64::MAX,
];

/// Mutates byte strings; `max_len` bounds every result.
#[derive(Debug, Clone)]
pub struct Mutator {
    /// The generator every choice comes from.
    pub rng: Rng,
    /// Longest result.
    pub max_len: usize,
}

impl Mutator {
    /// A mutator seeded with `seed`.
    pub fn new(seed: u64, max_len: usize) -> Self {
        Self { rng: Rng::new(seed), max_len: max_len.max(16) }
    }

    /// A value for a length or count field: an interesting one, one near `near`, or random.
    pub fn interesting(&mut self, near: u64) -> u64 {
        match self.rng.below(4) {
            0 | 1 => *self.rng.pick(&INTERESTING),
            2 => near.wrapping_add(self.rng.range(0, 4) as u64).wrapping_sub(2),
            _ => self.rng.next_u64() >> self.rng.below(64),
        }
    }

    /// One to eight stacked byte-level mutations of `data`; `pool` is splice material.
    pub fn bytes(&mut self, data: &mut Vec<u8>, pool: &[Vec<u8>]) {
        let n = 1 << self.rng.below(4);
        for _ in 0..n {
            self.one(data, pool);
        }
        data.truncate(self.max_len);
    }

    fn pos(&mut self, data: &[u8]) -> usize {
        self.rng.below(data.len() + 1)
    }

    fn one(&mut self, data: &mut Vec<u8>, pool: &[Vec<u8>]) {
        let len = data.len();
        match self.rng.below(15) {
            0 if len > 0 => {
                let i = self.rng.below(len);
                data[i] ^= 1 << self.rng.below(8);
            }
            1 if len > 0 => {
                let (i, any) = (self.rng.below(len), self.rng.byte());
                data[i] = *self.rng.pick(&[0, 1, 0x7f, 0x80, 0xfe, 0xff, any]);
            }
            2 if len > 0 => {
                let i = self.rng.below(len);
                let d = self.rng.range(1, 16) as u8;
                data[i] = if self.rng.one_in(2) {
                    data[i].wrapping_add(d)
                } else {
                    data[i].wrapping_sub(d)
                };
            }
            3 => {
                let at = self.pos(data);
                let n = self.rng.log_len(16);
                let fresh: Vec<u8> = (0..n).map(|_| self.rng.byte()).collect();
                data.splice(at..at, fresh);
            }
            4 if len > 0 => {
                let at = self.rng.below(len);
                let n = self.rng.log_len(len - at);
                data.drain(at..at + n);
            }
            5 if len > 0 => {
                // Copy a chunk to another place (inserted).
                let from = self.rng.below(len);
                let n = self.rng.log_len(len - from);
                let chunk = data[from..from + n].to_vec();
                let at = self.pos(data);
                data.splice(at..at, chunk);
            }
            6 if len > 1 => {
                // Overwrite with a chunk from elsewhere in the input.
                let from = self.rng.below(len);
                let to = self.rng.below(len);
                let n = self.rng.log_len((len - from).min(len - to));
                data.copy_within(from..from + n, to);
            }
            7 => data.truncate(self.pos(data)),
            8 if !pool.is_empty() => {
                // Splice: our head, another input's tail.
                let other = self.rng.pick(pool);
                let cut = self.pos(data);
                let tail = self.rng.below(other.len() + 1);
                data.truncate(cut);
                data.extend_from_slice(&other[tail..]);
            }
            9 if !pool.is_empty() => {
                // Insert a chunk of another input.
                let other = self.rng.pick(pool).clone();
                if !other.is_empty() {
                    let from = self.rng.below(other.len());
                    let n = self.rng.log_len(other.len() - from);
                    let at = self.pos(data);
                    data.splice(at..at, other[from..from + n].iter().copied());
                }
            }
            10 => {
                let at = self.pos(data);
                let value = self.interesting(0);
                replace_varint(data, at, value);
            }
            11 if len >= 4 => {
                let at = self.rng.below(len - 3);
                let value = self.interesting(0) as u32;
                data[at..at + 4].copy_from_slice(&value.to_be_bytes());
            }
            12 => {
                // A long run of one byte: counts that claim many elements get them.
                let at = self.pos(data);
                let n = self.rng.log_len(self.max_len.saturating_sub(len).max(1));
                let any = self.rng.byte();
                let b = *self.rng.pick(&[0, 0, 1, 0xff, any]);
                data.splice(at..at, std::iter::repeat_n(b, n));
            }
            13 if len > 0 => {
                // A chunk repeated many times (one element of a sequence, many times over).
                let from = self.rng.below(len);
                let w = self.rng.log_len((len - from).min(64));
                let room = self.max_len.saturating_sub(len) / w;
                let times = self.rng.log_len(room.max(1));
                let chunk = data[from..from + w].to_vec();
                let at = from + w;
                data.splice(at..at, chunk.iter().copied().cycle().take(w * times));
            }
            _ => {
                if len > 0 {
                    let i = self.rng.below(len);
                    data[i] = self.rng.byte();
                } else {
                    data.push(self.rng.byte());
                }
            }
        }
    }
}

/// Replaces the postcard varint that starts at `at` (if any: up to ten bytes whose high bit
/// says "more") with the encoding of `value`.
pub fn replace_varint(data: &mut Vec<u8>, at: usize, value: u64) {
    let mut end = at;
    while end < data.len() && end - at < 10 {
        let more = data[end] & 0x80 != 0;
        end += 1;
        if !more {
            break;
        }
    }
    data.splice(at..end, varint(value));
}

/// The LEB128 encoding of `value` (postcard's varint).
pub fn varint(mut value: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    loop {
        let b = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// One frame, split at its prefix's lengths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// The header (version, tag, postcard body).
    pub header: Vec<u8>,
    /// The payload.
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// Prefix with the true lengths, header, payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PREFIX_BYTES + self.header.len() + self.payload.len());
        out.extend_from_slice(&(self.header.len() as u32).to_be_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.header);
        out.extend_from_slice(&self.payload);
        out
    }
}

/// Splits `data` into the frames its prefixes describe, as far as they fit; the rest (a
/// prefix that does not fit, or trailing bytes) is returned apart. No length limit is checked
/// here: that is the decoder's job.
pub fn split_frames(mut data: &[u8]) -> (Vec<RawFrame>, &[u8]) {
    let mut frames = Vec::new();
    while data.len() >= PREFIX_BYTES {
        let header_len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let payload_len = u32::from_be_bytes([data[4], data[5], data[6], data[7]]) as usize;
        let Some(end) =
            PREFIX_BYTES.checked_add(header_len).and_then(|h| h.checked_add(payload_len))
        else {
            break;
        };
        if end > data.len() {
            break;
        }
        let header = data[PREFIX_BYTES..PREFIX_BYTES + header_len].to_vec();
        let payload = data[PREFIX_BYTES + header_len..end].to_vec();
        frames.push(RawFrame { header, payload });
        data = &data[end..];
    }
    (frames, data)
}

impl Mutator {
    /// Mutates one frame held in `data`: its header or payload (re-framed with true lengths,
    /// so the decoder gets past the prefix), a length field of its prefix, or its raw bytes.
    pub fn frame(&mut self, data: &mut Vec<u8>, pool: &[Vec<u8>]) {
        let (mut frames, rest) = split_frames(data);
        if frames.len() != 1 || !rest.is_empty() || self.rng.one_in(5) {
            self.bytes(data, pool);
            return;
        }
        let mut f = frames.remove(0);
        *data = self.frame_parts(&mut f, pool);
        data.truncate(self.max_len);
    }

    /// Mutates a split frame and returns its bytes.
    fn frame_parts(&mut self, f: &mut RawFrame, pool: &[Vec<u8>]) -> Vec<u8> {
        // Splice material: the headers of two other inputs.
        let headers: Vec<Vec<u8>> = (0..2)
            .filter(|_| !pool.is_empty())
            .flat_map(|_| {
                let other: &Vec<u8> = self.rng.pick(pool);
                split_frames(other).0
            })
            .map(|f| f.header)
            .collect();
        match self.rng.below(8) {
            0..=3 => {
                // The header: mostly its postcard body, sometimes the version or the tag (after
                // the request id from wire version 3 on).
                let tag = f.header.first().map_or(1, |v| header_fields_bytes(*v));
                match self.rng.below(8) {
                    0 if !f.header.is_empty() => f.header[0] = self.rng.byte(),
                    1 if f.header.len() > tag => f.header[tag] = self.rng.below(24) as u8,
                    _ => self.bytes(&mut f.header, &headers),
                }
                f.encode()
            }
            4 => {
                // The payload: resized or altered; the header's hash then disagrees.
                let mut payload = std::mem::take(&mut f.payload);
                self.bytes(&mut payload, &[]);
                f.payload = payload;
                f.encode()
            }
            5 | 6 => {
                // A length field edited (prefix lies about the header or payload).
                let mut out = f.encode();
                let field = self.rng.below(2) * 4;
                let near = if field == 0 { f.header.len() } else { f.payload.len() } as u64;
                let value = self.interesting(near) as u32;
                out[field..field + 4].copy_from_slice(&value.to_be_bytes());
                out
            }
            _ => {
                let mut out = f.encode();
                self.bytes(&mut out, pool);
                out
            }
        }
    }

    /// Mutates a sequence of frames: one frame mutated, or frames dropped, copied, swapped or
    /// taken from another input; rarely the raw bytes. At most `max_frames` frames are kept.
    pub fn frames(&mut self, data: &mut Vec<u8>, pool: &[Vec<u8>], max_frames: usize) {
        let (mut frames, rest) = split_frames(data);
        let rest = rest.to_vec();
        if frames.is_empty() || self.rng.one_in(10) {
            self.bytes(data, pool);
            return;
        }
        let rounds = 1 + self.rng.below(3);
        let mut tail: Option<Vec<u8>> = (!rest.is_empty()).then_some(rest);
        for _ in 0..rounds {
            let n = frames.len();
            match self.rng.below(6) {
                0 | 1 if n > 0 => {
                    let i = self.rng.below(n);
                    let bytes = self.frame_parts(&mut frames[i].clone(), pool);
                    // A mutated frame whose prefix no longer fits ends the sequence.
                    let (mut parsed, garbage) = split_frames(&bytes);
                    if parsed.len() == 1 && garbage.is_empty() {
                        frames[i] = parsed.remove(0);
                    } else {
                        frames.truncate(i);
                        tail = Some(bytes);
                        break;
                    }
                }
                2 if n > 1 => {
                    frames.remove(self.rng.below(n));
                }
                3 if n > 0 => {
                    let f = frames[self.rng.below(n)].clone();
                    frames.insert(self.rng.below(n + 1), f);
                }
                4 if n > 1 => {
                    let (a, b) = (self.rng.below(n), self.rng.below(n));
                    frames.swap(a, b);
                }
                _ => {
                    let other: &Vec<u8> = self.rng.pick(pool);
                    let other = split_frames(other).0;
                    if !other.is_empty() {
                        let f = self.rng.pick(&other).clone();
                        frames.insert(self.rng.below(n + 1), f);
                    }
                }
            }
        }
        frames.truncate(max_frames);
        *data = frames.iter().flat_map(RawFrame::encode).collect();
        if let Some(t) = tail {
            data.extend_from_slice(&t);
        }
        data.truncate(self.max_len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_and_join_back() {
        let a = RawFrame { header: vec![1, 7], payload: vec![] };
        let b = RawFrame { header: vec![1, 1, 3], payload: vec![9; 5] };
        let mut bytes = a.encode();
        bytes.extend(b.encode());
        bytes.extend([0, 0, 0]);
        let (frames, rest) = split_frames(&bytes);
        assert_eq!(frames, vec![a, b]);
        assert_eq!(rest, &[0, 0, 0]);
    }

    #[test]
    fn varints_are_replaced_whole() {
        let mut data = vec![9, 0x80, 0x01, 9];
        replace_varint(&mut data, 1, 5);
        assert_eq!(data, vec![9, 5, 9]);
        assert_eq!(varint(300), vec![0xac, 0x02]);
        assert_eq!(varint(u64::MAX).len(), 10);
    }

    #[test]
    fn mutations_stay_within_the_length_bound() {
        let mut m = Mutator::new(3, 256);
        let pool = vec![vec![1u8; 300], RawFrame { header: vec![1, 0], payload: vec![] }.encode()];
        for i in 0..20_000 {
            let mut data = pool[i % 2].clone();
            match i % 3 {
                0 => m.bytes(&mut data, &pool),
                1 => m.frame(&mut data, &pool),
                _ => m.frames(&mut data, &pool, 4),
            }
            assert!(data.len() <= 256);
        }
    }
}
