//! The paper's base-model families, as a user brings them: Hugging Face directories shaped like
//! Llama-3.2 (GQA 3:1, tied head, `llama3` rope scaling in transformers 5's `rope_parameters`,
//! bf16 weights) and Qwen2.5 (`model_type: qwen2`, q/k/v biases that config.json does not name,
//! theta 1e6 and eps 1e-6 in the older top-level spelling), scaled down and with random weights,
//! go through `soft-train run` end to end on the CPU. Whether they compute what transformers
//! computes is `bench/HF_ROPE_CHECK.md`'s check (it needs torch); this one is that every stage
//! takes them.

mod support;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde_json::{json, Value};
use soft_core::model::config::{LlamaConfig, RopeScaling};
use soft_core::model::formats::hf_write::{hf_config_json, tokenizer_config_json};
use soft_core::model::formats::tokenizer::{load_tokenizer, SpecialIds};
use soft_core::model::llama::Llama;
use soft_core::model::weights::{safetensors_bytes, FloatEncoding};
use support::{json as read_json, run, scratch, small_tiny, stderr, tiny_run_args};

enum Family {
    Llama32,
    Qwen25,
}

impl Family {
    fn config(&self, vocab_size: usize) -> LlamaConfig {
        let base = LlamaConfig::tiny(vocab_size);
        match self {
            // Llama-3.2's pattern: 3 query heads per KV head, head size 128 kept so the llama3
            // frequency bands are the real ones (hidden = heads x head size, as in the real one).
            Family::Llama32 => LlamaConfig {
                hidden_size: 384,
                intermediate_size: 1024,
                n_layers: 2,
                n_heads: 3,
                n_kv_heads: 1,
                head_dim: 128,
                rope_theta: 500_000.0,
                rope_scaling: RopeScaling::llama32(),
                rms_eps: 1e-5,
                tie_embeddings: true,
                attention_bias: false,
                ..base
            },
            // Qwen2.5-0.5B's pattern: 7 query heads per KV head, biases on q/k/v.
            Family::Qwen25 => LlamaConfig {
                hidden_size: 112,
                intermediate_size: 304,
                n_layers: 2,
                n_heads: 7,
                n_kv_heads: 1,
                head_dim: 16,
                rope_theta: 1_000_000.0,
                rope_scaling: RopeScaling::None,
                rms_eps: 1e-6,
                tie_embeddings: true,
                attention_bias: true,
                ..base
            },
        }
    }

    /// `config.json` as the family's own files spell it.
    fn config_json(&self, config: &LlamaConfig, special: &SpecialIds) -> Value {
        let mut c = hf_config_json(config, special, self.dtype());
        let fields = c.as_object_mut().unwrap();
        match self {
            Family::Llama32 => {
                // transformers 5: the rotary settings under one key.
                let theta = fields.remove("rope_theta").unwrap();
                let mut rope = fields.remove("rope_scaling").unwrap();
                rope.as_object_mut().unwrap().insert("rope_theta".into(), theta);
                fields.insert("rope_parameters".into(), rope);
            }
            Family::Qwen25 => {
                fields.insert("architectures".into(), json!(["Qwen2ForCausalLM"]));
                fields.insert("model_type".into(), json!("qwen2"));
                // Qwen2's config names no attention_bias: the loader finds the biases in the weights.
                fields.remove("attention_bias");
                fields.insert("use_sliding_window".into(), json!(false));
            }
        }
        c
    }

    fn dtype(&self) -> &'static str {
        match self {
            Family::Llama32 => "bfloat16",
            Family::Qwen25 => "float32",
        }
    }

    fn encoding(&self) -> FloatEncoding {
        match self {
            Family::Llama32 => FloatEncoding::BF16,
            Family::Qwen25 => FloatEncoding::F32,
        }
    }
}

/// A checkpoint directory of `family` in `dir`, with `tiny`'s tokenizer (its vocabulary sizes the
/// model) and random weights, q/k/v biases non-zero so that dropping them would show.
fn checkpoint(family: Family, tiny: &Path, dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let tokenizer = load_tokenizer(&tiny.join("tokenizer.json")).unwrap();
    let special = SpecialIds::endoftext(&tokenizer).unwrap();
    let config = family.config(tokenizer.get_vocab_size(true));
    let device = Device::flex();
    device.seed(7);
    let mut weights = Llama::init(&config, &device).unwrap().to_hf_weights().unwrap();
    for (name, t) in weights.iter_mut().filter(|(name, _)| name.ends_with(".bias")) {
        t.data.iter_mut().enumerate().for_each(|(i, x)| *x = ((i * 7 + name.len()) % 13) as f32 * 0.05 - 0.3);
    }
    let path = dir.join("model.safetensors");
    std::fs::write(&path, safetensors_bytes(&weights, family.encoding(), &path).unwrap()).unwrap();
    let write_json = |name: &str, value: &Value| {
        std::fs::write(dir.join(name), serde_json::to_string_pretty(value).unwrap()).unwrap();
    };
    write_json("config.json", &family.config_json(&config, &special));
    write_json("tokenizer_config.json", &tokenizer_config_json(&special));
    std::fs::copy(tiny.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    dir.to_path_buf()
}

/// Every stage of `run` on the checkpoint: the run finishes, its table has SFT and SOFT rows,
/// and the SFT report names the checkpoint it tuned.
fn runs_end_to_end(family: Family, name: &str) {
    let dir = scratch(name);
    let model = checkpoint(family, &small_tiny(&dir), &dir.join(name));
    let out = dir.join("run");
    let args = tiny_run_args(&model, &out);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&args);
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    let table = std::fs::read_to_string(out.join("table.md")).unwrap();
    for row in ["| SFT |", "| SOFT (adaptive) |", "| SOFT without SA |"] {
        assert!(table.contains(row), "{name}: no {row} row in\n{table}");
    }
    let sft = read_json(&out.join("sft/run.json"));
    assert_eq!(sft["details"]["base_model"], model.to_str().unwrap(), "{name}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_llama_3_2_shaped_checkpoint_runs_every_stage() {
    runs_end_to_end(Family::Llama32, "llama32");
}

#[test]
fn a_qwen_2_5_shaped_checkpoint_runs_every_stage() {
    runs_end_to_end(Family::Qwen25, "qwen25");
}
