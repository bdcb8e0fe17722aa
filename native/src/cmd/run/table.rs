//! The table of a run: every method's test metrics with a 95 % bootstrap interval over test
//! examples (and the mean ± sample std over seeds), then SOFT against SFT paired on the same
//! examples, as Markdown.

use std::path::Path;

use anyhow::{bail, Context, Result};
use soft_core::data::prompt::Backbone;
use soft_core::data::Catalog;
use soft_core::eval::decoding::Decoding;
use soft_core::eval::statistics::{bootstrap_mean, paired, Interval, Metric, LEVEL, RESAMPLES};
use soft_core::eval::target_rank;
use soft_core::eval::test_table::{Cell, Row};

use super::config::RunConfig;
use super::layout::{decodings, method_dirs, methods, test_dir, Method, SFT, SOFT};
use crate::cmd::eval::{read_metrics, read_predictions, METRICS_FILE, PREDICTIONS_FILE};

/// The columns, as `metrics.json` names them.
const KEYS: [Metric; 6] =
    [Metric::Hr(5), Metric::Hr(10), Metric::Hr(20), Metric::Ndcg(5), Metric::Ndcg(10), Metric::Ndcg(20)];
/// Seed of every bootstrap: the same run always gets the same table.
const BOOTSTRAP_SEED: u64 = 2505;

/// Mean and sample standard deviation.
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// One method with one decoding: per seed its metrics, per test example its target's rank.
struct Evaluated {
    /// `metrics.json` of each seed.
    seed_values: Vec<Vec<f64>>,
    /// Per seed, per test example.
    ranks: Vec<Vec<Option<usize>>>,
}

impl Evaluated {
    fn load(out: &Path, config: &RunConfig, method: &Method, decoding: Decoding, catalog: &Catalog) -> Result<Self> {
        let (mut seed_values, mut ranks): (Vec<Vec<f64>>, Vec<Vec<Option<usize>>>) = (Vec::new(), Vec::new());
        for dir in method_dirs(out, &config.seeds, method) {
            let eval = dir.join(test_dir(decoding));
            let metrics = read_metrics(&eval.join(METRICS_FILE))?;
            let values = KEYS
                .iter()
                .map(|k| {
                    let name = k.name();
                    metrics
                        .get(&name)
                        .copied()
                        .with_context(|| format!("{}: no {name}", eval.join(METRICS_FILE).display()))
                })
                .collect::<Result<Vec<f64>>>()?;
            let predictions = read_predictions(&eval.join(PREDICTIONS_FILE))?;
            seed_values.push(values);
            ranks.push(predictions.iter().map(|p| target_rank(catalog, p)).collect());
        }
        if ranks.windows(2).any(|w| w[0].len() != w[1].len()) {
            bail!("{}: seeds evaluated on different numbers of test examples", method.label);
        }
        Ok(Self { seed_values, ranks })
    }

    /// Per test example, `metric` averaged over seeds.
    fn example_values(&self, metric: Metric) -> Vec<f64> {
        let per_seed: Vec<Vec<f64>> = self.ranks.iter().map(|r| metric.values(r)).collect();
        (0..per_seed[0].len()).map(|i| per_seed.iter().map(|v| v[i]).sum::<f64>() / per_seed.len() as f64).collect()
    }

    fn interval(&self, metric: Metric) -> Interval {
        bootstrap_mean(&self.example_values(metric), BOOTSTRAP_SEED)
    }

    fn test_examples(&self) -> usize {
        self.ranks[0].len()
    }
}

fn row_label(method: &Method, decoding: Decoding) -> String {
    match decoding {
        Decoding::Constrained => format!("{}, constrained", method.label),
        Decoding::Free => method.label.clone(),
    }
}

/// The table's row of `method` with `decoding`, from its evaluations over `seeds` seeds.
fn row(method: &Method, decoding: Decoding, e: &Evaluated, seeds: usize) -> Row {
    let cells = KEYS
        .iter()
        .enumerate()
        .map(|(j, &k)| {
            let i = e.interval(k);
            let (mean, std) = mean_std(&e.seed_values.iter().map(|v| v[j]).collect::<Vec<_>>());
            Cell { metric: k.name(), mean, std: (seeds > 1 && method.seeded).then_some(std), low: i.low, high: i.high }
        })
        .collect();
    Row {
        dir: method.dir.clone(),
        label: row_label(method, decoding),
        backbone: method.backbone,
        decoding,
        test_examples: e.test_examples(),
        seeds,
        cells,
    }
}

/// Every method of the run with every decoding it is evaluated with, loaded from its test
/// evaluations; with `finished_only`, the methods not evaluated yet (a run still going) are left
/// out instead of being an error.
fn load_all<'m>(
    out: &Path,
    config: &RunConfig,
    methods: &'m [Method],
    catalog: &Catalog,
    finished_only: bool,
) -> Result<Vec<(&'m Method, Decoding, Evaluated)>> {
    let mut loaded = Vec::new();
    for method in methods {
        for &decoding in decodings(method.llm) {
            let evaluated = method_dirs(out, &config.seeds, method)
                .iter()
                .all(|d| d.join(test_dir(decoding)).join(METRICS_FILE).exists());
            if finished_only && !evaluated {
                continue;
            }
            let e = Evaluated::load(out, config, method, decoding, catalog)
                .with_context(|| format!("table row {}", row_label(method, decoding)))?;
            loaded.push((method, decoding, e));
        }
    }
    Ok(loaded)
}

/// The rows of the run in `out` whose test evaluations are written (all of them once the run
/// has finished).
pub fn finished_rows(out: &Path, config: &RunConfig, catalog: &Catalog) -> Result<Vec<Row>> {
    let methods = methods(&config.alpha, &config.backbones);
    let loaded = load_all(out, config, &methods, catalog, true)?;
    Ok(loaded.iter().map(|(m, d, e)| row(m, *d, e, config.seeds.len())).collect())
}

/// The run's table as Markdown, and its rows (the same bootstrap intervals) for `table.json`.
pub fn table(out: &Path, config: &RunConfig, catalog: &Catalog) -> Result<(String, Vec<Row>)> {
    let seeds = config.seeds.len();
    let methods = methods(&config.alpha, &config.backbones);
    let loaded = load_all(out, config, &methods, catalog, false)?;
    let n = loaded[0].2.test_examples();
    let spread = if seeds > 1 { "mean ± sample std over seeds, then " } else { "" };
    let mut text = format!(
        "\n{n} test examples, {seeds} seed(s) ({}). Each cell: {spread}the {:.0} % bootstrap interval over test \
         examples ({RESAMPLES} resamples{}). One hit moves HR by 1/{n} = {:.4}.\n\n| method | {} |\n|---|{}\n",
        config.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        100.0 * LEVEL,
        if seeds > 1 { " of per-example values averaged over seeds" } else { "" },
        1.0 / n as f64,
        KEYS.iter().map(|k| k.name()).collect::<Vec<_>>().join(" | "),
        "---|".repeat(KEYS.len())
    );
    let rows: Vec<Row> = loaded.iter().map(|(method, decoding, e)| row(method, *decoding, e, seeds)).collect();
    for row in &rows {
        text += &row.markdown();
    }
    for &backbone in &config.backbones {
        text += &soft_vs_sft(&loaded, n, backbone)?;
    }
    Ok((text, rows))
}

/// SOFT (first alpha) against SFT of `backbone` on the same test examples: the paired
/// difference with its interval and p-value, and how many hits the noise spans.
fn soft_vs_sft(loaded: &[(&Method, Decoding, Evaluated)], n: usize, backbone: Backbone) -> Result<String> {
    let find = |dir: &str, d: Decoding| {
        let dir = backbone.run_dir(dir);
        loaded.iter().find(|(m, dd, _)| m.dir == dir && *dd == d).map(|(_, _, e)| e).context("SFT or SOFT row missing")
    };
    let mut text = format!(
        "\n{} SOFT vs SFT, paired over the same {n} test examples (resampled together; p: two-sided paired \
         sign-flip test, {RESAMPLES} permutations)\n\n| decoding | metric | SFT | SOFT | SOFT − SFT [{:.0} % interval] | \
         relative | p |\n|---|---|---|---|---|---|---|\n",
        backbone.label(),
        100.0 * LEVEL
    );
    let mut noise_hits = 0.0f64;
    for decoding in [Decoding::Free, Decoding::Constrained] {
        let (sft, soft) = (find(SFT, decoding)?, find(SOFT, decoding)?);
        for k in KEYS {
            let p =
                paired(&sft.example_values(k), &soft.example_values(k), BOOTSTRAP_SEED).map_err(anyhow::Error::msg)?;
            let relative = p.relative.map_or("n/a".into(), |r| format!("{:+.1} %", 100.0 * r));
            text += &format!(
                "| {} | {} | {:.4} | {:.4} | {:+.4} [{:+.4}, {:+.4}] | {relative} | {:.3} |\n",
                decoding.name(),
                k.name(),
                p.a,
                p.b,
                p.difference.mean,
                p.difference.low,
                p.difference.high,
                p.p_value
            );
            if k == Metric::Hr(10) {
                noise_hits = noise_hits.max(p.difference.half_width() * n as f64);
            }
        }
    }
    text += &if noise_hits > 0.0 {
        format!(
            "\nOn {n} examples a SOFT − SFT difference in HR@10 of fewer than about {:.0} hits lies inside the paired \
             interval: noise, not a result.\n",
            noise_hits.ceil()
        )
    } else {
        "\nSFT and SOFT hit (HR@10) on exactly the same examples: there is no difference to judge.\n".to_string()
    };
    Ok(text)
}
