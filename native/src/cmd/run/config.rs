//! What `soft-train run` is asked for (its flags and profile) and the settings it settles on,
//! saved as `DIR/run-config.json` so that `--resume` continues with exactly the same ones.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use soft_core::baselines::SasRecConfig;
use soft_core::data::prompt::Backbone;
use soft_core::data::SplitConfig;
use soft_core::eval::decoding::{Decoding, Ranking};
use soft_core::model::weights::BaseWeights;
use soft_core::train::scheduler::Schedule;
use soft_core::train::scheduler::{validate_alpha, DEFAULT_ALPHA};
use soft_core::train::sft::SftConfig;
use soft_core::train::soft::SoftConfig;

use crate::backend::BackendChoice;
use crate::cmd::data_args::{DataArgs, DataOptions, DEFAULT_DATASET};
use crate::cmd::prompt_args::{LoraArgs, PromptArgs};
use crate::cmd::sft::SftSettings;
use crate::run_info::TrainOn;

pub const CONFIG_FILE: &str = "run-config.json";

/// Every setting `run-config.json` fixes: giving one with `--resume` is an error, not a no-op.
const RESUME_CONFLICTS: [&str; 33] = [
    "backbones",
    "devices",
    "weights_dtype",
    "micro_batch",
    "grad_accum",
    "activation_checkpointing",
    "out",
    "profile",
    "model",
    "pretrain_steps",
    "dataset",
    "domain",
    "k_core",
    "train_size",
    "valid_size",
    "test_size",
    "split_seed",
    "epochs",
    "max_steps",
    "d_samples",
    "max_new_tokens",
    "sasrec_epochs",
    "sasrec_train_on",
    "decoding",
    "beams",
    "ranking",
    "seeds",
    "seed",
    "lr",
    "prompt_template",
    "history_len",
    "title_tokens",
    "lora_targets",
];

/// Ready-made settings; any option given explicitly wins over the profile's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// The `tiny` model on samples small enough for the whole chain to finish in about 20
    /// minutes on 2 CPU cores: 384 / 64 / 200 examples, 2 epochs, d on 32 prompts, answers of
    /// at most 32 tokens.
    Quick,
    /// The reference's sample sizes and epochs (4096 / 512 / 1000, 7 epochs, d on 256 prompts)
    /// with the `tiny` model.
    Reference,
    /// SmolLM2-135M with LoRA at the reference's sizes: meant for a GPU. On a CPU pass small
    /// sizes and `--max-steps`.
    Smollm2,
    /// A language model that learns on 2 CPU cores: MovieLens-100k, the `tiny` model pre-trained
    /// for this run on the training period's title sequences (1500 steps, into DIR/tiny), 4096 /
    /// 256 / 1000 examples, 2 epochs, answers constrained to real titles and ranked by 10 beams.
    Cpu,
    /// The paper's experiment, for a GPU: the base model given with `--model` (the reference's is
    /// Llama-3.2-3B), 4096 / 512 / 1000 examples, micro-batch 8 x 32 = batch 256, lr 1e-4 after
    /// 20 warm-up steps, up to 7 epochs, LoRA r 8 on q,v, answers of at most 64 tokens from 4
    /// beams, the top one ranked. See `soft-train plan` for the memory it needs.
    Paper,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output directory: data/, popularity/, sasrec/, sft/, soft/, soft-distilled-only/ (and
    /// seeds/SEED/... for every seed after the first).
    #[arg(long, default_value = "runs/default")]
    pub out: PathBuf,
    /// Continue the interrupted run in RUN_DIR with the settings it was started with (only
    /// --backend may be given with it, and --alpha to extend the sweep: any other setting that
    /// differs from the run's would be ignored).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = RESUME_CONFLICTS)]
    pub resume: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "quick")]
    pub profile: Profile,
    /// Base language model: `tiny` (pre-trained first when missing), `smollm2` or a path.
    #[arg(long)]
    pub model: Option<String>,
    /// Pre-train the `tiny` model for this run, on its dataset, into DIR/tiny with this many
    /// steps (default: the profile's; without, `tiny` is models/tiny, pre-trained when missing).
    #[arg(long)]
    pub pretrain_steps: Option<usize>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Epochs of SFT and of each SOFT run (early stopping may end them sooner).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop each training stage after this many optimizer steps (smoke tests of big models).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Pace of SOFT's curriculum [default: 1]; a comma-separated list runs SOFT once per alpha
    /// (the reference sweeps 100,10,1,0.1): the first in soft/, each other in soft-alpha-A/.
    /// With --resume it may extend the run's list (same alphas first) to add to its sweep.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub alpha: Vec<f64>,
    /// Training prompts SOFT's distance d is measured on.
    #[arg(long)]
    pub d_samples: Option<usize>,
    /// Longest answer the language models may write, in tokens.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Most epochs of SASRec (it stops early on valid HR@10).
    #[arg(long)]
    pub sasrec_epochs: Option<usize>,
    /// SASRec trains on every window of the training period (`all`, the table's baseline) or
    /// only on the sampled training examples the language models get (`sample`).
    #[arg(long, value_enum, default_value = "all")]
    pub sasrec_train_on: TrainOn,
    /// Decoding while training (validation, distillation, d); the test table reports both
    /// [default: the profile's; free but for `cpu`].
    #[arg(long, value_enum)]
    pub decoding: Option<Decoding>,
    /// Beams of every answer the language models write (default: the profile's).
    #[arg(long)]
    pub beams: Option<usize>,
    /// How validation and the test table rank items from the beams (default: the profile's).
    #[arg(long, value_enum)]
    pub ranking: Option<Ranking>,
    /// Repeat every trained method with this many seeds (SEED, SEED+1, ...): mean ± std.
    #[arg(long, default_value_t = 1)]
    pub seeds: usize,
    /// First seed of SASRec, SFT and SOFT.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Learning rate of SFT and SOFT (default: the profile's).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Examples per forward/backward pass of SFT and SOFT (default: the profile's).
    #[arg(long)]
    pub micro_batch: Option<usize>,
    /// Micro-batches per optimizer step: the effective batch is micro-batch x grad-accum
    /// (default: the profile's).
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Data-parallel SFT and SOFT over this many devices (see `soft-train sft --help`).
    #[arg(long, default_value_t = 1)]
    pub devices: usize,
    /// burn's balanced gradient checkpointing in SFT and SOFT: the same gradients; on the CPU
    /// backend it raised SmolLM2's peak memory (README, "Memory plan").
    #[arg(long)]
    pub activation_checkpointing: bool,
    /// Keep the trained models' frozen base weights in f32, f16 or bf16 (products compute in
    /// f32; adapters, optimizer state and losses stay f32), or `stored`: a GGUF base model's
    /// Q4_0/Q4_1/Q8_0 blocks as the file has them (CPU backend), for every stage (README,
    /// "Memory plan").
    #[arg(long, default_value = "f32")]
    pub weights_dtype: BaseWeights,
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// The LLM-based recommenders SOFT is applied to, comma-separated: `bigrec` (titles only),
    /// `llara` (titles and the run's SASRec item embeddings through a trained projector).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "bigrec")]
    pub backbones: Vec<Backbone>,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    /// The device's memory in GiB, for the check before each SFT that it fits (see
    /// `soft-train sft --help`). Like the backend, it belongs to the machine, not the run.
    #[arg(long)]
    pub device_memory: Option<f64>,
}

/// What a profile sets where no option is given.
struct ProfileSettings {
    /// Sample sizes (the split's seed is always `--split-seed`).
    sizes: SplitConfig,
    /// None: the user names it (`paper`).
    model: Option<&'static str>,
    dataset: &'static str,
    pretrain_steps: Option<usize>,
    decoding: Decoding,
    epochs: usize,
    lr: f64,
    micro_batch: usize,
    grad_accum: usize,
    max_new_tokens: usize,
    d_samples: usize,
    sasrec_epochs: usize,
    beams: usize,
    ranking: Ranking,
}

impl Profile {
    fn settings(self) -> ProfileSettings {
        match self {
            Profile::Quick => ProfileSettings {
                sizes: SplitConfig { train: 384, valid: 64, test: 200, ..SplitConfig::default() },
                model: Some("tiny"),
                dataset: DEFAULT_DATASET,
                pretrain_steps: None,
                decoding: Decoding::Free,
                epochs: 2,
                lr: 2e-3,
                micro_batch: 8,
                grad_accum: 1,
                max_new_tokens: 32,
                d_samples: 32,
                sasrec_epochs: 20,
                beams: SftConfig::default().beams,
                ranking: Ranking::TopBeam,
            },
            Profile::Reference => ProfileSettings {
                sizes: SplitConfig::default(),
                model: Some("tiny"),
                dataset: DEFAULT_DATASET,
                pretrain_steps: None,
                decoding: Decoding::Free,
                epochs: 7,
                lr: 1e-3,
                micro_batch: 8,
                grad_accum: 4,
                max_new_tokens: 64,
                d_samples: 256,
                sasrec_epochs: 200,
                beams: SftConfig::default().beams,
                ranking: Ranking::TopBeam,
            },
            Profile::Smollm2 => ProfileSettings { model: Some("smollm2"), lr: 2e-4, ..Profile::Reference.settings() },
            // Lever run 8 (README): the settings under which a language model first beat popularity.
            Profile::Cpu => ProfileSettings {
                sizes: SplitConfig { train: 4096, valid: 256, test: 1000, ..SplitConfig::default() },
                model: Some("tiny"),
                dataset: "ml-100k",
                pretrain_steps: Some(1500),
                decoding: Decoding::Constrained,
                epochs: 2,
                lr: 2e-3,
                micro_batch: 8,
                grad_accum: 1,
                max_new_tokens: 32,
                d_samples: 256,
                sasrec_epochs: 200,
                beams: 10,
                ranking: Ranking::Beams,
            },
            Profile::Paper => ProfileSettings {
                sizes: SplitConfig::default(),
                model: None,
                dataset: DEFAULT_DATASET,
                pretrain_steps: None,
                decoding: Decoding::Free,
                epochs: 7,
                lr: 1e-4,
                micro_batch: 8,
                grad_accum: 32,
                max_new_tokens: 64,
                d_samples: 256,
                sasrec_epochs: 200,
                beams: SftConfig::default().beams,
                ranking: Ranking::TopBeam,
            },
        }
    }
}

/// Everything a run was started with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub profile: Profile,
    pub model: String,
    /// `Some(steps)`: `tiny` is pre-trained for this run into DIR/tiny (missing in runs started
    /// before the option existed: models/tiny).
    #[serde(default)]
    pub pretrain_steps: Option<usize>,
    #[serde(flatten)]
    pub data: DataOptions,
    /// SFT's, and SOFT's epochs.
    #[serde(flatten)]
    pub sft: SftSettings,
    /// SOFT's alphas; runs from before the sweep wrote a single number.
    #[serde(deserialize_with = "one_or_many")]
    pub alpha: Vec<f64>,
    pub d_samples: usize,
    pub seeds: Vec<u64>,
    pub sasrec_epochs: usize,
    /// Missing in runs started before the option existed: `all`, what they used.
    #[serde(default)]
    pub sasrec_train_on: TrainOn,
    /// Missing in runs from before LLaRA: BIGRec alone.
    #[serde(default = "bigrec_only")]
    pub backbones: Vec<Backbone>,
}

fn bigrec_only() -> Vec<Backbone> {
    vec![Backbone::Bigrec]
}

impl RunConfig {
    pub fn from_args(args: &Args) -> Result<Self> {
        if args.seeds == 0 {
            bail!("--seeds must be at least 1");
        }
        let p = args.profile.settings();
        let Some(model) = args.model.clone().or(p.model.map(String::from)) else {
            bail!("--profile paper needs --model PATH: a Hugging Face directory (the reference's is Llama-3.2-3B)");
        };
        if args.pretrain_steps.is_some() && model != "tiny" {
            bail!("--pretrain-steps pre-trains the `tiny` model, not `{model}`");
        }
        let alpha = if args.alpha.is_empty() { vec![DEFAULT_ALPHA] } else { checked_alphas(&args.alpha)? };
        if let Some(b) = args.backbones.iter().enumerate().find(|(i, b)| args.backbones[..*i].contains(b)) {
            bail!("--backbones lists {} twice", b.1.name());
        }
        Self {
            profile: args.profile,
            model,
            pretrain_steps: args.pretrain_steps.or(p.pretrain_steps),
            data: args.data.options(p.dataset, p.sizes),
            sft: SftSettings {
                epochs: args.epochs.unwrap_or(p.epochs),
                max_steps: args.max_steps,
                lr: args.lr.unwrap_or(p.lr),
                micro_batch: args.micro_batch.unwrap_or(p.micro_batch),
                grad_accum: args.grad_accum.unwrap_or(p.grad_accum),
                devices: args.devices,
                activation_checkpointing: args.activation_checkpointing,
                weights_dtype: args.weights_dtype,
                max_new_tokens: args.max_new_tokens.unwrap_or(p.max_new_tokens),
                decoding: args.decoding.unwrap_or(p.decoding),
                prompt: args.prompt.prompt(),
                lora_targets: args.lora.lora_targets(),
                beams: args.beams.unwrap_or(p.beams),
                ranking: args.ranking.unwrap_or(p.ranking),
            },
            alpha,
            d_samples: args.d_samples.unwrap_or(p.d_samples),
            seeds: (0..args.seeds as u64).map(|i| args.seed + i).collect(),
            sasrec_epochs: args.sasrec_epochs.unwrap_or(p.sasrec_epochs),
            sasrec_train_on: args.sasrec_train_on,
            backbones: args.backbones.clone(),
        }
        .validated()
    }

    /// This configuration, once every setting of every stage is checked: a bad option stops the
    /// run before its first stage, not at the stage that reads it (where `--resume` would only
    /// repeat the failure).
    fn validated(self) -> Result<Self> {
        self.data.validate()?;
        for backbone in &self.backbones {
            let sft = self.sft_config(self.seeds[0], *backbone);
            for &alpha in &self.alpha {
                SoftConfig { sft: sft.clone(), schedule: Schedule::Adaptive, alpha, d_samples: self.d_samples }
                    .validate()?;
            }
        }
        if self.sasrec_epochs == 0 {
            bail!("--sasrec-epochs must be at least 1");
        }
        if self.pretrain_steps == Some(0) {
            bail!("--pretrain-steps must be at least 1");
        }
        Ok(self)
    }

    /// SFT's settings for `seed` and `backbone` (the run's prompt with that backbone); SOFT takes
    /// its own from the SFT run.
    pub fn sft_config(&self, seed: u64, backbone: Backbone) -> SftConfig {
        let mut config = self.sft.config(seed);
        config.prompt.backbone = backbone;
        config
    }

    pub fn sasrec_config(&self, seed: u64) -> SasRecConfig {
        SasRecConfig { max_epochs: self.sasrec_epochs, seed, ..Default::default() }
    }
}

/// `alphas` if every one is valid and none repeats: rejected before any work.
fn checked_alphas(alphas: &[f64]) -> Result<Vec<f64>> {
    for &alpha in alphas {
        validate_alpha(alpha)?;
    }
    if let Some(a) = alphas.iter().enumerate().find(|(i, a)| alphas[..*i].contains(a)).map(|(_, a)| a) {
        bail!("--alpha lists {a} twice");
    }
    Ok(alphas.to_vec())
}

/// The sweep of a resumed run that started with alphas `run`, given `--alpha given`: `given` when it
/// extends `run` (the completed SOFT runs keep their meaning), else an error.
pub fn extended_alphas(run: &[f64], given: &[f64]) -> Result<Vec<f64>> {
    let given = checked_alphas(given)?;
    if !given.starts_with(run) {
        let run = run.iter().map(f64::to_string).collect::<Vec<_>>().join(",");
        bail!("--alpha with --resume may only add to the run's sweep: give {run} first, then the new alphas");
    }
    Ok(given)
}

/// A number or a list of numbers, as a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Vec<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(f64),
        Many(Vec<f64>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(x) => vec![x],
        OneOrMany::Many(xs) => xs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use soft_core::model::weights::FloatEncoding;

    /// A `run-config.json` written before `--sasrec-train-on` existed still resumes, with the
    /// settings it names, and is written back under the same field names.
    #[test]
    fn an_older_run_config_still_reads() {
        let old = r#"{"alpha": 1.0, "d_samples": 32, "dataset": "amazon-books", "decoding": "free", "domain": "books",
            "epochs": 2, "grad_accum": 1, "k_core": 10, "lr": 0.002, "max_new_tokens": 32, "max_steps": null,
            "model": "tiny", "profile": "quick", "sasrec_epochs": 20, "seeds": [42, 43],
            "split": {"seed": 42, "test": 200, "train": 384, "valid": 64}}"#;
        let config: RunConfig = serde_json::from_str(old).unwrap();
        assert_eq!(config.data.domain, Some(soft_core::data::Domain::Books));
        assert_eq!(config.data.split, SplitConfig { train: 384, valid: 64, test: 200, seed: 42 });
        assert_eq!((config.sasrec_train_on, config.seeds.len(), config.sft.devices), (TrainOn::All, 2, 1));
        assert_eq!(config.alpha, [1.0], "a single alpha reads as a list of one");
        let written: serde_json::Value = serde_json::to_value(&config).unwrap();
        let mut keys: Vec<&str> = written.as_object().unwrap().keys().map(String::as_str).collect();
        keys.retain(|k| {
            ![
                "sasrec_train_on",
                "prompt",
                "lora_targets",
                "beams",
                "ranking",
                "pretrain_steps",
                "backbones",
                "micro_batch",
                "devices",
                "activation_checkpointing",
                "weights_dtype",
            ]
            .contains(k)
        });
        let old: serde_json::Value = serde_json::from_str(old).unwrap();
        assert_eq!(keys, old.as_object().unwrap().keys().map(String::as_str).collect::<Vec<_>>());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn config_of(flags: &[&str]) -> Result<RunConfig> {
        use clap::Parser;
        let cli = Cli::try_parse_from(std::iter::once("run").chain(flags.iter().copied()))?;
        RunConfig::from_args(&cli.args)
    }

    /// A setting added to `run` without joining RESUME_CONFLICTS would be silently ignored by
    /// `--resume`.
    #[test]
    fn resume_conflicts_with_every_setting_but_the_backend() {
        use clap::CommandFactory;
        let command = Cli::command();
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if !["resume", "backend", "device_memory", "alpha", "help"].contains(&id) {
                assert!(RESUME_CONFLICTS.contains(&id), "--resume does not conflict with {id}");
            }
        }
    }

    #[test]
    fn alpha_takes_the_reference_sweep_as_one_list() {
        assert_eq!(config_of(&[]).unwrap().alpha, [1.0]);
        assert_eq!(config_of(&["--alpha", "100,10,1,0.1"]).unwrap().alpha, [100.0, 10.0, 1.0, 0.1]);
        let twice = config_of(&["--alpha", "1,10,1"]).unwrap_err().to_string();
        assert!(twice.contains("twice"), "{twice}");
        assert!(config_of(&["--alpha", "1,-2"]).is_err(), "a negative alpha is refused");
    }

    #[test]
    fn a_resumed_run_may_only_extend_its_sweep() {
        assert_eq!(extended_alphas(&[1.0], &[1.0, 100.0, 0.1]).unwrap(), [1.0, 100.0, 0.1]);
        assert_eq!(extended_alphas(&[1.0, 10.0], &[1.0, 10.0]).unwrap(), [1.0, 10.0], "the same list is fine");
        let reordered = extended_alphas(&[1.0, 10.0], &[10.0, 1.0]).unwrap_err().to_string();
        assert!(reordered.contains("give 1,10 first"), "{reordered}");
        assert!(extended_alphas(&[1.0], &[100.0]).is_err(), "dropping soft/'s alpha would change its meaning");
        assert!(extended_alphas(&[1.0], &[1.0, 1.0]).is_err(), "a repeat is refused here too");
    }

    #[test]
    fn prompt_and_lora_levers_reach_the_sft_config() {
        let c = config_of(&[
            "--prompt-template",
            "chat",
            "--history-len",
            "5",
            "--title-tokens",
            "12",
            "--lora-targets",
            "q_proj,k_proj,v_proj,o_proj",
            "--lr",
            "0.01",
        ])
        .unwrap()
        .sft_config(1, Backbone::Bigrec);
        assert_eq!(c.prompt.template, soft_core::data::prompt::Template::Chat);
        assert_eq!((c.prompt.history_len, c.prompt.title_tokens), (Some(5), Some(12)));
        assert_eq!(c.lora.target_modules, ["q_proj", "k_proj", "v_proj", "o_proj"]);
        assert_eq!(c.train.lr, 0.01);
        let d = config_of(&[]).unwrap().sft_config(1, Backbone::Bigrec);
        assert_eq!((d.prompt, d.lora.target_modules), (Default::default(), vec!["q_proj".into(), "v_proj".into()]));
        assert_eq!((d.beams, d.ranking), (4, Ranking::TopBeam), "the paper's: 4 beams, the top one ranked");
        let r = config_of(&["--beams", "10", "--ranking", "beams"]).unwrap().sft_config(1, Backbone::Bigrec);
        assert_eq!((r.beams, r.ranking), (10, Ranking::Beams));
    }

    #[test]
    fn backbones_reach_the_sft_config_and_default_to_bigrec() {
        assert_eq!(config_of(&[]).unwrap().backbones, [Backbone::Bigrec]);
        let both = config_of(&["--backbones", "bigrec,llara"]).unwrap();
        assert_eq!(both.backbones, [Backbone::Bigrec, Backbone::Llara]);
        assert_eq!(both.sft_config(1, Backbone::Llara).prompt.backbone, Backbone::Llara);
        let twice = config_of(&["--backbones", "llara,llara"]).unwrap_err().to_string();
        assert!(twice.contains("twice"), "{twice}");
        assert!(config_of(&["--backbones", "bert4rec"]).is_err());
    }

    #[test]
    fn pretrain_steps_apply_to_tiny_only() {
        assert_eq!(config_of(&["--profile", "cpu"]).unwrap().pretrain_steps, Some(1500));
        assert_eq!(config_of(&[]).unwrap().pretrain_steps, None, "quick uses the shared models/tiny");
        let err = config_of(&["--pretrain-steps", "10", "--model", "smollm2"]).unwrap_err().to_string();
        assert!(err.contains("--pretrain-steps"), "{err}");
    }

    #[test]
    fn smollm2_is_the_reference_profile_with_its_own_model_and_rate() {
        let (r, s) = (Profile::Reference.settings(), Profile::Smollm2.settings());
        assert_eq!((s.model, s.lr), (Some("smollm2"), 2e-4));
        assert_eq!((s.sizes, s.epochs, s.d_samples), (r.sizes, r.epochs, r.d_samples));
    }

    #[test]
    fn batch_and_checkpointing_reach_the_training_config_and_zero_is_refused() {
        let d = config_of(&[]).unwrap().sft_config(1, Backbone::Bigrec).train;
        assert_eq!((d.micro_batch, d.grad_accum, d.activation_checkpointing), (8, 1, false));
        assert_eq!(d.base_dtype, BaseWeights::Float(FloatEncoding::F32));
        let c = config_of(&[
            "--micro-batch",
            "2",
            "--grad-accum",
            "16",
            "--activation-checkpointing",
            "--weights-dtype",
            "bf16",
        ])
        .unwrap()
        .sft_config(1, Backbone::Llara)
        .train;
        assert_eq!(
            (c.micro_batch, c.grad_accum, c.activation_checkpointing, c.base_dtype),
            (2, 16, true, BaseWeights::Float(FloatEncoding::BF16))
        );
        let err = config_of(&["--weights-dtype", "f8"]).unwrap_err().to_string();
        assert!(err.contains("f32, f16, bf16, bf16-dot, stored or int8-dot"), "{err}");
        for flag in ["--micro-batch", "--grad-accum"] {
            let err = config_of(&[flag, "0"]).unwrap_err().to_string();
            assert!(err.contains(&flag[2..].replace('-', "_")), "{flag}: {err}");
        }
    }

    #[test]
    fn the_paper_profile_is_the_references_settings_and_needs_a_model() {
        let err = config_of(&["--profile", "paper"]).unwrap_err().to_string();
        assert!(err.contains("--model"), "{err}");
        let c = config_of(&["--profile", "paper", "--model", "/models/llama-3.2-3b"]).unwrap();
        assert_eq!(c.model, "/models/llama-3.2-3b");
        assert_eq!(c.data.split, SplitConfig { train: 4096, valid: 512, test: 1000, seed: 42 });
        let sft = c.sft_config(42, Backbone::Bigrec);
        let t = &sft.train;
        assert_eq!((t.lr, t.warmup_steps, t.micro_batch * t.grad_accum, t.micro_batch), (1e-4, 20, 256, 8));
        assert_eq!((sft.max_epochs, sft.patience, sft.beams, sft.max_new_tokens), (7, 2, 4, 64));
        assert_eq!((sft.lora.r, sft.lora.alpha, sft.lora.dropout), (8, 16.0, 0.05));
        assert_eq!(sft.lora.target_modules, ["q_proj", "v_proj"]);
        assert_eq!((c.d_samples, c.alpha.as_slice()), (256, [1.0].as_slice()));
    }
}
