//! `soft-train soft`: SOFT's stage 3. A fresh LoRA on the SFT run's base model, trained on the
//! real and the distilled targets with the self-adaptive curriculum; `report.json` records
//! alpha, d0 and, per epoch, the lambda used and the distance measured after it.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use soft_core::model::pretrained::load_path;
use soft_core::train::distill::load_jsonl;
use soft_core::train::scheduler::{validate_alpha, Schedule};
use soft_core::train::sft::SftInputs;
use soft_core::train::soft::{soft, SoftConfig};

use super::data_args::DataArgs;
use super::distill::DISTILLED_FILE;
use super::generate::resolve;
use crate::backend::{choose, BackendChoice};
use crate::llm_run::{LoadedRun, ADAPTER_DIR};
use crate::progress::Reporter;
use crate::run_dir::{report, stopped, write_files, RunInfo, RUN_FILE};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleArg {
    Adaptive,
    DistilledOnly,
    RealOnly,
    Linear,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The SFT run whose `distilled.jsonl` (from `soft-train distill`) is the auxiliary data.
    #[arg(long)]
    pub sft: PathBuf,
    /// Run directory to create (usable as `soft-train eval --run DIR`).
    #[arg(long)]
    pub out: PathBuf,
    /// Pace of the curriculum (the reference sweeps 100, 10, 1, 0.1).
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub alpha: f64,
    #[arg(long, value_enum, default_value = "adaptive")]
    pub schedule: ScheduleArg,
    /// Epochs (default: the SFT run's maximum).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training prompts d is measured on.
    #[arg(long, default_value_t = SoftConfig::default().d_samples)]
    pub d_samples: usize,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    /// Continue from the newest epoch checkpoint in OUT/checkpoints instead of starting over.
    #[arg(long)]
    pub resume: bool,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let schedule = match args.schedule {
        ScheduleArg::Adaptive => Schedule::Adaptive,
        ScheduleArg::DistilledOnly => Schedule::DistilledOnly,
        ScheduleArg::RealOnly => Schedule::RealOnly,
        ScheduleArg::Linear => Schedule::Linear,
    };
    validate_alpha(args.alpha)?; // reject a bad alpha before any work
    let backend = choose(args.backend)?;
    let (dataset, split) = args.data.load()?;
    let distilled_path = args.sft.join(DISTILLED_FILE);
    if !distilled_path.exists() {
        bail!("{}: missing; run `soft-train distill --run {}` first", distilled_path.display(), args.sft.display());
    }
    let distilled = load_jsonl(&distilled_path)?;
    let sft_run = LoadedRun::open(&args.sft, &dataset.catalog, &backend.device, None)?;
    if sft_run.info.split != args.data.split_config() {
        bail!("{}: trained on split {:?}, not {:?}", args.sft.display(), sft_run.info.split, args.data.split_config());
    }
    let base_name = sft_run.info.details["base_model"].as_str().unwrap_or("tiny").to_string();
    let mut sft_config = sft_run.config.clone();
    if let Some(e) = args.epochs {
        sft_config.max_epochs = e;
    }
    let config = SoftConfig { sft: sft_config, schedule, alpha: args.alpha, d_samples: args.d_samples };
    let trainable = load_path(&resolve(&base_name)?, &backend.device.clone().autodiff())?.model;
    let pre = &sft_run.base;
    let inputs = SftInputs::new(pre, &sft_run.grounder, &dataset, &split);
    eprintln!("SOFT ({:?}, alpha {}) on {} examples, backend {}", schedule, args.alpha, distilled.len(), backend.name);
    let mut reporter = Reporter::new();
    let checkpoints = crate::run_dir::checkpoints(&args.out, &base_name, args.resume)?;
    let result = soft(&config, &inputs, &distilled, trainable, Some(&checkpoints), &mut |e| reporter.handle(e))
        .with_context(|| stopped(&checkpoints))?;
    result.model.save_adapter(&args.out.join(ADAPTER_DIR), &base_name)?;
    let run = RunInfo::new(
        "soft",
        &dataset.meta,
        args.data.split_config(),
        backend.name,
        started,
        serde_json::json!({
            "base_model": base_name, "config": config, "sft_run": args.sft,
            "alpha": result.report.alpha, "schedule": result.report.schedule, "d0": result.report.d0,
            "epochs": result.report.epochs, "best_epoch": result.report.best_epoch,
        }),
    );
    write_files(
        &args.out,
        &[
            ("report.json".into(), report(&run, serde_json::json!({ "adapter": ADAPTER_DIR }))?),
            (RUN_FILE.into(), serde_json::to_string_pretty(&run)?),
        ],
    )?;
    let first = &result.report.epochs[0];
    println!(
        "d0 {:.4}; first epoch loss: distilled {:.4} vs real {:.4} ({:.0} %); best epoch {}; wrote {}",
        result.report.d0,
        first.loss_distilled,
        first.loss_real,
        100.0 * first.loss_distilled / first.loss_real.max(1e-9),
        result.report.best_epoch,
        args.out.display()
    );
    Ok(())
}
