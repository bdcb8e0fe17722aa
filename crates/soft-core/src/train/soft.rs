//! Stage 3 of SOFT: a fresh LoRA on the base model, trained on the real and the distilled
//! targets of the same prompts at once,
//!     loss = (1 - lambda) * L_real + lambda * L_distilled,
//! with lambda set before every epoch by the self-adaptive scheduler from d, the mean L2
//! distance between the grounding embeddings of the model's answers and of the true items over
//! a fixed sample of training prompts (d0: the base model before any training).

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::data::prompt::strip_response;
use crate::data::prompt::PromptOptions;
use crate::data::Window;
use crate::eval::llm::{embed_texts, generate_answers, history_prompt_with};
use crate::eval::Metrics;
use crate::model::decoding::generate::BeamConfig;
use crate::model::llama::Llama;
use crate::train::scheduler::Schedule;
use crate::train::sft::{SftConfig, SftInputs};
use crate::Result;

// Training itself (the page builds without the `native` feature and uses only the types above).
#[cfg(feature = "native")]
use {
    crate::model::formats::tokenizer::encode_prompt,
    crate::progress::{Event, Progress},
    crate::train::checkpoint::Checkpoints,
    crate::train::data_parallel::MicroLoss,
    crate::train::distill::Distilled,
    crate::train::epoch_loop::{epoch_order, EpochLoop, EpochOutcome, Trainable},
    crate::train::lm::{shared_prompt_losses, tokens_with_eos},
    crate::train::scheduler::Scheduler,
    crate::train::sft::valid_metrics,
    crate::train::trainer::train_pass,
    crate::Error,
    burn::module::Module,
    rand::{rngs::StdRng, seq::SliceRandom, SeedableRng},
    std::path::{Path, PathBuf},
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoftConfig {
    /// LoRA, optimiser, epochs, patience and beam search as in SFT.
    pub sft: SftConfig,
    pub schedule: Schedule,
    pub alpha: f64,
    /// Training prompts d is measured on (drawn once, seeded).
    pub d_samples: usize,
}

impl Default for SoftConfig {
    fn default() -> Self {
        Self { sft: SftConfig::default(), schedule: Schedule::Adaptive, alpha: 1.0, d_samples: 256 }
    }
}

impl SoftConfig {
    /// Refuses settings the stage cannot run with, naming the setting, before any work.
    pub fn validate(&self) -> Result<()> {
        self.sft.validate()?;
        crate::train::scheduler::validate_alpha(self.alpha)?;
        if self.d_samples == 0 {
            return Err(crate::Error::config("SOFT", "d_samples must be at least 1"));
        }
        Ok(())
    }
}

/// What one epoch did: `lambda` used during it, `d` measured at its end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoftEpoch {
    pub epoch: usize,
    pub lambda: f64,
    pub d: f64,
    pub loss_real: f32,
    pub loss_distilled: f32,
    pub valid: Metrics,
    pub seconds: f64,
    /// Training tokens (the prompt once, both responses) per second of the training pass.
    pub tokens_per_second: f64,
}

/// What a SOFT checkpoint keeps besides its epochs: d0, so a resumed run schedules with the
/// same one.
#[cfg(feature = "native")]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct SoftCheckpoint {
    d0: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoftReport {
    pub alpha: f64,
    pub schedule: Schedule,
    pub d0: f64,
    pub epochs: Vec<SoftEpoch>,
    pub best_epoch: usize,
}

/// `(1 - lambda) * real + lambda * distilled`.
pub fn mixed_loss(real: Tensor<1>, distilled: Tensor<1>, lambda: f64) -> Tensor<1> {
    real.mul_scalar(1.0 - lambda) + distilled.mul_scalar(lambda)
}

/// Mean L2 distance between matching rows of two `[N, D]` tensors.
pub fn mean_l2(a: Tensor<2>, b: Tensor<2>) -> f64 {
    let d: f32 = (a - b).powf_scalar(2.0).sum_dim(1).sqrt().mean().into_scalar();
    d as f64
}

/// The fixed sample d is measured on: its prompts and the base model's embeddings of their
/// true titles, computed once.
pub struct Probe {
    prompts: Vec<String>,
    truth: Tensor<2>,
}

impl Probe {
    pub fn new(inputs: &SftInputs, options: &PromptOptions, windows: &[Window]) -> Result<Self> {
        let prompts = windows
            .iter()
            .map(|w| history_prompt_with(inputs.catalog, inputs.domain, options, inputs.tokenizer, w.history()))
            .collect::<Result<_>>()?;
        let titles: Vec<&str> = windows.iter().map(|w| inputs.catalog.title(w.target()).unwrap_or_default()).collect();
        Ok(Self { prompts, truth: embed_texts(inputs.base, inputs.tokenizer, inputs.special, &titles)? })
    }

    pub fn len(&self) -> usize {
        self.prompts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty()
    }

    /// d for `model`: its answers, embedded by the base model, against the true titles.
    pub fn measure_d(&self, model: &Llama, inputs: &SftInputs, beam: &BeamConfig) -> Result<f64> {
        let answers = generate_answers(model, inputs.tokenizer, inputs.special, &self.prompts, beam)?;
        let stripped: Vec<&str> = answers.iter().map(|a| strip_response(a)).collect();
        let a = embed_texts(inputs.base, inputs.tokenizer, inputs.special, &stripped)?;
        Ok(mean_l2(a, self.truth.clone()))
    }
}

#[cfg(feature = "native")]
/// One prompt's tokens and its two responses (EOS included).
struct Pair {
    prompt: Vec<u32>,
    real: Vec<u32>,
    distilled: Vec<u32>,
}

#[cfg(feature = "native")]
fn pairs(inputs: &SftInputs, distilled: &[Distilled]) -> Result<Vec<Pair>> {
    let response = |text: &str| tokens_with_eos(inputs.tokenizer, text, inputs.special.eos);
    distilled
        .iter()
        .map(|d| {
            Ok(Pair {
                prompt: encode_prompt(inputs.tokenizer, inputs.special, &d.prompt)?,
                real: response(&d.real)?,
                distilled: response(&d.distilled)?,
            })
        })
        .collect()
}

#[cfg(feature = "native")]
/// Where a SOFT run keeps the adapter of every epoch (`epochs/<e>/adapter`, PEFT layout), beside
/// its checkpoints, which keep only the newest and the best: the page's epoch slider runs the
/// model as it was after each epoch.
pub struct EpochAdapters<'a> {
    pub run_dir: &'a Path,
    /// Written into each adapter's config (`base_model_name_or_path`).
    pub base_model: &'a str,
}

#[cfg(feature = "native")]
impl EpochAdapters<'_> {
    /// The adapter directory of `epoch` (1-based) under `run_dir`.
    pub fn dir(run_dir: &Path, epoch: usize) -> PathBuf {
        run_dir.join("epochs").join(epoch.to_string()).join("adapter")
    }
}

#[cfg(feature = "native")]
pub struct SoftResult {
    pub model: Llama,
    pub report: SoftReport,
}

#[cfg(feature = "native")]
/// `distilled` must be the auxiliary dataset of `inputs.train`, in its order. With
/// `checkpoints`, every epoch is saved and a run continues from the newest one found there.
pub fn soft(
    config: &SoftConfig,
    inputs: &SftInputs,
    distilled: &[Distilled],
    trainable: impl Into<Trainable>,
    checkpoints: Option<&Checkpoints>,
    epoch_adapters: Option<&EpochAdapters>,
    progress: Progress,
) -> Result<SoftResult> {
    if distilled.len() != inputs.train.len() || distilled.iter().zip(inputs.train).any(|(d, w)| d.target != w.target())
    {
        return Err(Error::Input(format!(
            "the distilled dataset ({} examples) does not match the training split ({} examples) example for example",
            distilled.len(),
            inputs.train.len()
        )));
    }
    let backbone = config.sft.prompt.backbone;
    let trainable: Trainable = trainable.into();
    crate::train::sft::check_backbone(&trainable.model, backbone)?;
    crate::train::sft::check_backbone(inputs.base, backbone)?;
    let pairs = pairs(inputs, distilled)?;
    for p in &pairs {
        trainable.model.check_input_ids(&p.prompt)?;
    }
    let beam = config.sft.decoding_beam(inputs)?;
    let mut sample: Vec<Window> = inputs.train.to_vec();
    sample.shuffle(&mut StdRng::seed_from_u64(config.sft.train.seed));
    sample.truncate(config.d_samples);
    let probe = Probe::new(inputs, &config.sft.prompt, &sample)?;

    let saved = match checkpoints {
        Some(c) => c.latest::<SoftEpoch, SoftCheckpoint>()?.map(|(_, state)| state.extra.d0),
        None => None,
    };
    let d0 = match saved {
        Some(d0) => d0,
        None => {
            progress(Event::Note(format!("measuring d0 with the base model on {} training prompts", probe.len())));
            probe.measure_d(inputs.base, inputs, &beam)?
        }
    };
    let scheduler = Scheduler::new(config.schedule, config.alpha, d0)?;
    let epochs = EpochLoop {
        lora: &config.sft.lora,
        train: &config.sft.train,
        max_epochs: config.sft.max_epochs,
        patience: config.sft.patience,
        pad: inputs.special.pad,
        checkpoints,
        extra: SoftCheckpoint { d0 },
        progress,
    };
    let trained = epochs.run(trainable, |trainer, epoch, done: &[SoftEpoch], progress| {
        let started = std::time::Instant::now();
        let lambda = scheduler.lambda(epoch, config.sft.max_epochs, done.last().map_or(d0, |e| e.d));
        let order = epoch_order(pairs.len(), config.sft.train.seed, epoch);
        let (_, tokens_per_second, parts) = train_pass(trainer, &order, "soft epoch", progress, |model, chunk| {
            let batch: Vec<&Pair> = chunk.iter().map(|&i| &pairs[i]).collect();
            let prompts: Vec<&[u32]> = batch.iter().map(|p| p.prompt.as_slice()).collect();
            let real: Vec<&[u32]> = batch.iter().map(|p| p.real.as_slice()).collect();
            let dist: Vec<&[u32]> = batch.iter().map(|p| p.distilled.as_slice()).collect();
            let tokens = batch.iter().map(|p| p.prompt.len() + p.real.len() + p.distilled.len()).sum();
            let mut losses = shared_prompt_losses(model, &prompts, &[real, dist])?.into_iter();
            let (lr, ld) = (losses.next().expect("two sets"), losses.next().expect("two sets"));
            let extra = (lr.clone().into_scalar::<f32>(), ld.clone().into_scalar::<f32>());
            Ok(Some(MicroLoss { loss: mixed_loss(lr, ld, lambda), tokens, extra }))
        })?;
        let (real_sum, dist_sum): (f32, f32) = parts.iter().fold((0.0, 0.0), |(r, d), p| (r + p.0, d + p.1));
        let n = parts.len();
        let tuned = trainer.model.valid();
        let d = probe.measure_d(&tuned, inputs, &beam)?;
        let valid = valid_metrics(inputs, &tuned, &config.sft, &beam)?;
        if let Some(keep) = epoch_adapters {
            trainer.model.save_adapter(&EpochAdapters::dir(keep.run_dir, epoch), keep.base_model)?;
        }
        let n = n.max(1) as f32;
        let record = SoftEpoch {
            epoch,
            lambda,
            d,
            loss_real: real_sum / n,
            loss_distilled: dist_sum / n,
            valid,
            seconds: started.elapsed().as_secs_f64(),
            tokens_per_second,
        };
        progress(Event::Note(format!("epoch {epoch}: lambda {lambda:.3}, d {d:.4} (d0 {d0:.4})")));
        progress(Event::Epoch {
            epoch,
            loss: (1.0 - lambda as f32) * record.loss_real + lambda as f32 * record.loss_distilled,
            hr_at_10: valid.hr_at(10),
            ndcg_at_10: valid.ndcg_at(10),
        });
        Ok(EpochOutcome { record, score: valid.hr_at(10) })
    })?;
    Ok(SoftResult {
        model: trained.model,
        report: SoftReport {
            alpha: config.alpha,
            schedule: config.schedule,
            d0,
            epochs: trained.records,
            best_epoch: trained.best_epoch,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn mixed_loss_is_the_weighted_sum() {
        let device = Device::flex();
        let real = Tensor::<1>::from_data(TensorData::new(vec![2.0f32], [1]), &device);
        let dist = Tensor::<1>::from_data(TensorData::new(vec![0.5f32], [1]), &device);
        for lambda in [0.0, 0.3, 1.0] {
            let got: f32 = mixed_loss(real.clone(), dist.clone(), lambda).into_scalar();
            let want = (1.0 - lambda) * 2.0 + lambda * 0.5;
            assert!((got as f64 - want).abs() < 1e-6, "{lambda}: {got} vs {want}");
        }
    }

    #[test]
    fn d_is_the_mean_row_distance() {
        let device = Device::flex();
        // Row distances 5 (3-4-5 triangle) and 0: mean 2.5.
        let a = Tensor::<2>::from_data(TensorData::new(vec![3.0f32, 4.0, 1.0, 1.0], [2, 2]), &device);
        let b = Tensor::<2>::from_data(TensorData::new(vec![0.0f32, 0.0, 1.0, 1.0], [2, 2]), &device);
        assert!((mean_l2(a, b) - 2.5).abs() < 1e-6);
    }
}
