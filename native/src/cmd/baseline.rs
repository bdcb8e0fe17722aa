//! `soft-train baseline`: popularity, SASRec or Guidance-Only (the untuned language model
//! prompted with the history) on the same split the language models use.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use soft_core::baselines::{sasrec, Popularity, SasRecConfig};
use soft_core::eval::decoding::{Decoding, Ranking};
use soft_core::model::formats::pretrained::load_path;
use soft_core::train::sft::SftConfig;

use super::data_args::{DataArgs, DataOptions};
use super::prompt_args::{BackboneArgs, PromptArgs};
use crate::backend::{choose, BackendChoice};
use crate::llara::sasrec_item_table;
use crate::model_arg::resolve;
use crate::progress::Reporter;
use crate::run_dir::{write_files, SASREC_WEIGHTS};
use crate::run_info::{GuidanceOnlyDetails, PopularityDetails, RunInfo, SasrecDetails, TrainOn};

pub const POPULARITY_FILE: &str = "popularity.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Popularity,
    Sasrec,
    GuidanceOnly,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_enum)]
    pub method: Method,
    /// Run directory to create (usable as `soft-train eval --run DIR`).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Train on every window of the training period (`all`) or only on the sampled training
    /// examples the language models get (`sample`).
    #[arg(long, value_enum, default_value = "all")]
    pub train_on: TrainOn,
    #[arg(long, default_value_t = SasRecConfig::default().max_epochs)]
    pub epochs: usize,
    #[arg(long, default_value_t = SasRecConfig::default().seed)]
    pub seed: u64,
    /// Guidance-Only's language model: `tiny`, `smollm2` or a path.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Guidance-Only's beam search (as SFT's evaluation uses it).
    #[arg(long, default_value_t = SftConfig::default().beams)]
    pub beams: usize,
    #[arg(long, default_value_t = SftConfig::default().max_new_tokens)]
    pub max_new_tokens: usize,
    #[arg(long, value_enum, default_value = "free")]
    pub decoding: Decoding,
    /// How Guidance-Only ranks items from its beams.
    #[arg(long, value_enum, default_value = "top-beam")]
    pub ranking: Ranking,
    /// Guidance-Only's prompt (the same options as `sft`'s, to compare like with like).
    #[command(flatten)]
    pub prompt: PromptArgs,
    /// Guidance-Only's backbone (LLaRA: an untrained projector drawn from `--seed`).
    #[command(flatten)]
    pub backbone: BackboneArgs,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
}

/// A baseline with its settings.
pub enum Baseline {
    Popularity,
    Sasrec(SasRecConfig),
    /// With LLaRA's inputs when its prompt's backbone is LLaRA.
    GuidanceOnly(GuidanceOnlyDetails, Option<LlaraInputs>),
}

/// Where LLaRA's item table comes from, and the seed its (untrained) projector is drawn from.
#[derive(Debug, Clone)]
pub struct LlaraInputs {
    pub sasrec: PathBuf,
    pub seed: u64,
}

pub struct Options {
    pub baseline: Baseline,
    pub out: PathBuf,
    pub data: DataOptions,
    pub train_on: TrainOn,
    pub backend: BackendChoice,
}

impl TryFrom<Args> for Options {
    type Error = anyhow::Error;

    fn try_from(args: Args) -> Result<Self> {
        let sasrec = args.backbone.sasrec_run()?;
        if sasrec.is_some() && args.method != Method::GuidanceOnly {
            anyhow::bail!("--backbone and --sasrec are options of --method guidance-only");
        }
        let mut prompt = args.prompt.prompt();
        prompt.backbone = args.backbone.backbone;
        let llara = sasrec.map(|sasrec| LlaraInputs { sasrec, seed: args.seed });
        // Bad settings are refused before any work.
        prompt.validate()?;
        DataOptions::from(&args.data).validate()?;
        for (flag, value) in
            [("--epochs", args.epochs), ("--beams", args.beams), ("--max-new-tokens", args.max_new_tokens)]
        {
            if value == 0 {
                anyhow::bail!("{flag} must be at least 1");
            }
        }
        let baseline = match args.method {
            Method::Popularity => Baseline::Popularity,
            Method::Sasrec => {
                Baseline::Sasrec(SasRecConfig { max_epochs: args.epochs, seed: args.seed, ..Default::default() })
            }
            Method::GuidanceOnly => Baseline::GuidanceOnly(
                GuidanceOnlyDetails {
                    base_model: args.model,
                    beams: args.beams,
                    max_new_tokens: args.max_new_tokens,
                    decoding: args.decoding,
                    ranking: args.ranking,
                    prompt,
                },
                llara,
            ),
        };
        Ok(Self { baseline, out: args.out, data: (&args.data).into(), train_on: args.train_on, backend: args.backend })
    }
}

pub fn execute(o: &Options) -> Result<()> {
    let started = Instant::now();
    let (dataset, split) = o.data.load()?;
    let train = match o.train_on {
        TrainOn::All => &split.train_all,
        TrainOn::Sample => &split.train,
    };
    match &o.baseline {
        Baseline::Popularity => {
            let pop = Popularity::fit(train);
            write_files(&o.out, &[(POPULARITY_FILE.into(), serde_json::to_string(&pop)?)])?;
            let details = PopularityDetails { train_on: o.train_on, train_windows: train.len() };
            RunInfo::new(&dataset.meta, o.data.split, "none".into(), started, details).save(&o.out, &())?;
        }
        Baseline::Sasrec(config) => {
            let backend = choose(o.backend)?;
            eprintln!("SASRec on {} training windows, backend {}", train.len(), backend.name);
            let mut reporter = Reporter::new();
            let (model, epochs, best) =
                sasrec::train(config, &dataset.catalog, train, &split.valid, &backend.device, &mut |e| {
                    reporter.handle(e)
                })?;
            let b = &epochs[best - 1];
            eprintln!("best epoch {best}: valid HR@10 {:.4} NDCG@10 {:.4}", b.valid.hr_at(10), b.valid.ndcg_at(10));
            let details = SasrecDetails {
                config: config.clone(),
                train_on: o.train_on,
                train_windows: train.len(),
                max_item: model.max_item(),
                best_epoch: best,
                epochs,
            };
            std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
            // burnpack writes through a scratch file and a rename: never half a file.
            let weights = o.out.join(SASREC_WEIGHTS);
            model.save_file(&weights).with_context(|| format!("writing {}", weights.display()))?;
            RunInfo::new(&dataset.meta, o.data.split, backend.name, started, details).save(&o.out, &())?;
        }
        Baseline::GuidanceOnly(details, llara) => {
            // Nothing to train; loading the model now turns a bad --model into an error here
            // rather than at evaluation.
            let backend = choose(o.backend)?;
            let base = load_path(&resolve(&details.base_model)?, &backend.device)?;
            // LLaRA's Guidance-Only reads the items through an untrained projector (as the
            // reference's epoch 0), kept in the run directory for evaluation.
            if let Some(LlaraInputs { sasrec, seed }) = llara {
                let table = sasrec_item_table(sasrec, &backend.device)?;
                base.model.with_items(table, *seed)?.save_projector(&o.out)?;
            }
            RunInfo::new(&dataset.meta, o.data.split, backend.name, started, details.clone()).save(&o.out, &())?;
        }
    }
    println!("wrote {} in {:.1} s", o.out.display(), started.elapsed().as_secs_f64());
    Ok(())
}
