//! The vector work of a fused decoding step besides its products (`few_rows`): RMSNorm, the
//! rotary embedding, attention of one key/value head's query group over its cached keys, and
//! SwiGLU's gate. Branch-free loops over contiguous f32 rows, compiled per CPU like
//! [`rows`](super::rows).

use super::rows::{dot, exp, max, simd_dispatch, sum};

/// `out = x / √(mean(x²) + eps) · gamma` for each row of `x` (rows of `gamma.len()`): burn's
/// `RmsNorm` in f32.
#[inline(always)]
fn rms_norm(x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
    let len = gamma.len();
    for (x, out) in x.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
        let rms = (dot(x, x) / len as f32 + eps).sqrt();
        for ((o, &v), &g) in out.iter_mut().zip(x).zip(gamma) {
            *o = v / rms * g;
        }
    }
}

/// Rotates every head (of `2 · cos.len()` values) of `x` in Hugging Face's "rotate half" form:
/// dimension `i` of a head's first half pairs with `i + D/2`, by the angle whose cosine and sine
/// are `cos[i]`, `sin[i]`.
#[inline(always)]
fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for head in x.chunks_exact_mut(2 * half) {
        let (a, b) = head.split_at_mut(half);
        for i in 0..half {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * cos[i] - x2 * sin[i];
            b[i] = x2 * cos[i] + x1 * sin[i];
        }
    }
}

/// Attention of the query heads `q` (`g` heads of `d`, one row) that share one key/value head,
/// over that head's keys and values in `parts` (each `[n, d]` row-major with its additive bias
/// `[n]`: a shared prefix and the row's own positions): `softmax(q·kᵀ·scale + bias)·v` into
/// `out` (`g · d`). `scores` is scratch of at least `g` times the parts' total length. Head
/// sizes of 64 and 128 (every model here) sum the values in registers.
#[inline(always)]
fn attend(q: &[f32], parts: [(&[f32], &[f32], &[f32]); 2], d: usize, scale: f32, scores: &mut [f32], out: &mut [f32]) {
    let n: usize = parts.iter().map(|p| p.2.len()).sum();
    let scores = &mut scores[..q.len() / d * n];
    for (q, row) in q.chunks_exact(d).zip(scores.chunks_exact_mut(n)) {
        let (prefix, own) = row.split_at_mut(parts[0].2.len());
        head_scores(q, parts[0].0, parts[0].2, scale, prefix);
        head_scores(q, parts[1].0, parts[1].2, scale, own);
        softmax_in_place(row);
    }
    match d {
        64 => weigh_values_fixed::<64>(parts, scores, out),
        128 => weigh_values_fixed::<128>(parts, scores, out),
        _ => weigh_values(parts, d, scores, out),
    }
}

/// `out` (`g · D`) = each head's probabilities `probs` (`g` rows over the parts' positions)
/// times the parts' values, the head's sums in registers.
#[inline(always)]
fn weigh_values_fixed<const D: usize>(parts: [(&[f32], &[f32], &[f32]); 2], probs: &[f32], out: &mut [f32]) {
    let n = probs.len() / (out.len() / D);
    for (out, row) in out.chunks_exact_mut(D).zip(probs.chunks_exact(n)) {
        let mut acc = [0f32; D];
        let values = parts.iter().flat_map(|(_, values, bias)| values.chunks_exact(D).take(bias.len()));
        for (v, &p) in values.zip(row) {
            let v: &[f32; D] = v.try_into().expect("D values");
            for c in 0..D {
                acc[c] += p * v[c];
            }
        }
        out.copy_from_slice(&acc);
    }
}

/// [`weigh_values_fixed`] for any head size `d`.
#[inline(always)]
fn weigh_values(parts: [(&[f32], &[f32], &[f32]); 2], d: usize, probs: &[f32], out: &mut [f32]) {
    let n = probs.len() / (out.len() / d);
    out.fill(0.0);
    for (out, row) in out.chunks_exact_mut(d).zip(probs.chunks_exact(n)) {
        let values = parts.iter().flat_map(|(_, values, bias)| values.chunks_exact(d).take(bias.len()));
        for (v, &p) in values.zip(row) {
            for (o, &v) in out.iter_mut().zip(v) {
                *o += p * v;
            }
        }
    }
}

#[inline(always)]
fn softmax_in_place(row: &mut [f32]) {
    let m = max(row);
    for x in row.iter_mut() {
        *x = exp(*x - m);
    }
    let inv = 1.0 / sum(row);
    row.iter_mut().for_each(|x| *x *= inv);
}

/// `out[s] = q·k_s · scale + bias[s]` for each key `k_s` (`[n, q.len()]` row-major) of one
/// head. On x86-64 with intrinsics: the portable loop, once inlined into a kernel, is
/// vectorised across keys with gathers (a tenth of a beam search's samples).
fn head_scores(q: &[f32], keys: &[f32], bias: &[f32], scale: f32, out: &mut [f32]) {
    let d = q.len();
    assert!(keys.len() >= bias.len() * d && out.len() >= bias.len(), "scores: short keys or output");
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if d.is_multiple_of(16) && has!("avx512f") {
            // SAFETY: the CPU has AVX-512F; the lengths are checked above.
            return unsafe { simd::scores_avx512(q, keys, bias, scale, out) };
        }
        if d.is_multiple_of(8) && has!("avx2") && has!("fma") {
            // SAFETY: the CPU has AVX2 and FMA; the lengths are checked above.
            return unsafe { simd::scores_avx2(q, keys, bias, scale, out) };
        }
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    if d.is_multiple_of(4) {
        // SAFETY: the lengths are checked above.
        return unsafe { wasm::scores(q, keys, bias, scale, out) };
    }
    for ((k, &b), o) in keys.chunks_exact(d).zip(bias).zip(out.iter_mut()) {
        *o = dot(q, k) * scale + b;
    }
}

/// The scores in WebAssembly SIMD128, four keys at a time (the portable loop reduces 16 lanes
/// per key: most of its time at a head size of 64).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use std::arch::wasm32::*;

    /// # Safety
    /// `keys` must hold `bias.len()` keys of `q.len()` values, `out` at least `bias.len()`
    /// values, and `q.len()` must be a multiple of 4.
    #[inline(always)]
    pub(super) unsafe fn scores(q: &[f32], keys: &[f32], bias: &[f32], scale: f32, out: &mut [f32]) {
        let d = q.len();
        let n = bias.len();
        let (qp, kp) = (q.as_ptr(), keys.as_ptr());
        let sum = |v: v128| {
            let pair = f32x4_add(v, i32x4_shuffle::<2, 3, 0, 1>(v, v));
            f32x4_extract_lane::<0>(f32x4_add(pair, i32x4_shuffle::<1, 0, 3, 2>(pair, pair)))
        };
        let mut s = 0;
        while s + 4 <= n {
            let mut acc = [f32x4_splat(0.0); 4];
            for c in (0..d).step_by(4) {
                // SAFETY (all loads): c + 4 <= d; keys s..s + 4 have d values each.
                let qv = unsafe { v128_load(qp.add(c).cast()) };
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = f32x4_add(*a, f32x4_mul(qv, unsafe { v128_load(kp.add((s + j) * d + c).cast()) }));
                }
            }
            for j in 0..4 {
                out[s + j] = sum(acc[j]) * scale + bias[s + j];
            }
            s += 4;
        }
        for s in s..n {
            let mut acc = f32x4_splat(0.0);
            for c in (0..d).step_by(4) {
                // SAFETY: as above.
                acc = f32x4_add(acc, f32x4_mul(unsafe { v128_load(qp.add(c).cast()) }, unsafe {
                    v128_load(kp.add(s * d + c).cast())
                }));
            }
            out[s] = sum(acc) * scale + bias[s];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scores_avx512(q: &[f32], keys: &[f32], bias: &[f32], scale: f32, out: &mut [f32]) {
        let d = q.len();
        for (s, &b) in bias.iter().enumerate() {
            let k = keys[s * d..].as_ptr();
            let mut acc = _mm512_setzero_ps();
            for c in (0..d).step_by(16) {
                // SAFETY: c + 16 <= d (d is a multiple of 16) and key s has d values.
                acc = unsafe { _mm512_fmadd_ps(_mm512_loadu_ps(q.as_ptr().add(c)), _mm512_loadu_ps(k.add(c)), acc) };
            }
            out[s] = _mm512_reduce_add_ps(acc) * scale + b;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn scores_avx2(q: &[f32], keys: &[f32], bias: &[f32], scale: f32, out: &mut [f32]) {
        let d = q.len();
        for (s, &b) in bias.iter().enumerate() {
            let k = keys[s * d..].as_ptr();
            let mut acc = _mm256_setzero_ps();
            for c in (0..d).step_by(8) {
                // SAFETY: c + 8 <= d (d is a multiple of 8) and key s has d values.
                acc = unsafe { _mm256_fmadd_ps(_mm256_loadu_ps(q.as_ptr().add(c)), _mm256_loadu_ps(k.add(c)), acc) };
            }
            let half = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
            let pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
            let one = _mm_add_ss(pair, _mm_shuffle_ps::<1>(pair, pair));
            out[s] = _mm_cvtss_f32(one) * scale + b;
        }
    }
}

/// `gate = silu(gate) · up`, SwiGLU's elementwise step.
#[inline(always)]
fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp(-*g)) * u;
    }
}

/// The kernels as the step calls them: the best copy for this CPU.
pub(crate) mod dispatch {
    use super::simd_dispatch;

    simd_dispatch! {
        fn rms_norm(x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) => super::rms_norm;
        fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32]) => super::rotate;
        fn attend(q: &[f32], parts: [(&[f32], &[f32], &[f32]); 2], d: usize, scale: f32, scores: &mut [f32], out: &mut [f32]) => super::attend;
        fn swiglu(gate: &mut [f32], up: &[f32]) => super::swiglu;
    }
}

#[cfg(test)]
mod tests {
    use super::dispatch;

    #[test]
    fn rms_norm_scales_rows_to_unit_root_mean_square_times_gain() {
        let x = [3.0, 4.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let gamma = [1.0, 2.0, 1.0, 1.0];
        let mut out = [0.0; 8];
        dispatch::rms_norm(&x, &gamma, 0.0, &mut out);
        // Row 1: rms = √(25/4) = 2.5; row 2: rms 1.
        let expected = [1.2, 3.2, 0.0, 0.0, 1.0, 2.0, 1.0, 1.0];
        assert!(out.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{out:?}");
    }

    #[test]
    fn rotation_by_a_quarter_turn_swaps_halves_with_a_sign() {
        // One head of 4: pairs (0, 2) and (1, 3); angles π/2 and 0.
        let mut x = [1.0, 2.0, 3.0, 4.0];
        dispatch::rotate(&mut x, &[0.0, 1.0], &[1.0, 0.0]);
        assert_eq!(x, [-3.0, 2.0, 1.0, 4.0]);
    }

    /// For a head size of the general copy (3) and of both fixed ones (64, 128).
    #[test]
    fn attention_over_two_parts_equals_one_softmax_over_both() {
        for d in [3, 64, 128] {
            let value = |i: usize, a: usize, b: usize| ((i * a % b) as f32 - (b / 2) as f32) / (b as f32 * 0.6);
            let q: Vec<f32> = (0..2 * d).map(|i| value(i, 3, 7)).collect(); // two query heads
            let keys: Vec<f32> = (0..5 * d).map(|i| value(i, 7, 11)).collect();
            let values: Vec<f32> = (0..5 * d).map(|i| value(i, 5, 13)).collect();
            let bias = [0.0, -1e9, 0.0, 0.0, 0.0];
            let scale = 0.7 / (d as f32).sqrt();
            let mut scores = [0.0; 10];
            let (mut split, mut whole) = (vec![0.0; 2 * d], vec![0.0; 2 * d]);
            let parts =
                [(&keys[..2 * d], &values[..2 * d], &bias[..2]), (&keys[2 * d..], &values[2 * d..], &bias[2..])];
            dispatch::attend(&q, parts, d, scale, &mut scores, &mut split);
            dispatch::attend(&q, [(&keys, &values, &bias), (&[], &[], &[])], d, scale, &mut scores, &mut whole);
            // By the definition, per head.
            for h in 0..2 {
                let qh = &q[h * d..(h + 1) * d];
                let s: Vec<f64> = (0..5)
                    .map(|j| {
                        let k = &keys[j * d..(j + 1) * d];
                        qh.iter().zip(k).map(|(a, b)| (a * b) as f64).sum::<f64>() * scale as f64 + bias[j] as f64
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                let total: f64 = e.iter().sum();
                for c in 0..d {
                    let expected: f64 = (0..5).map(|j| e[j] / total * values[j * d + c] as f64).sum();
                    assert!((split[h * d + c] as f64 - expected).abs() < 1e-5, "d {d}, head {h}, dim {c}");
                    assert!((whole[h * d + c] as f64 - expected).abs() < 1e-5, "d {d}, head {h}, dim {c}");
                }
            }
        }
    }

    #[test]
    fn swiglu_is_silu_of_gate_times_up() {
        let mut gate = [0.0, 1.0, -2.0];
        dispatch::swiglu(&mut gate, &[3.0, 2.0, 1.0]);
        let silu = |x: f32| x / (1.0 + (-x).exp());
        let expected = [0.0, silu(1.0) * 2.0, silu(-2.0)];
        assert!(gate.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{gate:?}");
    }
}
