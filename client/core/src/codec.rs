//! Striping and erasure coding of objects: the stripe geometry ([`ObjectLayout`]), Reed-Solomon
//! encoding of a stripe into `k + m` hashed shards, and decoding a stripe back from whatever
//! shards arrived ([`Codec`]). Pure computation: no I/O, no threads.
//!
//! Geometry. An object of `len` bytes under `CodeParams { k, m, shard_size_bytes: S }` has
//! `ceil(len / (k * S))` stripes (none for an empty object). Stripe `i` covers the object bytes
//! `[i*k*S, min(len, (i+1)*k*S))`. Every shard of stripe `i` is `ceil(stripe_len / k)` bytes
//! long (`S` for a full stripe, less for a short last stripe), and data shard `j` holds the
//! stripe's bytes `[j*shard_len, (j+1)*shard_len)`, zero-padded to `shard_len`. The code is
//! systematic: data shards are the object's own bytes, so a healthy decode is a copy.

use std::ops::Range;

use rackpoint_proto::cluster::ConfigError;
use rackpoint_proto::{CodeParams, Digest, ShardIndex, StripeIndex};
use reed_solomon_erasure::galois_8::ReedSolomon;

mod kernel;
#[allow(unsafe_code)]
mod simd;

pub use kernel::Engine;

/// The code's self-description, recorded in every manifest: the library (whose matrix and
/// field define the parity bytes), the field, and the matrix construction.
pub const CODEC_ID: &str = "reed-solomon-erasure-6/gf(2^8)/vandermonde-systematic";
/// The Galois field of [`CODEC_ID`]: GF(2^8) with the reducing polynomial
/// x^8 + x^4 + x^3 + x^2 + 1 (0x11d), generator 2.
pub const CODEC_FIELD: &str = "gf(2^8) poly 0x11d";
/// The encoding matrix of [`CODEC_ID`]: the `(k+m) x k` Vandermonde matrix `V[r][c] = r^c`
/// (row `r` evaluated at the field element `r`), times the inverse of its top `k x k` block,
/// so the top `k` rows are the identity (systematic) and any `k` rows are invertible (MDS).
pub const CODEC_MATRIX: &str = "vandermonde V[r][c]=r^c (k+m x k) * inverse(top k x k)";

/// Why encoding or decoding was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The code's parameters are out of bounds.
    #[error(transparent)]
    BadParams(#[from] ConfigError),
    /// The bytes given to encode are not a stripe's worth (1 to `k * S`).
    #[error("a stripe holds 1 to {max} bytes, got {len}")]
    BadStripeLength {
        /// Bytes given.
        len: usize,
        /// `k * shard_size_bytes`.
        max: u64,
    },
    /// The object would need more stripes than a stripe index can count.
    #[error("object of {len} bytes is over the limit of {max_len} bytes for this code")]
    ObjectTooLarge {
        /// The object's length.
        len: u64,
        /// The longest object this code can stripe.
        max_len: u64,
    },
    /// The layout was made for another code than the codec's.
    #[error("the layout's code {layout:?} is not the codec's {codec:?}")]
    ParamsMismatch {
        /// The codec's code.
        codec: CodeParams,
        /// The layout's code.
        layout: CodeParams,
    },
    /// The stripe index is past the object's last stripe.
    #[error("stripe {stripe} is outside the object's {count} stripes")]
    StripeOutOfRange {
        /// The stripe asked for.
        stripe: StripeIndex,
        /// Stripes in the object.
        count: u32,
    },
    /// The shard vector does not have one slot per shard of the code.
    #[error("{got} shard slots given; the code has {want} shards")]
    WrongShardCount {
        /// Slots given.
        got: usize,
        /// `k + m`.
        want: usize,
    },
    /// The expected-hash slice does not have one hash per shard of the code.
    #[error("{got} expected hashes given; the code has {want} shards")]
    WrongHashCount {
        /// Hashes given.
        got: usize,
        /// `k + m`.
        want: usize,
    },
    /// The output buffer is not the stripe's length.
    #[error("output buffer of {len} bytes for a stripe of {want}")]
    BadOutputLength {
        /// The buffer's length.
        len: usize,
        /// The stripe's length.
        want: usize,
    },
    /// Fewer than `k` good shards: the stripe cannot be rebuilt.
    #[error("stripe {stripe}: {got} good shards of the {need} needed (missing {missing:?}, corrupt {corrupt:?})")]
    NotEnoughShards {
        /// The stripe.
        stripe: StripeIndex,
        /// Good shards needed, `k`.
        need: usize,
        /// Good shards available.
        got: usize,
        /// Shards not given.
        missing: Vec<ShardIndex>,
        /// Shards given with a wrong length or hash.
        corrupt: Vec<ShardIndex>,
    },
    /// A rebuilt data shard does not hash to its recorded hash, so the recorded hashes of the
    /// stripe disagree with each other (a writer bug or a forged manifest). No bytes are
    /// returned rather than wrong ones.
    #[error("stripe {stripe}: rebuilt data shard {shard} does not match its recorded hash")]
    InconsistentStripe {
        /// The stripe.
        stripe: StripeIndex,
        /// The rebuilt shard that did not match.
        shard: ShardIndex,
    },
    /// The engine asked for does not run on this CPU.
    #[error("the codec engine {0:?} does not run on this CPU")]
    EngineUnavailable(Engine),
    /// Shard buffers given to encode or rebuild are not all one non-zero length.
    #[error("shard buffers of different or zero lengths")]
    ShardLengths,
    /// Fewer than `k` present shards were given to rebuild from.
    #[error("{got} present shards of the {need} needed")]
    TooFewShards {
        /// `k`.
        need: usize,
        /// Present shards given.
        got: usize,
    },
}

/// How one object is cut into stripes and shards (see the module doc for the geometry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLayout {
    params: CodeParams,
    len: u64,
}

impl ObjectLayout {
    /// The layout of an object of `len` bytes. Meant for valid params and lengths up to
    /// [`ObjectLayout::max_len`] (use [`ObjectLayout::try_new`] to check both); it never
    /// panics otherwise: invalid params give no stripes, and stripes past `u32::MAX` are
    /// not counted.
    pub fn new(params: CodeParams, len: u64) -> Self {
        Self { params, len }
    }

    /// The layout of an object of `len` bytes, refusing invalid params and objects that
    /// would need more than `u32::MAX` stripes.
    pub fn try_new(params: CodeParams, len: u64) -> Result<Self, CodecError> {
        params.validate()?;
        let max_len = Self::max_len(params);
        if len > max_len {
            return Err(CodecError::ObjectTooLarge { len, max_len });
        }
        Ok(Self { params, len })
    }

    /// The longest object `params` can stripe: `u32::MAX` full stripes.
    pub fn max_len(params: CodeParams) -> u64 {
        u64::from(u32::MAX).saturating_mul(params.stripe_bytes())
    }

    /// The code.
    pub fn params(&self) -> CodeParams {
        self.params
    }

    /// The object's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the object is empty (and so has no stripes).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stripes in the object: `ceil(len / (k * S))`.
    pub fn stripe_count(&self) -> u32 {
        let count = div_ceil_or_zero(self.len, self.params.stripe_bytes());
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// The object bytes stripe `s` covers (empty past the last stripe).
    pub fn stripe_range(&self, s: StripeIndex) -> Range<u64> {
        let stripe_bytes = self.params.stripe_bytes();
        let start = u64::from(s.0).saturating_mul(stripe_bytes).min(self.len);
        let end = start.saturating_add(stripe_bytes).min(self.len);
        start..end
    }

    /// Bytes in every shard of stripe `s`: `ceil(stripe_len / k)` (0 past the last stripe).
    pub fn shard_len(&self, s: StripeIndex) -> usize {
        let r = self.stripe_range(s);
        let len = div_ceil_or_zero(r.end - r.start, u64::from(self.params.k));
        usize::try_from(len).expect("a shard is at most shard_size_bytes, a u32")
    }

    /// The object bytes data shard `j` of stripe `s` holds, before padding (empty for a shard
    /// that is all padding, for a parity index, or past the last stripe).
    pub fn data_shard_range(&self, s: StripeIndex, j: ShardIndex) -> Range<u64> {
        let r = self.stripe_range(s);
        if j.0 >= self.params.k {
            return r.end..r.end;
        }
        let shard_len = self.shard_len(s) as u64;
        let start = (r.start + u64::from(j.0) * shard_len).min(r.end);
        let end = (start + shard_len).min(r.end);
        start..end
    }
}

/// One encoded stripe: all `k + m` shards in index order (data shards zero-padded) and their
/// blake3 hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedStripe {
    /// Shard bytes, `k` data then `m` parity, all the same length.
    pub shards: Vec<Vec<u8>>,
    /// The blake3 (`Digest::of`) of each shard.
    pub hashes: Vec<Digest>,
}

/// Which way a stripe was decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodePath {
    /// Every data shard was present and good: the bytes were copied, no decoding.
    Copy,
    /// Some data shard was missing or corrupt: the data shards were rebuilt from parity.
    Reconstructed,
}

/// What a decode learned besides the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeReport {
    /// Copy or reconstruction.
    pub path: DecodePath,
    /// Shards given with a wrong length or hash (candidates for repair). Parity shards are
    /// checked only when the data shards alone do not suffice.
    pub corrupt: Vec<ShardIndex>,
}

/// A Reed-Solomon codec for one code. Holds the encoding matrix (reed-solomon-erasure's), the
/// engine doing the byte work and its encoding tables; `Send + Sync`, share it behind an `Arc`.
#[derive(Debug)]
pub struct Codec {
    params: CodeParams,
    rs: ReedSolomon,
    engine: Engine,
    /// The `m x k` parity rows of the encoding matrix (the top `k` rows are the identity).
    parity_rows: Vec<Vec<u8>>,
    /// The kernel's tables of `parity_rows` (none for `Engine::ReedSolomonErasure`).
    encode_tables: Option<kernel::Tables>,
}

impl Codec {
    /// A codec for `params` (1 <= k, 1 <= m, k + m <= `MAX_TOTAL_SHARDS`) on the fastest
    /// engine this CPU runs ([`Engine::best`]).
    pub fn new(params: CodeParams) -> Result<Self, CodecError> {
        Self::with_engine(params, Engine::best())
    }

    /// A codec for `params` whose byte work is done by `engine` (every engine gives the same
    /// bytes); `EngineUnavailable` if this CPU does not run it.
    pub fn with_engine(params: CodeParams, engine: Engine) -> Result<Self, CodecError> {
        params.validate()?;
        if !engine.is_available() {
            return Err(CodecError::EngineUnavailable(engine));
        }
        let rs = ReedSolomon::new(params.k.into(), params.m.into())
            .expect("validated params have k >= 1, m >= 1 and k + m <= 32 <= 256");
        let parity_rows = kernel::parity_rows(&rs);
        let encode_tables = (engine != Engine::ReedSolomonErasure)
            .then(|| kernel::Tables::new(engine, params.k.into(), &parity_rows));
        Ok(Self { params, rs, engine, parity_rows, encode_tables })
    }

    /// The code.
    pub fn params(&self) -> CodeParams {
        self.params
    }

    /// The engine doing the codec's byte work.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Computes the `m` parity shards of the `k` data shards into `parity`, overwriting it. All
    /// buffers must have one non-zero length.
    pub fn encode_parity(
        &self,
        data: &[&[u8]],
        parity: &mut [&mut [u8]],
    ) -> Result<(), CodecError> {
        let (k, m) = (self.k(), usize::from(self.params.m));
        if data.len() != k || parity.len() != m {
            return Err(CodecError::WrongShardCount {
                got: data.len() + parity.len(),
                want: k + m,
            });
        }
        let len = data[0].len();
        if len == 0 || data.iter().any(|d| d.len() != len) || parity.iter().any(|p| p.len() != len)
        {
            return Err(CodecError::ShardLengths);
        }
        match &self.encode_tables {
            Some(tables) => tables.apply(data, parity),
            None => self.rs.encode_sep(data, parity).expect("shapes checked above"),
        }
        Ok(())
    }

    /// Rebuilds, in place, every data shard flagged absent in `shards` (`k + m` slots, `true`
    /// for a present shard) from `k` present ones. The present shards and the absent data
    /// shards must all have one non-zero length (absent parity slots are not touched and may
    /// be empty). Present shards are trusted: check their hashes first.
    pub fn rebuild_data(&self, shards: &mut [(&mut [u8], bool)]) -> Result<(), CodecError> {
        let (k, total) = (self.k(), self.params.total());
        if shards.len() != total {
            return Err(CodecError::WrongShardCount { got: shards.len(), want: total });
        }
        let got = shards.iter().filter(|s| s.1).count();
        if got < k {
            return Err(CodecError::TooFewShards { need: k, got });
        }
        let len = shards.iter().find(|s| s.1).map_or(0, |s| s.0.len());
        let needs_len = |(i, s): (usize, &(&mut [u8], bool))| s.1 || i < k;
        if len == 0
            || shards.iter().enumerate().filter(|&x| needs_len(x)).any(|(_, s)| s.0.len() != len)
        {
            return Err(CodecError::ShardLengths);
        }
        if self.engine == Engine::ReedSolomonErasure {
            self.rs.reconstruct_data(shards).expect("shapes checked above");
            return Ok(());
        }
        let mut used = Vec::with_capacity(k);
        let mut missing = Vec::new();
        let mut inputs: Vec<&[u8]> = Vec::with_capacity(k);
        let mut outputs: Vec<&mut [u8]> = Vec::new();
        for (i, (bytes, present)) in shards.iter_mut().enumerate() {
            if *present && used.len() < k {
                used.push(i);
                inputs.push(&**bytes);
            } else if !*present && i < k {
                missing.push(i);
                outputs.push(&mut **bytes);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let rows = kernel::decode_rows(&self.parity_rows, &used, &missing);
        kernel::Tables::new(self.engine, k, &rows).apply(&inputs, &mut outputs);
        Ok(())
    }

    /// Encodes one stripe's object bytes (1 to `k * S` of them) into `k + m` shards of
    /// `ceil(data.len() / k)` bytes each, with their hashes.
    pub fn encode_stripe(&self, data: &[u8]) -> Result<EncodedStripe, CodecError> {
        let max = self.params.stripe_bytes();
        if data.is_empty() || data.len() as u64 > max {
            return Err(CodecError::BadStripeLength { len: data.len(), max });
        }
        let shard_len = data.len().div_ceil(self.k());
        let mut shards: Vec<Vec<u8>> = Vec::with_capacity(self.params.total());
        let mut chunks = data.chunks(shard_len);
        for _ in 0..self.k() {
            let mut shard = Vec::with_capacity(shard_len);
            shard.extend_from_slice(chunks.next().unwrap_or_default());
            shard.resize(shard_len, 0);
            shards.push(shard);
        }
        shards.resize_with(self.params.total(), || vec![0; shard_len]);
        let (data, parity) = shards.split_at_mut(self.k());
        let data: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let mut parity: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
        self.encode_parity(&data, &mut parity).expect("k + m shards of one non-zero length");
        let hashes = shards.iter().map(|s| Digest::of(s)).collect();
        Ok(EncodedStripe { shards, hashes })
    }

    /// Rebuilds stripe `s`'s object bytes from the shards fetched: `shards[i]` is the bytes of
    /// shard `i` if fetched. A shard whose length or blake3 differs from `expected[i]` counts
    /// as missing (and is reported corrupt). With every data shard good the bytes are copied;
    /// otherwise, with at least `k` good shards, the data shards are rebuilt. Fewer than `k`:
    /// `NotEnoughShards`, never wrong bytes.
    pub fn decode_stripe(
        &self,
        layout: &ObjectLayout,
        s: StripeIndex,
        mut shards: Vec<Option<Vec<u8>>>,
        expected: &[Digest],
    ) -> Result<Vec<u8>, CodecError> {
        self.check_decode_inputs(layout, s, &shards, expected)?;
        let mut out = vec![0; range_len(&layout.stripe_range(s))];
        self.decode_stripe_into(layout, s, &mut shards, expected, &mut out)?;
        Ok(out)
    }

    /// [`Codec::decode_stripe`] into `out`, which must be exactly `stripe_range(s)` long (for
    /// example the stripe's place in the restored object), saying which path it took and which
    /// shards were corrupt. Allocates nothing for a full stripe: missing data shards are
    /// rebuilt in place in `out`. `shards` is not changed (it is `mut` only because the
    /// Reed-Solomon library takes every shard mutably). On error `out` holds no meaningful
    /// bytes.
    pub fn decode_stripe_into(
        &self,
        layout: &ObjectLayout,
        s: StripeIndex,
        shards: &mut [Option<Vec<u8>>],
        expected: &[Digest],
        out: &mut [u8],
    ) -> Result<DecodeReport, CodecError> {
        self.check_decode_inputs(layout, s, shards, expected)?;
        let want = range_len(&layout.stripe_range(s));
        if out.len() != want {
            return Err(CodecError::BadOutputLength { len: out.len(), want });
        }
        let (k, shard_len) = (self.k(), layout.shard_len(s));
        let mut good = vec![false; shards.len()];
        let mut corrupt = Vec::new();
        check_shards(shards, 0..k, shard_len, expected, &mut good, &mut corrupt);
        if good[..k].iter().all(|&g| g) {
            copy_data(shards, shard_len, out);
            return Ok(DecodeReport { path: DecodePath::Copy, corrupt });
        }
        check_shards(shards, k..shards.len(), shard_len, expected, &mut good, &mut corrupt);
        let got = good.iter().filter(|&&g| g).count();
        if got < k {
            let missing = (0..shards.len()).filter(|&i| shards[i].is_none()).map(index).collect();
            return Err(CodecError::NotEnoughShards { stripe: s, need: k, got, missing, corrupt });
        }
        if out.len() == k * shard_len {
            self.rebuild_into(s, shards, &good, expected, out)?;
        } else {
            let mut padded = vec![0; k * shard_len];
            self.rebuild_into(s, shards, &good, expected, &mut padded)?;
            out.copy_from_slice(&padded[..out.len()]);
        }
        Ok(DecodeReport { path: DecodePath::Reconstructed, corrupt })
    }

    /// Writes the `k` data shards into `work` (`k * shard_len` bytes): the good ones copied,
    /// the others rebuilt in place from the good shards and checked against their hashes.
    fn rebuild_into(
        &self,
        s: StripeIndex,
        shards: &mut [Option<Vec<u8>>],
        good: &[bool],
        expected: &[Digest],
        work: &mut [u8],
    ) -> Result<(), CodecError> {
        let k = self.k();
        let shard_len = work.len() / k;
        let (data, parity) = shards.split_at_mut(k);
        let mut slots: Vec<(&mut [u8], bool)> = Vec::with_capacity(good.len());
        for ((chunk, shard), &ok) in work.chunks_mut(shard_len).zip(data.iter()).zip(good) {
            if let Some(bytes) = shard.as_deref().filter(|_| ok) {
                chunk.copy_from_slice(bytes);
            }
            slots.push((chunk, ok));
        }
        for (shard, &ok) in parity.iter_mut().zip(&good[k..]) {
            slots.push(match shard {
                Some(bytes) if ok => (bytes.as_mut_slice(), true),
                _ => (&mut [][..], false),
            });
        }
        self.rebuild_data(&mut slots)
            .expect("k + m slots, at least k good shards, all of one non-zero length");
        for (j, chunk) in work.chunks(shard_len).enumerate().filter(|&(j, _)| !good[j]) {
            if Digest::of(chunk) != expected[j] {
                return Err(CodecError::InconsistentStripe { stripe: s, shard: index(j) });
            }
        }
        Ok(())
    }

    fn k(&self) -> usize {
        usize::from(self.params.k)
    }

    fn check_decode_inputs(
        &self,
        layout: &ObjectLayout,
        s: StripeIndex,
        shards: &[Option<Vec<u8>>],
        expected: &[Digest],
    ) -> Result<(), CodecError> {
        if layout.params() != self.params {
            return Err(CodecError::ParamsMismatch { codec: self.params, layout: layout.params() });
        }
        let count = layout.stripe_count();
        if s.0 >= count {
            return Err(CodecError::StripeOutOfRange { stripe: s, count });
        }
        let want = self.params.total();
        if shards.len() != want {
            return Err(CodecError::WrongShardCount { got: shards.len(), want });
        }
        if expected.len() != want {
            return Err(CodecError::WrongHashCount { got: expected.len(), want });
        }
        Ok(())
    }
}

/// `ceil(a / b)`, or 0 when `b` is 0 (a layout with invalid params has no stripes).
fn div_ceil_or_zero(a: u64, b: u64) -> u64 {
    if b == 0 {
        0
    } else {
        a.div_ceil(b)
    }
}

fn range_len(r: &Range<u64>) -> usize {
    usize::try_from(r.end - r.start).expect("a stripe is at most k * shard_size_bytes < 2^30")
}

fn index(i: usize) -> ShardIndex {
    ShardIndex(u8::try_from(i).expect("shard indexes are below MAX_TOTAL_SHARDS = 32"))
}

/// Marks each shard of `range` good if it is present with the right length and hash, and
/// records the present ones that are not in `corrupt`.
fn check_shards(
    shards: &[Option<Vec<u8>>],
    range: Range<usize>,
    shard_len: usize,
    expected: &[Digest],
    good: &mut [bool],
    corrupt: &mut Vec<ShardIndex>,
) {
    for i in range {
        if let Some(bytes) = &shards[i] {
            good[i] = bytes.len() == shard_len && Digest::of(bytes) == expected[i];
            if !good[i] {
                corrupt.push(index(i));
            }
        }
    }
}

/// Copies the stripe's bytes out of its (good, present) data shards into `out`.
fn copy_data(shards: &[Option<Vec<u8>>], shard_len: usize, out: &mut [u8]) {
    for (chunk, shard) in out.chunks_mut(shard_len).zip(shards) {
        let bytes = shard.as_deref().expect("copy_data is called with every data shard good");
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::{Rng, RngCore, SeedableRng};

    /// The codes the brief names, from the smallest to the widest.
    const CODES: [(u8, u8); 5] = [(1, 1), (4, 2), (8, 4), (10, 4), (16, 16)];

    fn params(k: u8, m: u8, shard_size_bytes: u32) -> CodeParams {
        CodeParams::new(k, m, shard_size_bytes).expect("test codes are valid")
    }

    fn codec(p: CodeParams) -> Codec {
        Codec::new(p).expect("test codes are valid")
    }

    /// A code from `CODES` with a shard size in 64..=4096.
    fn code() -> impl Strategy<Value = CodeParams> {
        (0..CODES.len(), 64u32..=4096).prop_map(|(i, s)| params(CODES[i].0, CODES[i].1, s))
    }

    /// An object length for `p`: 0, 1, whole stripes, or whole stripes plus an odd tail.
    fn object_len(p: CodeParams) -> impl Strategy<Value = u64> {
        let stripe = p.stripe_bytes();
        prop_oneof![
            Just(0),
            Just(1),
            (1u64..=3).prop_map(move |n| n * stripe),
            (0u64..=2, 1..stripe).prop_map(move |(n, tail)| n * stripe + tail),
        ]
    }

    fn code_and_len() -> impl Strategy<Value = (CodeParams, u64)> {
        code().prop_flat_map(|p| (Just(p), object_len(p)))
    }

    fn code_and_nonempty_len() -> impl Strategy<Value = (CodeParams, u64)> {
        code_and_len().prop_map(|(p, len)| (p, len.max(1)))
    }

    fn random_bytes(rng: &mut StdRng, len: u64) -> Vec<u8> {
        let mut b = vec![0; usize::try_from(len).expect("test objects are small")];
        rng.fill_bytes(&mut b);
        b
    }

    fn stripe_bytes<'a>(layout: &ObjectLayout, object: &'a [u8], s: u32) -> &'a [u8] {
        let r = layout.stripe_range(StripeIndex(s));
        &object[r.start as usize..r.end as usize]
    }

    fn encode_object(c: &Codec, layout: &ObjectLayout, object: &[u8]) -> Vec<EncodedStripe> {
        (0..layout.stripe_count())
            .map(|s| c.encode_stripe(stripe_bytes(layout, object, s)).expect("a stripe's bytes"))
            .collect()
    }

    /// A decode through `decode_stripe_into`, with the bytes and what it reported.
    struct Decoded {
        bytes: Vec<u8>,
        path: DecodePath,
        corrupt: Vec<ShardIndex>,
    }

    fn decode_report(
        c: &Codec,
        layout: &ObjectLayout,
        s: u32,
        mut slots: Vec<Option<Vec<u8>>>,
        expected: &[Digest],
    ) -> Result<Decoded, CodecError> {
        let s = StripeIndex(s);
        let before = slots.clone();
        let mut bytes = vec![0xee; range_len(&layout.stripe_range(s))];
        let report = c.decode_stripe_into(layout, s, &mut slots, expected, &mut bytes)?;
        assert!(slots == before, "decode leaves the shards as they were");
        Ok(Decoded { bytes, path: report.path, corrupt: report.corrupt })
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Fault {
        Lost,
        FlipByte,
        Truncate,
        Extend,
    }

    /// Damages shard `i` of `slots` with a random fault; returns the fault.
    fn damage(slots: &mut [Option<Vec<u8>>], i: usize, rng: &mut StdRng) -> Fault {
        let fault =
            [Fault::Lost, Fault::FlipByte, Fault::Truncate, Fault::Extend][rng.gen_range(0..4)];
        let shard = slots[i].as_mut().expect("damage is applied to present shards");
        match fault {
            Fault::Lost => slots[i] = None,
            Fault::FlipByte => {
                let at = rng.gen_range(0..shard.len());
                shard[at] ^= rng.gen_range(1..=255u8);
            }
            Fault::Truncate => shard.truncate(shard.len() - 1),
            Fault::Extend => shard.push(0),
        }
        fault
    }

    struct Damaged {
        slots: Vec<Option<Vec<u8>>>,
        lost: Vec<ShardIndex>,
        corrupt: Vec<ShardIndex>,
    }

    /// The stripe's shards with `faults` distinct random shards damaged.
    fn damaged(stripe: &EncodedStripe, faults: usize, rng: &mut StdRng) -> Damaged {
        let mut slots: Vec<Option<Vec<u8>>> = stripe.shards.iter().cloned().map(Some).collect();
        let mut picked = rand::seq::index::sample(rng, slots.len(), faults).into_vec();
        picked.sort_unstable();
        let (mut lost, mut corrupt) = (Vec::new(), Vec::new());
        for i in picked {
            match damage(&mut slots, i, rng) {
                Fault::Lost => lost.push(index(i)),
                _ => corrupt.push(index(i)),
            }
        }
        Damaged { slots, lost, corrupt }
    }

    proptest! {
        #[test]
        fn layout_tiles_the_object((p, len) in code_and_len()) {
            let layout = ObjectLayout::try_new(p, len).expect("small objects fit");
            let stripe = p.stripe_bytes();
            prop_assert_eq!(u64::from(layout.stripe_count()), len.div_ceil(stripe));
            let mut next = 0;
            for s in (0..layout.stripe_count()).map(StripeIndex) {
                let r = layout.stripe_range(s);
                prop_assert_eq!(r.start, next);
                prop_assert!(r.end > r.start && r.end - r.start <= stripe);
                let shard_len = layout.shard_len(s) as u64;
                let stripe_len = r.end - r.start;
                prop_assert_eq!(shard_len, stripe_len.div_ceil(u64::from(p.k)));
                if stripe_len == stripe {
                    prop_assert_eq!(shard_len, u64::from(p.shard_size_bytes));
                }
                let mut inner = r.start;
                for j in (0..p.k).map(ShardIndex) {
                    let d = layout.data_shard_range(s, j);
                    prop_assert_eq!(d.start, inner);
                    prop_assert!(d.end - d.start <= shard_len);
                    inner = d.end;
                }
                prop_assert_eq!(inner, r.end);
                prop_assert!(layout.data_shard_range(s, ShardIndex(p.k)).is_empty());
                next = r.end;
            }
            prop_assert_eq!(next, len);
            let past = StripeIndex(layout.stripe_count());
            prop_assert!(layout.stripe_range(past).is_empty());
            prop_assert_eq!(layout.shard_len(past), 0);
        }

        #[test]
        fn up_to_m_lost_or_corrupt_shards_give_back_the_bytes(
            (p, len) in code_and_len(),
            seed in any::<u64>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let c = codec(p);
            let layout = ObjectLayout::new(p, len);
            let object = random_bytes(&mut rng, len);
            let stripes = encode_object(&c, &layout, &object);
            let mut restored = Vec::new();
            for (s, enc) in stripes.iter().enumerate() {
                let faults = rng.gen_range(0..=usize::from(p.m));
                let d = damaged(enc, faults, &mut rng);
                let data_hit = d.lost.iter().chain(&d.corrupt).any(|i| i.0 < p.k);
                let out = decode_report(&c, &layout, s as u32, d.slots, &enc.hashes)
                    .expect("at most m faults");
                let (path, corrupt) = if data_hit {
                    (DecodePath::Reconstructed, d.corrupt)
                } else {
                    (DecodePath::Copy, Vec::new())
                };
                prop_assert_eq!(out.path, path);
                prop_assert_eq!(out.corrupt, corrupt);
                restored.extend_from_slice(&out.bytes);
            }
            prop_assert!(restored == object, "restored bytes differ");
        }

        #[test]
        fn more_than_m_faults_name_the_shards_and_return_no_bytes(
            (p, len) in code_and_nonempty_len(),
            seed in any::<u64>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let c = codec(p);
            let layout = ObjectLayout::new(p, len);
            let object = random_bytes(&mut rng, len);
            let stripes = encode_object(&c, &layout, &object);
            let s = rng.gen_range(0..stripes.len());
            let faults = rng.gen_range(usize::from(p.m) + 1..=p.total());
            let d = damaged(&stripes[s], faults, &mut rng);
            let got = c.decode_stripe(&layout, StripeIndex(s as u32), d.slots, &stripes[s].hashes);
            prop_assert_eq!(got, Err(CodecError::NotEnoughShards {
                stripe: StripeIndex(s as u32),
                need: usize::from(p.k),
                got: p.total() - faults,
                missing: d.lost,
                corrupt: d.corrupt,
            }));
        }

        #[test]
        fn data_shards_are_the_object_bytes_zero_padded((p, len) in code_and_len(), seed in any::<u64>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let c = codec(p);
            let layout = ObjectLayout::new(p, len);
            let object = random_bytes(&mut rng, len);
            for (s, enc) in encode_object(&c, &layout, &object).iter().enumerate() {
                let s = StripeIndex(s as u32);
                prop_assert_eq!(enc.shards.len(), p.total());
                for (j, shard) in enc.shards.iter().enumerate() {
                    prop_assert_eq!(shard.len(), layout.shard_len(s));
                    prop_assert_eq!(enc.hashes[j], Digest::of(shard));
                    if j < usize::from(p.k) {
                        let r = layout.data_shard_range(s, index(j));
                        let body = &object[r.start as usize..r.end as usize];
                        prop_assert_eq!(&shard[..body.len()], body);
                        prop_assert!(shard[body.len()..].iter().all(|&b| b == 0));
                    }
                }
            }
        }

        #[test]
        fn decode_never_panics_and_never_returns_wrong_bytes(
            (p, len) in code_and_nonempty_len(),
            seed in any::<u64>(),
            edits in proptest::collection::vec((0u8..8, any::<u16>(), any::<u16>()), 0..12),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let c = codec(p);
            let layout = ObjectLayout::new(p, len);
            let object = random_bytes(&mut rng, len);
            let stripes = encode_object(&c, &layout, &object);
            let s = rng.gen_range(0..stripes.len());
            let mut slots: Vec<Option<Vec<u8>>> = stripes[s].shards.iter().cloned().map(Some).collect();
            let mut expected = stripes[s].hashes.clone();
            for (op, a, b) in edits {
                apply_edit(&mut slots, &mut expected, op, usize::from(a), usize::from(b));
            }
            let want = stripe_bytes(&layout, &object, s as u32);
            // Edited hashes are another manifest: swapping two shards and their two hashes
            // describes other bytes consistently, which no decoder can tell (the manifest's
            // own id and the object's end-to-end hash guard that). The bytes are checked
            // against the stripe whenever the hashes are the stripe's own.
            let hashes_intact = expected == stripes[s].hashes;
            if let Ok(bytes) = c.decode_stripe(&layout, StripeIndex(s as u32), slots, &expected) {
                prop_assert!(!hashes_intact || bytes == want, "decode returned wrong bytes");
            }
        }

        #[test]
        fn decode_of_arbitrary_input_never_panics(
            (p, len) in code_and_len(),
            stripe in 0u32..6,
            slots in proptest::collection::vec(
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)), 0..40),
            expected in proptest::collection::vec(any::<[u8; 32]>().prop_map(Digest), 0..40),
        ) {
            let c = codec(p);
            let _ = c.decode_stripe(&ObjectLayout::new(p, len), StripeIndex(stripe), slots, &expected);
        }
    }

    /// One arbitrary edit of a stripe's shards or hashes (indexes taken modulo the length).
    fn apply_edit(
        slots: &mut Vec<Option<Vec<u8>>>,
        expected: &mut Vec<Digest>,
        op: u8,
        a: usize,
        b: usize,
    ) {
        let (n, h) = (slots.len(), expected.len());
        match op {
            0 => slots.truncate(a % (n + 1)),
            1 => slots.push(Some(vec![b as u8; a % 100])),
            2 if n > 0 => slots.swap(a % n, b % n),
            3 if h > 0 => expected.swap(a % h, b % h),
            4 => expected.truncate(a % (h + 1)),
            5 | 6 if n > 0 => {
                let Some(shard) = slots[a % n].as_mut() else {
                    return;
                };
                match (op, shard.len()) {
                    (5, len) if len > 0 => shard[b % len] ^= 1,
                    _ => shard.resize(b % 5000, b as u8),
                }
            }
            _ if n > 0 => slots[a % n] = None,
            _ => {}
        }
    }

    #[test]
    fn a_healthy_decode_copies_and_a_lost_data_shard_reconstructs() {
        let p = params(4, 2, 64);
        let c = codec(p);
        let object: Vec<u8> = (0..=255).collect();
        let layout = ObjectLayout::new(p, 256);
        let enc = c.encode_stripe(&object).expect("one full stripe");
        let all: Vec<Option<Vec<u8>>> = enc.shards.iter().cloned().map(Some).collect();
        let decode = |slots: Vec<Option<Vec<u8>>>| {
            decode_report(&c, &layout, 0, slots, &enc.hashes).expect("decodable")
        };

        let healthy = decode(all.clone());
        assert_eq!((healthy.path, healthy.bytes.as_slice()), (DecodePath::Copy, &object[..]));

        let mut only_data = all.clone();
        only_data[4] = None;
        only_data[5] = Some(vec![0; 64]);
        let d = decode(only_data);
        assert_eq!(d.path, DecodePath::Copy, "parity is not needed and not looked at");
        assert!(d.corrupt.is_empty());

        let mut lost_data = all;
        lost_data[1] = None;
        let d = decode(lost_data);
        assert_eq!((d.path, d.bytes.as_slice()), (DecodePath::Reconstructed, &object[..]));
    }

    #[test]
    fn a_forged_parity_shard_with_a_matching_hash_is_caught() {
        let p = params(2, 1, 64);
        let c = codec(p);
        let layout = ObjectLayout::new(p, 128);
        let enc = c.encode_stripe(&[7; 128]).expect("one full stripe");
        let mut hashes = enc.hashes.clone();
        let forged = vec![9; 64];
        hashes[2] = Digest::of(&forged);
        let slots = vec![Some(enc.shards[0].clone()), None, Some(forged)];
        assert_eq!(
            c.decode_stripe(&layout, StripeIndex(0), slots, &hashes),
            Err(CodecError::InconsistentStripe { stripe: StripeIndex(0), shard: ShardIndex(1) })
        );
    }

    #[test]
    fn a_one_byte_object_costs_one_byte_shards() {
        let p = params(10, 4, 1 << 20);
        let enc = codec(p).encode_stripe(&[42]).expect("one byte");
        assert_eq!(enc.shards.len(), 14);
        assert!(enc.shards.iter().all(|s| s.len() == 1));
        assert_eq!(enc.shards[0], vec![42]);
        assert_eq!(ObjectLayout::new(p, 0).stripe_count(), 0);
    }

    #[test]
    fn bad_inputs_get_typed_errors() {
        assert!(matches!(
            Codec::new(CodeParams { k: 0, m: 1, shard_size_bytes: 64 }),
            Err(CodecError::BadParams(_))
        ));
        assert!(matches!(
            Codec::new(CodeParams { k: 17, m: 16, shard_size_bytes: 64 }),
            Err(CodecError::BadParams(_))
        ));
        assert!(Codec::new(params(16, 16, 64)).is_ok());
        let p = params(4, 2, 64);
        let c = codec(p);
        assert_eq!(c.encode_stripe(&[]), Err(CodecError::BadStripeLength { len: 0, max: 256 }));
        assert_eq!(
            c.encode_stripe(&[0; 257]),
            Err(CodecError::BadStripeLength { len: 257, max: 256 })
        );
        let layout = ObjectLayout::new(p, 300);
        let enc = c.encode_stripe(&[1; 256]).expect("full stripe");
        let slots = || enc.shards.iter().cloned().map(Some).collect::<Vec<_>>();
        assert_eq!(
            c.decode_stripe(&layout, StripeIndex(2), slots(), &enc.hashes),
            Err(CodecError::StripeOutOfRange { stripe: StripeIndex(2), count: 2 })
        );
        assert_eq!(
            c.decode_stripe(&layout, StripeIndex(0), slots()[..5].to_vec(), &enc.hashes),
            Err(CodecError::WrongShardCount { got: 5, want: 6 })
        );
        assert_eq!(
            c.decode_stripe(&layout, StripeIndex(0), slots(), &enc.hashes[..5]),
            Err(CodecError::WrongHashCount { got: 5, want: 6 })
        );
        let mut out = vec![0; 255];
        assert_eq!(
            c.decode_stripe_into(&layout, StripeIndex(0), &mut slots(), &enc.hashes, &mut out),
            Err(CodecError::BadOutputLength { len: 255, want: 256 })
        );
        let other = ObjectLayout::new(params(4, 3, 64), 300);
        assert!(matches!(
            c.decode_stripe(&other, StripeIndex(0), slots(), &enc.hashes),
            Err(CodecError::ParamsMismatch { .. })
        ));
    }

    #[test]
    fn layouts_of_absurd_objects_are_refused_or_clamped_never_panic() {
        let p = params(1, 1, 64);
        let max_len = ObjectLayout::max_len(p);
        assert_eq!(max_len, u64::from(u32::MAX) * 64);
        assert!(ObjectLayout::try_new(p, max_len).is_ok());
        assert_eq!(
            ObjectLayout::try_new(p, max_len + 1),
            Err(CodecError::ObjectTooLarge { len: max_len + 1, max_len })
        );
        assert_eq!(ObjectLayout::new(p, u64::MAX).stripe_count(), u32::MAX);
        let bad = CodeParams { k: 0, m: 0, shard_size_bytes: 0 };
        assert!(matches!(ObjectLayout::try_new(bad, 1), Err(CodecError::BadParams(_))));
        let l = ObjectLayout::new(bad, 1000);
        assert_eq!((l.stripe_count(), l.shard_len(StripeIndex(0))), (0, 0));
        assert!(l.data_shard_range(StripeIndex(0), ShardIndex(0)).is_empty());
    }

    #[test]
    fn codec_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Codec>();
    }

    /// An independent implementation of the code `CODEC_FIELD` and `CODEC_MATRIX` describe:
    /// the parity bytes must match it, so the manifest's self-description is a tested fact and
    /// a dependency upgrade cannot silently change the parity of stored checkpoints.
    mod reference {
        pub fn mul(mut a: u8, mut b: u8) -> u8 {
            let mut product = 0;
            while b != 0 {
                if b & 1 != 0 {
                    product ^= a;
                }
                let carry = a & 0x80 != 0;
                a <<= 1;
                if carry {
                    a ^= 0x1d; // x^8 = x^4 + x^3 + x^2 + 1 (poly 0x11d)
                }
                b >>= 1;
            }
            product
        }

        fn inverse(a: u8) -> u8 {
            (1..=255).find(|&x| mul(a, x) == 1).expect("non-zero elements have inverses")
        }

        fn invert(mut m: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
            let n = m.len();
            let mut inv: Vec<Vec<u8>> =
                (0..n).map(|r| (0..n).map(|c| u8::from(r == c)).collect()).collect();
            for col in 0..n {
                let pivot = (col..n).find(|&r| m[r][col] != 0).expect("vandermonde is invertible");
                m.swap(col, pivot);
                inv.swap(col, pivot);
                let scale = inverse(m[col][col]);
                for c in 0..n {
                    m[col][c] = mul(m[col][c], scale);
                    inv[col][c] = mul(inv[col][c], scale);
                }
                for r in (0..n).filter(|&r| r != col) {
                    let f = m[r][col];
                    for c in 0..n {
                        m[r][c] ^= mul(f, m[col][c]);
                        inv[r][c] ^= mul(f, inv[col][c]);
                    }
                }
            }
            inv
        }

        /// The `(k+m) x k` encoding matrix: Vandermonde `r^c` times the inverse of its top.
        pub fn matrix(k: usize, m: usize) -> Vec<Vec<u8>> {
            let pow = |r: u8, c: usize| (0..c).fold(1, |acc, _| mul(acc, r));
            let v: Vec<Vec<u8>> =
                (0..k + m).map(|r| (0..k).map(|c| pow(r as u8, c)).collect()).collect();
            let top_inv = invert(v[..k].to_vec());
            v.iter()
                .map(|row| {
                    (0..k)
                        .map(|c| (0..k).fold(0, |acc, i| acc ^ mul(row[i], top_inv[i][c])))
                        .collect()
                })
                .collect()
        }
    }

    #[test]
    fn parity_matches_an_independent_implementation_of_the_documented_code() {
        let mut rng = StdRng::seed_from_u64(7);
        for (k, m) in CODES.into_iter().chain([(8, 3)]) {
            let (k, m) = (usize::from(k), usize::from(m));
            let g = reference::matrix(k, m);
            for (r, row) in g.iter().take(k).enumerate() {
                assert!(row.iter().enumerate().all(|(c, &x)| x == u8::from(r == c)), "systematic");
            }
            // 200 bytes a shard: whole 32- and 64-byte vectors and a tail.
            let object = random_bytes(&mut rng, (k * 200) as u64);
            for engine in engines() {
                let c = Codec::with_engine(params(k as u8, m as u8, 200), engine).expect("engine");
                let enc = c.encode_stripe(&object).expect("stripe");
                for (r, shard) in enc.shards.iter().enumerate() {
                    let want: Vec<u8> = (0..200)
                        .map(|b| {
                            (0..k).fold(0, |acc, c| acc ^ reference::mul(g[r][c], enc.shards[c][b]))
                        })
                        .collect();
                    assert_eq!(shard, &want, "shard {r} of k={k} m={m} on {engine:?}");
                }
            }
        }
    }

    /// The engines this CPU runs (each is forced in the tests that loop over them).
    fn engines() -> Vec<Engine> {
        Engine::ALL.into_iter().filter(|e| e.is_available()).collect()
    }

    #[test]
    fn the_kernels_this_build_targets_are_available_and_chosen() {
        if cfg!(target_feature = "avx2") {
            assert!(Engine::Avx2.is_available(), "an x86-64-v3 build runs on AVX2 CPUs only");
            assert_ne!(Engine::best(), Engine::ReedSolomonErasure);
        }
        assert_eq!(codec(params(4, 2, 64)).engine(), Engine::best());
        for e in Engine::ALL.into_iter().filter(|e| !e.is_available()) {
            assert!(matches!(
                Codec::with_engine(params(4, 2, 64), e),
                Err(CodecError::EngineUnavailable(x)) if x == e
            ));
        }
    }

    #[test]
    fn raw_encode_and_rebuild_refuse_bad_shapes() {
        let c = codec(params(2, 1, 64));
        let (a, b, mut p) = ([1u8; 8], [2u8; 8], [0u8; 8]);
        let mut short = [0u8; 7];
        assert!(matches!(
            c.encode_parity(&[&a], &mut [&mut p[..]]),
            Err(CodecError::WrongShardCount { got: 2, want: 3 })
        ));
        assert_eq!(
            c.encode_parity(&[&a, &b], &mut [&mut short[..]]),
            Err(CodecError::ShardLengths)
        );
        assert_eq!(c.encode_parity(&[&[], &[]], &mut [&mut [][..]]), Err(CodecError::ShardLengths));
        c.encode_parity(&[&a, &b], &mut [&mut p[..]]).expect("good shapes");
        let (mut a2, mut b2) = (a, [0u8; 8]);
        assert_eq!(
            c.rebuild_data(&mut [(&mut a2[..], true), (&mut b2[..], false), (&mut [][..], false)]),
            Err(CodecError::TooFewShards { need: 2, got: 1 })
        );
        assert_eq!(
            c.rebuild_data(&mut [(&mut a2[..], true), (&mut short[..], false), (&mut p[..], true)]),
            Err(CodecError::ShardLengths)
        );
        c.rebuild_data(&mut [(&mut a2[..], true), (&mut b2[..], false), (&mut p[..], true)])
            .expect("good shapes");
        assert_eq!(b2, b);
    }

    /// `(k, m)`: the named codes, or any code of up to `MAX_TOTAL_SHARDS` shards.
    fn any_code() -> impl Strategy<Value = (usize, usize)> {
        const NAMED: [(usize, usize); 6] = [(1, 1), (4, 2), (8, 3), (10, 4), (16, 16), (8, 4)];
        prop_oneof![
            (0..NAMED.len()).prop_map(|i| NAMED[i]),
            (1usize..=31).prop_flat_map(|k| (Just(k), 1..=32 - k)),
        ]
    }

    proptest! {
        #[test]
        fn every_engine_gives_reed_solomon_erasures_parity_and_rebuilt_shards(
            (k, m) in any_code(),
            len in prop_oneof![1usize..=130, 1usize..=3000],
            seed in any::<u64>(),
        ) {
            let mut rng = StdRng::seed_from_u64(seed);
            let rs = ReedSolomon::new(k, m).expect("valid code");
            let data: Vec<Vec<u8>> = (0..k).map(|_| random_bytes(&mut rng, len as u64)).collect();
            let mut want = vec![vec![0; len]; m];
            rs.encode_sep(&data, &mut want).expect("k + m shards");
            let lost = rng.gen_range(1..=m);
            let mut absent = rand::seq::index::sample(&mut rng, k + m, lost).into_vec();
            absent.sort_unstable();
            for engine in engines() {
                let c = Codec::with_engine(params(k as u8, m as u8, 4096), engine).expect("engine");
                let ins: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
                let mut parity = vec![vec![0x5a; len]; m];
                let mut outs: Vec<&mut [u8]> = parity.iter_mut().map(Vec::as_mut_slice).collect();
                c.encode_parity(&ins, &mut outs).expect("shapes");
                prop_assert!(parity == want, "parity of k={} m={} len={} on {:?}", k, m, len, engine);

                let mut shards: Vec<Vec<u8>> = data.iter().chain(&parity).cloned().collect();
                for &i in &absent {
                    // Garbage in the absent data slots (overwritten), nothing in absent parity.
                    shards[i] = if i < k { vec![0xa5; len] } else { Vec::new() };
                }
                let mut rse_shards = shards.clone();
                let mut slots: Vec<(&mut [u8], bool)> = shards
                    .iter_mut()
                    .enumerate()
                    .map(|(i, s)| (s.as_mut_slice(), !absent.contains(&i)))
                    .collect();
                c.rebuild_data(&mut slots).expect("at most m absent");
                let mut rse_slots: Vec<(&mut [u8], bool)> = rse_shards
                    .iter_mut()
                    .enumerate()
                    .map(|(i, s)| (s.as_mut_slice(), !absent.contains(&i)))
                    .collect();
                rs.reconstruct_data(&mut rse_slots).expect("at most m absent");
                prop_assert!(shards[..k] == rse_shards[..k], "rebuilt like reed-solomon-erasure");
                prop_assert!(shards[..k] == data[..], "rebuilt the data, k={} m={} len={} lost={:?} on {:?}", k, m, len, absent, engine);
            }
        }
    }
}
