pub mod baseline;
pub mod data_args;
pub mod eval;
pub mod generate;
pub mod pretrain;
pub mod prepare;
pub mod sft;
