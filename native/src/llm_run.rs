//! A language-model run directory opened for use: its base model, the adapter it trained, the
//! base model's item embeddings, and the decoding it was validated with.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use burn::tensor::Device;
use soft_core::data::{Catalog, Domain};
use soft_core::eval::llm::{Grounder, LlmRecommender};
use soft_core::model::generate::BeamConfig;
use soft_core::model::llama::Llama;
use soft_core::model::pretrained::{load_path, Pretrained};
use soft_core::train::sft::SftConfig;

use crate::cmd::generate::resolve;
use crate::run_dir::RunInfo;

/// Where a language-model run keeps its PEFT adapter.
pub const ADAPTER_DIR: &str = "adapter";

pub struct LoadedRun {
    pub info: RunInfo,
    pub base: Pretrained,
    pub tuned: Llama,
    pub grounder: Grounder,
    pub beam: BeamConfig,
}

impl LoadedRun {
    pub fn open(dir: &Path, catalog: &Catalog, device: &Device) -> Result<Self> {
        let info = RunInfo::load(dir)?;
        let run_file = dir.join("run.json");
        let config: SftConfig = serde_json::from_value(info.details["config"]["sft"].clone())
            .or_else(|_| serde_json::from_value(info.details["config"].clone()))
            .with_context(|| format!("{}: no language-model training config", run_file.display()))?;
        let base_name =
            info.details["base_model"].as_str().ok_or_else(|| anyhow!("{}: missing base_model", run_file.display()))?;
        let base = load_path(&resolve(base_name)?, device)?;
        let tuned = base.model.clone().load_adapter(&dir.join(ADAPTER_DIR))?;
        let grounder = Grounder::new(&base.model, &base.tokenizer, &base.special, catalog)?;
        let beam = config.beam(base.special.eos);
        Ok(Self { info, base, tuned, grounder, beam })
    }

    pub fn recommender(&self, domain: Domain) -> LlmRecommender<'_> {
        LlmRecommender {
            tuned: &self.tuned,
            base: &self.base.model,
            tokenizer: &self.base.tokenizer,
            special: &self.base.special,
            grounder: &self.grounder,
            domain,
            beam: self.beam.clone(),
        }
    }
}
