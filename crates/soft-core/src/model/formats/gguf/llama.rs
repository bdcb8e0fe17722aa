//! A Llama in GGUF: its hyper-parameters in the metadata, and llama.cpp's tensor names and Q/K
//! row order mapped to Hugging Face's, so that `load_llama_gguf` gives the HF-named `WeightMap`.

use std::path::Path;

use super::{GgufFile, MetaValue, Metadata};
use crate::model::config::{implied_head_dim, LlamaConfig, PROJECTIONS};
use crate::model::weights::{check_weight_parts, BlockMap, RawTensor, WeightMap};
use crate::{Error, Result};

/// llama.cpp's names of a block's projections, in [`PROJECTIONS`] order.
const GGUF_PROJECTIONS: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

/// GGUF -> HF names of a block's tensors (without `.weight` or `.bias`).
fn layer_tensors() -> impl Iterator<Item = (&'static str, &'static str)> {
    let norms = [("attn_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm")];
    GGUF_PROJECTIONS.into_iter().zip(PROJECTIONS).chain(norms)
}

/// The HF name of a GGUF tensor (weights and biases), or None for tensors the model does not use.
fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let (layer, rest) = gguf.strip_prefix("blk.")?.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (part, suffix) = rest.split_once('.')?;
    let (_, hf) = layer_tensors().find(|(g, _)| *g == part)?;
    matches!(suffix, "weight" | "bias").then(|| format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// llama.cpp's converter reorders each head's Q/K rows from HF's two halves to interleaved
/// pairs (row 2i+j of a head holds HF row j*half+i) so that its RoPE rotates adjacent pairs.
/// The model uses HF's rotate-half RoPE: HF row `r` is the file's row `order[r]`.
fn unpermuted_order(rows: usize, n_heads: usize) -> Option<Vec<usize>> {
    let head_dim = rows / n_heads;
    if rows == 0 || head_dim * n_heads != rows || !head_dim.is_multiple_of(2) {
        return None;
    }
    let half = head_dim / 2;
    Some(
        (0..rows)
            .map(|r| {
                let (head, k) = (r / head_dim, r % head_dim);
                let (j, i) = (k / half, k % half);
                head * head_dim + 2 * i + j
            })
            .collect(),
    )
}

/// `t` with its Q/K rows in HF order (see [`unpermuted_order`]).
fn unpermute_rows(t: &RawTensor, n_heads: usize) -> Option<RawTensor> {
    let order = unpermuted_order(*t.shape.first()?, n_heads)?;
    let cols = t.numel() / order.len();
    let data = order.iter().flat_map(|&i| &t.data[i * cols..(i + 1) * cols]).copied().collect();
    Some(RawTensor::new(t.shape.clone(), data))
}

/// Reads the hyper-parameters of a `general.architecture = llama` file.
pub fn llama_config(file: &GgufFile) -> Result<LlamaConfig> {
    let meta = &file.metadata;
    let arch = meta.str("general.architecture")?.ok_or_else(|| meta.missing("general.architecture"))?;
    if arch != "llama" {
        return Err(meta.invalid("general.architecture", format!("`{arch}` is not supported (llama)")));
    }
    let size = |key: &str| -> Result<usize> {
        let key = format!("llama.{key}");
        let v = meta.u64(&key)?.ok_or_else(|| meta.missing(&key))?;
        usize::try_from(v).map_err(|_| meta.invalid(&key, "too large"))
    };
    let float = |key: &str, default: Option<f64>| -> Result<f64> {
        let key = format!("llama.{key}");
        meta.f64(&key)?.or(default).ok_or_else(|| meta.missing(&key))
    };
    // Llama 3.x's rope scaling lives in GGUF as a frequency-factor tensor (and older files name a
    // scaling type): reading the file without it would run another model silently.
    if file.tensors.contains_key("rope_freqs.weight") {
        return Err(Error::tensor(
            file.path(),
            "rope_freqs.weight",
            "rope frequency factors (Llama 3.x rope scaling) are not supported",
        ));
    }
    if let Some(kind) = meta.get("llama.rope.scaling.type") {
        if !matches!(kind, MetaValue::Str(s) if s == "none") {
            return Err(meta.invalid("llama.rope.scaling.type", "rope scaling is not supported in GGUF files"));
        }
    }
    let n_heads = size("attention.head_count")?;
    let embd = file
        .tensors
        .get("token_embd.weight")
        .ok_or_else(|| Error::tensor(file.path(), "token_embd.weight", "missing"))?;
    let vocab_size = match embd.dims.as_slice() {
        [_, vocab] => usize::try_from(*vocab).ok(),
        _ => None,
    }
    .ok_or_else(|| {
        Error::tensor(file.path(), "token_embd.weight", format!("dimensions {:?}, expected 2", embd.dims))
    })?;
    let hidden_size = size("embedding_length")?;
    let config = LlamaConfig {
        vocab_size,
        hidden_size,
        intermediate_size: size("feed_forward_length")?,
        n_layers: size("block_count")?,
        n_heads,
        n_kv_heads: if meta.get("llama.attention.head_count_kv").is_some() {
            size("attention.head_count_kv")?
        } else {
            n_heads
        },
        head_dim: implied_head_dim(hidden_size, n_heads, file.path())?,
        rope_theta: float("rope.freq_base", Some(10_000.0))?,
        rope_scaling: crate::model::config::RopeScaling::None,
        rms_eps: float("attention.layer_norm_rms_epsilon", None)?,
        max_seq_len: size("context_length")?,
        tie_embeddings: !file.tensors.contains_key("output.weight"),
        attention_bias: false,
    };
    config.validate_file(file.path())?;
    Ok(config)
}

/// Loads a Llama GGUF: hyper-parameters, all metadata (the tokenizer is in it), and the weights
/// dequantized to f32 under HF names, with Q/K rows in HF order. With tied embeddings there is
/// no `lm_head.weight`.
pub fn load_llama_gguf(path: &Path) -> Result<(LlamaConfig, Metadata, WeightMap)> {
    let (config, meta, weights, _) = load_llama_gguf_parts(path, false)?;
    Ok((config, meta, weights))
}

/// [`load_llama_gguf`], with `keep_blocks` the projections' weights and the token embedding
/// that the file stores in Q4_0, Q4_1 or Q8_0 blocks kept as those blocks (rows in HF order)
/// instead of dequantized; every other tensor (norms, an untied LM head, other types) as f32.
pub fn load_llama_gguf_parts(path: &Path, keep_blocks: bool) -> Result<(LlamaConfig, Metadata, WeightMap, BlockMap)> {
    let file = GgufFile::open(path)?;
    let config = llama_config(&file)?;
    // Name a missing tensor by its GGUF name, before spending time on the others.
    let required = ["token_embd.weight".to_string(), "output_norm.weight".to_string()]
        .into_iter()
        .chain((0..config.n_layers).flat_map(|l| layer_tensors().map(move |(g, _)| format!("blk.{l}.{g}.weight"))));
    for name in required {
        if !file.tensors.contains_key(&name) {
            return Err(Error::tensor(path, name, "missing"));
        }
    }
    let (mut weights, mut blocks) = (WeightMap::new(), BlockMap::new());
    for gguf_name in file.tensors.keys() {
        let Some(name) = hf_name(gguf_name) else { continue };
        let heads = if gguf_name.contains(".attn_q.") {
            Some(config.n_heads)
        } else if gguf_name.contains(".attn_k.") {
            Some(config.n_kv_heads)
        } else {
            None
        };
        let rows_err = |shape: &[usize]| {
            Error::tensor(path, gguf_name, format!("shape {shape:?} does not split into {} heads", heads.unwrap_or(0)))
        };
        let blockable = gguf_name == "token_embd.weight"
            || (gguf_name.starts_with("blk.") && gguf_name.ends_with(".weight") && !gguf_name.contains("_norm."));
        if keep_blocks && blockable {
            if let Some(mut matrix) = file.blocks(gguf_name)? {
                if let Some(heads) = heads {
                    let (rows, cols) = matrix.dims();
                    let order = unpermuted_order(rows, heads).ok_or_else(|| rows_err(&[rows, cols]))?;
                    matrix = matrix.rows_in_order(&order);
                }
                blocks.insert(name, matrix);
                continue;
            }
        }
        let mut tensor = file.tensor(gguf_name)?;
        if let Some(heads) = heads {
            tensor = unpermute_rows(&tensor, heads).ok_or_else(|| rows_err(&tensor.shape))?;
        }
        weights.insert(name, tensor);
    }
    check_weight_parts(&config, &weights, &blocks, path)?;
    Ok((config, file.metadata, weights, blocks))
}

#[cfg(test)]
mod tests {
    use super::super::writer::{q8_0_bytes, temp_path, write_gguf, Out};
    use super::super::MetaValue;
    use super::*;
    use crate::model::weights::{check_weight_parts, expected_shapes, FloatEncoding};
    use std::path::PathBuf;

    /// The inverse of `unpermute_rows`: what llama.cpp's converter does to Q and K.
    fn permute_rows(t: &RawTensor, n_heads: usize) -> RawTensor {
        let rows = t.shape[0];
        let (head_dim, cols) = (rows / n_heads, t.numel() / rows);
        let half = head_dim / 2;
        let mut data = vec![0.0; t.numel()];
        for h in 0..n_heads {
            for i in 0..half {
                for j in 0..2 {
                    let (dst, src) = (h * head_dim + 2 * i + j, h * head_dim + j * half + i);
                    data[dst * cols..][..cols].copy_from_slice(&t.data[src * cols..][..cols]);
                }
            }
        }
        RawTensor::new(t.shape.clone(), data)
    }

    const HIDDEN: usize = 32;
    const HEADS: usize = 4;
    const KV_HEADS: usize = 2;
    const FFN: usize = 64;
    const VOCAB: usize = 16;
    const LAYERS: usize = 2;

    fn tiny_meta() -> Vec<(&'static str, MetaValue)> {
        vec![
            ("general.architecture", MetaValue::Str("llama".into())),
            ("general.alignment", MetaValue::U32(64)),
            ("llama.block_count", MetaValue::U32(LAYERS as u32)),
            ("llama.context_length", MetaValue::U32(128)),
            ("llama.embedding_length", MetaValue::U32(HIDDEN as u32)),
            ("llama.feed_forward_length", MetaValue::U64(FFN as u64)),
            ("llama.attention.head_count", MetaValue::U32(HEADS as u32)),
            ("llama.attention.head_count_kv", MetaValue::I32(KV_HEADS as i32)),
            ("llama.rope.freq_base", MetaValue::F32(100_000.0)),
            ("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5)),
            ("tokenizer.ggml.tokens", MetaValue::Array(vec![MetaValue::Str("a".into()), MetaValue::Str("b".into())])),
            (
                "test.nested",
                MetaValue::Array(vec![MetaValue::Array(vec![MetaValue::I16(-3)]), MetaValue::Array(vec![])]),
            ),
            ("test.misc", MetaValue::Array(vec![MetaValue::Bool(true), MetaValue::Bool(false)])),
            ("test.f64", MetaValue::F64(-2.5)),
            ("test.u8", MetaValue::U8(7)),
            ("test.i8", MetaValue::I8(-7)),
            ("test.u16", MetaValue::U16(700)),
            ("test.i64", MetaValue::I64(-70)),
        ]
    }

    /// HF weights of the tiny model, with values exact in every type the file uses, and the GGUF
    /// tensors that encode them, cycling through the types. Q/K are permuted as llama.cpp does.
    fn tiny_model() -> (WeightMap, Vec<Out>) {
        let config = LlamaConfig {
            vocab_size: VOCAB,
            hidden_size: HIDDEN,
            intermediate_size: FFN,
            n_layers: LAYERS,
            n_heads: HEADS,
            n_kv_heads: KV_HEADS,
            head_dim: HIDDEN / HEADS,
            rope_theta: 100_000.0,
            rope_scaling: crate::model::config::RopeScaling::None,
            rms_eps: 1e-5,
            max_seq_len: 128,
            tie_embeddings: true,
            attention_bias: false,
        };
        let mut weights = WeightMap::new();
        let mut out = Vec::new();
        for (t, (name, shape)) in expected_shapes(&config).into_iter().enumerate() {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|i| ((i * 7 + t) % 29) as f32 * 0.5 - 7.0).collect();
            let tensor = RawTensor::new(shape.clone(), data);
            let gguf_name =
                [("model.embed_tokens.weight", "token_embd.weight"), ("model.norm.weight", "output_norm.weight")]
                    .iter()
                    .find(|(hf, _)| *hf == name)
                    .map(|(_, g)| g.to_string())
                    .unwrap_or_else(|| {
                        let rest = name.strip_prefix("model.layers.").unwrap();
                        let (layer, rest) = rest.split_once('.').unwrap();
                        let part = rest.strip_suffix(".weight").unwrap();
                        let (g, _) = layer_tensors().find(|(_, hf)| *hf == part).unwrap();
                        format!("blk.{layer}.{g}.weight")
                    });
            assert_eq!(hf_name(&gguf_name).as_deref(), Some(name.as_str()));
            let stored = if name.contains("q_proj") {
                permute_rows(&tensor, HEADS)
            } else if name.contains("k_proj") {
                permute_rows(&tensor, KV_HEADS)
            } else {
                tensor.clone()
            };
            let (type_id, bytes) = match t % 4 {
                _ if shape.len() == 1 => (0, FloatEncoding::F32.encode(&stored.data)),
                0 => (8, q8_0_bytes(&stored.data)),
                1 => (1, FloatEncoding::F16.encode(&stored.data)),
                2 => (30, FloatEncoding::BF16.encode(&stored.data)),
                _ => (0, FloatEncoding::F32.encode(&stored.data)),
            };
            out.push(Out { name: gguf_name, shape, type_id, bytes });
            weights.insert(name, tensor);
        }
        (weights, out)
    }

    #[test]
    fn tiny_file_round_trips() {
        let (weights, tensors) = tiny_model();
        let path = temp_path("roundtrip");
        std::fs::write(&path, write_gguf(&tiny_meta(), &tensors, 64)).unwrap();
        let (config, meta, got) = load_llama_gguf(&path).unwrap();
        std::fs::remove_file(&path).unwrap();

        assert_eq!((config.vocab_size, config.hidden_size, config.intermediate_size), (VOCAB, HIDDEN, FFN));
        assert_eq!((config.n_layers, config.n_heads, config.n_kv_heads), (LAYERS, HEADS, KV_HEADS));
        // The file holds f32 values.
        assert_eq!((config.rope_theta, config.rms_eps as f32, config.max_seq_len), (100_000.0, 1e-5, 128));
        assert!(config.tie_embeddings && config.head_dim == HIDDEN / HEADS);
        for (k, v) in tiny_meta() {
            assert_eq!(meta.get(k), Some(&v), "{k}");
        }
        assert_eq!(meta.u64("llama.attention.head_count_kv").unwrap(), Some(KV_HEADS as u64));
        assert!(meta.u64("general.architecture").is_err());
        assert_eq!(got, weights);
    }

    #[test]
    fn kept_blocks_hold_the_values_the_f32_load_gives_with_q_and_k_rows_in_hf_order() {
        let (_, tensors) = tiny_model();
        let path = temp_path("blocks");
        std::fs::write(&path, write_gguf(&tiny_meta(), &tensors, 64)).unwrap();
        let (_, _, all) = load_llama_gguf(&path).unwrap();
        let (config, _, dense, blocks) = load_llama_gguf_parts(&path, true).unwrap();
        std::fs::remove_file(&path).unwrap();
        // The Q8_0 tensors of the file, and only those, are kept as blocks.
        let q8: Vec<&str> = tensors.iter().filter(|t| t.type_id == 8).map(|t| t.name.as_str()).collect();
        assert_eq!(blocks.len(), q8.len());
        assert!(blocks.keys().any(|n| n.contains("q_proj") || n.contains("k_proj")), "{:?}", blocks.keys());
        for (name, matrix) in &blocks {
            assert_eq!(matrix.dequantize(), all[name].data, "{name}");
            assert!(!dense.contains_key(name));
        }
        assert_eq!(dense.len() + blocks.len(), all.len());
        assert!(check_weight_parts(&config, &dense, &blocks, &path).is_ok());
    }

    fn load_err(name: &str, bytes: &[u8]) -> String {
        let path = temp_path(name);
        std::fs::write(&path, bytes).unwrap();
        let err = load_llama_gguf(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains(path.to_str().unwrap()), "error does not name the file: {err}");
        err
    }

    #[test]
    fn truncated_file_is_an_error_naming_the_path() {
        let (_, tensors) = tiny_model();
        let bytes = write_gguf(&tiny_meta(), &tensors, 64);
        // Every cut in the header region, then coarser steps through the data.
        let cuts = (0..2000).chain((2000..bytes.len()).step_by(97));
        let path = temp_path("truncated");
        for cut in cuts {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let err = load_llama_gguf(&path).unwrap_err().to_string();
            assert!(err.contains(path.to_str().unwrap()), "cut {cut}: {err}");
        }
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn corrupt_files_are_errors_naming_what_is_wrong() {
        let (_, mut tensors) = tiny_model();
        let good = write_gguf(&tiny_meta(), &tensors, 64);

        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(load_err("magic", &bad_magic).contains("magic"));

        let mut bad_version = good.clone();
        bad_version[4] = 1;
        assert!(load_err("version", &bad_version).contains("version 1"));

        let mut unknown_value = tiny_meta();
        unknown_value.push(("test.x", MetaValue::U8(0)));
        let mut bytes = write_gguf(&unknown_value, &tensors, 64);
        let key = bytes.windows(6).position(|w| w == b"test.x").unwrap();
        bytes[key + 6] = 99; // the value type that follows the key
        assert!(load_err("value-type", &bytes).contains("unknown value type 99"));

        let down = tensors.iter().position(|t| t.name == "blk.1.ffn_down.weight").unwrap();
        tensors[down].type_id = 99;
        let err = load_err("type", &write_gguf(&tiny_meta(), &tensors, 64));
        assert!(err.contains("blk.1.ffn_down.weight") && err.contains("Other(99)"), "{err}");

        tensors.remove(down);
        let err = load_err("missing", &write_gguf(&tiny_meta(), &tensors, 64));
        assert!(err.contains("blk.1.ffn_down.weight") && err.contains("missing"), "{err}");

        // A tensor whose data lies past the end: cut the last tensor's bytes off.
        let (_, tensors) = tiny_model();
        let last = tensors.last().unwrap().name.clone();
        let bytes = write_gguf(&tiny_meta(), &tensors, 64);
        let err = load_err("bounds", &bytes[..bytes.len() - 1]);
        assert!(err.contains(&last) && err.contains("past the end"), "{err}");
    }

    /// Llama 3.x's rope scaling, which this loader does not apply, is refused, not ignored.
    #[test]
    fn rope_scaling_in_a_gguf_is_refused_by_name() {
        let (_, mut tensors) = tiny_model();
        let mut scaled = tiny_meta();
        scaled.push(("llama.rope.scaling.type", MetaValue::Str("linear".into())));
        let err = load_err("scaling-type", &write_gguf(&scaled, &tensors, 64));
        assert!(err.contains("llama.rope.scaling.type"), "{err}");
        tensors.push(Out { name: "rope_freqs.weight".into(), shape: vec![8], type_id: 0, bytes: vec![0; 32] });
        let err = load_err("rope-freqs", &write_gguf(&tiny_meta(), &tensors, 64));
        assert!(err.contains("rope_freqs.weight") && err.contains("not supported"), "{err}");
    }

    #[test]
    fn smollm2_q4_1_file_if_present() {
        let dir = std::env::var_os("SOFT_MODELS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
        let path = dir.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        let found = path.exists().then_some(());
        if crate::test_assets::present_or_required(&path.display().to_string(), found).is_none() {
            return;
        }
        let (config, meta, weights) = load_llama_gguf(&path).unwrap();
        let expected = LlamaConfig::smollm2_135m();
        assert_eq!(LlamaConfig { rms_eps: expected.rms_eps, ..config }, expected);
        assert_eq!(config.rms_eps as f32, 1e-5);
        assert!(!weights.contains_key("lm_head.weight"));
        assert!(weights.values().all(|t| t.data.iter().all(|x| x.is_finite())));

        let tok = super::super::tokenizer::tokenizer_from_gguf(&meta).unwrap();
        let text = "The capital of France is";
        let enc = tok.encode(text, false).unwrap();
        assert_eq!(enc.get_tokens(), &["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]);
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
        let digits = tok.encode("2024", false).unwrap();
        assert_eq!(digits.get_tokens(), &["2", "0", "2", "4"]);
        let chat = tok.encode("<|im_start|>user", false).unwrap();
        assert_eq!(chat.get_ids()[0], 1);

        // The file's blocks kept (`--weights-dtype stored`): the logits of a prompt and of
        // decoding steps equal the f32 model's up to the order of the sums.
        use crate::model::llama::Llama;
        use crate::model::weights::FloatEncoding;
        use burn::tensor::{Device, Int, Tensor, TensorData};
        let device = Device::flex();
        let f32_model = Llama::from_weights(&config, &weights, &device).unwrap();
        let (_, _, dense, blocks) = load_llama_gguf_parts(&path, true).unwrap();
        let stored = Llama::from_parts(&config, &dense, &blocks, &device, FloatEncoding::F32).unwrap();
        assert_eq!(blocks.len(), 30 * 7 + 1, "every projection and the embedding");
        assert!(stored.step_weight_bytes() < f32_model.step_weight_bytes() / 5);
        let ids: Vec<i64> = enc.get_ids().iter().map(|&t| i64::from(t)).collect();
        let n = ids.len();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
        let mask = Tensor::<2, Int>::ones([1, n], &device);
        let (mut a_cache, mut b_cache) = (f32_model.new_cache(n + 3), stored.new_cache(n + 3));
        let mut a = f32_model.forward(tokens.clone(), mask.clone(), Some(&mut a_cache));
        let mut b = stored.forward(tokens, mask, Some(&mut b_cache));
        for step in 0..4 {
            let scale = a.clone().abs().max().into_scalar::<f32>();
            let diff = (a.clone() - b.clone()).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-4 * scale, "step {step}: logits differ by {diff} (up to {scale})");
            eprintln!("stored blocks vs f32, step {step}: logits differ by at most {diff} (up to {scale})");
            let next = a.clone().narrow(1, a.dims()[1] - 1, 1).argmax(2).reshape([1, 1]);
            let one = Tensor::<2, Int>::ones([1, 1], &device);
            a = f32_model.forward(next.clone(), one.clone(), Some(&mut a_cache));
            b = stored.forward(next, one, Some(&mut b_cache));
        }

        // `--weights-dtype int8-dot`: decoding steps' products in integer dot products over the
        // same blocks, the inputs rounded to 8 bits per block: logits near the f32 model's, the
        // same greedy tokens on this prompt.
        if !crate::kernels::int8_dot::available() {
            eprintln!("int8-dot skipped: the CPU has no AVX512_VNNI");
            return;
        }
        use crate::model::decoding::fused_step::step;
        let int8 = stored.with_int8_products().unwrap();
        let (mut a_cache, mut c_cache) = (f32_model.new_cache(n + 5), int8.new_cache(n + 5));
        let ids: Vec<i64> = enc.get_ids().iter().map(|&t| i64::from(t)).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
        let mask = Tensor::<2, Int>::ones([1, n], &device);
        let a = f32_model.forward(tokens.clone(), mask.clone(), Some(&mut a_cache));
        int8.forward(tokens, mask, Some(&mut c_cache));
        let mut next = a.narrow(1, n - 1, 1).argmax(2).into_scalar::<i64>();
        for step_i in 0..4 {
            let one = Tensor::<2, Int>::from_data(TensorData::new(vec![next], [1, 1]), &device);
            let a = f32_model.forward(one, Tensor::<2, Int>::ones([1, 1], &device), Some(&mut a_cache)).reshape([1, -1]);
            let c = step(&int8, &mut c_cache, &[next as u32]).expect("the CPU backend");
            let scale = a.clone().abs().max().into_scalar::<f32>();
            let diff = (a.clone() - c.clone()).abs().max().into_scalar::<f32>();
            eprintln!("int8-dot vs f32, step {step_i}: logits differ by at most {diff} (up to {scale})");
            assert!(diff > 0.0 && diff < 0.05 * scale, "int8-dot step {step_i}: {diff} (logits up to {scale})");
            let (ta, tc) = (a.argmax(1).into_scalar::<i64>(), c.argmax(1).into_scalar::<i64>());
            assert_eq!(ta, tc, "int8-dot step {step_i}: greedy token");
            next = ta;
        }
    }
}
