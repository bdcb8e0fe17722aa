//! Hugging Face checkpoint directories of the Llama family (Llama, Mistral, Qwen2): `config.json`,
//! `model.safetensors` (or sharded with `model.safetensors.index.json`), `tokenizer.json` and
//! `tokenizer_config.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use safetensors::SafeTensors;
use serde::Deserialize;
use tokenizers::Tokenizer;

use crate::model::config::{implied_head_dim, LlamaConfig};
use crate::model::tokenizer::{check_vocab_fits, load_tokenizer, tokenizer_from_bytes, SpecialIds};
use crate::model::weights::{check_weights, safetensors_f32, RawTensor, WeightMap};
use crate::{Error, Result};

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
    rope_theta: f64,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    vocab_size: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    max_position_embeddings: usize,
    /// Only accepted when it equals hidden_size / heads: the model derives the head size.
    head_dim: Option<usize>,
    /// Scaled RoPE (Llama 3.1 and later) is not implemented: refuse rather than run it unscaled.
    rope_scaling: Option<serde_json::Value>,
    bos_token_id: Option<TokenIds>,
    eos_token_id: Option<TokenIds>,
}

fn default_rope_theta() -> f64 {
    10_000.0
}

fn default_rms_eps() -> f64 {
    1e-6
}

/// A special token's id, or a list of ids whose first is the main one; anything else is taken
/// as absent.
#[derive(Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(u32),
    List(Vec<u32>),
    Other(serde::de::IgnoredAny),
}

impl TokenIds {
    fn first(&self) -> Option<u32> {
        match self {
            TokenIds::One(id) => Some(*id),
            TokenIds::List(ids) => ids.first().copied(),
            TokenIds::Other(_) => None,
        }
    }
}

fn parse_config(path: &Path) -> Result<HfConfig> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(path, e))
}

/// Reads the hyper-parameters from a `config.json`. Whether Q/K/V carry biases is not in it:
/// [`load_hf_checkpoint`] sees it in the weights.
pub fn read_config(path: &Path) -> Result<LlamaConfig> {
    llama_config(parse_config(path)?, path)
}

/// [`read_config`] from the file's bytes; `path` names it in errors.
pub fn config_from_bytes(bytes: &[u8], path: &Path) -> Result<LlamaConfig> {
    llama_config(serde_json::from_slice(bytes).map_err(|e| Error::json(path, e))?, path)
}

fn llama_config(config: HfConfig, path: &Path) -> Result<LlamaConfig> {
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
    let head_dim = implied_head_dim(config.hidden_size, config.num_attention_heads, path)?;
    let llama = LlamaConfig {
        vocab_size: config.vocab_size,
        hidden_size: config.hidden_size,
        intermediate_size: config.intermediate_size,
        n_layers: config.num_hidden_layers,
        n_heads: config.num_attention_heads,
        n_kv_heads: config.num_key_value_heads.unwrap_or(config.num_attention_heads),
        head_dim,
        rope_theta: config.rope_theta,
        rms_eps: config.rms_norm_eps,
        max_seq_len: config.max_position_embeddings,
        tie_embeddings: config.tie_word_embeddings,
        attention_bias: false,
    };
    llama.validate_file(path)?;
    if let Some(stated) = config.head_dim.filter(|&d| d != head_dim) {
        return Err(Error::format(
            path,
            format!("head_dim {stated} differs from hidden_size / num_attention_heads = {head_dim}"),
        ));
    }
    Ok(llama)
}

/// The special token ids of a checkpoint directory: BOS and EOS from `config.json` (EOS pads),
/// and whether prompts start with BOS from `tokenizer_config.json` (no when it cannot be read).
pub fn read_special_ids(dir: &Path) -> Result<SpecialIds> {
    let path = dir.join(CONFIG_FILE);
    let config = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let tokenizer_config = std::fs::read(dir.join(TOKENIZER_CONFIG_FILE)).ok();
    special_ids_from_bytes(&config, tokenizer_config.as_deref(), &path)
}

/// [`read_special_ids`] from the bytes of `config.json` (named `path` in errors) and of
/// `tokenizer_config.json`, if there is one.
pub fn special_ids_from_bytes(config: &[u8], tokenizer_config: Option<&[u8]>, path: &Path) -> Result<SpecialIds> {
    let config: HfConfig = serde_json::from_slice(config).map_err(|e| Error::json(path, e))?;
    let eos =
        config.eos_token_id.and_then(|ids| ids.first()).ok_or_else(|| Error::format(path, "missing eos_token_id"))?;
    #[derive(Deserialize)]
    struct TokenizerConfig {
        add_bos_token: Option<bool>,
    }
    let add_bos = tokenizer_config
        .and_then(|bytes| serde_json::from_slice::<TokenizerConfig>(bytes).ok())
        .and_then(|c| c.add_bos_token)
        .unwrap_or(false);
    Ok(SpecialIds { bos: config.bos_token_id.and_then(|ids| ids.first()), eos, pad: eos, add_bos })
}

/// Reads every tensor of one `.safetensors` file, converted to f32.
pub fn load_safetensors(path: &Path) -> Result<WeightMap> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    safetensors_from_bytes(&bytes, path)
}

/// [`load_safetensors`] from the file's bytes; `path` names it in errors.
pub fn safetensors_from_bytes(bytes: &[u8], path: &Path) -> Result<WeightMap> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| Error::safetensors(path, e))?;
    file.iter()
        .map(|(name, view)| {
            let data = safetensors_f32(&view, path, name)?;
            Ok((name.to_string(), RawTensor::new(view.shape().to_vec(), data)))
        })
        .collect()
}

/// The `weight_map` of a sharded checkpoint's index: tensor name -> shard file name.
#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const SINGLE_FILE: &str = "model.safetensors";
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
    let index: ShardIndex = serde_json::from_str(&text).map_err(|e| Error::json(&index_path, e))?;
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
/// checkpoint that still stores `lm_head.weight` has it dropped; Q/K/V biases, Qwen2's, are
/// used when present) and `tokenizer.json` (checked to fit the embedding).
pub fn load_hf_checkpoint(dir: &Path) -> Result<(LlamaConfig, WeightMap, Tokenizer)> {
    let config = read_config(&dir.join(CONFIG_FILE))?;
    let weights = load_hf_weights(dir)?;
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    let tokenizer = load_tokenizer(&tokenizer_path)?;
    checked_checkpoint(config, weights, tokenizer, dir)
}

/// A single-file checkpoint already in memory (the page fetches its files): the bytes of
/// `config.json`, `model.safetensors` and `tokenizer.json`, checked as [`load_hf_checkpoint`]
/// checks a directory; `dir` is where they came from, named in errors.
pub fn checkpoint_from_bytes(
    config: &[u8],
    weights: &[u8],
    tokenizer: &[u8],
    dir: &Path,
) -> Result<(LlamaConfig, WeightMap, Tokenizer)> {
    let config = config_from_bytes(config, &dir.join(CONFIG_FILE))?;
    let weights = safetensors_from_bytes(weights, &dir.join(SINGLE_FILE))?;
    let tokenizer = tokenizer_from_bytes(tokenizer, &dir.join(TOKENIZER_FILE))?;
    checked_checkpoint(config, weights, tokenizer, dir)
}

/// Drops a tied checkpoint's stored `lm_head.weight`, sees Q/K/V biases in the weights, and
/// checks the weights against the config and the tokenizer against the embedding.
fn checked_checkpoint(
    mut config: LlamaConfig,
    mut weights: WeightMap,
    tokenizer: Tokenizer,
    dir: &Path,
) -> Result<(LlamaConfig, WeightMap, Tokenizer)> {
    if config.tie_embeddings {
        weights.remove("lm_head.weight");
    }
    config.attention_bias = weights.contains_key("model.layers.0.self_attn.q_proj.bias");
    // A missing or misshapen tensor is named with the file that should hold it (bytes fetched by
    // the page always come from the single file).
    let index = dir.join(INDEX_FILE);
    check_weights(&config, &weights, &if index.exists() { index } else { dir.join(SINGLE_FILE) })?;
    check_vocab_fits(&tokenizer, config.vocab_size, &dir.join(TOKENIZER_FILE))?;
    Ok((config, weights, tokenizer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tokenizer::{save_tokenizer, train_bpe};
    use crate::model::weights::{expected_shapes, FloatEncoding};
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    use std::path::PathBuf;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("soft-hf-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A 1-layer Qwen2-style model: hidden 8, 2 heads, 1 KV head, FFN 12, vocab 300, Q/K/V biases.
    fn tiny_config() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 300,
            hidden_size: 8,
            intermediate_size: 12,
            n_layers: 1,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 4,
            rope_theta: 1_000_000.0,
            rms_eps: 1e-6,
            max_seq_len: 64,
            tie_embeddings: true,
            attention_bias: true,
        }
    }

    fn config_json() -> &'static str {
        r#"{"architectures": ["Qwen2ForCausalLM"], "hidden_size": 8, "intermediate_size": 12,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "vocab_size": 300,
            "tie_word_embeddings": true, "max_position_embeddings": 64, "rope_scaling": null}"#
    }

    /// Deterministic weights with values exact in f16 and bf16.
    fn tiny_weights() -> WeightMap {
        expected_shapes(&tiny_config())
            .into_iter()
            .enumerate()
            .map(|(t, (name, shape))| {
                let n: usize = shape.iter().product();
                let data = (0..n).map(|i| ((i + t) % 17) as f32 * 0.125 - 1.0).collect();
                (name, RawTensor::new(shape, data))
            })
            .collect()
    }

    /// Writes `names` of `weights` to `path`, cycling through the three float dtypes.
    fn write_safetensors(path: &Path, weights: &WeightMap, names: &[&String]) {
        let encodings =
            [(Dtype::F32, FloatEncoding::F32), (Dtype::F16, FloatEncoding::F16), (Dtype::BF16, FloatEncoding::BF16)];
        let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let t = &weights[*name];
                let (dtype, encoding) = encodings[i % 3];
                ((*name).clone(), dtype, t.shape.clone(), encoding.encode(&t.data))
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, dtype, shape, data)| (name.clone(), TensorView::new(*dtype, shape.clone(), data).unwrap()));
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    }

    /// A checkpoint directory with `config.json`, `tokenizer.json` and the weights for which
    /// `keep` holds in `model.safetensors`.
    fn checkpoint(name: &str, keep: impl Fn(&str) -> bool) -> (PathBuf, WeightMap) {
        let dir = temp_dir(name);
        let weights = tiny_weights();
        std::fs::write(dir.join(CONFIG_FILE), config_json()).unwrap();
        let names: Vec<&String> = weights.keys().filter(|n| keep(n)).collect();
        write_safetensors(&dir.join(SINGLE_FILE), &weights, &names);
        let texts: Vec<String> = (0..50).map(|i| format!("item title number {i}")).collect();
        let tok = train_bpe(&texts, 300, &[]).unwrap();
        save_tokenizer(&tok, &dir.join("tokenizer.json")).unwrap();
        (dir, weights)
    }

    #[test]
    fn single_file_checkpoint_round_trips() {
        let (dir, weights) = checkpoint("single", |_| true);
        let (config, got_weights, tok) = load_hf_checkpoint(&dir).unwrap();
        assert_eq!(config, tiny_config());
        assert_eq!(got_weights, weights);
        assert!(got_weights.contains_key("model.layers.0.self_attn.q_proj.bias"));
        assert!(tok.get_vocab_size(true) <= config.vocab_size);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sharded_checkpoint_round_trips() {
        let (dir, weights) = checkpoint("sharded", |_| true);
        std::fs::remove_file(dir.join(SINGLE_FILE)).unwrap();
        let names: Vec<&String> = weights.keys().collect();
        let (first, second) = names.split_at(names.len() / 2);
        let shard_names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
        write_safetensors(&dir.join(shard_names[0]), &weights, first);
        write_safetensors(&dir.join(shard_names[1]), &weights, second);
        let weight_map: BTreeMap<&String, &str> =
            first.iter().map(|n| (*n, shard_names[0])).chain(second.iter().map(|n| (*n, shard_names[1]))).collect();
        let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
        std::fs::write(dir.join(INDEX_FILE), index.to_string()).unwrap();

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
        let (dir, _) = checkpoint("truncated", |_| true);
        let path = dir.join(SINGLE_FILE);
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
        let (dir, _) = checkpoint("bad", |n| n != "model.layers.0.mlp.up_proj.weight");
        let err = load_hf_checkpoint(&dir).unwrap_err().to_string();
        assert!(err.contains("model.layers.0.mlp.up_proj.weight") && err.contains("missing"), "{err}");

        let config = dir.join(CONFIG_FILE);
        std::fs::write(&config, config_json().replace("Qwen2ForCausalLM", "GPT2LMHeadModel")).unwrap();
        let err = read_config(&config).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("GPT2LMHeadModel"), "{err}");
        std::fs::write(&config, r#"{"hidden_size": 8"#).unwrap();
        assert!(read_config(&config).unwrap_err().to_string().contains("config.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn special_ids_come_from_the_config_and_the_tokenizer_config() {
        let (dir, _) = checkpoint("special", |_| true);
        let err = read_special_ids(&dir).unwrap_err().to_string();
        assert!(err.contains("config.json") && err.contains("eos_token_id"), "{err}");
        let with_ids = |ids: &str| config_json().replace(r#""rope_scaling": null"#, ids);
        std::fs::write(dir.join(CONFIG_FILE), with_ids(r#""bos_token_id": 1, "eos_token_id": [2, 7]"#)).unwrap();
        assert_eq!(read_special_ids(&dir).unwrap(), SpecialIds { bos: Some(1), eos: 2, pad: 2, add_bos: false });
        std::fs::write(dir.join(TOKENIZER_CONFIG_FILE), r#"{"add_bos_token": true}"#).unwrap();
        std::fs::write(dir.join(CONFIG_FILE), with_ids(r#""bos_token_id": null, "eos_token_id": 5"#)).unwrap();
        assert_eq!(read_special_ids(&dir).unwrap(), SpecialIds { bos: None, eos: 5, pad: 5, add_bos: true });
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
