//! `soft-train soft`: SOFT's stage 3. A fresh LoRA on the SFT run's base model, trained on the
//! real and the distilled targets with the self-adaptive curriculum; `report.json` records
//! alpha, d0 and, per epoch, the lambda used and the distance measured after it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::Module;
use serde::Serialize;
use soft_core::model::formats::pretrained::load_path_as;
use soft_core::train::distill::load_jsonl;
use soft_core::train::epoch_loop::Trainable;
use soft_core::train::scheduler::{validate_alpha, Schedule, DEFAULT_ALPHA};
use soft_core::train::sft::SftInputs;
use soft_core::train::soft::{soft, EpochAdapters, SoftConfig};

use super::data_args::{DataArgs, DataOptions};
use super::distill::{check_split, DISTILLED_FILE};
use super::run_dir_args::RunDirArgs;
use crate::backend::{choose, replicas, BackendChoice};
use crate::llara::for_backbone;
use crate::llm_run::{LoadedRun, ADAPTER_DIR};
use crate::model_arg::resolve;
use crate::progress::Reporter;
use crate::run_dir::{checkpoints, stopped};
use crate::run_info::{RunInfo, SoftDetails};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The SFT run whose `distilled.jsonl` (from `soft-train distill`) is the auxiliary data.
    #[arg(long)]
    pub sft: PathBuf,
    /// Pace of the curriculum (the reference sweeps 100, 10, 1, 0.1).
    #[arg(long, default_value_t = DEFAULT_ALPHA, allow_hyphen_values = true)]
    pub alpha: f64,
    #[arg(long, value_enum, default_value = "adaptive")]
    pub schedule: Schedule,
    /// Epochs (default: the SFT run's maximum).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training prompts d is measured on.
    #[arg(long, default_value_t = SoftConfig::default().d_samples)]
    pub d_samples: usize,
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub run_dir: RunDirArgs,
}

pub struct Options {
    /// The SFT run with the distilled targets.
    pub sft: PathBuf,
    pub out: PathBuf,
    pub alpha: f64,
    pub schedule: Schedule,
    /// `None`: the SFT run's maximum.
    pub epochs: Option<usize>,
    pub d_samples: usize,
    pub data: DataOptions,
    pub backend: BackendChoice,
    /// Continue from the newest epoch checkpoint in `out`.
    pub resume: bool,
}

impl From<Args> for Options {
    fn from(args: Args) -> Self {
        let RunDirArgs { out, backend, resume } = args.run_dir;
        Self {
            sft: args.sft,
            out,
            alpha: args.alpha,
            schedule: args.schedule,
            epochs: args.epochs,
            d_samples: args.d_samples,
            data: (&args.data).into(),
            backend,
            resume,
        }
    }
}

/// `report.json`'s own field.
#[derive(Serialize)]
struct Extra {
    adapter: &'static str,
}

pub fn execute(o: &Options) -> Result<()> {
    let started = Instant::now();
    // Bad settings are refused before any work.
    validate_alpha(o.alpha)?;
    if o.d_samples == 0 || o.epochs == Some(0) {
        bail!("--d-samples and --epochs must be at least 1");
    }
    o.data.validate()?;
    let backend = choose(o.backend)?;
    let (dataset, split) = o.data.load()?;
    let distilled_path = o.sft.join(DISTILLED_FILE);
    if !distilled_path.exists() {
        bail!("{}: missing; run `soft-train distill --run {}` first", distilled_path.display(), o.sft.display());
    }
    let distilled = load_jsonl(&distilled_path)?;
    let sft_run = LoadedRun::open(&o.sft, &dataset.catalog, &backend.device, None, None)?;
    check_split(&o.sft, &sft_run.header, &o.data)?;
    let base_name = sft_run.base_model.clone();
    let mut sft_config = sft_run.config.clone();
    if let Some(e) = o.epochs {
        sft_config.max_epochs = e;
    }
    let config = SoftConfig { sft: sft_config, schedule: o.schedule, alpha: o.alpha, d_samples: o.d_samples };
    // The trained model reads the frozen base model's tensors (in the run's precision) with
    // autodiff on (`Module::train`, no copy): one copy of the base weights, not two. With
    // checkpointing its own load: `train` sets no checkpointing.
    let train = &config.sft.train;
    let trainable = if !train.activation_checkpointing {
        sft_run.base.model.clone().train()
    } else {
        load_path_as(&resolve(&base_name)?, &train.training_device(&backend.device), train.base_dtype)?.model
    };
    // LLaRA: a fresh projector over the SFT run's item table, for the trained model and for the
    // base model d0 is measured with (the same draw: d0 is the untrained model's).
    let table = sft_run.tuned.item_projector().map(|p| p.table());
    let (backbone, seed) = (config.sft.prompt.backbone, config.sft.train.seed);
    let trainable = for_backbone(trainable, backbone, table.as_ref(), seed)?;
    let mut base = sft_run.base.clone();
    base.model = for_backbone(base.model, backbone, table.as_ref(), seed)?;
    let inputs = SftInputs::new(&base, &sft_run.grounder, &dataset, &split);
    eprintln!("SOFT ({:?}, alpha {}) on {} examples, backend {}", o.schedule, o.alpha, distilled.len(), backend.name);
    let mut reporter = Reporter::new();
    let checkpoints = checkpoints(&o.out, &base_name, o.resume)?;
    let epoch_adapters = EpochAdapters { run_dir: &o.out, base_model: &base_name };
    let trainable = Trainable { model: trainable, replicas: replicas(&backend, train.devices)? };
    let result = soft(&config, &inputs, &distilled, trainable, Some(&checkpoints), Some(&epoch_adapters), &mut |e| {
        reporter.handle(e)
    })
    .with_context(|| stopped(&checkpoints))?;
    result.model.save_adapter(&o.out.join(ADAPTER_DIR), &base_name)?;
    let details = SoftDetails { base_model: base_name, config, sft_run: o.sft.clone(), report: result.report };
    let run = RunInfo::new(&dataset.meta, o.data.split, backend.name, started, details);
    run.save(&o.out, &Extra { adapter: ADAPTER_DIR })?;
    let report = &run.details.report;
    let first = &report.epochs[0];
    println!(
        "d0 {:.4}; first epoch loss: distilled {:.4} vs real {:.4} ({:.0} %); best epoch {}; wrote {}",
        report.d0,
        first.loss_distilled,
        first.loss_real,
        100.0 * first.loss_distilled / first.loss_real.max(1e-9),
        report.best_epoch,
        o.out.display()
    );
    Ok(())
}
