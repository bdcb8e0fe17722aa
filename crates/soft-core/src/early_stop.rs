//! Early stopping on a validation score, keeping the best epoch's model: one rule for every
//! trained recommender (SASRec, SFT, SOFT), so it sits below both `baselines` and `train`.

use crate::{Error, Result};

/// The best (score, epoch, model) so far and how long to wait for a better one.
pub struct EarlyStop<T> {
    patience: usize,
    best: Option<(f64, usize, T)>,
}

impl<T> EarlyStop<T> {
    pub fn new(patience: usize) -> Self {
        Self { patience, best: None }
    }

    /// Records an epoch's score; a strictly better score keeps `model`. Returns true when
    /// `patience` epochs have passed since the best one: time to stop.
    pub fn update(&mut self, epoch: usize, score: f64, model: T) -> bool {
        match &self.best {
            Some((best, at, _)) if score <= *best => epoch - at >= self.patience,
            _ => {
                self.best = Some((score, epoch, model));
                false
            }
        }
    }

    /// Continues from a saved best epoch (a resumed run).
    pub fn restore(&mut self, epoch: usize, score: f64, model: T) {
        self.best = Some((score, epoch, model));
    }

    /// Whether a run that has just finished `epoch` is out of patience.
    pub fn should_stop(&self, epoch: usize) -> bool {
        self.best.as_ref().is_some_and(|b| epoch - b.1 >= self.patience)
    }

    /// The best epoch and its score.
    pub fn best(&self) -> Option<(usize, f64)> {
        self.best.as_ref().map(|b| (b.1, b.0))
    }

    /// What to tell the user when [`EarlyStop::update`] said stop after `epoch`.
    pub fn stop_note(&self, epoch: usize) -> String {
        format!("early stop after epoch {epoch}; best epoch {}", self.best().map_or(0, |b| b.0))
    }

    /// The best epoch and its model; an error when no epoch was recorded (`max_epochs` 0).
    pub fn into_best(self) -> Result<(usize, T)> {
        self.best
            .map(|(_, epoch, model)| (epoch, model))
            .ok_or_else(|| Error::config("max_epochs", "training needs at least one epoch"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_and_stops_after_patience() {
        let mut stop = EarlyStop::new(2);
        assert!(!stop.update(1, 0.1, "a"));
        assert!(!stop.update(2, 0.3, "b"));
        assert!(!stop.update(3, 0.3, "c")); // equal is not better
        assert!(stop.update(4, 0.2, "d"));
        assert_eq!(stop.stop_note(4), "early stop after epoch 4; best epoch 2");
        assert_eq!(stop.into_best().unwrap(), (2, "b"));
        assert!(EarlyStop::<()>::new(1).into_best().unwrap_err().to_string().contains("at least one epoch"));
    }
}
