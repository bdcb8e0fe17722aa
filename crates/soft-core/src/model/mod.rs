//! The language model, in rooms by concern (as candle-transformers): the architecture here — a
//! Llama-family causal LM ([`llama`]: Llama, SmolLM2, Qwen2) holding LoRA layers ([`lora`]) and,
//! for the LLaRA backbone, an item projector ([`projector`]); [`formats`] reads and writes it
//! (GGUF, Hugging Face directories, PEFT adapters, tokenizers); [`decoding`] generates from it
//! (greedy, beam search, title tries). Data flows formats -> architecture <- decoding.

pub mod config;
pub mod decoding;
pub mod dropout;
pub mod formats;
pub mod kv_cache;
pub mod llama;
pub mod lora;
pub mod projector;
pub mod rope;
pub mod weights;
