//! SOFT — self-optimized fine-tuning for LLM-based recommenders: the method, on any burn device.
//!
//! Data flows one way, each layer using only those before it:
//! `data` (catalog, windows, split, prompts) -> `model` (Llama, LoRA, tokenizer, generation) ->
//! `eval` (grounding, metrics: what every method is scored by) -> `train` (pre-training and the
//! SOFT stages, which validate through `eval`) and `baselines` -> the CLI and the web app, which
//! are shells. Below them all sit the shared utilities at the crate root: errors, progress
//! events, hashing, the NLL head, early stopping and atomic file writing. Nothing here touches a
//! terminal.

pub mod atomic_file;
pub mod baselines;
pub mod checksums;
pub mod data;
pub mod early_stop;
pub mod error;
pub mod eval;
pub mod hash;
pub mod loss;
pub mod model;
pub mod progress;
#[cfg(test)]
mod test_assets;
pub mod train;

pub use error::{Error, Result};
