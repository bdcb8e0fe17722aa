//! SOFT — self-optimized fine-tuning for LLM-based recommenders: the method, on any burn device.
//!
//! Data flows one way: `data` (catalog, windows, split, prompts) -> `model` -> training stages ->
//! `eval` (grounding, metrics). Nothing here touches a terminal; the CLI and the web app are shells.

pub mod baselines;
pub mod data;
pub mod error;
pub mod eval;
pub mod hash;
pub mod model;
pub mod progress;
pub mod train;

pub use error::{Error, Result};
