//! Most-popular: every user gets the items that were targets most often in training.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::data::{Catalog, Window};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Popularity {
    /// Target counts by item id over the training windows.
    pub counts: BTreeMap<u32, u64>,
}

impl Popularity {
    pub fn fit(train: &[Window]) -> Self {
        let mut counts = BTreeMap::new();
        for w in train {
            *counts.entry(w.target()).or_insert(0) += 1;
        }
        Self { counts }
    }

    /// The catalog's grounding items, most counted first, ties by id; the same for everyone.
    pub fn rank(&self, catalog: &Catalog, k: usize) -> Vec<u32> {
        let mut ids = catalog.grounding_ids();
        let count = |id: &u32| self.counts.get(id).copied().unwrap_or(0);
        ids.sort_by(|a, b| count(b).cmp(&count(a)).then(a.cmp(b)));
        ids.truncate(k);
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_by_target_count_then_id() {
        let w = |items: Vec<u32>| Window { user: "u".into(), items, timestamp: 0 };
        let pop = Popularity::fit(&[w(vec![1, 3]), w(vec![2, 3]), w(vec![1, 2]), w(vec![3, 4])]);
        let cat = Catalog::from_titles((1..=5).map(|i| (i, format!("t{i}"))));
        assert_eq!(pop.rank(&cat, 3), vec![3, 2, 4]);
        assert_eq!(pop.rank(&cat, 10), vec![3, 2, 4, 1, 5]);
    }
}
