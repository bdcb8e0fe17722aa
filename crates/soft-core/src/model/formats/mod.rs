//! The files a model comes from and goes to: GGUF, Hugging Face directories (config.json +
//! safetensors), PEFT adapter directories, `tokenizer.json`, and the named presets built on them.

#[cfg(feature = "native")]
pub mod gguf;
pub mod hf;
pub mod hf_write;
pub mod peft;
pub mod pretrained;
pub mod tokenizer;
