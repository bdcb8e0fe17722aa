//! `soft-train eval`: rank items for every example of a sequences file with a trained run and
//! score the rankings. Outputs are written only once everything succeeded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::module::Module;
use soft_core::baselines::{Popularity, SasRec};
use soft_core::data::text::{read_bytes, utf8_lines};
use soft_core::data::windows::load_sequences;
use soft_core::data::{Catalog, Window};
use soft_core::eval::decoding::{Decoding, Ranking};
use soft_core::eval::{evaluate, Prediction, RANKED_LEN};

use super::baseline::POPULARITY_FILE;
use crate::backend::{choose, BackendChoice};
use crate::llm_run::LoadedRun;
use crate::run_dir::SASREC_WEIGHTS;
use crate::run_dir::{read_json, write_files};
use crate::run_info::{
    Details, GuidanceOnlyDetails, PopularityDetails, RunHeader, RunInfo, SasrecDetails, SftDetails, SoftDetails,
    RUN_FILE,
};

pub const METRICS_FILE: &str = "metrics.json";
pub const PREDICTIONS_FILE: &str = "predictions.jsonl";

/// `metrics.json`: `{"HR@1": .., ..., "NDCG@50": ..}`, as the core's `Metrics::to_map` writes it.
pub type MetricsFile = BTreeMap<String, f64>;

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
    pub decoding: Option<Decoding>,
    /// Ranking of a language-model run's beams (default: the one it was trained with).
    #[arg(long, value_enum)]
    pub ranking: Option<Ranking>,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
}

pub struct Options {
    pub run: PathBuf,
    pub sequences: PathBuf,
    pub items: PathBuf,
    pub out: PathBuf,
    /// `None`: the decoding the run was trained with.
    pub decoding: Option<Decoding>,
    /// `None`: the ranking the run was trained with.
    pub ranking: Option<Ranking>,
    pub backend: BackendChoice,
}

impl From<Args> for Options {
    fn from(a: Args) -> Self {
        Self {
            run: a.run,
            sequences: a.sequences,
            items: a.items,
            out: a.out,
            decoding: a.decoding,
            ranking: a.ranking,
            backend: a.backend,
        }
    }
}

/// The metrics an evaluation wrote to `path` (its output directory's [`METRICS_FILE`]).
pub fn read_metrics(path: &Path) -> Result<MetricsFile> {
    read_json(path, "cannot read", "corrupted metrics; delete it to evaluate again")
}

/// The predictions an evaluation wrote to `path` (its output directory's [`PREDICTIONS_FILE`]),
/// one per test example in the order of the sequences file.
pub fn read_predictions(path: &Path) -> Result<Vec<Prediction>> {
    let bytes = read_bytes(path)?;
    let rows = utf8_lines(path, &bytes)
        .map(|line| {
            let (n, text) = line?;
            serde_json::from_str(text).map_err(|e| soft_core::Error::parse(path, n, format!("not a prediction: {e}")))
        })
        .collect::<soft_core::Result<Vec<Prediction>>>();
    rows.with_context(|| format!("{}: delete it to evaluate again", path.display()))
}

pub fn execute(o: &Options) -> Result<()> {
    let header = RunHeader::load(&o.run)?;
    let catalog = Catalog::load(&o.items)?;
    let examples = load_sequences(&o.sequences, &catalog)?;
    let histories: Vec<&[u32]> = examples.iter().map(Window::history).collect();

    let targets: Vec<u32> = examples.iter().map(Window::target).collect();
    let ranked: Vec<Vec<u32>> = match header.method.as_str() {
        PopularityDetails::METHOD => {
            let pop: Popularity = read_json(&o.run.join(POPULARITY_FILE), "cannot read", "malformed")?;
            vec![pop.rank(&catalog, RANKED_LEN); examples.len()]
        }
        SasrecDetails::METHOD => {
            let backend = choose(o.backend)?;
            let details = RunInfo::<SasrecDetails>::load(&o.run)?.details;
            let path = o.run.join(SASREC_WEIGHTS);
            let model = SasRec::new(&details.config, details.max_item, &backend.device)
                .try_load_file(&path)
                .with_context(|| format!("{}: cannot load SASRec weights", path.display()))?;
            model.rank(&catalog, &histories, RANKED_LEN)
        }
        SftDetails::METHOD | SoftDetails::METHOD | GuidanceOnlyDetails::METHOD => {
            let predictions = llm_predictions(o, &catalog, &histories, &targets)?;
            return finish(o, &header, &catalog, predictions);
        }
        other => bail!("{}: unknown method `{other}`", o.run.join(RUN_FILE).display()),
    };

    let predictions: Vec<Prediction> =
        targets.iter().zip(ranked).map(|(&target, ranked)| Prediction { target, generated: None, ranked }).collect();
    finish(o, &header, &catalog, predictions)
}

/// A language-model run: base model + adapter write answers, the base model grounds them (on a
/// wgpu adapter with the project's WGSL kernel, shaders/grounding.wgsl).
fn llm_predictions(o: &Options, catalog: &Catalog, histories: &[&[u32]], targets: &[u32]) -> Result<Vec<Prediction>> {
    let backend = choose(o.backend)?;
    let mut run = LoadedRun::open(&o.run, catalog, &backend.device, o.decoding, o.ranking)?;
    if backend.gpu {
        run.grounder = run.grounder.with_kernel_blocking()?;
        eprintln!("grounding with the WGSL kernel on {}", run.grounder.kernel_adapter().unwrap_or_default());
    }
    Ok(run.recommender(run.header.dataset.domain).recommend(catalog, histories, targets)?)
}

fn finish(o: &Options, header: &RunHeader, catalog: &Catalog, predictions: Vec<Prediction>) -> Result<()> {
    let metrics = evaluate(catalog, &predictions);
    let lines: Vec<String> = predictions.iter().map(serde_json::to_string).collect::<Result<_, _>>()?;
    let map: MetricsFile = metrics.to_map();
    write_files(
        &o.out,
        &[
            (PREDICTIONS_FILE.into(), lines.join("\n") + "\n"),
            (METRICS_FILE.into(), serde_json::to_string_pretty(&map)?),
        ],
    )?;
    println!(
        "{} on {} examples: HR@10 {:.4}  NDCG@10 {:.4}  (HR@5 {:.4} HR@20 {:.4} NDCG@5 {:.4} NDCG@20 {:.4})",
        header.method,
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
