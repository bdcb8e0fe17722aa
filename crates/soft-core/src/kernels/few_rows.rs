//! The product of a few rows with a large weight — every projection of a decoding step (the
//! beams' last tokens against each weight and the LM head). Such a product reads each weight
//! element once for a handful of multiply-adds, so it is bound by memory; a general matrix
//! product (burn-flex calls `gemm`) first copies the weight into packed panels (a tenth of a
//! SmolLM2 beam search's samples). Here the weight is read once where it lies, in blocks of
//! columns spread over the cores, with the rows' partial sums in registers.
//!
//! Two layouts of the weight `[d_in, d_out]` are read directly: row-major (the projections) and
//! column-major (the LM head tied to the embeddings, a transposed view of `[vocab, hidden]`).
//! The weight is f32, or f16 / bf16 (a base model kept in half precision) widened to f32 in
//! registers as it is read: half the bytes, the sums in f32 either way.

/// An element of the weight: f32, or half precision widened as it is read.
pub(crate) trait Weight: Copy + Send + Sync + 'static {
    /// Which one (the SIMD copies load each differently).
    #[cfg_attr(not(any(target_arch = "x86_64", target_arch = "wasm32")), allow(dead_code))]
    const KIND: WeightKind;
    fn widen(self) -> f32;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(any(target_arch = "x86_64", target_arch = "wasm32")), allow(dead_code))]
pub(crate) enum WeightKind {
    F32,
    F16,
    BF16,
}

impl Weight for f32 {
    const KIND: WeightKind = WeightKind::F32;
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Weight for half::bf16 {
    const KIND: WeightKind = WeightKind::BF16;
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
}

impl Weight for half::f16 {
    const KIND: WeightKind = WeightKind::F16;
    /// Branch-free (it vectorizes): exponent and mantissa shifted into place and rescaled by
    /// 2^112, which also makes f16's subnormals f32 normals; infinities and NaNs kept.
    #[inline(always)]
    fn widen(self) -> f32 {
        let h = u32::from(self.to_bits());
        let magnitude = h & 0x7fff;
        let scaled = f32::from_bits(magnitude << 13) * f32::from_bits(0x7780_0000);
        let special = f32::from_bits(0x7f80_0000 | ((magnitude & 0x3ff) << 13));
        let value = if magnitude >= 0x7c00 { special } else { scaled };
        f32::from_bits(value.to_bits() | ((h & 0x8000) << 16))
    }
}

/// How the weight's elements lie in its slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WeightLayout {
    /// `w[k * d_out + j]`: each input's weights to every output in a row.
    InOut,
    /// `w[j * d_in + k]`: each output's weights from every input in a row (a transposed view).
    OutIn,
}

/// Rows handled together: their partial sums stay in registers while the weight block streams.
const GROUP: usize = 4;

/// One core's part of a product: `x` `[m, d_in]` times the columns `c0..c1` of `w`
/// `[d_in, d_out]` (in `layout`).
#[derive(Debug, Clone, Copy)]
struct Part<'a, W> {
    x: &'a [f32],
    m: usize,
    w: &'a [W],
    layout: WeightLayout,
    d_in: usize,
    d_out: usize,
    c0: usize,
    c1: usize,
}

/// `out = x · w`, `x` `[m, d_in]` row-major, `w` `[d_in, d_out]` in `layout`, `out` `[m, d_out]`,
/// on every core natively (burn-flex's rayon pool) and serially in wasm.
pub(crate) fn product<W: Weight>(
    x: &[f32],
    m: usize,
    w: &[W],
    layout: WeightLayout,
    d_in: usize,
    d_out: usize,
) -> Vec<f32> {
    assert_eq!(x.len(), m * d_in, "few-row product: x is not [{m}, {d_in}]");
    assert_eq!(w.len(), d_in * d_out, "few-row product: weight is not [{d_in}, {d_out}]");
    let parts = parts(d_out);
    let width = (d_out.div_ceil(parts)).next_multiple_of(64).min(d_out);
    let ranges: Vec<(usize, usize)> = (0..d_out).step_by(width).map(|c| (c, (c + width).min(d_out))).collect();
    let columns = |&(c0, c1): &(usize, usize)| -> Vec<f32> {
        let mut out = vec![0f32; m * (c1 - c0)];
        dispatch::columns(Part { x, m, w, layout, d_in, d_out, c0, c1 }, &mut out);
        out
    };
    // One part (always in wasm) computes the output itself.
    if let [whole] = ranges[..] {
        return columns(&whole);
    }
    #[cfg(not(target_arch = "wasm32"))]
    let blocks: Vec<Vec<f32>> = {
        use rayon::prelude::*;
        ranges.par_iter().map(columns).collect()
    };
    #[cfg(target_arch = "wasm32")]
    let blocks: Vec<Vec<f32>> = ranges.iter().map(columns).collect();
    let mut out = vec![0f32; m * d_out];
    for (&(c0, c1), block) in ranges.iter().zip(&blocks) {
        for (r, row) in block.chunks_exact(c1 - c0).enumerate() {
            out[r * d_out + c0..r * d_out + c1].copy_from_slice(row);
        }
    }
    out
}

/// `dst[i] = src[i]` widened to f32, on every core natively and serially in wasm, compiled for
/// AVX-512 or AVX2 + F16C where the CPU has them (the branch-free widening vectorizes): the
/// f32 copy of a half-precision weight that a many-row product multiplies by.
pub(crate) fn widen<W: Weight>(src: &[W], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "widen: lengths differ");
    fn serial<W: Weight>(src: &[W], dst: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
            unsafe fn avx512<W: Weight>(src: &[W], dst: &mut [f32]) {
                dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.widen());
            }
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn avx2<W: Weight>(src: &[W], dst: &mut [f32]) {
                dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.widen());
            }
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
                // SAFETY: the CPU has the features the copy is compiled for.
                return unsafe { avx512(src, dst) };
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c") {
                // SAFETY: as above.
                return unsafe { avx2(src, dst) };
            }
        }
        dst.iter_mut().zip(src).for_each(|(d, s)| *d = s.widen());
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        // Chunks of 64k elements: a few per core for the large weights, one for the small.
        const CHUNK: usize = 1 << 16;
        dst.par_chunks_mut(CHUNK).zip(src.par_chunks(CHUNK)).for_each(|(d, s)| serial(s, d));
    }
    #[cfg(target_arch = "wasm32")]
    serial(src, dst);
}

/// Column ranges to spread over the cores: a few per core, so that a slow core does not hold
/// up the rest, each at least 64 columns wide.
#[cfg(not(target_arch = "wasm32"))]
fn parts(d_out: usize) -> usize {
    (4 * rayon::current_num_threads()).min(d_out / 64).max(1)
}

/// In wasm, one thread: one range.
#[cfg(target_arch = "wasm32")]
fn parts(_d_out: usize) -> usize {
    1
}

/// `out` `[m, c1 - c0]` = `x` times the weight's columns `c0..c1`. `N` is the columns of one
/// register block (row-major weights) and `L` the lanes of one partial sum (column-major
/// weights): the widths that fit the registers of the CPU.
#[inline(always)]
fn columns<W: Weight, const N: usize, const L: usize, const FMA: bool>(part: Part<W>, out: &mut [f32]) {
    if part.layout == WeightLayout::OutIn {
        return out_in::<W, L, FMA>(part, out);
    }
    // Row-major: [`GROUP`] rows at a time, each group reading the weight's columns once.
    let Part { x, m, d_in, c0, c1, .. } = part;
    let width = c1 - c0;
    let mut r = 0;
    while r < m {
        let g = GROUP.min(m - r);
        let group = Part { x: &x[r * d_in..(r + g) * d_in], m: g, ..part };
        let out = &mut out[r * width..(r + g) * width];
        match g {
            4 => in_out::<W, 4, N, FMA>(group, out),
            3 => in_out::<W, 3, N, FMA>(group, out),
            2 => in_out::<W, 2, N, FMA>(group, out),
            _ => in_out::<W, 1, N, FMA>(group, out),
        }
        r += g;
    }
}

/// Asks the CPU to bring `block`'s cache lines towards L1: a hint, no effect on any value.
#[inline(always)]
fn prefetch<W>(block: &[W]) {
    #[cfg(target_arch = "x86_64")]
    for line in block.chunks(64 / std::mem::size_of::<W>()) {
        // SAFETY: a prefetch reads nothing into the program and cannot fault.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = block;
}

#[inline(always)]
fn fma<const FMA: bool>(a: f32, b: f32, acc: f32) -> f32 {
    // `mul_add` is one instruction where the CPU has FMA and a slow libm call where it does not.
    if FMA {
        a.mul_add(b, acc)
    } else {
        acc + a * b
    }
}

/// Row-major weight: the weight rows are taken `TILE` at a time, and for each block of `N`
/// columns of those rows the `M x N` partial sums stay in registers while each row's block is
/// added, scaled by each of the rows' inputs. Walking `TILE` rows side by side keeps the reads
/// sequential (a row at a time would jump a whole weight row per `N` columns). In wasm 32 rows:
/// the sums go to memory and back between tiles, which costs more there (the page's answer ~10 %
/// faster than with 8, BENCHMARKS.md).
#[inline(always)]
fn in_out<W: Weight, const M: usize, const N: usize, const FMA: bool>(part: Part<W>, out: &mut [f32]) {
    let Part { x, w, d_in, d_out, c0, c1, .. } = part;
    const TILE: usize = if cfg!(target_arch = "wasm32") { 32 } else { 8 };
    let width = c1 - c0;
    // The inputs transposed, `[d_in, M]`: one small load per weight row.
    let mut xt = vec![0f32; d_in * M];
    for r in 0..M {
        for k in 0..d_in {
            xt[k * M + r] = x[r * d_in + k];
        }
    }
    let blocks = width / N;
    // Partial sums `[blocks][M][N]` between tiles.
    let mut sums = vec![[[0f32; N]; M]; blocks];
    for k0 in (0..d_in).step_by(TILE) {
        let rows = TILE.min(d_in - k0);
        for (b, sum) in sums.iter_mut().enumerate() {
            let c = c0 + b * N;
            let mut acc = *sum;
            // The next tile's rows of this block, on their way while this one is summed.
            for k in k0 + TILE..(k0 + 2 * TILE).min(d_in) {
                prefetch(&w[k * d_out + c..][..N]);
            }
            tile::<W, M, N, FMA>(&xt, w, d_out, c, k0..k0 + rows, &mut acc);
            *sum = acc;
        }
    }
    for (b, sum) in sums.iter().enumerate() {
        for r in 0..M {
            out[r * width + b * N..][..N].copy_from_slice(&sum[r]);
        }
    }
    // The last columns, fewer than N.
    for j in c0 + blocks * N..c1 {
        for r in 0..M {
            let mut s = 0f32;
            for k in 0..d_in {
                s = fma::<FMA>(xt[k * M + r], w[k * d_out + j].widen(), s);
            }
            out[r * width + j - c0] = s;
        }
    }
}

/// Adds weight rows `ks`, columns `c..c + N` (of `d_out`), scaled by each of the `M` inputs
/// `xt` `[d_in, M]`, to the partial sums `acc`. On x86-64 the AVX-512 and AVX2 copies are
/// written with intrinsics: the plain loop widens f16 in ~6 instructions per lane where F16C
/// takes one.
#[inline(always)]
fn tile<W: Weight, const M: usize, const N: usize, const FMA: bool>(
    xt: &[f32],
    w: &[W],
    d_out: usize,
    c: usize,
    ks: std::ops::Range<usize>,
    acc: &mut [[f32; N]; M],
) {
    assert!(xt.len() >= ks.end * M && w.len() >= (ks.end - 1) * d_out + c + N, "tile: short inputs");
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: these copies run only inside `dispatch`'s AVX-512 (N = 64) or AVX2 + FMA +
        // F16C (N = 32) copy, on a CPU found to have those features; the lengths are checked
        // above; `W::KIND` names the element type behind the pointers each copy reads.
        if N == 64 && FMA {
            return unsafe {
                match W::KIND {
                    WeightKind::F32 => simd::tile_avx512_f32(xt, row_as(w), d_out, c, ks, acc),
                    WeightKind::F16 => simd::tile_avx512_f16(xt, row_as(w), d_out, c, ks, acc),
                    WeightKind::BF16 => simd::tile_avx512_bf16(xt, row_as(w), d_out, c, ks, acc),
                }
            };
        }
        if N == 32 && FMA {
            return unsafe {
                match W::KIND {
                    WeightKind::F32 => simd::tile_avx2_f32(xt, row_as(w), d_out, c, ks, acc),
                    WeightKind::F16 => simd::tile_avx2_f16(xt, row_as(w), d_out, c, ks, acc),
                    WeightKind::BF16 => simd::tile_avx2_bf16(xt, row_as(w), d_out, c, ks, acc),
                }
            };
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if W::KIND == WeightKind::F32 && N == 8 {
        // SAFETY: `W` is f32; the lengths are checked above.
        return unsafe { wasm::tile_f32::<M, N, 2>(xt, row_as(w), d_out, c, ks, acc) };
    }
    tile_portable::<W, M, N, FMA>(xt, w, d_out, c, ks, acc)
}

/// [`tile`] in plain Rust.
#[inline(always)]
fn tile_portable<W: Weight, const M: usize, const N: usize, const FMA: bool>(
    xt: &[f32],
    w: &[W],
    d_out: usize,
    c: usize,
    ks: std::ops::Range<usize>,
    acc: &mut [[f32; N]; M],
) {
    for k in ks {
        let xk: &[f32; M] = xt[k * M..][..M].try_into().expect("M rows");
        let wk: &[W; N] = w[k * d_out + c..][..N].try_into().expect("N columns");
        let wk: [f32; N] = wk.map(W::widen);
        for r in 0..M {
            for j in 0..N {
                acc[r][j] = fma::<FMA>(xk[r], wk[j], acc[r][j]);
            }
        }
    }
}

/// Weight rows (outputs) taken together by [`out_in`].
const J: usize = 4;

/// Column-major weight: each output is the dot product of a row with a weight row. `J` weight
/// rows at a time, against every row of `x` in groups of [`GROUP`] (the weight rows stay in L1
/// between groups), the next weight rows fetched meanwhile.
#[inline(always)]
fn out_in<W: Weight, const L: usize, const FMA: bool>(part: Part<W>, out: &mut [f32]) {
    let Part { x, m, w, d_in, c0, c1, .. } = part;
    let width = c1 - c0;
    // Each group of rows interleaved by lane blocks, `[d_in / L][g][L]`, then its tail.
    let groups: Vec<Vec<f32>> = (0..m.div_ceil(GROUP))
        .map(|group| {
            let rows = group * GROUP..(group * GROUP + GROUP).min(m);
            let lane_blocks = d_in / L;
            let mut xs = Vec::with_capacity(rows.len() * d_in);
            for b in 0..lane_blocks {
                for r in rows.clone() {
                    xs.extend_from_slice(&x[r * d_in + b * L..][..L]);
                }
            }
            for r in rows {
                xs.extend_from_slice(&x[r * d_in + lane_blocks * L..(r + 1) * d_in]);
            }
            xs
        })
        .collect();
    let mut c = c0;
    while c < c1 {
        let cols = J.min(c1 - c);
        // Past the last column the block repeats it; those sums are not written.
        let ws: [&[W]; J] = std::array::from_fn(|j| &w[(c + j.min(cols - 1)) * d_in..][..d_in]);
        // Two blocks ahead: the hardware prefetcher alone leaves the reads short of bandwidth.
        if let Some(next) = w.get((c + 2 * J) * d_in..(c + 3 * J) * d_in) {
            prefetch(next);
        }
        for (group, xs) in groups.iter().enumerate() {
            let r = group * GROUP;
            let g = GROUP.min(m - r);
            let sums: [[f32; J]; GROUP] = match g {
                4 => dot_block::<W, 4, L, FMA>(xs, &ws, d_in),
                3 => pad(dot_block::<W, 3, L, FMA>(xs, &ws, d_in)),
                2 => pad(dot_block::<W, 2, L, FMA>(xs, &ws, d_in)),
                _ => pad(dot_block::<W, 1, L, FMA>(xs, &ws, d_in)),
            };
            for (i, row) in sums.iter().take(g).enumerate() {
                out[(r + i) * width + c - c0..][..cols].copy_from_slice(&row[..cols]);
            }
        }
        c += cols;
    }
}

fn pad<const M: usize>(sums: [[f32; J]; M]) -> [[f32; J]; GROUP] {
    std::array::from_fn(|r| if r < M { sums[r] } else { [0.0; J] })
}

/// The `M x J` dot products of `M` rows of `x` with the `J` weight rows `ws`, in `L`-lane
/// partial sums. `x` is interleaved by lane blocks (see [`out_in`]). On x86-64 the AVX-512 and
/// AVX2 copies are written with intrinsics: LLVM did not keep the partial sums of the plain
/// loop in registers.
#[inline(always)]
fn dot_block<W: Weight, const M: usize, const L: usize, const FMA: bool>(
    x: &[f32],
    ws: &[&[W]; J],
    d_in: usize,
) -> [[f32; J]; M] {
    assert!(x.len() >= M * d_in && ws.iter().all(|w| w.len() >= d_in), "dot_block: short rows");
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: these copies run only inside `dispatch`'s AVX-512 (L = 16) or AVX2 + FMA +
        // F16C (L = 8) copy, on a CPU found to have those features; the lengths are checked
        // above; `W::KIND` names the element type behind the pointers each copy reads.
        if L == 16 && FMA {
            return unsafe {
                match W::KIND {
                    WeightKind::F32 => simd::dot_block_avx512_f32::<M>(x, &rows_as(ws), d_in),
                    WeightKind::F16 => simd::dot_block_avx512_f16::<M>(x, &rows_as(ws), d_in),
                    WeightKind::BF16 => simd::dot_block_avx512_bf16::<M>(x, &rows_as(ws), d_in),
                }
            };
        }
        if L == 8 && FMA {
            return unsafe {
                match W::KIND {
                    WeightKind::F32 => simd::dot_block_avx2_f32::<M>(x, &rows_as(ws), d_in),
                    WeightKind::F16 => simd::dot_block_avx2_f16::<M>(x, &rows_as(ws), d_in),
                    WeightKind::BF16 => simd::dot_block_avx2_bf16::<M>(x, &rows_as(ws), d_in),
                }
            };
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if W::KIND == WeightKind::F32 && L == 4 {
        // SAFETY: `W` is f32; the lengths are checked above.
        return unsafe { wasm::dot_block_f32::<M>(x, &rows_as(ws), d_in) };
    }
    dot_block_portable::<W, M, L, FMA>(x, ws, d_in)
}

/// [`dot_block`] in plain Rust.
#[inline(always)]
fn dot_block_portable<W: Weight, const M: usize, const L: usize, const FMA: bool>(
    x: &[f32],
    ws: &[&[W]; J],
    d_in: usize,
) -> [[f32; J]; M] {
    let lane_blocks = d_in / L;
    let mut acc = [[[0f32; L]; J]; M];
    for b in 0..lane_blocks {
        for (j, w) in ws.iter().enumerate() {
            for r in 0..M {
                for l in 0..L {
                    acc[r][j][l] = fma::<FMA>(x[(b * M + r) * L + l], w[b * L + l].widen(), acc[r][j][l]);
                }
            }
        }
    }
    let acc = acc.map(|row| row.map(|lanes| lanes.iter().sum::<f32>()));
    finish::<W, M, FMA>(acc, x, ws, lane_blocks * L, d_in)
}

/// Adds the inputs past the last whole lane block (`done..d_in`) to the sums.
#[inline(always)]
fn finish<W: Weight, const M: usize, const FMA: bool>(
    mut sums: [[f32; J]; M],
    x: &[f32],
    ws: &[&[W]; J],
    done: usize,
    d_in: usize,
) -> [[f32; J]; M] {
    let (tail, rest) = (&x[done * M..], d_in - done);
    for (r, row) in sums.iter_mut().enumerate() {
        for (j, s) in row.iter_mut().enumerate() {
            for k in 0..rest {
                *s = fma::<FMA>(tail[r * rest + k], ws[j][done + k].widen(), *s);
            }
        }
    }
    sums
}

/// The weight rows as rows of `T`, the type `W` is (the caller matched `W::KIND`).
///
/// # Safety
/// `T` must be `W`.
#[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
unsafe fn rows_as<'a, W, T>(ws: &[&'a [W]; J]) -> [&'a [T]; J] {
    debug_assert_eq!(std::any::type_name::<W>(), std::any::type_name::<T>());
    // SAFETY: the same type, per the caller.
    ws.map(|w| unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<T>(), w.len()) })
}

/// The weight as a slice of `T`, the type `W` is (the caller matched `W::KIND`).
///
/// # Safety
/// `T` must be `W`.
#[cfg(any(target_arch = "x86_64", target_arch = "wasm32"))]
unsafe fn row_as<W, T>(w: &[W]) -> &[T] {
    debug_assert_eq!(std::any::type_name::<W>(), std::any::type_name::<T>());
    // SAFETY: the same type, per the caller.
    unsafe { std::slice::from_raw_parts(w.as_ptr().cast::<T>(), w.len()) }
}

/// WebAssembly SIMD128 copies of [`tile`] and [`dot_block`] for f32 weights (the page's CPU
/// path): SIMD128 has no fused multiply-add, so each lane adds `x * w` to its sum in the
/// portable loop's order and rounding — the same sums bit for bit, in a quarter of the
/// instructions. (LLVM left the portable loops' `M x N` sums in memory.)
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[allow(clippy::needless_range_loop)] // indices over registers, as in the x86-64 copies
mod wasm {
    use super::{finish, J};
    use std::arch::wasm32::*;

    /// [`super::tile`] over f32 weights: `M x V` vectors of 4 partial sums (`N = 4 V`
    /// columns), in registers while the tile's weight rows stream.
    ///
    /// # Safety
    /// `xt` must hold `M` inputs for every row of `ks`, and each row `k` of `ks` must have `N`
    /// weights from `k * d_out + c` (the caller checked both).
    #[inline(always)]
    pub(super) unsafe fn tile_f32<const M: usize, const N: usize, const V: usize>(
        xt: &[f32],
        w: &[f32],
        d_out: usize,
        c: usize,
        ks: std::ops::Range<usize>,
        acc: &mut [[f32; N]; M],
    ) {
        debug_assert_eq!(N, 4 * V);
        // SAFETY (all loads and stores): `acc` rows hold N = 4 V floats; the rest per the caller.
        let mut sums: [[v128; V]; M] =
            std::array::from_fn(|r| std::array::from_fn(|v| unsafe { v128_load(acc[r].as_ptr().add(4 * v).cast()) }));
        let (wp, xp) = (w.as_ptr(), xt.as_ptr());
        for k in ks {
            let row = unsafe { wp.add(k * d_out + c) };
            let wv: [v128; V] = std::array::from_fn(|v| unsafe { v128_load(row.add(4 * v).cast()) });
            for r in 0..M {
                let xv = f32x4_splat(unsafe { *xp.add(k * M + r) });
                for v in 0..V {
                    sums[r][v] = f32x4_add(sums[r][v], f32x4_mul(xv, wv[v]));
                }
            }
        }
        for r in 0..M {
            for v in 0..V {
                unsafe { v128_store(acc[r].as_mut_ptr().add(4 * v).cast(), sums[r][v]) };
            }
        }
    }

    /// [`super::dot_block`] over f32 weights with 4-lane partial sums, two weight rows at a
    /// time (`M x 2` vectors: `M x J` would not fit the 16 registers V8 allocates).
    ///
    /// # Safety
    /// `x` must hold `M x d_in` inputs and each weight row `d_in` weights (the caller checked).
    #[inline(always)]
    pub(super) unsafe fn dot_block_f32<const M: usize>(x: &[f32], ws: &[&[f32]; J], d_in: usize) -> [[f32; J]; M] {
        const L: usize = 4;
        let lane_blocks = d_in / L;
        let xp = x.as_ptr();
        let mut sums = [[0f32; J]; M];
        for j0 in (0..J).step_by(2) {
            let wp = [ws[j0].as_ptr(), ws[j0 + 1].as_ptr()];
            let mut acc = [[f32x4_splat(0.0); 2]; M];
            for b in 0..lane_blocks {
                // SAFETY (all loads): b < d_in / L; the lengths per the caller.
                let w: [v128; 2] = std::array::from_fn(|j| unsafe { v128_load(wp[j].add(b * L).cast()) });
                for r in 0..M {
                    let xv = unsafe { v128_load(xp.add((b * M + r) * L).cast()) };
                    for j in 0..2 {
                        acc[r][j] = f32x4_add(acc[r][j], f32x4_mul(xv, w[j]));
                    }
                }
            }
            for r in 0..M {
                for j in 0..2 {
                    let v = acc[r][j];
                    let lanes = [f32x4_extract_lane::<0>(v), f32x4_extract_lane::<1>(v), f32x4_extract_lane::<2>(v), f32x4_extract_lane::<3>(v)];
                    sums[r][j0 + j] = lanes.iter().sum();
                }
            }
        }
        finish::<f32, M, false>(sums, x, ws, lane_blocks * L, d_in)
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::{finish, J};
    use std::arch::x86_64::*;

    // Loads of `L` weights widened to f32 lanes, one per element type and instruction set.
    #[target_feature(enable = "avx512f")]
    unsafe fn load16_f32(p: *const f32) -> __m512 {
        unsafe { _mm512_loadu_ps(p) }
    }
    #[target_feature(enable = "avx512f")]
    unsafe fn load16_f16(p: *const half::f16) -> __m512 {
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }
    #[target_feature(enable = "avx512f")]
    unsafe fn load16_bf16(p: *const half::bf16) -> __m512 {
        unsafe { _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast())))) }
    }
    #[target_feature(enable = "avx2")]
    unsafe fn load8_f32(p: *const f32) -> __m256 {
        unsafe { _mm256_loadu_ps(p) }
    }
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn load8_f16(p: *const half::f16) -> __m256 {
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
    }
    #[target_feature(enable = "avx2")]
    unsafe fn load8_bf16(p: *const half::bf16) -> __m256 {
        unsafe { _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast())))) }
    }

    /// `dot_block` with `$lanes`-lane vectors: `M x J` accumulators in registers; `$wload`
    /// reads `$lanes` weights of type `$w` as f32 lanes.
    macro_rules! dot_block {
        ($name:ident, $features:literal, $lanes:literal, $vec:ty, $zero:ident, $load:ident, $fma:ident, $store:ident,
         $w:ty, $wload:ident) => {
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn $name<const M: usize>(x: &[f32], ws: &[&[$w]; J], d_in: usize) -> [[f32; J]; M] {
                const L: usize = $lanes;
                let lane_blocks = d_in / L;
                let mut acc: [[$vec; J]; M] = [[$zero(); J]; M];
                let (xp, wp) = (x.as_ptr(), ws.map(|w| w.as_ptr()));
                for b in 0..lane_blocks {
                    // SAFETY (all loads): the caller checked x has M x d_in and each weight row
                    // d_in elements; b < d_in / L.
                    let w: [$vec; J] = std::array::from_fn(|j| unsafe { $wload(wp[j].add(b * L)) });
                    for r in 0..M {
                        let xv = unsafe { $load(xp.add((b * M + r) * L)) };
                        for j in 0..J {
                            acc[r][j] = $fma(xv, w[j], acc[r][j]);
                        }
                    }
                }
                let mut sums = [[0f32; J]; M];
                for r in 0..M {
                    for j in 0..J {
                        let mut lanes = [0f32; L];
                        // SAFETY: `lanes` holds L floats.
                        unsafe { $store(lanes.as_mut_ptr(), acc[r][j]) };
                        sums[r][j] = lanes.iter().sum();
                    }
                }
                finish::<$w, M, true>(sums, x, ws, lane_blocks * L, d_in)
            }
        };
    }

    /// `tile` with `$lanes`-lane vectors: the `M x 4` vectors of partial sums in registers
    /// (`N` = 4 vectors of columns); `$wload` reads `$lanes` weights of type `$w` as f32 lanes.
    macro_rules! tile {
        ($name:ident, $features:literal, $lanes:literal, $vec:ty, $load:ident, $set1:ident, $fma:ident, $store:ident,
         $w:ty, $wload:ident) => {
            #[target_feature(enable = $features)]
            pub(crate) unsafe fn $name<const M: usize, const N: usize>(
                xt: &[f32],
                w: &[$w],
                d_out: usize,
                c: usize,
                ks: std::ops::Range<usize>,
                acc: &mut [[f32; N]; M],
            ) {
                const L: usize = $lanes;
                assert_eq!(N, 4 * L, "four vectors of columns");
                // SAFETY (all loads and stores): `acc` rows hold N = 4L floats; the caller
                // checked that `xt` has M inputs per weight row of `ks` and that each of those
                // rows has N weights from column c.
                let mut sums: [[$vec; 4]; M] =
                    std::array::from_fn(|r| std::array::from_fn(|v| unsafe { $load(acc[r].as_ptr().add(v * L)) }));
                let wp = w.as_ptr();
                for k in ks {
                    let row = unsafe { wp.add(k * d_out + c) };
                    let wv: [$vec; 4] = std::array::from_fn(|v| unsafe { $wload(row.add(v * L)) });
                    for r in 0..M {
                        let xv = $set1(xt[k * M + r]);
                        for v in 0..4 {
                            sums[r][v] = $fma(xv, wv[v], sums[r][v]);
                        }
                    }
                }
                for r in 0..M {
                    for v in 0..4 {
                        unsafe { $store(acc[r].as_mut_ptr().add(v * L), sums[r][v]) };
                    }
                }
            }
        };
    }

    #[rustfmt::skip]
    mod copies {
        use super::*;
        dot_block!(dot_block_avx512_f32, "avx512f", 16, __m512, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_fmadd_ps,
            _mm512_storeu_ps, f32, load16_f32);
        dot_block!(dot_block_avx512_f16, "avx512f", 16, __m512, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_fmadd_ps,
            _mm512_storeu_ps, half::f16, load16_f16);
        dot_block!(dot_block_avx512_bf16, "avx512f", 16, __m512, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_fmadd_ps,
            _mm512_storeu_ps, half::bf16, load16_bf16);
        dot_block!(dot_block_avx2_f32, "avx2,fma", 8, __m256, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_fmadd_ps,
            _mm256_storeu_ps, f32, load8_f32);
        dot_block!(dot_block_avx2_f16, "avx2,fma,f16c", 8, __m256, _mm256_setzero_ps, _mm256_loadu_ps,
            _mm256_fmadd_ps, _mm256_storeu_ps, half::f16, load8_f16);
        dot_block!(dot_block_avx2_bf16, "avx2,fma", 8, __m256, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_fmadd_ps,
            _mm256_storeu_ps, half::bf16, load8_bf16);
        tile!(tile_avx512_f32, "avx512f", 16, __m512, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps,
            _mm512_storeu_ps, f32, load16_f32);
        tile!(tile_avx512_f16, "avx512f", 16, __m512, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps,
            _mm512_storeu_ps, half::f16, load16_f16);
        tile!(tile_avx512_bf16, "avx512f", 16, __m512, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps,
            _mm512_storeu_ps, half::bf16, load16_bf16);
        tile!(tile_avx2_f32, "avx2,fma", 8, __m256, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps,
            _mm256_storeu_ps, f32, load8_f32);
        tile!(tile_avx2_f16, "avx2,fma,f16c", 8, __m256, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps,
            _mm256_storeu_ps, half::f16, load8_f16);
        tile!(tile_avx2_bf16, "avx2,fma", 8, __m256, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps,
            _mm256_storeu_ps, half::bf16, load8_bf16);
    }
    pub(super) use copies::*;
}

/// [`columns`] compiled for AVX-512 or AVX2 + FMA when the CPU has them, with register blocks
/// that fit: 4 x 64 partial sums in 16 of AVX-512's 32 registers, 4 x 32 in AVX2's 16.
mod dispatch {
    use super::{Part, Weight};

    pub(super) fn columns<W: Weight>(part: Part<W>, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
            unsafe fn avx512<W: Weight>(part: Part<W>, out: &mut [f32]) {
                super::columns::<W, 64, 16, true>(part, out)
            }
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn avx2<W: Weight>(part: Part<W>, out: &mut [f32]) {
                super::columns::<W, 32, 8, true>(part, out)
            }
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
                // SAFETY: the CPU has the features the copy is compiled for (checked above;
                // every CPU with AVX-512 has F16C).
                return unsafe { avx512(part, out) };
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                // SAFETY: as above.
                return unsafe { avx2(part, out) };
            }
        }
        // SIMD128's 16 registers (as V8 allocates them) hold 4 rows x 2 vectors of sums.
        #[cfg(target_arch = "wasm32")]
        return super::columns::<W, 8, 4, false>(part, out);
        #[cfg(not(target_arch = "wasm32"))]
        super::columns::<W, 16, 4, false>(part, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product in f64, the definition.
    fn reference(x: &[f32], m: usize, w: &[f32], layout: WeightLayout, d_in: usize, d_out: usize) -> Vec<f64> {
        let at = |k: usize, j: usize| match layout {
            WeightLayout::InOut => w[k * d_out + j],
            WeightLayout::OutIn => w[j * d_in + k],
        } as f64;
        (0..m * d_out).map(|i| (0..d_in).map(|k| x[i / d_out * d_in + k] as f64 * at(k, i % d_out)).sum()).collect()
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A fixed pseudo-random sequence in [-1, 1).
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// The larger difference, NaN (an output never written) over any number.
    fn worse(a: f64, d: f64) -> f64 {
        if d.is_nan() || d > a {
            d
        } else {
            a
        }
    }

    /// The copies of [`columns`] this CPU can run for weights of type `W`: (name, function).
    #[allow(clippy::type_complexity)]
    fn copies<W: Weight>() -> Vec<(&'static str, fn(Part<W>, &mut [f32]))> {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
        let mut copies: Vec<(&'static str, fn(Part<W>, &mut [f32]))> =
            vec![("baseline", columns::<W, 16, 4, false>), ("dispatched", dispatch::columns::<W>)];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                copies.push(("avx2", |part, out| unsafe { avx2_copy(part, out) }));
            }
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
                copies.push(("avx512", |part, out| unsafe { avx512_copy(part, out) }));
            }
        }
        copies
    }

    // The copies compiled for their instruction sets, as `dispatch` compiles them.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn avx2_copy<W: Weight>(part: Part<W>, out: &mut [f32]) {
        columns::<W, 32, 8, true>(part, out)
    }
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512vl,avx2,fma,f16c")]
    unsafe fn avx512_copy<W: Weight>(part: Part<W>, out: &mut [f32]) {
        columns::<W, 64, 16, true>(part, out)
    }

    #[test]
    fn equals_the_definition_for_every_row_count_layout_ragged_shape_and_cpu_copy() {
        agrees_with_the_definition::<f32>(|v| v);
    }

    /// With the weight in f16 or bf16, the product equals the definition over the weight's
    /// values (the half-precision ones, widened exactly): the same f32 sums.
    #[test]
    fn half_precision_weights_give_the_product_of_their_values_on_every_cpu_copy() {
        agrees_with_the_definition::<half::f16>(half::f16::from_f32);
        agrees_with_the_definition::<half::bf16>(half::bf16::from_f32);
    }

    #[test]
    fn f16_widening_is_exact_for_every_value() {
        for bits in 0..=u16::MAX {
            let h = half::f16::from_bits(bits);
            let (want, got) = (h.to_f32(), h.widen());
            assert!(want.to_bits() == got.to_bits() || (want.is_nan() && got.is_nan()), "{bits:#06x}: {want} vs {got}");
        }
        for bits in (0..=u16::MAX).step_by(7) {
            let h = half::bf16::from_bits(bits);
            let (want, got) = (h.to_f32(), h.widen());
            assert!(want.to_bits() == got.to_bits() || (want.is_nan() && got.is_nan()), "{bits:#06x}: {want} vs {got}");
        }
    }

    #[test]
    fn widening_a_whole_weight_equals_widening_each_value() {
        let values = values(300_001, 3);
        let halves: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v * 70_000.0)).collect();
        let mut out = vec![0f32; halves.len()];
        widen(&halves, &mut out);
        assert!(out.iter().zip(&halves).all(|(o, h)| o.to_bits() == h.to_f32().to_bits()));
        let brains: Vec<half::bf16> = values.iter().map(|&v| half::bf16::from_f32(v)).collect();
        widen(&brains, &mut out);
        assert!(out.iter().zip(&brains).all(|(o, h)| o.to_bits() == h.to_f32().to_bits()));
    }

    /// The SIMD128 copies add each product in the portable loop's order and rounding: the same
    /// sums bit for bit, for every row count of a group, ragged inputs included.
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    #[test]
    fn in_wasm_the_simd128_copies_equal_the_portable_loops_bit_for_bit() {
        fn rows<const M: usize>() {
            let (d_in, d_out) = (37, 24);
            let x = values(M * d_in, M as u32);
            let w = values(d_in * d_out, 7);
            let mut xt = vec![0f32; d_in * M];
            (0..M).for_each(|r| (0..d_in).for_each(|k| xt[k * M + r] = x[r * d_in + k]));
            let start = values(M * 8, 9);
            let mut simd: [[f32; 8]; M] = std::array::from_fn(|r| start[r * 8..][..8].try_into().unwrap());
            let mut portable = simd;
            // SAFETY: xt holds M inputs for each of the d_in rows; each row has 8 weights from column 16.
            unsafe { wasm::tile_f32::<M, 8, 2>(&xt, &w, d_out, 16, 3..d_in, &mut simd) };
            tile_portable::<f32, M, 8, false>(&xt, &w, d_out, 16, 3..d_in, &mut portable);
            assert_eq!(simd.map(|r| r.map(f32::to_bits)), portable.map(|r| r.map(f32::to_bits)), "tile, {M} rows");
            // The dot products read x interleaved by lane blocks of 4, as `out_in` lays it out.
            let ws: [&[f32]; J] = std::array::from_fn(|j| &w[j * d_in..][..d_in]);
            let mut xs = Vec::new();
            (0..d_in / 4).for_each(|b| (0..M).for_each(|r| xs.extend_from_slice(&x[r * d_in + b * 4..][..4])));
            (0..M).for_each(|r| xs.extend_from_slice(&x[r * d_in + d_in / 4 * 4..(r + 1) * d_in]));
            // SAFETY: xs holds M x d_in inputs and each weight row d_in weights.
            let simd = unsafe { wasm::dot_block_f32::<M>(&xs, &ws, d_in) };
            let portable = dot_block_portable::<f32, M, 4, false>(&xs, &ws, d_in);
            assert_eq!(simd.map(|r| r.map(f32::to_bits)), portable.map(|r| r.map(f32::to_bits)), "dot, {M} rows");
        }
        rows::<1>();
        rows::<2>();
        rows::<3>();
        rows::<4>();
    }

    fn agrees_with_the_definition<W: Weight>(narrow: fn(f32) -> W) {
        // Row counts across and past a group of 4; widths with and without a partial block;
        // inputs with and without a partial lane block.
        for (m, d_in, d_out) in [(1, 64, 64), (3, 100, 130), (4, 576, 192), (5, 33, 1000), (8, 17, 70), (9, 256, 300)] {
            for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                let x = values(m * d_in, 1);
                let w: Vec<W> = values(d_in * d_out, 2).into_iter().map(narrow).collect();
                let want = reference(&x, m, &w.iter().map(|v| v.widen()).collect::<Vec<_>>(), layout, d_in, d_out);
                // Sums of d_in products of magnitude <= 1, rounded in f32.
                let check = |name: &str, got: &[f32]| {
                    let worst = got.iter().zip(&want).map(|(&g, &e)| (g as f64 - e).abs()).fold(0.0, worse);
                    assert!(worst < 1e-5 * d_in as f64, "{name} {layout:?} m {m}, {d_in} x {d_out}: off by {worst}");
                };
                check("product", &product(&x, m, &w, layout, d_in, d_out));
                // Each copy over a middle range of columns, as a core computes its part.
                let (c0, c1) = (d_out / 3, d_out);
                let want_part: Vec<f64> = (0..m).flat_map(|r| want[r * d_out + c0..r * d_out + c1].to_vec()).collect();
                for (name, copy) in copies::<W>() {
                    let mut got = vec![f32::NAN; m * (c1 - c0)];
                    copy(Part { x: &x, m, w: &w, layout, d_in, d_out, c0, c1 }, &mut got);
                    let worst = got.iter().zip(&want_part).map(|(&g, &e)| (g as f64 - e).abs()).fold(0.0, worse);
                    assert!(
                        worst < 1e-5 * d_in as f64,
                        "{name} {layout:?} m {m}, {d_in} x {d_out}, columns {c0}..{c1}: off by {worst}"
                    );
                }
            }
        }
    }
}
