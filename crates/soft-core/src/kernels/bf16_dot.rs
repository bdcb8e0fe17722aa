//! Matrix products in bf16 dot products (AVX512_BF16's `vdpbf16ps`): `a` `[m, k]` in f32,
//! rounded to bf16 (to nearest, ties to even), times a bf16 matrix `b` `[k, n]`, each pair of
//! products added into f32 sums. One instruction does 32 multiply-adds where an f32 FMA does
//! 16, so on a CPU that splits 512-bit FMAs over two 256-bit pipes (Zen 4: one a cycle) the
//! frozen weights' products of a training step can run at up to twice the f32 peak. The price
//! is `a`'s precision: 8 significant bits instead of 24 (the sums stay f32), as in PyTorch's
//! bf16 autocast; the weights lose nothing when they are stored in bf16.
//!
//! The layout is BLIS's: `k` in blocks of [`KC`] pairs; per block, `a`'s rows converted to bf16
//! pairs, `b` packed panel by panel ([`NR`] columns, each pair of `k` interleaved as one 32-bit
//! word per column, the order `vdpbf16ps` reads), and a micro-kernel that keeps an [`MR`] x
//! [`NR`] tile of sums in registers. Rows are split across the cores, each part its own
//! product, so a part packs its own panels (`b` is small next to the rows times `k` that read
//! each panel).

// The kernel is x86-64's; elsewhere `available()` is false and nothing here runs.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_mut))]

use half::bf16;

/// Rows of a micro-kernel tile.
const MR: usize = 8;
/// Columns of a micro-kernel tile: three 16-lane vectors (24 sums and three panel vectors of the
/// 32 registers).
const NR: usize = 48;
/// Pairs of `k` per block, at most.
const KC: usize = 1024;

/// A bf16 matrix `[k, n]` where it lies: element `(i, j)` at `data[i * sk + j * sn]`.
#[derive(Debug, Clone, Copy)]
pub struct Bf16Matrix<'a> {
    pub data: &'a [bf16],
    pub k: usize,
    pub n: usize,
    pub sk: usize,
    pub sn: usize,
}

impl Bf16Matrix<'_> {
    fn at(&self, i: usize, j: usize) -> u16 {
        self.data[i * self.sk + j * self.sn].to_bits()
    }
}

/// True when the CPU has `vdpbf16ps` (and the AVX-512 the packing uses).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// `a` `[m, k]` (row-major f32, rounded to bf16) times `b` `[k, n]`: `[m, n]` row-major, f32
/// sums. Rows are split across burn-flex's rayon pool. Panics when the CPU lacks the
/// instructions ([`available`]) or the shapes disagree.
pub fn matmul(a: &[f32], m: usize, b: Bf16Matrix) -> Vec<f32> {
    assert!(available(), "bf16 dot products need AVX512_BF16");
    assert_eq!(a.len(), m * b.k, "bf16 matmul: a has {} elements, not {m} x {}", a.len(), b.k);
    if m == 0 || b.n == 0 || b.k == 0 {
        return vec![0f32; m * b.n];
    }
    // Left unwritten: the first block of `k` stores every element (fresh pages written once).
    let mut out: Vec<f32> = Vec::with_capacity(m * b.n);
    #[cfg(target_arch = "x86_64")]
    {
        // Parts of whole tiles, at least 64 rows each (a panel's packing read by enough rows).
        let parts = rayon::current_num_threads().min(m.div_ceil(64)).max(1);
        let rows = m.div_ceil(parts).div_ceil(MR) * MR;
        use rayon::prelude::*;
        out.spare_capacity_mut()[..m * b.n].par_chunks_mut(rows * b.n).enumerate().for_each(|(p, c)| {
            let r = c.len() / b.n;
            // SAFETY: `available()` checked the CPU features the kernel is compiled for; `part`
            // writes every element of `c`.
            unsafe { part(&a[p * rows * b.k..][..r * b.k], r, b, c.as_mut_ptr().cast()) }
        });
        // SAFETY: every part wrote all of its elements.
        unsafe { out.set_len(m * b.n) };
    }
    out
}

thread_local! {
    /// Each thread's packed rows of `a` and panel of `b`, kept between products: fresh buffers
    /// would be zeroed and page-faulted in on every product.
    static SCRATCH: std::cell::RefCell<(Vec<u32>, Vec<u32>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// One part's rows `a` `[m, k]` (`k` > 0) times `b` into `c` `[m, n]` (row-major), every
/// element written.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn part(a: &[f32], m: usize, b: Bf16Matrix, c: *mut f32) {
    let pairs = b.k.div_ceil(2);
    let tiles = m.div_ceil(MR);
    // Blocks of equal size.
    let block = pairs.div_ceil(pairs.div_ceil(KC));
    SCRATCH.with_borrow_mut(|(a_block, panel)| {
        // `a`'s rows as bf16 pairs for one block of `k`, in `MR`-row tiles (rows past `m` are
        // stale values, multiplied into sums that are never stored).
        let grow = |v: &mut Vec<u32>, len: usize| {
            if v.len() < len {
                v.resize(len, 0);
            }
        };
        grow(a_block, tiles * MR * block);
        grow(panel, block * NR);
        blocks(a, m, &b, c, a_block, panel, block);
    })
}

/// [`part`]'s work over its scratch buffers, block by block of `block` pairs of `k`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn blocks(
    a: &[f32],
    m: usize,
    b: &Bf16Matrix,
    c: *mut f32,
    a_block: &mut [u32],
    panel: &mut [u32],
    block: usize,
) {
    let (k, n) = (b.k, b.n);
    let (pairs, tiles) = (k.div_ceil(2), m.div_ceil(MR));
    for p0 in (0..pairs).step_by(block) {
        let kc = block.min(pairs - p0);
        for r in 0..m {
            pack_row(&a[r * k..][..k], p0, kc, &mut a_block[r * kc..][..kc]);
        }
        for j0 in (0..n).step_by(NR) {
            let nr = NR.min(n - j0);
            pack_panel(b, p0, kc, j0, nr, &mut panel[..kc * NR]);
            for t in 0..tiles {
                let mr = MR.min(m - t * MR);
                tile(kc, a_block.as_ptr().add(t * MR * kc), panel.as_ptr(), c.add(t * MR * n + j0), n, mr, nr, p0 == 0);
            }
        }
    }
}

/// Pairs `p0..p0 + kc` of one row of `a` as bf16 pairs (low half the even element), the last
/// pair's odd element zero when `k` is odd.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pack_row(row: &[f32], p0: usize, kc: usize, out: &mut [u32]) {
    use std::arch::x86_64::{__m512i, _mm512_cvtne2ps_pbh, _mm512_loadu_ps, _mm512_storeu_si512};
    let src = &row[2 * p0..row.len().min(2 * (p0 + kc))];
    let mut q = 0;
    // 32 values (16 pairs) at a time: `vcvtne2ps2bf16` puts its second operand's in the low half.
    while 2 * q + 32 <= src.len() {
        let lo = _mm512_loadu_ps(src.as_ptr().add(2 * q));
        let hi = _mm512_loadu_ps(src.as_ptr().add(2 * q + 16));
        let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
        _mm512_storeu_si512(out.as_mut_ptr().add(q).cast(), packed);
        q += 16;
    }
    while q < kc {
        let even = bf16::from_f32(src[2 * q]).to_bits();
        let odd = src.get(2 * q + 1).map_or(0, |&x| bf16::from_f32(x).to_bits());
        out[q] = u32::from(even) | (u32::from(odd) << 16);
        q += 1;
    }
}

/// Pairs `p0..p0 + kc` of columns `j0..j0 + nr` of `b` as a panel: word `q * NR + j` holds
/// `b[2(p0 + q), j0 + j]` (low half) and `b[2(p0 + q) + 1, j0 + j]`; columns past `nr` and a
/// row past `k` are zero.
fn pack_panel(b: &Bf16Matrix, p0: usize, kc: usize, j0: usize, nr: usize, panel: &mut [u32]) {
    if nr < NR {
        panel.fill(0);
    }
    let odd_tail = b.k % 2 == 1 && p0 + kc == b.k.div_ceil(2);
    let full = if odd_tail { kc - 1 } else { kc };
    if b.sn == 1 {
        // Rows contiguous over `n` (a row-major weight): two rows interleaved.
        for q in 0..full {
            let i = 2 * (p0 + q);
            let (even, odd) = (&b.data[i * b.sk + j0..][..nr], &b.data[(i + 1) * b.sk + j0..][..nr]);
            let words = &mut panel[q * NR..][..nr];
            for ((w, e), o) in words.iter_mut().zip(even).zip(odd) {
                *w = u32::from(e.to_bits()) | (u32::from(o.to_bits()) << 16);
            }
        }
    } else if b.sk == 1 {
        // Columns contiguous over `k` (a transposed row-major weight): each pair is one word.
        for j in 0..nr {
            let column = &b.data[(j0 + j) * b.sn + 2 * p0..][..2 * full];
            for (q, pair) in column.chunks_exact(2).enumerate() {
                panel[q * NR + j] = u32::from(pair[0].to_bits()) | (u32::from(pair[1].to_bits()) << 16);
            }
        }
    } else {
        for q in 0..full {
            for j in 0..nr {
                let i = 2 * (p0 + q);
                panel[q * NR + j] = u32::from(b.at(i, j0 + j)) | (u32::from(b.at(i + 1, j0 + j)) << 16);
            }
        }
    }
    if odd_tail {
        let q = kc - 1;
        for j in 0..nr {
            panel[q * NR + j] = u32::from(b.at(2 * (p0 + q), j0 + j));
        }
    }
}

/// The micro-kernel: `c[..mr, ..nr]` (row stride `ldc`) += the tile's `MR` rows of `a`
/// (`kc` words each, consecutive) times the panel (`kc` x [`NR`] words); `=` for the `first`
/// block of `k`, which leaves `c`'s fresh zero pages unread (a read then a write of a fresh page
/// are two page faults).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile(
    kc: usize,
    a: *const u32,
    panel: *const u32,
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    first: bool,
) {
    use std::arch::x86_64::{
        __m512bh, __mmask16, _mm512_add_ps, _mm512_dpbf16_ps, _mm512_loadu_si512, _mm512_mask_storeu_ps,
        _mm512_maskz_loadu_ps, _mm512_set1_epi32, _mm512_setzero_ps,
    };
    const V: usize = NR / 16;
    let mut acc = [[_mm512_setzero_ps(); V]; MR];
    for q in 0..kc {
        let b: [__m512bh; V] =
            std::array::from_fn(|v| std::mem::transmute(_mm512_loadu_si512(panel.add(q * NR + 16 * v).cast())));
        for (r, sums) in acc.iter_mut().enumerate() {
            let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(r * kc + q) as i32));
            for v in 0..V {
                sums[v] = _mm512_dpbf16_ps(sums[v], a, b[v]);
            }
        }
    }
    for (r, sums) in acc.iter().enumerate().take(mr) {
        for (v, &s) in sums.iter().enumerate() {
            let cols = nr.saturating_sub(16 * v).min(16);
            if cols == 0 {
                break;
            }
            let mask: __mmask16 = if cols == 16 { !0 } else { (1u16 << cols) - 1 };
            let at = c.add(r * ldc + 16 * v);
            let sum = if first { s } else { _mm512_add_ps(_mm512_maskz_loadu_ps(mask, at), s) };
            _mm512_mask_storeu_ps(at, mask, sum);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product in f64 of `a` rounded to bf16 and `b`: what the kernel computes, up to the
    /// order of its f32 sums.
    fn reference(a: &[f32], m: usize, b: &Bf16Matrix) -> Vec<f64> {
        let mut out = vec![0f64; m * b.n];
        for r in 0..m {
            for j in 0..b.n {
                out[r * b.n + j] = (0..b.k)
                    .map(|i| {
                        f64::from(bf16::from_f32(a[r * b.k + i]).to_f32())
                            * f64::from(bf16::from_bits(b.at(i, j)).to_f32())
                    })
                    .sum();
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / (1 << 24) as f32 - 0.5)
            .collect()
    }

    #[test]
    fn products_in_every_layout_and_edge_equal_the_f64_product_of_the_rounded_values() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX512_BF16");
            return;
        }
        // Odd k, k past one block, rows and columns past whole tiles and panels.
        for &(m, k, n) in &[(1, 1, 1), (9, 7, 50), (70, 257, 97), (130, 576, 48), (17, 300, 200)] {
            let a = values(m * k, 1);
            let w: Vec<bf16> = values(k * n, 2).into_iter().map(bf16::from_f32).collect();
            // `w` as [k, n] row-major, as its transpose stored [n, k], and through strides that
            // are neither.
            let row_major = Bf16Matrix { data: &w, k, n, sk: n, sn: 1 };
            let transposed: Vec<bf16> = (0..n * k).map(|x| w[(x % k) * n + x / k]).collect();
            let column_major = Bf16Matrix { data: &transposed, k, n, sk: 1, sn: k };
            let (sk, sn) = (2 * n + 1, 2);
            let mut spread = vec![bf16::ZERO; k * sk];
            for i in 0..k {
                for j in 0..n {
                    spread[i * sk + j * sn] = w[i * n + j];
                }
            }
            let strided = Bf16Matrix { data: &spread, k, n, sk, sn };
            for b in [row_major, column_major, strided] {
                let got = matmul(&a, m, b);
                let want = reference(&a, m, &b);
                for (idx, (g, w)) in got.iter().zip(&want).enumerate() {
                    // f32 sums of k products of magnitude < 0.25.
                    assert!((f64::from(*g) - w).abs() <= 1e-6 * k as f64, "({m}, {k}, {n}) at {idx}: {g} vs {w}");
                }
            }
        }
    }
}
