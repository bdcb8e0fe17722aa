//! Evaluation shared by every method: each test example gets a ranking of item ids (from
//! grounding a generated answer, or from a classic model's scores), then HR@K and NDCG@K.

pub mod decoding;
pub mod grounding;
pub mod llm;
pub mod metrics;
pub mod statistics;
pub mod test_table;

use serde::{Deserialize, Serialize};

pub use grounding::{rank_by_l2, top_k};
pub use metrics::{Metrics, KS};

use crate::data::Catalog;

/// How many ranked items a prediction keeps: enough for the largest K.
pub const RANKED_LEN: usize = 50;

/// One line of `predictions.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub target: u32,
    pub generated: Option<String>,
    pub ranked: Vec<u32>,
}

/// 0-based rank of the target's canonical item in the ranking, if it is there.
pub fn target_rank(catalog: &Catalog, p: &Prediction) -> Option<usize> {
    let target = catalog.canonical_id(p.target);
    p.ranked.iter().position(|&id| id == target)
}

pub fn evaluate(catalog: &Catalog, predictions: &[Prediction]) -> Metrics {
    let ranks: Vec<Option<usize>> = predictions.iter().map(|p| target_rank(catalog, p)).collect();
    Metrics::from_ranks(&ranks)
}
