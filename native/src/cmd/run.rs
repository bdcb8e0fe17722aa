//! `soft-train run`: every stage in order — data, baselines, (pre-training), SFT,
//! self-distillation, SOFT and its "without SA" ablation — each method in its own run
//! directory, all evaluated on the test split (free and constrained decoding), then one table,
//! a report and the curriculum plots. `--resume DIR` skips what is complete and continues the
//! rest from its last epoch checkpoint.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use soft_core::data::SplitConfig;
use soft_core::eval::decoding::Decoding;
use soft_core::model::pretrained::tiny_dir;
use soft_core::train::distill::load_jsonl;
use soft_core::train::soft::SoftReport;

use super::data_args::DataArgs;
use super::distill::DISTILLED_FILE;
use super::{baseline, distill, eval, prepare, pretrain, sft, soft};
use crate::backend::BackendChoice;
use crate::llm_run::DecodingArg;
use crate::plot;
use crate::run_dir::{write_files, RunInfo, RUN_FILE};

/// Ready-made settings; any option given explicitly wins over the profile's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// The `tiny` model on samples small enough for the whole chain to finish in about 20
    /// minutes on 2 CPU cores: 384 / 64 / 200 examples, 2 epochs, d on 32 prompts, answers of
    /// at most 32 tokens.
    Quick,
    /// The reference's sample sizes and epochs (4096 / 512 / 1000, 7 epochs, d on 256 prompts)
    /// with the `tiny` model.
    Reference,
    /// SmolLM2-135M with LoRA at the reference's sizes: meant for a GPU. On a CPU pass small
    /// sizes and `--max-steps`.
    Smollm2,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output directory: data/, popularity/, sasrec/, sft/, soft/, soft-distilled-only/ (and
    /// seeds/SEED/... for every seed after the first).
    #[arg(long, default_value = "runs/default")]
    pub out: PathBuf,
    /// Continue the interrupted run in RUN_DIR with the settings it was started with.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "quick")]
    pub profile: Profile,
    /// Base language model: `tiny` (pre-trained first when missing), `smollm2` or a path.
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Epochs of SFT and of each SOFT run (early stopping may end them sooner).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Stop each training stage after this many optimizer steps (smoke tests of big models).
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Pace of SOFT's curriculum (the reference sweeps 100, 10, 1, 0.1).
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub alpha: f64,
    /// Training prompts SOFT's distance d is measured on.
    #[arg(long)]
    pub d_samples: Option<usize>,
    /// Longest answer the language models may write, in tokens.
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// Most epochs of SASRec (it stops early on valid HR@10).
    #[arg(long)]
    pub sasrec_epochs: Option<usize>,
    /// SASRec trains on every window of the training period (`all`, the table's baseline) or
    /// only on the sampled training examples the language models get (`sample`).
    #[arg(long, default_value = "all", value_parser = ["all", "sample"])]
    pub sasrec_train_on: String,
    /// Decoding while training (validation, distillation, d); the test table reports both.
    #[arg(long, value_enum, default_value = "free")]
    pub decoding: DecodingArg,
    /// Repeat every trained method with this many seeds (SEED, SEED+1, ...): mean ± std.
    #[arg(long, default_value_t = 1)]
    pub seeds: usize,
    /// First seed of SASRec, SFT and SOFT.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
}

/// Everything a run was started with, saved as `DIR/run-config.json` so that `--resume`
/// continues with exactly the same settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunConfig {
    profile: Profile,
    model: String,
    dataset: String,
    domain: Option<String>,
    k_core: usize,
    split: SplitConfig,
    epochs: usize,
    max_steps: Option<usize>,
    lr: f64,
    grad_accum: usize,
    max_new_tokens: usize,
    alpha: f64,
    d_samples: usize,
    decoding: Decoding,
    seeds: Vec<u64>,
    sasrec_epochs: usize,
    #[serde(default = "all_windows")]
    sasrec_train_on: String,
}

fn all_windows() -> String {
    "all".into()
}

const CONFIG_FILE: &str = "run-config.json";

impl RunConfig {
    fn from_args(args: &Args) -> Result<Self> {
        if args.seeds == 0 {
            bail!("--seeds must be at least 1");
        }
        soft_core::train::scheduler::validate_alpha(args.alpha)?;
        // (sizes, model, epochs, lr, grad_accum, max new tokens, d samples, SASRec epochs)
        let (sizes, model, epochs, lr, grad_accum, max_new_tokens, d_samples, sasrec_epochs) = match args.profile {
            Profile::Quick => {
                (SplitConfig { train: 384, valid: 64, test: 200, seed: 42 }, "tiny", 2, 2e-3, 1, 32, 32, 20)
            }
            Profile::Reference => (SplitConfig::default(), "tiny", 7, 1e-3, 4, 64, 256, 200),
            Profile::Smollm2 => (SplitConfig::default(), "smollm2", 7, 2e-4, 4, 64, 256, 200),
        };
        let data = args.data.with_default_sizes(sizes);
        Ok(Self {
            profile: args.profile,
            model: args.model.clone().unwrap_or_else(|| model.into()),
            dataset: data.dataset.clone(),
            domain: data.domain.map(|d| d.name().to_string()),
            k_core: data.k_core,
            split: data.split_config(),
            epochs: args.epochs.unwrap_or(epochs),
            max_steps: args.max_steps,
            lr,
            grad_accum,
            max_new_tokens: args.max_new_tokens.unwrap_or(max_new_tokens),
            alpha: args.alpha,
            d_samples: args.d_samples.unwrap_or(d_samples),
            decoding: args.decoding.into(),
            seeds: (0..args.seeds as u64).map(|i| args.seed + i).collect(),
            sasrec_epochs: args.sasrec_epochs.unwrap_or(sasrec_epochs),
            sasrec_train_on: args.sasrec_train_on.clone(),
        })
    }

    fn data(&self) -> Result<DataArgs> {
        let domain = match &self.domain {
            Some(d) => Some(soft_core::data::Domain::parse(d).with_context(|| format!("unknown domain `{d}`"))?),
            None => None,
        };
        Ok(DataArgs {
            dataset: self.dataset.clone(),
            domain,
            k_core: self.k_core,
            train_size: Some(self.split.train),
            valid_size: Some(self.split.valid),
            test_size: Some(self.split.test),
            split_seed: self.split.seed,
        })
    }
}

/// The methods of the table: directory, label, and whether it is a language model (evaluated
/// with both decodings).
const METHODS: [(&str, &str, bool); 5] = [
    ("popularity", "popularity", false),
    ("sasrec", "SASRec", false),
    ("sft", "SFT", true),
    ("soft", "SOFT (adaptive)", true),
    ("soft-distilled-only", "SOFT without SA", true),
];

/// Where seed number `i` keeps its methods: the run directory itself for the first seed (the
/// stable layout), `seeds/SEED/` for the others.
fn seed_dir(out: &Path, i: usize, seed: u64) -> PathBuf {
    if i == 0 {
        out.to_path_buf()
    } else {
        out.join("seeds").join(seed.to_string())
    }
}

fn test_dir(decoding: Decoding) -> &'static str {
    match decoding {
        Decoding::Free => "test",
        Decoding::Constrained => "test-constrained",
    }
}

/// A stage's timing for the report.
#[derive(Debug, Serialize)]
struct StageTime {
    stage: String,
    seconds: f64,
    /// Already complete in a resumed run.
    skipped: bool,
}

struct Runner<'a> {
    out: &'a Path,
    config: RunConfig,
    data: DataArgs,
    backend: BackendChoice,
    started: Instant,
    times: Vec<StageTime>,
}

/// Whether a stage's output `path` exists; one that exists but does not `read` is an error, not a
/// reason to silently redo the stage.
fn complete<T>(path: &Path, read: impl FnOnce(&Path) -> Result<T>) -> Result<bool> {
    if !path.exists() {
        return Ok(false);
    }
    read(path).with_context(|| format!("{}: corrupted stage output; delete it to redo the stage", path.display()))?;
    Ok(true)
}

/// A complete run directory: `run.json` present and readable.
fn complete_run(dir: &Path) -> Result<bool> {
    complete(&dir.join(RUN_FILE), |_| RunInfo::load(dir))
}

fn read_metrics(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{}: corrupted metrics; delete it to evaluate again", path.display()))
}

impl Runner<'_> {
    /// Runs `work` unless `done` says the stage is complete; records the time either way.
    fn stage(&mut self, name: String, done: bool, work: impl FnOnce() -> Result<()>) -> Result<()> {
        let t = Instant::now();
        if done {
            eprintln!("\n== {name}: complete, skipped ==");
        } else {
            eprintln!("\n== {name} ({:.0} s into the run) ==", self.started.elapsed().as_secs_f64());
            work().with_context(|| format!("stage {name}"))?;
        }
        self.times.push(StageTime { stage: name, seconds: t.elapsed().as_secs_f64(), skipped: done });
        Ok(())
    }

    fn eval(&mut self, dir: &Path, decoding: Decoding) -> Result<()> {
        let out = dir.join(test_dir(decoding));
        let done = complete(&out.join("metrics.json"), read_metrics)?;
        let data = self.out.join("data");
        let (backend, run) = (self.backend, dir.to_path_buf());
        self.stage(format!("eval {} ({})", dir.display(), decoding.name()), done, || {
            eval::run(eval::Args {
                run,
                sequences: data.join("test.csv"),
                items: data.join("id2name.json"),
                out,
                decoding: Some(decoding.into()),
                backend,
            })
        })
    }

    fn llm_evals(&mut self, dir: &Path) -> Result<()> {
        self.eval(dir, Decoding::Free)?;
        self.eval(dir, Decoding::Constrained)
    }

    fn seed(&mut self, i: usize, seed: u64) -> Result<()> {
        let base = seed_dir(self.out, i, seed);
        let (data, backend, c) = (self.data.clone(), self.backend, self.config.clone());

        let dir = base.join("sasrec");
        self.stage(format!("sasrec, seed {seed}"), complete_run(&dir)?, || {
            baseline::run(baseline::Args {
                method: baseline::Method::Sasrec,
                out: dir.clone(),
                data: data.clone(),
                train_on: c.sasrec_train_on.clone(),
                epochs: c.sasrec_epochs,
                seed,
                backend,
            })
        })?;
        self.eval(&dir, Decoding::Free)?;

        let sft_dir = base.join("sft");
        let resume = sft_dir.exists();
        self.stage(format!("sft, seed {seed}"), complete_run(&sft_dir)?, || {
            sft::run(sft::Args {
                model: c.model.clone(),
                out: sft_dir.clone(),
                data: data.clone(),
                epochs: c.epochs,
                lr: c.lr,
                grad_accum: c.grad_accum,
                beams: soft_core::train::sft::SftConfig::default().beams,
                max_new_tokens: c.max_new_tokens,
                max_steps: c.max_steps,
                decoding: c.decoding.into(),
                seed,
                backend,
                resume,
            })
        })?;
        self.llm_evals(&sft_dir)?;

        let distilled = sft_dir.join(DISTILLED_FILE);
        let done = complete(&distilled, |p| Ok(load_jsonl(p)?))?;
        self.stage(format!("distill, seed {seed}"), done, || {
            distill::run(distill::Args { run: sft_dir.clone(), data: data.clone(), backend })
        })?;

        for (name, schedule) in
            [("soft", soft::ScheduleArg::Adaptive), ("soft-distilled-only", soft::ScheduleArg::DistilledOnly)]
        {
            let dir = base.join(name);
            let resume = dir.exists();
            self.stage(format!("{name}, seed {seed}"), complete_run(&dir)?, || {
                soft::run(soft::Args {
                    sft: sft_dir.clone(),
                    out: dir.clone(),
                    alpha: c.alpha,
                    schedule,
                    epochs: Some(c.epochs),
                    d_samples: c.d_samples,
                    data: data.clone(),
                    backend,
                    resume,
                })
            })?;
            self.llm_evals(&dir)?;
        }
        Ok(())
    }
}

pub fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    let (out, config) = match &args.resume {
        Some(dir) => {
            let path = dir.join(CONFIG_FILE);
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("{}: not a run started by `soft-train run`", path.display()))?;
            let config: RunConfig = serde_json::from_str(&text)
                .with_context(|| format!("{}: corrupted run configuration", path.display()))?;
            eprintln!("resuming {} (its own settings apply; other options are ignored)", dir.display());
            (dir.clone(), config)
        }
        None => {
            let config = RunConfig::from_args(&args)?;
            if args.out.join(CONFIG_FILE).exists() {
                bail!(
                    "{} already holds a run; continue it with `soft-train run --resume {}` or choose another --out",
                    args.out.display(),
                    args.out.display()
                );
            }
            write_files(&args.out, &[(CONFIG_FILE.into(), serde_json::to_string_pretty(&config)?)])?;
            (args.out.clone(), config)
        }
    };
    let data = config.data()?;
    let mut runner = Runner {
        out: &out,
        config: config.clone(),
        data: data.clone(),
        backend: args.backend,
        started,
        times: Vec::new(),
    };

    let data_dir = out.join("data");
    runner.stage("prepare".into(), data_dir.join("split.json").exists(), || {
        prepare::run(prepare::Args { data: data.clone(), out: data_dir.clone() })
    })?;
    let pop = out.join("popularity");
    runner.stage("popularity".into(), complete_run(&pop)?, || {
        baseline::run(baseline::Args {
            method: baseline::Method::Popularity,
            out: pop.clone(),
            data: data.clone(),
            train_on: "all".into(),
            epochs: 0,
            seed: 0,
            backend: args.backend,
        })
    })?;
    runner.eval(&pop, Decoding::Free)?;
    if config.model == "tiny" {
        let defaults = soft_core::train::pretrain::PretrainConfig::default();
        runner.stage("pretrain tiny".into(), tiny_dir().join("model.bpk").exists(), || {
            pretrain::run(pretrain::Args {
                data: data.clone(),
                out: None,
                steps: defaults.steps,
                vocab_size: defaults.vocab_size,
                ppl_titles: defaults.ppl_titles,
                seed: defaults.train.seed,
                backend: args.backend,
            })
        })?;
    }
    for (i, &seed) in config.seeds.iter().enumerate() {
        runner.seed(i, seed)?;
    }

    let table = table(&out, &config)?;
    println!("{table}");
    let plots = plots(&out, &config)?;
    let report = serde_json::json!({
        "config": config,
        "backend": crate::backend::choose(args.backend)?.name,
        "git_commit": crate::run_dir::git_commit(),
        "stages": runner.times,
        "seconds": started.elapsed().as_secs_f64(),
        "plots": plots,
    });
    write_files(&out, &[("table.md".into(), table), ("report.json".into(), serde_json::to_string_pretty(&report)?)])?;
    eprintln!("all stages in {:.0} s; table, report and plots in {}", started.elapsed().as_secs_f64(), out.display());
    Ok(())
}

const KEYS: [&str; 6] = ["HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20"];

/// Mean and sample standard deviation.
fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// One row's metrics over seeds: per key (mean, std).
fn row(out: &Path, config: &RunConfig, method: &str, decoding: Decoding) -> Result<Vec<(f64, f64)>> {
    let dirs: Vec<PathBuf> = if method == "popularity" {
        vec![out.join(method)]
    } else {
        config.seeds.iter().enumerate().map(|(i, &s)| seed_dir(out, i, s).join(method)).collect()
    };
    let runs: Vec<_> =
        dirs.iter().map(|d| read_metrics(&d.join(test_dir(decoding)).join("metrics.json"))).collect::<Result<_>>()?;
    Ok(KEYS
        .iter()
        .map(|k| mean_std(&runs.iter().map(|m| m.get(*k).and_then(|v| v.as_f64()).unwrap_or(0.0)).collect::<Vec<_>>()))
        .collect())
}

fn table(out: &Path, config: &RunConfig) -> Result<String> {
    let seeds = config.seeds.len();
    let cell = |(m, s): (f64, f64)| if seeds > 1 { format!("{m:.4} ± {s:.4}") } else { format!("{m:.4}") };
    let mut text = format!(
        "\n{} test examples, {} seed(s) ({}); mean ± sample std over seeds\n\n| method | {} |\n|---|{}\n",
        config.split.test,
        seeds,
        config.seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", "),
        KEYS.join(" | "),
        "---|".repeat(KEYS.len())
    );
    let mut rows = std::collections::BTreeMap::new();
    for (dir, label, llm) in METHODS {
        let decodings: &[Decoding] = if llm { &[Decoding::Free, Decoding::Constrained] } else { &[Decoding::Free] };
        for &decoding in decodings {
            let r = row(out, config, dir, decoding)?;
            let label = if decoding == Decoding::Constrained { format!("{label}, constrained") } else { label.into() };
            text += &format!("| {label} | {} |\n", r.iter().map(|&c| cell(c)).collect::<Vec<_>>().join(" | "));
            rows.insert((dir, decoding), r);
        }
    }
    for decoding in [Decoding::Free, Decoding::Constrained] {
        let (sft, soft) = (&rows[&("sft", decoding)], &rows[&("soft", decoding)]);
        let gains: Vec<String> = sft
            .iter()
            .zip(soft)
            .map(|(a, b)| if a.0 > 0.0 { format!("{:+.1} %", 100.0 * (b.0 / a.0 - 1.0)) } else { "n/a".into() })
            .collect();
        text += &format!("| SOFT vs SFT ({}) | {} |\n", decoding.name(), gains.join(" | "));
    }
    Ok(text)
}

/// The curriculum figure of the first seed's SOFT run, with valid HR@10 of every LLM method.
fn plots(out: &Path, config: &RunConfig) -> Result<Vec<PathBuf>> {
    let base = seed_dir(out, 0, config.seeds[0]);
    let path = base.join("soft").join("report.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: malformed", path.display()))?;
    let report: SoftReport =
        serde_json::from_value(value.clone()).with_context(|| format!("{}: not a SOFT report", path.display()))?;
    let epochs = &report.epochs;
    let mut hr10 = Vec::new();
    for (dir, label) in [("sft", "SFT"), ("soft", "SOFT"), ("soft-distilled-only", "SOFT without SA")] {
        let info = RunInfo::load(&base.join(dir))?;
        let list = info.details["epochs"].as_array().cloned().unwrap_or_default();
        let values = list.iter().map(|e| e["valid"]["hr"][2].as_f64().unwrap_or(f64::NAN));
        hr10.push((label.to_string(), values.collect::<Vec<f64>>()));
    }
    plot::curriculum_figure(
        &out.join("plots"),
        &epochs.iter().map(|e| e.lambda).collect::<Vec<_>>(),
        &epochs.iter().map(|e| e.d).collect::<Vec<_>>(),
        report.d0,
        &epochs.iter().map(|e| e.loss_real as f64).collect::<Vec<_>>(),
        &epochs.iter().map(|e| e.loss_distilled as f64).collect::<Vec<_>>(),
        &hr10,
    )
}
