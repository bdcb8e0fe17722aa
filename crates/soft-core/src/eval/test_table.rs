//! A row of a run's test table: `soft-train run` writes the rows (`table.md`, `table.json`) and
//! `soft-train export` ships them beside the models, so the page shows each answer's model with
//! the numbers of `table.md`. One type for both sides, and one way to print a cell.

use serde::{Deserialize, Serialize};

use crate::data::prompt::Backbone;
use crate::eval::decoding::Decoding;

/// One method with one decoding on the test split: every column's value (mean over seeds) with
/// its bootstrap interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The method's directory in the run (`sft`, `llara-soft`, `popularity`, ...).
    pub dir: String,
    /// As `table.md` labels the row.
    pub label: String,
    /// The language model's backbone (none for the baselines; missing in older exports).
    #[serde(default)]
    pub backbone: Option<Backbone>,
    pub decoding: Decoding,
    pub test_examples: usize,
    /// Seeds the means are over (missing in older exports: one).
    #[serde(default = "one_seed")]
    pub seeds: usize,
    pub cells: Vec<Cell>,
}

fn one_seed() -> usize {
    1
}

/// One column of a [`Row`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// `HR@10`, `NDCG@10`, ... as `metrics.json` names it.
    pub metric: String,
    pub mean: f64,
    /// Sample standard deviation over seeds (runs with several seeds, seeded methods).
    #[serde(default)]
    pub std: Option<f64>,
    /// The bootstrap interval over test examples.
    pub low: f64,
    pub high: f64,
}

impl Cell {
    /// `0.0580 [0.0440, 0.0730]` (`mean ± std [low, high]` over seeds), as `table.md` writes it.
    pub fn text(&self) -> String {
        match self.std {
            Some(std) => format!("{:.4} ± {std:.4} [{:.4}, {:.4}]", self.mean, self.low, self.high),
            None => format!("{:.4} [{:.4}, {:.4}]", self.mean, self.low, self.high),
        }
    }
}

impl Row {
    pub fn cell(&self, metric: &str) -> Option<&Cell> {
        self.cells.iter().find(|c| c.metric == metric)
    }

    /// The row as a line of `table.md`.
    pub fn markdown(&self) -> String {
        let cells: Vec<String> = self.cells.iter().map(Cell::text).collect();
        format!("| {} | {} |\n", self.label, cells.join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_export_without_backbone_or_seeds_still_reads_and_prints_as_the_table_does() {
        let old = r#"{"dir": "sft", "label": "SFT", "decoding": "free", "test_examples": 200,
            "cells": [{"metric": "HR@10", "mean": 0.058, "low": 0.044, "high": 0.073}]}"#;
        let row: Row = serde_json::from_str(old).unwrap();
        assert_eq!((row.backbone, row.seeds), (None, 1));
        assert_eq!(row.cell("HR@10").unwrap().text(), "0.0580 [0.0440, 0.0730]");
        assert_eq!(row.markdown(), "| SFT | 0.0580 [0.0440, 0.0730] |\n");
        let seeded = Cell { std: Some(0.01), ..row.cells[0].clone() };
        assert_eq!(seeded.text(), "0.0580 ± 0.0100 [0.0440, 0.0730]");
    }
}
