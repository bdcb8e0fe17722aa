//! Shapes and hyper-parameters of the Llama-family model and of its LoRA adapters.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Architecture of a Llama-family decoder (Llama, SmolLM2, Qwen2 with `attention_bias`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Width of the SwiGLU feed-forward layer.
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Key/value heads; fewer than `n_heads` means grouped-query attention.
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rope_theta: f64,
    pub rms_eps: f64,
    /// Longest sequence the model was trained for; generation does not go past it.
    pub max_seq_len: usize,
    /// The LM head reuses the token embedding matrix (no `lm_head.weight`).
    pub tie_embeddings: bool,
    /// Q/K/V projections carry a bias (Qwen2).
    pub attention_bias: bool,
}

impl LlamaConfig {
    /// A model of a few million parameters for tests and quick experiments.
    pub fn tiny(vocab_size: usize) -> Self {
        Self {
            vocab_size,
            hidden_size: 256,
            intermediate_size: 688,
            n_layers: 4,
            n_heads: 4,
            n_kv_heads: 2,
            head_dim: 64,
            rope_theta: 10_000.0,
            rms_eps: 1e-5,
            max_seq_len: 1024,
            tie_embeddings: true,
            attention_bias: false,
        }
    }

    /// SmolLM2-135M (base and instruct share the architecture).
    pub fn smollm2_135m() -> Self {
        Self {
            vocab_size: 49_152,
            hidden_size: 576,
            intermediate_size: 1536,
            n_layers: 30,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            rope_theta: 100_000.0,
            rms_eps: 1e-5,
            max_seq_len: 8192,
            tie_embeddings: true,
            attention_bias: false,
        }
    }

    /// Query heads served by each key/value head.
    pub fn kv_groups(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Rejects shapes the model cannot be built with.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("max_seq_len", self.max_seq_len),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Invalid(format!("model config: {name} must be positive")));
        }
        if self.n_heads % self.n_kv_heads != 0 {
            return Err(Error::Invalid(format!(
                "model config: n_heads ({}) must be a multiple of n_kv_heads ({})",
                self.n_heads, self.n_kv_heads
            )));
        }
        if self.head_dim % 2 != 0 {
            return Err(Error::Invalid(format!(
                "model config: head_dim ({}) must be even for rotary embeddings",
                self.head_dim
            )));
        }
        if !(self.rope_theta > 0.0 && self.rms_eps > 0.0) {
            return Err(Error::Invalid("model config: rope_theta and rms_eps must be positive".into()));
        }
        Ok(())
    }
}

/// The projections LoRA can adapt, by their Hugging Face module names.
pub const LORA_TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// LoRA hyper-parameters; the defaults are the SOFT reference's (r 8, alpha 16, dropout 0.05 on
/// q_proj and v_proj). Missing JSON fields take these defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    /// Dropout on the input of the LoRA branch, during training only.
    pub dropout: f64,
    pub target_modules: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self { r: 8, alpha: 16.0, dropout: 0.05, target_modules: vec!["q_proj".into(), "v_proj".into()] }
    }
}

impl LoraConfig {
    /// The factor applied to the low-rank update `B·A`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }

    /// Whether the projection named `module` (`"q_proj"`, ...) gets an adapter.
    pub fn targets(&self, module: &str) -> bool {
        self.target_modules.iter().any(|t| t == module)
    }

    pub fn validate(&self) -> Result<()> {
        if self.r == 0 {
            return Err(Error::Invalid("LoRA config: r must be positive".into()));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Invalid(format!("LoRA config: dropout {} is not in [0, 1)", self.dropout)));
        }
        if self.target_modules.is_empty() {
            return Err(Error::Invalid("LoRA config: no target_modules".into()));
        }
        if let Some(t) = self.target_modules.iter().find(|t| !LORA_TARGETS.contains(&t.as_str())) {
            return Err(Error::Invalid(format!(
                "LoRA config: unknown target module `{t}` (expected one of {})",
                LORA_TARGETS.join(", ")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_round_trip_through_json() {
        for config in [LlamaConfig::tiny(1000), LlamaConfig::smollm2_135m()] {
            config.validate().unwrap();
            let json = serde_json::to_string(&config).unwrap();
            assert_eq!(serde_json::from_str::<LlamaConfig>(&json).unwrap(), config);
        }
        assert_eq!(LlamaConfig::smollm2_135m().kv_groups(), 3);
    }

    #[test]
    fn impossible_shapes_are_refused() {
        let config = LlamaConfig { n_kv_heads: 3, ..LlamaConfig::tiny(100) };
        assert!(config.validate().unwrap_err().to_string().contains("n_kv_heads"));
        let config = LlamaConfig { head_dim: 63, ..LlamaConfig::tiny(100) };
        assert!(config.validate().is_err());
    }

    #[test]
    fn lora_defaults_fill_missing_fields() {
        let config: LoraConfig = serde_json::from_str(r#"{"r": 16}"#).unwrap();
        assert_eq!((config.r, config.alpha, config.dropout), (16, 16.0, 0.05));
        assert_eq!(config.target_modules, ["q_proj", "v_proj"]);
        assert_eq!(config.scale(), 1.0);
        let bad = LoraConfig { target_modules: vec!["qkv".into()], ..LoraConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("qkv"));
    }
}
