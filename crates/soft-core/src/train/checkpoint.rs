//! Epoch checkpoints, so that a killed run continues from its last complete epoch.
//!
//! `DIR/epoch-NNN/` holds the adapter (PEFT layout), the optimizer state and `state.json` (epoch
//! records, best epoch, optimizer step count) and `checksums.json` (SHA-256 of every other file).
//! It is written as `epoch-NNN.tmp/`, flushed to disk (files and directories) and renamed, so a
//! directory without `.tmp` is complete; its checksums are verified before it is resumed from,
//! so a damaged one is refused by name, never trained on. The newest epoch and the best one are
//! kept.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::atomic_file::{sync_dir, sync_tree};
use crate::checksums::{verify_manifest, write_manifest};
use crate::model::llama::Llama;
use crate::train::trainer::{LmTrainer, TrainConfig};
use crate::{Error, Result};

pub(crate) const ADAPTER: &str = "adapter";
const OPTIMIZER: &str = "optimizer.bpk";
pub(crate) const STATE: &str = "state.json";
/// Test hook: milliseconds to sleep between a checkpoint's complete write and its rename, so a
/// test can kill the process exactly while a checkpoint is being written.
pub const PAUSE_ENV: &str = "SOFT_TEST_CHECKPOINT_PAUSE_MS";

/// What `state.json` holds besides the adapter and optimizer files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochState<R, X> {
    /// The last complete epoch.
    pub epoch: usize,
    /// Optimizer steps taken so far (the warm-up reads it).
    pub steps: usize,
    pub records: Vec<R>,
    /// Best epoch so far and its validation score.
    pub best: Option<(usize, f64)>,
    /// Stage-specific values fixed before the first epoch (SOFT's d0); `()` when none.
    pub extra: X,
}

/// A stage's checkpoint directory.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    pub dir: PathBuf,
    /// Written into each adapter's config (`base_model_name_or_path`).
    pub base_model: String,
}

impl Checkpoints {
    pub fn new(dir: impl Into<PathBuf>, base_model: impl Into<String>) -> Self {
        Self { dir: dir.into(), base_model: base_model.into() }
    }

    pub(crate) fn epoch_dir(&self, epoch: usize) -> PathBuf {
        self.dir.join(format!("epoch-{epoch:03}"))
    }

    /// Complete epoch directories, by epoch.
    pub(crate) fn complete(&self) -> Result<Vec<(usize, PathBuf)>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&self.dir, e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&self.dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if let Some(epoch) = name.strip_prefix("epoch-").and_then(|n| n.parse::<usize>().ok()) {
                found.push((epoch, path));
            }
        }
        found.sort();
        Ok(found)
    }

    /// The newest complete checkpoint's directory and state, if any; a corrupted or
    /// inconsistent one is an error naming its state file.
    pub fn latest<R: DeserializeOwned, X: DeserializeOwned>(&self) -> Result<Option<(PathBuf, EpochState<R, X>)>> {
        let Some((_, dir)) = self.complete()?.pop() else { return Ok(None) };
        verify_manifest(&dir)?;
        let path = dir.join(STATE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let state: EpochState<R, X> = serde_json::from_str(&text).map_err(|e| Error::json(&path, e))?;
        if state.records.len() != state.epoch {
            return Err(Error::format(
                path,
                format!("corrupted checkpoint state: {} epoch records for epoch {}", state.records.len(), state.epoch),
            ));
        }
        Ok(Some((dir, state)))
    }

    /// Writes `state.epoch`'s checkpoint, then drops every older one but the best.
    pub(crate) fn save<R: Serialize, X: Serialize>(&self, trainer: &LmTrainer, state: &EpochState<R, X>) -> Result<()> {
        let dir = self.epoch_dir(state.epoch);
        let tmp = dir.with_extension("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        trainer.model.save_adapter(&tmp.join(ADAPTER), &self.base_model)?;
        trainer.save_optimizer(&tmp.join(OPTIMIZER))?;
        let state_path = tmp.join(STATE);
        let json = serde_json::to_string_pretty(state).map_err(|e| Error::json(&state_path, e))?;
        std::fs::write(&state_path, json).map_err(|e| Error::io(&state_path, e))?;
        write_manifest(&tmp)?;
        // Everything is on disk before the rename makes the checkpoint visible.
        sync_tree(&tmp)?;
        if let Some(ms) = std::env::var(PAUSE_ENV).ok().and_then(|v| v.parse::<u64>().ok()) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        sync_dir(&self.dir)?;
        // Only the newest and the best epoch are ever read again.
        let best = state.best.map(|b| b.0);
        for (epoch, path) in self.complete()? {
            if epoch != state.epoch && Some(epoch) != best {
                std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        sync_dir(&self.dir)
    }

    /// A trainer continuing from the checkpoint in `dir` (from [`Checkpoints::latest`]):
    /// `trainable` with its adapter, and its optimizer state and step count.
    pub(crate) fn resume(
        &self,
        dir: &Path,
        trainable: Llama,
        config: &TrainConfig,
        pad: u32,
        steps: usize,
    ) -> Result<LmTrainer> {
        let mut trainer = LmTrainer::new(trainable.load_adapter(&dir.join(ADAPTER))?, config.clone(), pad);
        trainer.load_optimizer(&dir.join(OPTIMIZER))?;
        trainer.steps = steps;
        Ok(trainer)
    }

    /// `base` with the adapter saved at `epoch` (the best epoch's model of a resumed run).
    pub(crate) fn epoch_model(&self, base: Llama, epoch: usize) -> Result<Llama> {
        let dir = self.epoch_dir(epoch);
        verify_manifest(&dir)?;
        base.load_adapter(&dir.join(ADAPTER))
    }
}
