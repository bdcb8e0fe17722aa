//! The table of a run: every method's test metrics (mean ± sample std over seeds) and SOFT's
//! gain over SFT, as Markdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use soft_core::eval::decoding::Decoding;

use super::config::RunConfig;
use super::layout::{decodings, seed_dir, test_dir, Method, METHODS, POPULARITY, SFT, SOFT};
use crate::cmd::eval::{read_metrics, METRICS_FILE};

/// The columns, as `metrics.json` names them.
const KEYS: [&str; 6] = ["HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20"];

/// Mean and sample standard deviation.
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// One row's metrics over seeds: per key (mean, std).
fn row(out: &Path, config: &RunConfig, method: &Method, decoding: Decoding) -> Result<Vec<(f64, f64)>> {
    let dirs: Vec<PathBuf> = if method.dir == POPULARITY.dir {
        vec![out.join(method.dir)]
    } else {
        config.seeds.iter().enumerate().map(|(i, &s)| seed_dir(out, i, s).join(method.dir)).collect()
    };
    let runs = dirs
        .iter()
        .map(|d| read_metrics(&d.join(test_dir(decoding)).join(METRICS_FILE)))
        .collect::<Result<Vec<_>>>()?;
    KEYS.iter()
        .map(|&k| {
            let values = runs.iter().map(|m| m.get(k).copied().with_context(|| format!("metrics without {k}")));
            Ok(mean_std(&values.collect::<Result<Vec<f64>>>()?))
        })
        .collect()
}

pub fn table(out: &Path, config: &RunConfig) -> Result<String> {
    let seeds = config.seeds.len();
    let cell = |(m, s): (f64, f64)| if seeds > 1 { format!("{m:.4} ± {s:.4}") } else { format!("{m:.4}") };
    let mut text = format!(
        "\n{} test examples, {} seed(s) ({}); mean ± sample std over seeds\n\n| method | {} |\n|---|{}\n",
        config.data.split.test,
        seeds,
        config.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        KEYS.join(" | "),
        "---|".repeat(KEYS.len())
    );
    let mut rows = BTreeMap::new();
    for method in &METHODS {
        for &decoding in decodings(method) {
            let r = row(out, config, method, decoding)?;
            let label = match decoding {
                Decoding::Constrained => format!("{}, constrained", method.label),
                Decoding::Free => method.label.to_string(),
            };
            text += &format!("| {label} | {} |\n", r.iter().map(|&c| cell(c)).collect::<Vec<_>>().join(" | "));
            rows.insert((method.dir, decoding), r);
        }
    }
    for decoding in [Decoding::Free, Decoding::Constrained] {
        let (sft, soft) = (&rows[&(SFT.dir, decoding)], &rows[&(SOFT.dir, decoding)]);
        let gains: Vec<String> = sft
            .iter()
            .zip(soft)
            .map(|(a, b)| if a.0 > 0.0 { format!("{:+.1} %", 100.0 * (b.0 / a.0 - 1.0)) } else { "n/a".into() })
            .collect();
        text += &format!("| SOFT vs SFT ({}) | {} |\n", decoding.name(), gains.join(" | "));
    }
    Ok(text)
}
