//! How sure a metric is: 95 % bootstrap intervals over test examples, and the paired comparison
//! of two methods on the same examples (SOFT vs SFT). A test set of 200 examples moves HR by
//! 0.005 per hit; without intervals a table of small runs reads noise as results.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::eval::metrics::KS;

/// Resamples per interval: enough for stable 2.5 % / 97.5 % percentiles.
pub const RESAMPLES: usize = 2000;
/// Coverage of every interval.
pub const LEVEL: f64 = 0.95;

/// A per-example metric: HR@K (1 for a hit, else 0) or NDCG@K (1/log2(rank + 2) for a hit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Hr(usize),
    Ndcg(usize),
}

impl Metric {
    /// The value one example contributes, from its target's 0-based rank; the mean over examples
    /// is [`crate::eval::Metrics`]' value.
    pub fn value(self, rank: Option<usize>) -> f64 {
        match (self, rank) {
            (Metric::Hr(k), Some(r)) if r < k => 1.0,
            (Metric::Ndcg(k), Some(r)) if r < k => 1.0 / ((r + 2) as f64).log2(),
            _ => 0.0,
        }
    }

    pub fn values(self, ranks: &[Option<usize>]) -> Vec<f64> {
        ranks.iter().map(|&r| self.value(r)).collect()
    }

    /// The name `metrics.json` uses (`HR@10`, `NDCG@10`).
    pub fn name(self) -> String {
        match self {
            Metric::Hr(k) => format!("HR@{k}"),
            Metric::Ndcg(k) => format!("NDCG@{k}"),
        }
    }

    /// The metric `metrics.json` calls `name`, if it is one of [`KS`]'s.
    pub fn parse(name: &str) -> Option<Self> {
        let (kind, k) = name.split_once('@')?;
        let k: usize = k.parse().ok().filter(|k| KS.contains(k))?;
        match kind {
            "HR" => Some(Metric::Hr(k)),
            "NDCG" => Some(Metric::Ndcg(k)),
            _ => None,
        }
    }
}

/// A mean with its 95 % percentile-bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl Interval {
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }

    pub fn half_width(&self) -> f64 {
        (self.high - self.low) / 2.0
    }
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}

/// The `q` quantile of sorted values (linear interpolation between neighbours).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos.fract());
    let next = sorted[(i + 1).min(sorted.len() - 1)];
    sorted[i] + frac * (next - sorted[i])
}

/// The mean of `values` (one per test example) and its 95 % interval from `RESAMPLES` seeded
/// resamples of the examples with replacement.
pub fn bootstrap_mean(values: &[f64], seed: u64) -> Interval {
    let m = mean(values);
    if values.len() < 2 {
        return Interval { mean: m, low: m, high: m };
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let n = values.len();
    let mut means: Vec<f64> =
        (0..RESAMPLES).map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - LEVEL) / 2.0;
    Interval { mean: m, low: quantile(&means, tail), high: quantile(&means, 1.0 - tail) }
}

/// Method B against method A on the same examples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Paired {
    /// Mean of A and of B.
    pub a: f64,
    pub b: f64,
    /// B − A with its paired 95 % bootstrap interval (examples resampled together).
    pub difference: Interval,
    /// (B − A) / A, when A is not 0.
    pub relative: Option<f64>,
    /// Two-sided p-value of "no difference": a paired sign-flip permutation test (under the null
    /// each example's difference is as likely negated), `RESAMPLES` random flips.
    pub p_value: f64,
}

/// Compares `b` with `a`, both one value per example, in the same example order.
///
/// Errors when the lengths differ: a comparison over different examples is not paired.
pub fn paired(a: &[f64], b: &[f64], seed: u64) -> Result<Paired, String> {
    if a.len() != b.len() {
        return Err(format!("paired comparison over {} and {} examples", a.len(), b.len()));
    }
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let difference = bootstrap_mean(&diffs, seed);
    let observed = difference.mean.abs();
    // Permutations are compared with a little slack so ties from 0/1 values count as extreme.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let extreme = (0..RESAMPLES)
        .filter(|_| {
            let flipped: f64 = diffs.iter().map(|&d| if rng.random::<bool>() { d } else { -d }).sum();
            (flipped / diffs.len().max(1) as f64).abs() >= observed - 1e-12
        })
        .count();
    let (ma, mb) = (mean(a), mean(b));
    Ok(Paired {
        a: ma,
        b: mb,
        difference,
        relative: (ma > 0.0).then(|| mb / ma - 1.0),
        // The observed assignment is one of the permutations (keeps p above 0).
        p_value: (extreme + 1) as f64 / (RESAMPLES + 1) as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_example_values_average_to_the_metrics() {
        let ranks = [Some(0), Some(3), Some(12), None];
        let m = crate::eval::Metrics::from_ranks(&ranks);
        for &k in &KS {
            assert!((mean(&Metric::Hr(k).values(&ranks)) - m.hr_at(k)).abs() < 1e-12);
            assert!((mean(&Metric::Ndcg(k).values(&ranks)) - m.ndcg_at(k)).abs() < 1e-12);
        }
        assert_eq!(Metric::parse("HR@10"), Some(Metric::Hr(10)));
        assert_eq!(Metric::parse("NDCG@20").map(Metric::name).as_deref(), Some("NDCG@20"));
        assert_eq!(Metric::parse("HR@7"), None);
        assert_eq!(Metric::parse("MRR@10"), None);
    }

    #[test]
    fn interval_of_a_proportion_matches_the_normal_approximation() {
        // 50 hits in 1000: standard error sqrt(0.05 * 0.95 / 1000) = 0.0069, so about ±0.0135.
        let values: Vec<f64> = (0..1000).map(|i| if i % 20 == 0 { 1.0 } else { 0.0 }).collect();
        let i = bootstrap_mean(&values, 7);
        assert!((i.mean - 0.05).abs() < 1e-12);
        assert!(i.contains(0.05) && !i.contains(0.03) && !i.contains(0.07), "{i:?}");
        assert!((i.half_width() - 0.0135).abs() < 0.003, "{i:?}");
        assert_eq!(bootstrap_mean(&values, 7), i, "seeded: the same interval twice");
    }

    #[test]
    fn constant_values_have_no_width() {
        let i = bootstrap_mean(&[0.25; 40], 1);
        assert_eq!((i.low, i.mean, i.high), (0.25, 0.25, 0.25));
    }

    #[test]
    fn paired_comparison_finds_a_real_gain_and_not_noise() {
        // B hits on 60 examples more than A out of 1000: clearly better.
        let a: Vec<f64> = (0..1000).map(|i| if i % 10 == 0 { 1.0 } else { 0.0 }).collect();
        let b: Vec<f64> = (0..1000).map(|i| if i % 10 == 0 || i % 10 == 1 && i < 600 { 1.0 } else { 0.0 }).collect();
        let p = paired(&a, &b, 3).unwrap();
        assert!((p.difference.mean - 0.06).abs() < 1e-12);
        assert!(p.difference.low > 0.0 && p.p_value < 0.01, "{p:?}");
        assert!((p.relative.unwrap() - 0.6).abs() < 1e-12);

        // The same hits on different examples: no paired difference, p near 1.
        let c: Vec<f64> = (0..1000).map(|i| if i % 10 == 5 { 1.0 } else { 0.0 }).collect();
        let q = paired(&a, &c, 3).unwrap();
        assert!(q.difference.contains(0.0) && q.p_value > 0.5, "{q:?}");
        assert!(paired(&a, &c[..10], 3).is_err());
    }
}
