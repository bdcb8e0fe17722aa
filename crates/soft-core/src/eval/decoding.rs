//! How answers are decoded: `free` beam search (the paper's) or beam search `constrained` to
//! the titles of real items (the "Decoding Matters" / D3 idea), so every answer is an item;
//! and how the beams become a ranking.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::data::{prompt, Catalog};
use crate::model::decoding::generate::BeamConfig;
use crate::model::decoding::trie::TitleTrie;
use crate::model::formats::tokenizer::{encode, SpecialIds};
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

/// How a prompt's beams become its ranked items.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Ranking {
    /// The paper's: every item by its L2 distance to the top beam's answer.
    #[default]
    TopBeam,
    /// Each beam, best first, ranks its nearest item not ranked yet; the top beam's nearest
    /// items fill the rest. With constrained decoding the beams are items, ranked by the model's
    /// own score (the D3 way): its top-k is its k most likely titles, not one title's neighbours.
    Beams,
}

impl Ranking {
    /// One prompt's ranking of `len` items from its beams' nearest items (`per_beam[b]`: beam
    /// b's items by distance, nearest first; best beam first).
    pub fn merge(self, per_beam: &[Vec<u32>], len: usize) -> Vec<u32> {
        let Some(top) = per_beam.first() else { return Vec::new() };
        let mut ranked: Vec<u32> = Vec::with_capacity(len);
        if self == Ranking::Beams {
            for items in per_beam {
                if let Some(&id) = items.iter().find(|id| !ranked.contains(id)) {
                    ranked.push(id);
                }
            }
        }
        for &id in top {
            if ranked.len() >= len {
                break;
            }
            if !ranked.contains(&id) {
                ranked.push(id);
            }
        }
        ranked.truncate(len);
        ranked
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

/// The constraint for decoding only real items: every grounding item's title in the response
/// form the model is trained to write (`"Title"`, tokenized alone as in SFT's targets), each
/// complete one followed by EOS.
pub fn title_trie(tokenizer: &Tokenizer, special: &SpecialIds, catalog: &Catalog) -> Result<TitleTrie> {
    let sequences = catalog
        .grounding_ids()
        .into_iter()
        .map(|id| encode(tokenizer, &prompt::response(catalog.title(id).unwrap_or_default())))
        .collect::<Result<Vec<_>>>()?;
    Ok(TitleTrie::new(sequences, special.eos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_beam_ranks_the_top_beams_neighbours_only() {
        let beams = vec![vec![5, 6, 7], vec![9, 5, 1]];
        assert_eq!(Ranking::TopBeam.merge(&beams, 3), vec![5, 6, 7]);
        assert_eq!(Ranking::TopBeam.merge(&beams, 2), vec![5, 6]);
    }

    #[test]
    fn beams_rank_each_beams_nearest_new_item_then_fill_from_the_top_beam() {
        // Beam 2's nearest (5) is taken by beam 1: its next nearest (8) is ranked instead.
        let beams = vec![vec![5, 6, 7], vec![9, 5, 1], vec![5, 8, 2]];
        assert_eq!(Ranking::Beams.merge(&beams, 5), vec![5, 9, 8, 6, 7]);
        assert_eq!(Ranking::Beams.merge(&beams, 2), vec![5, 9]);
        assert_eq!(Ranking::Beams.merge(&[], 5), Vec::<u32>::new());
    }
}
