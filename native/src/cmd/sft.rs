//! `soft-train sft`: SOFT's stage 1 ("Tuning-Only"): LoRA fine-tuning on the real targets, the
//! best epoch by valid HR@10 saved as a PEFT adapter in a run directory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use soft_core::model::pretrained::load_path;
use soft_core::train::sft::{sft, SftConfig, SftInputs};

use super::data_args::DataArgs;
use super::generate::resolve;
use crate::backend::{choose, BackendChoice};
use crate::llm_run::{grounder, DecodingArg, ADAPTER_DIR};
use crate::progress::Reporter;
use crate::run_dir::{report, stopped, write_files, RunInfo, RUN_FILE};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Base model: `tiny`, `smollm2` or a path (see `soft-train generate --help`).
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Run directory to create (usable as `soft-train eval --run DIR`).
    #[arg(long)]
    pub out: PathBuf,
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
    /// Micro-batches of 8 per optimizer step.
    #[arg(long, default_value_t = SftConfig::default().train.grad_accum)]
    pub grad_accum: usize,
    #[arg(long, default_value_t = SftConfig::default().train.seed)]
    pub seed: u64,
    /// Stop after this many optimizer steps in all (smoke tests of big models on a CPU).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Decoding of validation answers, and later of distillation and SOFT's d.
    #[arg(long, value_enum, default_value = "free")]
    pub decoding: DecodingArg,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    /// Continue from the newest epoch checkpoint in OUT/checkpoints instead of starting over.
    #[arg(long)]
    pub resume: bool,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let (dataset, split) = args.data.load()?;
    let backend = choose(args.backend)?;
    let path = resolve(&args.model)?;
    let pre = load_path(&path, &backend.device)?;
    let trainable = load_path(&path, &backend.device.clone().autodiff())?.model;
    let mut config = SftConfig {
        max_epochs: args.epochs,
        beams: args.beams,
        max_new_tokens: args.max_new_tokens,
        decoding: args.decoding.into(),
        ..Default::default()
    };
    config.train.max_steps = args.max_steps;
    config.train.grad_accum = args.grad_accum;
    config.train.lr = args.lr;
    config.train.seed = args.seed;
    eprintln!(
        "SFT of {} on {} examples (valid {}), backend {}",
        pre.source,
        split.train.len(),
        split.valid.len(),
        backend.name
    );
    let grounder = grounder(&pre, &path, &dataset.catalog)?;
    let inputs = SftInputs::new(&pre, &grounder, &dataset, &split);
    let mut reporter = Reporter::new();
    let checkpoints = crate::run_dir::checkpoints(&args.out, &args.model, args.resume)?;
    let tuned = sft(&config, &inputs, trainable, Some(&checkpoints), &mut |e| reporter.handle(e))
        .with_context(|| stopped(&checkpoints))?;
    tuned.model.save_adapter(&args.out.join(ADAPTER_DIR), &args.model)?;
    let run = RunInfo::new(
        "sft",
        &dataset.meta,
        args.data.split_config(),
        backend.name,
        started,
        serde_json::json!({
            "base_model": args.model, "config": config, "best_epoch": tuned.best_epoch, "epochs": tuned.epochs,
        }),
    );
    let extra = serde_json::json!({ "adapter": ADAPTER_DIR, "seconds_per_epoch": tuned.epochs.iter().map(|e| e.seconds).collect::<Vec<_>>() });
    write_files(
        &args.out,
        &[("report.json".into(), report(&run, extra)?), (RUN_FILE.into(), serde_json::to_string_pretty(&run)?)],
    )?;
    let best = &tuned.epochs[tuned.best_epoch - 1];
    println!(
        "best epoch {}: valid HR@10 {:.4} NDCG@10 {:.4}; wrote {} in {:.0} s",
        tuned.best_epoch,
        best.valid.hr_at(10),
        best.valid.ndcg_at(10),
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
