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
/// `out` (`g · d`). `scores` is scratch of at least the parts' total length.
#[inline(always)]
fn attend(q: &[f32], parts: [(&[f32], &[f32], &[f32]); 2], d: usize, scale: f32, scores: &mut [f32], out: &mut [f32]) {
    let n: usize = parts.iter().map(|p| p.2.len()).sum();
    let scores = &mut scores[..n];
    for (q, out) in q.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mut s = 0;
        for (keys, _, bias) in parts {
            for (k, &b) in keys.chunks_exact(d).zip(bias) {
                scores[s] = dot(q, k) * scale + b;
                s += 1;
            }
        }
        let m = max(scores);
        for x in scores.iter_mut() {
            *x = exp(*x - m);
        }
        let inv = 1.0 / sum(scores);
        out.fill(0.0);
        let mut s = 0;
        for (_, values, bias) in parts {
            for v in values.chunks_exact(d).take(bias.len()) {
                let p = scores[s] * inv;
                for (o, &v) in out.iter_mut().zip(v) {
                    *o += p * v;
                }
                s += 1;
            }
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

    #[test]
    fn attention_over_two_parts_equals_one_softmax_over_both() {
        let d = 3;
        let q = [0.5, -1.0, 2.0, 1.0, 0.0, -0.5]; // two query heads
        let keys: Vec<f32> = (0..5 * d).map(|i| ((i * 7 % 11) as f32 - 5.0) / 4.0).collect();
        let values: Vec<f32> = (0..5 * d).map(|i| ((i * 5 % 13) as f32 - 6.0) / 3.0).collect();
        let bias = [0.0, -1e9, 0.0, 0.0, 0.0];
        let scale = 0.7;
        let mut scores = [0.0; 5];
        let (mut split, mut whole) = ([0.0; 6], [0.0; 6]);
        let parts = [(&keys[..2 * d], &values[..2 * d], &bias[..2]), (&keys[2 * d..], &values[2 * d..], &bias[2..])];
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
                assert!((split[h * d + c] as f64 - expected).abs() < 1e-5, "head {h} dim {c}");
                assert!((whole[h * d + c] as f64 - expected).abs() < 1e-5, "head {h} dim {c}");
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
