//! The temporal split: windows are already in time order; the first 80 % train, the next 10 %
//! validate, the last 10 % test. Each part is then sampled down (fixed seed, order kept).

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::Window;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitConfig {
    pub train: usize,
    pub valid: usize,
    pub test: usize,
    pub seed: u64,
}

impl Default for SplitConfig {
    /// The reference's sample sizes.
    fn default() -> Self {
        Self { train: 4096, valid: 512, test: 1000, seed: 42 }
    }
}

impl SplitConfig {
    /// Refuses an empty sample: every part must hold at least one example.
    pub fn validate(&self) -> crate::Result<()> {
        for (name, value) in [("train_size", self.train), ("valid_size", self.valid), ("test_size", self.test)] {
            if value == 0 {
                return Err(crate::Error::config("split", format!("{name} must be at least 1")));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// Every window of the training period (baselines may use them all).
    pub train_all: Vec<Window>,
    pub train: Vec<Window>,
    pub valid: Vec<Window>,
    pub test: Vec<Window>,
}

/// Boundaries of the 80 / 10 / 10 split of `n` windows: `[0, a)`, `[a, b)`, `[b, n)`.
pub fn boundaries(n: usize) -> (usize, usize) {
    (n * 8 / 10, n * 9 / 10)
}

/// `n` windows drawn without replacement, kept in their time order; all of them if fewer.
fn sample(part: &[Window], n: usize, rng: &mut StdRng) -> Vec<Window> {
    if n >= part.len() {
        return part.to_vec();
    }
    let mut picked = rand::seq::index::sample(rng, part.len(), n).into_vec();
    picked.sort_unstable();
    picked.into_iter().map(|i| part[i].clone()).collect()
}

pub fn split(windows: &[Window], config: &SplitConfig) -> Split {
    let (a, b) = boundaries(windows.len());
    let mut rng = StdRng::seed_from_u64(config.seed);
    Split {
        train_all: windows[..a].to_vec(),
        train: sample(&windows[..a], config.train, &mut rng),
        valid: sample(&windows[a..b], config.valid, &mut rng),
        test: sample(&windows[b..], config.test, &mut rng),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(n: usize) -> Vec<Window> {
        (0..n).map(|i| Window { user: i.to_string(), items: vec![1, 2], timestamp: i as i64 }).collect()
    }

    #[test]
    fn boundaries_are_80_10_10_by_order() {
        assert_eq!(boundaries(10), (8, 9));
        assert_eq!(boundaries(35_060), (28_048, 31_554));
        let s = split(&windows(100), &SplitConfig { train: 1000, valid: 1000, test: 1000, seed: 1 });
        assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (80, 10, 10));
        assert_eq!(s.train.last().unwrap().timestamp, 79);
        assert_eq!(s.valid.first().unwrap().timestamp, 80);
        assert_eq!(s.test.first().unwrap().timestamp, 90);
    }

    #[test]
    fn samples_are_seeded_ordered_and_inside_their_part() {
        let w = windows(1000);
        let cfg = SplitConfig { train: 50, valid: 20, test: 30, seed: 7 };
        let s = split(&w, &cfg);
        assert_eq!((s.train.len(), s.valid.len(), s.test.len()), (50, 20, 30));
        assert!(s.train.windows(2).all(|p| p[0].timestamp < p[1].timestamp));
        assert!(s.train.iter().all(|x| x.timestamp < 800));
        assert!(s.valid.iter().all(|x| (800..900).contains(&x.timestamp)));
        assert!(s.test.iter().all(|x| x.timestamp >= 900));
        assert_eq!(split(&w, &cfg), s);
        assert_ne!(split(&w, &SplitConfig { seed: 8, ..cfg }).train, s.train);
    }
}
