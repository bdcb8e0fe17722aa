//! The flags that shape what the language model reads and which weights it tunes (`sft`, `run`):
//! the levers for making a small model learn on a CPU. Their defaults are the paper's.

use std::path::PathBuf;

use anyhow::{bail, Result};
use soft_core::data::prompt::{Backbone, PromptOptions, Template};
use soft_core::model::config::LoraConfig;

#[derive(clap::Args, Debug, Clone)]
pub struct PromptArgs {
    /// `alpaca` (the paper's prompt) or `chat` (ChatML turns, as Instruct models like SmolLM2
    /// were tuned on).
    #[arg(long, value_enum, default_value = "alpaca")]
    pub prompt_template: Template,
    /// Only the last N titles of each history go into the prompt.
    #[arg(long)]
    pub history_len: Option<usize>,
    /// Each history title is cut to its first M tokens.
    #[arg(long)]
    pub title_tokens: Option<usize>,
}

/// Which projections of the model are tuned (`sft`, `run`).
#[derive(clap::Args, Debug, Clone)]
pub struct LoraArgs {
    /// Projections that get LoRA adapters, comma-separated (q_proj,k_proj,v_proj,o_proj,
    /// gate_proj,up_proj,down_proj); default the paper's q_proj,v_proj.
    #[arg(long, value_delimiter = ',')]
    pub lora_targets: Vec<String>,
}

impl PromptArgs {
    pub fn prompt(&self) -> PromptOptions {
        PromptOptions {
            backbone: Backbone::Bigrec,
            template: self.prompt_template,
            history_len: self.history_len,
            title_tokens: self.title_tokens,
        }
    }
}

impl LoraArgs {
    /// The LoRA targets asked for, or the default ones.
    pub fn lora_targets(&self) -> Vec<String> {
        if self.lora_targets.is_empty() {
            LoraConfig::default().target_modules
        } else {
            self.lora_targets.clone()
        }
    }
}

/// Which LLM-based recommender a stage trains or runs (`sft`, `baseline --method guidance-only`).
#[derive(clap::Args, Debug, Clone)]
pub struct BackboneArgs {
    /// `bigrec` (titles only, the default) or `llara` (each history title followed by the item's
    /// SASRec embedding, mapped into the model by a trained projector; needs `--sasrec`).
    #[arg(long, value_enum, default_value = "bigrec")]
    pub backbone: Backbone,
    /// LLaRA's item embeddings: a SASRec run directory (`soft-train baseline --method sasrec`)
    /// trained on the same training period.
    #[arg(long)]
    pub sasrec: Option<PathBuf>,
}

impl BackboneArgs {
    /// The SASRec run LLaRA reads, `None` for BIGRec; a combination that does not fit is an
    /// error naming the option, before any work.
    pub fn sasrec_run(&self) -> Result<Option<PathBuf>> {
        match (self.backbone, &self.sasrec) {
            (Backbone::Llara, Some(dir)) => Ok(Some(dir.clone())),
            (Backbone::Llara, None) => bail!("--backbone llara needs --sasrec DIR (a SASRec run's directory)"),
            (Backbone::Bigrec, Some(_)) => bail!("--sasrec is only for --backbone llara"),
            (Backbone::Bigrec, None) => Ok(None),
        }
    }
}
