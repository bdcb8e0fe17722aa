//! The language model: a Llama-architecture causal LM with LoRA, its weights and tokenizer.

pub mod gguf;
pub mod hf;
pub mod tokenizer;
pub mod weights;
pub mod config;
pub mod llama;
pub mod lora;
pub mod generate;
pub mod pretrained;
