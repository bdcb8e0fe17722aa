//! `soft-train eval`: rank items for every example of a sequences file with a trained run and
//! score the rankings. Outputs are written only once everything succeeded.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use burn::module::Module;
use soft_core::baselines::{Popularity, SasRec, SasRecConfig};
use soft_core::data::windows::load_sequences;
use soft_core::data::{Catalog, Window};
use soft_core::eval::{evaluate, Prediction, RANKED_LEN};

use super::baseline::{POPULARITY_FILE, SASREC_WEIGHTS};
use crate::backend::{choose, BackendChoice};
use crate::llm_run::{DecodingArg, LoadedRun};
use crate::run_dir::{write_files, RunInfo};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A run directory made by `soft-train` (baseline or language model).
    #[arg(long)]
    pub run: PathBuf,
    /// Examples in the processed format (`user_id,item_ids,timestamp`, last id the target).
    #[arg(long)]
    pub sequences: PathBuf,
    /// The item catalog (`id2name.json`).
    #[arg(long)]
    pub items: PathBuf,
    /// Output directory for metrics.json and predictions.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    /// Decoding of a language-model run (default: the one it was trained with).
    #[arg(long, value_enum)]
    pub decoding: Option<DecodingArg>,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
}

pub fn run(args: Args) -> Result<()> {
    let info = RunInfo::load(&args.run)?;
    let catalog = Catalog::load(&args.items)?;
    let examples = load_sequences(&args.sequences, &catalog)?;
    let histories: Vec<&[u32]> = examples.iter().map(Window::history).collect();

    let targets: Vec<u32> = examples.iter().map(Window::target).collect();
    let ranked: Vec<Vec<u32>> = match info.method.as_str() {
        "popularity" => {
            let path = args.run.join(POPULARITY_FILE);
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let pop: Popularity =
                serde_json::from_str(&text).with_context(|| format!("{}: malformed", path.display()))?;
            vec![pop.rank(&catalog, RANKED_LEN); examples.len()]
        }
        "sasrec" => {
            let backend = choose(args.backend)?;
            let config: SasRecConfig = serde_json::from_value(info.details["config"].clone())
                .with_context(|| format!("{}: missing SASRec config", args.run.join("run.json").display()))?;
            let max_item =
                info.details["max_item"].as_u64().ok_or_else(|| anyhow!("run.json: missing max_item"))? as u32;
            let path = args.run.join(SASREC_WEIGHTS);
            let model = SasRec::new(&config, max_item, &backend.device)
                .try_load_file(&path)
                .map_err(|e| anyhow!("{}: cannot load SASRec weights: {e}", path.display()))?;
            model.rank(&catalog, &histories, RANKED_LEN)
        }
        "sft" | "soft" => {
            let predictions = llm_predictions(&args, &catalog, &histories, &targets)?;
            return finish(&args, &info, &catalog, predictions);
        }
        other => bail!("{}: unknown method `{other}`", args.run.join("run.json").display()),
    };

    let predictions: Vec<Prediction> =
        targets.iter().zip(ranked).map(|(&target, ranked)| Prediction { target, generated: None, ranked }).collect();
    finish(&args, &info, &catalog, predictions)
}

/// A language-model run: base model + adapter write answers, the base model grounds them.
fn llm_predictions(args: &Args, catalog: &Catalog, histories: &[&[u32]], targets: &[u32]) -> Result<Vec<Prediction>> {
    let backend = choose(args.backend)?;
    let run = LoadedRun::open(&args.run, catalog, &backend.device, args.decoding.map(Into::into))?;
    Ok(run.recommender(run.info.dataset.domain).recommend(catalog, histories, targets)?)
}

fn finish(args: &Args, info: &RunInfo, catalog: &Catalog, predictions: Vec<Prediction>) -> Result<()> {
    let metrics = evaluate(catalog, &predictions);
    let lines: Vec<String> = predictions.iter().map(serde_json::to_string).collect::<Result<_, _>>()?;
    write_files(
        &args.out,
        &[
            ("predictions.jsonl".into(), lines.join("\n") + "\n"),
            ("metrics.json".into(), serde_json::to_string_pretty(&metrics.to_map())?),
        ],
    )?;
    println!(
        "{} on {} examples: HR@10 {:.4}  NDCG@10 {:.4}  (HR@5 {:.4} HR@20 {:.4} NDCG@5 {:.4} NDCG@20 {:.4})",
        info.method,
        metrics.count,
        metrics.hr_at(10),
        metrics.ndcg_at(10),
        metrics.hr_at(5),
        metrics.hr_at(20),
        metrics.ndcg_at(5),
        metrics.ndcg_at(20)
    );
    Ok(())
}
