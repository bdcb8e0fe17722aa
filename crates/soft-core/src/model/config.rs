//! Shapes and hyper-parameters of the Llama-family model and of its LoRA adapters.

use std::path::Path;

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
    /// Base of the rotary frequencies `theta^(-2i/D)` (see [`rope`](Self::rope)).
    pub rope_theta: f64,
    /// How those frequencies are rescaled; configs serialized before it existed have none.
    #[serde(default)]
    pub rope_scaling: RopeScaling,
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
            rope_scaling: RopeScaling::None,
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
            rope_scaling: RopeScaling::None,
            rms_eps: 1e-5,
            max_seq_len: 8192,
            tie_embeddings: true,
            attention_bias: false,
        }
    }

    /// Everything the rotary tables depend on besides the head size and the positions.
    pub fn rope(&self) -> RopeSetting {
        RopeSetting { theta: self.rope_theta, scaling: self.rope_scaling }
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
        let bad = |msg: String| Err(Error::config("model config", msg));
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return bad(format!("{name} must be positive"));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!("n_heads ({}) must be a multiple of n_kv_heads ({})", self.n_heads, self.n_kv_heads));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim ({}) must be even for rotary embeddings", self.head_dim));
        }
        if !(self.rms_eps > 0.0 && self.rms_eps.is_finite()) {
            return bad(format!("rms_eps must be a positive number, got {}", self.rms_eps));
        }
        self.rope().validate()
    }

    /// [`validate`](Self::validate) for a config read from the checkpoint at `path`, which the
    /// error names.
    pub fn validate_file(&self, path: &Path) -> Result<()> {
        self.validate().map_err(|e| Error::format(path, e.to_string()))
    }

    /// Every projection of a block, in [`PROJECTIONS`] order, with its shape.
    pub fn projections(&self) -> [Projection; 7] {
        let (d, ffn) = (self.hidden_size, self.intermediate_size);
        let (q, kv) = (self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim);
        let b = self.attention_bias;
        let shapes =
            [(d, q, b), (d, kv, b), (d, kv, b), (q, d, false), (d, ffn, false), (d, ffn, false), (ffn, d, false)];
        std::array::from_fn(|i| {
            let (d_in, d_out, bias) = shapes[i];
            Projection { path: PROJECTIONS[i], d_in, d_out, bias }
        })
    }
}

/// How the rotary inverse frequencies `f_i = theta^(-2i/D)` are rescaled: Hugging Face's
/// `rope_type` with its parameters (`rope_scaling` in older `config.json` files, inside
/// `rope_parameters` in transformers 5). Only the kinds implemented here exist; a checkpoint
/// asking for another is refused when it is read (see `formats::hf`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "rope_type", rename_all = "snake_case")]
pub enum RopeScaling {
    /// `rope_type: "default"`: the frequencies as they are.
    #[default]
    #[serde(rename = "default")]
    None,
    /// `rope_type: "llama3"` (Llama 3.1, 3.2, 3.3): with `L` = `original_max_position_embeddings`
    /// and wavelength `w = 2π / f`, a frequency whose `w < L / high_freq_factor` is kept, one
    /// whose `w > L / low_freq_factor` is divided by `factor`, and one in between is
    /// interpolated, `f' = (1 - s)·f / factor + s·f` with
    /// `s = (L / w - low_freq_factor) / (high_freq_factor - low_freq_factor)` (transformers'
    /// `_compute_llama3_parameters`; no attention scaling). It changes every position's rotation,
    /// not only long contexts'.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: usize },
}

impl RopeScaling {
    /// The scaling the published Llama-3.2 configs give (`rope_theta` 500,000 beside it).
    pub fn llama32() -> Self {
        Self::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }
    }
}

/// The rotary embedding's settings: base and scaling ([`LlamaConfig::rope`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeSetting {
    pub theta: f64,
    pub scaling: RopeScaling,
}

impl RopeSetting {
    /// Unscaled rotary embedding with base `theta`.
    pub fn plain(theta: f64) -> Self {
        Self { theta, scaling: RopeScaling::None }
    }

    /// Rejects settings whose frequencies are not finite and positive, naming the field (as
    /// `LlamaConfig` names it: `rope_theta`, `rope_scaling.factor`, ...).
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::config("model config", msg));
        let positive = |name: &str, v: f64| match v > 0.0 && v.is_finite() {
            true => Ok(()),
            false => bad(format!("{name} must be a positive finite number, got {v}")),
        };
        positive("rope_theta", self.theta)?;
        match self.scaling {
            RopeScaling::None => Ok(()),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                positive("rope_scaling.factor", factor)?;
                positive("rope_scaling.low_freq_factor", low_freq_factor)?;
                positive("rope_scaling.high_freq_factor", high_freq_factor)?;
                if high_freq_factor <= low_freq_factor {
                    return bad(format!(
                        "rope_scaling.high_freq_factor ({high_freq_factor}) must be greater than \
                         rope_scaling.low_freq_factor ({low_freq_factor})"
                    ));
                }
                if original_max_position_embeddings == 0 {
                    return bad("rope_scaling.original_max_position_embeddings must be positive".into());
                }
                Ok(())
            }
        }
    }
}

/// The head size of a checkpoint that stores none: `hidden_size / n_heads`, which must divide
/// evenly. `path` names the checkpoint in the error.
pub fn implied_head_dim(hidden_size: usize, n_heads: usize, path: &Path) -> Result<usize> {
    if n_heads == 0 || !hidden_size.is_multiple_of(n_heads) {
        return Err(Error::format(path, format!("hidden size {hidden_size} is not a multiple of {n_heads} heads")));
    }
    Ok(hidden_size / n_heads)
}

/// The linear projections of a block by their Hugging Face path inside it (layer `i`'s weight
/// is `model.layers.{i}.{path}.weight`), in the order every list of them follows.
pub const PROJECTIONS: [&str; 7] = [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

/// One of [`PROJECTIONS`] with its shape under a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Projection {
    pub path: &'static str,
    pub d_in: usize,
    pub d_out: usize,
    /// Q, K and V carry a bias under `attention_bias` (Qwen2).
    pub bias: bool,
}

/// `self_attn.q_proj` (or `model.layers.3.self_attn.q_proj`) -> `q_proj`: the module name
/// PEFT's `target_modules` use.
pub fn module_name(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// The module names LoRA can target: every projection's (PEFT's `all-linear`).
pub fn lora_targets() -> [&'static str; 7] {
    PROJECTIONS.map(module_name)
}

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
        let bad = |msg: String| Err(Error::config("LoRA config", msg));
        if self.r == 0 {
            return bad("r must be positive".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} is not in [0, 1)", self.dropout));
        }
        if self.target_modules.is_empty() {
            return bad("no target_modules".into());
        }
        let targets = lora_targets();
        if let Some(t) = self.target_modules.iter().find(|t| !targets.contains(&t.as_str())) {
            return bad(format!("unknown target module `{t}` (expected one of {})", targets.join(", ")));
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
    fn rope_scaling_is_optional_in_json_and_round_trips() {
        // A config serialized before `rope_scaling` existed reads as unscaled.
        let mut old = serde_json::to_value(LlamaConfig::smollm2_135m()).unwrap();
        old.as_object_mut().unwrap().remove("rope_scaling").unwrap();
        let config: LlamaConfig = serde_json::from_value(old).unwrap();
        assert_eq!(config, LlamaConfig::smollm2_135m());
        assert_eq!(config.rope(), RopeSetting::plain(100_000.0));

        let scaled =
            LlamaConfig { rope_theta: 500_000.0, rope_scaling: RopeScaling::llama32(), ..LlamaConfig::tiny(100) };
        scaled.validate().unwrap();
        let json = serde_json::to_value(&scaled).unwrap();
        assert_eq!(json["rope_scaling"]["rope_type"], "llama3");
        assert_eq!(json["rope_scaling"]["original_max_position_embeddings"], 8192);
        assert_eq!(serde_json::from_value::<LlamaConfig>(json).unwrap(), scaled);
        let plain = serde_json::to_value(LlamaConfig::tiny(100)).unwrap();
        assert_eq!(plain["rope_scaling"], serde_json::json!({"rope_type": "default"}));
    }

    #[test]
    fn bad_rope_settings_name_the_field() {
        let with = |theta: f64, scaling: RopeScaling| LlamaConfig {
            rope_theta: theta,
            rope_scaling: scaling,
            ..LlamaConfig::tiny(100)
        };
        let err = |config: LlamaConfig| config.validate().unwrap_err().to_string();
        for theta in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(err(with(theta, RopeScaling::None)).contains("rope_theta"), "{theta}");
        }
        let RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } =
            RopeScaling::llama32()
        else {
            unreachable!()
        };
        let cases = [
            (
                "rope_scaling.factor",
                RopeScaling::Llama3 {
                    factor: 0.0,
                    low_freq_factor,
                    high_freq_factor,
                    original_max_position_embeddings,
                },
            ),
            (
                "rope_scaling.low_freq_factor",
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor: f64::NAN,
                    high_freq_factor,
                    original_max_position_embeddings,
                },
            ),
            (
                "rope_scaling.high_freq_factor",
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor,
                    high_freq_factor: 1.0,
                    original_max_position_embeddings,
                },
            ),
            (
                "rope_scaling.original_max_position_embeddings",
                RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings: 0 },
            ),
        ];
        for (field, scaling) in cases {
            let message = err(with(500_000.0, scaling));
            assert!(message.contains(field), "{field}: {message}");
        }
    }

    #[test]
    fn projections_follow_the_config() {
        let config = LlamaConfig { attention_bias: true, ..LlamaConfig::smollm2_135m() };
        let projections = config.projections();
        assert_eq!(projections.map(|p| p.path), PROJECTIONS);
        assert_eq!(projections[1], Projection { path: "self_attn.k_proj", d_in: 576, d_out: 192, bias: true });
        assert_eq!(projections[6], Projection { path: "mlp.down_proj", d_in: 1536, d_out: 576, bias: false });
        assert_eq!(lora_targets(), ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]);
        assert_eq!(implied_head_dim(576, 9, Path::new("m.gguf")).unwrap(), 64);
        assert!(implied_head_dim(576, 7, Path::new("m.gguf")).unwrap_err().to_string().contains("m.gguf"));
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
