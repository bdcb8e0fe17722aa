//! Stage 1 of SOFT, "Tuning-Only" (the BIGRec backbone): LoRA on the base model, trained on the
//! real targets with the response-only loss; after every epoch, valid HR@10 through generation
//! and grounding; early stopping; the best epoch is kept.

#[cfg(feature = "native")]
use burn::module::Module;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::data::prompt::{Backbone, PromptOptions};
use crate::data::{prompt, Catalog, Dataset, Domain, Split, Window};
use crate::eval::decoding::{Decoding, Ranking};
use crate::eval::llm::{history_prompt_with, Grounder, LlmRecommender};
use crate::eval::{evaluate, Metrics};
use crate::model::config::LoraConfig;
use crate::model::decoding::generate::BeamConfig;
use crate::model::formats::pretrained::Pretrained;
use crate::model::formats::tokenizer::{encode_prompt, SpecialIds};
use crate::model::llama::Llama;
#[cfg(feature = "native")]
use crate::progress::{Event, Progress};
#[cfg(feature = "native")]
use crate::train::checkpoint::Checkpoints;
#[cfg(feature = "native")]
use crate::train::data_parallel::MicroLoss;
#[cfg(feature = "native")]
use crate::train::epoch_loop::{epoch_order, EpochLoop, EpochOutcome, Trainable};
#[cfg(feature = "native")]
use crate::train::lm::lm_loss;
use crate::train::lm::{tokens_with_eos, LmExample};
#[cfg(feature = "native")]
use crate::train::trainer::train_pass;
use crate::train::trainer::TrainConfig;
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftConfig {
    pub lora: LoraConfig,
    pub train: TrainConfig,
    pub max_epochs: usize,
    /// Epochs without a better valid HR@10 before stopping.
    pub patience: usize,
    /// Beam search used for validation (and later for evaluation).
    pub beams: usize,
    pub max_new_tokens: usize,
    /// Decoding of every answer the stage generates (validation; later distillation and d).
    #[serde(default)]
    pub decoding: Decoding,
    /// How histories become prompts (missing in older runs: the paper's prompt).
    #[serde(default)]
    pub prompt: PromptOptions,
    /// How validation and evaluation rank items from the beams (older runs: the top beam's).
    #[serde(default)]
    pub ranking: Ranking,
}

impl Default for SftConfig {
    /// The reference's settings, except a learning rate suited to small models (the reference
    /// uses 1e-4 on a 3B model) and a smaller effective batch for 4096 examples on a CPU.
    fn default() -> Self {
        Self {
            lora: LoraConfig::default(),
            train: TrainConfig {
                lr: 1e-3,
                warmup_steps: 20,
                weight_decay: 0.0,
                micro_batch: 8,
                grad_accum: 4,
                seed: 42,
                max_steps: None,
                activation_checkpointing: false,
                base_dtype: Default::default(),
                devices: 1,
            },
            max_epochs: 7,
            patience: 2,
            beams: 4,
            max_new_tokens: 64,
            decoding: Decoding::Free,
            prompt: PromptOptions::default(),
            ranking: Ranking::TopBeam,
        }
    }
}

impl SftConfig {
    /// Refuses settings the stage cannot run with, naming the setting, before any work.
    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        self.lora.validate()?;
        self.prompt.validate()?;
        for (name, value) in
            [("epochs", self.max_epochs), ("beams", self.beams), ("max_new_tokens", self.max_new_tokens)]
        {
            if value == 0 {
                return Err(Error::config("training", format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }

    /// The beam search of every answer the stage generates, with its decoding applied.
    pub fn decoding_beam(&self, inputs: &SftInputs) -> Result<BeamConfig> {
        self.decoding.apply(self.beam(inputs.special.eos), inputs.tokenizer, inputs.special, inputs.catalog)
    }

    pub fn beam(&self, eos: u32) -> BeamConfig {
        BeamConfig {
            num_beams: self.beams,
            num_return_sequences: self.beams,
            max_new_tokens: self.max_new_tokens,
            ..BeamConfig::new(eos)
        }
    }
}

/// Prompt + response + EOS, the loss on the response (and EOS) only.
pub fn response_example(
    tokenizer: &Tokenizer,
    special: &SpecialIds,
    prompt: &str,
    response: &str,
) -> Result<LmExample> {
    let p = encode_prompt(tokenizer, special, prompt)?;
    Ok(LmExample::response_only(&p, &tokens_with_eos(tokenizer, response, special.eos)?))
}

/// Prompt + `"Title"` + EOS, the loss on the response only.
pub fn examples(
    tokenizer: &Tokenizer,
    special: &SpecialIds,
    catalog: &Catalog,
    domain: Domain,
    options: &PromptOptions,
    windows: &[Window],
) -> Result<Vec<LmExample>> {
    windows
        .iter()
        .map(|w| {
            let title = catalog.title(w.target()).unwrap_or_default();
            let prompt = history_prompt_with(catalog, domain, options, tokenizer, w.history())?;
            response_example(tokenizer, special, &prompt, &prompt::response(title))
        })
        .collect()
}

/// Refuses a model that does not fit `backbone`: LLaRA's prompts need an item
/// projector, and a BIGRec stage must not carry one (it would train an unused projector).
pub fn check_backbone(model: &Llama, backbone: Backbone) -> Result<()> {
    match (backbone, model.item_projector().is_some()) {
        (Backbone::Llara, false) => Err(Error::config(
            "backbone",
            "LLaRA needs the model to carry an item table and projector (from the run's SASRec)",
        )),
        (Backbone::Bigrec, true) => {
            Err(Error::config("backbone", "a BIGRec stage was given a model with an item projector (LLaRA's)"))
        }
        _ => Ok(()),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f32,
    pub valid: Metrics,
    pub seconds: f64,
    /// Training tokens (prompt and response) per second of the epoch's training pass.
    pub tokens_per_second: f64,
}

pub struct Tuned {
    /// The best epoch's model (inference mode, adapters attached).
    pub model: Llama,
    pub epochs: Vec<EpochRecord>,
    pub best_epoch: usize,
}

/// Everything the stage reads besides its configuration.
pub struct SftInputs<'a> {
    pub base: &'a Llama,
    pub tokenizer: &'a Tokenizer,
    pub special: &'a SpecialIds,
    pub catalog: &'a Catalog,
    pub domain: Domain,
    pub grounder: &'a Grounder,
    pub train: &'a [Window],
    pub valid: &'a [Window],
}

impl<'a> SftInputs<'a> {
    /// The base model of `pre`, the dataset's catalog and domain, the split's train and valid.
    pub fn new(pre: &'a Pretrained, grounder: &'a Grounder, dataset: &'a Dataset, split: &'a Split) -> Self {
        Self {
            base: &pre.model,
            tokenizer: &pre.tokenizer,
            special: &pre.special,
            catalog: &dataset.catalog,
            domain: dataset.meta.domain,
            grounder,
            train: &split.train,
            valid: &split.valid,
        }
    }
}

/// Valid metrics of `tuned`, decoded with `beam` and ranked as `config` says.
pub fn valid_metrics(inputs: &SftInputs, tuned: &Llama, config: &SftConfig, beam: &BeamConfig) -> Result<Metrics> {
    let rec = LlmRecommender {
        tuned,
        base: inputs.base,
        tokenizer: inputs.tokenizer,
        special: inputs.special,
        grounder: inputs.grounder,
        domain: inputs.domain,
        prompt: config.prompt.clone(),
        beam: beam.clone(),
        ranking: config.ranking,
    };
    let histories: Vec<&[u32]> = inputs.valid.iter().map(Window::history).collect();
    let targets: Vec<u32> = inputs.valid.iter().map(Window::target).collect();
    Ok(evaluate(inputs.catalog, &rec.recommend(inputs.catalog, &histories, &targets)?))
}

#[cfg(feature = "native")]
/// `trainable` is the base model loaded on an autodiff device (`device.autodiff()`), with any
/// data-parallel devices; fresh adapters are attached to it and only they train. With
/// `checkpoints`, every epoch is saved and a run continues from the newest one found there.
pub fn sft(
    config: &SftConfig,
    inputs: &SftInputs,
    trainable: impl Into<Trainable>,
    checkpoints: Option<&Checkpoints>,
    progress: Progress,
) -> Result<Tuned> {
    config.validate()?;
    let data = examples(inputs.tokenizer, inputs.special, inputs.catalog, inputs.domain, &config.prompt, inputs.train)?;
    sft_on(config, inputs, &data, trainable, checkpoints, progress)
}

#[cfg(feature = "native")]
/// [`sft`] on `data`, the training examples [`examples`] made of `inputs.train` under
/// `config.prompt`, for a caller that needed them before training (the memory check).
pub fn sft_on(
    config: &SftConfig,
    inputs: &SftInputs,
    data: &[LmExample],
    trainable: impl Into<Trainable>,
    checkpoints: Option<&Checkpoints>,
    progress: Progress,
) -> Result<Tuned> {
    config.validate()?;
    let trainable: Trainable = trainable.into();
    check_backbone(&trainable.model, config.prompt.backbone)?;
    for e in data {
        trainable.model.check_input_ids(&e.tokens)?;
    }
    let beam = config.decoding_beam(inputs)?;
    let epochs = EpochLoop {
        lora: &config.lora,
        train: &config.train,
        max_epochs: config.max_epochs,
        patience: config.patience,
        pad: inputs.special.pad,
        checkpoints,
        extra: (),
        progress,
    };
    let trained = epochs.run(trainable, |trainer, epoch, _, progress| {
        let started = std::time::Instant::now();
        let order = epoch_order(data.len(), config.train.seed, epoch);
        let pad = inputs.special.pad;
        let (loss, tokens_per_second, _) = train_pass(trainer, &order, "sft epoch", progress, |model, chunk| {
            let batch: Vec<&LmExample> = chunk.iter().map(|&i| &data[i]).collect();
            let tokens = batch.iter().map(|e| e.tokens.len()).sum();
            Ok(lm_loss(model, &batch, pad).map(|loss| MicroLoss { loss, tokens, extra: () }))
        })?;
        let valid = valid_metrics(inputs, &trainer.model.valid(), config, &beam)?;
        progress(Event::Epoch { epoch, loss, hr_at_10: valid.hr_at(10), ndcg_at_10: valid.ndcg_at(10) });
        let record = EpochRecord { epoch, loss, valid, seconds: started.elapsed().as_secs_f64(), tokens_per_second };
        Ok(EpochOutcome { record, score: valid.hr_at(10) })
    })?;
    Ok(Tuned { model: trained.model, epochs: trained.records, best_epoch: trained.best_epoch })
}
