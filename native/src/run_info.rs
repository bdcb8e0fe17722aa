//! `run.json`, the record of a trained run: what was trained, on what, where and how long (the
//! header every method shares) and the method's own details (configuration, per-epoch logs,
//! best epoch). `report.json` is the same record flattened into one object for readers.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use soft_core::baselines::sasrec::EpochLog;
use soft_core::baselines::SasRecConfig;
use soft_core::data::dataset::DatasetMeta;
use soft_core::data::prompt::PromptOptions;
use soft_core::data::SplitConfig;
use soft_core::eval::decoding::{Decoding, Ranking};
use soft_core::train::sft::{EpochRecord, SftConfig};
use soft_core::train::soft::{SoftConfig, SoftReport};

use crate::run_dir::{read_json, write_files};

pub const RUN_FILE: &str = "run.json";
pub const REPORT_FILE: &str = "report.json";

/// What every run records, whatever its method.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunHeader {
    pub method: String,
    pub dataset: DatasetMeta,
    pub split: SplitConfig,
    pub backend: String,
    pub git_commit: Option<String>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo<D> {
    #[serde(flatten)]
    pub header: RunHeader,
    pub details: D,
}

/// A method's details in `run.json`; `METHOD` is the method's name there.
pub trait Details: Serialize + DeserializeOwned {
    const METHOD: &'static str;
}

/// The training windows of a baseline: every window of the training period (the table's
/// baseline) or only the sampled training examples the language models get.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TrainOn {
    #[default]
    All,
    Sample,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PopularityDetails {
    pub train_on: TrainOn,
    pub train_windows: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SasrecDetails {
    pub config: SasRecConfig,
    pub train_on: TrainOn,
    pub train_windows: usize,
    pub max_item: u32,
    pub best_epoch: usize,
    pub epochs: Vec<EpochLog>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SftDetails {
    /// The `--model` the adapter was trained on.
    pub base_model: String,
    pub config: SftConfig,
    pub best_epoch: usize,
    pub epochs: Vec<EpochRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SoftDetails {
    pub base_model: String,
    pub config: SoftConfig,
    /// The SFT run whose distilled targets were used.
    pub sft_run: PathBuf,
    /// alpha, schedule, d0, the epochs and the best one, at the top level of the details.
    #[serde(flatten)]
    pub report: SoftReport,
}

/// The paper's "Guidance-Only" baseline: the base model without any fine-tuning, prompted with
/// the same history and decoded and grounded the same way as the tuned models.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuidanceOnlyDetails {
    pub base_model: String,
    pub beams: usize,
    pub max_new_tokens: usize,
    pub decoding: Decoding,
    #[serde(default)]
    pub prompt: PromptOptions,
    /// Missing in runs made before the option existed: the top beam's ranking.
    #[serde(default)]
    pub ranking: Ranking,
}

impl GuidanceOnlyDetails {
    /// The decoding settings as the language-model runs keep them (no training fields apply).
    pub fn config(&self) -> SftConfig {
        SftConfig {
            beams: self.beams,
            max_new_tokens: self.max_new_tokens,
            decoding: self.decoding,
            ranking: self.ranking,
            prompt: self.prompt.clone(),
            ..Default::default()
        }
    }
}

impl Details for GuidanceOnlyDetails {
    const METHOD: &'static str = "guidance-only";
}

impl Details for PopularityDetails {
    const METHOD: &'static str = "popularity";
}

impl Details for SasrecDetails {
    const METHOD: &'static str = "sasrec";
}

impl Details for SftDetails {
    const METHOD: &'static str = "sft";
}

impl Details for SoftDetails {
    const METHOD: &'static str = "soft";
}

impl RunHeader {
    /// The header of the run in `dir`, its details unread.
    pub fn load(dir: &Path) -> Result<Self> {
        load_run_file(dir)
    }
}

/// `run.json` in `dir` as `T`.
fn load_run_file<T: DeserializeOwned>(dir: &Path) -> Result<T> {
    read_json(&dir.join(RUN_FILE), "not a run directory", "malformed run description")
}

impl<D: Details> RunInfo<D> {
    /// A run that began at `started`, with the commit of the working tree.
    pub fn new(dataset: &DatasetMeta, split: SplitConfig, backend: String, started: Instant, details: D) -> Self {
        let header = RunHeader {
            method: D::METHOD.into(),
            dataset: dataset.clone(),
            split,
            backend,
            git_commit: git_commit(),
            seconds: started.elapsed().as_secs_f64(),
        };
        Self { header, details }
    }

    pub fn load(dir: &Path) -> Result<Self> {
        load_run_file(dir)
    }

    /// Writes `report.json` (the header, the details and `extra` in one object, so one file says
    /// what was trained, how, on what, how fast and with what result), then `run.json`, whose
    /// presence marks the run complete.
    pub fn save(&self, dir: &Path, extra: &impl Serialize) -> Result<()> {
        #[derive(Serialize)]
        struct Report<'a, D, E> {
            #[serde(flatten)]
            header: &'a RunHeader,
            #[serde(flatten)]
            details: &'a D,
            #[serde(flatten)]
            extra: &'a E,
        }
        let report = Report { header: &self.header, details: &self.details, extra };
        write_files(
            dir,
            &[
                (REPORT_FILE.into(), serde_json::to_string_pretty(&report)?),
                (RUN_FILE.into(), serde_json::to_string_pretty(self)?),
            ],
        )
    }
}

/// The commit the binary was built from (`-dirty` with uncommitted changes), when known.
pub fn git_commit() -> Option<String> {
    Some(env!("SOFT_GIT_COMMIT").to_string()).filter(|c| c != "unknown")
}
