//! The epoch loop shared by SFT and SOFT: train an epoch, validate, keep the best epoch by
//! early stopping, and checkpoint (see [`crate::train::checkpoint`]) at the end of every epoch,
//! so that a killed run continues from its last complete epoch and ends exactly where an
//! uninterrupted one would. Exact continuation needs every epoch to start from saved state only:
//! the shuffle and the dropout RNG are re-seeded from (seed, epoch) instead of carried over.

use burn::module::Module;
use burn::tensor::Device;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::early_stop::EarlyStop;
use crate::model::config::LoraConfig;
use crate::model::llama::Llama;
use crate::progress::{Event, Progress};
use crate::train::checkpoint::{Checkpoints, EpochState};
use crate::train::trainer::{LmTrainer, TrainConfig};
use crate::Result;

/// The epoch loop's settings.
pub struct EpochLoop<'a, X> {
    pub lora: &'a LoraConfig,
    pub train: &'a TrainConfig,
    pub max_epochs: usize,
    pub patience: usize,
    /// The tokenizer's padding id.
    pub pad: u32,
    pub checkpoints: Option<&'a Checkpoints>,
    /// Saved with every checkpoint (see [`EpochState::extra`]).
    pub extra: X,
    pub progress: Progress<'a>,
}

/// The model a stage trains, on an autodiff device, and the other devices of data-parallel
/// training (plain devices; none for one device).
pub struct Trainable {
    pub model: Llama,
    pub replicas: Vec<Device>,
}

impl From<Llama> for Trainable {
    fn from(model: Llama) -> Self {
        Self { model, replicas: Vec::new() }
    }
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

impl<X: Serialize + DeserializeOwned + Clone> EpochLoop<'_, X> {
    /// Trains fresh adapters on `trainable` (the base model on an autodiff device), or continues
    /// from the newest checkpoint. `epoch_fn(trainer, epoch, records so far, progress)` trains one
    /// epoch (in [`epoch_order`]), flushes and validates.
    pub fn run<R, F>(self, trainable: Trainable, mut epoch_fn: F) -> Result<Trained<R>>
    where
        R: Serialize + DeserializeOwned + Clone,
        F: FnMut(&mut LmTrainer, usize, &[R], &mut dyn FnMut(Event)) -> Result<EpochOutcome<R>>,
    {
        let progress = self.progress;
        let Trainable { model: trainable, replicas } = trainable;
        let device = trainable.device();
        // The best epoch's model is rebuilt from the base for inference, not from the trainer.
        let base = trainable.valid();
        let resumed = match self.checkpoints {
            Some(c) => c.latest::<R, X>()?.map(|(dir, state)| (c, dir, state)),
            None => None,
        };
        let (trainer, mut records, mut stop, first) = match resumed {
            Some((checkpoints, dir, state)) => {
                let trainer = checkpoints.resume(&dir, trainable, self.train, self.pad, state.steps)?;
                let mut stop = EarlyStop::new(self.patience);
                if let Some((epoch, score)) = state.best {
                    stop.restore(epoch, score, checkpoints.epoch_model(base, epoch)?);
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
        let mut trainer = trainer.with_replicas(&replicas)?;
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
                    progress(Event::Note(stop.stop_note(epoch)));
                    break;
                }
            }
        }
        let (best_epoch, model) = stop.into_best()?;
        Ok(Trained { model, records, best_epoch })
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use burn::tensor::Device;

    use super::*;
    use crate::progress::silent;
    use crate::train::checkpoint::{ADAPTER, STATE};
    use crate::train::lm::LmExample;
    use crate::train::test_model;
    use crate::Error;

    /// The base model every run starts from, built once: flex's RNG is process-wide, so two
    /// builds could differ when another test draws from it in between.
    fn base() -> &'static Llama {
        static BASE: std::sync::OnceLock<Llama> = std::sync::OnceLock::new();
        BASE.get_or_init(|| {
            let device = Device::flex().autodiff();
            device.seed(7);
            test_model(&device)
        })
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
            activation_checkpointing: false,
            base_dtype: Default::default(),
            devices: 1,
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
            extra: (),
            progress: &mut silent,
        };
        epoch_loop.run(base().clone().into(), |trainer, epoch, _, _| {
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
        let d = Checkpoints::new(dir, "t").epoch_dir(epoch);
        [d.join(ADAPTER).join(crate::model::formats::peft::ADAPTER_WEIGHTS), d.join(STATE)]
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

    /// A checkpoint whose files changed after they were written, or that has no checksums (a
    /// half-copied one, or one from before checksums existed), is refused by name; training does
    /// not quietly restart or continue from it.
    #[test]
    fn a_damaged_or_unchecksummed_checkpoint_is_refused_by_name() {
        let dir = temp("damaged");
        train(&dir, 1, None).unwrap();
        let checkpoints = Checkpoints::new(&dir, "t");
        let weights = checkpoints.epoch_dir(1).join(ADAPTER).join(crate::model::formats::peft::ADAPTER_WEIGHTS);
        let good = std::fs::read(&weights).unwrap();
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40; // one bit of one weight: the file still parses
        std::fs::write(&weights, &bad).unwrap();
        for err in [checkpoints.latest::<f32, ()>().unwrap_err(), train(&dir, 2, None).err().unwrap()] {
            let err = err.to_string();
            assert!(err.contains("adapter_model.safetensors") && err.contains("checksum mismatch"), "{err}");
        }
        std::fs::write(&weights, &good).unwrap();
        checkpoints.latest::<f32, ()>().unwrap().unwrap();
        std::fs::remove_file(checkpoints.epoch_dir(1).join(crate::checksums::MANIFEST)).unwrap();
        let err = checkpoints.latest::<f32, ()>().unwrap_err().to_string();
        assert!(err.contains("checksums.json: missing"), "{err}");
        assert_eq!(std::fs::read(&weights).unwrap(), good, "nothing already written is lost");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_nan_loss_stops_with_an_error_and_keeps_the_last_good_checkpoint() {
        let dir = temp("nan");
        let err = train(&dir, 3, Some(2)).err().expect("a NaN loss must stop training").to_string();
        assert!(err.contains("NaN"), "{err}");
        let checkpoints = Checkpoints::new(&dir, "t");
        let (path, state) = checkpoints.latest::<f32, ()>().unwrap().unwrap();
        assert_eq!((state.epoch, path), (1, checkpoints.epoch_dir(1)));
        assert!(state.records[0].is_finite());
        // A corrupted state file is named, not a panic, and keeps serde's error as its source.
        // (The manifest is rewritten after each edit, so the state file's own check is reached.)
        std::fs::write(checkpoints.epoch_dir(1).join(STATE), "{").unwrap();
        crate::checksums::write_manifest(&checkpoints.epoch_dir(1)).unwrap();
        let err = checkpoints.latest::<f32, ()>().unwrap_err();
        assert!(matches!(err, Error::Json { .. }) && err.to_string().contains("state.json"), "{err}");
        // So is one whose records do not match its epoch.
        std::fs::write(
            checkpoints.epoch_dir(1).join(STATE),
            r#"{"epoch":2,"steps":1,"records":[1.0],"best":null,"extra":null}"#,
        )
        .unwrap();
        crate::checksums::write_manifest(&checkpoints.epoch_dir(1)).unwrap();
        let err = checkpoints.latest::<f32, ()>().unwrap_err().to_string();
        assert!(err.contains("state.json") && err.contains("corrupted"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
