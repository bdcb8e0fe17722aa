//! Dropout whose mask, on the CPU backend, comes from a fast host generator.
//!
//! burn's `Dropout` draws a Bernoulli tensor element by element through ChaCha and a
//! distribution sampler, then multiplies twice (mask, then 1/keep): 12 % of a `tiny` LoRA step's
//! samples (BENCHMARKS.md). On the CPU backend the device's generator instead gives one seed per
//! call — so `device.seed` still fixes every mask and a resumed run repeats them — a xoshiro
//! generator expands it into the mask, already scaled, and one product applies it. Other devices
//! keep burn's dropout (reading a seed back would stall a GPU).

use burn::nn::Dropout;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::weights::host_values;

/// Whether masks on `device` come from the host generator.
fn host_masks(device: &Device) -> bool {
    *device == Device::flex().autodiff()
}

/// `layer` applied to `x` (any shape): the identity unless training on an autodiff device.
pub fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !layer.training.is_enabled() || !device.is_autodiff() || layer.prob == 0.0 {
        return x;
    }
    if !host_masks(&device) {
        return layer.forward(x);
    }
    // Two uniform draws from the device's generator carry 46 random bits into the seed.
    let Ok(draws) = host_values::<f32, 1, _>(Tensor::<1>::random([2], Distribution::Default, &device)) else {
        return layer.forward(x);
    };
    let seed = (u64::from(draws[0].to_bits()) << 32) | u64::from(draws[1].to_bits());
    let keep = 1.0 - layer.prob;
    // A word below `threshold` keeps its element: probability `keep`.
    let threshold = (keep * 4_294_967_296.0) as u64;
    let scale = (1.0 / keep) as f32;
    let mut words = vec![0u32; x.shape().num_elements()];
    SmallRng::seed_from_u64(seed).fill(&mut words[..]);
    let mask: Vec<f32> = words.into_iter().map(|w| if u64::from(w) < threshold { scale } else { 0.0 }).collect();
    let mask = Tensor::<D>::from_data(TensorData::new(mask, x.shape()), &device);
    x * mask
}

#[cfg(test)]
mod tests {
    use burn::nn::DropoutConfig;

    use super::*;

    fn dropped(device: &Device, seed: u64) -> Vec<f32> {
        device.seed(seed);
        let x = Tensor::<2>::ones([64, 256], device);
        host_values::<f32, 2, _>(dropout(&DropoutConfig::new(0.25).init(), x)).unwrap()
    }

    #[test]
    fn the_cpu_mask_keeps_the_expected_share_scaled_and_is_fixed_by_the_device_seed() {
        let device = Device::flex().autodiff();
        assert!(host_masks(&device));
        let a = dropped(&device, 3);
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6), "values other than 0 and 1/keep");
        let kept = a.iter().filter(|&&v| v != 0.0).count() as f64 / a.len() as f64;
        // 16,384 draws: the kept share is 0.75 within about 4 standard deviations (0.0034 each).
        assert!((kept - 0.75).abs() < 0.015, "kept {kept}");
        assert_eq!(a, dropped(&device, 3), "the same device seed gives the same mask");
        assert_ne!(a, dropped(&device, 4), "another seed gives another mask");
    }

    #[test]
    fn without_autodiff_or_probability_it_is_the_identity() {
        let x = Tensor::<2>::ones([4, 8], &Device::flex());
        let out = host_values::<f32, 2, _>(dropout(&DropoutConfig::new(0.5).init(), x)).unwrap();
        assert!(out.iter().all(|&v| v == 1.0));
        let x = Tensor::<2>::ones([4, 8], &Device::flex().autodiff());
        let out = host_values::<f32, 2, _>(dropout(&DropoutConfig::new(0.0).init(), x)).unwrap();
        assert!(out.iter().all(|&v| v == 1.0));
    }
}
