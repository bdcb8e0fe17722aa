//! Training: one language-model loss and one optimisation loop; pre-training (and the SOFT
//! stages after it) are configurations of them.

pub mod checkpoint;
pub mod distill;
pub mod early_stop;
pub mod lm;
pub mod pretrain;
pub mod scheduler;
pub mod sft;
pub mod soft;

pub use lm::{LmExample, LmTrainer, TrainConfig};
