//! The codec's byte work: which implementation computes parity and rebuilds data shards
//! ([`Engine`]), the code's matrix as reed-solomon-erasure builds it, decode matrices, and the
//! per-coefficient tables of the multi-output kernel. The kernel loads each input shard once per
//! vector and accumulates every output in a register (reed-solomon-erasure makes one pass over
//! the data per output). Same field, same matrix, so the bytes are reed-solomon-erasure's.

use std::sync::OnceLock;

use rackpoint_proto::limits::MAX_TOTAL_SHARDS;
use reed_solomon_erasure::galois_8::ReedSolomon;

use super::simd::{self, NibbleTable};

/// Which implementation does a codec's byte work. All produce identical bytes (the code of
/// [`super::CODEC_ID`]); they differ in speed and in the CPUs they run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// reed-solomon-erasure's own encode and reconstruct: one pass over the data per output
    /// shard. The reference, and the fallback on CPUs without AVX2.
    ReedSolomonErasure,
    /// Rackpoint's multi-output kernel with AVX2 split-nibble `vpshufb` lookups.
    Avx2,
    /// The multi-output kernel with GFNI `gf2p8affineqb` on 512-bit vectors (AVX-512BW).
    GfniAvx512,
}

impl Engine {
    /// Every engine, slowest first.
    pub const ALL: [Engine; 3] = [Engine::ReedSolomonErasure, Engine::Avx2, Engine::GfniAvx512];

    /// Whether this CPU runs the engine.
    pub fn is_available(self) -> bool {
        match self {
            Engine::ReedSolomonErasure => true,
            Engine::Avx2 => simd::avx2_detected(),
            Engine::GfniAvx512 => simd::gfni_avx512_detected(),
        }
    }

    /// The fastest engine this CPU runs whose kernel also passed a self-check against the
    /// scalar field multiply (once per process): GFNI/AVX-512, else AVX2, else
    /// reed-solomon-erasure.
    pub fn best() -> Engine {
        static BEST: OnceLock<Engine> = OnceLock::new();
        *BEST.get_or_init(|| {
            [Engine::GfniAvx512, Engine::Avx2]
                .into_iter()
                .find(|&e| e.is_available() && self_check(e))
                .unwrap_or(Engine::ReedSolomonErasure)
        })
    }
}

/// The `m x k` parity rows of reed-solomon-erasure's encoding matrix for `rs`, read out of the
/// library by encoding the identity: data shard `c` is the unit vector `e_c`, so byte `c` of
/// parity shard `r` is the matrix entry `(k + r, c)`.
pub(super) fn parity_rows(rs: &ReedSolomon) -> Vec<Vec<u8>> {
    let (k, m) = (rs.data_shard_count(), rs.parity_shard_count());
    let data: Vec<Vec<u8>> = (0..k).map(|j| (0..k).map(|c| u8::from(c == j)).collect()).collect();
    let mut parity = vec![vec![0; k]; m];
    rs.encode_sep(&data, &mut parity).expect("k data and m parity shards of k bytes");
    // Shard j holds e_j, so parity byte c is sum_j G[k+r][j] * e_j[c] = G[k+r][c].
    parity
}

/// `x * 2` in the field (poly 0x11d): the shift, reduced by `x^8 = x^4 + x^3 + x^2 + 1`.
const fn xtime(x: u8) -> u8 {
    (x << 1) ^ if x & 0x80 != 0 { 0x1d } else { 0 }
}

/// `EXP[i] = 2^i` for `i` in `0..510` (twice round the group, so `EXP[log a + log b]` needs no
/// reduction) and `LOG[2^i] = i`: 768 bytes, L1-resident, for the decode matrix arithmetic.
const EXP_LOG: ([u8; 510], [u8; 256]) = {
    let (mut exp, mut log) = ([0u8; 510], [0u8; 256]);
    let (mut i, mut x) = (0, 1u8);
    while i < 510 {
        exp[i] = x;
        if i < 255 {
            log[x as usize] = i as u8;
        }
        x = xtime(x);
        i += 1;
    }
    (exp, log)
};

/// `a * b` in the field, by logarithms.
fn mul(a: u8, b: u8) -> u8 {
    if a == 0 || b == 0 {
        return 0;
    }
    EXP_LOG.0[usize::from(EXP_LOG.1[usize::from(a)]) + usize::from(EXP_LOG.1[usize::from(b)])]
}

/// `1 / a` in the field (`a != 0`).
fn inverse(a: u8) -> u8 {
    EXP_LOG.0[255 - usize::from(EXP_LOG.1[usize::from(a)])]
}

/// `g * 2^j` for `j` in `0..8`: the images of the bits, from which any product by `g` is an XOR.
fn bit_images(g: u8) -> [u8; 8] {
    let mut images = [g; 8];
    for j in 1..8 {
        images[j] = xtime(images[j - 1]);
    }
    images
}

/// A square matrix of up to `MAX_TOTAL_SHARDS` rows, on the stack.
type Square = [[u8; MAX_TOTAL_SHARDS]; MAX_TOTAL_SHARDS];

/// The rows that rebuild data shards `missing` from the shards `used` (`k` distinct shard
/// indexes, `k <= MAX_TOTAL_SHARDS`): row `j` of the inverse of the `used` rows of the full
/// encoding matrix, whose top `k` rows are the identity and the rest `parity`. Input `c` of the
/// result is shard `used[c]`.
pub(super) fn decode_rows(parity: &[Vec<u8>], used: &[usize], missing: &[usize]) -> Vec<Vec<u8>> {
    let k = used.len();
    let mut a: Square = [[0; MAX_TOTAL_SHARDS]; MAX_TOTAL_SHARDS];
    for (r, &i) in used.iter().enumerate() {
        if i < k {
            a[r][i] = 1;
        } else {
            a[r][..k].copy_from_slice(&parity[i - k]);
        }
    }
    let inverse = invert(&mut a, k);
    missing.iter().map(|&j| inverse[j][..k].to_vec()).collect()
}

/// The inverse of the top-left `n x n` block of `a` over GF(2^8) (Gauss-Jordan; `a` is used
/// up). Any `k` rows of an MDS code's matrix are invertible, which is the only use.
fn invert(a: &mut Square, n: usize) -> Square {
    let mut inv: Square = [[0; MAX_TOTAL_SHARDS]; MAX_TOTAL_SHARDS];
    for (i, row) in inv.iter_mut().enumerate().take(n) {
        row[i] = 1;
    }
    for col in 0..n {
        let pivot = (col..n).find(|&r| a[r][col] != 0).expect("any k rows of an MDS code invert");
        a.swap(col, pivot);
        inv.swap(col, pivot);
        let scale = inverse(a[col][col]);
        for c in 0..n {
            a[col][c] = mul(a[col][c], scale);
            inv[col][c] = mul(inv[col][c], scale);
        }
        let (pivot_a, pivot_inv) = (a[col], inv[col]);
        for r in (0..n).filter(|&r| r != col) {
            let f = a[r][col];
            if f == 0 {
                continue;
            }
            for c in 0..n {
                a[r][c] ^= mul(f, pivot_a[c]);
                inv[r][c] ^= mul(f, pivot_inv[c]);
            }
        }
    }
    inv
}

/// The split-nibble lookup tables of multiplying by `g`.
pub(super) fn nibble_table(g: u8) -> NibbleTable {
    let images = bit_images(g);
    let mut t = NibbleTable { lo: [0; 32], hi: [0; 32] };
    for x in 0..16 {
        let (lo, hi) = (0..4)
            .filter(|j| x >> j & 1 != 0)
            .fold((0, 0), |(lo, hi), j| (lo ^ images[j], hi ^ images[j + 4]));
        for lane in [0, 16] {
            t.lo[lane + x] = lo;
            t.hi[lane + x] = hi;
        }
    }
    t
}

/// The `gf2p8affineqb` bit matrix of multiplying by `g`. The instruction computes result bit
/// `i` as the parity of `x AND byte (7 - i)` of the matrix; multiplying by `g` is linear over
/// GF(2), with result bit `i` the XOR of bit `j` of `x` over the `j` where bit `i` of `g * 2^j`
/// is set.
pub(super) fn affine_matrix(g: u8) -> u64 {
    let images = bit_images(g);
    let mut matrix = 0u64;
    for i in 0..8 {
        let row = (0..8).fold(0u8, |row, j| row | ((images[j] >> i) & 1) << j);
        matrix |= u64::from(row) << (8 * (7 - i));
    }
    matrix
}

/// The tables of a `rows x k` matrix for one kernel engine, laid out input-major: the table of
/// input `c` and output `r` is at `c * rows + r`.
#[derive(Debug, Clone)]
pub(super) struct Tables {
    engine: Engine,
    k: usize,
    rows: usize,
    coefs: Vec<u8>,
    nibble: Vec<NibbleTable>,
    affine: Vec<u64>,
}

impl Tables {
    /// Tables computing one output per row of `matrix` (each row `k` coefficients) with
    /// `engine`, which must be a kernel engine (not `ReedSolomonErasure`).
    pub(super) fn new(engine: Engine, k: usize, matrix: &[Vec<u8>]) -> Self {
        let rows = matrix.len();
        let coefs: Vec<u8> = (0..k * rows).map(|i| matrix[i % rows][i / rows]).collect();
        let (nibble, affine) = match engine {
            Engine::Avx2 => (coefs.iter().map(|&g| nibble_table(g)).collect(), Vec::new()),
            Engine::GfniAvx512 => (Vec::new(), coefs.iter().map(|&g| affine_matrix(g)).collect()),
            Engine::ReedSolomonErasure => panic!("reed-solomon-erasure uses no kernel tables"),
        };
        Self { engine, k, rows, coefs, nibble, affine }
    }

    /// `outputs[r] = row r . inputs`: `k` inputs and one output per row, all of one length.
    /// Panics on other shapes or if the engine is not available (callers check both).
    pub(super) fn apply(&self, inputs: &[&[u8]], outputs: &mut [&mut [u8]]) {
        assert_eq!((inputs.len(), outputs.len()), (self.k, self.rows), "one buffer per table");
        let ran = match self.engine {
            Engine::Avx2 => simd::nibble_avx2(&self.nibble, self.rows, inputs, outputs),
            Engine::GfniAvx512 => {
                simd::affine_avx512(&self.affine, &self.coefs, self.rows, inputs, outputs)
            }
            Engine::ReedSolomonErasure => false,
        };
        assert!(ran, "engine {:?} is not available on this CPU", self.engine);
    }
}

/// Whether `engine`'s kernel computes the same products as the field's scalar multiply, over
/// every coefficient and byte value, at lengths around the vector widths.
fn self_check(engine: Engine) -> bool {
    use reed_solomon_erasure::galois_8;
    let k = 16;
    let matrix: Vec<Vec<u8>> =
        (0..16).map(|r| (0..k).map(|c| (r * 16 + c) as u8).collect()).collect();
    let tables = Tables::new(engine, k, &matrix);
    [1, 31, 32, 33, 63, 64, 65, 256, 300].into_iter().all(|len| {
        let inputs: Vec<Vec<u8>> =
            (0..k).map(|c| (0..len).map(|i| (i * 7 + c * 29 + (i >> 8)) as u8).collect()).collect();
        let ins: Vec<&[u8]> = inputs.iter().map(Vec::as_slice).collect();
        let mut outputs = vec![vec![0; len]; matrix.len()];
        let mut outs: Vec<&mut [u8]> = outputs.iter_mut().map(Vec::as_mut_slice).collect();
        tables.apply(&ins, &mut outs);
        outputs.iter().zip(&matrix).all(|(out, row)| {
            out.iter().enumerate().all(|(i, &b)| {
                b == (0..k).fold(0, |acc, c| acc ^ galois_8::mul(row[c], inputs[c][i]))
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reed_solomon_erasure::galois_8;

    #[test]
    fn the_log_tables_multiply_and_invert_as_reed_solomon_erasures_field() {
        for a in 0..=255u8 {
            for b in 0..=255u8 {
                assert_eq!(mul(a, b), galois_8::mul(a, b), "{a} * {b}");
            }
            if a != 0 {
                assert_eq!(mul(a, inverse(a)), 1, "1 / {a}");
            }
        }
    }

    /// `gf2p8affineqb` of one byte, as the instruction set reference defines it.
    fn affine_model(matrix: u64, x: u8) -> u8 {
        (0..8).fold(0, |out, i| {
            let row = (matrix >> (8 * (7 - i))) as u8;
            out | (((row & x).count_ones() & 1) as u8) << i
        })
    }

    #[test]
    fn affine_matrices_multiply_by_their_coefficient() {
        for g in 0..=255u8 {
            let matrix = affine_matrix(g);
            for x in 0..=255u8 {
                assert_eq!(affine_model(matrix, x), galois_8::mul(g, x), "{g} * {x}");
            }
        }
    }

    #[test]
    fn nibble_tables_multiply_by_their_coefficient() {
        for g in 0..=255u8 {
            let t = nibble_table(g);
            for x in 0..=255u8 {
                let got = t.lo[usize::from(x & 15)] ^ t.hi[16 + usize::from(x >> 4)];
                assert_eq!(got, galois_8::mul(g, x), "{g} * {x}");
            }
        }
    }

    #[test]
    fn every_available_kernel_passes_its_self_check() {
        for e in [Engine::Avx2, Engine::GfniAvx512].into_iter().filter(|e| e.is_available()) {
            assert!(self_check(e), "{e:?}");
        }
        assert!(Engine::best().is_available());
    }
}
