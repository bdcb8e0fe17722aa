//! GGUF, llama.cpp's model file (versions 2 and 3): header, metadata, tensor directory, and
//! dequantization to f32 of the tensor types small quantized Llamas use (F32, F16, BF16, Q4_0,
//! Q4_1, Q8_0). `load_llama_gguf` turns a Llama GGUF into the HF-named `WeightMap`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use crate::model::hf::LlamaParams;
use crate::model::weights::{RawTensor, WeightMap};
use crate::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Elements in one block of every quantized type read here.
const QK: usize = 32;
/// Arrays of arrays are legal; deeper nesting than this is taken as a corrupt file.
const MAX_ARRAY_DEPTH: usize = 4;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;

/// One metadata value. Integer widths are kept as written; `as_u64` reads any of them.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// A non-negative integer of any width (converters differ in the width they write).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v.into()),
            MetaValue::U16(v) => Some(v.into()),
            MetaValue::U32(v) => Some(v.into()),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) => u64::try_from(v).ok(),
            MetaValue::I16(v) => u64::try_from(v).ok(),
            MetaValue::I32(v) => u64::try_from(v).ok(),
            MetaValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v.into()),
            MetaValue::F64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// The metadata of one file, with its path so that lookups can name it in errors. The typed
/// getters return `Ok(None)` for an absent key and an error for a value of the wrong type.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    path: PathBuf,
    entries: BTreeMap<String, MetaValue>,
}

impl Metadata {
    pub fn new(path: impl Into<PathBuf>, entries: BTreeMap<String, MetaValue>) -> Self {
        Self { path: path.into(), entries }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn entries(&self) -> &BTreeMap<String, MetaValue> {
        &self.entries
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.entries.get(key)
    }

    pub fn u64(&self, key: &str) -> Result<Option<u64>> {
        self.typed(key, "a non-negative integer", MetaValue::as_u64)
    }

    pub fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.typed(key, "a float", MetaValue::as_f64)
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.typed(key, "a bool", MetaValue::as_bool)
    }

    pub fn str(&self, key: &str) -> Result<Option<&str>> {
        self.typed(key, "a string", MetaValue::as_str)
    }

    pub fn array(&self, key: &str) -> Result<Option<&[MetaValue]>> {
        self.typed(key, "an array", MetaValue::as_array)
    }

    /// The error for a required key that is absent.
    pub fn missing(&self, key: &str) -> Error {
        Error::format(&self.path, format!("metadata key `{key}` is missing"))
    }

    /// The error for a key whose value is present but unusable.
    pub fn invalid(&self, key: &str, msg: impl std::fmt::Display) -> Error {
        Error::format(&self.path, format!("metadata key `{key}`: {msg}"))
    }

    fn typed<'a, T>(&'a self, key: &str, want: &str, read: impl Fn(&'a MetaValue) -> Option<T>) -> Result<Option<T>> {
        match self.entries.get(key) {
            None => Ok(None),
            Some(v) => read(v).map(Some).ok_or_else(|| self.invalid(key, format!("expected {want}, found {v:?}"))),
        }
    }
}

/// A ggml tensor type. `Other` keeps the id of a type this reader cannot dequantize, so that
/// the file still opens and the error comes only when such a tensor is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    Other(u32),
}

impl GgmlType {
    fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    /// (elements, bytes) of one block; plain types are blocks of one element.
    fn block_layout(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::BF16 => Some((1, 2)),
            GgmlType::Q4_0 => Some((QK, 2 + QK / 2)),
            GgmlType::Q4_1 => Some((QK, 4 + QK / 2)),
            GgmlType::Q8_0 => Some((QK, 2 + QK)),
            GgmlType::Other(_) => None,
        }
    }
}

/// Where one tensor lies in the data section, and what it is.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// GGUF order: innermost (contiguous) dimension first.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Bytes from the start of the data section.
    pub offset: u64,
}

/// An opened GGUF file: parsed header, metadata and tensor directory, and the raw bytes that
/// tensors are dequantized from on demand.
#[derive(Debug)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: BTreeMap<String, TensorInfo>,
    bytes: Vec<u8>,
    data_start: usize,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, bytes)
    }

    /// Parses `bytes`; `path` is only used to name the file in errors.
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let mut r = Reader { bytes: &bytes, pos: 0, path };
        if r.take(4, "magic")? != MAGIC {
            return Err(Error::format(path, "not a GGUF file (bad magic)"));
        }
        let version = r.u32("version")?;
        // Version 1 used 32-bit counts and lengths; nothing current writes it.
        if !(2..=3).contains(&version) {
            return Err(Error::format(path, format!("GGUF version {version} is not supported (2 or 3)")));
        }
        let n_tensors = r.u64("tensor count")?;
        let n_kv = r.u64("metadata count")?;

        let mut entries = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let ty = r.u32(&key)?;
            let value = r.value(ty, &key, 0)?;
            entries.insert(key, value);
        }
        let metadata = Metadata::new(path, entries);

        let mut tensors = BTreeMap::new();
        for _ in 0..n_tensors {
            let name = r.string("tensor name")?;
            let n_dims = r.u32(&name)?;
            if n_dims > MAX_DIMS {
                return Err(Error::tensor(path, name, format!("{n_dims} dimensions (at most {MAX_DIMS})")));
            }
            let dims = (0..n_dims).map(|_| r.u64(&name)).collect::<Result<Vec<_>>>()?;
            let ggml_type = GgmlType::from_id(r.u32(&name)?);
            let offset = r.u64(&name)?;
            if tensors.insert(name.clone(), TensorInfo { dims, ggml_type, offset }).is_some() {
                return Err(Error::tensor(path, name, "appears twice"));
            }
        }

        let alignment = metadata.u64("general.alignment")?.unwrap_or(DEFAULT_ALIGNMENT);
        if !alignment.is_power_of_two() {
            return Err(metadata.invalid("general.alignment", format!("{alignment} is not a power of two")));
        }
        let data_start = align_up(r.pos as u64, alignment)
            .and_then(|s| usize::try_from(s).ok())
            .filter(|&s| s <= bytes.len() || tensors.is_empty())
            .ok_or_else(|| Error::format(path, "truncated before the tensor data"))?;
        if let Some((name, _)) = tensors.iter().find(|(_, t)| !t.offset.is_multiple_of(alignment)) {
            return Err(Error::tensor(path, name, format!("offset is not a multiple of the alignment {alignment}")));
        }
        Ok(Self { version, metadata, tensors, bytes, data_start })
    }

    pub fn path(&self) -> &Path {
        self.metadata.path()
    }

    /// The named tensor dequantized to f32, shape in HF order (outermost first).
    pub fn tensor(&self, name: &str) -> Result<RawTensor> {
        let err = |msg: String| Error::tensor(self.path(), name, msg);
        let info = self.tensors.get(name).ok_or_else(|| err("missing".into()))?;
        let (block_elems, block_bytes) = info.ggml_type.block_layout().ok_or_else(|| {
            err(format!(
                "ggml type {:?} is not supported (supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0)",
                info.ggml_type
            ))
        })?;
        let shape = info
            .dims
            .iter()
            .rev()
            .map(|&d| usize::try_from(d).ok())
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| err(format!("dimensions {:?} too large", info.dims)))?;
        let numel = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| err(format!("dimensions {:?} too large", info.dims)))?;
        // Quantized rows are whole blocks: the innermost dimension must be a multiple of one.
        if !info.dims.first().copied().unwrap_or(1).is_multiple_of(block_elems as u64) {
            return Err(err(format!("innermost dimension is not a multiple of {block_elems}")));
        }
        let n_bytes = numel / block_elems * block_bytes;
        let start = usize::try_from(info.offset).ok().and_then(|o| o.checked_add(self.data_start));
        let data = start
            .and_then(|s| self.bytes.get(s..s.checked_add(n_bytes)?))
            .ok_or_else(|| err(format!("data ({n_bytes} bytes at offset {}) past the end of the file", info.offset)))?;
        Ok(RawTensor::new(shape, dequantize(info.ggml_type, data)))
    }
}

fn align_up(pos: u64, alignment: u64) -> Option<u64> {
    Some(pos.checked_add(alignment - 1)? / alignment * alignment)
}

/// `data` as f32. Its length is a whole number of blocks of `ty` (checked by the caller).
fn dequantize(ty: GgmlType, data: &[u8]) -> Vec<f32> {
    let half_f32 = |lo: u8, hi: u8| f16::from_le_bytes([lo, hi]).to_f32();
    match ty {
        GgmlType::F32 => data.as_chunks::<4>().0.iter().map(|b| f32::from_le_bytes(*b)).collect(),
        GgmlType::F16 => data.as_chunks::<2>().0.iter().map(|b| f16::from_le_bytes(*b).to_f32()).collect(),
        GgmlType::BF16 => data.as_chunks::<2>().0.iter().map(|b| bf16::from_le_bytes(*b).to_f32()).collect(),
        // Scale d, then 32 signed bytes: x = d * q.
        GgmlType::Q8_0 => data
            .as_chunks::<{ 2 + QK }>()
            .0
            .iter()
            .flat_map(|[d0, d1, qs @ ..]| {
                let d = half_f32(*d0, *d1);
                qs.map(|q| d * f32::from(q as i8))
            })
            .collect(),
        // Scale d, then 16 bytes of nibbles: low nibbles are elements 0..16, high ones 16..32;
        // x = d * (q - 8).
        GgmlType::Q4_0 => data
            .as_chunks::<{ 2 + QK / 2 }>()
            .0
            .iter()
            .flat_map(|[d0, d1, qs @ ..]| {
                let d = half_f32(*d0, *d1);
                let nibble = move |q: u8| d * (f32::from(q) - 8.0);
                qs.map(|q| nibble(q & 0x0F)).into_iter().chain(qs.map(|q| nibble(q >> 4)))
            })
            .collect(),
        // Scale d and minimum m, then nibbles laid out as in Q4_0; x = d * q + m.
        GgmlType::Q4_1 => data
            .as_chunks::<{ 4 + QK / 2 }>()
            .0
            .iter()
            .flat_map(|[d0, d1, m0, m1, qs @ ..]| {
                let (d, m) = (half_f32(*d0, *d1), half_f32(*m0, *m1));
                let nibble = move |q: u8| d * f32::from(q) + m;
                qs.map(|q| nibble(q & 0x0F)).into_iter().chain(qs.map(|q| nibble(q >> 4)))
            })
            .collect(),
        GgmlType::Other(_) => unreachable!("checked by GgufFile::tensor"),
    }
}

/// A cursor over the file's bytes whose reads fail, naming the file, instead of running past
/// the end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let slice = self.pos.checked_add(n).and_then(|end| self.bytes.get(self.pos..end)).ok_or_else(|| {
            Error::format(
                self.path,
                format!("truncated: {what} needs {n} bytes at offset {}, file has {}", self.pos, self.bytes.len()),
            )
        })?;
        self.pos += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn len(&mut self, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        usize::try_from(n).map_err(|_| Error::format(self.path, format!("{what}: length {n} too large")))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.len(what)?;
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|e| Error::format(self.path, format!("{what}: string is not UTF-8 ({e})")))
    }

    /// A metadata value of GGUF type id `ty`; `what` (the key) names it in errors.
    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(u8::from_le_bytes(self.array(what)?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.array(what)?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => MetaValue::U32(self.u32(what)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)? {
                [0] => MetaValue::Bool(false),
                [1] => MetaValue::Bool(true),
                [b] => return Err(Error::format(self.path, format!("metadata key `{what}`: bool byte {b}"))),
            },
            8 => MetaValue::Str(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Error::format(self.path, format!("metadata key `{what}`: arrays nested too deep")));
                }
                let elem_ty = self.u32(what)?;
                let n = self.len(what)?;
                // Every element takes at least a byte: a count past the end is corrupt, and must
                // not reserve memory.
                let mut items = Vec::with_capacity(n.min(self.bytes.len() - self.pos));
                for _ in 0..n {
                    items.push(self.value(elem_ty, what, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(self.u64(what)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => {
                return Err(Error::format(self.path, format!("metadata key `{what}`: unknown value type {other}")))
            }
        })
    }
}

/// GGUF -> HF names of the per-layer tensors.
const LAYER_TENSORS: [(&str, &str); 9] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

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
    let (_, hf) = LAYER_TENSORS.iter().find(|(g, _)| *g == part)?;
    matches!(suffix, "weight" | "bias").then(|| format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// llama.cpp's converter reorders each head's Q/K rows from HF's two halves to interleaved
/// pairs (row 2i+j of a head holds HF row j*half+i) so that its RoPE rotates adjacent pairs.
/// The model uses HF's rotate-half RoPE, so this puts the rows back.
fn unpermute_rows(t: &RawTensor, n_heads: usize) -> Option<RawTensor> {
    let rows = *t.shape.first()?;
    let head_dim = rows / n_heads;
    if rows == 0 || head_dim * n_heads != rows || !head_dim.is_multiple_of(2) {
        return None;
    }
    let half = head_dim / 2;
    let cols = t.numel() / rows;
    let src: Vec<&[f32]> = t.data.chunks_exact(cols).collect();
    let mut data = Vec::with_capacity(t.numel());
    for r in 0..rows {
        let (head, k) = (r / head_dim, r % head_dim);
        let (j, i) = (k / half, k % half);
        data.extend_from_slice(src[head * head_dim + 2 * i + j]);
    }
    Some(RawTensor::new(t.shape.clone(), data))
}

/// Reads the hyper-parameters of a `general.architecture = llama` file.
fn llama_params(file: &GgufFile) -> Result<LlamaParams> {
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
    let float = |key: &str, default: Option<f64>| -> Result<f32> {
        let key = format!("llama.{key}");
        let v = meta.f64(&key)?.or(default).ok_or_else(|| meta.missing(&key))?;
        Ok(v as f32)
    };
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
    let params = LlamaParams {
        vocab_size,
        hidden_size: size("embedding_length")?,
        intermediate_size: size("feed_forward_length")?,
        n_layers: size("block_count")?,
        n_heads,
        n_kv_heads: if meta.get("llama.attention.head_count_kv").is_some() {
            size("attention.head_count_kv")?
        } else {
            n_heads
        },
        rope_theta: float("rope.freq_base", Some(10_000.0))?,
        rms_eps: float("attention.layer_norm_rms_epsilon", None)?,
        context_length: size("context_length")?,
        tied_embeddings: !file.tensors.contains_key("output.weight"),
    };
    params.validate(file.path())?;
    Ok(params)
}

/// Loads a Llama GGUF: hyper-parameters, all metadata (the tokenizer is in it), and the weights
/// dequantized to f32 under HF names, with Q/K rows in HF order. With tied embeddings there is
/// no `lm_head.weight`.
pub fn load_llama_gguf(path: &Path) -> Result<(LlamaParams, Metadata, WeightMap)> {
    let file = GgufFile::open(path)?;
    let params = llama_params(&file)?;
    // Name a missing tensor by its GGUF name, before spending time on the others.
    let required = ["token_embd.weight".to_string(), "output_norm.weight".to_string()]
        .into_iter()
        .chain((0..params.n_layers).flat_map(|l| LAYER_TENSORS.map(|(g, _)| format!("blk.{l}.{g}.weight"))));
    for name in required {
        if !file.tensors.contains_key(&name) {
            return Err(Error::tensor(path, name, "missing"));
        }
    }
    let mut weights = WeightMap::new();
    for gguf_name in file.tensors.keys() {
        let Some(name) = hf_name(gguf_name) else { continue };
        let mut tensor = file.tensor(gguf_name)?;
        let heads = if name.contains(".self_attn.q_proj.") {
            Some(params.n_heads)
        } else if name.contains(".self_attn.k_proj.") {
            Some(params.n_kv_heads)
        } else {
            None
        };
        if let Some(heads) = heads {
            tensor = unpermute_rows(&tensor, heads).ok_or_else(|| {
                Error::tensor(path, gguf_name, format!("shape {:?} does not split into {heads} heads", tensor.shape))
            })?;
        }
        weights.insert(name, tensor);
    }
    params.check_weights(&weights, path)?;
    Ok((params, file.metadata, weights))
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- a minimal GGUF writer, for files the tests make ----

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    fn type_id(v: &MetaValue) -> u32 {
        match v {
            MetaValue::U8(_) => 0,
            MetaValue::I8(_) => 1,
            MetaValue::U16(_) => 2,
            MetaValue::I16(_) => 3,
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::Str(_) => 8,
            MetaValue::Array(_) => 9,
            MetaValue::U64(_) => 10,
            MetaValue::I64(_) => 11,
            MetaValue::F64(_) => 12,
        }
    }

    fn put_value(out: &mut Vec<u8>, v: &MetaValue) {
        match v {
            MetaValue::U8(x) => out.extend(x.to_le_bytes()),
            MetaValue::I8(x) => out.extend(x.to_le_bytes()),
            MetaValue::U16(x) => out.extend(x.to_le_bytes()),
            MetaValue::I16(x) => out.extend(x.to_le_bytes()),
            MetaValue::U32(x) => out.extend(x.to_le_bytes()),
            MetaValue::I32(x) => out.extend(x.to_le_bytes()),
            MetaValue::U64(x) => out.extend(x.to_le_bytes()),
            MetaValue::I64(x) => out.extend(x.to_le_bytes()),
            MetaValue::F32(x) => out.extend(x.to_le_bytes()),
            MetaValue::F64(x) => out.extend(x.to_le_bytes()),
            MetaValue::Bool(x) => out.push(u8::from(*x)),
            MetaValue::Str(s) => put_str(out, s),
            MetaValue::Array(items) => {
                let elem = items.first().map_or(0, type_id);
                out.extend(elem.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|i| put_value(out, i));
            }
        }
    }

    /// A tensor to write: GGUF name, HF-order shape, ggml type id and its encoded bytes.
    struct Out {
        name: String,
        shape: Vec<usize>,
        type_id: u32,
        bytes: Vec<u8>,
    }

    fn write_gguf(kv: &[(&str, MetaValue)], tensors: &[Out], alignment: usize) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(MAGIC);
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((kv.len() as u64).to_le_bytes());
        for (k, v) in kv {
            put_str(&mut out, k);
            out.extend(type_id(v).to_le_bytes());
            put_value(&mut out, v);
        }
        let mut offset = 0usize;
        let mut offsets = Vec::new();
        for t in tensors {
            put_str(&mut out, &t.name);
            out.extend((t.shape.len() as u32).to_le_bytes());
            t.shape.iter().rev().for_each(|d| out.extend((*d as u64).to_le_bytes()));
            out.extend(t.type_id.to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offsets.push(offset);
            offset = (offset + t.bytes.len()).div_ceil(alignment) * alignment;
        }
        out.resize(out.len().div_ceil(alignment) * alignment, 0);
        let data_start = out.len();
        for (t, off) in tensors.iter().zip(offsets) {
            out.resize(data_start + off, 0);
            out.extend(&t.bytes);
        }
        out
    }

    fn f32_bytes(data: &[f32]) -> Vec<u8> {
        data.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn f16_bytes(data: &[f32]) -> Vec<u8> {
        data.iter().flat_map(|x| f16::from_f32(*x).to_le_bytes()).collect()
    }

    fn bf16_bytes(data: &[f32]) -> Vec<u8> {
        data.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect()
    }

    /// Q8_0 blocks with scale 0.5: every value must be a multiple of 0.5 in [-64, 63.5].
    fn q8_0_bytes(data: &[f32]) -> Vec<u8> {
        data.chunks(QK)
            .flat_map(|block| {
                let mut b = f16::from_f32(0.5).to_le_bytes().to_vec();
                b.extend(block.iter().map(|x| ((x / 0.5) as i8) as u8));
                b
            })
            .collect()
    }

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

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("soft-gguf-test-{}-{name}.gguf", std::process::id()))
    }

    // ---- dequantization on hand-made blocks ----

    #[test]
    fn q8_0_block() {
        // d = 0.25 (f16 0x3400), q = 0, 1, -1, 2, -2, ... , 127 at the end.
        let mut block = vec![0x00, 0x34];
        let qs: Vec<i8> = (0..31).map(|i: i8| if i % 2 == 1 { i / 2 + 1 } else { -(i / 2) }).chain([127]).collect();
        block.extend(qs.iter().map(|&q| q as u8));
        let got = dequantize(GgmlType::Q8_0, &block);
        assert_eq!(&got[..5], &[0.0, 0.25, -0.25, 0.5, -0.5]);
        assert_eq!(got[31], 31.75);
        assert_eq!(got.len(), 32);
    }

    #[test]
    fn q4_1_block() {
        // d = 0.5 (0x3800), m = -1.0 (0xBC00); byte k = (k+1) << 4 | k for k < 15, last 0xF0 | 0x0F.
        let mut block = vec![0x00, 0x38, 0x00, 0xBC];
        block.extend((0u8..16).map(|k| ((k + 1) % 16) << 4 | k));
        let got = dequantize(GgmlType::Q4_1, &block);
        // Low nibbles 0..15 are elements 0..16: 0.5 * k - 1.
        assert_eq!(&got[..4], &[-1.0, -0.5, 0.0, 0.5]);
        assert_eq!(got[15], 6.5);
        // High nibbles are elements 16..32: (k+1) % 16, so 1, 2, ..., 15, 0.
        assert_eq!(&got[16..19], &[-0.5, 0.0, 0.5]);
        assert_eq!(got[30], 6.5);
        assert_eq!(got[31], -1.0);
    }

    #[test]
    fn q4_0_block() {
        // d = 2.0 (0x4000); byte 0 = 0x9F: element 0 is (15 - 8) * 2, element 16 is (9 - 8) * 2.
        let mut block = vec![0x00, 0x40, 0x9F];
        block.extend([0x88; 15]);
        let got = dequantize(GgmlType::Q4_0, &block);
        assert_eq!((got[0], got[16], got[1], got[17]), (14.0, 2.0, 0.0, 0.0));
    }

    // ---- whole files ----

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
        let params = LlamaParams {
            vocab_size: VOCAB,
            hidden_size: HIDDEN,
            intermediate_size: FFN,
            n_layers: LAYERS,
            n_heads: HEADS,
            n_kv_heads: KV_HEADS,
            rope_theta: 100_000.0,
            rms_eps: 1e-5,
            context_length: 128,
            tied_embeddings: true,
        };
        let mut weights = WeightMap::new();
        let mut out = Vec::new();
        for (t, (name, shape)) in params.expected_shapes().into_iter().enumerate() {
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
                        let (g, _) = LAYER_TENSORS.iter().find(|(_, hf)| *hf == part).unwrap();
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
                _ if shape.len() == 1 => (0, f32_bytes(&stored.data)),
                0 => (8, q8_0_bytes(&stored.data)),
                1 => (1, f16_bytes(&stored.data)),
                2 => (30, bf16_bytes(&stored.data)),
                _ => (0, f32_bytes(&stored.data)),
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
        let (params, meta, got) = load_llama_gguf(&path).unwrap();
        std::fs::remove_file(&path).unwrap();

        assert_eq!((params.vocab_size, params.hidden_size, params.intermediate_size), (VOCAB, HIDDEN, FFN));
        assert_eq!((params.n_layers, params.n_heads, params.n_kv_heads), (LAYERS, HEADS, KV_HEADS));
        assert_eq!((params.rope_theta, params.rms_eps, params.context_length), (100_000.0, 1e-5, 128));
        assert!(params.tied_embeddings);
        for (k, v) in tiny_meta() {
            assert_eq!(meta.get(k), Some(&v), "{k}");
        }
        assert_eq!(meta.u64("llama.attention.head_count_kv").unwrap(), Some(KV_HEADS as u64));
        assert!(meta.u64("general.architecture").is_err());
        assert_eq!(got, weights);
    }

    #[test]
    fn q4_1_tensor_through_a_file() {
        // One 2x32 Q4_1 tensor: row 0 all nibbles 3, row 1 all nibbles 12, d = 0.5, m = 1.
        let block = |nib: u8| {
            let mut b = vec![0x00, 0x38, 0x00, 0x3C];
            b.extend([nib << 4 | nib; 16]);
            b
        };
        let bytes = [block(3), block(12)].concat();
        let file = write_gguf(&[], &[Out { name: "w".into(), shape: vec![2, 32], type_id: 3, bytes }], 32);
        let t = GgufFile::from_bytes(Path::new("mem.gguf"), file).unwrap().tensor("w").unwrap();
        assert_eq!(t.shape, vec![2, 32]);
        assert!(t.data[..32].iter().all(|&x| x == 2.5) && t.data[32..].iter().all(|&x| x == 7.0));
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

    #[test]
    fn smollm2_q4_1_file_if_present() {
        let dir = std::env::var_os("SOFT_MODELS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
        let path = dir.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        if !path.exists() {
            eprintln!("skipped: {} not found (run scripts/fetch-smollm2.sh)", path.display());
            return;
        }
        let (params, meta, weights) = load_llama_gguf(&path).unwrap();
        assert_eq!((params.n_layers, params.hidden_size, params.intermediate_size), (30, 576, 1536));
        assert_eq!((params.n_heads, params.n_kv_heads, params.vocab_size), (9, 3, 49152));
        assert_eq!((params.rope_theta, params.rms_eps, params.context_length), (100_000.0, 1e-5, 8192));
        assert!(params.tied_embeddings && !weights.contains_key("lm_head.weight"));
        assert!(weights.values().all(|t| t.data.iter().all(|x| x.is_finite())));

        let tok = crate::model::tokenizer::tokenizer_from_gguf(&meta).unwrap();
        let text = "The capital of France is";
        let enc = tok.encode(text, false).unwrap();
        assert_eq!(enc.get_tokens(), &["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]);
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
        let digits = tok.encode("2024", false).unwrap();
        assert_eq!(digits.get_tokens(), &["2", "0", "2", "4"]);
        let chat = tok.encode("<|im_start|>user", false).unwrap();
        assert_eq!(chat.get_ids()[0], 1);
    }
}
