//! `soft-train pretrain`: the `tiny` preset's tokenizer and model, trained as a causal LM on the
//! dataset's titles and title lists, saved as a model directory.

use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;
use soft_core::data::dataset::DatasetMeta;
use soft_core::model::formats::pretrained::{save_dir, tiny_dir};
use soft_core::train::pretrain::{pretrain, PretrainConfig, PretrainReport};

use super::data_args::{DataArgs, DataOptions};
use crate::backend::{choose, BackendChoice};
use crate::progress::Reporter;
use crate::run_dir::write_files;

/// Beside the model: how it was pre-trained, on what and where.
pub const RECORD_FILE: &str = "pretrain.json";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub data: DataArgs,
    /// Model directory to write (default: models/tiny, what `--model tiny` loads).
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long, default_value_t = PretrainConfig::default().steps)]
    pub steps: usize,
    #[arg(long, default_value_t = PretrainConfig::default().vocab_size)]
    pub vocab_size: usize,
    /// Catalog titles the perplexity before and after is measured on.
    #[arg(long, default_value_t = PretrainConfig::default().ppl_titles)]
    pub ppl_titles: usize,
    #[arg(long, default_value_t = PretrainConfig::default().train.seed)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
}

pub struct Options {
    pub data: DataOptions,
    /// The model directory to write.
    pub out: PathBuf,
    pub config: PretrainConfig,
    pub backend: BackendChoice,
}

impl From<Args> for Options {
    fn from(args: Args) -> Self {
        let mut config = PretrainConfig {
            steps: args.steps,
            vocab_size: args.vocab_size,
            ppl_titles: args.ppl_titles,
            ..Default::default()
        };
        config.train.seed = args.seed;
        Self { data: (&args.data).into(), out: args.out.unwrap_or_else(tiny_dir), config, backend: args.backend }
    }
}

/// `pretrain.json`: the report with the backend and the dataset it ran on.
#[derive(Serialize)]
struct Record<'a> {
    #[serde(flatten)]
    report: &'a PretrainReport,
    backend: &'a str,
    dataset: &'a DatasetMeta,
}

pub fn execute(o: &Options) -> Result<()> {
    let (dataset, split) = o.data.load()?;
    let backend = choose(o.backend)?;
    eprintln!("pre-training tiny on {} ({} items), backend {}", dataset.meta.name, dataset.catalog.len(), backend.name);
    let mut reporter = Reporter::new();
    let (model, tokenizer, report) =
        pretrain(&o.config, &dataset.catalog, &split.train_all, &backend.device, &mut |e| reporter.handle(e))?;
    save_dir(&o.out, &model, &tokenizer)?;
    let record = Record { report: &report, backend: &backend.name, dataset: &dataset.meta };
    write_files(&o.out, &[(RECORD_FILE.into(), serde_json::to_string_pretty(&record)?)])?;
    println!(
        "tiny: {} parameters, title perplexity {:.1} -> {:.1}, {:.0} tokens/s, {:.0} s; saved to {}",
        report.parameters,
        report.title_ppl_before,
        report.title_ppl_after,
        report.tokens_per_second,
        report.seconds,
        o.out.display()
    );
    Ok(())
}
