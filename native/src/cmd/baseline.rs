//! `soft-train baseline`: popularity or SASRec on the same split the language models use.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use burn::module::Module;
use soft_core::baselines::{sasrec, Popularity, SasRecConfig};

use super::data_args::DataArgs;
use crate::backend::{choose, BackendChoice};
use crate::progress::Reporter;
use crate::run_dir::{report, temp_beside, write_files, RunInfo, RUN_FILE};

pub const SASREC_WEIGHTS: &str = "sasrec.bpk";
pub const POPULARITY_FILE: &str = "popularity.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    Popularity,
    Sasrec,
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
    #[arg(long, default_value = "all", value_parser = ["all", "sample"])]
    pub train_on: String,
    #[arg(long, default_value_t = SasRecConfig::default().max_epochs)]
    pub epochs: usize,
    #[arg(long, default_value_t = SasRecConfig::default().seed)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let (dataset, split) = args.data.load()?;
    let train = if args.train_on == "all" { &split.train_all } else { &split.train };
    let info = |method: &str, backend: String, details: serde_json::Value| {
        RunInfo::new(method, &dataset.meta, args.data.split_config(), backend, started, details)
    };
    match args.method {
        Method::Popularity => {
            let pop = Popularity::fit(train);
            let run = info(
                "popularity",
                "none".into(),
                serde_json::json!({ "train_on": args.train_on, "train_windows": train.len() }),
            );
            write_files(
                &args.out,
                &[
                    (POPULARITY_FILE.into(), serde_json::to_string(&pop)?),
                    (RUN_FILE.into(), serde_json::to_string_pretty(&run)?),
                    ("report.json".into(), report(&run, serde_json::Value::Null)?),
                ],
            )?;
        }
        Method::Sasrec => {
            let backend = choose(args.backend)?;
            let config = SasRecConfig { max_epochs: args.epochs, seed: args.seed, ..Default::default() };
            eprintln!("SASRec on {} training windows, backend {}", train.len(), backend.name);
            let mut reporter = Reporter::new();
            let (model, epochs, best) =
                sasrec::train(&config, &dataset.catalog, train, &split.valid, &backend.device, &mut |e| {
                    reporter.handle(e)
                })?;
            let details = serde_json::json!({
                "config": config, "train_on": args.train_on, "train_windows": train.len(),
                "max_item": model.max_item(), "best_epoch": best, "epochs": epochs,
            });
            let run = info("sasrec", backend.name, details);
            std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
            let weights = args.out.join(SASREC_WEIGHTS);
            let tmp = temp_beside(&weights);
            model.save_file(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &weights).with_context(|| format!("writing {}", weights.display()))?;
            write_files(
                &args.out,
                &[
                    ("report.json".into(), report(&run, serde_json::Value::Null)?),
                    (RUN_FILE.into(), serde_json::to_string_pretty(&run)?),
                ],
            )?;
            let b = &epochs[best - 1];
            eprintln!("best epoch {best}: valid HR@10 {:.4} NDCG@10 {:.4}", b.valid.hr_at(10), b.valid.ndcg_at(10));
        }
    }
    println!("wrote {} in {:.1} s", args.out.display(), started.elapsed().as_secs_f64());
    Ok(())
}
