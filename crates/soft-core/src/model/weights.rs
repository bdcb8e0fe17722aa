//! The meeting point of weight loaders (GGUF, safetensors, PEFT) and the model: a map from
//! Hugging Face tensor names (`model.layers.0.self_attn.q_proj.weight`, ...) to dense f32 data.
//! Loaders translate their own naming and layout into this one, so the model has a single
//! `load` path.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::kind::Basic;
use burn::tensor::{Device, Element, FloatDType, Tensor, TensorReadError};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use crate::kernels::blocks::BlockMatrix;
use crate::model::config::LlamaConfig;
use crate::{Error, Result};

/// A dense row-major f32 tensor, shape outermost first (HF / PyTorch order: a linear weight
/// is `[out_features, in_features]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl RawTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// Tensors by Hugging Face name.
pub type WeightMap = BTreeMap<String, RawTensor>;

/// Every tensor a model of `config` loads, by Hugging Face name, with its shape (`[out, in]`
/// for a linear weight).
pub fn expected_shapes(config: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let (h, v) = (config.hidden_size, config.vocab_size);
    let mut shapes =
        vec![("model.embed_tokens.weight".to_string(), vec![v, h]), ("model.norm.weight".to_string(), vec![h])];
    if !config.tie_embeddings {
        shapes.push(("lm_head.weight".to_string(), vec![v, h]));
    }
    for l in 0..config.n_layers {
        for p in config.projections() {
            shapes.push((format!("model.layers.{l}.{}.weight", p.path), vec![p.d_out, p.d_in]));
            if p.bias {
                shapes.push((format!("model.layers.{l}.{}.bias", p.path), vec![p.d_out]));
            }
        }
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            shapes.push((format!("model.layers.{l}.{norm}.weight"), vec![h]));
        }
    }
    shapes
}

/// Weights kept in the quantized blocks their file stores (`kernels/blocks.rs`), by Hugging
/// Face name: a projection's `[out, in]` weight or the `[vocab, hidden]` token embedding.
pub type BlockMap = BTreeMap<String, BlockMatrix>;

/// Checks that `weights`, read from `path`, hold every tensor `config` calls for with its shape.
pub fn check_weights(config: &LlamaConfig, weights: &WeightMap, path: &Path) -> Result<()> {
    check_weight_parts(config, weights, &BlockMap::new(), path)
}

/// [`check_weights`] for a model whose tensors are in `weights` or, kept as blocks, in `blocks`.
pub fn check_weight_parts(config: &LlamaConfig, weights: &WeightMap, blocks: &BlockMap, path: &Path) -> Result<()> {
    for (name, shape) in expected_shapes(config) {
        let found = match (weights.get(&name), blocks.get(&name)) {
            (Some(t), _) => Some(t.shape.clone()),
            (None, Some(b)) => Some(vec![b.dims().0, b.dims().1]),
            (None, None) => None,
        };
        match found {
            None => return Err(Error::tensor(path, name, "missing")),
            Some(found) if found != shape => {
                return Err(Error::tensor(path, name, format!("shape {:?}, expected {:?}", found, shape)))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The little-endian float encodings weight files store, and the dtypes frozen base weights
/// can be kept in on a device ([`Llama::with_base_dtype`](crate::model::llama::Llama::with_base_dtype)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatEncoding {
    #[default]
    F32,
    F16,
    BF16,
}

impl std::str::FromStr for FloatEncoding {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "bf16" => Ok(Self::BF16),
            other => Err(format!("`{other}` is not a weight dtype: f32, f16 or bf16")),
        }
    }
}

/// How a model's frozen base weights are held: converted to one float encoding, or as their
/// file stores them (a GGUF's Q4_0 / Q4_1 / Q8_0 blocks, read as they lie on the CPU backend:
/// `Llama::from_parts`). Written as its name (`"f32"`, `"stored"`), so a configuration that
/// held a [`FloatEncoding`] reads as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BaseWeights {
    Float(FloatEncoding),
    Stored,
    /// bf16, with a training step's products in bf16 dot products on the CPU
    /// (`Llama::with_bf16_products`).
    Bf16Dot,
    /// `Stored`, with a decoding step's products in 8-bit integer dot products on the CPU
    /// (`Llama::with_int8_products`).
    Int8Dot,
}

impl Default for BaseWeights {
    fn default() -> Self {
        Self::Float(FloatEncoding::F32)
    }
}

impl std::str::FromStr for BaseWeights {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "stored" => Ok(Self::Stored),
            "bf16-dot" => Ok(Self::Bf16Dot),
            "int8-dot" => Ok(Self::Int8Dot),
            other => other
                .parse()
                .map(Self::Float)
                .map_err(|_| format!("`{other}` is not a weight dtype: f32, f16, bf16, bf16-dot, stored or int8-dot")),
        }
    }
}

impl TryFrom<String> for BaseWeights {
    type Error = String;

    fn try_from(s: String) -> std::result::Result<Self, String> {
        s.parse()
    }
}

impl From<BaseWeights> for String {
    fn from(w: BaseWeights) -> String {
        w.name().to_string()
    }
}

impl BaseWeights {
    /// The name options and reports use (`f32`, `f16`, `bf16`, `bf16-dot`, `stored`, `int8-dot`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Float(e) => e.name(),
            Self::Stored => "stored",
            Self::Bf16Dot => "bf16-dot",
            Self::Int8Dot => "int8-dot",
        }
    }

    /// The encoding of the weights not kept as blocks: all of them for a float encoding, f32
    /// for `stored` and `int8-dot` (norms, and any tensor the file does not store in blocks).
    /// Also the upper bound memory plans use for them, which know the config, not the file.
    pub fn encoding(self) -> FloatEncoding {
        match self {
            Self::Float(e) => e,
            Self::Stored | Self::Int8Dot => FloatEncoding::F32,
            Self::Bf16Dot => FloatEncoding::BF16,
        }
    }

    /// Whether the weights are a GGUF file's quantized blocks (`stored`, `int8-dot`).
    pub fn keeps_blocks(self) -> bool {
        matches!(self, Self::Stored | Self::Int8Dot)
    }

    /// Refuses what `device` cannot hold: a float encoding it cannot store, blocks off the CPU
    /// backend, or bf16 / int8 dot products off the CPU backend or on a CPU without them.
    pub fn check_device(self, device: &Device) -> Result<()> {
        match self {
            Self::Float(e) => e.check_storable(device),
            Self::Stored if crate::kernels::is_cpu(device) => Ok(()),
            Self::Stored => Err(Error::config(
                "weights dtype",
                "`stored` (a GGUF's quantized blocks) is read on the CPU backend only; use f32 or f16 on a GPU",
            )),
            Self::Bf16Dot if crate::kernels::is_cpu(device) && crate::kernels::bf16_dot::available() => Ok(()),
            Self::Bf16Dot => Err(Error::config(
                "weights dtype",
                "`bf16-dot` needs the CPU backend on a CPU with AVX512_BF16; use bf16 (products in f32)",
            )),
            Self::Int8Dot if crate::kernels::is_cpu(device) && crate::kernels::int8_dot::available() => Ok(()),
            Self::Int8Dot => Err(Error::config(
                "weights dtype",
                "`int8-dot` needs the CPU backend on a CPU with AVX512_VNNI; use stored (products in f32)",
            )),
        }
    }
}

impl FloatEncoding {
    /// Refuses an encoding `device` cannot hold tensors in: WGSL has no bf16, and cubecl would
    /// compute garbage from it after a panic in its worker thread.
    pub fn check_storable(self, device: &Device) -> Result<()> {
        if device.supports_dtype(self.dtype()) {
            return Ok(());
        }
        Err(Error::config(
            "weights dtype",
            format!("the device cannot store {self:?} tensors (wgpu has no bf16); use f32 or f16"),
        ))
    }

    /// Bytes per value.
    pub fn bytes(self) -> u64 {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
        }
    }

    /// The name options and reports use (`f32`, `f16`, `bf16`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
        }
    }

    /// The burn dtype of the same encoding.
    pub fn dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::F16 => FloatDType::F16,
            Self::BF16 => FloatDType::BF16,
        }
    }

    /// `bytes` as values; a trailing partial value is ignored (callers check lengths).
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Self::F32 => bytes.as_chunks::<4>().0.iter().map(|b| f32::from_le_bytes(*b)).collect(),
            Self::F16 => bytes.as_chunks::<2>().0.iter().map(|b| half::f16::from_le_bytes(*b).to_f32()).collect(),
            Self::BF16 => bytes.as_chunks::<2>().0.iter().map(|b| half::bf16::from_le_bytes(*b).to_f32()).collect(),
        }
    }

    /// `values` as bytes, rounded to the nearest value the encoding holds.
    pub fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Self::F32 => values.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Self::F16 => values.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
            Self::BF16 => values.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
        }
    }
}

/// The values of tensor `name` of a safetensors file (at `path`) as f32; F32, F16 and BF16
/// are read, other dtypes are an error. The byte count was checked against the shape by the
/// safetensors parser.
pub fn safetensors_f32(view: &TensorView, path: &Path, name: &str) -> Result<Vec<f32>> {
    let encoding = match view.dtype() {
        Dtype::F32 => FloatEncoding::F32,
        Dtype::F16 => FloatEncoding::F16,
        Dtype::BF16 => FloatEncoding::BF16,
        other => return Err(Error::tensor(path, name, format!("dtype {other} is not a float type"))),
    };
    Ok(encoding.decode(view.data()))
}

/// Row-major `[rows, cols]` to `[cols, rows]`.
pub fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for (r, row) in data.chunks_exact(cols).enumerate() {
        for (c, &x) in row.iter().enumerate() {
            out[c * rows + r] = x;
        }
    }
    out
}

/// A tensor's values read back to the host as `E`. A failed cast keeps its `DataError`.
pub fn host_values<E: Element, const D: usize, K: Basic>(t: Tensor<D, K>) -> Result<Vec<E>> {
    t.try_into_vec_as::<E>().map_err(|e| match e {
        TensorReadError::Data(e) => Error::TensorData(e),
        // No variant keeps a device failure as its source yet.
        other => Error::ModelState(format!("reading tensor values back from the device: {other}")),
    })
}

/// [`host_values`] with an await: the only way to read a tensor on WebGPU in a browser.
pub async fn host_values_async<E: Element, const D: usize, K: Basic>(t: Tensor<D, K>) -> Result<Vec<E>> {
    let data = t
        .into_data_async()
        .await
        .map_err(|e| Error::ModelState(format!("reading tensor values back from the device: {e:?}")))?;
    Ok(data.convert::<E>().try_into_vec::<E>()?)
}

/// `weights` as the bytes of a `.safetensors` file in `encoding` (F32, F16 or BF16); `path` is
/// where they are going, named in errors.
pub fn safetensors_bytes(weights: &WeightMap, encoding: FloatEncoding, path: &Path) -> Result<Vec<u8>> {
    let dtype = match encoding {
        FloatEncoding::F32 => Dtype::F32,
        FloatEncoding::F16 => Dtype::F16,
        FloatEncoding::BF16 => Dtype::BF16,
    };
    let encoded: Vec<(&str, &RawTensor, Vec<u8>)> =
        weights.iter().map(|(name, t)| (name.as_str(), t, encoding.encode(&t.data))).collect();
    let views = encoded
        .iter()
        .map(|(name, t, bytes)| safetensors::tensor::TensorView::new(dtype, t.shape.clone(), bytes).map(|v| (*name, v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::safetensors(path, e))?;
    safetensors::serialize(views, None).map_err(|e| Error::safetensors(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_encodings_round_trip_exact_values() {
        let values = [0.0, -1.5, 2.25, 1024.0, -0.125];
        for encoding in [FloatEncoding::F32, FloatEncoding::F16, FloatEncoding::BF16] {
            assert_eq!(encoding.decode(&encoding.encode(&values)), values, "{encoding:?}");
        }
        assert_eq!(transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3), [1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
