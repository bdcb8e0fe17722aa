//! `soft-train export`: what the browser page loads, from a `soft-train run` directory. The base
//! model as a Hugging Face checkpoint (config.json, model.safetensors, tokenizer.json), the SFT
//! adapter, the SOFT adapter and that of every SOFT epoch (PEFT layout), the catalog's embedding
//! table (computed here: embedding 6k titles in a browser would take minutes), the run's reports,
//! and `manifest.json` naming all of it, so the page runs whatever model an export holds.
//!
//! A run with LLaRA (`run --backbones bigrec,llara`) also ships LLaRA's SFT and SOFT adapters
//! (every SOFT epoch's too) under `model/llara/`: each with its projector's two layers, and the
//! frozen item table they all read once, beside them (f16 by default; the export measures what
//! that does to the projected rows, the logits and the answers). A run without LLaRA exports as
//! before.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::{Device, Tensor};
use serde_json::json;
use soft_core::atomic_file::write_atomic;
use soft_core::checksums::sha256_file;
use soft_core::data::dataset::{Dataset, Source};
use soft_core::data::prompt::{self, Backbone, PromptOptions};
use soft_core::eval::llm::{generate_answers, history_prompt_with};
use soft_core::model::decoding::generate::BeamConfig;
use soft_core::model::formats::hf::safetensors_from_bytes;
use soft_core::model::formats::hf_write::{hf_config_json, tokenizer_config_json};
use soft_core::model::formats::peft::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use soft_core::model::formats::pretrained::{load_path, Pretrained};
use soft_core::model::formats::tokenizer::encode_prompt;
use soft_core::model::llama::Llama;
use soft_core::model::projector::{ItemProjector, PROJECTOR_FILE, TABLE};
use soft_core::model::weights::safetensors_bytes;
use soft_core::model::weights::{FloatEncoding, RawTensor, WeightMap};
use soft_core::train::soft::EpochAdapters;

use crate::cmd::run::{read_config, test_rows, TABLE_FILE};
use crate::grounder_cache::grounder;
use crate::llm_run::ADAPTER_DIR;
use crate::model_arg::resolve;
use crate::run_info::{RunHeader, RunInfo, SftDetails, SoftDetails, REPORT_FILE, RUN_FILE};

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
    /// Encoding of LLaRA's item table (runs with LLaRA only; shipped once for every LLaRA
    /// adapter): the export prints how far f16 moves the projected rows, the logits and the answers.
    #[arg(long, value_enum, default_value = "f16")]
    pub item_table_dtype: Dtype,
    /// Export models trained by a binary built from uncommitted changes (their commit ends in
    /// `-dirty`: no commit holds the code that made them); the page then says so.
    #[arg(long)]
    pub allow_dirty: bool,
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
/// LLaRA's part of the export: its adapters, and the item table they share.
const LLARA_DIR: &str = "model/llara";
const ITEM_TABLE_FILE: &str = "model/llara/item_table.safetensors";
/// Beside each LLaRA adapter: its projector's two layers (f32, PyTorch's state-dict names), the
/// item table left out. The page puts the table back in before loading a projector.
const PROJECTOR_LAYERS_FILE: &str = "projector_layers.safetensors";
/// Real prompts the encodings are checked on.
const CHECK_PROMPTS: usize = 8;

pub fn execute(args: &Args) -> Result<()> {
    let (run, out) = (&args.run, &args.out);
    let outputs = Outputs::default();
    let soft_dir = run.join("soft");
    let sft_dir = run.join("sft");
    let soft_run = RunInfo::<SoftDetails>::load(&soft_dir)?;
    let sft_run = RunInfo::<SftDetails>::load(&sft_dir)?;
    let details = &soft_run.details;
    // Every model the export ships: BIGRec's SFT and SOFT, and LLaRA's where they finished.
    let mut headers = vec![(sft_dir.clone(), sft_run.header.clone()), (soft_dir.clone(), soft_run.header.clone())];
    for dir in ["sft", "soft"].map(|d| run.join(Backbone::Llara.run_dir(d))) {
        if dir.join(RUN_FILE).exists() {
            headers.push((dir.clone(), RunHeader::load(&dir)?));
        }
    }
    let dirty = dirty_commits(&headers);
    if let Some((dir, commit)) = dirty.first() {
        if !args.allow_dirty {
            bail!(
                "{}: trained by a binary built from uncommitted changes (commit {commit}): no commit holds the code \
                 that made these models. Commit, train again and export, or pass --allow-dirty (the page then \
                 says so)",
                dir.display()
            );
        }
    }
    // The run's test table: every finished method's metrics with intervals, which the page shows
    // beside each answer (`table.md` itself ships too, once the run has written it).
    let run_config = read_config(run)?;
    let metrics = test_rows(run, &run_config).with_context(|| format!("{}: the run's test metrics", run.display()))?;
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
        .step_by((dataset.windows.len() / CHECK_PROMPTS).max(1))
        .take(CHECK_PROMPTS)
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
        outputs.write(&out.join(MODEL_DIR).join(name), bytes)?;
    }

    // The catalog's embedding table, as the native runs ground with it.
    let grounder = grounder(&base, &model_path, &dataset.catalog)?;
    let [n, d] = grounder.table.dims();
    let table =
        grounder.table.clone().into_data().convert::<f32>().try_into_vec::<f32>().map_err(soft_core::Error::from)?;
    let table_map = WeightMap::from([(GROUNDING_TENSOR.to_string(), RawTensor::new(vec![n, d], table))]);
    let grounding_path = out.join(GROUNDING_FILE);
    outputs.write(&grounding_path, &safetensors_bytes(&table_map, encoding, &grounding_path)?)?;

    // Adapters: SFT's, SOFT's (the best epoch, as evaluated), and every SOFT epoch's.
    outputs.copy_adapter(&sft_dir.join(ADAPTER_DIR), &out.join(MODEL_DIR).join("sft"))?;
    outputs.copy_adapter(&soft_dir.join(ADAPTER_DIR), &out.join(MODEL_DIR).join("soft"))?;
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
        outputs.copy_adapter(&from, &out.join(&rel))?;
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
    let table_md = run.join(TABLE_FILE);
    if table_md.exists() {
        let bytes = std::fs::read(&table_md).with_context(|| format!("{}", table_md.display()))?;
        outputs.write(&out.join("reports").join(TABLE_FILE), &bytes)?;
    }
    for (from, to, label) in reports {
        // The whole run's report comes last (after every evaluation): an export of a run still
        // evaluating ships the stages' reports without it.
        if to == "reports/run.json" && !from.exists() {
            println!("{}: not written yet (the run is still going): exported without it", from.display());
            continue;
        }
        let bytes = std::fs::read(&from).with_context(|| format!("{}: the run's report", from.display()))?;
        outputs.write(&out.join(to), &bytes)?;
        report_entries.push(json!({ "label": label, "path": to }));
    }

    let llara = export_llara(args, &outputs, &base, &dataset, &details.base_model)?;
    // The k-core filter the run prepared its data with (`prepare --k-core`), to prepare it again.
    let dataset_entry = dataset_entry(&outputs, &dataset, &data_dir, run_config.data.k_core, out)?;
    let config = &details.config.sft;
    let about = match &llara {
        None => format!("What the page loads, written by `soft-train export --run {}`.", run.display()),
        Some(l) => format!(
            "What the page loads, written by `soft-train export --run {}`. `model.llara`: LLaRA's adapters; each holds \
             its item projector's two layers ({PROJECTOR_LAYERS_FILE}, f32), and the frozen item table they all \
             read ships once ({ITEM_TABLE_FILE}, {}: {}).",
            run.display(),
            args.item_table_dtype.name(),
            l.effect
        ),
    };
    let commits: BTreeSet<String> = headers.iter().filter_map(|(_, h)| h.git_commit.clone()).collect();
    let mut manifest = json!({
        "about": about,
        "provenance": { "commits": commits, "dirty": !dirty.is_empty() },
        "dataset": dataset_entry,
        "reports": report_entries,
        "table": (table_md.exists()).then(|| format!("reports/{TABLE_FILE}")),
        "metrics": metrics,
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
            // How the run ranked items from the beams: the page ranks its answers the same way,
            // so the test numbers beside them describe what it shows.
            "ranking": config.ranking,
            "sft": { "adapter": format!("{MODEL_DIR}/sft") },
            "soft": { "adapter": format!("{MODEL_DIR}/soft"), "best_epoch": details.report.best_epoch, "epochs": epochs },
        },
    });
    if let Some(l) = llara {
        // The prompt options BIGRec trained with (the page writes the same prompt), and LLaRA.
        manifest["model"]["prompt"] = serde_json::to_value(&config.prompt)?;
        manifest["model"]["llara"] = l.entry;
    }
    outputs.write(&out.join("manifest.json"), serde_json::to_string_pretty(&manifest)?.as_bytes())?;
    // What an earlier export left in the directories this one owns (an epoch or LLaRA the new
    // run does not have) would ship unreferenced: removed, so re-exporting over `web/assets` is
    // one command.
    for dir in [MODEL_DIR, "reports"] {
        for stale in outputs.stale(&out.join(dir))? {
            std::fs::remove_file(&stale).with_context(|| format!("removing {}", stale.display()))?;
            println!("removed {} (an earlier export's; not part of this one)", stale.display());
        }
        remove_empty_dirs(&out.join(dir))?;
    }
    println!("wrote {} ({} bytes)", out.display(), dir_size(out)?);
    Ok(())
}

/// The runs among `runs` (directory, header) whose binary was built from uncommitted changes,
/// with that commit.
fn dirty_commits(runs: &[(PathBuf, RunHeader)]) -> Vec<(PathBuf, String)> {
    runs.iter()
        .filter_map(|(dir, h)| {
            h.git_commit.as_ref().filter(|c| c.ends_with("-dirty")).map(|c| (dir.clone(), c.clone()))
        })
        .collect()
}

/// The files this export writes, so that what an earlier export left beside them is known.
#[derive(Default)]
struct Outputs {
    written: RefCell<BTreeSet<PathBuf>>,
}

impl Outputs {
    fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        write_atomic(path, bytes)?;
        self.written.borrow_mut().insert(path.to_path_buf());
        Ok(())
    }

    fn copy_adapter(&self, from: &Path, to: &Path) -> Result<()> {
        for name in [ADAPTER_CONFIG, ADAPTER_WEIGHTS] {
            let bytes = std::fs::read(from.join(name)).with_context(|| format!("{}", from.join(name).display()))?;
            self.write(&to.join(name), &bytes)?;
        }
        Ok(())
    }

    /// Files under `dir` this export did not write.
    fn stale(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        if !dir.is_dir() {
            return Ok(found);
        }
        for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                found.extend(self.stale(&path)?);
            } else if !self.written.borrow().contains(&path) {
                found.push(path);
            }
        }
        Ok(found)
    }
}

/// Removes the directories under `dir` (not `dir`) that hold no file.
fn remove_empty_dirs(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            remove_empty_dirs(&path)?;
            if std::fs::read_dir(&path)?.next().is_none() {
                std::fs::remove_dir(&path).with_context(|| format!("removing {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// What the export wrote for LLaRA: the manifest's `model.llara`, and the measured effect of the
/// item table's encoding in words.
struct LlaraExport {
    entry: serde_json::Value,
    effect: String,
}

/// LLaRA's SFT and SOFT (the best epoch and every epoch) from `RUN/llara-sft` and `RUN/llara-soft`
/// (`run`'s layout, cmd/run/layout.rs), when the run trained LLaRA: the adapters, each
/// projector's layers, the item table once, the two reports. `None` for a run without LLaRA (or
/// whose LLaRA stages have not finished: said so).
fn export_llara(
    args: &Args,
    outputs: &Outputs,
    base: &Pretrained,
    dataset: &Dataset,
    base_model: &str,
) -> Result<Option<LlaraExport>> {
    let (run, out) = (&args.run, &args.out);
    let stage = |dir: &str| run.join(Backbone::Llara.run_dir(dir));
    let (sft_dir, soft_dir) = (stage("sft"), stage("soft"));
    if !sft_dir.exists() && !soft_dir.exists() {
        return Ok(None);
    }
    if let Some(dir) = [&sft_dir, &soft_dir].into_iter().find(|d| !d.join(RUN_FILE).exists()) {
        println!("{}: not finished (the run is still going?): exported without LLaRA", dir.display());
        return Ok(None);
    }
    let soft_run = RunInfo::<SoftDetails>::load(&soft_dir)?;
    let sft_run = RunInfo::<SftDetails>::load(&sft_dir)?;
    let details = &soft_run.details;
    for (dir, model) in [(&soft_dir, &details.base_model), (&sft_dir, &sft_run.details.base_model)] {
        if model != base_model {
            bail!(
                "{}: LLaRA was trained on `{model}`, BIGRec on `{base_model}`: the page ships one base model",
                dir.display()
            );
        }
    }
    let options = &details.config.sft.prompt;
    if options.backbone != Backbone::Llara {
        bail!("{}: its prompt options say backbone `{}`, not llara", soft_dir.display(), options.backbone.name());
    }

    // Every adapter with its projector: (name in the export, run directory).
    let mut adapters =
        vec![("sft".to_string(), sft_dir.join(ADAPTER_DIR)), ("soft".to_string(), soft_dir.join(ADAPTER_DIR))];
    for record in &details.report.epochs {
        let from = EpochAdapters::dir(&soft_dir, record.epoch);
        if !from.exists() {
            bail!("{}: missing: the LLaRA SOFT run kept no adapter for epoch {}", from.display(), record.epoch);
        }
        adapters.push((format!("soft-epochs/{}", record.epoch), from));
    }
    let hidden = base.model.config().hidden_size;
    let device = base.model.device();
    let mut table: Option<RawTensor> = None;
    let mut projectors = Vec::new();
    let mut entries = serde_json::Map::new();
    for (name, from) in &adapters {
        let rel = format!("{LLARA_DIR}/{name}");
        outputs.copy_adapter(from, &out.join(&rel))?;
        let path = from.join(PROJECTOR_FILE);
        let bytes = std::fs::read(&path).with_context(|| format!("{}: LLaRA's item projector", path.display()))?;
        // Checked whole (shapes, finite values, nothing else) before it is split.
        let projector = ItemProjector::from_safetensors(&bytes, &path, hidden, &device)?;
        let mut layers = safetensors_from_bytes(&bytes, &path)?;
        let this = layers.remove(TABLE).with_context(|| format!("{}: no `{TABLE}`", path.display()))?;
        match &table {
            None => table = Some(this),
            Some(first) if first.shape == this.shape && first.data == this.data => {}
            Some(_) => bail!(
                "{}: its item table differs from {}'s: the export ships one table for every LLaRA adapter",
                path.display(),
                adapters[0].1.join(PROJECTOR_FILE).display()
            ),
        }
        let layers_rel = format!("{rel}/{PROJECTOR_LAYERS_FILE}");
        let layers_path = out.join(&layers_rel);
        outputs.write(&layers_path, &safetensors_bytes(&layers, FloatEncoding::F32, &layers_path)?)?;
        entries.insert(name.clone(), json!({ "adapter": rel, "projector": layers_rel }));
        projectors.push((name.clone(), projector, layers));
    }
    let table = table.context("no LLaRA adapter")?;
    let table_path = out.join(ITEM_TABLE_FILE);
    let table_bytes = safetensors_bytes(
        &WeightMap::from([(TABLE.to_string(), table.clone())]),
        args.item_table_dtype.encoding(),
        &table_path,
    )?;
    outputs.write(&table_path, &table_bytes)?;
    // The table as the page reads it back, put together with each projector's layers.
    let shipped = safetensors_from_bytes(&table_bytes, &table_path)?.remove(TABLE).context("the written item table")?;

    // What the encoding does: to the projected rows of every shipped projector, and to the LLaRA
    // SOFT model's logits and answers on real prompts.
    let mut max_row_diff = 0.0f32;
    let mut max_row_value = 0.0f32;
    let mut soft_models = None;
    for (name, projector, layers) in &projectors {
        let mut with_table = layers.clone();
        with_table.insert(TABLE.to_string(), shipped.clone());
        let path = out.join(LLARA_DIR).join(name).join(PROJECTOR_FILE);
        let reread = ItemProjector::from_safetensors(
            &safetensors_bytes(&with_table, FloatEncoding::F32, &path)?,
            &path,
            hidden,
            &device,
        )?;
        let (a, b) = (projector.project(projector.table()), reread.project(reread.table()));
        max_row_diff = max_row_diff.max((a.clone() - b).abs().max().into_scalar::<f32>());
        max_row_value = max_row_value.max(a.abs().max().into_scalar::<f32>());
        if name == "soft" {
            let adapter = soft_dir.join(ADAPTER_DIR);
            let tuned = base.model.clone().load_adapter(&adapter)?;
            soft_models = Some((tuned.clone(), tuned.with_projector(reread)?));
        }
    }
    let (f32_model, shipped_model) = soft_models.context("no LLaRA SOFT adapter")?;
    let windows: Vec<&[u32]> = dataset
        .windows
        .iter()
        .step_by((dataset.windows.len() / CHECK_PROMPTS).max(1))
        .take(CHECK_PROMPTS)
        .map(|w| w.history())
        .collect();
    let texts = windows
        .iter()
        .map(|h| history_prompt_with(&dataset.catalog, dataset.meta.domain, options, &base.tokenizer, h))
        .collect::<soft_core::Result<Vec<String>>>()?;
    let prompts = texts
        .iter()
        .map(|p| encode_prompt(&base.tokenizer, &base.special, p))
        .collect::<soft_core::Result<Vec<_>>>()?;
    let logit_diff = max_logit_diff(&f32_model, &shipped_model, &prompts);
    let config = &details.config.sft;
    let beam = BeamConfig {
        num_beams: config.beams,
        num_return_sequences: 1,
        max_new_tokens: config.max_new_tokens,
        ..BeamConfig::new(base.special.eos)
    };
    let answers = |m: &Llama| generate_answers(m, &base.tokenizer, &base.special, &texts, &beam);
    let (a, b) = (answers(&f32_model)?, answers(&shipped_model)?);
    let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    let [items, d_rec] = [table.shape[0], table.shape[1]];
    let effect = format!(
        "against f32, projected rows moved by at most {max_row_diff:.3e} (largest projected value {max_row_value:.3e}; \
         {items} items, {} projectors), LLaRA-SOFT's next-token logits by at most {logit_diff:.3e} and its top beam \
         was the same on {same} of {} real prompts",
        projectors.len(),
        prompts.len()
    );
    println!("LLaRA item table [{items}, {d_rec}] as {}: {effect}", args.item_table_dtype.name());

    let mut epochs = Vec::new();
    for record in &details.report.epochs {
        let mut e = entries[&format!("soft-epochs/{}", record.epoch)].clone();
        e["epoch"] = json!(record.epoch);
        e["lambda"] = json!(record.lambda);
        epochs.push(e);
    }
    let mut soft = entries["soft"].clone();
    soft["best_epoch"] = json!(details.report.best_epoch);
    soft["epochs"] = json!(epochs);

    let schedule = serde_json::to_value(details.config.schedule)?;
    let mut reports = Vec::new();
    for (dir, to, label) in [
        (
            &soft_dir,
            "reports/llara-soft.json",
            format!("LLaRA-SOFT ({}), seed {}", schedule.as_str().unwrap_or("?"), config.train.seed),
        ),
        (&sft_dir, "reports/llara-sft.json", format!("LLaRA-SFT, seed {}", sft_run.details.config.train.seed)),
    ] {
        let from = dir.join(REPORT_FILE);
        let bytes = std::fs::read(&from).with_context(|| format!("{}: the run's report", from.display()))?;
        outputs.write(&out.join(to), &bytes)?;
        reports.push(json!({ "label": label, "path": to }));
    }

    let entry = json!({
        "prompt": serde_json::to_value::<&PromptOptions>(options)?,
        "beam": { "num_beams": config.beams, "max_new_tokens": config.max_new_tokens, "length_penalty": 1.0 },
        "decoding": config.decoding.name(),
        "item_table": {
            "path": ITEM_TABLE_FILE,
            "tensor": TABLE,
            "dtype": args.item_table_dtype.name(),
            "shape": [items, d_rec],
            "max_projected_diff_vs_f32": max_row_diff,
            "max_logit_diff_vs_f32": logit_diff,
            "same_top_beam_vs_f32": format!("{same} of {}", prompts.len()),
        },
        "sft": entries["sft"],
        "soft": soft,
        "reports": reports,
    });
    Ok(Some(LlaraExport { entry, effect }))
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

/// The manifest's dataset: the embedded Amazon Books files the page's build ships already, or the
/// run's prepared catalog and sequences copied into the export.
fn dataset_entry(
    outputs: &Outputs,
    dataset: &Dataset,
    data_dir: &Path,
    k_core: usize,
    out: &Path,
) -> Result<serde_json::Value> {
    let domain = serde_json::to_value(dataset.meta.domain)?;
    if dataset.meta.name == "amazon-books" {
        return Ok(json!({ "name": dataset.meta.name, "domain": domain,
            "items": "data/amazon-books/id2name.json", "sequences": "data/amazon-books/sequences.csv" }));
    }
    // Written for a page served from this export; a repository that may not carry them (MovieLens'
    // licence forbids redistribution: web/assets/data is git-ignored) has scripts/build-web.sh
    // prepare them again from the fetched files, checked against these digests.
    let mut sha256 = serde_json::Map::new();
    for name in ["id2name.json", "sequences.csv"] {
        let bytes = std::fs::read(data_dir.join(name)).with_context(|| format!("{}", data_dir.join(name).display()))?;
        sha256.insert(name.to_string(), json!(sha256_file(&data_dir.join(name))?));
        outputs.write(&out.join("data").join(&dataset.meta.name).join(name), &bytes)?;
    }
    Ok(json!({ "name": dataset.meta.name, "domain": domain,
        "items": format!("data/{}/id2name.json", dataset.meta.name),
        "sequences": format!("data/{}/sequences.csv", dataset.meta.name),
        "k_core": k_core, "sha256": sha256 }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_an_earlier_export_left_are_found_and_empty_directories_go() {
        let out = std::env::temp_dir().join(format!("soft-export-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let old = [out.join("model/soft-epochs/3/adapter_config.json"), out.join("model/llara/item_table.safetensors")];
        for path in &old {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"old").unwrap();
        }
        let outputs = Outputs::default();
        outputs.write(&out.join("model").join("soft-epochs/1").join("adapter_config.json"), b"new").unwrap();
        outputs.write(&out.join("model/config.json"), b"new").unwrap();
        let mut stale = outputs.stale(&out.join(MODEL_DIR)).unwrap();
        stale.sort();
        let mut want = old.to_vec();
        want.sort();
        assert_eq!(stale, want, "only what this export did not write");
        assert!(outputs.stale(&out.join("reports")).unwrap().is_empty(), "a missing directory holds nothing stale");
        for path in &stale {
            std::fs::remove_file(path).unwrap();
        }
        remove_empty_dirs(&out.join(MODEL_DIR)).unwrap();
        assert!(!out.join("model/soft-epochs/3").exists() && !out.join("model/llara").exists());
        assert!(out.join("model/soft-epochs/1/adapter_config.json").exists() && out.join("model/config.json").exists());
        std::fs::remove_dir_all(&out).unwrap();
    }
}
