//! The files of a run directory: written atomically and only after all work succeeded, read
//! back with errors that name the file; the epoch checkpoints of a training run.

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use soft_core::atomic_file::write_atomic;
use soft_core::train::checkpoint::Checkpoints;

/// SASRec's weights in its run directory (`baseline --method sasrec`; LLaRA reads its item table).
pub const SASREC_WEIGHTS: &str = "sasrec.bpk";

/// Writes several files into `dir` atomically, each through a temp file and a rename.
pub fn write_files(dir: &Path, files: &[(String, String)]) -> Result<()> {
    for (name, text) in files {
        write_atomic(&dir.join(name), text.as_bytes())?;
    }
    Ok(())
}

/// A JSON file read as `T`; `unreadable` and `malformed` say what each failure means.
pub fn read_json<T: DeserializeOwned>(path: &Path, unreadable: &str, malformed: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: {unreadable}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: {malformed}", path.display()))
}

/// The epoch checkpoints of a training run in `out`: kept when resuming, cleared otherwise so
/// that a new run never continues an old one by accident.
pub fn checkpoints(out: &Path, base_model: &str, resume: bool) -> Result<Checkpoints> {
    let dir = out.join("checkpoints");
    if !resume && dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    Ok(Checkpoints::new(dir, base_model))
}

/// What a failed training stage leaves behind, for its error message.
pub fn stopped(checkpoints: &Checkpoints) -> String {
    format!(
        "training stopped; every completed epoch is checkpointed in {} (continue with --resume)",
        checkpoints.dir.display()
    )
}
