//! Early stopping on a validation score, keeping the best epoch's model: shared by SASRec, SFT
//! and SOFT so they stop by one rule.

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

    pub fn best_epoch(&self) -> Option<usize> {
        self.best.as_ref().map(|b| b.1)
    }

    /// The best epoch and its model; `None` when no epoch was recorded.
    pub fn into_best(self) -> Option<(usize, T)> {
        self.best.map(|(_, epoch, model)| (epoch, model))
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
        assert_eq!(stop.into_best(), Some((2, "b")));
    }
}
