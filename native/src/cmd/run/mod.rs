//! `soft-train run`: every stage in order — data, baselines, (pre-training), Guidance-Only, SFT,
//! self-distillation, SOFT (once per alpha) and its "without SA" ablation — each method in its own run
//! directory, all evaluated on the test split (free and constrained decoding), then one table,
//! a report and the curriculum plots. `--resume DIR` skips what is complete and continues the
//! rest from its last epoch checkpoint.

mod config;
mod figures;
mod layout;
mod table;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use soft_core::data::dataset::ITEMS_FILE;
use soft_core::data::prompt::Backbone;
use soft_core::data::Catalog;
use soft_core::model::formats::pretrained::{tiny_dir, WEIGHTS_FILE};
use soft_core::train::distill::load_jsonl;
use soft_core::train::pretrain::PretrainConfig;
use soft_core::train::scheduler::Schedule;

use self::config::{extended_alphas, RunConfig};
pub use self::config::{Args, CONFIG_FILE};
use self::layout::{
    decodings, seed_dir, soft_dir, test_dir, DATA_DIR, GUIDANCE_ONLY, POPULARITY, SASREC, SFT, SOFT_WITHOUT_SA,
    TINY_DIR,
};
use super::baseline::{self, Baseline, LlaraInputs};
use super::distill::{self, DISTILLED_FILE};
use super::eval::{self, read_metrics, METRICS_FILE};
use super::prepare::{self, SPLIT_FILE, TEST_FILE};
use super::{pretrain, sft, soft};
use crate::backend::BackendChoice;
use crate::run_dir::{read_json, write_files};
use crate::run_info::{git_commit, GuidanceOnlyDetails, RunHeader, TrainOn, REPORT_FILE, RUN_FILE};
use soft_core::eval::test_table::Row;

/// A stage's timing for the report.
#[derive(Debug, Serialize)]
struct StageTime {
    stage: String,
    seconds: f64,
    /// Already complete in a resumed run.
    skipped: bool,
}

/// `report.json` of the whole run.
#[derive(Serialize)]
struct Report<'a> {
    config: &'a RunConfig,
    backend: String,
    git_commit: Option<String>,
    stages: &'a [StageTime],
    seconds: f64,
    plots: Vec<PathBuf>,
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
    complete(&dir.join(RUN_FILE), |_| RunHeader::load(dir))
}

struct Runner<'a> {
    out: &'a Path,
    config: &'a RunConfig,
    backend: BackendChoice,
    /// `--device-memory`, in bytes.
    device_memory: Option<u64>,
    started: Instant,
    times: Vec<StageTime>,
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

    /// Evaluates the run in `dir` on the test split, a language model with both decodings.
    fn evals(&mut self, dir: &Path, llm: bool) -> Result<()> {
        let data = self.out.join(DATA_DIR);
        for &decoding in decodings(llm) {
            let out = dir.join(test_dir(decoding));
            let done = complete(&out.join(METRICS_FILE), read_metrics)?;
            let options = eval::Options {
                run: dir.to_path_buf(),
                sequences: data.join(TEST_FILE),
                items: data.join(ITEMS_FILE),
                out,
                decoding: Some(decoding),
                ranking: None,
                backend: self.backend,
            };
            self.stage(format!("eval {} ({})", dir.display(), decoding.name()), done, || eval::execute(&options))?;
        }
        Ok(())
    }

    fn prepare(&mut self) -> Result<()> {
        let options = prepare::Options { data: self.config.data.clone(), out: self.out.join(DATA_DIR) };
        self.stage("prepare".into(), options.out.join(SPLIT_FILE).exists(), || prepare::execute(&options))
    }

    fn popularity(&mut self) -> Result<()> {
        let options = baseline::Options {
            baseline: Baseline::Popularity,
            out: self.out.join(POPULARITY),
            data: self.config.data.clone(),
            train_on: TrainOn::All,
            backend: self.backend,
        };
        self.stage("popularity".into(), complete_run(&options.out)?, || baseline::execute(&options))?;
        self.evals(&options.out, false)
    }

    /// The base model prompted with the history, untuned: the paper's "Guidance-Only", written
    /// to `out`. LLaRA's reads the seed's SASRec (`llara`) through an untrained projector.
    fn guidance_only(&mut self, out: PathBuf, backbone: Backbone, llara: Option<LlaraInputs>) -> Result<()> {
        let c = self.config;
        let mut prompt = c.sft.prompt.clone();
        prompt.backbone = backbone;
        let details = GuidanceOnlyDetails {
            base_model: self.model(),
            beams: c.sft.beams,
            max_new_tokens: c.sft.max_new_tokens,
            decoding: c.sft.decoding,
            ranking: c.sft.ranking,
            prompt,
        };
        let options = baseline::Options {
            baseline: Baseline::GuidanceOnly(details, llara),
            out,
            data: c.data.clone(),
            train_on: TrainOn::All,
            backend: self.backend,
        };
        let name = backbone.run_dir(GUIDANCE_ONLY);
        self.stage(name, complete_run(&options.out)?, || baseline::execute(&options))?;
        self.evals(&options.out, true)
    }

    /// The base model the language models use: `--model`, or this run's own `tiny`.
    fn model(&self) -> String {
        match self.config.pretrain_steps {
            // Absolute, so that `eval --run` finds it from any directory.
            Some(_) if self.config.model == "tiny" => {
                let dir = self.out.join(TINY_DIR);
                std::path::absolute(&dir).unwrap_or(dir).display().to_string()
            }
            _ => self.config.model.clone(),
        }
    }

    /// The `tiny` model, pre-trained on this dataset unless it exists: this run's own in
    /// DIR/tiny with `--pretrain-steps`, else the shared models/tiny.
    fn pretrain_tiny(&mut self) -> Result<()> {
        let (out, config) = match self.config.pretrain_steps {
            Some(steps) => (self.out.join(TINY_DIR), PretrainConfig { steps, ..PretrainConfig::default() }),
            None => (tiny_dir(), PretrainConfig::default()),
        };
        let options = pretrain::Options { data: self.config.data.clone(), out, config, backend: self.backend };
        self.stage("pretrain tiny".into(), options.out.join(WEIGHTS_FILE).exists(), || pretrain::execute(&options))
    }

    /// Every seeded method for seed number `i`.
    fn seed(&mut self, i: usize, seed: u64) -> Result<()> {
        let (c, backend) = (self.config, self.backend);
        let base = seed_dir(self.out, i, seed);

        let sasrec = baseline::Options {
            baseline: Baseline::Sasrec(c.sasrec_config(seed)),
            out: base.join(SASREC),
            data: c.data.clone(),
            train_on: c.sasrec_train_on,
            backend,
        };
        self.stage(format!("sasrec, seed {seed}"), complete_run(&sasrec.out)?, || baseline::execute(&sasrec))?;
        self.evals(&sasrec.out, false)?;
        for &backbone in &c.backbones {
            self.backbone(&base, seed, backbone, &sasrec.out)?;
        }
        Ok(())
    }

    /// The language models of `backbone` for `seed` (in `base`, the seed's directory): SFT,
    /// distillation, SOFT per alpha and without SA; LLaRA's read the seed's SASRec in `sasrec`
    /// and have their own Guidance-Only.
    fn backbone(&mut self, base: &Path, seed: u64, backbone: Backbone, sasrec: &Path) -> Result<()> {
        let (c, backend) = (self.config, self.backend);
        let dir = |name: &str| base.join(backbone.run_dir(name));
        let llara = (backbone == Backbone::Llara).then(|| sasrec.to_path_buf());
        if backbone == Backbone::Llara {
            let inputs = LlaraInputs { sasrec: sasrec.to_path_buf(), seed };
            self.guidance_only(dir(GUIDANCE_ONLY), backbone, Some(inputs))?;
        }
        // BIGRec's stages keep their names: logs and tools read them.
        let tag = |stage: &str| match backbone {
            Backbone::Bigrec => format!("{stage}, seed {seed}"),
            Backbone::Llara => format!("{} {stage}, seed {seed}", backbone.name()),
        };

        let sft_dir = dir(SFT);
        let sft = sft::Options {
            model: self.model(),
            out: sft_dir.clone(),
            data: c.data.clone(),
            config: c.sft_config(seed, backbone),
            backend,
            resume: sft_dir.exists(),
            sasrec: llara,
            device_memory: self.device_memory,
        };
        self.stage(tag("sft"), complete_run(&sft_dir)?, || sft::execute(&sft))?;
        self.evals(&sft_dir, true)?;

        let distill = distill::Options { run: sft_dir.clone(), data: c.data.clone(), backend };
        let done = complete(&sft_dir.join(DISTILLED_FILE), |p| Ok(load_jsonl(p)?))?;
        self.stage(tag("distill"), done, || distill::execute(&distill))?;

        // SOFT once per alpha, then the ablation (its schedule ignores alpha).
        let runs = c.alpha.iter().enumerate().map(|(i, &a)| (soft_dir(i, a), Schedule::Adaptive, a));
        let ablation = (SOFT_WITHOUT_SA.to_string(), Schedule::DistilledOnly, c.alpha[0]);
        for (name, schedule, alpha) in runs.chain([ablation]) {
            let soft_out = dir(&name);
            let soft = soft::Options {
                sft: sft_dir.clone(),
                out: soft_out.clone(),
                alpha,
                schedule,
                epochs: Some(c.sft.epochs),
                d_samples: c.d_samples,
                data: c.data.clone(),
                backend,
                resume: soft_out.exists(),
            };
            self.stage(tag(&name), complete_run(&soft_out)?, || soft::execute(&soft))?;
            self.evals(&soft_out, true)?;
        }
        Ok(())
    }
}

/// The run's table, as Markdown (what a person reads) and as its rows (what the page shows).
pub const TABLE_FILE: &str = "table.md";
pub const TABLE_JSON_FILE: &str = "table.json";

/// The table rows of the `soft-train run` in `dir` whose test evaluations are written (a run
/// still going has some of them), computed as `table.md`'s are.
pub fn test_rows(dir: &Path, config: &RunConfig) -> Result<Vec<Row>> {
    let catalog = Catalog::load(&dir.join(DATA_DIR).join(ITEMS_FILE))?;
    table::finished_rows(dir, config, &catalog)
}

/// The configuration a run in `dir` was started with.
pub fn read_config(dir: &Path) -> Result<RunConfig> {
    read_json(&dir.join(CONFIG_FILE), "not a run started by `soft-train run`", "corrupted run configuration")
}

/// What the chosen backend cannot do is refused before any stage, and before a new run's
/// configuration is written: half-precision base weights it cannot store, devices it lacks.
fn check_backend(config: &RunConfig, backend: BackendChoice) -> Result<()> {
    let (weights, devices) = (config.sft.weights_dtype, config.sft.devices);
    if weights == soft_core::model::weights::BaseWeights::default() && devices == 1 {
        return Ok(());
    }
    let chosen = crate::backend::choose(backend)?;
    weights
        .check_device(&chosen.device)
        .with_context(|| format!("--weights-dtype {} on {}", weights.name(), chosen.name))?;
    crate::backend::replicas(&chosen, devices).map(|_| ())
}

/// The configuration of a new run in `args.out` (saved there), or of the run `args.resume` continues.
fn start_or_resume(args: &Args) -> Result<(PathBuf, RunConfig)> {
    if let Some(dir) = &args.resume {
        let mut config = read_config(dir)?;
        eprintln!("resuming {} with the settings it was started with", dir.display());
        if !args.alpha.is_empty() && args.alpha != config.alpha {
            let had = config.alpha.len();
            config.alpha = extended_alphas(&config.alpha, &args.alpha)?;
            eprintln!("adding alphas {:?} to its sweep", &config.alpha[had..]);
            write_files(dir, &[(CONFIG_FILE.into(), serde_json::to_string_pretty(&config)?)])?;
        }
        check_backend(&config, args.backend)?;
        return Ok((dir.clone(), config));
    }
    let config = RunConfig::from_args(args)?;
    check_backend(&config, args.backend)?;
    if args.out.join(CONFIG_FILE).exists() {
        bail!(
            "{} already holds a run; continue it with `soft-train run --resume {}` or choose another --out",
            args.out.display(),
            args.out.display()
        );
    }
    write_files(&args.out, &[(CONFIG_FILE.into(), serde_json::to_string_pretty(&config)?)])?;
    Ok((args.out.clone(), config))
}

pub fn execute(args: &Args) -> Result<()> {
    let started = Instant::now();
    let device_memory = sft::device_memory_bytes(args.device_memory)?;
    let (out, config) = start_or_resume(args)?;
    let mut runner =
        Runner { out: &out, config: &config, backend: args.backend, device_memory, started, times: Vec::new() };
    runner.prepare()?;
    runner.popularity()?;
    if config.model == "tiny" {
        runner.pretrain_tiny()?;
    }
    if config.backbones.contains(&Backbone::Bigrec) {
        runner.guidance_only(out.join(GUIDANCE_ONLY), Backbone::Bigrec, None)?;
    }
    for (i, &seed) in config.seeds.iter().enumerate() {
        runner.seed(i, seed)?;
    }

    let catalog = Catalog::load(&out.join(DATA_DIR).join(ITEMS_FILE))?;
    let (table, rows) = table::table(&out, &config, &catalog)?;
    println!("{table}");
    let plots = figures::figures(&out, &config)?;
    let report = Report {
        config: &config,
        backend: crate::backend::choose(args.backend)?.name,
        git_commit: git_commit(),
        stages: &runner.times,
        seconds: started.elapsed().as_secs_f64(),
        plots,
    };
    write_files(
        &out,
        &[
            (TABLE_FILE.into(), table),
            (TABLE_JSON_FILE.into(), serde_json::to_string_pretty(&rows)?),
            (REPORT_FILE.into(), serde_json::to_string_pretty(&report)?),
        ],
    )?;
    eprintln!("all stages in {:.0} s; table, report and plots in {}", started.elapsed().as_secs_f64(), out.display());
    Ok(())
}
