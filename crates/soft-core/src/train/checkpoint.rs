//! The epoch loop shared by SFT and SOFT, with a checkpoint at the end of every epoch so that a
//! killed run continues from its last complete epoch and ends exactly where an uninterrupted
//! one would.
//!
//! `DIR/epoch-NNN/` holds the adapter (PEFT layout), the optimizer state and `state.json` (epoch
//! records, best epoch, optimizer step count). It is written as `epoch-NNN.tmp/` and renamed, so
//! a directory without `.tmp` is always complete. The newest epoch and the best one are kept.
//! Exact continuation needs every epoch to start from saved state only: the shuffle and the
//! dropout RNG are re-seeded from (seed, epoch) instead of carried over.

use std::path::{Path, PathBuf};

use burn::module::Module;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::model::config::LoraConfig;
use crate::model::llama::Llama;
use crate::progress::{Event, Progress};
use crate::train::early_stop::EarlyStop;
use crate::train::lm::{LmTrainer, TrainConfig};
use crate::{Error, Result};

const ADAPTER: &str = "adapter";
const OPTIMIZER: &str = "optimizer.bpk";
const STATE: &str = "state.json";

/// What `state.json` holds besides the adapter and optimizer files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochState<R> {
    /// The last complete epoch.
    pub epoch: usize,
    /// Optimizer steps taken so far (the warm-up reads it).
    pub steps: usize,
    pub records: Vec<R>,
    /// Best epoch so far and its validation score.
    pub best: Option<(usize, f64)>,
    /// Stage-specific values fixed before the first epoch (SOFT's d0).
    pub extra: serde_json::Value,
}

/// A stage's checkpoint directory.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    pub dir: PathBuf,
    /// Written into each adapter's config (`base_model_name_or_path`).
    pub base_model: String,
}

fn epoch_dir(dir: &Path, epoch: usize) -> PathBuf {
    dir.join(format!("epoch-{epoch:03}"))
}

impl Checkpoints {
    pub fn new(dir: impl Into<PathBuf>, base_model: impl Into<String>) -> Self {
        Self { dir: dir.into(), base_model: base_model.into() }
    }

    /// Complete epoch directories, by epoch.
    fn complete(&self) -> Result<Vec<(usize, PathBuf)>> {
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

    /// The newest complete checkpoint's state, if any; a corrupted one is an error naming it.
    pub fn latest<R: DeserializeOwned>(&self) -> Result<Option<(PathBuf, EpochState<R>)>> {
        let Some((_, dir)) = self.complete()?.pop() else { return Ok(None) };
        let path = dir.join(STATE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let state = serde_json::from_str(&text)
            .map_err(|e| Error::format(&path, format!("corrupted checkpoint state: {e}")))?;
        Ok(Some((dir, state)))
    }

    fn save<R: Serialize>(&self, trainer: &LmTrainer, state: &EpochState<R>) -> Result<()> {
        let dir = epoch_dir(&self.dir, state.epoch);
        let tmp = dir.with_extension("tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        trainer.model.save_adapter(&tmp.join(ADAPTER), &self.base_model)?;
        trainer.save_optimizer(&tmp.join(OPTIMIZER))?;
        let json = serde_json::to_string_pretty(state).map_err(|e| Error::Invalid(e.to_string()))?;
        std::fs::write(tmp.join(STATE), json).map_err(|e| Error::io(tmp.join(STATE), e))?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        // Only the newest and the best epoch are ever read again.
        let best = state.best.map(|b| b.0);
        for (epoch, path) in self.complete()? {
            if epoch != state.epoch && Some(epoch) != best {
                std::fs::remove_dir_all(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        Ok(())
    }
}

/// The epoch loop's settings.
pub struct EpochLoop<'a> {
    pub lora: &'a LoraConfig,
    pub train: &'a TrainConfig,
    pub max_epochs: usize,
    pub patience: usize,
    /// The tokenizer's padding id.
    pub pad: u32,
    pub checkpoints: Option<&'a Checkpoints>,
    /// Saved with every checkpoint (see [`EpochState::extra`]).
    pub extra: serde_json::Value,
    pub progress: Progress<'a>,
}

/// One epoch's outcome, from the stage's closure.
pub struct EpochOutcome<R> {
    pub record: R,
    /// Validation score early stopping compares (HR@10).
    pub score: f64,
}

pub struct Trained<R> {
    /// The best epoch's model, for inference (adapters attached).
    pub model: Llama,
    pub records: Vec<R>,
    pub best_epoch: usize,
}

/// The order of the training examples in `epoch`, from the seed and the epoch alone.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    order
}

impl EpochLoop<'_> {
    /// Trains fresh adapters on `trainable` (the base model on an autodiff device), or continues
    /// from the newest checkpoint. `epoch_fn(trainer, epoch, records so far, progress)` trains one
    /// epoch (in [`epoch_order`]), flushes and validates.
    pub fn run<R, F>(self, trainable: Llama, mut epoch_fn: F) -> Result<Trained<R>>
    where
        R: Serialize + DeserializeOwned + Clone,
        F: FnMut(&mut LmTrainer, usize, &[R], &mut dyn FnMut(Event)) -> Result<EpochOutcome<R>>,
    {
        let progress = self.progress;
        let device = trainable.device();
        // The best epoch's model is rebuilt from the base for inference, not from the trainer.
        let base = trainable.valid();
        let resumed = match self.checkpoints {
            Some(c) => c.latest::<R>()?,
            None => None,
        };
        let (mut trainer, mut records, mut stop, first) = match resumed {
            Some((dir, state)) => {
                if state.records.len() != state.epoch {
                    return Err(Error::format(
                        dir.join(STATE),
                        format!("{} epoch records for epoch {}", state.records.len(), state.epoch),
                    ));
                }
                let model = trainable.load_adapter(&dir.join(ADAPTER))?;
                let mut trainer = LmTrainer::new(model, self.train.clone(), self.pad);
                trainer.load_optimizer(&dir.join(OPTIMIZER))?;
                trainer.steps = state.steps;
                let mut stop = EarlyStop::new(self.patience);
                if let Some((epoch, score)) = state.best {
                    let checkpoints = self.checkpoints.expect("resumed from checkpoints");
                    stop.restore(epoch, score, base.load_adapter(&epoch_dir(&checkpoints.dir, epoch).join(ADAPTER))?);
                }
                progress(Event::Note(format!("resuming after epoch {} from {}", state.epoch, dir.display())));
                (trainer, state.records, stop, state.epoch + 1)
            }
            None => {
                let trainer =
                    LmTrainer::new(trainable.with_lora(self.lora, self.train.seed)?, self.train.clone(), self.pad);
                (trainer, Vec::new(), EarlyStop::new(self.patience), 1)
            }
        };
        // A run killed after it stopped early only lacks its final outputs.
        if !(first > 1 && stop.should_stop(first - 1)) {
            for epoch in first..=self.max_epochs {
                device.seed(self.train.seed.wrapping_add(epoch as u64));
                let outcome = epoch_fn(&mut trainer, epoch, &records, &mut *progress)?;
                records.push(outcome.record);
                let done = stop.update(epoch, outcome.score, trainer.model.valid());
                if let Some(c) = self.checkpoints {
                    let state = EpochState {
                        epoch,
                        steps: trainer.steps,
                        records: records.clone(),
                        best: stop.best(),
                        extra: self.extra.clone(),
                    };
                    c.save(&trainer, &state)?;
                }
                if done {
                    progress(Event::Note(format!(
                        "early stop after epoch {epoch}; best epoch {}",
                        stop.best_epoch().unwrap_or(0)
                    )));
                    break;
                }
            }
        }
        let (best_epoch, model) =
            stop.into_best().ok_or_else(|| Error::Invalid("training needs at least one epoch".into()))?;
        Ok(Trained { model, records, best_epoch })
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;

    use super::*;
    use crate::model::config::LlamaConfig;
    use crate::progress::silent;
    use crate::train::lm::LmExample;

    fn base(device: &Device) -> Llama {
        let mut c = LlamaConfig::tiny(32);
        (c.hidden_size, c.intermediate_size, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim) = (32, 64, 2, 2, 1, 16);
        device.seed(7);
        Llama::init(&c, device).unwrap()
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("soft-checkpoint-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn data() -> Vec<LmExample> {
        (0..12u32).map(|i| LmExample::response_only(&[1, 2 + i % 5, 3], &[4 + i % 7, 5, 2])).collect()
    }

    /// Trains up to `epochs` with a checkpoint directory; `nan_at` makes the learning rate NaN
    /// from that epoch on, so its loss stops being finite.
    fn train(dir: &Path, epochs: usize, nan_at: Option<usize>) -> Result<Trained<f32>> {
        let device = Device::flex().autodiff();
        // No dropout: flex's RNG is process-wide and tests run in parallel threads, so another
        // test's draws would interleave. The CLI test covers dropout, one process per run.
        let lora = LoraConfig { dropout: 0.0, ..LoraConfig::default() };
        let config = TrainConfig {
            lr: 1e-2,
            warmup_steps: 2,
            weight_decay: 0.0,
            micro_batch: 4,
            grad_accum: 1,
            seed: 5,
            max_steps: None,
        };
        let checkpoints = Checkpoints::new(dir, "test");
        let data = data();
        let epoch_loop = EpochLoop {
            lora: &lora,
            train: &config,
            max_epochs: epochs,
            patience: 10,
            pad: 0,
            checkpoints: Some(&checkpoints),
            extra: serde_json::Value::Null,
            progress: &mut silent,
        };
        epoch_loop.run(base(&device), |trainer, epoch, _, _| {
            if nan_at.is_some_and(|e| epoch >= e) {
                trainer.config.lr = f64::NAN;
            }
            let mut last = 0.0;
            for chunk in epoch_order(data.len(), 5, epoch).chunks(4) {
                let batch: Vec<&LmExample> = chunk.iter().map(|&i| &data[i]).collect();
                last = trainer.micro_step(&batch)?.unwrap();
            }
            trainer.flush();
            // A score that improves every epoch: each one becomes the best.
            Ok(EpochOutcome { record: last, score: epoch as f64 })
        })
    }

    /// The adapter and the state; the optimizer file's byte order follows a hash map, so its
    /// content is compared through what it does (one more epoch) instead.
    fn files(dir: &Path, epoch: usize) -> Vec<Vec<u8>> {
        let d = epoch_dir(dir, epoch);
        [d.join(ADAPTER).join(crate::model::lora::ADAPTER_WEIGHTS), d.join(STATE)]
            .iter()
            .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .collect()
    }

    #[test]
    fn resuming_after_an_interruption_gives_the_same_checkpoints() {
        let (whole, split) = (temp("whole"), temp("split"));
        let uninterrupted = train(&whole, 3, None).unwrap();
        // The interrupted run stops after epoch 1 (all later state lived in memory only), then
        // continues from its checkpoint in a fresh "process".
        train(&split, 1, None).unwrap();
        std::fs::create_dir_all(split.join("epoch-002.tmp")).unwrap(); // a half-written epoch
        let resumed = train(&split, 3, None).unwrap();
        for (i, (a, b)) in files(&whole, 3).iter().zip(files(&split, 3)).enumerate() {
            assert!(*a == b, "file {i} of epoch 3 differs ({} vs {} bytes)", a.len(), b.len());
        }
        assert_eq!(uninterrupted.records, resumed.records);
        assert_eq!(resumed.best_epoch, 3);
        // Only the newest (= best) epoch is kept, and no half-written one.
        let left: Vec<usize> = Checkpoints::new(&split, "t").complete().unwrap().into_iter().map(|c| c.0).collect();
        assert_eq!(left, vec![3]);
        assert!(!split.join("epoch-002.tmp").exists());
        // Equal optimizer states take equal steps.
        train(&whole, 4, None).unwrap();
        train(&split, 4, None).unwrap();
        assert_eq!(files(&whole, 4), files(&split, 4));
        for dir in [whole, split] {
            std::fs::remove_dir_all(dir).unwrap();
        }
    }

    #[test]
    fn a_nan_loss_stops_with_an_error_and_keeps_the_last_good_checkpoint() {
        let dir = temp("nan");
        let err = train(&dir, 3, Some(2)).err().expect("a NaN loss must stop training").to_string();
        assert!(err.contains("NaN"), "{err}");
        let (path, state) = Checkpoints::new(&dir, "t").latest::<f32>().unwrap().unwrap();
        assert_eq!((state.epoch, path), (1, epoch_dir(&dir, 1)));
        assert!(state.records[0].is_finite());
        // A corrupted state file is named, not a panic.
        std::fs::write(epoch_dir(&dir, 1).join(STATE), "{").unwrap();
        let err = Checkpoints::new(&dir, "t").latest::<f32>().unwrap_err().to_string();
        assert!(err.contains("state.json") && err.contains("corrupted"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
