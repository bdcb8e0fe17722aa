//! A language-model run directory opened for use: its base model, the adapter it trained, the
//! base model's item embeddings, and the decoding it was validated with.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use burn::tensor::{Device, Tensor, TensorData};
use soft_core::data::{Catalog, Domain};
use soft_core::eval::decoding::Decoding;
use soft_core::eval::llm::{Grounder, LlmRecommender};
use soft_core::hash::{fnv1a, FNV_OFFSET};
use soft_core::model::generate::BeamConfig;
use soft_core::model::llama::Llama;
use soft_core::model::pretrained::{load_path, Pretrained};
use soft_core::train::sft::SftConfig;

use crate::cmd::generate::resolve;
use crate::run_dir::RunInfo;

/// Where a language-model run keeps its PEFT adapter.
pub const ADAPTER_DIR: &str = "adapter";

pub struct LoadedRun {
    pub info: RunInfo,
    pub base: Pretrained,
    pub tuned: Llama,
    pub grounder: Grounder,
    pub beam: BeamConfig,
    /// The run's training settings (SOFT runs: those of their SFT part).
    pub config: SftConfig,
}

impl LoadedRun {
    /// Opens the run in `dir`; `decoding` overrides the decoding it was trained with.
    pub fn open(dir: &Path, catalog: &Catalog, device: &Device, decoding: Option<Decoding>) -> Result<Self> {
        let info = RunInfo::load(dir)?;
        let run_file = dir.join("run.json");
        let config: SftConfig = serde_json::from_value(info.details["config"]["sft"].clone())
            .or_else(|_| serde_json::from_value(info.details["config"].clone()))
            .with_context(|| format!("{}: no language-model training config", run_file.display()))?;
        let base_name =
            info.details["base_model"].as_str().ok_or_else(|| anyhow!("{}: missing base_model", run_file.display()))?;
        let path = resolve(base_name)?;
        let base = load_path(&path, device)?;
        let adapter = dir.join(ADAPTER_DIR);
        let tuned = base
            .model
            .clone()
            .load_adapter(&adapter)
            .with_context(|| format!("{}: unusable adapter", adapter.display()))?;
        let grounder = grounder(&base, &path, catalog)?;
        let decoding = decoding.unwrap_or(config.decoding);
        let beam = decoding.apply(config.beam(base.special.eos), &base.tokenizer, &base.special, catalog)?;
        Ok(Self { info, base, tuned, grounder, beam, config })
    }

    pub fn recommender(&self, domain: Domain) -> LlmRecommender<'_> {
        LlmRecommender {
            tuned: &self.tuned,
            base: &self.base.model,
            tokenizer: &self.base.tokenizer,
            special: &self.base.special,
            grounder: &self.grounder,
            domain,
            beam: self.beam.clone(),
        }
    }
}

/// The base model's embeddings of every grounding item, cached beside the model: every stage
/// and evaluation of a run needs the same table, and computing it costs seconds per process.
/// The cache key covers the model file (size, modification time) and every title.
pub fn grounder(pre: &Pretrained, model_path: &Path, catalog: &Catalog) -> Result<Grounder> {
    let ids = catalog.grounding_ids();
    let cache = cache_path(model_path, catalog, &ids);
    if let Some(table) = cache.as_deref().and_then(|p| read_table(p, ids.len(), &pre.model.device())) {
        return Ok(Grounder { ids, table });
    }
    let mut reporter = crate::progress::Reporter::new();
    let grounder = Grounder::new(&pre.model, &pre.tokenizer, &pre.special, catalog, &mut |e| reporter.handle(e))?;
    if let Some(path) = cache {
        // A cache that cannot be written only costs time later.
        let _ = write_table(&path, &grounder.table);
    }
    Ok(grounder)
}

fn cache_path(model_path: &Path, catalog: &Catalog, ids: &[u32]) -> Option<PathBuf> {
    let (dir, weights) = if model_path.is_dir() {
        (model_path.to_path_buf(), model_path.join(soft_core::model::pretrained::WEIGHTS_FILE))
    } else {
        (model_path.parent()?.to_path_buf(), model_path.to_path_buf())
    };
    let meta = std::fs::metadata(&weights).ok()?;
    let mtime = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
    let mut h = fnv1a(FNV_OFFSET, weights.to_string_lossy().as_bytes());
    h = fnv1a(h, &meta.len().to_le_bytes());
    h = fnv1a(h, &mtime.to_le_bytes());
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
    let values = values.as_slice::<f32>().map_err(|e| anyhow!("{e:?}"))?;
    let mut bytes = Vec::with_capacity(16 + values.len() * 4);
    bytes.extend_from_slice(&(n as u64).to_le_bytes());
    bytes.extend_from_slice(&(d as u64).to_le_bytes());
    values.iter().for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
    soft_core::atomic_file::write_atomic(path, &bytes)?;
    Ok(())
}

/// `--decoding`: `free` beam search (the paper's) or `constrained` to real items' titles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DecodingArg {
    Free,
    Constrained,
}

impl From<DecodingArg> for Decoding {
    fn from(d: DecodingArg) -> Self {
        match d {
            DecodingArg::Free => Decoding::Free,
            DecodingArg::Constrained => Decoding::Constrained,
        }
    }
}

impl From<Decoding> for DecodingArg {
    fn from(d: Decoding) -> Self {
        match d {
            Decoding::Free => DecodingArg::Free,
            Decoding::Constrained => DecodingArg::Constrained,
        }
    }
}
