//! `soft-train run`: every stage in order — data, baselines, (pre-training), SFT,
//! self-distillation, SOFT and its "without SA" ablation — each method in its own run
//! directory, all evaluated on the test split, then one table.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use soft_core::model::pretrained::tiny_dir;

use super::data_args::DataArgs;
use super::{baseline, distill, eval, prepare, pretrain, sft, soft};
use crate::backend::BackendChoice;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output directory: data/, popularity/, sasrec/, sft/, soft/, soft-distilled-only/.
    #[arg(long, default_value = "runs/default")]
    pub out: PathBuf,
    /// Base language model: `tiny` (pre-trained first when missing), `smollm2` or a path.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// Epochs of SFT and of each SOFT run (early stopping may end them sooner).
    #[arg(long, default_value_t = soft_core::train::sft::SftConfig::default().max_epochs)]
    pub epochs: usize,
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub alpha: f64,
    /// Training prompts SOFT's distance d is measured on.
    #[arg(long, default_value_t = soft_core::train::soft::SoftConfig::default().d_samples)]
    pub d_samples: usize,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
}

const METHODS: [(&str, &str); 5] = [
    ("popularity", "popularity"),
    ("sasrec", "SASRec"),
    ("sft", "SFT"),
    ("soft", "SOFT (adaptive)"),
    ("soft-distilled-only", "SOFT without SA"),
];

fn eval_on_test(args: &Args, method: &str) -> Result<()> {
    let data = args.out.join("data");
    eval::run(eval::Args {
        run: args.out.join(method),
        sequences: data.join("test.csv"),
        items: data.join("id2name.json"),
        out: args.out.join(method).join("test"),
        backend: args.backend,
    })
}

fn metrics(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join("test").join("metrics.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

pub fn run(args: Args) -> Result<()> {
    let started = std::time::Instant::now();
    let stage = |name: &str| eprintln!("\n== {name} ({:.0} s) ==", started.elapsed().as_secs_f64());
    stage("prepare");
    prepare::run(prepare::Args { data: args.data.clone(), out: args.out.join("data") })?;
    for method in [baseline::Method::Popularity, baseline::Method::Sasrec] {
        let name = if method == baseline::Method::Popularity { "popularity" } else { "sasrec" };
        stage(name);
        baseline::run(baseline::Args {
            method,
            out: args.out.join(name),
            data: args.data.clone(),
            train_on: "all".into(),
            epochs: soft_core::baselines::SasRecConfig::default().max_epochs,
            seed: soft_core::baselines::SasRecConfig::default().seed,
            backend: args.backend,
        })?;
        eval_on_test(&args, name)?;
    }
    if args.model == "tiny" && !tiny_dir().exists() {
        stage("pretrain");
        pretrain::run(pretrain::Args {
            data: args.data.clone(),
            out: None,
            steps: soft_core::train::pretrain::PretrainConfig::default().steps,
            vocab_size: soft_core::train::pretrain::PretrainConfig::default().vocab_size,
            seed: soft_core::train::pretrain::PretrainConfig::default().train.seed,
            backend: args.backend,
        })?;
    }
    stage("sft");
    let defaults = soft_core::train::sft::SftConfig::default();
    sft::run(sft::Args {
        model: args.model.clone(),
        out: args.out.join("sft"),
        data: args.data.clone(),
        epochs: args.epochs,
        lr: defaults.train.lr,
        beams: defaults.beams,
        max_new_tokens: defaults.max_new_tokens,
        seed: defaults.train.seed,
        backend: args.backend,
    })?;
    eval_on_test(&args, "sft")?;
    stage("distill");
    distill::run(distill::Args { run: args.out.join("sft"), data: args.data.clone(), backend: args.backend })?;
    for (name, schedule) in
        [("soft", soft::ScheduleArg::Adaptive), ("soft-distilled-only", soft::ScheduleArg::DistilledOnly)]
    {
        stage(name);
        soft::run(soft::Args {
            sft: args.out.join("sft"),
            out: args.out.join(name),
            alpha: args.alpha,
            schedule,
            epochs: Some(args.epochs),
            d_samples: args.d_samples,
            data: args.data.clone(),
            backend: args.backend,
        })?;
        eval_on_test(&args, name)?;
    }

    let keys = ["HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20"];
    let mut table = format!("\n| method | {} |\n|---|{}\n", keys.join(" | "), "---|".repeat(keys.len()));
    let mut rows = Vec::new();
    for (dir, label) in METHODS {
        let m = metrics(&args.out.join(dir))?;
        table += &format!(
            "| {label} | {} |\n",
            keys.iter().map(|k| format!("{:.4}", m[k].as_f64().unwrap_or(0.0))).collect::<Vec<_>>().join(" | ")
        );
        rows.push(m);
    }
    let gains: Vec<String> = keys
        .iter()
        .map(|k| {
            let (sft, soft) = (rows[2][k].as_f64().unwrap_or(0.0), rows[3][k].as_f64().unwrap_or(0.0));
            if sft > 0.0 {
                format!("{:+.1} %", 100.0 * (soft / sft - 1.0))
            } else {
                "n/a".into()
            }
        })
        .collect();
    table += &format!("| SOFT vs SFT | {} |\n", gains.join(" | "));
    println!("{table}");
    crate::run_dir::write_files(&args.out, &[("table.md".into(), table)])?;
    eprintln!("all stages in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
