//! `soft-train sft`: SOFT's stage 1 ("Tuning-Only"): LoRA fine-tuning on the real targets, the
//! best epoch by valid HR@10 saved as a PEFT adapter in a run directory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use serde::{Deserialize, Serialize};
use soft_core::eval::decoding::{Decoding, Ranking};
use soft_core::model::formats::pretrained::{load_path_as, Pretrained};
use soft_core::train::epoch_loop::Trainable;
use soft_core::train::sft::{examples, sft_on, SftConfig, SftInputs};

use soft_core::data::prompt::PromptOptions;
use soft_core::model::config::LoraConfig;
use soft_core::model::weights::BaseWeights;

use super::data_args::{DataArgs, DataOptions};
use super::plan::{check_fits, Training};
use super::prompt_args::{BackboneArgs, LoraArgs, PromptArgs};
use super::run_dir_args::RunDirArgs;
use crate::backend::{choose, replicas, BackendChoice};
use crate::grounder_cache::grounder;
use crate::llara::{for_backbone, sasrec_item_table};
use crate::llm_run::ADAPTER_DIR;
use crate::model_arg::resolve;
use crate::progress::Reporter;
use crate::run_dir::{checkpoints, stopped};
use crate::run_info::{RunInfo, SftDetails};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base model: `tiny`, `smollm2` or a path (see `soft-train generate --help`).
    #[arg(long, default_value = "tiny")]
    pub model: String,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, default_value_t = SftConfig::default().max_epochs)]
    pub epochs: usize,
    #[arg(long, default_value_t = SftConfig::default().train.lr)]
    pub lr: f64,
    #[arg(long, default_value_t = SftConfig::default().beams)]
    pub beams: usize,
    #[arg(long, default_value_t = SftConfig::default().max_new_tokens)]
    pub max_new_tokens: usize,
    /// Examples per forward/backward pass.
    #[arg(long, default_value_t = SftConfig::default().train.micro_batch)]
    pub micro_batch: usize,
    /// Micro-batches per optimizer step (the effective batch is micro-batch x grad-accum).
    #[arg(long, default_value_t = SftConfig::default().train.grad_accum)]
    pub grad_accum: usize,
    /// Data-parallel training over this many devices, one micro-batch each, gradients summed
    /// on the first (burn's main-device strategy): the steps of one device with the same
    /// micro-batch and grad-accum. On the CPU backend the devices share its one CPU device.
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// burn's balanced gradient checkpointing: the same gradients; on the CPU backend it raised
    /// SmolLM2's peak memory (README, "Memory plan").
    #[arg(long)]
    pub activation_checkpointing: bool,
    /// Keep the trained model's frozen base weights in f32, f16 or bf16 (products compute in
    /// f32; the adapter, optimizer state and loss stay f32), `bf16-dot`: bf16 with a training
    /// step's products in bf16 dot products (CPU with AVX512_BF16: activations rounded to bf16
    /// for them, sums in f32; BENCHMARKS.md), or `stored`: a GGUF's Q4_0/Q4_1/Q8_0 blocks as
    /// the file has them (CPU backend), or `int8-dot`: `stored` with decoding's products in
    /// 8-bit integer dot products (CPU with AVX512_VNNI; training as `stored`), for the whole
    /// run: distillation, SOFT and evaluation load the base in it too (README, "Memory plan").
    #[arg(long, default_value = "f32")]
    pub weights_dtype: BaseWeights,
    #[arg(long, default_value_t = SftConfig::default().train.seed)]
    pub seed: u64,
    /// Stop after this many optimizer steps in all (smoke tests of big models on a CPU).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Decoding of validation answers, and later of distillation and SOFT's d.
    #[arg(long, value_enum, default_value = "free")]
    pub decoding: Decoding,
    /// How validation (and later evaluation) ranks items from the beams.
    #[arg(long, value_enum, default_value = "top-beam")]
    pub ranking: Ranking,
    #[command(flatten)]
    pub prompt: PromptArgs,
    #[command(flatten)]
    pub backbone: BackboneArgs,
    #[command(flatten)]
    pub lora: LoraArgs,
    /// The device's memory in GiB, for the check before training that the setting fits it by
    /// the memory plan (default: what the device reports: the CPU's physical memory, a Vulkan
    /// or Metal GPU's heap; wgpu elsewhere reports none, and then nothing is checked).
    #[arg(long)]
    pub device_memory: Option<f64>,
    #[command(flatten)]
    pub run_dir: RunDirArgs,
}

/// `--device-memory` in bytes, refused unless a positive number of GiB.
pub fn device_memory_bytes(gib: Option<f64>) -> Result<Option<u64>> {
    match gib {
        None => Ok(None),
        Some(g) if g.is_finite() && g > 0.0 => Ok(Some((g * (1u64 << 30) as f64) as u64)),
        Some(g) => anyhow::bail!("--device-memory must be a positive number of GiB, got {g}"),
    }
}

pub struct Options {
    /// Base model: `tiny`, `smollm2` or a path.
    pub model: String,
    pub out: PathBuf,
    pub data: DataOptions,
    pub config: SftConfig,
    pub backend: BackendChoice,
    /// Continue from the newest epoch checkpoint in `out`.
    pub resume: bool,
    /// LLaRA's SASRec run (its item table), when `config.prompt.backbone` is LLaRA.
    pub sasrec: Option<PathBuf>,
    /// The device's memory in bytes when the user gives it (otherwise the device's own figure).
    pub device_memory: Option<u64>,
}

/// The SFT settings a user picks; the rest of [`SftConfig`] keeps its defaults. `run` keeps
/// them in its configuration file under these field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftSettings {
    pub epochs: usize,
    pub max_steps: Option<usize>,
    pub lr: f64,
    /// Missing in runs started before the option existed: 8, what they used.
    #[serde(default = "default_micro_batch")]
    pub micro_batch: usize,
    pub grad_accum: usize,
    /// Missing in runs started before the option existed: one device.
    #[serde(default = "one_device")]
    pub devices: usize,
    /// Missing in runs started before the option existed: off.
    #[serde(default)]
    pub activation_checkpointing: bool,
    /// Missing in runs started before the option existed: f32.
    #[serde(default)]
    pub weights_dtype: BaseWeights,
    pub max_new_tokens: usize,
    pub decoding: Decoding,
    /// Missing in runs started before the options existed: the paper's prompt and targets.
    #[serde(default)]
    pub prompt: PromptOptions,
    #[serde(default = "default_lora_targets")]
    pub lora_targets: Vec<String>,
    /// Missing in runs started before the options existed: 4 beams, the top one ranked.
    #[serde(default = "default_beams")]
    pub beams: usize,
    #[serde(default)]
    pub ranking: Ranking,
}

fn default_lora_targets() -> Vec<String> {
    LoraConfig::default().target_modules
}

fn one_device() -> usize {
    SftConfig::default().train.devices
}

fn default_micro_batch() -> usize {
    SftConfig::default().train.micro_batch
}

fn default_beams() -> usize {
    SftConfig::default().beams
}

impl SftSettings {
    pub fn config(&self, seed: u64) -> SftConfig {
        let mut config = SftConfig {
            max_epochs: self.epochs,
            beams: self.beams,
            max_new_tokens: self.max_new_tokens,
            decoding: self.decoding,
            ranking: self.ranking,
            prompt: self.prompt.clone(),
            ..Default::default()
        };
        config.lora.target_modules = self.lora_targets.clone();
        config.train.max_steps = self.max_steps;
        config.train.micro_batch = self.micro_batch;
        config.train.grad_accum = self.grad_accum;
        config.train.devices = self.devices;
        config.train.activation_checkpointing = self.activation_checkpointing;
        config.train.base_dtype = self.weights_dtype;
        config.train.lr = self.lr;
        config.train.seed = seed;
        config
    }
}

impl TryFrom<Args> for Options {
    type Error = anyhow::Error;

    fn try_from(args: Args) -> Result<Self> {
        let sasrec = args.backbone.sasrec_run()?;
        let mut prompt = args.prompt.prompt();
        prompt.backbone = args.backbone.backbone;
        let settings = SftSettings {
            epochs: args.epochs,
            max_steps: args.max_steps,
            lr: args.lr,
            micro_batch: args.micro_batch,
            grad_accum: args.grad_accum,
            devices: args.devices,
            activation_checkpointing: args.activation_checkpointing,
            weights_dtype: args.weights_dtype,
            max_new_tokens: args.max_new_tokens,
            decoding: args.decoding,
            prompt,
            lora_targets: args.lora.lora_targets(),
            beams: args.beams,
            ranking: args.ranking,
        };
        let RunDirArgs { out, backend, resume } = args.run_dir;
        let config = settings.config(args.seed);
        config.validate()?;
        let data: DataOptions = (&args.data).into();
        data.validate()?;
        let device_memory = device_memory_bytes(args.device_memory)?;
        Ok(Self { model: args.model, out, data, config, backend, resume, sasrec, device_memory })
    }
}

/// `report.json`'s own fields.
#[derive(Serialize)]
struct Extra {
    adapter: &'static str,
    seconds_per_epoch: Vec<f64>,
}

pub fn execute(o: &Options) -> Result<()> {
    let started = Instant::now();
    let (dataset, split) = o.data.load()?;
    let backend = choose(o.backend)?;
    let replicas = replicas(&backend, o.config.train.devices)?;
    let path = resolve(&o.model)?;
    // LLaRA: the base model (d0, Guidance-Only) and the trained one start from the same
    // projector, drawn from the run's seed, over the SASRec run's frozen item table.
    let table = o.sasrec.as_deref().map(|dir| sasrec_item_table(dir, &backend.device)).transpose()?;
    let loaded = load_path_as(&path, &o.config.train.training_device(&backend.device), o.config.train.base_dtype)?;
    // The frozen model that grounds and validates reads the trained model's base tensors
    // (frozen, never updated) without autodiff: one copy of the base weights, not two, in the
    // run's precision (a half-precision run grounds and evaluates in it too).
    let trainable = loaded.model;
    let mut pre = Pretrained { model: trainable.valid(), ..loaded };
    let (backbone, seed) = (o.config.prompt.backbone, o.config.train.seed);
    pre.model = for_backbone(pre.model, backbone, table.as_ref(), seed)?;
    let trainable = for_backbone(trainable, backbone, table.as_ref(), seed)?;
    eprintln!(
        "SFT of {} on {} examples (valid {}), backend {}",
        pre.source,
        split.train.len(),
        split.valid.len(),
        backend.name
    );
    let memory = match (o.device_memory, backend.memory) {
        (Some(given), _) => Some((given, format!("{}, by --device-memory", backend.name))),
        (None, Some(reported)) => Some((reported, format!("{}, as it reports", backend.name))),
        (None, None) => None,
    };
    // Tokenized once: for the memory check, then for training.
    let examples =
        examples(&pre.tokenizer, &pre.special, &dataset.catalog, dataset.meta.domain, &o.config.prompt, &split.train)?;
    if let Some((memory, device)) = memory {
        // Data-parallel workers on the CPU share its memory; each GPU holds its own micro-batch.
        let sharing = if backend.gpu { 1 } else { o.config.train.devices };
        let training = Training { config: &o.config, examples: &examples, sharing };
        check_fits(&path, &training, memory, &device)?;
    }
    let grounder = grounder(&pre, &path, &dataset.catalog)?;
    let inputs = SftInputs::new(&pre, &grounder, &dataset, &split);
    let mut reporter = Reporter::new();
    let checkpoints = checkpoints(&o.out, &o.model, o.resume)?;
    let trainable = Trainable { model: trainable, replicas };
    let tuned = sft_on(&o.config, &inputs, &examples, trainable, Some(&checkpoints), &mut |e| reporter.handle(e))
        .with_context(|| stopped(&checkpoints))?;
    tuned.model.save_adapter(&o.out.join(ADAPTER_DIR), &o.model)?;
    let extra = Extra { adapter: ADAPTER_DIR, seconds_per_epoch: tuned.epochs.iter().map(|e| e.seconds).collect() };
    let details = SftDetails {
        base_model: o.model.clone(),
        config: o.config.clone(),
        best_epoch: tuned.best_epoch,
        epochs: tuned.epochs,
    };
    let run = RunInfo::new(&dataset.meta, o.data.split, backend.name, started, details);
    run.save(&o.out, &extra)?;
    let best = &run.details.epochs[run.details.best_epoch - 1].valid;
    println!(
        "best epoch {}: valid HR@10 {:.4} NDCG@10 {:.4}; wrote {} in {:.0} s",
        run.details.best_epoch,
        best.hr_at(10),
        best.ndcg_at(10),
        o.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
