//! HR@K and NDCG@K from target ranks, as SOFT-REFERENCE.md defines them: with a 0-based rank r,
//! HR@K is the share of examples with r < K and NDCG@K the mean of 1/log2(r + 2) over hits
//! (0 for misses), averaged over all examples.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const KS: [usize; 5] = [1, 5, 10, 20, 50];

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Metrics {
    pub hr: [f64; 5],
    pub ndcg: [f64; 5],
    pub count: usize,
}

impl Metrics {
    /// `ranks[i]` is the 0-based rank of example i's target, `None` when it is not ranked.
    pub fn from_ranks(ranks: &[Option<usize>]) -> Self {
        let mut m = Self { count: ranks.len(), ..Self::default() };
        if ranks.is_empty() {
            return m;
        }
        for r in ranks.iter().flatten() {
            for (j, &k) in KS.iter().enumerate() {
                if *r < k {
                    m.hr[j] += 1.0;
                    m.ndcg[j] += 1.0 / ((*r + 2) as f64).log2();
                }
            }
        }
        let n = ranks.len() as f64;
        m.hr.iter_mut().chain(m.ndcg.iter_mut()).for_each(|v| *v /= n);
        m
    }

    pub fn hr_at(&self, k: usize) -> f64 {
        self.hr[Self::index(k)]
    }

    pub fn ndcg_at(&self, k: usize) -> f64 {
        self.ndcg[Self::index(k)]
    }

    fn index(k: usize) -> usize {
        KS.iter().position(|&x| x == k).unwrap_or_else(|| panic!("K = {k} is not one of {KS:?}"))
    }

    /// The `metrics.json` object: `{"HR@1": .., ..., "NDCG@50": ..}`, all ten keys.
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        KS.iter()
            .enumerate()
            .flat_map(|(j, k)| [(format!("HR@{k}"), self.hr[j]), (format!("NDCG@{k}"), self.ndcg[j])])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_ranks() {
        // Ranks 0, 3, 12, missing: four examples.
        let m = Metrics::from_ranks(&[Some(0), Some(3), Some(12), None]);
        assert_eq!(m.hr, [0.25, 0.5, 0.5, 0.75, 0.75]);
        let at1 = 1.0 / 4.0;
        let at5 = (1.0 + 1.0 / 5f64.log2()) / 4.0;
        let at20 = (1.0 + 1.0 / 5f64.log2() + 1.0 / 14f64.log2()) / 4.0;
        let want = [at1, at5, at5, at20, at20];
        for (got, want) in m.ndcg.iter().zip(want) {
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
        assert!((m.ndcg_at(5) - 0.3576692).abs() < 1e-6);
        let map = m.to_map();
        assert_eq!(map.len(), 10);
        assert_eq!(map["HR@20"], 0.75);
    }

    #[test]
    fn boundaries_of_k_are_exclusive() {
        let m = Metrics::from_ranks(&[Some(10)]);
        assert_eq!(m.hr_at(10), 0.0);
        assert_eq!(m.hr_at(20), 1.0);
        assert_eq!(Metrics::from_ranks(&[Some(49)]).hr_at(50), 1.0);
        assert_eq!(Metrics::from_ranks(&[]).hr_at(1), 0.0);
    }
}
