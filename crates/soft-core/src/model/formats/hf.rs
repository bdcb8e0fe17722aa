//! Hugging Face checkpoint directories of the Llama family (Llama, Mistral, Qwen2): `config.json`,
//! `model.safetensors` (or sharded with `model.safetensors.index.json`), `tokenizer.json` and
//! `tokenizer_config.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use safetensors::SafeTensors;
use serde::Deserialize;
use serde_json::{Map, Value};
use tokenizers::Tokenizer;

use crate::model::config::{implied_head_dim, LlamaConfig, RopeScaling, RopeSetting};
use crate::model::formats::tokenizer::{check_vocab_fits, load_tokenizer, tokenizer_from_bytes, SpecialIds};
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
    /// The rotary settings, in either spelling: see [`rope_setting`].
    #[serde(flatten)]
    rope: HfRope,
    #[serde(default = "default_rms_eps")]
    rms_norm_eps: f64,
    vocab_size: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
    max_position_embeddings: usize,
    /// Only accepted when it equals hidden_size / heads: the model derives the head size.
    head_dim: Option<usize>,
    bos_token_id: Option<TokenIds>,
    eos_token_id: Option<TokenIds>,
    /// Keys that change the math where set otherwise than this model computes it: refused then
    /// (see [`refuse_unimplemented`]).
    hidden_act: Option<String>,
    mlp_bias: Option<bool>,
    use_sliding_window: Option<bool>,
    sliding_window: Option<Value>,
}

/// Refuses settings this model does not compute, naming the key: an activation other than SiLU,
/// MLP biases, and sliding-window attention whose window is shorter than the context (Qwen2's
/// `use_sliding_window`, Mistral's `sliding_window`; a window as long as the context changes
/// nothing).
fn refuse_unimplemented(config: &HfConfig, path: &Path) -> Result<()> {
    let bad = |msg: String| Err(Error::format(path, msg));
    if let Some(act) = config.hidden_act.as_deref().filter(|a| *a != "silu") {
        return bad(format!("hidden_act {act:?} is not supported (only \"silu\")"));
    }
    if config.mlp_bias == Some(true) {
        return bad("mlp_bias = true is not supported".into());
    }
    let mistral = config.architectures.iter().any(|a| a == "MistralForCausalLM");
    let window = config.sliding_window.as_ref().filter(|w| !w.is_null());
    if config.use_sliding_window == Some(true) || (mistral && window.is_some()) {
        match window.and_then(Value::as_u64) {
            Some(w) if w as usize >= config.max_position_embeddings => {}
            Some(w) => {
                return bad(format!(
                    "sliding_window {w} (shorter than max_position_embeddings {}) is not supported",
                    config.max_position_embeddings
                ))
            }
            None => return bad("use_sliding_window = true without a numeric sliding_window".into()),
        }
    }
    Ok(())
}

/// The keys of `config.json` that carry rotary settings. Values are kept as JSON so that a
/// wrong type is reported with the key's name; `null` counts as absent (as transformers reads it).
#[derive(Deserialize, Default)]
struct HfRope {
    /// Older spelling (transformers 4, the published Llama 3.x configs): a top-level base...
    rope_theta: Option<Value>,
    /// ... and a scaling dict `{rope_type (or type), factor, ...}`.
    rope_scaling: Option<Map<String, Value>>,
    /// transformers 5's spelling: one dict `{rope_theta, rope_type, factor, ...}`.
    rope_parameters: Option<Map<String, Value>>,
    /// Top-level keys transformers merges into the rotary settings.
    partial_rotary_factor: Option<Value>,
    original_max_position_embeddings: Option<Value>,
}

/// Base of the rotary frequencies when a `config.json` names no rotary setting at all: the
/// default of transformers' `LlamaConfig`, `MistralConfig` and `Qwen2Config` (and of its
/// `RotaryEmbeddingConfigMixin.default_theta`).
pub const DEFAULT_ROPE_THETA: f64 = 10_000.0;

/// The `rope_type`s implemented (see [`RopeScaling`]).
const ROPE_TYPES: [&str; 2] = ["default", "llama3"];

/// The rotary settings of a `config.json` (`path` names it in errors), read from both spellings:
/// transformers 5's `rope_parameters` dict and the older top-level `rope_theta` + `rope_scaling`
/// dict (`type` is read as `rope_type`, as transformers does). Decided conservatively, so that a
/// file is either read as transformers reads it or refused, never run with a silent default:
/// - a key given in both spellings must agree (numbers compared as numbers), or both are named
///   in the error (transformers would let `rope_scaling` replace `rope_parameters` whole);
/// - `rope_type` absent or `"default"` is the plain embedding, `"llama3"` is Llama 3's scaling
///   ([`RopeScaling::Llama3`]); any other (`linear`, `dynamic`, `yarn`, `longrope`,
///   `proportional`, ...) is refused, naming the field;
/// - `llama3` needs all four of `factor`, `low_freq_factor`, `high_freq_factor` and
///   `original_max_position_embeddings` (transformers would fill a missing
///   `original_max_position_embeddings` from `max_position_embeddings`: refused here instead);
/// - `partial_rotary_factor` (in either dict or at the top level) is accepted only as 1 (the
///   whole head rotates); any other key in the dicts (e.g. `factor` with `rope_type` default,
///   `mscale`, `beta_fast`, a per-layer-type dict) is refused, since it changes the math for
///   some `rope_type` or is not understood, and so is a top-level
///   `original_max_position_embeddings` (transformers lets it override the dict's for some
///   models);
/// - the base is `rope_theta` from either spelling; only a file with no rotary setting at all
///   gets [`DEFAULT_ROPE_THETA`], as transformers gives it. A rotary dict without a
///   `rope_theta` anywhere is refused.
fn rope_setting(rope: &HfRope, path: &Path) -> Result<RopeSetting> {
    let bad = |msg: String| Error::format(path, msg);
    if let Some(value) = rope.original_max_position_embeddings.as_ref().filter(|v| !v.is_null()) {
        // transformers lets it override the rotary dict's for some models (Phi-3).
        return Err(bad(format!(
            "a top-level `original_max_position_embeddings` ({value}) is not supported: give it inside \
             `rope_parameters` or `rope_scaling`"
        )));
    }
    // Every key, under transformers' name, with its value and where it was found.
    let mut keys: BTreeMap<&str, (&Value, String)> = BTreeMap::new();
    let mut sources: Vec<(&str, &Value, String)> = Vec::new();
    let top = [("rope_theta", &rope.rope_theta), ("partial_rotary_factor", &rope.partial_rotary_factor)];
    sources.extend(top.iter().filter_map(|(key, v)| v.as_ref().map(|v| (*key, v, key.to_string()))));
    for (dict, name) in [(&rope.rope_scaling, "rope_scaling"), (&rope.rope_parameters, "rope_parameters")] {
        for (key, value) in dict.iter().flatten() {
            let canonical = if key == "type" { "rope_type" } else { key.as_str() };
            sources.push((canonical, value, format!("{name}.{key}")));
        }
    }
    for (key, value, source) in sources.into_iter().filter(|(_, v, _)| !v.is_null()) {
        match keys.get(key) {
            Some((seen, seen_source)) if !same_json(seen, value) => {
                return Err(bad(format!("`{source}` ({value}) disagrees with `{seen_source}` ({seen})")));
            }
            Some(_) => {}
            None => {
                keys.insert(key, (value, source));
            }
        }
    }
    let number = |key: &str| -> Result<Option<(f64, &String)>> {
        match keys.get(key) {
            None => Ok(None),
            Some((value, source)) => match value.as_f64() {
                Some(v) if v.is_finite() && v > 0.0 => Ok(Some((v, source))),
                _ => Err(bad(format!("`{source}` must be a positive number, got {value}"))),
            },
        }
    };
    let (rope_type, type_source) = match keys.get("rope_type") {
        None => ("default", None),
        Some((Value::String(t), source)) => (t.as_str(), Some(source.as_str())),
        Some((value, source)) => return Err(bad(format!("`{source}` must be a string, got {value}"))),
    };
    let scaled_keys: &[&str] = match rope_type {
        "default" => &[],
        "llama3" => &["factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"],
        other => {
            return Err(bad(format!(
                "`{}` = \"{other}\" is not supported (supported: {}): running the model without that \
                 rotary scaling would compute a different model",
                type_source.unwrap_or("rope_type"),
                ROPE_TYPES.join(", ")
            )))
        }
    };
    for (key, (value, source)) in &keys {
        if !["rope_type", "rope_theta", "partial_rotary_factor"].contains(key) && !scaled_keys.contains(key) {
            return Err(bad(format!(
                "`{source}` ({value}) is not understood with rope_type \"{rope_type}\": the rotary embedding \
                 implemented here would ignore it"
            )));
        }
    }
    if let Some((factor, source)) = number("partial_rotary_factor")? {
        if factor != 1.0 {
            return Err(bad(format!("`{source}` = {factor} is not supported: only whole heads rotate (1.0)")));
        }
    }
    let theta = match number("rope_theta")? {
        Some((theta, _)) => theta,
        None if keys.is_empty() => DEFAULT_ROPE_THETA,
        None => {
            let dict = if rope.rope_parameters.is_some() { "rope_parameters" } else { "rope_scaling" };
            return Err(bad(format!(
                "rotary settings (`{dict}`) without a `rope_theta` (in `rope_parameters` or at the top level)"
            )));
        }
    };
    let scaling = match rope_type {
        "llama3" => {
            let dict = type_source.and_then(|s| s.split('.').next()).unwrap_or("rope_parameters");
            let need = |key: &str| match number(key)? {
                Some((v, _)) => Ok(v),
                None => Err(bad(format!("`{dict}` (rope_type \"llama3\") has no `{key}`"))),
            };
            let original = need("original_max_position_embeddings")?;
            if original.fract() != 0.0 {
                let source = &keys["original_max_position_embeddings"].1;
                return Err(bad(format!("`{source}` must be an integer, got {original}")));
            }
            RopeScaling::Llama3 {
                factor: need("factor")?,
                low_freq_factor: need("low_freq_factor")?,
                high_freq_factor: need("high_freq_factor")?,
                original_max_position_embeddings: original as usize,
            }
        }
        _ => RopeScaling::None,
    };
    Ok(RopeSetting { theta, scaling })
}

/// Equal JSON values, numbers compared by value (`32` = `32.0`).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// The rotary keys of a `config.json` for `rope`, in the older spelling (top-level `rope_theta`
/// and `rope_scaling`, `null` when unscaled) that transformers 4 and 5 both read, as
/// [`read_config`] reads them back.
pub fn rope_config_fields(rope: &RopeSetting) -> Map<String, Value> {
    let scaling = match rope.scaling {
        RopeScaling::None => Value::Null,
        scaling => serde_json::to_value(scaling).expect("a rope scaling serializes"),
    };
    Map::from_iter([("rope_theta".to_string(), Value::from(rope.theta)), ("rope_scaling".to_string(), scaling)])
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
    refuse_unimplemented(&config, path)?;
    let rope = rope_setting(&config.rope, path)?;
    let head_dim = implied_head_dim(config.hidden_size, config.num_attention_heads, path)?;
    let llama = LlamaConfig {
        vocab_size: config.vocab_size,
        hidden_size: config.hidden_size,
        intermediate_size: config.intermediate_size,
        n_layers: config.num_hidden_layers,
        n_heads: config.num_attention_heads,
        n_kv_heads: config.num_key_value_heads.unwrap_or(config.num_attention_heads),
        head_dim,
        rope_theta: rope.theta,
        rope_scaling: rope.scaling,
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
    use crate::model::formats::tokenizer::{save_tokenizer, train_bpe};
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
            rope_scaling: RopeScaling::None,
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

    /// A Llama config.json with `rope` (a JSON object's members) in place of any rotary key.
    fn llama_json(rope: Value) -> Vec<u8> {
        let mut config = serde_json::json!({
            "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
            "rms_norm_eps": 1e-5, "vocab_size": 300, "tie_word_embeddings": true,
            "max_position_embeddings": 131072
        });
        config.as_object_mut().unwrap().extend(rope.as_object().unwrap().clone());
        serde_json::to_vec(&config).unwrap()
    }

    fn rope_of(rope: Value) -> Result<RopeSetting> {
        config_from_bytes(&llama_json(rope), Path::new("ckpt/config.json")).map(|c| c.rope())
    }

    fn rope_error(rope: Value) -> String {
        rope_of(rope).unwrap_err().to_string()
    }

    #[test]
    fn transformers5_rope_parameters_are_read() {
        use serde_json::json;
        // SmolLM2 and Qwen2.5 as transformers 5 writes them: no top-level rope_theta.
        for theta in [100_000.0, 1e6] {
            let rope = json!({"rope_parameters": {"rope_theta": theta, "rope_type": "default"}});
            assert_eq!(rope_of(rope).unwrap(), RopeSetting::plain(theta));
        }
        // Llama-3.2 as transformers 5 writes it.
        let rope = json!({"rope_parameters": {
            "factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_theta": 500000.0, "rope_type": "llama3"}});
        assert_eq!(rope_of(rope).unwrap(), RopeSetting { theta: 500_000.0, scaling: RopeScaling::llama32() });
        // partial_rotary_factor 1 rotates the whole head: the same model.
        let rope = json!({"rope_parameters": {"rope_theta": 1e6, "partial_rotary_factor": 1.0}});
        assert_eq!(rope_of(rope).unwrap(), RopeSetting::plain(1e6));
    }

    #[test]
    fn older_top_level_spelling_is_read() {
        use serde_json::json;
        // The published Llama-3.2 config.json.
        let rope = json!({"rope_theta": 500000.0, "rope_scaling": {
            "factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"}});
        assert_eq!(rope_of(rope).unwrap(), RopeSetting { theta: 500_000.0, scaling: RopeScaling::llama32() });
        // `type`, the older name of `rope_type`; integers where floats are usual.
        let rope = json!({"rope_theta": 500000, "rope_scaling": {
            "factor": 32, "high_freq_factor": 4, "low_freq_factor": 1,
            "original_max_position_embeddings": 8192, "type": "llama3"}});
        assert_eq!(rope_of(rope).unwrap(), RopeSetting { theta: 500_000.0, scaling: RopeScaling::llama32() });
        assert_eq!(rope_of(json!({"rope_theta": 1e6, "rope_scaling": null})).unwrap(), RopeSetting::plain(1e6));
        // Both spellings, agreeing (32 and 32.0 are the same number).
        let rope = json!({"rope_theta": 500000.0,
            "rope_scaling": {"rope_type": "llama3", "factor": 32, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
            "rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3", "factor": 32.0}});
        assert_eq!(rope_of(rope).unwrap(), RopeSetting { theta: 500_000.0, scaling: RopeScaling::llama32() });
        // No rotary key at all: transformers' default base, unscaled.
        assert_eq!(rope_of(json!({})).unwrap(), RopeSetting::plain(DEFAULT_ROPE_THETA));
    }

    #[test]
    fn spellings_that_disagree_are_refused_naming_both() {
        use serde_json::json;
        let err = rope_error(json!({"rope_theta": 10000.0, "rope_parameters": {"rope_theta": 100000.0}}));
        assert!(err.contains("ckpt/config.json") && err.contains("`rope_parameters.rope_theta`"), "{err}");
        assert!(err.contains("`rope_theta`") && err.contains("disagrees"), "{err}");
        let err = rope_error(json!({"rope_theta": 500000.0,
            "rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
            "rope_parameters": {"rope_type": "llama3", "factor": 32.0}}));
        assert!(err.contains("`rope_parameters.factor`") && err.contains("`rope_scaling.factor`"), "{err}");
        let err = rope_error(json!({"rope_theta": 1e6, "rope_scaling": {"type": "default", "rope_type": "llama3"}}));
        assert!(err.contains("`rope_scaling.rope_type`") && err.contains("`rope_scaling.type`"), "{err}");
    }

    #[test]
    fn settings_the_model_does_not_compute_are_refused_naming_the_key() {
        use serde_json::json;
        let read = |extra: Value| config_from_bytes(&llama_json(extra), Path::new("ckpt/config.json"));
        for (extra, key) in [
            (json!({"hidden_act": "gelu"}), "hidden_act"),
            (json!({"mlp_bias": true}), "mlp_bias"),
            (json!({"use_sliding_window": true, "sliding_window": 4096}), "sliding_window 4096"),
            (json!({"use_sliding_window": true, "sliding_window": null}), "use_sliding_window"),
        ] {
            let err = read(extra.clone()).unwrap_err().to_string();
            assert!(err.contains("ckpt/config.json") && err.contains(key), "{extra}: {err}");
        }
        // What the published configs carry, and a window as long as the context, are fine.
        for fine in [
            json!({"hidden_act": "silu", "mlp_bias": false}),
            json!({"use_sliding_window": false, "sliding_window": 4096}),
            json!({"use_sliding_window": true, "sliding_window": 131072}),
        ] {
            read(fine.clone()).unwrap_or_else(|e| panic!("{fine}: {e}"));
        }
    }

    #[test]
    fn unimplemented_rope_types_are_refused_naming_the_field() {
        use serde_json::json;
        for (rope_type, field) in [
            ("linear", "rope_scaling.rope_type"),
            ("dynamic", "rope_scaling.type"),
            ("yarn", "rope_parameters.rope_type"),
        ] {
            let dict = json!({field.split('.').nth(1).unwrap(): rope_type, "factor": 2.0});
            let rope = json!({"rope_theta": 1e4, (field.split('.').next().unwrap()): dict});
            let err = rope_error(rope);
            assert!(err.contains("ckpt/config.json") && err.contains(&format!("`{field}`")), "{err}");
            assert!(err.contains(rope_type) && err.contains("not supported"), "{err}");
        }
        let err = rope_error(json!({"rope_parameters": {"rope_theta": 1e4, "rope_type": "longrope"}}));
        assert!(err.contains("`rope_parameters.rope_type`") && err.contains("longrope"), "{err}");
        let err = rope_error(json!({"rope_parameters": {"rope_theta": 1e4, "rope_type": 3}}));
        assert!(err.contains("`rope_parameters.rope_type` must be a string"), "{err}");
    }

    #[test]
    fn rope_keys_that_change_the_math_are_refused() {
        use serde_json::json;
        let llama3 = |extra: (&str, Value)| {
            let mut dict = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
            dict.as_object_mut().unwrap().insert(extra.0.into(), extra.1);
            json!({ "rope_parameters": dict })
        };
        // An unknown key in the dict, one the default type ignores, a partial rotation.
        let err = rope_error(llama3(("mscale", json!(1.2))));
        assert!(err.contains("ckpt/config.json") && err.contains("`rope_parameters.mscale`"), "{err}");
        let err = rope_error(json!({"rope_theta": 1e4, "rope_scaling": {"rope_type": "default", "factor": 4.0}}));
        assert!(err.contains("`rope_scaling.factor`") && err.contains("not understood"), "{err}");
        let err = rope_error(llama3(("partial_rotary_factor", json!(0.5))));
        assert!(err.contains("`rope_parameters.partial_rotary_factor`"), "{err}");
        let err = rope_error(json!({"rope_theta": 1e4, "partial_rotary_factor": 0.25}));
        assert!(err.contains("`partial_rotary_factor`"), "{err}");
        let err = rope_error(json!({"rope_theta": 1e4, "original_max_position_embeddings": 4096}));
        assert!(err.contains("`original_max_position_embeddings`"), "{err}");
        // A per-layer-type dict (Gemma's form) is not a flat one.
        let err = rope_error(json!({"rope_parameters": {"full_attention": {"rope_theta": 1e4}}}));
        assert!(err.contains("`rope_parameters.full_attention`"), "{err}");
        // llama3 without one of its parameters, with a bad value, with a fractional context.
        let mut dict = llama3(("rope_type", json!("llama3")));
        dict["rope_parameters"].as_object_mut().unwrap().remove("low_freq_factor");
        let err = rope_error(dict);
        assert!(err.contains("`rope_parameters`") && err.contains("`low_freq_factor`"), "{err}");
        let err = rope_error(llama3(("factor", json!(0.0))));
        assert!(err.contains("`rope_parameters.factor` must be a positive number"), "{err}");
        let err = rope_error(llama3(("original_max_position_embeddings", json!(8192.5))));
        assert!(err.contains("`rope_parameters.original_max_position_embeddings` must be an integer"), "{err}");
        let err = rope_error(llama3(("high_freq_factor", json!(0.5))));
        assert!(err.contains("high_freq_factor") && err.contains("low_freq_factor"), "{err}");
        // Rotary settings without a base: no silent default.
        let err = rope_error(json!({"rope_parameters": {"rope_type": "default"}}));
        assert!(err.contains("rope_theta"), "{err}");
        let err = rope_error(json!({"rope_theta": "1e4"}));
        assert!(err.contains("`rope_theta` must be a positive number"), "{err}");
    }

    #[test]
    fn rope_config_fields_read_back() {
        for rope in [RopeSetting::plain(1e6), RopeSetting { theta: 500_000.0, scaling: RopeScaling::llama32() }] {
            let fields = Value::Object(rope_config_fields(&rope));
            assert_eq!(rope_of(fields).unwrap(), rope);
        }
    }

    /// The check against transformers itself, by hand (bench/HF_ROPE_CHECK.md):
    /// `bench/hf_rope_check.py --out DIR` writes checkpoints and HF's logits under DIR, then
    /// `SOFT_HF_ROPE_CHECK=DIR cargo test --release -p soft-core --lib hf_checkpoints_match_transformers -- --ignored --nocapture`.
    #[test]
    #[ignore = "needs checkpoints written by bench/hf_rope_check.py (SOFT_HF_ROPE_CHECK=DIR)"]
    fn hf_checkpoints_match_transformers() {
        use crate::model::llama::Llama;
        use burn::tensor::{Device, Int, Tensor, TensorData};

        #[derive(Deserialize)]
        struct Reference {
            prompt: Vec<u32>,
            /// `[prompt, vocab]`: HF's logits at every prompt position.
            logits: Vec<Vec<f32>>,
            /// HF's greedy continuation, and its last-position logits at each step.
            greedy: Vec<u32>,
            greedy_logits: Vec<Vec<f32>>,
        }
        let root = PathBuf::from(std::env::var("SOFT_HF_ROPE_CHECK").expect("SOFT_HF_ROPE_CHECK=DIR"));
        let device = Device::flex();
        let forward = |model: &Llama, ids: &[u32]| -> Vec<Vec<f32>> {
            let t = ids.len();
            let tokens = Tensor::<2, Int>::from_data(
                TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [1, t]),
                &device,
            );
            let logits = model.forward(tokens, Tensor::ones([1, t], &device), None);
            let v = logits.dims()[2];
            let flat = logits.reshape([t * v]).try_into_vec_as::<f32>().unwrap();
            flat.chunks(v).map(|row| row.to_vec()).collect()
        };
        let max_diff = |a: &[Vec<f32>], b: &[Vec<f32>]| -> f32 {
            assert_eq!(a.len(), b.len());
            a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs())).fold(0.0, f32::max)
        };
        let argmax = |row: &[f32]| {
            row.iter().enumerate().fold((0, f32::MIN), |m, (i, &x)| if x > m.1 { (i, x) } else { m }).0 as u32
        };
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("reference.json").exists())
            .collect();
        dirs.sort();
        assert!(!dirs.is_empty(), "no checkpoint with reference.json under {}", root.display());
        for dir in dirs {
            let reference: Reference =
                serde_json::from_slice(&std::fs::read(dir.join("reference.json")).unwrap()).unwrap();
            let (config, weights, _) = load_hf_checkpoint(&dir).unwrap();
            let model = Llama::from_weights(&config, &weights, &device).unwrap();
            let prompt_diff = max_diff(&forward(&model, &reference.prompt), &reference.logits);
            let (mut ids, mut greedy, mut step_logits) = (reference.prompt.clone(), Vec::new(), Vec::new());
            for _ in 0..reference.greedy.len() {
                let last = forward(&model, &ids).pop().unwrap();
                let next = argmax(&last);
                step_logits.push(last);
                greedy.push(next);
                ids.push(next);
            }
            let greedy_diff = max_diff(&step_logits, &reference.greedy_logits);
            // The same weights under other rotary settings, to show the check sees them: the
            // scaling dropped, and what the loader read before (theta 10,000, unscaled).
            let diff_under = |rope_theta: f64, rope_scaling: RopeScaling| {
                let other = LlamaConfig { rope_theta, rope_scaling, ..config.clone() };
                let model = Llama::from_weights(&other, &weights, &device).unwrap();
                max_diff(&forward(&model, &reference.prompt), &reference.logits)
            };
            let unscaled = (config.rope_scaling != RopeScaling::None)
                .then(|| format!("{:.3}", diff_under(config.rope_theta, RopeScaling::None)));
            let old_loader = diff_under(DEFAULT_ROPE_THETA, RopeScaling::None);
            println!(
                "{}: {:?}\n  max |logit diff| vs transformers: prompt positions {prompt_diff:.2e}, greedy steps \
                 {greedy_diff:.2e}; greedy ids identical: {} ({} tokens: {greedy:?})\n  for scale: scaling \
                 dropped {}, theta 10000 unscaled {old_loader:.3}",
                dir.file_name().unwrap().to_string_lossy(),
                config.rope(),
                greedy == reference.greedy,
                greedy.len(),
                unscaled.as_deref().unwrap_or("-"),
            );
            assert!(prompt_diff <= 1e-4 && greedy_diff <= 1e-4, "{}: logits differ", dir.display());
            assert_eq!(greedy, reference.greedy, "{}: greedy ids differ", dir.display());
        }
    }
}
