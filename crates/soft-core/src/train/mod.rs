//! Training: one language-model objective ([`lm`]), one optimisation step ([`trainer`]) and one
//! epoch loop with checkpoints ([`epoch_loop`], [`checkpoint`]); pre-training and the three SOFT
//! stages (SFT, self-distillation, SOFT with its scheduler) are configurations of them. Stages
//! validate through `eval`, which sits below them.

#[cfg(feature = "native")]
pub mod checkpoint;
pub(crate) mod data_parallel;
#[cfg(feature = "native")]
pub mod distill;
#[cfg(feature = "native")]
pub mod epoch_loop;
pub mod lm;
#[cfg(feature = "native")]
pub mod pretrain;
pub mod scheduler;
pub mod sft;
pub mod soft;
pub mod trainer;

pub use lm::LmExample;
pub use trainer::{LmTrainer, TrainConfig};

/// A small random Llama (vocabulary 32, two layers) for the training tests.
#[cfg(test)]
pub(crate) fn test_model(device: &burn::tensor::Device) -> crate::model::llama::Llama {
    let mut c = crate::model::config::LlamaConfig::tiny(32);
    (c.hidden_size, c.intermediate_size, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim) = (32, 64, 2, 2, 1, 16);
    crate::model::llama::Llama::init(&c, device).unwrap()
}
