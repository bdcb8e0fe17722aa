//! Dropout whose mask, on the CPU backend, comes from a fast host generator.
//!
//! burn's `Dropout` draws a Bernoulli tensor element by element through ChaCha and a
//! distribution sampler, then multiplies twice (mask, then 1/keep): 12 % of a `tiny` LoRA step's
//! samples (BENCHMARKS.md). On the CPU backend the device's generator instead gives one seed per
//! call — so `device.seed` still fixes every mask and a resumed run repeats them — a xoshiro
//! generator expands it into the mask, already scaled, and one product applies it. Other devices
//! keep burn's dropout (reading a seed back would stall a GPU).
//!
//! Inside [`with_mask_seed`] (data-parallel training) CPU masks come from a host generator of
//! the calling thread instead, so that workers sharing the CPU device do not race for its
//! generator.

use std::cell::RefCell;

use burn::nn::Dropout;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::weights::host_values;

thread_local! {
    /// The mask seeds of this thread's dropouts, while [`with_mask_seed`] runs.
    static MASK_SEEDS: RefCell<Option<SmallRng>> = const { RefCell::new(None) };
}

/// Runs `f` with the dropout masks it draws on `device` seeded by `seed` alone. On the CPU
/// backend they come from a host generator of this thread (workers sharing the CPU device do
/// not race for its generator); elsewhere the device's generator is seeded (each device has
/// its own).
pub fn with_mask_seed<T>(device: &Device, seed: u64, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<SmallRng>);
    impl Drop for Restore {
        fn drop(&mut self) {
            MASK_SEEDS.with(|s| *s.borrow_mut() = self.0.take());
        }
    }
    if !host_masks(device) {
        device.seed(seed);
        return f();
    }
    let _restore = Restore(MASK_SEEDS.with(|s| s.borrow_mut().replace(SmallRng::seed_from_u64(seed))));
    f()
}

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
    let seed = match MASK_SEEDS.with(|s| s.borrow_mut().as_mut().map(|rng| rng.random::<u64>())) {
        Some(seed) => seed,
        None if !host_masks(&device) => return layer.forward(x),
        None => {
            // Two uniform draws from the device's generator carry 46 random bits into the seed.
            let Ok(draws) = host_values::<f32, 1, _>(Tensor::<1>::random([2], Distribution::Default, &device)) else {
                return layer.forward(x);
            };
            (u64::from(draws[0].to_bits()) << 32) | u64::from(draws[1].to_bits())
        }
    };
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
    fn masks_under_a_mask_seed_depend_on_it_alone() {
        let device = Device::flex().autodiff();
        let masked =
            |device_seed: u64, mask_seed: u64| with_mask_seed(&device, mask_seed, || dropped(&device, device_seed));
        let a = masked(1, 9);
        assert_eq!(a, masked(2, 9), "the device's generator is not read");
        assert_ne!(a, masked(1, 10));
        assert_ne!(a, dropped(&device, 1), "outside, the device's generator decides again");
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
