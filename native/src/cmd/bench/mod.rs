//! `soft-train bench`: the project's speed on fixed, seeded work — LoRA training, SOFT's
//! two-target step, beam search, grounding — and, with `--against pytorch`, the same work in
//! PyTorch + transformers + peft on the same machine (bench/pytorch_reference.py), side by side.
//!
//! With `--against llama.cpp` ([`llamacpp`]) it measures SmolLM2 itself, loaded from its GGUF, on
//! prompt processing and greedy decoding, against llama.cpp on the same file. `--work bandwidth`
//! ([`bandwidth`]) measures the machine's read bandwidth and the floor it sets on a beam-search
//! step; `--work peak` ([`peak`]) its f32 FMA rate and clock, which FLOP utilisation is then
//! reported against.
//!
//! Both sides build the model from one config (written here, passed to Python as JSON) with
//! random weights: speed does not depend on the weights' values, and beam search is made to
//! write exactly `new_tokens` tokens on both sides (no EOS), so the work is equal.

mod bandwidth;
mod llamacpp;
mod peak;

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
use soft_core::model::formats::pretrained::load_path_as;
use soft_core::model::llama::Llama;
use soft_core::model::weights::BaseWeights;
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
    /// The machine's streaming read bandwidth (1 GiB of f32, all cores), GB/s; with `generate`
    /// rows, also each beam-search step's floor (its weights' bytes / bandwidth).
    Bandwidth,
    /// The machine's f32 multiply-add rate as measured (FMA chains in registers, all cores),
    /// GFLOP/s; the FLOP utilisation columns are then against it instead of the nominal peak.
    Peak,
    /// SmolLM2 from its GGUF (the real model): a 180-token prompt's forward pass and first token,
    /// prompt tokens/s. Measured with `greedy`; `--against llama.cpp` adds both.
    Prompt,
    /// SmolLM2 from its GGUF: greedy decoding at batch 1, 32 new tokens after the prompt, the
    /// tokens after the first per second.
    Greedy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Against {
    Pytorch,
    /// llama.cpp through node-llama-cpp (bench/llamacpp; scripts/setup-bench-llamacpp.sh
    /// installs it): SmolLM2's `prompt` and `greedy` rows, from the same GGUF.
    #[value(name = "llama.cpp")]
    LlamaCpp,
    /// PyTorch with its products in bf16: every row under `torch.autocast("cpu",
    /// dtype=torch.bfloat16)` (oneDNN's bf16 kernels; f32 weights, optimizer and loss), the peer
    /// of `--weights-dtype bf16-dot`.
    #[value(name = "pytorch-bf16")]
    PytorchBf16,
}

impl Against {
    /// The dtype the PyTorch side's products autocast to, if any (its spec's `autocast`).
    fn pytorch_autocast(self) -> Option<&'static str> {
        (self == Self::PytorchBf16).then_some("bfloat16")
    }
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
    /// makes its venv; `pytorch-bf16`: under bf16 autocast), or `llama.cpp`: SmolLM2's `prompt` and `greedy` rows (added to --work)
    /// in llama.cpp (scripts/setup-bench-llamacpp.sh installs it).
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
    /// The base weights of every row: f32, f16 or bf16 (decoding's few-row product reads
    /// half-precision weights as they lie, widening them in registers: half the bytes of f32;
    /// training widens them per product), `bf16-dot` (bf16, a training step's products in bf16
    /// dot products; decodes as bf16), or `stored`: SmolLM2's real GGUF with its Q4_1
    /// projections and Q8_0 embedding read as the file's blocks (beam search then decodes
    /// SmolLM2's own weights with a fresh adapter kept apart, not random weights, and `train` /
    /// `soft` train an adapter over them; SmolLM2 only), or `int8-dot`: `stored` with decoding's
    /// products in 8-bit integer dot products (CPU with AVX512_VNNI; inputs quantized per block
    /// of 32, llama.cpp's way; training as `stored`).
    #[arg(long, default_value = "f32")]
    pub weights_dtype: BaseWeights,
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
    #[serde(default)]
    pub llama_cpp: Vec<f64>,
    /// Beam search: seconds of one decoding step per run, the prompt left out (see
    /// [`decoding_step`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub step_s: Vec<f64>,
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
        Work::Bandwidth | Work::Peak => 0.0,
        // One prompt, its forward pass and one LM head, per prompt token.
        Work::Prompt => {
            let p = s.prompt_tokens as f64;
            block_flops(c, p / 2.0) + head_flops(c) / p
        }
        Work::Greedy => block_flops(c, (s.prompt_tokens + s.new_tokens / 2) as f64) + head_flops(c),
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

/// [`measure`] for work that measures itself (`f` returns what each run measured: a rate, or
/// two when it times two things).
fn measured_runs<T>(warmup: usize, runs: usize, mut f: impl FnMut() -> Result<T>) -> Result<Vec<T>> {
    for _ in 0..warmup {
        f()?;
    }
    (0..runs).map(|_| f()).collect()
}

/// GB/s of each run of a streaming read over [`bandwidth::BUFFER_FLOATS`] f32.
fn bandwidth_row(args: &Args, threads: usize) -> Result<Vec<f64>> {
    // Allocated and written once, untimed.
    let data = bandwidth::buffer(bandwidth::BUFFER_FLOATS);
    let expected = bandwidth::expected_sum(data.len());
    measured_runs(args.warmup, args.runs, || {
        let (sum, gbs) = bandwidth::stream(&data, threads)?;
        if sum != expected {
            bail!("bandwidth: the read summed to {sum}, not {expected}");
        }
        Ok(gbs)
    })
}

/// GFLOP/s of each run of [`peak::measure`] on `threads` threads.
fn peak_row(args: &Args, threads: usize) -> Result<Vec<f64>> {
    measured_runs(args.warmup, args.runs, || Ok(peak::measure(threads)?.0))
}

/// SmolLM2 from its GGUF with the file's blocks kept (`--weights-dtype stored`, or `int8-dot`:
/// also repacked for integer products).
fn stored_smollm2(model: BenchModel, device: &Device, weights: BaseWeights) -> Result<Llama> {
    if model != BenchModel::Smollm2 {
        bail!(
            "--weights-dtype {} decodes SmolLM2's GGUF; {model:?} has no file of blocks (use --models smollm2)",
            weights.name()
        );
    }
    let path = llamacpp::gguf()?;
    let p = load_path_as(&path, device, weights).with_context(|| format!("loading {}", path.display()))?;
    Ok(p.model)
}

/// One decoding step of a beam search that writes `new_tokens` tokens in `full_s` seconds and
/// one token (the prompt's pass, whose logits give it) in `one_s`: the other steps' mean. The
/// floor is a step's bytes; dividing the whole search by its tokens would count the prompt's
/// pass (a 180-token prompt costs about as much as a dozen steps) as steps.
fn decoding_step(full_s: f64, one_s: f64, new_tokens: usize) -> f64 {
    (full_s - one_s) / (new_tokens - 1) as f64
}

/// The rates of `work`'s runs, and for beam search each run's [`decoding_step`] too.
fn project_row(
    args: &Args,
    device: &Device,
    model: BenchModel,
    work: Work,
    batch: usize,
) -> Result<(Vec<f64>, Vec<f64>)> {
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
        base_dtype: Default::default(),
        devices: 1,
    };
    let trainer = || -> Result<LmTrainer> {
        let training = device.clone().autodiff();
        let base = if args.weights_dtype.keeps_blocks() {
            // SmolLM2's own blocks as the frozen base (read as they lie forward and backward).
            stored_smollm2(model, &training, args.weights_dtype)?
        } else {
            Llama::init(&c, &training)?.with_base_weights(args.weights_dtype)?
        };
        Ok(LmTrainer::new(base.with_lora(&s.lora, seed)?, train_config.clone(), 0))
    };
    let rates = match work {
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
            let model = match args.weights_dtype {
                // bf16-dot decodes as bf16: its dot products are a training step's.
                BaseWeights::Float(_) | BaseWeights::Bf16Dot => {
                    // A tuned model, decoded as eval and distillation decode it.
                    let tuned = Llama::init(&c, device)?.with_lora(&s.lora, seed)?;
                    let model = if args.unmerged_lora { tuned } else { decoding_model(&tuned) };
                    // The merged weights in the dtype asked for (merging writes f32).
                    model.with_base_dtype(args.weights_dtype.encoding())?
                }
                // The file's blocks, with the adapter kept apart: merging would write f32.
                BaseWeights::Stored | BaseWeights::Int8Dot => {
                    stored_smollm2(model, device, args.weights_dtype)?.with_lora(&s.lora, seed)?
                }
            };
            let prompts: Vec<&[u32]> = examples.iter().map(|e| e.0.as_slice()).collect();
            // An EOS id outside the vocabulary: every beam writes exactly `new_tokens` tokens.
            let config = BeamConfig {
                num_beams: s.beams,
                num_return_sequences: s.beams,
                max_new_tokens: s.new_tokens,
                ..BeamConfig::new(c.vocab_size as u32)
            };
            let units = (batch * s.new_tokens) as f64;
            let timed = |config: &BeamConfig| -> Result<f64> {
                let start = Instant::now();
                let out = beam_search(&model, &prompts, config)?;
                if out.iter().any(|h| h[0].tokens.len() != config.max_new_tokens) {
                    bail!("beam search wrote fewer than {} tokens", config.max_new_tokens);
                }
                Ok(start.elapsed().as_secs_f64())
            };
            let one = BeamConfig { max_new_tokens: 1, ..config.clone() };
            let runs = measured_runs(args.warmup, args.runs, || {
                let one_s = timed(&one)?;
                let full_s = timed(&config)?;
                Ok((units / full_s, decoding_step(full_s, one_s, s.new_tokens)))
            })?;
            return Ok(runs.into_iter().unzip());
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
        Work::Bandwidth | Work::Peak | Work::Prompt | Work::Greedy => bail!("{work:?} is measured by execute"),
    };
    Ok((rates?, Vec::new()))
}

fn unit(work: Work) -> &'static str {
    match work {
        Work::Train | Work::Soft => "tokens/s",
        Work::Generate => "new tokens/s",
        Work::Grounding => "queries/s",
        Work::Bandwidth => "GB/s",
        Work::Peak => "GFLOP/s",
        Work::Prompt => "prompt tokens/s",
        Work::Greedy => "new tokens/s",
    }
}

/// The measurements to make: (model, work, batch, variant label).
fn plan(args: &Args) -> Vec<(BenchModel, Work, usize, String)> {
    let s = Shapes::reference();
    let mut out = Vec::new();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if args.work.contains(&Work::Bandwidth) {
        // The machine's, not a model's: one row, filed under the first model.
        let m = args.models.first().copied().unwrap_or(BenchModel::Smollm2);
        out.push((m, Work::Bandwidth, threads, format!("read 1 GiB f32, {threads} threads")));
    }
    if args.work.contains(&Work::Peak) {
        let m = args.models.first().copied().unwrap_or(BenchModel::Smollm2);
        out.push((m, Work::Peak, threads, format!("f32 FMA chains in registers, {threads} threads")));
    }
    let llama = args.against == Some(Against::LlamaCpp);
    // The real SmolLM2 (its GGUF), whatever --models says: the only model llama.cpp can load.
    if llama || args.work.contains(&Work::Prompt) {
        out.push((BenchModel::Smollm2, Work::Prompt, 1, format!("SmolLM2 GGUF, {} prompt tokens", s.prompt_tokens)));
    }
    if llama || args.work.contains(&Work::Greedy) {
        out.push((
            BenchModel::Smollm2,
            Work::Greedy,
            1,
            format!("SmolLM2 GGUF, batch 1 greedy, {} prompt + {} new", s.prompt_tokens, s.new_tokens),
        ));
    }
    for &m in &args.models {
        for &w in &args.work {
            match w {
                Work::Bandwidth | Work::Peak | Work::Prompt | Work::Greedy => {}
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
        "autocast": args.against.and_then(Against::pytorch_autocast),
        "rows": plan.iter().map(|(m, w, b, _)| json!({
            "model": m, "work": w, "batch": b, "config": model_config(*m),
        })).collect::<Vec<_>>(),
    });
    let spec_path = std::env::temp_dir().join(format!("soft-bench-spec-{}.json", std::process::id()));
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)
        .with_context(|| format!("writing {}", spec_path.display()))?;
    let precision = args.against.and_then(Against::pytorch_autocast).unwrap_or("float32");
    eprintln!("PyTorch side, products in {precision}: {} {}", python.display(), script.display());
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

/// The measured peak (`--work peak`, its median) in GFLOP/s, when there is one: FLOP
/// utilisation is against it, else against the nominal formula's.
fn measured_peak(rows: &[Row]) -> Option<f64> {
    rows.iter().find(|r| r.work == Work::Peak).map(|r| median(&r.project))
}

fn print_table(rows: &[Row], cpu: &Cpu, clock_ghz: Option<f64>) {
    let measured = measured_peak(rows);
    let peak = measured.unwrap_or(cpu.peak_gflops);
    println!(
        "| model | work | shape | unit | project (median, min-max) | PyTorch | ratio | llama.cpp | ratio | MFU project | MFU PyTorch |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mfu = |rate: f64, f: f64| {
        if f > 0.0 {
            format!("{:.1} %", 100.0 * rate * f / (peak * 1e9))
        } else {
            "-".into()
        }
    };
    for r in rows {
        let p = median(&r.project);
        let (lo, hi) = r.project.iter().fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let (torch, ratio, torch_mfu) = if r.pytorch.is_empty() {
            ("-".into(), "-".into(), "-".into())
        } else {
            let t = median(&r.pytorch);
            (fmt_rate(t), format!("{:.2}x", p / t), mfu(t, r.flops_per_unit))
        };
        let (llama, llama_ratio) = if r.llama_cpp.is_empty() {
            ("-".into(), "-".into())
        } else {
            let t = median(&r.llama_cpp);
            (fmt_rate(t), format!("{:.2}x", p / t))
        };
        println!(
            "| {:?} | {:?} | {} | {} | {} ({}-{}) | {torch} | {ratio} | {llama} | {llama_ratio} | {} | {torch_mfu} |",
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
        "\nCPU: {}, {} cores, {:.0} MHz, {} f32 lanes: nominal peak {:.1} GFLOP/s (cores x lanes x 2 FMA pipes x 2 x clock)",
        cpu.model, cpu.cores, cpu.mhz, cpu.lanes, cpu.peak_gflops
    );
    if measured.is_some() {
        println!(
            "measured peak {peak:.1} GFLOP/s ({:.2}x the nominal): the MFU columns are against it",
            peak / cpu.peak_gflops
        );
        if let Some(ghz) = clock_ghz {
            println!(
                "measured clock of a busy core {ghz:.2} GHz: {:.1} f32 FLOP per cycle per core at the measured peak",
                peak / ghz / cpu.cores as f64
            );
        }
    }
}

/// The stable summary: per kind of work, the largest model's throughput on each side and
/// their ratio (`generate` at the largest batch).
fn summary(rows: &[Row]) -> serde_json::Value {
    let pick = |work: Work| {
        let row = rows.iter().rfind(|r| r.work == work)?;
        let project = median(&row.project);
        let pytorch = (!row.pytorch.is_empty()).then(|| median(&row.pytorch));
        let llama_cpp = (!row.llama_cpp.is_empty()).then(|| median(&row.llama_cpp));
        let mut v = json!({
            "model": row.model, "variant": row.variant, "unit": row.unit,
            "project": project, "pytorch": pytorch, "ratio": pytorch.map(|t| project / t),
        });
        if let Some(l) = llama_cpp {
            v["llama_cpp"] = json!(l);
            v["ratio_llama_cpp"] = json!(project / l);
        }
        Some(v)
    };
    json!({
        "train": pick(Work::Train),
        "soft": pick(Work::Soft),
        "generate": pick(Work::Generate),
        "grounding": pick(Work::Grounding),
        "bandwidth": pick(Work::Bandwidth),
        "peak": pick(Work::Peak),
        "prompt": pick(Work::Prompt),
        "greedy": pick(Work::Greedy),
    })
}

/// Per beam-search row: its step time (a run's time / new tokens: every prompt's beams advance
/// one token per step; the prompt's forward pass is spread over the steps, so this is an upper
/// bound), the floor (the step's weight bytes, [`bandwidth::step_bytes`], / the median
/// bandwidth) and their ratio.
fn floors(
    rows: &[Row],
    plan: &[(BenchModel, Work, usize, String)],
    s: &Shapes,
    weights: BaseWeights,
    device: &Device,
) -> Result<Vec<serde_json::Value>> {
    let Some(bw) = rows.iter().find(|r| r.work == Work::Bandwidth).map(|r| median(&r.project)) else {
        return Ok(Vec::new());
    };
    // `stored` reads SmolLM2's file (the only model it takes) for its bytes, once.
    let mut stored_bytes = None;
    rows.iter()
        .zip(plan)
        .filter(|(r, _)| r.work == Work::Generate)
        .map(|(r, (model, _, batch, _))| {
            let bytes = match (weights, stored_bytes) {
                (BaseWeights::Float(_) | BaseWeights::Bf16Dot, _) => {
                    bandwidth::step_bytes(&model_config(*model), weights.encoding().bytes())
                }
                (BaseWeights::Stored | BaseWeights::Int8Dot, Some(bytes)) => bytes,
                (BaseWeights::Stored | BaseWeights::Int8Dot, None) => {
                    let bytes = stored_smollm2(*model, device, weights)?.step_weight_bytes() as f64;
                    *stored_bytes.insert(bytes)
                }
            };
            let floor_s = bytes / (bw * 1e9);
            // rate = batch · new_tokens / run time, so the run's time per token = batch / rate:
            // a step plus its share of the prompt's pass.
            let per_token_s = *batch as f64 / median(&r.project);
            let step_s = median(&r.step_s);
            Ok(json!({
                "model": r.model, "variant": r.variant, "bytes_per_step": bytes, "bandwidth_gb_s": bw,
                "floor_ms": 1e3 * floor_s, "step_ms": 1e3 * step_s, "ratio": step_s / floor_s,
                "per_token_with_prompt_ms": 1e3 * per_token_s,
                "target": 1.3, "met": step_s / floor_s <= 1.3, "new_tokens": s.new_tokens,
            }))
        })
        .collect()
}

pub fn execute(args: &Args) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if args.against == Some(Against::LlamaCpp) {
        llamacpp::check()?;
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
    // The real SmolLM2's prompt and greedy rows come from one measurement (with their ids).
    let mut real: Option<(Vec<u32>, llamacpp::Side)> = None;
    for (model, work, batch, variant) in &plan {
        let mut step_s = Vec::new();
        let project = match work {
            Work::Bandwidth => bandwidth_row(args, cpu.cores),
            Work::Peak => peak_row(args, cpu.cores),
            Work::Prompt | Work::Greedy => {
                if real.is_none() {
                    real = Some(
                        llamacpp::project(
                            &backend.device,
                            args.weights_dtype,
                            s.prompt_tokens,
                            s.new_tokens,
                            args.warmup,
                            args.runs,
                        )
                        .context("SmolLM2 from its GGUF")?,
                    );
                }
                let side = &real.as_ref().expect("measured above").1;
                Ok(if *work == Work::Prompt { side.prompt.clone() } else { side.decode.clone() })
            }
            _ => project_row(args, &backend.device, *model, *work, *batch).map(|(rates, steps)| {
                step_s = steps;
                rates
            }),
        }
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
            llama_cpp: Vec::new(),
            step_s,
        });
    }
    let mut llama_summary = None;
    match args.against {
        Some(Against::Pytorch | Against::PytorchBf16) => {
            // bench/pytorch_reference.py knows the random-weight work only.
            let known = |w: Work| matches!(w, Work::Train | Work::Soft | Work::Generate | Work::Grounding);
            let torch_plan: Vec<_> = plan.iter().filter(|p| known(p.1)).cloned().collect();
            let mut torch = pytorch_rows(args, &torch_plan, cpu.cores)?.into_iter();
            for row in rows.iter_mut().filter(|r| known(r.work)) {
                row.pytorch = torch.next().unwrap_or_default();
            }
        }
        Some(Against::LlamaCpp) => {
            let (prompt, project) = real.as_ref().context("no SmolLM2 rows were measured")?;
            let (llama, info) = llamacpp::llama_cpp(prompt, s.new_tokens, cpu.cores, args.warmup, args.runs)?;
            for row in rows.iter_mut() {
                match row.work {
                    Work::Prompt => row.llama_cpp = llama.prompt.clone(),
                    Work::Greedy => row.llama_cpp = llama.decode.clone(),
                    _ => {}
                }
            }
            let mut sum = llamacpp::summary(project, &llama);
            sum["llama_cpp"] = info;
            sum["prompt_ids"] = json!(prompt);
            llama_summary = Some(sum);
        }
        None => {}
    }
    // The clock a busy core runs at, beside a measured peak: together they give FLOPs per cycle.
    let clock_ghz = rows.iter().any(|r| r.work == Work::Peak).then(peak::clock_ghz).flatten();
    print_table(&rows, &cpu, clock_ghz);
    let floors = floors(&rows, &plan, &s, args.weights_dtype, &backend.device)?;
    for f in &floors {
        println!(
            "beam-search step floor, {} {}: {:.1} MB read per step / {:.2} GB/s = {:.1} ms floor; step {:.1} ms = {:.2}x the floor ({:.1} ms a token with the prompt's share)",
            f["model"].as_str().unwrap_or("?"),
            f["variant"].as_str().unwrap_or("?"),
            f["bytes_per_step"].as_f64().unwrap_or(f64::NAN) / 1e6,
            f["bandwidth_gb_s"].as_f64().unwrap_or(f64::NAN),
            f["floor_ms"].as_f64().unwrap_or(f64::NAN),
            f["step_ms"].as_f64().unwrap_or(f64::NAN),
            f["ratio"].as_f64().unwrap_or(f64::NAN),
            f["per_token_with_prompt_ms"].as_f64().unwrap_or(f64::NAN),
        );
    }
    if let Some(l) = &llama_summary {
        let g = &l["greedy_ids"];
        println!(
            "greedy ids, project vs llama.cpp: {} of {} agree position by position, common prefix {}",
            g["same_position"], s.new_tokens, g["common_prefix"]
        );
    }
    if let Some(path) = &args.json {
        let mut out = summary(&rows);
        out["backend"] = json!(backend.name);
        out["cpu"] = json!(cpu);
        out["mfu_against"] = json!(if measured_peak(&rows).is_some() { "measured" } else { "nominal" });
        out["clock_ghz"] = json!(clock_ghz);
        out["shapes"] = json!(s);
        out["runs"] = json!(args.runs);
        out["weights_dtype"] = json!(args.weights_dtype.name());
        if let Some(dtype) = args.against.and_then(Against::pytorch_autocast) {
            out["pytorch_autocast"] = json!(dtype);
        }
        out["rows"] = json!(rows);
        if !floors.is_empty() {
            out["floors"] = json!(floors);
        }
        if let Some(l) = llama_summary {
            out["against_llama_cpp"] = l;
        }
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
