//! The codec's only unsafe code: the x86-64 vector loops of the multi-output kernel
//! ([`super::kernel`]). Each loop computes, for every byte offset, `out[r] = sum over c of
//! coef(c, r) * in[c]` in GF(2^8)/0x11d for up to [`MAX_GROUP`] outputs at once, loading each
//! input once per vector. Two loops: AVX2 split-nibble `vpshufb` lookups, and GFNI
//! `gf2p8affineqb` on 512-bit vectors (AVX-512BW). The safe wrappers check the CPU features and
//! every length before entering unsafe code; the `unsafe fn`s only read and write inside the
//! slices the wrappers were given.

use std::arch::x86_64::*;

use rackpoint_proto::limits::MAX_TOTAL_SHARDS;

/// The most outputs one pass accumulates in registers (16 ymm / 32 zmm registers).
pub(super) const MAX_GROUP: usize = 8;

/// The split-nibble tables of one coefficient `g`: `lo[x] = g * x` and `hi[x] = g * (x << 4)`
/// for `x` in `0..16`, each repeated in both 128-bit lanes (`vpshufb` looks up per lane).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub(super) struct NibbleTable {
    pub(super) lo: [u8; 32],
    pub(super) hi: [u8; 32],
}

/// `outputs[r] = sum over c of table(c, r) * inputs[c]` with the AVX2 loop, where table
/// `(c, r)` is `tables[c * stride + r]`. Returns false (and writes nothing) without AVX2.
///
/// Panics if the slices disagree: `outputs.len() > stride`, fewer than `inputs.len() * stride`
/// tables, or buffers of different lengths.
pub(super) fn nibble_avx2(
    tables: &[NibbleTable],
    stride: usize,
    inputs: &[&[u8]],
    outputs: &mut [&mut [u8]],
) -> bool {
    if !is_x86_feature_detected!("avx2") {
        return false;
    }
    let len = check_shapes(tables.len(), stride, inputs, outputs);
    let mut in_ptrs = [std::ptr::null(); MAX_TOTAL_SHARDS];
    for (p, b) in in_ptrs.iter_mut().zip(inputs) {
        *p = b.as_ptr();
    }
    let ins = &in_ptrs[..inputs.len()];
    for (g, group) in outputs.chunks_mut(MAX_GROUP).enumerate() {
        let mut out_ptrs = [std::ptr::null_mut(); MAX_GROUP];
        for (p, b) in out_ptrs.iter_mut().zip(group.iter_mut()) {
            *p = b.as_mut_ptr();
        }
        let outs = &out_ptrs[..group.len()];
        let tables = &tables[g * MAX_GROUP..];
        // Two vectors a step for up to 4 outputs (2 * 4 accumulators fit the 16 registers).
        let wide = len >= 64;
        // SAFETY: AVX2 was detected above; two vectors a step only when `len >= 64`, one
        // otherwise (the loop's `len < 32 || len >= 32 * U`). `check_shapes` proved every input
        // and output holds `len` bytes and that table `c * stride + r` exists for every input
        // `c` and output `r < stride` (`tables` is re-based by `g * MAX_GROUP`, the group's
        // first output, and `g * MAX_GROUP + outs.len() <= outputs.len() <= stride`). Outputs
        // are distinct `&mut` borrows, so they alias neither each other nor the inputs.
        unsafe {
            match outs.len() {
                1 if wide => nibble_avx2_n::<1, 2>(tables, stride, ins, outs, len),
                2 if wide => nibble_avx2_n::<2, 2>(tables, stride, ins, outs, len),
                3 if wide => nibble_avx2_n::<3, 2>(tables, stride, ins, outs, len),
                4 if wide => nibble_avx2_n::<4, 2>(tables, stride, ins, outs, len),
                1 => nibble_avx2_n::<1, 1>(tables, stride, ins, outs, len),
                2 => nibble_avx2_n::<2, 1>(tables, stride, ins, outs, len),
                3 => nibble_avx2_n::<3, 1>(tables, stride, ins, outs, len),
                4 => nibble_avx2_n::<4, 1>(tables, stride, ins, outs, len),
                5 => nibble_avx2_n::<5, 1>(tables, stride, ins, outs, len),
                6 => nibble_avx2_n::<6, 1>(tables, stride, ins, outs, len),
                7 => nibble_avx2_n::<7, 1>(tables, stride, ins, outs, len),
                _ => nibble_avx2_n::<8, 1>(tables, stride, ins, outs, len),
            }
        }
    }
    true
}

/// `outputs[r] = sum over c of matrix(c, r) * inputs[c]` with the GFNI/AVX-512 loop, where
/// `matrices[c * stride + r]` is the `gf2p8affineqb` bit matrix of multiplying by coefficient
/// `(c, r)` and `coefs[c * stride + r]` the coefficient itself (for the bytes past the last
/// whole vector of a buffer shorter than one vector). Returns false (and writes nothing)
/// without AVX-512F, AVX-512BW and GFNI.
///
/// Panics if the slices disagree (as [`nibble_avx2`]).
pub(super) fn affine_avx512(
    matrices: &[u64],
    coefs: &[u8],
    stride: usize,
    inputs: &[&[u8]],
    outputs: &mut [&mut [u8]],
) -> bool {
    if !gfni_avx512_detected() {
        return false;
    }
    assert_eq!(matrices.len(), coefs.len(), "one matrix per coefficient");
    let len = check_shapes(matrices.len(), stride, inputs, outputs);
    if len < 64 {
        // Shorter than one vector: the scalar product, from the same coefficients.
        for (r, out) in outputs.iter_mut().enumerate() {
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = inputs.iter().enumerate().fold(0, |acc, (c, input)| {
                    acc ^ reed_solomon_erasure::galois_8::mul(coefs[c * stride + r], input[i])
                });
            }
        }
        return true;
    }
    let mut in_ptrs = [std::ptr::null(); MAX_TOTAL_SHARDS];
    for (p, b) in in_ptrs.iter_mut().zip(inputs) {
        *p = b.as_ptr();
    }
    let ins = &in_ptrs[..inputs.len()];
    for (g, group) in outputs.chunks_mut(MAX_GROUP).enumerate() {
        let mut out_ptrs = [std::ptr::null_mut(); MAX_GROUP];
        for (p, b) in out_ptrs.iter_mut().zip(group.iter_mut()) {
            *p = b.as_mut_ptr();
        }
        let outs = &out_ptrs[..group.len()];
        let matrices = &matrices[g * MAX_GROUP..];
        // SAFETY: AVX-512F, AVX-512BW and GFNI were detected above; `len >= 64`. The shapes are
        // as in `nibble_avx2` (checked by `check_shapes`, `matrices` re-based by the group's
        // first output).
        unsafe {
            match outs.len() {
                1 => affine_avx512_n::<1>(matrices, stride, ins, outs, len),
                2 => affine_avx512_n::<2>(matrices, stride, ins, outs, len),
                3 => affine_avx512_n::<3>(matrices, stride, ins, outs, len),
                4 => affine_avx512_n::<4>(matrices, stride, ins, outs, len),
                5 => affine_avx512_n::<5>(matrices, stride, ins, outs, len),
                6 => affine_avx512_n::<6>(matrices, stride, ins, outs, len),
                7 => affine_avx512_n::<7>(matrices, stride, ins, outs, len),
                _ => affine_avx512_n::<8>(matrices, stride, ins, outs, len),
            }
        }
    }
    true
}

/// Whether the CPU (and OS) run the GFNI/AVX-512 loop.
pub(super) fn gfni_avx512_detected() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("gfni")
}

/// Whether the CPU (and OS) run the AVX2 loop.
pub(super) fn avx2_detected() -> bool {
    is_x86_feature_detected!("avx2")
}

/// Checks that the buffers and tables agree; returns the common buffer length.
fn check_shapes(tables: usize, stride: usize, inputs: &[&[u8]], outputs: &[&mut [u8]]) -> usize {
    assert!(outputs.len() <= stride, "{} outputs for a table stride of {stride}", outputs.len());
    assert!(inputs.len() <= MAX_TOTAL_SHARDS, "{} inputs", inputs.len());
    assert!(
        inputs.len().checked_mul(stride).is_some_and(|need| tables >= need),
        "{tables} tables for {} inputs of stride {stride}",
        inputs.len()
    );
    let len = inputs.first().map_or(0, |b| b.len());
    assert!(
        inputs.iter().all(|b| b.len() == len) && outputs.iter().all(|b| b.len() == len),
        "every input and output buffer has the same length"
    );
    len
}

/// The AVX2 loop for `N` outputs: `U` 32-byte vectors at a time, each input loaded once and
/// split into nibbles, each output's lookups accumulated in registers (two vectors a step
/// halve the table loads when the accumulators leave registers for it). The last partial step
/// is recomputed over the final `32 * U` bytes (the outputs depend only on the inputs at the
/// same offsets, so the overlap rewrites identical bytes); buffers shorter than one vector
/// take the scalar lookups.
///
/// # Safety
///
/// The CPU has AVX2; `len < 32` or `len >= 32 * U`; every `ins[c]` and `outs[r]` points to
/// `len` valid bytes, outputs writable and aliasing nothing else read or written here;
/// `tables[c * stride + r]` exists for every `c < ins.len()` and `r < N`.
#[target_feature(enable = "avx2")]
unsafe fn nibble_avx2_n<const N: usize, const U: usize>(
    tables: &[NibbleTable],
    stride: usize,
    ins: &[*const u8],
    outs: &[*mut u8],
    len: usize,
) {
    if len < 32 {
        for (r, &out) in outs.iter().enumerate().take(N) {
            for i in 0..len {
                let mut acc = 0;
                for (c, &input) in ins.iter().enumerate() {
                    let t = tables.get_unchecked(c * stride + r);
                    let x = *input.add(i);
                    acc ^= t.lo[usize::from(x & 15)] ^ t.hi[usize::from(x >> 4)];
                }
                *out.add(i) = acc;
            }
        }
        return;
    }
    let step = 32 * U;
    let mask = _mm256_set1_epi8(0x0f);
    let mut at = 0;
    loop {
        let mut acc = [[_mm256_setzero_si256(); U]; N];
        for (c, &input) in ins.iter().enumerate() {
            let mut lo = [mask; U];
            let mut hi = [mask; U];
            for u in 0..U {
                let x = _mm256_loadu_si256(input.add(at + 32 * u).cast());
                lo[u] = _mm256_and_si256(x, mask);
                hi[u] = _mm256_and_si256(_mm256_srli_epi64::<4>(x), mask);
            }
            let row = tables.as_ptr().add(c * stride);
            for (r, a) in acc.iter_mut().enumerate() {
                let t = &*row.add(r);
                let tlo = _mm256_load_si256(t.lo.as_ptr().cast());
                let thi = _mm256_load_si256(t.hi.as_ptr().cast());
                for u in 0..U {
                    let prod = _mm256_xor_si256(
                        _mm256_shuffle_epi8(tlo, lo[u]),
                        _mm256_shuffle_epi8(thi, hi[u]),
                    );
                    a[u] = _mm256_xor_si256(a[u], prod);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            for (u, v) in a.iter().enumerate() {
                _mm256_storeu_si256(outs.get_unchecked(r).add(at + 32 * u).cast(), *v);
            }
        }
        if at + step == len {
            return;
        }
        at = (at + step).min(len - step);
    }
}

/// The GFNI/AVX-512 loop for `N` outputs: 64 bytes at a time, one `gf2p8affineqb` per input
/// and output, the last partial vector recomputed over the final 64 bytes (as in
/// [`nibble_avx2_n`]).
///
/// # Safety
///
/// The CPU has AVX-512F, AVX-512BW and GFNI; `len >= 64`; otherwise as [`nibble_avx2_n`] with
/// `matrices` for `tables`.
#[target_feature(enable = "avx512f,avx512bw,gfni")]
unsafe fn affine_avx512_n<const N: usize>(
    matrices: &[u64],
    stride: usize,
    ins: &[*const u8],
    outs: &[*mut u8],
    len: usize,
) {
    let mut at = 0;
    loop {
        let mut acc = [_mm512_setzero_si512(); N];
        for (c, &input) in ins.iter().enumerate() {
            let x = _mm512_loadu_si512(input.add(at).cast());
            let row = matrices.as_ptr().add(c * stride);
            for (r, a) in acc.iter_mut().enumerate() {
                let matrix = _mm512_set1_epi64(*row.add(r) as i64);
                *a = _mm512_xor_si512(*a, _mm512_gf2p8affine_epi64_epi8::<0>(x, matrix));
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm512_storeu_si512(outs.get_unchecked(r).add(at).cast(), *a);
        }
        if at + 64 == len {
            return;
        }
        at = (at + 64).min(len - 64);
    }
}
