//! What a run directory holds: `run.json` naming the method and how it was trained, and the
//! method's own files. Every file is written atomically and only after all work succeeded.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use soft_core::data::dataset::DatasetMeta;
use soft_core::data::SplitConfig;

pub const RUN_FILE: &str = "run.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    pub method: String,
    pub dataset: DatasetMeta,
    pub split: SplitConfig,
    pub backend: String,
    pub git_commit: Option<String>,
    pub seconds: f64,
    /// Method-specific record: config, per-epoch logs, best epoch.
    pub details: serde_json::Value,
}

impl RunInfo {
    /// A run of `method` that began at `started`, with the commit of the working tree.
    pub fn new(
        method: &str,
        dataset: &DatasetMeta,
        split: SplitConfig,
        backend: String,
        started: std::time::Instant,
        details: serde_json::Value,
    ) -> Self {
        Self {
            method: method.into(),
            dataset: dataset.clone(),
            split,
            backend,
            git_commit: git_commit(),
            seconds: started.elapsed().as_secs_f64(),
            details,
        }
    }

    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(RUN_FILE);
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("{}: not a run directory", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: malformed run description", path.display()))
    }
}

/// `report.json`: the run's description with its details (and `extra`) lifted to the top level,
/// so one file says what was trained, how, on what, how fast and with what result.
pub fn report(run: &RunInfo, extra: serde_json::Value) -> Result<String> {
    let mut report = serde_json::to_value(run)?;
    let obj = report.as_object_mut().expect("RunInfo is an object");
    let details = obj.remove("details").unwrap_or_default();
    for source in [details, extra] {
        if let serde_json::Value::Object(map) = source {
            obj.extend(map);
        }
    }
    Ok(serde_json::to_string_pretty(&report)?)
}

/// Writes several files into `dir` atomically, each through a temp file and a rename.
pub fn write_files(dir: &Path, files: &[(String, String)]) -> Result<()> {
    for (name, text) in files {
        soft_core::atomic_file::write_atomic(&dir.join(name), text.as_bytes())?;
    }
    Ok(())
}

/// The commit the binary was built from (`-dirty` with uncommitted changes), when known.
pub fn git_commit() -> Option<String> {
    Some(env!("SOFT_GIT_COMMIT").to_string()).filter(|c| c != "unknown")
}

/// A temp path beside `path` for binary outputs written by other libraries.
pub fn temp_beside(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{}", std::process::id()))
}

/// The epoch checkpoints of a training run in `out`: kept when resuming, cleared otherwise so
/// that a new run never continues an old one by accident.
pub fn checkpoints(out: &Path, base_model: &str, resume: bool) -> Result<soft_core::train::checkpoint::Checkpoints> {
    let dir = out.join("checkpoints");
    if !resume && dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    Ok(soft_core::train::checkpoint::Checkpoints::new(dir, base_model))
}

/// What a failed training stage leaves behind, for its error message.
pub fn stopped(checkpoints: &soft_core::train::checkpoint::Checkpoints) -> String {
    format!(
        "training stopped; every completed epoch is checkpointed in {} (continue with --resume)",
        checkpoints.dir.display()
    )
}
