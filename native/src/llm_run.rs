//! A language-model run directory opened for use: its base model, the adapter it trained (none
//! for Guidance-Only), the base model's item embeddings, and the decoding it was validated with.

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::tensor::Device;
use soft_core::data::prompt::Backbone;
use soft_core::data::{Catalog, Domain};
use soft_core::eval::decoding::{Decoding, Ranking};
use soft_core::eval::llm::{Grounder, LlmRecommender};
use soft_core::model::decoding::generate::BeamConfig;
use soft_core::model::formats::pretrained::{load_path_as, Pretrained};
use soft_core::model::llama::Llama;
use soft_core::train::sft::{check_backbone, SftConfig};

use crate::grounder_cache::grounder;
use crate::model_arg::resolve;
use crate::run_info::{Details, GuidanceOnlyDetails, RunHeader, RunInfo, SftDetails, SoftDetails, RUN_FILE};

/// Where a language-model run keeps its PEFT adapter.
pub const ADAPTER_DIR: &str = "adapter";

pub struct LoadedRun {
    pub header: RunHeader,
    /// The `--model` the adapter was trained on.
    pub base_model: String,
    pub base: Pretrained,
    pub tuned: Llama,
    pub grounder: Grounder,
    pub beam: BeamConfig,
    pub ranking: Ranking,
    /// The run's training settings (SOFT runs: those of their SFT part).
    pub config: SftConfig,
}

impl LoadedRun {
    /// Opens the run in `dir`; `decoding` and `ranking` override those it was trained with.
    pub fn open(
        dir: &Path,
        catalog: &Catalog,
        device: &Device,
        decoding: Option<Decoding>,
        ranking: Option<Ranking>,
    ) -> Result<Self> {
        let header = RunHeader::load(dir)?;
        let (base_model, config) = match header.method.as_str() {
            SftDetails::METHOD => {
                let d = RunInfo::<SftDetails>::load(dir)?.details;
                (d.base_model, d.config)
            }
            SoftDetails::METHOD => {
                let d = RunInfo::<SoftDetails>::load(dir)?.details;
                (d.base_model, d.config.sft)
            }
            GuidanceOnlyDetails::METHOD => {
                let d = RunInfo::<GuidanceOnlyDetails>::load(dir)?.details;
                let config = d.config();
                (d.base_model, config)
            }
            other => bail!("{}: a {other} run, not a language-model run", dir.join(RUN_FILE).display()),
        };
        let path = resolve(&base_model)?;
        // In the precision the run trained in: a half-precision run is evaluated in it too.
        let base = load_path_as(&path, device, config.train.base_dtype)?;
        // Guidance-Only answers with the base model itself: it has no adapter (LLaRA's has its
        // untrained projector in the run directory). A trained LLaRA adapter brings its own.
        let tuned = if header.method == GuidanceOnlyDetails::METHOD {
            match config.prompt.backbone {
                Backbone::Llara => base.model.clone().load_projector(dir)?,
                Backbone::Bigrec => base.model.clone(),
            }
        } else {
            let adapter = dir.join(ADAPTER_DIR);
            base.model
                .clone()
                .load_adapter(&adapter)
                .with_context(|| format!("{}: unusable adapter", adapter.display()))?
        };
        check_backbone(&tuned, config.prompt.backbone).with_context(|| format!("{}: unusable run", dir.display()))?;
        let grounder = grounder(&base, &path, catalog)?;
        let decoding = decoding.unwrap_or(config.decoding);
        let beam = decoding.apply(config.beam(base.special.eos), &base.tokenizer, &base.special, catalog)?;
        let ranking = ranking.unwrap_or(config.ranking);
        Ok(Self { header, base_model, base, tuned, grounder, beam, ranking, config })
    }

    pub fn recommender(&self, domain: Domain) -> LlmRecommender<'_> {
        LlmRecommender {
            tuned: &self.tuned,
            base: &self.base.model,
            tokenizer: &self.base.tokenizer,
            special: &self.base.special,
            grounder: &self.grounder,
            domain,
            prompt: self.config.prompt.clone(),
            beam: self.beam.clone(),
            ranking: self.ranking,
        }
    }
}
