//! Hugging Face checkpoint directories of the Llama family (Llama, Mistral, Qwen2): `config.json`,
//! `model.safetensors` (or sharded with `model.safetensors.index.json`) and `tokenizer.json`.
//! Also home of `LlamaParams`, the hyper-parameters every loader (this one and GGUF) reports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::model::config::LlamaConfig;
use crate::model::tokenizer::{check_vocab_fits, load_tokenizer};
use crate::model::weights::{RawTensor, WeightMap};
use crate::{Error, Result};

/// The hyper-parameters of a Llama-architecture model, whatever file they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaParams {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub rope_theta: f32,
    pub rms_eps: f32,
    pub context_length: usize,
    /// The output projection is the token embedding (no `lm_head.weight`).
    pub tied_embeddings: bool,
}

impl LlamaParams {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.n_heads
    }

    /// Rejects values the attention layout cannot use; `path` is the file they came from.
    /// The head dimension is derived here, so it must divide evenly; the rest is the model
    /// config's own check.
    pub fn validate(&self, path: &Path) -> Result<()> {
        if self.n_heads == 0 || !self.hidden_size.is_multiple_of(self.n_heads) {
            return Err(Error::format(
                path,
                format!("hidden size {} is not a multiple of {} heads", self.hidden_size, self.n_heads),
            ));
        }
        LlamaConfig::from(self).validate().map_err(|e| Error::format(path, e.to_string()))
    }

    /// Every tensor the model needs, by HF name, with its shape. Optional extras (Qwen2's q/k/v
    /// biases) are not listed.
    pub fn expected_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, f, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let kv = self.n_kv_heads * self.head_dim();
        let mut shapes =
            vec![("model.embed_tokens.weight".to_string(), vec![v, h]), ("model.norm.weight".to_string(), vec![h])];
        if !self.tied_embeddings {
            shapes.push(("lm_head.weight".to_string(), vec![v, h]));
        }
        for l in 0..self.n_layers {
            let p = format!("model.layers.{l}");
            shapes.extend([
                (format!("{p}.self_attn.q_proj.weight"), vec![h, h]),
                (format!("{p}.self_attn.k_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.v_proj.weight"), vec![kv, h]),
                (format!("{p}.self_attn.o_proj.weight"), vec![h, h]),
                (format!("{p}.mlp.gate_proj.weight"), vec![f, h]),
                (format!("{p}.mlp.up_proj.weight"), vec![f, h]),
                (format!("{p}.mlp.down_proj.weight"), vec![h, f]),
                (format!("{p}.input_layernorm.weight"), vec![h]),
                (format!("{p}.post_attention_layernorm.weight"), vec![h]),
            ]);
        }
        shapes
    }

    /// Checks that `weights` holds every expected tensor with its expected shape.
    pub fn check_weights(&self, weights: &WeightMap, path: &Path) -> Result<()> {
        for (name, shape) in self.expected_shapes() {
            match weights.get(&name) {
                None => return Err(Error::tensor(path, name, "missing")),
                Some(t) if t.shape != shape => {
                    return Err(Error::tensor(path, name, format!("shape {:?}, expected {:?}", t.shape, shape)))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

const SUPPORTED_ARCHITECTURES: [&str; 3] = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];

/// The subset of `config.json` these architectures share. Defaults are those of transformers'
/// config classes, for keys older checkpoints leave out.
#[derive(Deserialize)]
struct HfConfig {
    #[serde(default)]
    architectures: Vec<String>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    #[serde(default = "default_rope_theta")]
    rope_theta: f32,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f32,
    vocab_size: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    max_position_embeddings: usize,
    /// Only accepted when it equals hidden_size / heads: the model derives the head size.
    head_dim: Option<usize>,
    /// Scaled RoPE (Llama 3.1 and later) is not implemented: refuse rather than run it unscaled.
    rope_scaling: Option<serde_json::Value>,
}

fn default_rope_theta() -> f32 {
    10_000.0
}

fn default_rms_eps() -> f32 {
    1e-6
}

/// Reads the hyper-parameters from a `config.json`.
pub fn read_config(path: &Path) -> Result<LlamaParams> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let config: HfConfig = serde_json::from_str(&text).map_err(|e| Error::parse(path, e.line(), e.to_string()))?;
    if !config.architectures.is_empty()
        && !config.architectures.iter().any(|a| SUPPORTED_ARCHITECTURES.contains(&a.as_str()))
    {
        return Err(Error::format(
            path,
            format!(
                "architectures {:?} not supported (supported: {})",
                config.architectures,
                SUPPORTED_ARCHITECTURES.join(", ")
            ),
        ));
    }
    if config.rope_scaling.is_some() {
        return Err(Error::format(path, "rope_scaling is not supported"));
    }
    let params = LlamaParams {
        vocab_size: config.vocab_size,
        hidden_size: config.hidden_size,
        intermediate_size: config.intermediate_size,
        n_layers: config.num_hidden_layers,
        n_heads: config.num_attention_heads,
        n_kv_heads: config.num_key_value_heads.unwrap_or(config.num_attention_heads),
        rope_theta: config.rope_theta,
        rms_eps: config.rms_norm_eps,
        context_length: config.max_position_embeddings,
        tied_embeddings: config.tie_word_embeddings,
    };
    params.validate(path)?;
    if let Some(head_dim) = config.head_dim.filter(|&d| d != params.head_dim()) {
        return Err(Error::format(
            path,
            format!("head_dim {head_dim} differs from hidden_size / num_attention_heads = {}", params.head_dim()),
        ));
    }
    Ok(params)
}

/// Reads every tensor of one `.safetensors` file, converted to f32.
pub fn load_safetensors(path: &Path) -> Result<WeightMap> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let file = SafeTensors::deserialize(&bytes).map_err(|e| Error::format(path, e.to_string()))?;
    file.iter()
        .map(|(name, view)| {
            let data = to_f32(view.dtype(), view.data())
                .ok_or_else(|| Error::tensor(path, name, format!("dtype {} is not a float type", view.dtype())))?;
            Ok((name.to_string(), RawTensor::new(view.shape().to_vec(), data)))
        })
        .collect()
}

/// F32, F16 and BF16 little-endian bytes as f32; None for other dtypes. The byte count was
/// checked against the shape by the safetensors parser.
fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    match dtype {
        Dtype::F32 => Some(bytes.as_chunks::<4>().0.iter().map(|b| f32::from_le_bytes(*b)).collect()),
        Dtype::F16 => Some(bytes.as_chunks::<2>().0.iter().map(|b| half::f16::from_le_bytes(*b).to_f32()).collect()),
        Dtype::BF16 => Some(bytes.as_chunks::<2>().0.iter().map(|b| half::bf16::from_le_bytes(*b).to_f32()).collect()),
        _ => None,
    }
}

/// The `weight_map` of a sharded checkpoint's index: tensor name -> shard file name.
#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

const SINGLE_FILE: &str = "model.safetensors";
const INDEX_FILE: &str = "model.safetensors.index.json";

/// Reads the weights of a checkpoint directory: `model.safetensors`, or else the shards named by
/// `model.safetensors.index.json`.
pub fn load_hf_weights(dir: &Path) -> Result<WeightMap> {
    let single = dir.join(SINGLE_FILE);
    if single.exists() {
        return load_safetensors(&single);
    }
    let index_path = dir.join(INDEX_FILE);
    let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
    let index: ShardIndex =
        serde_json::from_str(&text).map_err(|e| Error::parse(&index_path, e.line(), e.to_string()))?;
    let shards: BTreeSet<&String> = index.weight_map.values().collect();
    let mut weights = WeightMap::new();
    for shard in shards {
        // A shard name is a file name beside the index, never a path elsewhere.
        if Path::new(shard).file_name() != Some(std::ffi::OsStr::new(shard)) {
            return Err(Error::format(&index_path, format!("shard `{shard}` is not a plain file name")));
        }
        weights.append(&mut load_safetensors(&dir.join(shard))?);
    }
    // The index is the checkpoint's table of contents: a tensor it lists must be in its shard.
    if let Some((name, shard)) = index.weight_map.iter().find(|(name, _)| !weights.contains_key(*name)) {
        return Err(Error::tensor(dir.join(shard), name, "listed in the index but not in the shard"));
    }
    Ok(weights)
}

/// Loads a checkpoint directory: hyper-parameters, weights (checked against them; a tied
/// checkpoint that still stores `lm_head.weight` has it dropped) and `tokenizer.json` (checked
/// to fit the embedding).
pub fn load_hf_checkpoint(dir: &Path) -> Result<(LlamaParams, WeightMap, tokenizers::Tokenizer)> {
    let params = read_config(&dir.join("config.json"))?;
    let mut weights = load_hf_weights(dir)?;
    if params.tied_embeddings {
        weights.remove("lm_head.weight");
    }
    params.check_weights(&weights, dir)?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = load_tokenizer(&tokenizer_path)?;
    check_vocab_fits(&tokenizer, params.vocab_size, &tokenizer_path)?;
    Ok((params, weights, tokenizer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tokenizer::{save_tokenizer, train_bpe};
    use safetensors::tensor::TensorView;
    use std::path::PathBuf;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("soft-hf-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A 1-layer Qwen2-style model: hidden 8, 2 heads, 1 KV head, FFN 12, vocab 300.
    fn tiny_params() -> LlamaParams {
        LlamaParams {
            vocab_size: 300,
            hidden_size: 8,
            intermediate_size: 12,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 1,
            rope_theta: 1_000_000.0,
            rms_eps: 1e-6,
            context_length: 64,
            tied_embeddings: true,
        }
    }

    fn config_json() -> &'static str {
        r#"{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 8, "intermediate_size": 12,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "vocab_size": 300,
            "tie_word_embeddings": true, "max_position_embeddings": 64, "rope_scaling": null}"#
    }

    /// Deterministic weights with values exact in f16 and bf16, plus Qwen2's q/k/v biases.
    fn tiny_weights(params: &LlamaParams) -> WeightMap {
        let mut shapes = params.expected_shapes();
        let kv = params.n_kv_heads * params.head_dim();
        shapes.push(("model.layers.0.self_attn.q_proj.bias".into(), vec![params.hidden_size]));
        shapes.push(("model.layers.0.self_attn.k_proj.bias".into(), vec![kv]));
        shapes.push(("model.layers.0.self_attn.v_proj.bias".into(), vec![kv]));
        shapes
            .into_iter()
            .enumerate()
            .map(|(t, (name, shape))| {
                let n: usize = shape.iter().product();
                let data = (0..n).map(|i| ((i + t) % 17) as f32 * 0.125 - 1.0).collect();
                (name, RawTensor::new(shape, data))
            })
            .collect()
    }

    fn encode(dtype: Dtype, data: &[f32]) -> Vec<u8> {
        match dtype {
            Dtype::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Dtype::F16 => data.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
            Dtype::BF16 => data.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
            _ => unreachable!(),
        }
    }

    /// Writes `names` of `weights` to `path`, cycling through the three float dtypes.
    fn write_safetensors(path: &Path, weights: &WeightMap, names: &[&String]) {
        let dtypes = [Dtype::F32, Dtype::F16, Dtype::BF16];
        let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let t = &weights[*name];
                let dtype = dtypes[i % 3];
                ((*name).clone(), dtype, t.shape.clone(), encode(dtype, &t.data))
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, dtype, shape, data)| (name.clone(), TensorView::new(*dtype, shape.clone(), data).unwrap()));
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    fn write_tokenizer(dir: &Path) {
        let texts: Vec<String> = (0..50).map(|i| format!("item title number {i}")).collect();
        let tok = train_bpe(&texts, 300, &[]).unwrap();
        save_tokenizer(&tok, &dir.join("tokenizer.json")).unwrap();
    }

    #[test]
    fn single_file_checkpoint_round_trips() {
        let dir = temp_dir("single");
        let params = tiny_params();
        let weights = tiny_weights(&params);
        std::fs::write(dir.join("config.json"), config_json()).unwrap();
        write_safetensors(&dir.join(SINGLE_FILE), &weights, &weights.keys().collect::<Vec<_>>());
        write_tokenizer(&dir);

        let (got_params, got_weights, tok) = load_hf_checkpoint(&dir).unwrap();
        assert_eq!(got_params, params);
        assert_eq!(got_weights, weights);
        assert!(got_weights.contains_key("model.layers.0.self_attn.q_proj.bias"));
        assert!(tok.get_vocab_size(true) <= params.vocab_size);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sharded_checkpoint_round_trips() {
        let dir = temp_dir("sharded");
        let params = tiny_params();
        let weights = tiny_weights(&params);
        std::fs::write(dir.join("config.json"), config_json()).unwrap();
        let names: Vec<&String> = weights.keys().collect();
        let (first, second) = names.split_at(names.len() / 2);
        let shard_names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
        write_safetensors(&dir.join(shard_names[0]), &weights, first);
        write_safetensors(&dir.join(shard_names[1]), &weights, second);
        let weight_map: BTreeMap<&String, &str> =
            first.iter().map(|n| (*n, shard_names[0])).chain(second.iter().map(|n| (*n, shard_names[1]))).collect();
        let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
        std::fs::write(dir.join(INDEX_FILE), index.to_string()).unwrap();
        write_tokenizer(&dir);

        let (_, got_weights, _) = load_hf_checkpoint(&dir).unwrap();
        assert_eq!(got_weights, weights);

        // A tensor the index promises but no shard holds is named, with its shard.
        let mut bad_map = weight_map.clone();
        let ghost = "model.layers.0.ghost.weight".to_string();
        bad_map.insert(&ghost, shard_names[1]);
        let index = serde_json::json!({ "weight_map": bad_map });
        std::fs::write(dir.join(INDEX_FILE), index.to_string()).unwrap();
        let err = load_hf_weights(&dir).unwrap_err().to_string();
        assert!(err.contains("ghost") && err.contains(shard_names[1]), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncated_safetensors_names_the_file() {
        let dir = temp_dir("truncated");
        let params = tiny_params();
        let weights = tiny_weights(&params);
        let path = dir.join(SINGLE_FILE);
        write_safetensors(&path, &weights, &weights.keys().collect::<Vec<_>>());
        let bytes = std::fs::read(&path).unwrap();
        for cut in [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = load_safetensors(&path).unwrap_err().to_string();
            assert!(err.contains(SINGLE_FILE), "cut {cut}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_tensor_and_bad_config_are_reported() {
        let dir = temp_dir("bad");
        let params = tiny_params();
        let weights = tiny_weights(&params);
        std::fs::write(dir.join("config.json"), config_json()).unwrap();
        let names: Vec<&String> =
            weights.keys().filter(|n| n.as_str() != "model.layers.0.mlp.up_proj.weight").collect();
        write_safetensors(&dir.join(SINGLE_FILE), &weights, &names);
        write_tokenizer(&dir);
        let err = load_hf_checkpoint(&dir).unwrap_err().to_string();
        assert!(err.contains("model.layers.0.mlp.up_proj.weight") && err.contains("missing"), "{err}");

        let config = dir.join("config.json");
        std::fs::write(&config, config_json().replace("Qwen2ForCausalLM", "GPT2LMHeadModel")).unwrap();
        let err = read_config(&config).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("GPT2LMHeadModel"), "{err}");
        std::fs::write(&config, r#"{"hidden_size": 8"#).unwrap();
        assert!(read_config(&config).unwrap_err().to_string().contains("config.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

impl From<&LlamaParams> for LlamaConfig {
    fn from(p: &LlamaParams) -> Self {
        Self {
            vocab_size: p.vocab_size,
            hidden_size: p.hidden_size,
            intermediate_size: p.intermediate_size,
            n_layers: p.n_layers,
            n_heads: p.n_heads,
            n_kv_heads: p.n_kv_heads,
            head_dim: p.head_dim(),
            rope_theta: p.rope_theta as f64,
            rms_eps: p.rms_eps as f64,
            max_seq_len: p.context_length,
            tie_embeddings: p.tied_embeddings,
            attention_bias: false,
        }
    }
}
