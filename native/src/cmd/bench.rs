//! `soft-train bench`: the project's speed on fixed, seeded work — LoRA training, SOFT's
//! two-target step, beam search, grounding — and, with `--against pytorch`, the same work in
//! PyTorch + transformers + peft on the same machine (bench/pytorch_reference.py), side by side.
//!
//! Both sides build the model from one config (written here, passed to Python as JSON) with
//! random weights: speed does not depend on the weights' values, and beam search is made to
//! write exactly `new_tokens` tokens on both sides (no EOS), so the work is equal.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::{Device, Distribution, Tensor};
use serde::{Deserialize, Serialize};
use serde_json::json;
use soft_core::eval::grounding::rank_by_l2;
use soft_core::eval::llm::decoding_model;
use soft_core::model::config::{LlamaConfig, LoraConfig};
use soft_core::model::decoding::generate::{beam_search, BeamConfig};
use soft_core::model::llama::Llama;
use soft_core::train::lm::{shared_prompt_losses, LmExample};
use soft_core::train::soft::mixed_loss;
use soft_core::train::trainer::{LmTrainer, TrainConfig};

use crate::backend::{choose, BackendChoice};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchModel {
    /// The `tiny` model's shapes (4 layers, d 256, the pre-trained tokenizer's 4,096 tokens).
    Tiny,
    /// SmolLM2-135M's shapes (30 layers, d 576, 49,152 tokens).
    Smollm2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Work {
    /// LoRA training step: forward + backward + AdamW, prompt + response tokens per second.
    Train,
    /// SOFT's step: one prompt, its real and its distilled target, the mixed loss.
    Soft,
    /// Beam search: new tokens per second (best sequence's tokens, per prompt).
    Generate,
    /// Grounding: answer embeddings ranked against the catalog table by L2, top-K; queries/s.
    Grounding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Against {
    Pytorch,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [BenchModel::Tiny, BenchModel::Smollm2])]
    pub models: Vec<BenchModel>,
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Work::Train, Work::Soft, Work::Generate, Work::Grounding])]
    pub work: Vec<Work>,
    /// Timed repetitions of each measurement (the table gives their median).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Untimed repetitions first (allocators, autotune, caches).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Also run the same work in PyTorch (bench/pytorch_reference.py; scripts/setup-bench.sh
    /// makes its venv).
    #[arg(long, value_enum)]
    pub against: Option<Against>,
    /// The Python with torch, transformers and peft; default: $SOFT_BENCH_VENV/bin/python or
    /// ~/.cache/soft-bench-venv/bin/python.
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Write the results as JSON (headline ratios first, then every row).
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendChoice,
    /// Beam search with the LoRA adapters kept apart from the base weights (as decoding ran
    /// before it merged them): the "before" row of that change.
    #[arg(long)]
    pub unmerged_lora: bool,
}

/// The fixed shapes of every measurement; the Python side receives them as they are.
#[derive(Debug, Clone, Serialize)]
struct Shapes {
    batch: usize,
    prompt_tokens: usize,
    response_tokens: usize,
    lora: LoraConfig,
    lr: f64,
    beams: usize,
    new_tokens: usize,
    generate_batches: Vec<usize>,
    queries: usize,
    items: usize,
    top_k: usize,
}

impl Shapes {
    fn reference() -> Self {
        Self {
            batch: 8,
            prompt_tokens: 180,
            response_tokens: 20,
            lora: LoraConfig::default(),
            lr: 1e-4,
            beams: 4,
            new_tokens: 32,
            generate_batches: vec![1, 8],
            queries: 1000,
            items: 6344,
            top_k: 50,
        }
    }
}

/// One measured quantity: throughputs of each run (higher is better).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub model: BenchModel,
    pub work: Work,
    /// e.g. "batch 8".
    pub variant: String,
    pub unit: String,
    /// Model FLOPs per unit of throughput (per token, per query): FLOP utilisation = rate x this / peak.
    pub flops_per_unit: f64,
    pub project: Vec<f64>,
    #[serde(default)]
    pub pytorch: Vec<f64>,
}

fn model_config(model: BenchModel) -> LlamaConfig {
    match model {
        BenchModel::Tiny => LlamaConfig::tiny(4096),
        BenchModel::Smollm2 => LlamaConfig::smollm2_135m(),
    }
}

/// Forward FLOPs of one token at context length `ctx`, without the LM head: 2 per weight of
/// every block projection, plus attention's scores and weighted sum (2·2·heads·head_dim·ctx).
fn block_flops(c: &LlamaConfig, ctx: f64) -> f64 {
    let (d, q, kv) = (c.hidden_size as f64, (c.n_heads * c.head_dim) as f64, (c.n_kv_heads * c.head_dim) as f64);
    let weights = d * q + 2.0 * d * kv + q * d + 3.0 * d * c.intermediate_size as f64;
    c.n_layers as f64 * (2.0 * weights + 4.0 * q * ctx)
}

fn head_flops(c: &LlamaConfig) -> f64 {
    2.0 * (c.hidden_size * c.vocab_size) as f64
}

/// Model FLOPs per unit of each measurement. Training counts forward + backward to the
/// activations (2 x forward: the base weights are frozen, LoRA's own gradients are negligible),
/// the LM head only at trained positions; generation counts the prompt once and each new token
/// of every beam with its LM head; grounding counts the distance matrix product.
fn flops_per_unit(c: &LlamaConfig, s: &Shapes, work: Work) -> f64 {
    let (p, r) = (s.prompt_tokens as f64, s.response_tokens as f64);
    let per_example = |responses: f64| {
        // Mean causal context over a sequence of n tokens is n/2.
        let n = p + responses * r;
        n * block_flops(c, n / 2.0) + responses * r * head_flops(c)
    };
    match work {
        Work::Train => 2.0 * per_example(1.0) / (p + r),
        Work::Soft => 2.0 * per_example(2.0) / (p + 2.0 * r),
        Work::Generate => {
            let (b, t) = (s.beams as f64, s.new_tokens as f64);
            let prompt = p * block_flops(c, p / 2.0);
            let new = b * t * (block_flops(c, p + t / 2.0) + head_flops(c));
            (prompt + new) / t
        }
        Work::Grounding => 2.0 * (s.items * c.hidden_size) as f64,
    }
}

/// Deterministic token ids (splitmix64), so both sides could be fed the same ones.
fn tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            // Ids 0..3 are special in our tokenizers; keep to ordinary tokens.
            (4 + (z ^ (z >> 31)) % (vocab as u64 - 4)) as u32
        })
        .collect()
}

/// Runs `f` `warmup + runs` times and returns the throughput of each timed run.
fn measure(warmup: usize, runs: usize, units: f64, mut f: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f()?;
            Ok(units / start.elapsed().as_secs_f64())
        })
        .collect()
}

fn project_row(args: &Args, device: &Device, model: BenchModel, work: Work, batch: usize) -> Result<Vec<f64>> {
    let s = Shapes::reference();
    let c = model_config(model);
    let seed = args.seed;
    let examples: Vec<(Vec<u32>, Vec<u32>, Vec<u32>)> = (0..batch as u64)
        .map(|i| {
            (
                tokens(s.prompt_tokens, c.vocab_size, seed + 3 * i),
                tokens(s.response_tokens, c.vocab_size, seed + 3 * i + 1),
                tokens(s.response_tokens, c.vocab_size, seed + 3 * i + 2),
            )
        })
        .collect();
    let train_config = TrainConfig {
        lr: s.lr,
        warmup_steps: 0,
        weight_decay: 0.0,
        micro_batch: batch,
        grad_accum: 1,
        seed,
        max_steps: None,
        activation_checkpointing: false,
    };
    let trainer = || -> Result<LmTrainer> {
        let model = Llama::init(&c, &device.clone().autodiff())?.with_lora(&s.lora, seed)?;
        Ok(LmTrainer::new(model, train_config.clone(), 0))
    };
    match work {
        Work::Train => {
            let mut trainer = trainer()?;
            let lm: Vec<LmExample> = examples.iter().map(|(p, r, _)| LmExample::response_only(p, r)).collect();
            let refs: Vec<&LmExample> = lm.iter().collect();
            let units = (batch * (s.prompt_tokens + s.response_tokens)) as f64;
            measure(args.warmup, args.runs, units, || trainer.micro_step(&refs).map(drop).map_err(Into::into))
        }
        Work::Soft => {
            let mut trainer = trainer()?;
            let prompts: Vec<&[u32]> = examples.iter().map(|e| e.0.as_slice()).collect();
            let real: Vec<&[u32]> = examples.iter().map(|e| e.1.as_slice()).collect();
            let dist: Vec<&[u32]> = examples.iter().map(|e| e.2.as_slice()).collect();
            let units = (batch * (s.prompt_tokens + 2 * s.response_tokens)) as f64;
            measure(args.warmup, args.runs, units, || {
                let mut losses =
                    shared_prompt_losses(&trainer.model, &prompts, &[real.clone(), dist.clone()])?.into_iter();
                let (lr, ld) = (losses.next().expect("two sets"), losses.next().expect("two sets"));
                // SOFT's loop reads both losses for its records; so does the bench.
                let _: (f32, f32) = (lr.clone().into_scalar(), ld.clone().into_scalar());
                trainer.backward(mixed_loss(lr, ld, 0.5))?;
                Ok(())
            })
        }
        Work::Generate => {
            // A tuned model, decoded as eval and distillation decode it.
            let tuned = Llama::init(&c, device)?.with_lora(&s.lora, seed)?;
            let model = if args.unmerged_lora { tuned } else { decoding_model(&tuned) };
            let prompts: Vec<&[u32]> = examples.iter().map(|e| e.0.as_slice()).collect();
            // An EOS id outside the vocabulary: every beam writes exactly `new_tokens` tokens.
            let config = BeamConfig {
                num_beams: s.beams,
                num_return_sequences: s.beams,
                max_new_tokens: s.new_tokens,
                ..BeamConfig::new(c.vocab_size as u32)
            };
            let units = (batch * s.new_tokens) as f64;
            measure(args.warmup, args.runs, units, || {
                let out = beam_search(&model, &prompts, &config)?;
                if out.iter().any(|h| h[0].tokens.len() != s.new_tokens) {
                    bail!("beam search wrote fewer than {} tokens", s.new_tokens);
                }
                Ok(())
            })
        }
        Work::Grounding => {
            let d = c.hidden_size;
            let queries = Tensor::<2>::random([s.queries, d], Distribution::Normal(0.0, 1.0), device);
            let table = Tensor::<2>::random([s.items, d], Distribution::Normal(0.0, 1.0), device);
            measure(args.warmup, args.runs, s.queries as f64, || {
                let ranked = rank_by_l2(queries.clone(), table.clone(), s.top_k);
                if ranked.len() != s.queries || ranked[0].len() != s.top_k {
                    bail!("grounding returned {} rankings", ranked.len());
                }
                Ok(())
            })
        }
    }
}

fn unit(work: Work) -> &'static str {
    match work {
        Work::Train | Work::Soft => "tokens/s",
        Work::Generate => "new tokens/s",
        Work::Grounding => "queries/s",
    }
}

/// The measurements to make: (model, work, batch, variant label).
fn plan(args: &Args) -> Vec<(BenchModel, Work, usize, String)> {
    let s = Shapes::reference();
    let mut out = Vec::new();
    for &m in &args.models {
        for &w in &args.work {
            match w {
                Work::Generate => {
                    for &b in &s.generate_batches {
                        out.push((m, w, b, format!("batch {b}, {} beams, {} new", s.beams, s.new_tokens)));
                    }
                }
                Work::Grounding => out.push((m, w, s.queries, format!("{} x {}, top-{}", s.queries, s.items, s.top_k))),
                Work::Train => out.push((
                    m,
                    w,
                    s.batch,
                    format!("batch {} x ({} + {}) tokens", s.batch, s.prompt_tokens, s.response_tokens),
                )),
                Work::Soft => out.push((
                    m,
                    w,
                    s.batch,
                    format!("batch {} x ({} + 2 x {}) tokens", s.batch, s.prompt_tokens, s.response_tokens),
                )),
            }
        }
    }
    out
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The CPU this ran on and its peak f32 rate: cores x f32 lanes per vector (16 with AVX-512,
/// 8 with AVX2) x 2 FMA pipes x 2 FLOPs x the nominal clock (/proc/cpuinfo; boost not counted).
#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    pub model: String,
    pub cores: usize,
    pub mhz: f64,
    pub lanes: usize,
    pub peak_gflops: f64,
}

pub fn cpu() -> Cpu {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let flags = field("flags");
    let lanes = if flags.split(' ').any(|f| f == "avx512f") {
        16
    } else if flags.split(' ').any(|f| f == "avx2") {
        8
    } else {
        4
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mhz: f64 = field("cpu MHz").parse().unwrap_or(f64::NAN);
    let family = field("cpu family");
    let model = format!("{} (family {family}, model {})", field("model name"), field("model"));
    Cpu { model, cores, mhz, lanes, peak_gflops: cores as f64 * lanes as f64 * 2.0 * 2.0 * mhz / 1000.0 }
}

fn python(args: &Args) -> PathBuf {
    args.python.clone().unwrap_or_else(|| {
        let venv = std::env::var_os("SOFT_BENCH_VENV").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/soft-bench-venv")
        });
        venv.join("bin/python")
    })
}

/// Runs bench/pytorch_reference.py on the same plan; returns its throughputs per row.
fn pytorch_rows(args: &Args, plan: &[(BenchModel, Work, usize, String)], cores: usize) -> Result<Vec<Vec<f64>>> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/pytorch_reference.py");
    let python = python(args);
    if !python.exists() {
        bail!("{} not found: run scripts/setup-bench.sh (or pass --python)", python.display());
    }
    let s = Shapes::reference();
    let spec = json!({
        "threads": cores,
        "runs": args.runs,
        "warmup": args.warmup,
        "seed": args.seed,
        "shapes": s,
        "rows": plan.iter().map(|(m, w, b, _)| json!({
            "model": m, "work": w, "batch": b, "config": model_config(*m),
        })).collect::<Vec<_>>(),
    });
    let spec_path = std::env::temp_dir().join(format!("soft-bench-spec-{}.json", std::process::id()));
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)
        .with_context(|| format!("writing {}", spec_path.display()))?;
    eprintln!("PyTorch side: {} {}", python.display(), script.display());
    let out = Command::new(&python)
        .arg(&script)
        .arg("--spec")
        .arg(&spec_path)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    let _ = std::fs::remove_file(&spec_path);
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let rows: Vec<Vec<f64>> = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("{} printed no JSON list of throughputs", script.display()))?;
    if rows.len() != plan.len() {
        bail!("{} returned {} rows for {} measurements", script.display(), rows.len(), plan.len());
    }
    Ok(rows)
}

fn fmt_rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

fn print_table(rows: &[Row], cpu: &Cpu) {
    println!(
        "| model | work | shape | unit | project (median, min-max) | PyTorch | ratio | MFU project | MFU PyTorch |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mfu = |rate: f64, f: f64| format!("{:.1} %", 100.0 * rate * f / (cpu.peak_gflops * 1e9));
    for r in rows {
        let p = median(&r.project);
        let (lo, hi) = r.project.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let (torch, ratio, torch_mfu) = if r.pytorch.is_empty() {
            ("-".into(), "-".into(), "-".into())
        } else {
            let t = median(&r.pytorch);
            (fmt_rate(t), format!("{:.2}x", p / t), mfu(t, r.flops_per_unit))
        };
        println!(
            "| {:?} | {:?} | {} | {} | {} ({}-{}) | {torch} | {ratio} | {} | {torch_mfu} |",
            r.model,
            r.work,
            r.variant,
            r.unit,
            fmt_rate(p),
            fmt_rate(lo),
            fmt_rate(hi),
            mfu(p, r.flops_per_unit)
        );
    }
    println!(
        "\nCPU: {}, {} cores, {:.0} MHz, {} f32 lanes: peak {:.1} GFLOP/s (cores x lanes x 2 FMA pipes x 2 x clock)",
        cpu.model, cpu.cores, cpu.mhz, cpu.lanes, cpu.peak_gflops
    );
}

/// The stable summary: per kind of work, the largest model's throughput on each side and
/// their ratio (`generate` at the largest batch).
fn summary(rows: &[Row]) -> serde_json::Value {
    let pick = |work: Work| {
        let row = rows.iter().rfind(|r| r.work == work)?;
        let project = median(&row.project);
        let pytorch = (!row.pytorch.is_empty()).then(|| median(&row.pytorch));
        Some(json!({
            "model": row.model, "variant": row.variant, "unit": row.unit,
            "project": project, "pytorch": pytorch, "ratio": pytorch.map(|t| project / t),
        }))
    };
    json!({
        "train": pick(Work::Train),
        "soft": pick(Work::Soft),
        "generate": pick(Work::Generate),
        "grounding": pick(Work::Grounding),
    })
}

pub fn execute(args: &Args) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let backend = choose(args.backend)?;
    let cpu = cpu();
    let plan = plan(args);
    let s = Shapes::reference();
    eprintln!(
        "bench on {} ({} threads): {} measurements x ({} warm-up + {} runs)",
        backend.name,
        cpu.cores,
        plan.len(),
        args.warmup,
        args.runs
    );
    let mut rows = Vec::new();
    for (model, work, batch, variant) in &plan {
        let project = project_row(args, &backend.device, *model, *work, *batch)
            .with_context(|| format!("{model:?} {work:?} {variant}"))?;
        eprintln!("  {model:?} {work:?} {variant}: {} {}", fmt_rate(median(&project)), unit(*work));
        let c = model_config(*model);
        rows.push(Row {
            model: *model,
            work: *work,
            variant: variant.clone(),
            unit: unit(*work).into(),
            flops_per_unit: flops_per_unit(&c, &s, *work),
            project,
            pytorch: Vec::new(),
        });
    }
    if args.against.is_some() {
        for (row, torch) in rows.iter_mut().zip(pytorch_rows(args, &plan, cpu.cores)?) {
            row.pytorch = torch;
        }
    }
    print_table(&rows, &cpu);
    if let Some(path) = &args.json {
        let mut out = summary(&rows);
        out["backend"] = json!(backend.name);
        out["cpu"] = json!(cpu);
        out["shapes"] = json!(s);
        out["runs"] = json!(args.runs);
        out["rows"] = json!(rows);
        soft_core::atomic_file::write_atomic(path, serde_json::to_string_pretty(&out)?.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_of_a_training_token_are_about_four_times_the_weights() {
        // Without attention and the head the count is 4 FLOPs per block weight.
        let c = LlamaConfig::smollm2_135m();
        let block_weights = 30.0 * (576.0 * 576.0 * 2.0 + 2.0 * 576.0 * 192.0 + 3.0 * 576.0 * 1536.0);
        assert!((block_flops(&c, 0.0) - 2.0 * block_weights).abs() < 1.0);
        assert!(flops_per_unit(&c, &Shapes::reference(), Work::Train) > 4.0 * block_weights);
    }

    #[test]
    fn tokens_are_seeded_and_ordinary() {
        let a = tokens(100, 50, 7);
        assert_eq!(a, tokens(100, 50, 7));
        assert_ne!(a, tokens(100, 50, 8));
        assert!(a.iter().all(|&t| (4..50).contains(&t)));
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
