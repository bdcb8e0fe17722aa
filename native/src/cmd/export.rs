//! `soft-train export`: what the browser page loads, from a `soft-train run` directory. The base
//! model as a Hugging Face checkpoint (config.json, model.safetensors, tokenizer.json), the SFT
//! adapter, the SOFT adapter and that of every SOFT epoch (PEFT layout), the catalog's embedding
//! table (computed here: embedding 6k titles in a browser would take minutes), the run's reports,
//! and `manifest.json` naming all of it, so the page runs whatever model an export holds.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::{Device, Tensor};
use serde_json::json;
use soft_core::atomic_file::write_atomic;
use soft_core::data::dataset::{Dataset, Source};
use soft_core::data::prompt;
use soft_core::model::formats::hf_write::{hf_config_json, safetensors_bytes, tokenizer_config_json};
use soft_core::model::llama::Llama;
use soft_core::model::formats::peft::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use soft_core::model::formats::pretrained::load_path;
use soft_core::model::formats::tokenizer::encode_prompt;
use soft_core::model::formats::weights::{FloatEncoding, RawTensor, WeightMap};
use soft_core::train::soft::EpochAdapters;

use crate::grounder_cache::grounder;
use crate::llm_run::ADAPTER_DIR;
use crate::model_arg::resolve;
use crate::run_info::{RunInfo, SftDetails, SoftDetails, REPORT_FILE};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A `soft-train run` directory (its `sft/`, `soft/`, `data/` and `report.json`).
    #[arg(long)]
    pub run: PathBuf,
    /// Where to write the page's assets (`web/assets` ships them with the page).
    #[arg(long)]
    pub out: PathBuf,
    /// Encoding of the base weights and the embedding table: f16 halves the download; the
    /// export prints how far its logits are from f32's.
    #[arg(long, value_enum, default_value = "f16")]
    pub dtype: Dtype,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dtype {
    F16,
    F32,
}

impl Dtype {
    fn encoding(self) -> FloatEncoding {
        match self {
            Dtype::F16 => FloatEncoding::F16,
            Dtype::F32 => FloatEncoding::F32,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Dtype::F16 => "float16",
            Dtype::F32 => "float32",
        }
    }
}

/// Paths inside the export, as the manifest names them (relative to the manifest).
const MODEL_DIR: &str = "model";
const GROUNDING_FILE: &str = "model/grounding.safetensors";
/// The embedding table's tensor in `GROUNDING_FILE`; the item ids are in the manifest.
pub const GROUNDING_TENSOR: &str = "embeddings";

pub fn execute(args: &Args) -> Result<()> {
    let (run, out) = (&args.run, &args.out);
    let soft_dir = run.join("soft");
    let sft_dir = run.join("sft");
    let soft_run = RunInfo::<SoftDetails>::load(&soft_dir)?;
    let sft_run = RunInfo::<SftDetails>::load(&sft_dir)?;
    let details = &soft_run.details;
    let data_dir = run.join("data");
    let dataset = Dataset::load(&Source::Path(data_dir.clone()), 0, None)
        .with_context(|| format!("{}: the run's prepared data", data_dir.display()))?;

    let device = Device::flex();
    let model_path = resolve(&details.base_model)?;
    let base = load_path(&model_path, &device)?;
    let encoding = args.dtype.encoding();

    // The base model, and how much the chosen encoding moves its logits on real prompts.
    let weights = base.model.to_hf_weights()?;
    let weights_path = out.join(MODEL_DIR).join("model.safetensors");
    let weight_bytes = safetensors_bytes(&weights, encoding, &weights_path)?;
    let prompts: Vec<Vec<u32>> = dataset
        .windows
        .iter()
        .step_by((dataset.windows.len() / 8).max(1))
        .take(8)
        .map(|w| {
            let p = prompt::prompt(dataset.meta.domain, &titles(&dataset, w.history()));
            encode_prompt(&base.tokenizer, &base.special, &p)
        })
        .collect::<soft_core::Result<_>>()?;
    let reread = soft_core::model::formats::hf::safetensors_from_bytes(&weight_bytes, &weights_path)?;
    let exported = Llama::from_weights(base.model.config(), &reread, &device)?;
    let logit_diff = max_logit_diff(&base.model, &exported, &prompts);
    println!(
        "base weights as {}: max |logit - f32 logit| {logit_diff:.3e} on {} prompts",
        args.dtype.name(),
        prompts.len()
    );

    let special = &base.special;
    let model_files = [
        ("config.json", serde_json::to_vec_pretty(&hf_config_json(base.model.config(), special, args.dtype.name()))?),
        ("tokenizer_config.json", serde_json::to_vec_pretty(&tokenizer_config_json(special))?),
        (
            "tokenizer.json",
            base.tokenizer
                .to_string(false)
                .map_err(|e| anyhow::anyhow!("serialising the tokenizer: {e}"))?
                .into_bytes(),
        ),
        ("model.safetensors", weight_bytes),
    ];
    for (name, bytes) in &model_files {
        write_atomic(&out.join(MODEL_DIR).join(name), bytes)?;
    }

    // The catalog's embedding table, as the native runs ground with it.
    let grounder = grounder(&base, &model_path, &dataset.catalog)?;
    let [n, d] = grounder.table.dims();
    let table =
        grounder.table.clone().into_data().convert::<f32>().try_into_vec::<f32>().map_err(soft_core::Error::from)?;
    let table_map = WeightMap::from([(GROUNDING_TENSOR.to_string(), RawTensor::new(vec![n, d], table))]);
    let grounding_path = out.join(GROUNDING_FILE);
    write_atomic(&grounding_path, &safetensors_bytes(&table_map, encoding, &grounding_path)?)?;

    // Adapters: SFT's, SOFT's (the best epoch, as evaluated), and every SOFT epoch's.
    copy_adapter(&sft_dir.join(ADAPTER_DIR), &out.join(MODEL_DIR).join("sft"))?;
    copy_adapter(&soft_dir.join(ADAPTER_DIR), &out.join(MODEL_DIR).join("soft"))?;
    let mut epochs = Vec::new();
    for record in &details.report.epochs {
        let from = EpochAdapters::dir(&soft_dir, record.epoch);
        if !from.exists() {
            bail!(
                "{}: missing; this run was trained before `soft` kept every epoch's adapter: train it again",
                from.display()
            );
        }
        let rel = format!("{MODEL_DIR}/soft-epochs/{}", record.epoch);
        copy_adapter(&from, &out.join(&rel))?;
        epochs.push(json!({ "epoch": record.epoch, "lambda": record.lambda, "adapter": rel }));
    }

    let schedule = serde_json::to_value(details.config.schedule)?;
    let reports = [
        (
            soft_dir.join(REPORT_FILE),
            "reports/soft.json",
            format!("SOFT ({}), seed {}", schedule.as_str().unwrap_or("?"), details.config.sft.train.seed),
        ),
        (sft_dir.join(REPORT_FILE), "reports/sft.json", format!("SFT, seed {}", sft_run.details.config.train.seed)),
        (run.join(REPORT_FILE), "reports/run.json", "the whole run".to_string()),
    ];
    let mut report_entries = Vec::new();
    for (from, to, label) in reports {
        // The whole run's report comes last (after every evaluation): an export of a run still
        // evaluating ships the stages' reports without it.
        if to == "reports/run.json" && !from.exists() {
            println!("{}: not written yet (the run is still going): exported without it", from.display());
            continue;
        }
        let bytes = std::fs::read(&from).with_context(|| format!("{}: the run's report", from.display()))?;
        write_atomic(&out.join(to), &bytes)?;
        report_entries.push(json!({ "label": label, "path": to }));
    }

    let dataset_entry = dataset_entry(&dataset, &data_dir, out)?;
    let config = &details.config.sft;
    let manifest = json!({
        "about": format!("What the page loads, written by `soft-train export --run {}`.", run.display()),
        "dataset": dataset_entry,
        "reports": report_entries,
        "model": {
            "name": details.base_model,
            "config": format!("{MODEL_DIR}/config.json"),
            "weights": format!("{MODEL_DIR}/model.safetensors"),
            "tokenizer": format!("{MODEL_DIR}/tokenizer.json"),
            "tokenizer_config": format!("{MODEL_DIR}/tokenizer_config.json"),
            "dtype": args.dtype.name(),
            "max_logit_diff_vs_f32": logit_diff,
            "grounding": { "table": GROUNDING_FILE, "tensor": GROUNDING_TENSOR, "ids": grounder.ids() },
            "beam": { "num_beams": config.beams, "max_new_tokens": config.max_new_tokens, "length_penalty": 1.0 },
            "decoding": config.decoding.name(),
            "sft": { "adapter": format!("{MODEL_DIR}/sft") },
            "soft": { "adapter": format!("{MODEL_DIR}/soft"), "best_epoch": details.report.best_epoch, "epochs": epochs },
        },
    });
    write_atomic(&out.join("manifest.json"), serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    println!("wrote {} ({} bytes)", out.display(), dir_size(out)?);
    Ok(())
}

fn titles<'a>(dataset: &'a Dataset, ids: &[u32]) -> Vec<&'a str> {
    ids.iter().map(|&id| dataset.catalog.title(id).unwrap_or_default()).collect()
}

/// The largest difference between the two models' next-token logits over `prompts`.
fn max_logit_diff(a: &Llama, b: &Llama, prompts: &[Vec<u32>]) -> f32 {
    let device = a.device();
    prompts
        .iter()
        .map(|p| {
            let n = p.len();
            let ids: Vec<i64> = p.iter().map(|&t| t as i64).collect();
            let tokens = Tensor::<2, burn::tensor::Int>::from_data(burn::tensor::TensorData::new(ids, [1, n]), &device);
            let mask = Tensor::<2, burn::tensor::Int>::ones([1, n], &device);
            let (x, y) = (a.forward(tokens.clone(), mask.clone(), None), b.forward(tokens, mask, None));
            (x - y).abs().max().into_scalar::<f32>()
        })
        .fold(0.0, f32::max)
}

fn copy_adapter(from: &Path, to: &Path) -> Result<()> {
    for name in [ADAPTER_CONFIG, ADAPTER_WEIGHTS] {
        let bytes = std::fs::read(from.join(name)).with_context(|| format!("{}", from.join(name).display()))?;
        write_atomic(&to.join(name), &bytes)?;
    }
    Ok(())
}

/// The manifest's dataset: the embedded Amazon Books files the page's build ships already, or the
/// run's prepared catalog and sequences copied into the export.
fn dataset_entry(dataset: &Dataset, data_dir: &Path, out: &Path) -> Result<serde_json::Value> {
    let domain = serde_json::to_value(dataset.meta.domain)?;
    if dataset.meta.name == "amazon-books" {
        return Ok(json!({ "name": dataset.meta.name, "domain": domain,
            "items": "data/amazon-books/id2name.json", "sequences": "data/amazon-books/sequences.csv" }));
    }
    for name in ["id2name.json", "sequences.csv"] {
        let bytes = std::fs::read(data_dir.join(name)).with_context(|| format!("{}", data_dir.join(name).display()))?;
        write_atomic(&out.join("data").join(&dataset.meta.name).join(name), &bytes)?;
    }
    Ok(json!({ "name": dataset.meta.name, "domain": domain,
        "items": format!("data/{}/id2name.json", dataset.meta.name),
        "sequences": format!("data/{}/sequences.csv", dataset.meta.name) }))
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}
