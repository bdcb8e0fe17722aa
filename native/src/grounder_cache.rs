//! The base model's embeddings of every grounding item, cached beside the model: every stage
//! and evaluation of a run needs the same table, and computing it costs seconds per process.

use std::path::{Path, PathBuf};

use anyhow::Result;
use burn::tensor::{Device, Tensor, TensorData};
use soft_core::atomic_file::write_atomic;
use soft_core::data::Catalog;
use soft_core::eval::llm::Grounder;
use soft_core::hash::{fnv1a, FNV_OFFSET};
use soft_core::model::formats::pretrained::Pretrained;
use soft_core::model::weights::{BaseWeights, FloatEncoding};

/// The grounder of `pre` (loaded from `model_path`) for `catalog`, from the cache when it holds
/// one; the cache key covers the model file (size, modification time), the dtype its base
/// weights are kept in (half precision gives another table) and every title.
pub fn grounder(pre: &Pretrained, model_path: &Path, catalog: &Catalog) -> Result<Grounder> {
    let ids = catalog.grounding_ids();
    // Half precision gives another table, and a model over quantized blocks too (its sums run
    // in another order); bf16-dot embeds as bf16 does (its dot products are a training step's),
    // int8-dot as stored (its integer products are a decoding step's; grounding runs the
    // model's forward).
    let held = match pre.model.base_weights() {
        BaseWeights::Bf16Dot => BaseWeights::Float(FloatEncoding::BF16),
        BaseWeights::Int8Dot => BaseWeights::Stored,
        held => held,
    };
    let cache = cache_path(model_path, held, catalog, &ids);
    if let Some(table) = cache.as_deref().and_then(|p| read_table(p, ids.len(), &pre.model.device())) {
        return Ok(Grounder::from_table(ids, table)?);
    }
    let mut reporter = crate::progress::Reporter::new();
    let grounder = Grounder::new(&pre.model, &pre.tokenizer, &pre.special, catalog, &mut |e| reporter.handle(e))?;
    if let Some(path) = cache {
        // A cache that cannot be written only costs time later.
        let _ = write_table(&path, &grounder.table);
    }
    Ok(grounder)
}

/// `held`: how the base weights are held.
fn cache_path(model_path: &Path, held: BaseWeights, catalog: &Catalog, ids: &[u32]) -> Option<PathBuf> {
    let (dir, weights) = if model_path.is_dir() {
        (model_path.to_path_buf(), model_path.join(soft_core::model::formats::pretrained::WEIGHTS_FILE))
    } else {
        (model_path.parent()?.to_path_buf(), model_path.to_path_buf())
    };
    let meta = std::fs::metadata(&weights).ok()?;
    let mtime = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
    let mut h = fnv1a(FNV_OFFSET, weights.to_string_lossy().as_bytes());
    h = fnv1a(h, &meta.len().to_le_bytes());
    h = fnv1a(h, &mtime.to_le_bytes());
    // f32 tables keep the keys they had before half precision existed.
    if held != BaseWeights::Float(FloatEncoding::F32) {
        h = fnv1a(h, held.name().as_bytes());
    }
    for &id in ids {
        h = fnv1a(h, &id.to_le_bytes());
        h = fnv1a(h, catalog.title(id).unwrap_or_default().as_bytes());
    }
    Some(dir.join(format!("grounding-{h:016x}.f32")))
}

/// Little-endian f32 rows, preceded by the row count and width (u64 each).
fn read_table(path: &Path, rows: usize, device: &Device) -> Option<Tensor<2>> {
    let bytes = std::fs::read(path).ok()?;
    let n = u64::from_le_bytes(bytes.get(0..8)?.try_into().ok()?) as usize;
    let d = u64::from_le_bytes(bytes.get(8..16)?.try_into().ok()?) as usize;
    let body = bytes.get(16..)?;
    if n != rows || body.len() != n * d * 4 {
        return None;
    }
    let values: Vec<f32> = body.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    Some(Tensor::from_data(TensorData::new(values, [n, d]), device))
}

fn write_table(path: &Path, table: &Tensor<2>) -> Result<()> {
    let [n, d] = table.dims();
    let values = table.clone().into_data().convert::<f32>();
    let values = values.as_slice::<f32>().map_err(soft_core::Error::from)?;
    let mut bytes = Vec::with_capacity(16 + values.len() * 4);
    bytes.extend_from_slice(&(n as u64).to_le_bytes());
    bytes.extend_from_slice(&(d as u64).to_le_bytes());
    values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
    Ok(write_atomic(path, &bytes)?)
}
