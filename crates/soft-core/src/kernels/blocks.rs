//! Weights kept in the quantized blocks a GGUF file stores them in (Q4_0, Q4_1, Q8_0: 32 values
//! with an f16 scale, and for Q4_1 an f16 minimum), and the product of a few rows with them.
//! SmolLM2's file holds its projections in Q4_1 (0.625 bytes a value) and its embedding in Q8_0
//! (1.0625): a decoding step that reads them as they lie reads ~6x fewer bytes than from the
//! f32 copy the model otherwise holds. Each block is dequantized in registers with exactly the
//! arithmetic of [`block_values`], the definition the GGUF reader dequantizes with too (the same
//! f32 values), then multiplied in f32 with f32 sums: the product equals the f32 path's up to
//! the order of the sums.
//!
//! The matrix lies as the file has it, `[d_out, d_in]`, each output's weights a row of
//! `d_in / 32` blocks: a product reads each row once per group of input rows.

use std::sync::Arc;

use super::few_rows::Weight;

/// Values in one block.
pub const BLOCK: usize = 32;

/// Rows up to which a product reads the blocks as they lie; past it an f32 copy of the weight
/// and `gemm` win (a 180-token prompt). Measured on SmolLM2's shapes by `benches/block_rows.rs`
/// (Zen 5, 2 threads: at 64 rows 53 ms against 79 ms for the copy, at 180 rows 166 against 131).
pub const FEW_ROWS: usize = 64;

/// A quantized block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockType {
    /// f16 scale d, 16 bytes of nibbles q: `d * (q - 8)`.
    Q4_0,
    /// f16 scale d and minimum m, 16 bytes of nibbles q: `d * q + m`.
    Q4_1,
    /// f16 scale d, 32 signed bytes q: `d * q`.
    Q8_0,
}

impl BlockType {
    /// Bytes of one block.
    pub const fn bytes(self) -> usize {
        match self {
            BlockType::Q4_0 => 2 + BLOCK / 2,
            BlockType::Q4_1 => 4 + BLOCK / 2,
            BlockType::Q8_0 => 2 + BLOCK,
        }
    }

    /// ggml's name of the type (`q4_1`).
    pub const fn name(self) -> &'static str {
        match self {
            BlockType::Q4_0 => "q4_0",
            BlockType::Q4_1 => "q4_1",
            BlockType::Q8_0 => "q8_0",
        }
    }
}

/// A matrix `[d_out, d_in]` of quantized blocks, row by row (`d_in` a multiple of [`BLOCK`]).
/// Cloning shares the bytes.
#[derive(Clone)]
pub struct BlockMatrix {
    ty: BlockType,
    d_out: usize,
    d_in: usize,
    bytes: Arc<[u8]>,
}

impl std::fmt::Debug for BlockMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockMatrix({} [{}, {}])", self.ty.name(), self.d_out, self.d_in)
    }
}

impl BlockMatrix {
    /// `bytes`, `d_out` rows of `d_in / 32` blocks of `ty`; `None` when the sizes do not agree.
    pub fn new(ty: BlockType, d_out: usize, d_in: usize, bytes: Vec<u8>) -> Option<Self> {
        (d_in.is_multiple_of(BLOCK) && bytes.len() == d_out * d_in / BLOCK * ty.bytes())
            .then(|| Self { ty, d_out, d_in, bytes: bytes.into() })
    }

    pub fn block_type(&self) -> BlockType {
        self.ty
    }

    /// `(d_out, d_in)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.d_out, self.d_in)
    }

    /// Bytes the matrix holds.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    fn row_bytes(&self) -> usize {
        self.d_in / BLOCK * self.ty.bytes()
    }

    /// The same matrix with its rows reordered: row `i` of the result is row `order[i]` of this
    /// one (what llama.cpp's converter did to Q and K, undone).
    pub fn rows_in_order(&self, order: &[usize]) -> Self {
        assert_eq!(order.len(), self.d_out, "rows_in_order: {} rows for {}", order.len(), self.d_out);
        let rb = self.row_bytes();
        let bytes: Vec<u8> = order.iter().flat_map(|&i| &self.bytes[i * rb..(i + 1) * rb]).copied().collect();
        Self { bytes: bytes.into(), ..*self }
    }

    /// Row `i` (output `i`'s `d_in` weights) as f32 into `out`: an embedding table's lookup.
    pub fn row(&self, i: usize, out: &mut [f32]) {
        assert!(i < self.d_out && out.len() == self.d_in, "row {i} of a [{}, {}] block matrix", self.d_out, self.d_in);
        let rb = self.row_bytes();
        let row = &self.bytes[i * rb..(i + 1) * rb];
        #[cfg(target_arch = "x86_64")]
        if has_avx512() {
            // SAFETY: the CPU has the features; `row` holds `d_in / 32` whole blocks.
            unsafe {
                match self.ty {
                    BlockType::Q4_0 => avx512::row::<Q4_0>(row.as_ptr(), out),
                    BlockType::Q4_1 => avx512::row::<Q4_1>(row.as_ptr(), out),
                    BlockType::Q8_0 => avx512::row::<Q8_0>(row.as_ptr(), out),
                }
            }
            return;
        }
        for (block, values) in row.chunks_exact(self.ty.bytes()).zip(out.chunks_exact_mut(BLOCK)) {
            values.copy_from_slice(&block_values(self.ty, block));
        }
    }

    /// The matrix as an f32 tensor `[d_out, d_in]` on `device`: a copy for one product, or for
    /// writing the weights out.
    pub fn to_tensor(&self, device: &burn::tensor::Device) -> burn::tensor::Tensor<2> {
        let data = burn::tensor::TensorData::new(self.dequantize(), [self.d_out, self.d_in]);
        burn::tensor::Tensor::from_data(data, device)
    }

    /// The whole matrix as f32, `[d_out, d_in]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.d_out * self.d_in];
        #[cfg(not(target_arch = "wasm32"))]
        {
            use rayon::prelude::*;
            out.par_chunks_mut(self.d_in).enumerate().for_each(|(i, row)| self.row(i, row));
        }
        #[cfg(target_arch = "wasm32")]
        out.chunks_mut(self.d_in).enumerate().for_each(|(i, row)| self.row(i, row));
        out
    }

    /// `x` `[m, d_in]` times this matrix transposed: `[m, d_out]`, each output the dot product
    /// of an input row with an output's row of blocks; spread over the cores natively.
    pub fn product(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.d_in, "block product: x is not [{m}, {}]", self.d_in);
        split_outputs(self.d_out, m, 1, &|j0, j1| {
            let mut out = vec![0f32; m * (j1 - j0)];
            let rb = self.row_bytes();
            let rows = Rows { x, m, d_in: self.d_in, w: &self.bytes[j0 * rb..j1 * rb], n: j1 - j0 };
            match self.ty {
                BlockType::Q4_0 => dispatch::q4_0(rows, &mut out),
                BlockType::Q4_1 => dispatch::q4_1(rows, &mut out),
                BlockType::Q8_0 => dispatch::q8_0(rows, &mut out),
            }
            out
        })
    }

    /// The bytes of block `b` of output `j`'s row.
    pub(crate) fn block(&self, j: usize, b: usize) -> &[u8] {
        let bytes = self.ty.bytes();
        &self.bytes[j * self.row_bytes() + b * bytes..][..bytes]
    }
}

/// A product's `[m, d_out]` outputs computed in parts of whole multiples of `align` outputs,
/// spread over the cores natively: `part(j0, j1)` returns outputs `j0..j1` as `[m, j1 - j0]`.
pub(crate) fn split_outputs(
    d_out: usize,
    m: usize,
    align: usize,
    part: &(dyn Fn(usize, usize) -> Vec<f32> + Sync),
) -> Vec<f32> {
    let width = chunk_rows(d_out).next_multiple_of(align);
    let ranges: Vec<(usize, usize)> = (0..d_out).step_by(width).map(|c| (c, (c + width).min(d_out))).collect();
    #[cfg(not(target_arch = "wasm32"))]
    let parts: Vec<Vec<f32>> = {
        use rayon::prelude::*;
        ranges.par_iter().map(|&(j0, j1)| part(j0, j1)).collect()
    };
    #[cfg(target_arch = "wasm32")]
    let parts: Vec<Vec<f32>> = ranges.iter().map(|&(j0, j1)| part(j0, j1)).collect();
    if ranges.len() == 1 {
        return parts.into_iter().next().expect("one part");
    }
    let mut out = vec![0f32; m * d_out];
    for (&(j0, j1), part) in ranges.iter().zip(&parts) {
        for (r, row) in part.chunks_exact(j1 - j0).enumerate() {
            out[r * d_out + j0..r * d_out + j1].copy_from_slice(row);
        }
    }
    out
}

/// Output rows per part spread over the cores: a few parts per core, at least 16 rows each.
fn chunk_rows(d_out: usize) -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    let cores = rayon::current_num_threads();
    #[cfg(target_arch = "wasm32")]
    let cores = 1;
    let parts = (4 * cores).min(d_out / 16).max(1);
    d_out.div_ceil(parts)
}

/// One part of a product: `x` `[m, d_in]` against `n` output rows of blocks `w`.
#[derive(Clone, Copy)]
struct Rows<'a> {
    x: &'a [f32],
    m: usize,
    d_in: usize,
    w: &'a [u8],
    n: usize,
}

/// One block's 32 values: the definition of each type, which the GGUF reader
/// (`formats::gguf::dequant`) and every copy of the product compute alike.
pub fn block_values(ty: BlockType, block: &[u8]) -> [f32; BLOCK] {
    match ty {
        BlockType::Q4_0 => Q4_0::values(block),
        BlockType::Q4_1 => Q4_1::values(block),
        BlockType::Q8_0 => Q8_0::values(block),
    }
}

/// The CPU has what the AVX-512 copies are compiled for.
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// The CPU has what the AVX2 copies are compiled for.
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

/// A block type's values (see [`block_values`]).
trait Block {
    const BYTES: usize;
    fn values(block: &[u8]) -> [f32; BLOCK];
}

#[inline(always)]
fn scale(lo: u8, hi: u8) -> f32 {
    half::f16::from_bits(u16::from_le_bytes([lo, hi])).widen()
}

struct Q4_0;
struct Q4_1;
struct Q8_0;

impl Block for Q4_0 {
    const BYTES: usize = BlockType::Q4_0.bytes();
    #[inline(always)]
    fn values(b: &[u8]) -> [f32; BLOCK] {
        let d = scale(b[0], b[1]);
        let qs = &b[2..2 + BLOCK / 2];
        let mut v = [0f32; BLOCK];
        for i in 0..BLOCK / 2 {
            v[i] = d * (f32::from(qs[i] & 0x0F) - 8.0);
            v[i + BLOCK / 2] = d * (f32::from(qs[i] >> 4) - 8.0);
        }
        v
    }
}

impl Block for Q4_1 {
    const BYTES: usize = BlockType::Q4_1.bytes();
    #[inline(always)]
    fn values(b: &[u8]) -> [f32; BLOCK] {
        let (d, m) = (scale(b[0], b[1]), scale(b[2], b[3]));
        let qs = &b[4..4 + BLOCK / 2];
        let mut v = [0f32; BLOCK];
        for i in 0..BLOCK / 2 {
            v[i] = d * f32::from(qs[i] & 0x0F) + m;
            v[i + BLOCK / 2] = d * f32::from(qs[i] >> 4) + m;
        }
        v
    }
}

impl Block for Q8_0 {
    const BYTES: usize = BlockType::Q8_0.bytes();
    #[inline(always)]
    fn values(b: &[u8]) -> [f32; BLOCK] {
        let d = scale(b[0], b[1]);
        let qs = &b[2..2 + BLOCK];
        let mut v = [0f32; BLOCK];
        for i in 0..BLOCK {
            v[i] = d * f32::from(qs[i] as i8);
        }
        v
    }
}

/// Input rows whose partial sums stay in registers together (2 vectors of 16 lanes each).
const GROUP: usize = 4;

/// `out` `[m, n]` = `x` times the part's output rows: each block dequantized once per group of
/// input rows, 32 lanes of partial sums per input row, summed across lanes at the row's end.
#[inline(always)]
fn rows<B: Block>(p: Rows, out: &mut [f32]) {
    let Rows { x, m, d_in, w, n } = p;
    let row_bytes = d_in / BLOCK * B::BYTES;
    let mut r0 = 0;
    while r0 < m {
        let g = GROUP.min(m - r0);
        match g {
            4 => group::<B, 4>(x, r0, d_in, w, row_bytes, n, out),
            3 => group::<B, 3>(x, r0, d_in, w, row_bytes, n, out),
            2 => group::<B, 2>(x, r0, d_in, w, row_bytes, n, out),
            _ => group::<B, 1>(x, r0, d_in, w, row_bytes, n, out),
        }
        r0 += g;
    }
}

#[inline(always)]
fn group<B: Block, const G: usize>(
    x: &[f32],
    r0: usize,
    d_in: usize,
    w: &[u8],
    row_bytes: usize,
    n: usize,
    out: &mut [f32],
) {
    let xs: [&[f32]; G] = std::array::from_fn(|r| &x[(r0 + r) * d_in..(r0 + r + 1) * d_in]);
    for j in 0..n {
        let row = &w[j * row_bytes..(j + 1) * row_bytes];
        let mut acc = [[0f32; BLOCK]; G];
        for (b, block) in row.chunks_exact(B::BYTES).enumerate() {
            let v = B::values(block);
            for r in 0..G {
                let xb: &[f32; BLOCK] = xs[r][b * BLOCK..(b + 1) * BLOCK].try_into().expect("a whole block");
                for i in 0..BLOCK {
                    acc[r][i] += v[i] * xb[i];
                }
            }
        }
        for r in 0..G {
            // Halve the lanes pairwise (a tree the compiler keeps in registers).
            let a = &acc[r];
            let mut h = [0f32; 16];
            for i in 0..16 {
                h[i] = a[i] + a[i + 16];
            }
            let mut q = [0f32; 8];
            for i in 0..8 {
                q[i] = h[i] + h[i + 8];
            }
            out[(r0 + r) * n + j] = q.iter().sum();
        }
    }
}

/// The kernels for this CPU: AVX-512 or AVX2 copies with intrinsics where the CPU has them
/// (LLVM does not vectorise the nibble unpacking across a block: the portable loop runs ~10x
/// slower than memory), else the portable loop.
mod dispatch {
    use super::*;

    macro_rules! by_cpu {
        ($($name:ident => $block:ty;)*) => {$(
            pub(super) fn $name(p: Rows, out: &mut [f32]) {
                #[cfg(target_arch = "x86_64")]
                {
                    if has_avx512() {
                        // SAFETY: the CPU has the features the copy is compiled for.
                        return unsafe { avx512::rows::<$block>(p, out) };
                    }
                    if has_avx2() {
                        // SAFETY: as above.
                        return unsafe { avx2::rows::<$block>(p, out) };
                    }
                }
                rows::<$block>(p, out)
            }
        )*};
    }

    by_cpu! {
        q4_0 => Q4_0;
        q4_1 => Q4_1;
        q8_0 => Q8_0;
    }
}

/// The AVX-512 copy: a block's 32 values as two vectors of 16, computed with the same two
/// roundings as the scalar definition (multiply, then add or subtract: no fused step).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// A block type's values in two vectors.
    pub(super) trait Simd: Block {
        /// # Safety
        /// `block` holds `Self::BYTES` bytes; the CPU has AVX-512F/BW and F16C.
        unsafe fn vectors(block: *const u8) -> (__m512, __m512);
    }

    #[inline(always)]
    unsafe fn scale(p: *const u8) -> __m512 {
        let bits = i32::from(u16::from_le_bytes([*p, *p.add(1)]));
        _mm512_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
    }

    /// The values 0, 1, ..., 15.
    #[inline(always)]
    unsafe fn iota() -> __m512 {
        _mm512_setr_ps(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0)
    }

    /// A Q4 block's 32 values looked up in `table` (the block's value of each nibble 0..16):
    /// low nibbles are elements 0..16, high ones 16..32. The lookup reads only an index's low
    /// four bits, so the low nibbles need no mask.
    #[inline(always)]
    unsafe fn lookup(qs: *const u8, table: __m512) -> (__m512, __m512) {
        let bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(qs.cast()));
        (_mm512_permutexvar_ps(bytes, table), _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(bytes), table))
    }

    impl Simd for Q4_0 {
        #[inline(always)]
        unsafe fn vectors(b: *const u8) -> (__m512, __m512) {
            let table = _mm512_mul_ps(scale(b), _mm512_sub_ps(iota(), _mm512_set1_ps(8.0)));
            lookup(b.add(2), table)
        }
    }

    impl Simd for Q4_1 {
        #[inline(always)]
        unsafe fn vectors(b: *const u8) -> (__m512, __m512) {
            // d and m side by side: one load and one conversion for both.
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(b.cast::<i32>().read_unaligned()));
            let (d, m) = (_mm512_broadcastss_ps(dm), _mm512_broadcastss_ps(_mm_movehdup_ps(dm)));
            lookup(b.add(4), _mm512_add_ps(_mm512_mul_ps(d, iota()), m))
        }
    }

    impl Simd for Q8_0 {
        #[inline(always)]
        unsafe fn vectors(b: *const u8) -> (__m512, __m512) {
            let d = scale(b);
            let value = |p: *const u8| _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p.cast()))));
            (value(b.add(2)), value(b.add(18)))
        }
    }

    /// [`super::rows`] with intrinsics. (Dequantizing each output's weights once into an L1
    /// buffer that every row then reads was ~1.8x slower at 8-64 rows than unpacking each block
    /// again per group of 4 rows, `benches/block_rows.rs`.)
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub(super) unsafe fn rows<B: Simd>(p: Rows, out: &mut [f32]) {
        let mut r0 = 0;
        while r0 < p.m {
            let g = GROUP.min(p.m - r0);
            match g {
                4 => group::<B, 4>(p, r0, out),
                3 => group::<B, 3>(p, r0, out),
                2 => group::<B, 2>(p, r0, out),
                _ => group::<B, 1>(p, r0, out),
            }
            r0 += g;
        }
    }

    /// The `buf.len() / 32` blocks at `row` dequantized into `buf`.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma,f16c")]
    pub(super) unsafe fn row<B: Simd>(row: *const u8, buf: &mut [f32]) {
        for b in 0..buf.len() / BLOCK {
            let (lo, hi) = B::vectors(row.add(b * B::BYTES));
            _mm512_storeu_ps(buf.as_mut_ptr().add(b * BLOCK), lo);
            _mm512_storeu_ps(buf.as_mut_ptr().add(b * BLOCK + 16), hi);
        }
    }

    #[inline(always)]
    unsafe fn group<B: Simd, const G: usize>(p: Rows, r0: usize, out: &mut [f32]) {
        let Rows { x, d_in, w, n, .. } = p;
        let blocks = d_in / BLOCK;
        let row_bytes = blocks * B::BYTES;
        debug_assert!(x.len() >= (r0 + G) * d_in && w.len() >= n * row_bytes);
        let xs: [*const f32; G] = std::array::from_fn(|r| x.as_ptr().add((r0 + r) * d_in));
        for j in 0..n {
            let row = w.as_ptr().add(j * row_bytes);
            // Even and odd blocks in separate pairs of sums (measured no faster than one pair,
            // BENCHMARKS.md, and kept as measured); unrolled, since an index computed at run
            // time would keep the sums in memory.
            let mut acc = [[_mm512_setzero_ps(); 4]; G];
            let mut b = 0;
            while b < blocks {
                let (lo, hi) = B::vectors(row.add(b * B::BYTES));
                for r in 0..G {
                    let xb = xs[r].add(b * BLOCK);
                    acc[r][0] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xb), acc[r][0]);
                    acc[r][1] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xb.add(16)), acc[r][1]);
                }
                if b + 1 < blocks {
                    let (lo, hi) = B::vectors(row.add((b + 1) * B::BYTES));
                    for r in 0..G {
                        let xb = xs[r].add((b + 1) * BLOCK);
                        acc[r][2] = _mm512_fmadd_ps(lo, _mm512_loadu_ps(xb), acc[r][2]);
                        acc[r][3] = _mm512_fmadd_ps(hi, _mm512_loadu_ps(xb.add(16)), acc[r][3]);
                    }
                }
                b += 2;
            }
            for (r, a) in acc.iter().enumerate() {
                let sum = _mm512_add_ps(_mm512_add_ps(a[0], a[2]), _mm512_add_ps(a[1], a[3]));
                out[(r0 + r) * n + j] = _mm512_reduce_add_ps(sum);
            }
        }
    }
}

/// The AVX2 copy: a block's 32 values as four vectors of 8, with the same two roundings as
/// the scalar definition; two input rows at a time (their sums fill half of the 16 registers).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// A block type's values in four vectors.
    pub(super) trait Simd: Block {
        /// # Safety
        /// `block` holds `Self::BYTES` bytes; the CPU has AVX2, FMA and F16C.
        unsafe fn vectors(block: *const u8) -> [__m256; 4];
    }

    #[inline(always)]
    unsafe fn scale(p: *const u8) -> __m256 {
        let bits = i32::from(u16::from_le_bytes([*p, *p.add(1)]));
        _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(bits)))
    }

    /// The nibbles of a Q4 block as integers, in element order (0..8, 8..16, 16..24, 24..32):
    /// low nibbles of bytes 0..16, then high nibbles.
    #[inline(always)]
    unsafe fn nibbles(qs: *const u8) -> [__m256i; 4] {
        let q = _mm_loadu_si128(qs.cast());
        let (a, b) = (_mm256_cvtepu8_epi32(q), _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(q, q)));
        let low = _mm256_set1_epi32(0x0F);
        [_mm256_and_si256(a, low), _mm256_and_si256(b, low), _mm256_srli_epi32::<4>(a), _mm256_srli_epi32::<4>(b)]
    }

    impl Simd for Q4_0 {
        #[inline(always)]
        unsafe fn vectors(b: *const u8) -> [__m256; 4] {
            let (d, eight) = (scale(b), _mm256_set1_ps(8.0));
            nibbles(b.add(2)).map(|q| _mm256_mul_ps(d, _mm256_sub_ps(_mm256_cvtepi32_ps(q), eight)))
        }
    }

    impl Simd for Q4_1 {
        #[inline(always)]
        unsafe fn vectors(b: *const u8) -> [__m256; 4] {
            let (d, m) = (scale(b), scale(b.add(2)));
            nibbles(b.add(4)).map(|q| _mm256_add_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(q)), m))
        }
    }

    impl Simd for Q8_0 {
        #[inline(always)]
        unsafe fn vectors(b: *const u8) -> [__m256; 4] {
            let d = scale(b);
            let value = |k: usize| {
                let q = _mm_loadl_epi64(b.add(2 + 8 * k).cast());
                _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)))
            };
            [value(0), value(1), value(2), value(3)]
        }
    }

    /// [`super::rows`] with intrinsics.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows<B: Simd>(p: Rows, out: &mut [f32]) {
        let mut r0 = 0;
        while r0 < p.m {
            let g = 2.min(p.m - r0);
            match g {
                2 => group::<B, 2>(p, r0, out),
                _ => group::<B, 1>(p, r0, out),
            }
            r0 += g;
        }
    }

    #[inline(always)]
    unsafe fn group<B: Simd, const G: usize>(p: Rows, r0: usize, out: &mut [f32]) {
        let Rows { x, d_in, w, n, .. } = p;
        let blocks = d_in / BLOCK;
        let row_bytes = blocks * B::BYTES;
        debug_assert!(x.len() >= (r0 + G) * d_in && w.len() >= n * row_bytes);
        let xs: [*const f32; G] = std::array::from_fn(|r| x.as_ptr().add((r0 + r) * d_in));
        for j in 0..n {
            let row = w.as_ptr().add(j * row_bytes);
            let mut acc = [[_mm256_setzero_ps(); 4]; G];
            for b in 0..blocks {
                let v = B::vectors(row.add(b * B::BYTES));
                for r in 0..G {
                    let xb = xs[r].add(b * BLOCK);
                    for k in 0..4 {
                        acc[r][k] = _mm256_fmadd_ps(v[k], _mm256_loadu_ps(xb.add(8 * k)), acc[r][k]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let sum = _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3]));
                let half = _mm_add_ps(_mm256_castps256_ps128(sum), _mm256_extractf128_ps::<1>(sum));
                let quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
                out[(r0 + r) * n + j] = _mm_cvtss_f32(_mm_add_ss(quarter, _mm_movehdup_ps(quarter)));
            }
        }
    }
}

#[cfg(test)]
/// Random blocks of `ty`: scales of either sign and magnitude around 0.01-1, every nibble
/// and byte value.
pub(crate) fn random_blocks(ty: BlockType, n_blocks: usize, seed: u64) -> Vec<u8> {
    random_blocks_scaled(ty, n_blocks, seed, 1.0)
}

#[cfg(test)]
/// [`random_blocks`] with every scale (and Q4_1 minimum) multiplied by `scale`.
pub(crate) fn random_blocks_scaled(ty: BlockType, n_blocks: usize, seed: u64, scale: f32) -> Vec<u8> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut bytes = Vec::with_capacity(n_blocks * ty.bytes());
    for _ in 0..n_blocks {
        let scales = if ty == BlockType::Q4_1 { 2 } else { 1 };
        for _ in 0..scales {
            let s = rng.random_range(-1.0f32..1.0) * 10f32.powi(rng.random_range(-2..1)) * scale;
            let s = half::f16::from_f32(s);
            bytes.extend(s.to_le_bytes());
        }
        let qs = ty.bytes() - 2 * scales;
        bytes.extend((0..qs).map(|_| rng.random::<u8>()));
    }
    bytes
}

// The tests check against the GGUF reader (native only).
#[cfg(all(test, feature = "native"))]
mod tests {
    use super::*;
    use crate::model::formats::gguf::dequant::{dequantize, GgmlType};
    use rand::{Rng, SeedableRng};

    fn ggml(ty: BlockType) -> GgmlType {
        match ty {
            BlockType::Q4_0 => GgmlType::Q4_0,
            BlockType::Q4_1 => GgmlType::Q4_1,
            BlockType::Q8_0 => GgmlType::Q8_0,
        }
    }

    const TYPES: [BlockType; 3] = [BlockType::Q4_0, BlockType::Q4_1, BlockType::Q8_0];

    #[test]
    fn rows_and_dequantization_equal_the_gguf_reader_to_the_bit() {
        for ty in TYPES {
            let (d_out, d_in) = (7, 96);
            let bytes = random_blocks(ty, d_out * d_in / BLOCK, 1);
            let expected = dequantize(ggml(ty), &bytes);
            let matrix = BlockMatrix::new(ty, d_out, d_in, bytes).unwrap();
            assert_eq!(matrix.dequantize(), expected, "{ty:?}");
            let mut row = vec![0f32; d_in];
            matrix.row(3, &mut row);
            assert_eq!(row, expected[3 * d_in..4 * d_in], "{ty:?}");
        }
    }

    #[test]
    fn product_equals_the_f64_product_over_the_dequantized_values() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        // Output counts that split into several parts, and one that does not; every group size.
        for (ty, d_out, d_in) in [(BlockType::Q4_1, 300, 64), (BlockType::Q4_0, 5, 32), (BlockType::Q8_0, 130, 576)] {
            let bytes = random_blocks(ty, d_out * d_in / BLOCK, 3);
            let w = dequantize(ggml(ty), &bytes);
            let matrix = BlockMatrix::new(ty, d_out, d_in, bytes).unwrap();
            for m in [1, 2, 3, 4, 5, 8, 11] {
                let x: Vec<f32> = (0..m * d_in).map(|_| rng.random_range(-2.0..2.0)).collect();
                let got = matrix.product(&x, m);
                for r in 0..m {
                    for j in 0..d_out {
                        let dot: f64 = (0..d_in).map(|k| f64::from(x[r * d_in + k]) * f64::from(w[j * d_in + k])).sum();
                        let norm: f64 = (0..d_in).map(|k| (f64::from(x[r * d_in + k]) * f64::from(w[j * d_in + k])).abs()).sum();
                        let diff = (f64::from(got[r * d_out + j]) - dot).abs();
                        assert!(diff <= 1e-6 * norm + 1e-30, "{ty:?} m {m} [{r}, {j}]: {} vs {dot}", got[r * d_out + j]);
                    }
                }
            }
        }
    }

    /// `x` `[m, d_in]` times the blocks through every copy of the kernel this CPU runs.
    fn every_copy(matrix: &BlockMatrix, x: &[f32], m: usize) -> Vec<(&'static str, Vec<f32>)> {
        let (d_out, d_in) = matrix.dims();
        let p = Rows { x, m, d_in, w: &matrix.bytes, n: d_out };
        let run = |copy: &dyn Fn(Rows, &mut [f32])| {
            let mut out = vec![0f32; m * d_out];
            copy(p, &mut out);
            out
        };
        macro_rules! copies {
            ($block:ty) => {{
                let mut got = vec![("portable", run(&|p, o| rows::<$block>(p, o)))];
                #[cfg(target_arch = "x86_64")]
                {
                    if has_avx2() {
                        // SAFETY: the CPU has the features.
                        got.push(("avx2", run(&|p, o| unsafe { avx2::rows::<$block>(p, o) })));
                    }
                    if has_avx512() {
                        // SAFETY: as above.
                        got.push(("avx512", run(&|p, o| unsafe { avx512::rows::<$block>(p, o) })));
                    }
                }
                got
            }};
        }
        match matrix.block_type() {
            BlockType::Q4_0 => copies!(Q4_0),
            BlockType::Q4_1 => copies!(Q4_1),
            BlockType::Q8_0 => copies!(Q8_0),
        }
    }

    #[test]
    fn every_cpu_copy_equals_the_f64_product() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for ty in TYPES {
            let (d_out, d_in) = (9, 128);
            let bytes = random_blocks(ty, d_out * d_in / BLOCK, 6);
            let w = dequantize(ggml(ty), &bytes);
            let matrix = BlockMatrix::new(ty, d_out, d_in, bytes).unwrap();
            for m in [1, 2, 3, 4, 7] {
                let x: Vec<f32> = (0..m * d_in).map(|_| rng.random_range(-2.0..2.0)).collect();
                for (copy, got) in every_copy(&matrix, &x, m) {
                    for r in 0..m {
                        for j in 0..d_out {
                            let terms = (0..d_in).map(|k| f64::from(x[r * d_in + k]) * f64::from(w[j * d_in + k]));
                            let (dot, norm) = terms.fold((0.0, 0.0), |(s, a), t| (s + t, a + t.abs()));
                            let diff = (f64::from(got[r * d_out + j]) - dot).abs();
                            assert!(diff <= 1e-6 * norm, "{ty:?} {copy} m {m} [{r}, {j}]: {} vs {dot}", got[r * d_out + j]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn sizes_that_do_not_agree_are_refused_and_row_order_is_applied() {
        assert!(BlockMatrix::new(BlockType::Q8_0, 2, 48, vec![0; 2 * 34]).is_none());
        assert!(BlockMatrix::new(BlockType::Q8_0, 2, 32, vec![0; 3 * 34]).is_none());
        let bytes = random_blocks(BlockType::Q8_0, 3, 4);
        let matrix = BlockMatrix::new(BlockType::Q8_0, 3, 32, bytes).unwrap();
        let reordered = matrix.rows_in_order(&[2, 0, 1]);
        let (a, b) = (matrix.dequantize(), reordered.dequantize());
        assert_eq!(b[..32], a[64..]);
        assert_eq!(b[32..64], a[..32]);
    }
}
