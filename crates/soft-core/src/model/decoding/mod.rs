//! Generating from the model: batching prompts, greedy decoding and beam search with the KV
//! cache, free or constrained to a trie of titles.

pub mod batch;
pub mod beam_search;
pub(crate) mod fused_step;
pub mod generate;
pub mod trie;
