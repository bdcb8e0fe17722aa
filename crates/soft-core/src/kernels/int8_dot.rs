//! Few-row products with a GGUF's quantized blocks in 8-bit integer dot products, llama.cpp's
//! way: each input row is quantized per block of 32 values to signed bytes with one f32 scale
//! (the largest magnitude maps to 127, rounded to nearest, ties to even), and each block's 32
//! products are summed exactly in 32-bit integers by AVX512_VNNI's `vpdpbusd` (64 byte products
//! an instruction, against 16 for an f32 FMA); the blocks' sums are scaled and added in f32.
//! The price is the input's precision (about 8 bits per block instead of 24), so the results
//! are not those of the f32 path over the same blocks ([`super::blocks`]): `--weights-dtype
//! int8-dot` chooses it, `stored` keeps the f32 products.
//!
//! The weights are repacked once, into panels of 16 outputs (one 16-lane vector of sums, so a
//! product needs no sums across lanes): per panel and block, the quants of the 16 outputs four
//! consecutive inputs to a 32-bit lane (the order `vpdpbusd` reads; for Q4 two such vectors in
//! the low and high nibbles of 64 bytes), then the 16 f16 scales, and for Q4_1 the 16 f16
//! minimums. The bytes per block are those of the file. `vpdpbusd` multiplies unsigned bytes
//! by signed ones, so the weights are the unsigned side: Q4's nibbles as they are, Q8_0's bytes
//! plus 128, with the offsets (Q4_0's 8, Q8_0's 128) taken out through the input block's sum.
//!
//! Per output `j`, input row `r`, block `b`, with weight quants `u`, input quants `q`, input
//! scale `s` and `Σq` the input block's sum: `acc += (Σ u·q) · (d_j·s)`, then
//! `acc += m'_j · (s·k·Σq)` where `(m', k)` is `(m, 1)` for Q4_1, `(d, -8)` for Q4_0 and
//! `(d, -128)` for Q8_0 — each a fused multiply-add, blocks in order. The portable loop does
//! exactly these operations, so it equals the AVX-512 copy bit for bit.

// The vector copy is x86-64's; elsewhere the portable loop runs.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use std::sync::Arc;

use super::blocks::{BlockMatrix, BlockType, BLOCK};

/// Outputs per panel: one 16-lane vector of f32 sums.
const LANES: usize = 16;
/// Groups of four consecutive inputs (one 32-bit lane of bytes) per block.
const QUADS: usize = BLOCK / 4;
/// Input rows whose sums stay in registers together.
const GROUP: usize = 4;

/// True when the CPU has `vpdpbusd` on 512-bit vectors (and the AVX-512 the kernel uses).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// A [`BlockMatrix`] repacked into panels of 16 outputs for integer products. Cloning shares
/// the bytes.
#[derive(Clone)]
pub struct Int8Panels {
    ty: BlockType,
    d_out: usize,
    d_in: usize,
    bytes: Arc<[u8]>,
}

impl std::fmt::Debug for Int8Panels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Int8Panels({} [{}, {}])", self.ty.name(), self.d_out, self.d_in)
    }
}

/// Bytes of one panel's quants for one block.
const fn quant_bytes(ty: BlockType) -> usize {
    match ty {
        BlockType::Q4_0 | BlockType::Q4_1 => LANES * BLOCK / 2,
        BlockType::Q8_0 => LANES * BLOCK,
    }
}

/// Bytes of one panel's record for one block: quants, scales, Q4_1's minimums.
const fn record_bytes(ty: BlockType) -> usize {
    let scales = 2 * LANES;
    match ty {
        BlockType::Q4_1 => quant_bytes(ty) + 2 * scales,
        _ => quant_bytes(ty) + scales,
    }
}

/// `(u, d, m)` of one block: the 32 unsigned quants `vpdpbusd` multiplies, the f16 scale's bits
/// and the f16 bits of `m'` (the minimum for Q4_1, else the scale; see the module's formula).
fn unsigned_quants(ty: BlockType, b: &[u8]) -> ([u8; BLOCK], [u8; 2], [u8; 2]) {
    let mut u = [0u8; BLOCK];
    let d = [b[0], b[1]];
    match ty {
        BlockType::Q4_0 | BlockType::Q4_1 => {
            let (m, qs) = if ty == BlockType::Q4_1 { ([b[2], b[3]], &b[4..20]) } else { (d, &b[2..18]) };
            for i in 0..BLOCK / 2 {
                u[i] = qs[i] & 0x0F;
                u[i + BLOCK / 2] = qs[i] >> 4;
            }
            (u, d, m)
        }
        BlockType::Q8_0 => {
            for (u, &q) in u.iter_mut().zip(&b[2..2 + BLOCK]) {
                *u = (q as i8 as i16 + 128) as u8;
            }
            (u, d, d)
        }
    }
}

/// `k` of the module's formula: the offset of the unsigned quants, as a factor of `Σq`.
fn offset(ty: BlockType) -> i32 {
    match ty {
        BlockType::Q4_0 => -8,
        BlockType::Q4_1 => 1,
        BlockType::Q8_0 => -128,
    }
}

impl Int8Panels {
    /// `w` repacked (outputs past the last whole panel padded with zeros).
    pub fn pack(w: &BlockMatrix) -> Self {
        let (ty, (d_out, d_in)) = (w.block_type(), w.dims());
        let (blocks, record, quants) = (d_in / BLOCK, record_bytes(ty), quant_bytes(ty));
        let panels = d_out.div_ceil(LANES);
        let mut bytes = vec![0u8; panels * blocks * record];
        for (j, b) in (0..d_out).flat_map(|j| (0..blocks).map(move |b| (j, b))) {
            let (u, d, m) = unsigned_quants(ty, w.block(j, b));
            let rec = &mut bytes[((j / LANES) * blocks + b) * record..][..record];
            let lane = j % LANES;
            for (i, &q) in u.iter().enumerate() {
                let (quad, p) = (i / 4, i % 4);
                match ty {
                    // Quads 0-3 in the low nibbles of four 64-byte vectors, 4-7 in the high ones.
                    BlockType::Q4_0 | BlockType::Q4_1 => {
                        rec[(quad % 4) * 64 + lane * 4 + p] |= q << (4 * (quad / 4));
                    }
                    BlockType::Q8_0 => rec[quad * 64 + lane * 4 + p] = q,
                }
            }
            rec[quants + 2 * lane..][..2].copy_from_slice(&d);
            if ty == BlockType::Q4_1 {
                rec[quants + 2 * LANES + 2 * lane..][..2].copy_from_slice(&m);
            }
        }
        Self { ty, d_out, d_in, bytes: bytes.into() }
    }

    /// `x` `[m, d_in]` times the weights transposed: `[m, d_out]`, with `x` quantized per block
    /// (see the module); outputs spread over the cores natively.
    pub fn product(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.d_in, "int8 product: x is not [{m}, {}]", self.d_in);
        let input = Quantized::new(x, m, self.d_in, offset(self.ty));
        let vector = cfg!(target_arch = "x86_64") && available();
        super::blocks::split_outputs(self.d_out, m, LANES, &|j0, j1| {
            let mut out = vec![0f32; m * (j1 - j0)];
            let part = Part { panels: self, input: &input, j0, j1 };
            #[cfg(target_arch = "x86_64")]
            if vector {
                // SAFETY: `available()` checked the CPU features the copy is compiled for; the
                // part's panels and rows lie within the buffers (checked above and by `Part`).
                unsafe { avx512::product(part, &mut out) };
                return out;
            }
            let _ = vector;
            portable(part, &mut out);
            out
        })
    }
}

/// Input rows quantized per block: `q` `[m, d_in]` signed bytes, and per row and block the
/// scale `s` and `s·k·Σq`.
struct Quantized {
    q: Vec<i8>,
    scale: Vec<f32>,
    offset: Vec<f32>,
}

impl Quantized {
    fn new(x: &[f32], m: usize, d_in: usize, k: i32) -> Self {
        let n = m * d_in / BLOCK;
        let mut this = Self { q: vec![0; m * d_in], scale: Vec::with_capacity(n), offset: Vec::with_capacity(n) };
        #[cfg(target_arch = "x86_64")]
        let vector = available();
        for (block, q) in x.chunks_exact(BLOCK).zip(this.q.chunks_exact_mut(BLOCK)) {
            let block: &[f32; BLOCK] = block.try_into().expect("a whole block");
            let q: &mut [i8; BLOCK] = q.try_into().expect("a whole block");
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `available()` checked the CPU features the copy is compiled for.
            let (amax, sum) = if vector { unsafe { avx512::quantize(block, q) } } else { quantize(block, q) };
            #[cfg(not(target_arch = "x86_64"))]
            let (amax, sum) = quantize(block, q);
            let s = amax / 127.0;
            this.scale.push(s);
            this.offset.push(s * (k * sum) as f32);
        }
        this
    }
}

/// `q` = `block` over its largest magnitude, times 127, rounded to nearest, ties to even;
/// returns that magnitude and the sum of `q`. For finite values (`as` saturates, NaN gives 0).
fn quantize(block: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
    let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
    let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, v) in q.iter_mut().zip(block) {
        *q = (v * inv).round_ties_even() as i8;
        sum += i32::from(*q);
    }
    (amax, sum)
}

/// Outputs `j0..j1` (`j0` a panel's first) of a product.
#[derive(Clone, Copy)]
struct Part<'a> {
    panels: &'a Int8Panels,
    input: &'a Quantized,
    j0: usize,
    j1: usize,
}

impl Part<'_> {
    fn rows(&self) -> usize {
        self.input.q.len() / self.panels.d_in
    }

    /// Panel `p`'s record for block `b`.
    fn record(&self, p: usize, b: usize) -> &[u8] {
        let (ty, blocks) = (self.panels.ty, self.panels.d_in / BLOCK);
        let record = record_bytes(ty);
        &self.panels.bytes[(p * blocks + b) * record..][..record]
    }

    /// Writes panel `p`'s sums for row `r` into `out` `[m, j1 - j0]` (a last panel may hold
    /// fewer outputs).
    fn store(&self, p: usize, r: usize, sums: &[f32; LANES], out: &mut [f32]) {
        let n = self.j1 - self.j0;
        let first = p * LANES - self.j0;
        let take = LANES.min(n - first);
        out[r * n + first..][..take].copy_from_slice(&sums[..take]);
    }
}

/// The products of a part, lane by lane, in the order of operations of the vector copy.
fn portable(part: Part, out: &mut [f32]) {
    let (ty, d_in) = (part.panels.ty, part.panels.d_in);
    let (blocks, quants) = (d_in / BLOCK, quant_bytes(ty));
    let f16 = |bytes: &[u8], lane: usize| half::f16::from_le_bytes([bytes[2 * lane], bytes[2 * lane + 1]]).to_f32();
    for p in part.j0 / LANES..part.j1.div_ceil(LANES) {
        for r in 0..part.rows() {
            let mut acc = [0f32; LANES];
            for b in 0..blocks {
                let rec = part.record(p, b);
                let q = &part.input.q[r * d_in + b * BLOCK..][..BLOCK];
                let (scale, offset) = (part.input.scale[r * blocks + b], part.input.offset[r * blocks + b]);
                for (lane, acc) in acc.iter_mut().enumerate() {
                    let mut sum = 0i32;
                    for (i, &q) in q.iter().enumerate() {
                        let (quad, k) = (i / 4, lane * 4 + i % 4);
                        let u = match ty {
                            BlockType::Q4_0 | BlockType::Q4_1 => (rec[(quad % 4) * 64 + k] >> (4 * (quad / 4))) & 0x0F,
                            BlockType::Q8_0 => rec[quad * 64 + k],
                        };
                        sum += i32::from(u) * i32::from(q);
                    }
                    let d = f16(&rec[quants..], lane);
                    let m = if ty == BlockType::Q4_1 { f16(&rec[quants + 2 * LANES..], lane) } else { d };
                    *acc = (sum as f32).mul_add(d * scale, *acc);
                    *acc = m.mul_add(offset, *acc);
                }
            }
            part.store(p, r, &acc, out);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::*;

    /// [`super::quantize`] in two vectors (MXCSR's default rounding is to nearest, ties to even).
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn quantize(block: &[f32; BLOCK], q: &mut [i8; BLOCK]) -> (f32, i32) {
        let (a, b) = (_mm512_loadu_ps(block.as_ptr()), _mm512_loadu_ps(block.as_ptr().add(16)));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
        let inv = _mm512_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
        let (qa, qb) = (_mm512_cvtps_epi32(_mm512_mul_ps(a, inv)), _mm512_cvtps_epi32(_mm512_mul_ps(b, inv)));
        _mm_storeu_si128(q.as_mut_ptr().cast(), _mm512_cvtsepi32_epi8(qa));
        _mm_storeu_si128(q.as_mut_ptr().add(16).cast(), _mm512_cvtsepi32_epi8(qb));
        (amax, _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb)))
    }

    /// The products of a part, [`GROUP`] input rows at a time.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn product(part: Part, out: &mut [f32]) {
        let m = part.rows();
        for p in part.j0 / LANES..part.j1.div_ceil(LANES) {
            let mut r0 = 0;
            while r0 < m {
                let g = GROUP.min(m - r0);
                match (part.panels.ty, g) {
                    (BlockType::Q8_0, 4) => group::<4, false, false>(part, p, r0, out),
                    (BlockType::Q8_0, 3) => group::<3, false, false>(part, p, r0, out),
                    (BlockType::Q8_0, 2) => group::<2, false, false>(part, p, r0, out),
                    (BlockType::Q8_0, _) => group::<1, false, false>(part, p, r0, out),
                    (BlockType::Q4_0, 4) => group::<4, true, false>(part, p, r0, out),
                    (BlockType::Q4_0, 3) => group::<3, true, false>(part, p, r0, out),
                    (BlockType::Q4_0, 2) => group::<2, true, false>(part, p, r0, out),
                    (BlockType::Q4_0, _) => group::<1, true, false>(part, p, r0, out),
                    (BlockType::Q4_1, 4) => group::<4, true, true>(part, p, r0, out),
                    (BlockType::Q4_1, 3) => group::<3, true, true>(part, p, r0, out),
                    (BlockType::Q4_1, 2) => group::<2, true, true>(part, p, r0, out),
                    (BlockType::Q4_1, _) => group::<1, true, true>(part, p, r0, out),
                }
                r0 += g;
            }
        }
    }

    /// Panel `p` for rows `r0..r0 + G`: 16 sums per row in registers across the blocks.
    /// `NIBBLES`: Q4 quants (else Q8_0's bytes); `MIN`: Q4_1's minimums follow the scales.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn group<const G: usize, const NIBBLES: bool, const MIN: bool>(
        part: Part,
        p: usize,
        r0: usize,
        out: &mut [f32],
    ) {
        let d_in = part.panels.d_in;
        let blocks = d_in / BLOCK;
        let quants = quant_bytes(part.panels.ty);
        let input = part.input;
        let low = _mm512_set1_epi8(0x0F);
        let mut acc = [_mm512_setzero_ps(); G];
        let records = part.record(p, 0).as_ptr();
        for b in 0..blocks {
            let rec = records.add(b * record_bytes(part.panels.ty));
            let mut w = [_mm512_setzero_si512(); QUADS];
            if NIBBLES {
                for c in 0..4 {
                    let v = _mm512_loadu_si512(rec.add(64 * c).cast());
                    w[c] = _mm512_and_si512(v, low);
                    w[c + 4] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), low);
                }
            } else {
                for (t, w) in w.iter_mut().enumerate() {
                    *w = _mm512_loadu_si512(rec.add(64 * t).cast());
                }
            }
            let d = _mm512_cvtph_ps(_mm256_loadu_si256(rec.add(quants).cast()));
            let m = if MIN { _mm512_cvtph_ps(_mm256_loadu_si256(rec.add(quants + 2 * LANES).cast())) } else { d };
            for (r, acc) in acc.iter_mut().enumerate() {
                let row = r0 + r;
                let q = input.q.as_ptr().add(row * d_in + b * BLOCK).cast::<i32>();
                // Two chains of four: `vpdpbusd` adds into its destination, so one chain of
                // eight would wait on each instruction's latency.
                let (mut even, mut odd) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                for t in (0..QUADS).step_by(2) {
                    even = _mm512_dpbusd_epi32(even, w[t], _mm512_set1_epi32(q.add(t).read_unaligned()));
                    odd = _mm512_dpbusd_epi32(odd, w[t + 1], _mm512_set1_epi32(q.add(t + 1).read_unaligned()));
                }
                let sum = _mm512_add_epi32(even, odd);
                let i = row * blocks + b;
                let scale = _mm512_mul_ps(d, _mm512_set1_ps(*input.scale.get_unchecked(i)));
                *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), scale, *acc);
                *acc = _mm512_fmadd_ps(m, _mm512_set1_ps(*input.offset.get_unchecked(i)), *acc);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let mut sums = [0f32; LANES];
            _mm512_storeu_ps(sums.as_mut_ptr(), *acc);
            part.store(p, r0 + r, &sums, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::blocks::random_blocks_scaled;

    fn matrix(ty: BlockType, d_out: usize, d_in: usize, seed: u64) -> BlockMatrix {
        let bytes = random_blocks_scaled(ty, d_out * d_in / BLOCK, seed, 0.05);
        BlockMatrix::new(ty, d_out, d_in, bytes).expect("sizes agree")
    }

    fn input(m: usize, d_in: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        (0..m * d_in)
            .map(|i| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                // Some blocks all zeros (a zero scale), the rest in [-2, 2).
                if (i / BLOCK) % 7 == 3 { 0.0 } else { ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0 }
            })
            .collect()
    }

    /// Each output lies within the error the input's quantization allows of the f64 product
    /// over the dequantized weights: per block at most half a step of the input's scale times
    /// the block's weights' magnitudes (plus f32 rounding).
    #[test]
    fn products_lie_within_the_input_quantization_error_of_the_exact_product() {
        for ty in [BlockType::Q4_0, BlockType::Q4_1, BlockType::Q8_0] {
            for (m, d_out, d_in) in [(1, 16, 32), (4, 48, 96), (5, 40, 64), (9, 33, 128)] {
                let w = matrix(ty, d_out, d_in, 7 + m as u64);
                let x = input(m, d_in, 3 * m as u64);
                let got = Int8Panels::pack(&w).product(&x, m);
                let values = w.dequantize();
                for r in 0..m {
                    for j in 0..d_out {
                        let (mut exact, mut bound, mut magnitude) = (0f64, 0f64, 0f64);
                        for b in 0..d_in / BLOCK {
                            let xs = &x[r * d_in + b * BLOCK..][..BLOCK];
                            let ws = &values[j * d_in + b * BLOCK..][..BLOCK];
                            let step = f64::from(xs.iter().fold(0f32, |a, v| a.max(v.abs()))) / 127.0;
                            for (w, x) in ws.iter().zip(xs) {
                                exact += f64::from(*w) * f64::from(*x);
                                bound += f64::from(w.abs()) * step / 2.0;
                                magnitude += f64::from(w.abs() * x.abs());
                            }
                        }
                        let err = (f64::from(got[r * d_out + j]) - exact).abs();
                        assert!(
                            err <= bound * 1.001 + magnitude * 1e-5 + 1e-6,
                            "{ty:?} m {m} [{d_out}, {d_in}] ({r}, {j}): {} against {exact} (bound {bound})",
                            got[r * d_out + j]
                        );
                    }
                }
            }
        }
    }

    /// The AVX-512 copy equals the portable loop bit for bit (integer sums are exact and both
    /// scale and add them in the same order).
    #[test]
    fn the_vector_copy_equals_the_portable_loop_to_the_bit() {
        if !available() {
            eprintln!("skipped: the CPU has no AVX512_VNNI");
            return;
        }
        for ty in [BlockType::Q4_0, BlockType::Q4_1, BlockType::Q8_0] {
            for (m, d_out, d_in) in [(1, 16, 32), (4, 64, 96), (7, 40, 64), (3, 200, 576)] {
                let panels = Int8Panels::pack(&matrix(ty, d_out, d_in, 11));
                let x = input(m, d_in, 5);
                let input = Quantized::new(&x, m, d_in, offset(ty));
                for (block, q) in x.chunks_exact(BLOCK).zip(input.q.chunks_exact(BLOCK)) {
                    let mut portable_q = [0i8; BLOCK];
                    let (amax, _) = quantize(block.try_into().unwrap(), &mut portable_q);
                    assert_eq!(q, portable_q, "{ty:?}: quantization of a block with largest magnitude {amax}");
                }
                let part = Part { panels: &panels, input: &input, j0: 0, j1: d_out };
                let mut portable_out = vec![0f32; m * d_out];
                portable(part, &mut portable_out);
                assert_eq!(panels.product(&x, m), portable_out, "{ty:?} m {m} [{d_out}, {d_in}]");
            }
        }
    }
}
