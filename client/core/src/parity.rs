//! Parity of a stripe from borrowed data shards: the same code as [`crate::codec::Codec`]
//! ([`crate::codec::CODEC_ID`]), computed without copying or padding the data shards, into
//! parity buffers the caller owns (reused buffers: they need not be zeroed, every byte is
//! overwritten). The save pipeline sends a full stripe's data shards as slices of the
//! caller's bytes and only the `m` parity shards are new memory.
//!
//! Kept apart from `codec` so that the codec's kernel can change under it; the tests check
//! that both give the very same shards.

use rackpoint_proto::CodeParams;
use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::codec::CodecError;

/// Computes the `m` parity shards of `k` data shards of one length.
#[derive(Debug)]
pub struct ParityEncoder {
    params: CodeParams,
    rs: ReedSolomon,
}

impl ParityEncoder {
    /// An encoder for `params` (the bounds of [`crate::codec::Codec::new`]).
    pub fn new(params: CodeParams) -> Result<Self, CodecError> {
        params.validate()?;
        let rs = ReedSolomon::new(params.k.into(), params.m.into())
            .expect("validated params have k >= 1, m >= 1 and k + m <= 32 <= 256");
        Ok(Self { params, rs })
    }

    /// The code.
    pub fn params(&self) -> CodeParams {
        self.params
    }

    /// Writes the parity of `data` (`k` shards, all `len` bytes, 1 <= `len` <=
    /// `shard_size_bytes`) into `parity` (`m` buffers of `len` bytes; their old contents do
    /// not matter).
    pub fn encode_into<D: AsRef<[u8]>, P: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        data: &[D],
        parity: &mut [P],
    ) -> Result<(), CodecError> {
        let (k, m) = (usize::from(self.params.k), usize::from(self.params.m));
        if data.len() != k || parity.len() != m {
            return Err(CodecError::WrongShardCount {
                got: data.len() + parity.len(),
                want: k + m,
            });
        }
        let len = data[0].as_ref().len();
        let max = self.params.stripe_bytes();
        let same = data.iter().all(|d| d.as_ref().len() == len)
            && parity.iter().all(|p| p.as_ref().len() == len);
        if len == 0 || len > self.params.shard_size_bytes as usize || !same {
            return Err(CodecError::BadStripeLength { len: len * k, max });
        }
        self.rs.encode_sep(data, parity).expect("k data and m parity shards of one length");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parity_is_the_codecs_parity(
            code in 0usize..4,
            len in 1usize..=512,
            seed in any::<u64>(),
            garbage in any::<u8>(),
        ) {
            let (k, m) = [(1, 1), (4, 2), (10, 4), (16, 16)][code];
            let p = CodeParams::new(k, m, 512).expect("valid");
            let k = usize::from(k);
            let data: Vec<u8> = (0..k * len).map(|i| (seed as usize ^ (i * 31)) as u8).collect();
            let want = Codec::new(p).expect("valid").encode_stripe(&data).expect("a stripe");
            let shards: Vec<&[u8]> = data.chunks(len).collect();
            // Reused buffers hold old bytes: they must not matter.
            let mut parity = vec![vec![garbage; len]; usize::from(m)];
            ParityEncoder::new(p).expect("valid").encode_into(&shards, &mut parity).expect("ok");
            prop_assert_eq!(&parity[..], &want.shards[k..]);
        }
    }

    #[test]
    fn wrong_counts_and_lengths_are_refused() {
        let p = CodeParams::new(2, 1, 64).expect("valid");
        let e = ParityEncoder::new(p).expect("valid");
        let mut parity = vec![vec![0u8; 8]];
        assert!(matches!(
            e.encode_into(&[[0u8; 8]], &mut parity),
            Err(CodecError::WrongShardCount { got: 2, want: 3 })
        ));
        assert!(e.encode_into(&[&[0u8; 8][..], &[0u8; 7][..]], &mut parity).is_err());
        let mut big = vec![vec![0u8; 65]];
        assert!(e.encode_into(&[[0u8; 65], [0u8; 65]], &mut big).is_err());
        assert!(e.encode_into(&[[0u8; 8], [1u8; 8]], &mut parity).is_ok());
    }
}
