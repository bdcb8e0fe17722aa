//! Row kernels over contiguous `f32` slices: softmax, log-softmax, SiLU and the NLL head, each
//! with its backward pass, and the vectorisable `exp` they share. Written branch-free so that
//! LLVM turns each loop into vector code; [`simd_dispatch!`] compiles every kernel a second and
//! third time for AVX2 + FMA and AVX-512 and picks one at run time (the binary stays baseline
//! x86-64). burn-flex's own `exp` is one scalar libm call per element.

/// `e^x` for `f32`: Cephes' `expf` (range reduction by ln 2 in two parts, a degree-5 polynomial,
/// the exponent written into the bits), within 2 ulp of libm for `x` in [-87.3, 88]. Inputs are
/// clamped to that range: below it the result is ~1.2e-38 instead of a denormal or 0 (nothing
/// here can tell the difference next to a softmax row's sum >= 1), above it 1.65e38 instead of
/// infinity. NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 * 2^23: adding it rounds to an integer (ties to even) and leaves that integer in the
    // low mantissa bits, so no float-to-int conversion is needed.
    const SHIFTER: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let shifted = x * LOG2E + SHIFTER;
    let n = shifted - SHIFTER;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let y = p * r * r + r + 1.0;
    // n sits in the low bits of `shifted` as a two's-complement offset from 0x4B40_0000.
    let n = shifted.to_bits().wrapping_sub(0x4B40_0000) as i32;
    y * f32::from_bits(((n + 127) as u32) << 23)
}

/// Lanes of the partial sums and maxima: wide enough for AVX-512, and an independent accumulator
/// per lane lets LLVM vectorise a float reduction it may not reorder.
const LANES: usize = 16;

#[inline(always)]
pub(super) fn max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = if v > *m { v } else { *m };
        }
    }
    tail.iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

#[inline(always)]
pub(super) fn sum(row: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (s, &v) in lanes.iter_mut().zip(c) {
            *s += v;
        }
    }
    tail.iter().sum::<f32>() + lanes.iter().sum::<f32>()
}

#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            lanes[i] += x[i] * y[i];
        }
    }
    tail + lanes.iter().sum::<f32>()
}

/// `out = softmax(x)` row by row (rows of `len`).
#[inline(always)]
pub(crate) fn softmax(x: &[f32], out: &mut [f32], len: usize) {
    for (x, out) in x.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
        let m = max(x);
        for (o, &v) in out.iter_mut().zip(x) {
            *o = exp(v - m);
        }
        let inv = 1.0 / sum(out);
        for o in out.iter_mut() {
            *o *= inv;
        }
    }
}

/// Gradient of softmax: `out = y ⊙ (g - Σ g ⊙ y)` row by row, `y` the softmax's output.
#[inline(always)]
pub(crate) fn softmax_backward(y: &[f32], g: &[f32], out: &mut [f32], len: usize) {
    for ((y, g), out) in y.chunks_exact(len).zip(g.chunks_exact(len)).zip(out.chunks_exact_mut(len)) {
        let d = dot(y, g);
        for ((o, &y), &g) in out.iter_mut().zip(y).zip(g) {
            *o = y * (g - d);
        }
    }
}

/// `out = x - logsumexp(x)` row by row.
#[inline(always)]
pub(crate) fn log_softmax(x: &[f32], out: &mut [f32], len: usize) {
    for (x, out) in x.chunks_exact(len).zip(out.chunks_exact_mut(len)) {
        let lse = logsumexp(x, out);
        for (o, &v) in out.iter_mut().zip(x) {
            *o = v - lse;
        }
    }
}

/// `log Σ e^x` of one row, with `scratch` (the row's length) for the exponentials.
#[inline(always)]
fn logsumexp(x: &[f32], scratch: &mut [f32]) -> f32 {
    let m = max(x);
    for (s, &v) in scratch.iter_mut().zip(x) {
        *s = exp(v - m);
    }
    m + sum(scratch).ln()
}

/// Gradient of log-softmax: `out = g - e^y Σ g` row by row, `y` the log-softmax's output.
#[inline(always)]
pub(crate) fn log_softmax_backward(y: &[f32], g: &[f32], out: &mut [f32], len: usize) {
    for ((y, g), out) in y.chunks_exact(len).zip(g.chunks_exact(len)).zip(out.chunks_exact_mut(len)) {
        let total = sum(g);
        for ((o, &y), &g) in out.iter_mut().zip(y).zip(g) {
            *o = g - exp(y) * total;
        }
    }
}

/// `out = x · sigmoid(x)`.
#[inline(always)]
pub(crate) fn silu(x: &[f32], out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = v / (1.0 + exp(-v));
    }
}

/// Gradient of SiLU: `out = g · s · (1 + x (1 - s))` with `s = sigmoid(x)`.
#[inline(always)]
pub(crate) fn silu_backward(x: &[f32], g: &[f32], out: &mut [f32]) {
    for ((o, &x), &g) in out.iter_mut().zip(x).zip(g) {
        let s = 1.0 / (1.0 + exp(-x));
        *o = g * s * (1.0 + x * (1.0 - s));
    }
}

/// Negative log-likelihood of each row's target: `out[i] = logsumexp(x_i) - x_i[t_i]`, with
/// `scratch` one row long.
#[inline(always)]
pub(crate) fn nll(x: &[f32], targets: &[usize], out: &mut [f32], scratch: &mut [f32], len: usize) {
    for ((x, &t), o) in x.chunks_exact(len).zip(targets).zip(out.iter_mut()) {
        *o = logsumexp(x, scratch) - x[t];
    }
}

/// Gradient of [`nll`] for the logits: `out_i = g_i (softmax(x_i) - onehot(t_i))`, the softmax
/// recovered from the forward's output as `e^(x - logsumexp)` with `logsumexp = nll + x[t]`.
#[inline(always)]
pub(crate) fn nll_backward(x: &[f32], targets: &[usize], nll: &[f32], g: &[f32], out: &mut [f32], len: usize) {
    for ((((x, &t), &l), &g), out) in x.chunks_exact(len).zip(targets).zip(nll).zip(g).zip(out.chunks_exact_mut(len)) {
        let lse = l + x[t];
        for (o, &v) in out.iter_mut().zip(x) {
            *o = g * exp(v - lse);
        }
        out[t] -= g;
    }
}

/// Defines `pub(crate) fn $name(args)` that runs `$kernel(args)` compiled for AVX-512 or AVX2 +
/// FMA when the CPU has them (checked once per call: `is_x86_feature_detected!` caches), else as
/// built. The kernels are `#[inline(always)]`, so each copy is vectorised for its features.
macro_rules! simd_dispatch {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) => $kernel:path;)*) => {$(
        pub(crate) fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) { $kernel($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) { $kernel($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
                    // SAFETY: the CPU has the features the copy is compiled for (checked above).
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $kernel($($arg),*)
        }
    )*};
}
pub(super) use simd_dispatch;

/// The kernels as the backend calls them: the best copy for this CPU.
pub(crate) mod dispatch {
    simd_dispatch! {
        fn softmax(x: &[f32], out: &mut [f32], len: usize) => super::softmax;
        fn softmax_backward(y: &[f32], g: &[f32], out: &mut [f32], len: usize) => super::softmax_backward;
        fn log_softmax(x: &[f32], out: &mut [f32], len: usize) => super::log_softmax;
        fn log_softmax_backward(y: &[f32], g: &[f32], out: &mut [f32], len: usize) => super::log_softmax_backward;
        fn silu(x: &[f32], out: &mut [f32]) => super::silu;
        fn silu_backward(x: &[f32], g: &[f32], out: &mut [f32]) => super::silu_backward;
        fn nll(x: &[f32], targets: &[usize], out: &mut [f32], scratch: &mut [f32], len: usize) => super::nll;
        fn nll_backward(x: &[f32], targets: &[usize], nll: &[f32], g: &[f32], out: &mut [f32], len: usize) => super::nll_backward;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite floats of the same sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm_over_its_range() {
        let mut worst = (0, 0.0f32);
        let mut x = -87.3f32;
        while x <= 88.0 {
            let u = ulps(exp(x), x.exp());
            if u > worst.0 {
                worst = (u, x);
            }
            x += 0.0013;
        }
        assert!(worst.0 <= 2, "exp({}) is {} ulp from libm", worst.1, worst.0);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn exp_saturates_instead_of_overflowing_and_keeps_nan() {
        assert!(exp(-1e9) > 0.0 && exp(-1e9) < 1.3e-38);
        assert!(exp(1e9).is_finite() && exp(1e9) > 1e38);
        assert!(exp(f32::NAN).is_nan());
    }

    fn rows(len: usize, n: usize) -> Vec<f32> {
        (0..len * n).map(|i| ((i * 7919 % 1000) as f32 / 50.0 - 10.0) * if i % 13 == 0 { 3.0 } else { 1.0 }).collect()
    }

    #[test]
    fn kernels_match_their_definitions_in_f64() {
        // 37: not a multiple of the lanes, so the tails are covered.
        let (len, n) = (37, 5);
        let x = rows(len, n);
        let g: Vec<f32> = rows(len, n).iter().map(|v| v.sin()).collect();
        let close =
            |a: f32, b: f64, what: &str| assert!((a as f64 - b).abs() <= 2e-6 * (1.0 + b.abs()), "{what}: {a} vs {b}");
        let mut y = vec![0f32; x.len()];
        let mut out = vec![0f32; x.len()];
        dispatch::softmax(&x, &mut y, len);
        dispatch::softmax_backward(&y, &g, &mut out, len);
        let mut ly = vec![0f32; x.len()];
        let mut lout = vec![0f32; x.len()];
        dispatch::log_softmax(&x, &mut ly, len);
        dispatch::log_softmax_backward(&ly, &g, &mut lout, len);
        for r in 0..n {
            let row = &x[r * len..(r + 1) * len];
            let gr = &g[r * len..(r + 1) * len];
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            let p: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp() / s).collect();
            let d: f64 = p.iter().zip(gr).map(|(p, &g)| p * g as f64).sum();
            let gs: f64 = gr.iter().map(|&g| g as f64).sum();
            for i in 0..len {
                close(y[r * len + i], p[i], "softmax");
                close(out[r * len + i], p[i] * (gr[i] as f64 - d), "softmax backward");
                close(ly[r * len + i], row[i] as f64 - m - s.ln(), "log-softmax");
                close(lout[r * len + i], gr[i] as f64 - p[i] * gs, "log-softmax backward");
            }
        }
        let mut s = vec![0f32; x.len()];
        let mut sg = vec![0f32; x.len()];
        dispatch::silu(&x, &mut s);
        dispatch::silu_backward(&x, &g, &mut sg);
        for i in 0..x.len() {
            let (v, gi) = (x[i] as f64, g[i] as f64);
            let sig = 1.0 / (1.0 + (-v).exp());
            close(s[i], v * sig, "silu");
            close(sg[i], gi * sig * (1.0 + v * (1.0 - sig)), "silu backward");
        }
        let targets: Vec<usize> = (0..n).map(|r| (r * 11) % len).collect();
        let (mut l, mut scratch, mut lg) = (vec![0f32; n], vec![0f32; len], vec![0f32; x.len()]);
        let gn: Vec<f32> = (0..n).map(|r| 0.5 + r as f32).collect();
        dispatch::nll(&x, &targets, &mut l, &mut scratch, len);
        dispatch::nll_backward(&x, &targets, &l, &gn, &mut lg, len);
        for r in 0..n {
            let row = &x[r * len..(r + 1) * len];
            let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
            close(l[r], lse - row[targets[r]] as f64, "nll");
            for i in 0..len {
                let onehot = if i == targets[r] { 1.0 } else { 0.0 };
                close(lg[r * len + i], gn[r] as f64 * ((row[i] as f64 - lse).exp() - onehot), "nll backward");
            }
        }
    }
}
