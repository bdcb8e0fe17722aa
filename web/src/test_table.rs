//! The run's test table as the export ships it (manifest `metrics`: the rows of `table.md`, each
//! metric's mean and 95 % bootstrap interval), so every answer on the page stands beside how its
//! model does on the run's held-out test users, next to popularity and SASRec.

use soft_core::data::prompt::Backbone;
use soft_core::eval::decoding::Decoding;
pub use soft_core::eval::test_table::{Cell, Row};

/// The shipped rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TestTable {
    pub rows: Vec<Row>,
}

/// The language model of a page answer, as the table's directories name it.
pub fn model_dir(backbone: Backbone, soft: bool) -> String {
    backbone.run_dir(if soft { "soft" } else { "sft" })
}

impl TestTable {
    /// The manifest's `metrics` (absent in exports made before it: an empty table, and the page
    /// says it has no numbers).
    pub fn from_manifest(manifest: Option<&serde_json::Value>) -> Result<Self, String> {
        let Some(rows) = manifest.and_then(|m| m.get("metrics")) else { return Ok(Self::default()) };
        let rows: Vec<Row> = serde_json::from_value(rows.clone())
            .map_err(|e| format!("assets/manifest.json: `metrics` is not the run's table: {e}"))?;
        Ok(Self { rows })
    }

    /// The row of the method in directory `dir` with `decoding` (baselines have one decoding).
    pub fn row(&self, dir: &str, decoding: Decoding) -> Option<&Row> {
        let rows: Vec<&Row> = self.rows.iter().filter(|r| r.dir == dir).collect();
        let only = if rows.len() == 1 { rows.first() } else { None };
        rows.iter().find(|r| r.decoding == decoding).or(only).copied()
    }

    /// The line shown under an answer: the model's HR@10 and NDCG@10 on the test split, then
    /// popularity's and SASRec's HR@10, each with its interval; `None` when the table lacks it.
    pub fn summary(&self, backbone: Backbone, soft: bool, decoding: Decoding) -> Option<Summary> {
        let model = self.row(&model_dir(backbone, soft), decoding)?;
        let baseline = |dir: &str| self.row(dir, Decoding::Free).and_then(|r| r.cell("HR@10")).cloned();
        Some(Summary {
            label: model.label.clone(),
            test_examples: model.test_examples,
            hr10: model.cell("HR@10")?.clone(),
            ndcg10: model.cell("NDCG@10")?.clone(),
            popularity_hr10: baseline("popularity"),
            sasrec_hr10: baseline("sasrec"),
        })
    }
}

/// What the page shows beside one answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub label: String,
    pub test_examples: usize,
    pub hr10: Cell,
    pub ndcg10: Cell,
    pub popularity_hr10: Option<Cell>,
    pub sasrec_hr10: Option<Cell>,
}

impl Summary {
    /// Whether the model's HR@10 interval lies wholly above popularity's: the plain reading of
    /// "beats popularity" (overlapping intervals are not called a win).
    pub fn beats_popularity(&self) -> Option<bool> {
        self.popularity_hr10.as_ref().map(|p| self.hr10.low > p.high)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> serde_json::Value {
        serde_json::json!({ "metrics": [
            { "dir": "popularity", "label": "popularity", "backbone": null, "decoding": "free", "test_examples": 1000, "seeds": 1,
              "cells": [{ "metric": "HR@10", "mean": 0.024, "std": null, "low": 0.015, "high": 0.034 }] },
            { "dir": "sft", "label": "SFT", "backbone": "bigrec", "decoding": "free", "test_examples": 1000, "seeds": 1,
              "cells": [{ "metric": "HR@10", "mean": 0.05, "std": null, "low": 0.037, "high": 0.064 },
                        { "metric": "NDCG@10", "mean": 0.0215, "std": null, "low": 0.0155, "high": 0.028 }] },
            { "dir": "sft", "label": "SFT, constrained", "backbone": "bigrec", "decoding": "constrained", "test_examples": 1000, "seeds": 1,
              "cells": [{ "metric": "HR@10", "mean": 0.058, "std": null, "low": 0.044, "high": 0.073 },
                        { "metric": "NDCG@10", "mean": 0.0239, "std": null, "low": 0.0178, "high": 0.0305 }] }
        ]})
    }

    #[test]
    fn finds_each_answers_row_and_the_baselines() {
        let m = manifest();
        let t = TestTable::from_manifest(Some(&m)).unwrap();
        let s = t.summary(Backbone::Bigrec, false, Decoding::Constrained).unwrap();
        assert_eq!(s.label, "SFT, constrained");
        assert_eq!(s.hr10.text(), "0.0580 [0.0440, 0.0730]");
        assert_eq!(s.popularity_hr10.as_ref().unwrap().text(), "0.0240 [0.0150, 0.0340]");
        assert_eq!(s.sasrec_hr10, None);
        assert_eq!(s.beats_popularity(), Some(true));
        let free = t.summary(Backbone::Bigrec, false, Decoding::Free).unwrap();
        assert_eq!(free.label, "SFT");
        assert_eq!(free.beats_popularity(), Some(true));
        assert!(t.summary(Backbone::Bigrec, true, Decoding::Free).is_none(), "no SOFT row shipped");
        assert!(t.summary(Backbone::Llara, false, Decoding::Free).is_none());
    }

    #[test]
    fn old_exports_have_no_table_and_bad_ones_say_so() {
        assert_eq!(TestTable::from_manifest(Some(&serde_json::json!({}))).unwrap(), TestTable::default());
        assert_eq!(TestTable::from_manifest(None).unwrap(), TestTable::default());
        let e = TestTable::from_manifest(Some(&serde_json::json!({ "metrics": [{ "dir": 3 }] }))).unwrap_err();
        assert!(e.contains("`metrics`"), "{e}");
        assert_eq!(model_dir(Backbone::Llara, true), "llara-soft");
    }
}
