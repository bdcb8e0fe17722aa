//! GGUF, llama.cpp's model file (versions 2 and 3): header, metadata and tensor directory, with
//! tensors dequantized on demand (`dequant.rs`). What a Llama's tensors and tokenizer look like
//! in it is in `llama.rs` and `tokenizer.rs` beside this file.

pub mod dequant;
pub mod llama;
pub mod tokenizer;
/// Writes GGUF files: the fixtures of this crate's tests and of its reliability suite.
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::kernels::blocks::BlockMatrix;
use crate::model::weights::RawTensor;
use crate::{Error, Result};
use dequant::{dequantize, GgmlType};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
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
        let (ty, shape, data) = self.stored(name)?;
        Ok(RawTensor::new(shape, dequantize(ty, data)))
    }

    /// The named tensor as the quantized blocks it is stored in, when it is a matrix of Q4_0,
    /// Q4_1 or Q8_0 blocks (`[rows, columns]`, HF order); `None` for any other type.
    pub fn blocks(&self, name: &str) -> Result<Option<BlockMatrix>> {
        let (ty, shape, data) = self.stored(name)?;
        let Some(ty) = ty.block_type() else { return Ok(None) };
        let &[rows, columns] = shape.as_slice() else { return Ok(None) };
        let matrix = BlockMatrix::new(ty, rows, columns, data.to_vec());
        matrix.map(Some).ok_or_else(|| Error::tensor(self.path(), name, format!("{shape:?} is not whole {} blocks", ty.name())))
    }

    /// The named tensor's type, shape (HF order) and bytes, checked against the file.
    fn stored(&self, name: &str) -> Result<(GgmlType, Vec<usize>, &[u8])> {
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
        Ok((info.ggml_type, shape, data))
    }
}

fn align_up(pos: u64, alignment: u64) -> Option<u64> {
    Some(pos.checked_add(alignment - 1)? / alignment * alignment)
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

#[cfg(test)]
mod tests {
    use super::writer::{write_gguf, Out};
    use super::*;

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
}
