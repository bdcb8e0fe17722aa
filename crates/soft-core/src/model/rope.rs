//! Rotary position embedding (RoPE) in Hugging Face's "rotate half" form, with the frequency
//! scalings of [`RopeScaling`] computed as transformers computes them.

use burn::tensor::{Int, Tensor, TensorData};

use super::config::{RopeScaling, RopeSetting};

/// The `head_dim / 2` inverse frequencies of `setting`: `f_i = theta^(-2i/D)`, rescaled as its
/// [`RopeScaling`] says (transformers' `_compute_default_rope_parameters` and
/// `_compute_llama3_parameters`). Computed in f64 and rounded once to f32 here, step by step in
/// f32 there: the two differ by an ulp or two of f32, far below what the logits check
/// (bench/HF_ROPE_CHECK.md) can see; the llama3 rule is continuous at its band edges, so the
/// rounding cannot move a frequency across a band by a visible amount.
pub fn inverse_frequencies(head_dim: usize, setting: &RopeSetting) -> Vec<f64> {
    let plain = (0..head_dim / 2).map(|i| 1.0 / setting.theta.powf(2.0 * i as f64 / head_dim as f64));
    match setting.scaling {
        RopeScaling::None => plain.collect(),
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            let context = original_max_position_embeddings as f64;
            let (low_freq_wavelen, high_freq_wavelen) = (context / low_freq_factor, context / high_freq_factor);
            plain
                .map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen < high_freq_wavelen {
                        f
                    } else if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        let smooth = (context / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// Rotary tables for given positions: dimension `i` of the first half of a head pairs with
/// dimension `i + D/2`, rotated by `position · f_i` ([`inverse_frequencies`]).
pub(crate) struct Rope {
    /// `[B, T, 1, D]`: `cos` of the angle, repeated for both halves.
    cos: Tensor<4>,
    /// `[B, T, 1, D]`: `-sin` on the first half and `sin` on the second, so that
    /// `rotate_half(x)·sin` becomes `swap_halves(x)·sin_signed`.
    sin_signed: Tensor<4>,
}

impl Rope {
    /// Tables for `positions` `[B, T]`.
    pub(crate) fn new(positions: Tensor<2, Int>, head_dim: usize, setting: &RopeSetting) -> Self {
        let [b, t] = positions.dims();
        let half = head_dim / 2;
        let inv_freq: Vec<f32> = inverse_frequencies(head_dim, setting).into_iter().map(|f| f as f32).collect();
        let inv_freq = Tensor::<1>::from_data(TensorData::new(inv_freq, [half]), &positions.device());
        let angles = positions.float().reshape([b, t, 1, 1]) * inv_freq.reshape([1, 1, 1, half]);
        let (cos, sin) = (angles.clone().cos(), angles.sin());
        Self { cos: Tensor::cat(vec![cos.clone(), cos], 3), sin_signed: Tensor::cat(vec![sin.clone().neg(), sin], 3) }
    }

    /// Rotates `x` `[B, T, heads, D]`.
    pub(crate) fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let half = x.dims()[3] / 2;
        let swapped = Tensor::cat(vec![x.clone().narrow(3, half, half), x.clone().narrow(3, 0, half)], 3);
        x * self.cos.clone() + swapped * self.sin_signed.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::tests::int_tensor;
    use burn::tensor::Device;

    /// Llama-3.2's published rotary settings (theta 500,000; llama3 factor 32, low 1, high 4,
    /// original context 8192).
    fn llama32() -> RopeSetting {
        RopeSetting { theta: 500_000.0, scaling: RopeScaling::llama32() }
    }

    #[test]
    fn rope_matches_hand_computed_values() {
        let device = Device::flex();
        // head_dim 4, theta 10000: frequencies 1 and 1/100; dims 0 and 2 rotate together by p,
        // dims 1 and 3 by p/100. x = (1, 2, 3, 4) at positions 0, 1 and 2.
        let rope = Rope::new(int_tensor(vec![0, 1, 2], [1, 3], &device), 4, &RopeSetting::plain(10_000.0));
        let x = Tensor::<1>::from_floats([1.0, 2.0, 3.0, 4.0], &device).reshape([1, 1, 1, 4]).repeat_dim(1, 3);
        let got = rope.apply(x).reshape([12]).try_into_vec_as::<f32>().unwrap();
        #[rustfmt::skip]
        let expected = [
            1.0, 2.0, 3.0, 4.0, // position 0: no rotation
            // p = 1: (1·cos1 − 3·sin1, 2·cos.01 − 4·sin.01, 3·cos1 + 1·sin1, 4·cos.01 + 2·sin.01)
            -1.984_110_6, 1.959_900_7, 2.462_378_0, 4.019_799_7,
            // p = 2: the same with angles 2 and 0.02
            -3.144_039_1, 1.919_605_3, -0.339_143_1, 4.039_197_4,
        ];
        for (i, (g, e)) in got.iter().zip(expected).enumerate() {
            assert!((g - e).abs() < 1e-5, "element {i}: got {g}, expected {e}");
        }
    }

    #[test]
    fn llama3_scaling_keeps_divides_and_interpolates_by_wavelength() {
        // head_dim 16, theta 500,000: f_i = 500000^(-i/8), wavelength w_i = 2π / f_i:
        //   i:  0      1      2       3       4        5        6         7
        //   w:  6.28   32.4   167.1   861.6   4442.9   22911    118143    609226
        // With L = 8192: w < L / high = 2048 keeps f (i = 0..3), w > L / low = 8192 divides it
        // by 32 (i = 5..7), and i = 4 (f = 1/√500000, w between) is interpolated with
        // s = (L / w - 1) / (4 - 1) = (8192 / (2π·√500000) - 1) / 3 ≈ 0.2813.
        let f = |i: i32| 500_000f64.powf(-(i as f64) / 8.0);
        let f4 = 1.0 / 500_000f64.sqrt();
        let s = (8192.0 / (2.0 * std::f64::consts::PI * 500_000f64.sqrt()) - 1.0) / 3.0;
        assert!((s - 0.281_282_6).abs() < 1e-6);
        let expected = [f(0), f(1), f(2), f(3), (1.0 - s) * f4 / 32.0 + s * f4, f(5) / 32.0, f(6) / 32.0, f(7) / 32.0];
        // The same numbers written out (from the formula in f64), so a slip in `f` shows too.
        let literal = [
            1.0,
            0.193_922_744_748_685_76,
            0.037_606_030_930_863_93,
            0.007_292_664_737_217_109,
            0.000_429_556_796_559_368_15,
            8.570_255_489_881_478e-6,
            1.661_967_467_795_308_8e-6,
            3.222_932_930_378_893_6e-7,
        ];
        let got = inverse_frequencies(16, &llama32());
        assert_eq!(got.len(), 8);
        for i in 0..8 {
            assert!((got[i] / expected[i] - 1.0).abs() < 1e-12, "f[{i}]: got {}, expected {}", got[i], expected[i]);
            assert!((got[i] / literal[i] - 1.0).abs() < 1e-12, "f[{i}]: got {}, literal {}", got[i], literal[i]);
        }
        // Unscaled, the same head keeps every f_i.
        let plain = inverse_frequencies(16, &RopeSetting::plain(500_000.0));
        assert!(plain.iter().enumerate().all(|(i, &p)| (p / f(i as i32) - 1.0).abs() < 1e-12));
    }

    #[test]
    fn llama3_tables_rotate_by_the_scaled_frequencies() {
        let device = Device::flex();
        // x = e_i + e_{i+8} (both halves of pair i set to 1) at position 100: the pair turns by
        // 100·f'_i, giving (cos − sin, cos + sin).
        let p = 100.0;
        let freqs = inverse_frequencies(16, &llama32());
        let rope = Rope::new(int_tensor(vec![100], [1, 1], &device), 16, &llama32());
        let x = Tensor::<1>::ones([16], &device).reshape([1, 1, 1, 16]);
        let got = rope.apply(x).reshape([16]).try_into_vec_as::<f32>().unwrap();
        for i in 0..8 {
            let (sin, cos) = (p * freqs[i]).sin_cos();
            assert!((got[i] as f64 - (cos - sin)).abs() < 1e-4, "dim {i}");
            assert!((got[i + 8] as f64 - (cos + sin)).abs() < 1e-4, "dim {}", i + 8);
        }
        // The scaling changes short positions too: the low-frequency pairs turn 32 times slower.
        let plain = Rope::new(int_tensor(vec![100], [1, 1], &device), 16, &RopeSetting::plain(500_000.0));
        let unscaled = plain.apply(Tensor::<1>::ones([16], &device).reshape([1, 1, 1, 16]));
        let unscaled = unscaled.reshape([16]).try_into_vec_as::<f32>().unwrap();
        assert!((unscaled[7] - got[7]).abs() > 1e-4);
        assert_eq!(unscaled[0], got[0]);
    }
}
