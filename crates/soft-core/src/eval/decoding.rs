//! How answers are decoded: `free` beam search (the paper's) or beam search `constrained` to
//! the titles of real items (the "Decoding Matters" / D3 idea), so every answer is an item.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::data::Catalog;
use crate::eval::llm::title_trie;
use crate::model::generate::BeamConfig;
use crate::model::tokenizer::SpecialIds;
use crate::Result;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Decoding {
    #[default]
    Free,
    Constrained,
}

impl Decoding {
    pub fn name(self) -> &'static str {
        match self {
            Decoding::Free => "free",
            Decoding::Constrained => "constrained",
        }
    }
}

impl Decoding {
    /// `beam` with this decoding: unchanged for `free`, restricted to the response form of every
    /// grounding item's title for `constrained`.
    pub fn apply(
        self,
        beam: BeamConfig,
        tokenizer: &Tokenizer,
        special: &SpecialIds,
        catalog: &Catalog,
    ) -> Result<BeamConfig> {
        Ok(match self {
            Decoding::Free => beam,
            Decoding::Constrained => {
                BeamConfig { constraint: Some(Arc::new(title_trie(tokenizer, special, catalog)?)), ..beam }
            }
        })
    }
}
