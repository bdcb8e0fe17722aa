//! The language model: a Llama-architecture causal LM with LoRA, its weights and tokenizer.

pub mod batch;
pub mod beam_search;
pub mod config;
pub mod dropout;
pub mod generate;
#[cfg(feature = "native")]
pub mod gguf;
pub mod hf;
pub mod hf_write;
pub mod kv_cache;
pub mod llama;
pub mod lora;
pub mod peft;
pub mod pretrained;
pub mod tokenizer;
pub mod trie;
pub mod weights;
