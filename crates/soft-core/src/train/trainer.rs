//! The optimisation step shared by every stage: AdamW with a linear warm-up, gradient
//! accumulation over micro-batches, and one pass over an epoch's examples.

use std::path::Path;

use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::llama::Llama;
use crate::model::weights::BaseWeights;
#[cfg(test)]
use crate::model::weights::FloatEncoding;
#[cfg(feature = "native")]
use crate::progress::{Event, Progress};
use crate::train::data_parallel::{finite_loss, Replicas};
#[cfg(feature = "native")]
use crate::train::data_parallel::{micro_batch_seed, MicroLoss};
use crate::train::lm::{lm_loss, LmExample};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub lr: f64,
    /// Linear warm-up from 0 over this many optimizer steps, then constant.
    pub warmup_steps: usize,
    pub weight_decay: f32,
    /// Examples per forward/backward pass.
    pub micro_batch: usize,
    /// Micro-batches per optimizer step (effective batch = micro_batch x grad_accum).
    pub grad_accum: usize,
    pub seed: u64,
    /// Stop after this many optimizer steps in all (a smoke test of a large model on a CPU).
    #[serde(default)]
    pub max_steps: Option<usize>,
    /// Recompute memory-bound activations (norms, activations, element-wise products) in the
    /// backward pass instead of keeping them: burn's balanced gradient checkpointing. Less
    /// memory, more compute, the same gradients. Missing in runs from before the option: off.
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// How the trained model's frozen base weights are kept on the device: a float encoding
    /// (products still compute in f32; see `Llama::with_base_dtype`) or a GGUF's own blocks
    /// (`stored`, CPU backend). Missing in runs from before the option: f32.
    #[serde(default)]
    pub base_dtype: BaseWeights,
    /// Devices training runs on at once, data-parallel (see `train::data_parallel`): one
    /// micro-batch each, gradients summed on the first. Missing in runs from before the
    /// option: one.
    #[serde(default = "one_device")]
    pub devices: usize,
}

fn one_device() -> usize {
    1
}

impl TrainConfig {
    /// The autodiff device training runs on: `device` with gradients, and with activation
    /// checkpointing when asked for.
    pub fn training_device(&self, device: &Device) -> Device {
        let device = device.clone().autodiff();
        if self.activation_checkpointing {
            device.gradient_checkpointing()
        } else {
            device
        }
    }

    /// Refuses settings training cannot use, naming the setting: a learning rate that is not a
    /// finite number > 0, a negative or non-finite weight decay, empty batches, zero steps.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::config("training", msg));
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("the learning rate (lr) must be a finite number > 0, got {}", self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight_decay must be a finite number >= 0, got {}", self.weight_decay));
        }
        for (name, value) in
            [("micro_batch", self.micro_batch), ("grad_accum", self.grad_accum), ("devices", self.devices)]
        {
            if value == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if self.max_steps == Some(0) {
            return bad("max_steps must be at least 1".into());
        }
        Ok(())
    }
}

/// A model on an autodiff device, its optimizer and the step count.
pub struct LmTrainer {
    pub model: Llama,
    pub config: TrainConfig,
    optim: ModuleOptimizer,
    accum: GradientsAccumulator<Llama>,
    pending: usize,
    pub steps: usize,
    pad: u32,
    replicas: Replicas,
}

impl LmTrainer {
    /// `model` must live on an autodiff device. Data-parallel training adds its other devices
    /// with [`LmTrainer::with_replicas`].
    pub fn new(model: Llama, config: TrainConfig, pad: u32) -> Self {
        let optim = AdamWConfig::new().with_weight_decay(config.weight_decay).init();
        let replicas = Replicas::new(&model, &[]);
        Self { model, config, optim, accum: GradientsAccumulator::new(), pending: 0, steps: 0, pad, replicas }
    }

    /// Trains on `devices` too (plain devices; training puts them in its autodiff mode), one
    /// micro-batch each beside the model's own: as many as the configuration's `devices` asks
    /// for beyond the first, or an error.
    pub fn with_replicas(mut self, devices: &[Device]) -> Result<Self> {
        if devices.len() + 1 != self.config.devices {
            return Err(Error::config(
                "training",
                format!("devices is {} but {} were given", self.config.devices, devices.len() + 1),
            ));
        }
        let devices: Vec<Device> = devices.iter().map(|d| self.config.training_device(d)).collect();
        self.replicas = Replicas::new(&self.model, &devices);
        Ok(self)
    }

    fn lr(&self) -> f64 {
        let warm = self.config.warmup_steps;
        if warm == 0 || self.steps >= warm {
            self.config.lr
        } else {
            self.config.lr * (self.steps + 1) as f64 / warm as f64
        }
    }

    /// One micro-batch: forward, backward, accumulate; an optimizer step every `grad_accum`
    /// micro-batches. Returns the micro-batch loss, or an error when it is not finite.
    pub fn micro_step(&mut self, examples: &[&LmExample]) -> Result<Option<f32>> {
        let Some(loss) = lm_loss(&self.model, examples, self.pad) else { return Ok(None) };
        self.backward(loss).map(Some)
    }

    /// The same for a loss the caller built from this trainer's model.
    pub fn backward(&mut self, loss: Tensor<1>) -> Result<f32> {
        let value = finite_loss(&loss, self.steps)?;
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        self.accumulate(grads);
        Ok(value)
    }

    fn accumulate(&mut self, grads: GradientsParams) {
        self.accum.accumulate(&self.model, grads);
        self.pending += 1;
        if self.pending >= self.config.grad_accum.max(1) {
            self.flush();
        }
    }

    /// Micro-batches in the next data-parallel round, of the `chunks_left` of the epoch: one per
    /// device, never past the end of the current optimizer step.
    #[cfg(feature = "native")]
    fn round_len(&self, chunks_left: usize) -> usize {
        let room = self.config.grad_accum.max(1) - self.pending;
        self.replicas.devices().min(room).min(chunks_left)
    }

    /// Saves the optimizer's state (AdamW moments), keyed by parameter id.
    pub fn save_optimizer(&self, path: &Path) -> Result<()> {
        self.optim.to_record().save(path).map_err(|e| Error::format(path, e.to_string()))
    }

    /// Restores a state saved by [`LmTrainer::save_optimizer`] for a model with the same
    /// parameter ids (adapters get ids from their names, see `model/lora.rs`).
    pub fn load_optimizer(&mut self, path: &Path) -> Result<()> {
        let record = burn::optim::OptimizerRecord::load(path).map_err(|e| Error::format(path, e.to_string()))?;
        // burn-optim panics on a record whose tensors lost their parameter ids (found by the
        // corruption suite), so a panic is turned into an error naming the file; the trainer
        // keeps its optimizer when loading fails.
        let current = self.optim.clone();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| current.load_record(record))) {
            Ok(optim) => {
                self.optim = optim;
                Ok(())
            }
            Err(_) => Err(Error::format(path, "not an optimizer state burn can load (it panicked on it)")),
        }
    }

    pub fn pad(&self) -> u32 {
        self.pad
    }

    /// Applies any accumulated gradients (end of an epoch with a partial group).
    pub fn flush(&mut self) {
        if self.pending == 0 {
            return;
        }
        let grads = self.accum.grads();
        let lr = self.lr();
        self.model = self.optim.step(lr, self.model.clone(), grads);
        self.replicas.sync(&self.model);
        self.pending = 0;
        self.steps += 1;
    }
}

/// One epoch: trains every micro-batch of example indices from `order` on the loss `loss_fn`
/// builds from a model (the trainer's, or a data-parallel replica of it); stops early at
/// `max_steps`. Returns the mean loss, tokens per second and each trained micro-batch's extra,
/// in order.
#[cfg(feature = "native")]
pub(crate) fn train_pass<T: Send>(
    trainer: &mut LmTrainer,
    order: &[usize],
    what: &'static str,
    progress: Progress,
    loss_fn: impl Fn(&Llama, &[usize]) -> Result<Option<MicroLoss<T>>> + Sync,
) -> Result<(f32, f64, Vec<T>)> {
    let started = std::time::Instant::now();
    let micro = trainer.config.micro_batch.max(1);
    let chunks: Vec<&[usize]> = order.chunks(micro).collect();
    progress(Event::Begin { what, total: Some(chunks.len() as u64) });
    let (mut sum, mut tokens, mut extras) = (0.0f32, 0usize, Vec::new());
    let mut done = 0;
    while done < chunks.len() {
        if trainer.config.max_steps.is_some_and(|max| trainer.steps >= max) {
            break;
        }
        let mut trained = |loss: f32, t: usize, extra: T| {
            sum += loss;
            tokens += t;
            extras.push(extra);
            progress(Event::Step { loss: Some(loss) });
        };
        if trainer.replicas.devices() == 1 {
            if let Some(MicroLoss { loss, tokens, extra }) = loss_fn(&trainer.model, chunks[done])? {
                trained(trainer.backward(loss)?, tokens, extra);
            }
            done += 1;
            continue;
        }
        let round = &chunks[done..done + trainer.round_len(chunks.len() - done)];
        let seeds: Vec<u64> =
            (done..done + round.len()).map(|i| micro_batch_seed(trainer.config.seed, trainer.steps, i)).collect();
        for micro in
            trainer.replicas.round(&trainer.model, round, &seeds, trainer.steps, &loss_fn)?.into_iter().flatten()
        {
            trainer.accumulate(micro.grads);
            trained(micro.loss, micro.tokens, micro.extra);
        }
        done += round.len();
    }
    trainer.flush();
    progress(Event::End);
    let n = extras.len().max(1) as f32;
    Ok((sum / n, tokens as f64 / started.elapsed().as_secs_f64().max(1e-9), extras))
}

#[cfg(test)]
mod tests {
    use burn::module::Module;
    use burn::tensor::Device;

    use super::*;
    use crate::model::config::LoraConfig;
    #[cfg(feature = "native")]
    use crate::train::lm::lm_loss;
    use crate::train::test_model;

    fn config(activation_checkpointing: bool) -> TrainConfig {
        TrainConfig {
            lr: 1e-2,
            warmup_steps: 2,
            weight_decay: 0.0,
            micro_batch: 2,
            grad_accum: 2,
            seed: 3,
            max_steps: None,
            activation_checkpointing,
            base_dtype: BaseWeights::default(),
            devices: 1,
        }
    }

    #[test]
    fn training_lowers_the_loss_and_accumulation_steps_once_per_group() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let mut trainer = LmTrainer::new(test_model(&device).set_require_grad(true), config(false), 0);
        let data = [LmExample::full(vec![1, 2, 3, 4, 5, 6]), LmExample::full(vec![6, 5, 4, 3, 2, 1])];
        let refs: Vec<&LmExample> = data.iter().collect();
        let first = trainer.micro_step(&refs).unwrap().unwrap();
        let mut last = first;
        for _ in 0..39 {
            last = trainer.micro_step(&refs).unwrap().unwrap();
        }
        assert_eq!(trainer.steps, 20);
        assert!(last < first * 0.5, "{first} -> {last}");
    }

    /// The losses of ten micro-batches (five optimizer steps) of a small LoRA model, its base
    /// held as `weights`, trained under `config`, and the trained adapter's factors. Weights
    /// from a host seed and no dropout: the device's generator is shared with tests running
    /// alongside.
    fn train_small(config: TrainConfig, weights: BaseWeights) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
        use crate::model::llama::tests::{random_weights, small_config};
        let device = config.training_device(&Device::flex());
        let c = small_config();
        let lora = LoraConfig { dropout: 0.0, ..LoraConfig::default() };
        let model = Llama::from_weights(&c, &random_weights(&c, 11), &device).unwrap();
        let model = model.with_base_weights(weights).unwrap().with_lora(&lora, 5).unwrap();
        let mut trainer = LmTrainer::new(model, config, 0);
        let data = [LmExample::full(vec![1, 2, 3, 4, 5, 6, 7]), LmExample::full(vec![9, 8, 7, 6, 5, 4, 3])];
        let refs: Vec<&LmExample> = data.iter().collect();
        let losses: Vec<f32> = (0..10).map(|_| trainer.micro_step(&refs).unwrap().unwrap()).collect();
        (losses, adapter(&trainer.model))
    }

    /// The adapter's factors, by projection.
    fn adapter(model: &Llama) -> Vec<(String, Vec<f32>)> {
        (model.projections())
            .filter_map(|(name, lin)| lin.adapter.as_ref().map(|a| (name, a)))
            .flat_map(|(name, a)| [(format!("{name} A"), a.a.val()), (format!("{name} B"), a.b.val())])
            .map(|(name, t)| (name, t.into_data().try_to_vec::<f32>().unwrap()))
            .collect()
    }

    /// The largest difference between two adapters' factors.
    #[cfg(feature = "native")]
    fn adapter_difference(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> f32 {
        assert_eq!(a.len(), b.len());
        let pairs = a.iter().zip(b).flat_map(|((_, x), (_, y))| x.iter().zip(y));
        pairs.map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    /// An SFT epoch (`train_pass` over the language-model loss, as `sft` trains) of a small
    /// LoRA model over `n` examples of 7 tokens, on `devices` devices — the extra ones the CPU
    /// device again, as burn's CPU backend has one — with LoRA dropout `dropout`: the mean loss
    /// and the adapter.
    #[cfg(feature = "native")]
    fn sft_epoch(config: TrainConfig, devices: usize, dropout: f64, n: usize) -> (f32, Vec<(String, Vec<f32>)>) {
        use crate::model::llama::tests::{random_weights, small_config};
        let config = TrainConfig { devices, ..config };
        let c = small_config();
        let lora = LoraConfig { dropout, ..LoraConfig::default() };
        let model = Llama::from_weights(&c, &random_weights(&c, 11), &config.training_device(&Device::flex())).unwrap();
        let model = model.with_lora(&lora, 5).unwrap();
        let mut trainer = LmTrainer::new(model, config, 0).with_replicas(&vec![Device::flex(); devices - 1]).unwrap();
        let data: Vec<LmExample> =
            (0..n).map(|i| LmExample::full((0..7).map(|j| ((i * 7 + j * 5) % 90 + 1) as u32).collect())).collect();
        let order: Vec<usize> = (0..n).collect();
        let (loss, _, extras) =
            train_pass(&mut trainer, &order, "test epoch", &mut crate::progress::silent, |model, chunk| {
                let batch: Vec<&LmExample> = chunk.iter().map(|&i| &data[i]).collect();
                Ok(lm_loss(model, &batch, 0).map(|loss| MicroLoss { loss, tokens: 0, extra: chunk[0] }))
            })
            .unwrap();
        assert!(extras.windows(2).all(|w| w[0] < w[1]), "the micro-batches' extras come back in order: {extras:?}");
        (loss, adapter(&trainer.model))
    }

    /// One optimizer step over 2 devices x 4 examples is the step over the same 8 examples on
    /// one device (two micro-batches of 4 accumulated: the gradient is a sum of micro-batch
    /// means, on one device as on several).
    #[cfg(feature = "native")]
    #[test]
    fn one_step_on_two_devices_equals_the_step_over_the_same_eight_examples_on_one() {
        let step = TrainConfig { micro_batch: 4, grad_accum: 2, max_steps: Some(1), ..config(false) };
        let (_, two) = sft_epoch(step.clone(), 2, 0.0, 8);
        let (_, one) = sft_epoch(step, 1, 0.0, 8);
        let (_, untrained) = sft_epoch(TrainConfig { max_steps: Some(0), ..config(false) }, 1, 0.0, 8);
        let moved = adapter_difference(&one, &untrained);
        assert!(moved > 1e-3, "the step moved the adapter: {moved}");
        let diff = adapter_difference(&two, &one);
        assert!(diff <= 1e-6, "{diff}");
    }

    /// A whole epoch of 4 optimizer steps (16 examples, micro-batches of 2, 2 accumulated) on
    /// 2 and on 3 devices ends where one device does.
    #[cfg(feature = "native")]
    #[test]
    fn an_epoch_on_two_or_three_devices_ends_where_one_device_does() {
        let epoch = TrainConfig { micro_batch: 2, grad_accum: 2, ..config(false) };
        let (loss_one, one) = sft_epoch(epoch.clone(), 1, 0.0, 16);
        for devices in [2, 3] {
            let (loss, adapter) = sft_epoch(epoch.clone(), devices, 0.0, 16);
            let diff = adapter_difference(&adapter, &one);
            eprintln!("{devices} devices: epoch loss {loss} vs {loss_one}, adapter within {diff:.2e}");
            assert!((loss - loss_one).abs() <= 1e-6 * loss_one, "{devices} devices: {loss} vs {loss_one}");
            assert!(diff <= 1e-6, "{devices} devices: {diff}");
        }
    }

    /// With dropout, a data-parallel run's masks come from its seeds, step and micro-batch
    /// alone: two runs agree, and so do 2 and 3 devices (rounds of 2 + 2 and of 3 + 1 over a
    /// step of 4 micro-batches).
    #[cfg(feature = "native")]
    #[test]
    fn data_parallel_dropout_depends_on_neither_the_threads_nor_the_device_count() {
        let epoch = TrainConfig { micro_batch: 2, grad_accum: 4, ..config(false) };
        let (loss, two) = sft_epoch(epoch.clone(), 2, 0.3, 16);
        let (again_loss, again) = sft_epoch(epoch.clone(), 2, 0.3, 16);
        assert_eq!((loss, &two), (again_loss, &again));
        let (three_loss, three) = sft_epoch(epoch.clone(), 3, 0.3, 16);
        assert!((three_loss - loss).abs() <= 1e-6 * loss && adapter_difference(&two, &three) <= 1e-6);
        let (_, undropped) = sft_epoch(epoch, 2, 0.0, 16);
        assert!(adapter_difference(&two, &undropped) > 1e-4, "dropout acted");
    }

    #[test]
    fn a_device_list_that_does_not_match_the_configuration_is_refused() {
        use crate::model::llama::tests::{random_weights, small_config};
        let c = small_config();
        let model = Llama::from_weights(&c, &random_weights(&c, 11), &Device::flex().autodiff()).unwrap();
        let trainer = LmTrainer::new(model, TrainConfig { devices: 3, ..config(false) }, 0);
        let err = trainer.with_replicas(&[Device::flex()]).err().expect("refused").to_string();
        assert!(err.contains("devices is 3 but 2 were given"), "{err}");
    }

    /// Checkpointing trades memory for recomputation and nothing else: the same loss at every
    /// step, and the same adapter, with it as without it.
    #[test]
    fn activation_checkpointing_changes_neither_losses_nor_the_adapter() {
        let (with, without) = (config(true), config(false));
        assert_ne!(
            with.training_device(&Device::flex()).gradient_checkpointing_strategy(),
            without.training_device(&Device::flex()).gradient_checkpointing_strategy(),
            "the two runs differ in their checkpointing"
        );
        let (plain_losses, plain_adapter) = train_small(without, BaseWeights::default());
        let (losses, adapter) = train_small(with, BaseWeights::default());
        assert!(plain_losses[9] < plain_losses[0], "{plain_losses:?}");
        for (step, (a, b)) in plain_losses.iter().zip(&losses).enumerate() {
            assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "micro-batch {step}: {a} vs {b}");
        }
        assert_eq!(plain_adapter.len(), adapter.len());
        for ((name, a), (_, b)) in plain_adapter.into_iter().zip(adapter) {
            let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(diff <= 1e-6, "{name}: {diff}");
        }
    }

    /// The adapter trained over a base model stored in f16 follows the f32 one: every loss
    /// within 1 % of f32's.
    #[test]
    fn adapters_train_over_an_f16_base_to_the_same_losses_within_one_percent() {
        let (full, _) = train_small(config(false), BaseWeights::default());
        let (half, _) = train_small(config(false), BaseWeights::Float(FloatEncoding::F16));
        assert_ne!(full, half, "the f16 base changes the numbers a little");
        assert_losses_follow(&full, &half, "an f16 base");
    }

    /// `losses` (training with `what`) learn, as `reference` does, to within 1 % of it at every
    /// micro-batch.
    fn assert_losses_follow(reference: &[f32], losses: &[f32], what: &str) {
        assert!(reference[9] < reference[0], "{reference:?}");
        let worst = reference.iter().zip(losses).map(|(a, b)| (a - b).abs() / a.abs()).fold(0.0, f32::max);
        eprintln!("losses with {what}: largest relative difference {worst:.2e} ({reference:?} vs {losses:?})");
        for (step, (a, b)) in reference.iter().zip(losses).enumerate() {
            assert!((a - b).abs() <= 1e-2 * a.abs(), "micro-batch {step}: reference {a}, with {what} {b}");
        }
    }

    /// Training through bf16 dot products (`Llama::with_bf16_products`) follows training over the
    /// same bf16 weights with f32 products: every loss within 1 %, and not the same numbers
    /// (the dot products ran).
    #[test]
    fn adapters_train_through_bf16_dot_products_to_the_same_losses_within_one_percent() {
        if !crate::kernels::bf16_dot::available() {
            eprintln!("skipped: this CPU has no AVX512_BF16");
            return;
        }
        let (f32_products, _) = train_small(config(false), BaseWeights::Float(FloatEncoding::BF16));
        let (dot, _) = train_small(config(false), BaseWeights::Bf16Dot);
        assert_ne!(f32_products, dot, "activations rounded to bf16 change the numbers a little");
        assert_losses_follow(&f32_products, &dot, "bf16 dot products");
    }
}
