//! The language-model objective and the optimisation step shared by every stage.
//!
//! An example is a token sequence with a flag per token saying whether the model is trained to
//! predict it (pre-training: every token; instruction tuning: the response and its EOS only).
//! The loss reads logits only at flagged positions: the LM head over the full vocabulary is the
//! most expensive op of a small model's step, and prompt positions would be discarded anyway.

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::model::generate::left_pad;
use crate::model::llama::Llama;
use crate::progress::{Event, Progress};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmExample {
    pub tokens: Vec<u32>,
    /// `trained[i]`: token i is a prediction target (token 0 never is: nothing precedes it).
    pub trained: Vec<bool>,
}

impl LmExample {
    /// Every token after the first is a target.
    pub fn full(tokens: Vec<u32>) -> Self {
        let trained = vec![true; tokens.len()];
        Self { tokens, trained }
    }

    /// Prompt tokens are context only; the response tokens are the targets.
    pub fn response_only(prompt: &[u32], response: &[u32]) -> Self {
        let tokens = [prompt, response].concat();
        let trained = (0..tokens.len()).map(|i| i >= prompt.len()).collect();
        Self { tokens, trained }
    }

    pub fn targets(&self) -> usize {
        self.trained.iter().skip(1).filter(|&&t| t).count()
    }
}

/// Inputs, attention mask and the flat indices / ids of the trained positions for a batch,
/// right-padded to its longest example.
struct Batch {
    tokens: Tensor<2, Int>,
    mask: Tensor<2, Int>,
    positions: Tensor<1, Int>,
    targets: Tensor<1, Int>,
}

fn batch(examples: &[&LmExample], pad: u32, device: &Device) -> Option<Batch> {
    let t = examples.iter().map(|e| e.tokens.len().saturating_sub(1)).max()?;
    if t == 0 {
        return None;
    }
    let b = examples.len();
    let (mut tokens, mut mask) = (vec![pad as i64; b * t], vec![0i64; b * t]);
    let (mut positions, mut targets) = (Vec::new(), Vec::new());
    for (row, e) in examples.iter().enumerate() {
        for i in 0..e.tokens.len().saturating_sub(1) {
            tokens[row * t + i] = e.tokens[i] as i64;
            mask[row * t + i] = 1;
            if e.trained[i + 1] {
                positions.push((row * t + i) as i64);
                targets.push(e.tokens[i + 1] as i64);
            }
        }
    }
    if positions.is_empty() {
        return None;
    }
    let n = positions.len();
    Some(Batch {
        tokens: Tensor::from_data(TensorData::new(tokens, [b, t]), device),
        mask: Tensor::from_data(TensorData::new(mask, [b, t]), device),
        positions: Tensor::from_data(TensorData::new(positions, [n]), device),
        targets: Tensor::from_data(TensorData::new(targets, [n]), device),
    })
}

/// Negative log-likelihood of every trained token, `[N]`, in batch order.
fn token_nll(model: &Llama, b: Batch) -> Tensor<1> {
    let hidden = model.hidden_states(b.tokens, b.mask, None);
    let [bsz, t, d] = hidden.dims();
    let picked = hidden.reshape([bsz * t, d]).select(0, b.positions);
    let n = picked.dims()[0];
    let logits = model.logits(picked.unsqueeze::<3>()).reshape([n, model.config().vocab_size]);
    log_softmax(logits, 1).gather(1, b.targets.reshape([n, 1])).reshape([n]).neg()
}

/// Mean loss over the trained tokens of `examples`; `None` when none has a target.
pub fn lm_loss(model: &Llama, examples: &[&LmExample], pad: u32) -> Option<Tensor<1>> {
    let b = batch(examples, pad, &model.device())?;
    Some(token_nll(model, b).mean())
}

/// Mean loss of each response set over prompts it shares with the others: `responses[s][i]` is
/// set `s`'s response (EOS included) to `prompts[i]`. The prompts go through the model once and
/// their keys and values serve every set — SOFT trains each prompt on its real and its
/// distilled target, and a prompt is ~15 times longer than a title, so this nearly halves its
/// step. Equal to [`lm_loss`] on prompt + response examples, one set at a time.
pub fn shared_prompt_losses(model: &Llama, prompts: &[&[u32]], responses: &[Vec<&[u32]>]) -> Result<Vec<Tensor<1>>> {
    let (b, sets) = (prompts.len(), responses.len());
    if b == 0 || sets == 0 || responses.iter().any(|r| r.len() != b) {
        return Err(Error::Invalid(format!("shared_prompt_losses: {b} prompts, response sets of other sizes")));
    }
    if let Some((s, i)) = (0..sets).flat_map(|s| (0..b).map(move |i| (s, i))).find(|&(s, i)| responses[s][i].is_empty())
    {
        return Err(Error::Invalid(format!("response {i} of set {s} is empty")));
    }
    let device = model.device();
    let (tokens, mask) = left_pad(model, prompts)?;
    let width = responses.iter().flatten().map(|r| r.len()).max().unwrap_or(1);
    let mut cache = model.new_cache(tokens.dims()[1] + width);
    let prompt_hidden = model.hidden_states(tokens, mask, Some(&mut cache));
    let t = prompt_hidden.dims()[1];
    // Row s·B + i of the continuation batch is set s's response to prompt i.
    let rows: Vec<i64> = (0..sets).flat_map(|_| 0..b as i64).collect();
    cache.reorder(Tensor::from_data(TensorData::new(rows, [sets * b]), &device));
    let last = prompt_hidden.narrow(1, t - 1, 1);
    let last = Tensor::cat(vec![last; sets], 0);

    let n = sets * b;
    let (mut cont, mut cont_mask) = (vec![0i64; n * width], vec![0i64; n * width]);
    let (mut positions, mut targets, mut counts) = (Vec::new(), Vec::new(), vec![0usize; sets]);
    for (s, set) in responses.iter().enumerate() {
        for (i, r) in set.iter().enumerate() {
            let row = s * b + i;
            for (j, &tok) in r.iter().enumerate() {
                cont[row * width + j] = tok as i64;
                cont_mask[row * width + j] = 1;
                // Token j is predicted from the hidden state before it: the prompt's last for j = 0.
                positions.push((row * width + j) as i64);
                targets.push(tok as i64);
            }
            counts[s] += r.len();
        }
    }
    // The last response token is fed only to keep the shapes simple; its output is never read.
    let cont = Tensor::<2, Int>::from_data(TensorData::new(cont, [n, width]), &device);
    let cont_mask = Tensor::<2, Int>::from_data(TensorData::new(cont_mask, [n, width]), &device);
    let cont_hidden = model.hidden_states(cont, cont_mask, Some(&mut cache));
    let hidden = if width > 1 { Tensor::cat(vec![last, cont_hidden.narrow(1, 0, width - 1)], 1) } else { last };
    let d = hidden.dims()[2];
    let total = positions.len();
    let positions = Tensor::<1, Int>::from_data(TensorData::new(positions, [total]), &device);
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [total]), &device);
    let picked = hidden.reshape([n * width, d]).select(0, positions);
    let logits = model.logits(picked.unsqueeze::<3>()).reshape([total, model.config().vocab_size]);
    let nll = log_softmax(logits, 1).gather(1, targets.reshape([total, 1])).reshape([total]).neg();
    let mut start = 0;
    Ok(counts
        .into_iter()
        .map(|c| {
            let part = nll.clone().narrow(0, start, c).mean();
            start += c;
            part
        })
        .collect())
}

/// Summed NLL and token count over `examples`, evaluated `batch_size` at a time without
/// gradients: perplexity = exp(sum / count).
pub fn total_nll(model: &Llama, examples: &[LmExample], pad: u32, batch_size: usize) -> (f64, usize) {
    let model = model.valid();
    let (mut sum, mut count) = (0.0f64, 0usize);
    let refs: Vec<&LmExample> = examples.iter().collect();
    for chunk in refs.chunks(batch_size.max(1)) {
        if let Some(b) = batch(chunk, pad, &model.device()) {
            let nll = token_nll(&model, b);
            count += nll.dims()[0];
            sum += nll.sum().into_scalar::<f32>() as f64;
        }
    }
    (sum, count)
}

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
}

impl LmTrainer {
    /// `model` must live on an autodiff device.
    pub fn new(model: Llama, config: TrainConfig, pad: u32) -> Self {
        let optim = AdamWConfig::new().with_weight_decay(config.weight_decay).init();
        Self { model, config, optim, accum: GradientsAccumulator::new(), pending: 0, steps: 0, pad }
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

    /// The same for a loss the caller built from this trainer's model (SOFT's mixed loss).
    pub fn backward(&mut self, loss: Tensor<1>) -> Result<f32> {
        let value: f32 = loss.clone().into_scalar();
        if !value.is_finite() {
            return Err(Error::Invalid(format!("loss became {value} at optimizer step {}", self.steps + 1)));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &self.model);
        self.accum.accumulate(&self.model, grads);
        self.pending += 1;
        if self.pending >= self.config.grad_accum.max(1) {
            self.flush();
        }
        Ok(value)
    }

    /// Saves the optimizer's state (AdamW moments), keyed by parameter id.
    pub fn save_optimizer(&self, path: &std::path::Path) -> Result<()> {
        self.optim.to_record().save(path).map_err(|e| Error::format(path, e.to_string()))
    }

    /// Restores a state saved by [`LmTrainer::save_optimizer`] for a model with the same
    /// parameter ids (adapters get ids from their names, see `model/lora.rs`).
    pub fn load_optimizer(&mut self, path: &std::path::Path) -> Result<()> {
        let record = burn::optim::OptimizerRecord::load(path).map_err(|e| Error::format(path, e.to_string()))?;
        let optim = std::mem::replace(&mut self.optim, AdamWConfig::new().init());
        self.optim = optim.load_record(record);
        Ok(())
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
        self.pending = 0;
        self.steps += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::LlamaConfig;

    fn tiny(device: &Device) -> Llama {
        let mut c = LlamaConfig::tiny(32);
        c.hidden_size = 32;
        c.intermediate_size = 64;
        c.n_layers = 2;
        c.n_heads = 2;
        c.n_kv_heads = 1;
        c.head_dim = 16;
        Llama::init(&c, device).unwrap()
    }

    #[test]
    fn response_only_masking_counts_only_response_tokens() {
        let e = LmExample::response_only(&[5, 6, 7], &[8, 9, 2]);
        assert_eq!(e.tokens, vec![5, 6, 7, 8, 9, 2]);
        assert_eq!(e.trained, vec![false, false, false, true, true, true]);
        assert_eq!(e.targets(), 3);
        assert_eq!(LmExample::full(vec![1, 2, 3]).targets(), 2);
    }

    #[test]
    fn masked_loss_equals_mean_nll_of_response_tokens_only() {
        let device = Device::flex();
        let model = tiny(&device);
        let e = LmExample::response_only(&[3, 4, 5, 6], &[7, 8]);
        // Reference: full logits, pick the two response predictions by hand.
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(vec![3i64, 4, 5, 6, 7], [1, 5]), &device);
        let mask = Tensor::<2, Int>::ones([1, 5], &device);
        let logp = log_softmax(model.forward(tokens, mask, None), 2).into_data().convert::<f32>();
        let logp = logp.as_slice::<f32>().unwrap();
        let want = -(logp[3 * 32 + 7] + logp[4 * 32 + 8]) / 2.0;
        let got: f32 = lm_loss(&model, &[&e], 0).unwrap().into_scalar();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Padding another, shorter example into the batch leaves this one's terms unchanged.
        let short = LmExample::full(vec![1, 2]);
        let (sum, n) = total_nll(&model, &[e.clone(), short], 0, 2);
        let (alone, _) = total_nll(&model, &[e], 0, 1);
        assert_eq!(n, 3);
        assert!(sum > alone);
    }

    #[test]
    fn shared_prompt_losses_equal_separate_response_losses() {
        let device = Device::flex();
        let model = tiny(&device);
        let prompts: [&[u32]; 2] = [&[3, 4, 5, 6], &[9, 8]];
        let real: Vec<&[u32]> = vec![&[7, 8, 1], &[2]];
        let distilled: Vec<&[u32]> = vec![&[10], &[11, 12, 13, 1]];
        let got = shared_prompt_losses(&model, &prompts, &[real.clone(), distilled.clone()]).unwrap();
        for (set, loss) in [real, distilled].iter().zip(got) {
            let examples: Vec<LmExample> =
                prompts.iter().zip(set).map(|(p, r)| LmExample::response_only(p, r)).collect();
            let refs: Vec<&LmExample> = examples.iter().collect();
            let want: f32 = lm_loss(&model, &refs, 0).unwrap().into_scalar();
            let got: f32 = loss.into_scalar();
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        assert!(shared_prompt_losses(&model, &prompts, &[vec![&[1u32][..]]]).is_err());
    }

    #[test]
    fn training_lowers_the_loss_and_accumulation_steps_once_per_group() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let config = TrainConfig {
            lr: 1e-2,
            warmup_steps: 2,
            weight_decay: 0.0,
            micro_batch: 2,
            grad_accum: 2,
            seed: 3,
            max_steps: None,
        };
        let mut trainer = LmTrainer::new(tiny(&device).set_require_grad(true), config, 0);
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
}

/// Trains one epoch over `data` in `order`, one micro-batch at a time; returns the mean loss
/// and the tokens per second.
pub(crate) fn train_pass(
    trainer: &mut LmTrainer,
    order: &[usize],
    what: &'static str,
    progress: Progress,
    mut step: impl FnMut(&mut LmTrainer, &[usize]) -> Result<Option<(f32, usize)>>,
) -> Result<(f32, f64)> {
    let started = std::time::Instant::now();
    let micro = trainer.config.micro_batch.max(1);
    progress(Event::Begin { what, total: Some(order.len().div_ceil(micro) as u64) });
    let (mut sum, mut n, mut tokens) = (0.0f32, 0usize, 0usize);
    for chunk in order.chunks(micro) {
        if trainer.config.max_steps.is_some_and(|max| trainer.steps >= max) {
            break;
        }
        if let Some((loss, t)) = step(trainer, chunk)? {
            sum += loss;
            n += 1;
            tokens += t;
            progress(Event::Step { loss: Some(loss) });
        }
    }
    trainer.flush();
    progress(Event::End);
    Ok((sum / n.max(1) as f32, tokens as f64 / started.elapsed().as_secs_f64().max(1e-9)))
}
