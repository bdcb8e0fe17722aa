//! Data-parallel training over several devices, by burn-train's main-device strategy
//! (`MultiDeviceOptim::OptimMainDevice` in burn-train 0.22): each device holds a replica of
//! the model and computes the gradients of its own micro-batch; burn moves them to the main
//! device (`GradientsParams::to_device`) and sums them there (`GradientsAccumulator`, in
//! micro-batch order); the optimizer steps once on the main device and the trained parameters
//! go back to every replica. The frozen base weights are copied to a replica once, only the
//! trained parameters after every step.
//!
//! A round runs one micro-batch per device at once, never across an optimizer step, so the
//! steps are those of one device with the same micro-batch and accumulation, up to the
//! order of float sums. burn 0.22's collective all-reduce (`burn::tensor::distributed`) is
//! implemented for CUDA only, so this reduce-then-broadcast through the main device is the
//! strategy burn offers every backend.
//!
//! Dropout: in a data-parallel run each micro-batch's masks are seeded from the run's seed, the
//! optimizer step and the micro-batch's place in the epoch (see
//! [`crate::model::dropout::with_mask_seed`]; on the CPU backend, whose replicas share one
//! device and its generator, from a host generator per worker): on the CPU the same masks
//! whatever the number of devices above one, and a resumed run repeats them.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
#[cfg(feature = "native")]
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};

#[cfg(feature = "native")]
use crate::model::dropout::with_mask_seed;
use crate::model::llama::Llama;
use crate::{Error, Result};

/// The model on the devices beyond the main one.
pub(crate) struct Replicas {
    models: Vec<Llama>,
}

/// One micro-batch's loss built on some replica, with what the stage wants back from it.
#[cfg(feature = "native")]
pub(crate) struct MicroLoss<T> {
    pub loss: Tensor<1>,
    /// Tokens read (for tokens per second).
    pub tokens: usize,
    pub extra: T,
}

/// A micro-batch's outcome: its gradients on the main device, its loss, tokens and extra.
#[cfg(feature = "native")]
pub(crate) struct MicroGrads<T> {
    pub grads: GradientsParams,
    pub loss: f32,
    pub tokens: usize,
    pub extra: T,
}

impl Replicas {
    /// `main`'s replicas on `devices` (autodiff devices; the main one not among them).
    pub fn new(main: &Llama, devices: &[Device]) -> Self {
        Self { models: devices.iter().map(|d| main.clone().fork(d)).collect() }
    }

    /// Devices in all, the main one included.
    #[cfg(feature = "native")]
    pub fn devices(&self) -> usize {
        self.models.len() + 1
    }

    /// Copies `main`'s trained parameters (those that require gradients) to every replica.
    pub fn sync(&mut self, main: &Llama) {
        if self.models.is_empty() {
            return;
        }
        let mut trained = Trained::default();
        main.visit(&mut trained);
        self.models = std::mem::take(&mut self.models).into_iter().map(|m| m.map(&mut trained)).collect();
    }

    /// Forward and backward of `chunks[i]` on device i (the main model first), all at once;
    /// every micro-batch's gradients moved to the main device, in order. `seeds[i]` seeds
    /// micro-batch i's dropout masks. A micro-batch without a loss (no target tokens) gives
    /// `None`; a loss that is not finite is an error naming `step`.
    #[cfg(feature = "native")]
    pub fn round<T: Send>(
        &self,
        main: &Llama,
        chunks: &[&[usize]],
        seeds: &[u64],
        step: usize,
        loss_fn: &(impl Fn(&Llama, &[usize]) -> Result<Option<MicroLoss<T>>> + Sync),
    ) -> Result<Vec<Option<MicroGrads<T>>>> {
        assert!(chunks.len() <= self.devices() && chunks.len() == seeds.len(), "one micro-batch per device");
        let main_device = main.device();
        let models: Vec<Llama> = std::iter::once(main).chain(&self.models).take(chunks.len()).cloned().collect();
        std::thread::scope(|scope| {
            let workers: Vec<_> = (models.into_iter().zip(chunks).zip(seeds))
                .map(|((model, chunk), &seed)| {
                    let main_device = &main_device;
                    scope.spawn(move || {
                        with_mask_seed(&model.device(), seed, || {
                            let Some(MicroLoss { loss, tokens, extra }) = loss_fn(&model, chunk)? else {
                                return Ok(None);
                            };
                            let loss_value = finite_loss(&loss, step)?;
                            let grads = GradientsParams::from_grads(loss.backward(), &model);
                            let grads = grads.to_device(main_device, &model);
                            Ok(Some(MicroGrads { grads, loss: loss_value, tokens, extra }))
                        })
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
        })
    }
}

/// The loss's value, or an error when it is not finite.
pub(crate) fn finite_loss(loss: &Tensor<1>, step: usize) -> Result<f32> {
    let value: f32 = loss.clone().into_scalar();
    if !value.is_finite() {
        return Err(Error::NonFiniteLoss { what: "training", value, at: format!("optimizer step {}", step + 1) });
    }
    Ok(value)
}

/// The dropout seed of the micro-batch at `index` in its epoch's order, trained in optimizer
/// step `step` of a run seeded with `seed` (SplitMix64's finaliser over the three): a
/// micro-batch without targets takes no place from the next, and a resumed run repeats them.
#[cfg(feature = "native")]
pub(crate) fn micro_batch_seed(seed: u64, step: usize, index: usize) -> u64 {
    let mut z =
        seed ^ (step as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (index as u64).wrapping_mul(0xd1b5_4a32_d192_ed03);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The trained parameters of a model, by id: collected by visiting the main model, then
/// mapped onto a replica's parameters of the same ids (moved to its device, as `fork` does).
#[derive(Default)]
struct Trained {
    values: HashMap<ParamId, Tensor<1>>,
}

impl ModuleVisitor for Trained {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if value.is_require_grad() {
            let n = value.shape().num_elements();
            self.values.insert(param.id, value.detach().reshape([n]));
        }
    }
}

impl ModuleMapper for Trained {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(value) = self.values.get(&param.id).cloned() else { return param };
        param.map(|old| {
            let device = old.device();
            value.to_device(&device).reshape(old.shape()).detach().require_grad()
        })
    }
}

#[cfg(all(test, feature = "native"))]
mod tests {
    use super::*;

    #[test]
    fn micro_batch_seeds_differ_by_seed_step_and_place() {
        let s = micro_batch_seed(1, 2, 3);
        assert_eq!(s, micro_batch_seed(1, 2, 3));
        for other in [micro_batch_seed(2, 2, 3), micro_batch_seed(1, 3, 3), micro_batch_seed(1, 2, 4)] {
            assert_ne!(s, other);
        }
    }
}
