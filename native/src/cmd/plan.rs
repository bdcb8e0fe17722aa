//! `soft-train plan`: how much memory LoRA fine-tuning and beam-search decoding of a model take,
//! from the model's config alone (no weights are read), for a given training and decoding
//! setting, with a verdict against a GPU's memory.
//!
//! What is counted, in bytes (`B` micro-batch, `T` tokens per training example (`--seq-len`),
//! `L` layers, `d` hidden size, `f` FFN width, `h` / `h_kv` query / key-value heads of size
//! `d_h`, `V` vocabulary, `r` LoRA rank, `R` trained (response) tokens per example):
//!
//! 1. **Base weights**: every parameter the loader builds ([`base_params`]: embedding, the LM
//!    head unless tied, per block the seven projections (+ Q/K/V biases where the model has
//!    them) and two RMSNorm gains, the final norm), times the bytes of `--weights-dtype`.
//! 2. **LoRA state**: each targeted projection of each block gets A `[r, in]` and B `[out, r]`
//!    ([`lora_params`]); the parameters, their gradients and AdamW's two moments, all f32:
//!    `4 · 4` bytes per LoRA parameter.
//! 3. **Activations** ([`activation_bytes`]): what autodiff keeps for the backward pass of one
//!    micro-batch, all f32 (this implementation computes in f32 whatever the weights are stored
//!    in), following `model/llama.rs`, `model/lora.rs` and `train/lm.rs`. Per block:
//!    - the two RMSNorms' inputs, `2·B·T·d`, and their per-row scale, `2·B·T`;
//!    - the input of each linear, a tensor shared by several counted once: Q/K/V's `B·T·d`,
//!      O's `B·T·h·d_h`, gate/up's `B·T·d`, down's `B·T·f`;
//!    - the attention matmuls' operands: Q (rotated, scaled) `B·T·h·d_h`, K and V
//!      `2·B·T·h_kv·d_h`;
//!    - the attention scores and the softmax output, `2·B·h·T²`;
//!    - the MLP intermediates besides down's input: gate's and up's outputs and SiLU(gate),
//!      `3·B·T·f`;
//!    - per LoRA-targeted projection: the dropout mask and the dropped input, `2·B·T·in` (only
//!      while LoRA dropout is on, as in `sft`: 0.05), and the rank-r intermediate, `B·T·r`.
//!
//!    Once per micro-batch: the attention bias `[B, 1, 1, T, T]` (padding and causal mask,
//!    `B·T²`), the final norm's input `B·T·d`, and the LM head over the trained positions only
//!    (`train/lm.rs` picks them before the head): its input `B·R·d`, the logits and their
//!    log-softmax, `2·B·R·V`, with `R = min(--max-new-tokens, T)`.
//!
//!    **With per-block activation checkpointing** only each block's input `B·T·d` is kept, `L`
//!    of them, and one block's activations exist at a time (recomputed during its backward):
//!    `L·B·T·d + block + once-per-batch terms`. (This implementation does not checkpoint; the
//!    number is what it would save.)
//!
//!    Not counted: gradients of activations in flight during the backward pass (about one
//!    block's worth at a time), temporaries of a single op, and allocator slack. Counted
//!    although burn may not keep them: burn-autodiff's `linear` keeps its input only when the
//!    weight trains, and base weights are frozen, so the inputs of projections without LoRA
//!    (O, gate/up, down by default) are an over-count there; a framework that keeps them pays
//!    them. Measured against `sft`'s peak RSS on a CPU for one micro-batch (README,
//!    `soft-train plan`): the training total is within about 5 % of it, above it for SmolLM2
//!    (whose frozen inputs weigh more), below it for `tiny`.
//! 4. **KV cache** of beam search (`model/kv_cache.rs`, `decoding/generate.rs`), f32: keys and
//!    values of every layer, `2·L·h_kv·d_h·4` bytes per cached position. The prompts' positions
//!    are cached once per prompt and shared by its beams (`share_prefix`); each beam caches its
//!    own new tokens: `N·P + N·K·M` positions for `N` prompts (`--decode-batch`) of `P` tokens
//!    (`--prompt-len`) and `K` beams (`--beams`) of `M` new tokens (`--max-new-tokens`). So it
//!    grows linearly with the beams, from the prompts' share.
//!
//! Training total: weights + LoRA state + activations (with or without checkpointing).
//! Decoding total: weights + KV cache (no autodiff, so no activations are kept).

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use soft_core::model::config::{module_name, LlamaConfig, LoraConfig};
use soft_core::model::formats::gguf::llama::llama_config;
use soft_core::model::formats::gguf::GgufFile;
use soft_core::model::formats::hf;
use soft_core::model::formats::pretrained::CONFIG_FILE;
use soft_core::model::weights::FloatEncoding;
use soft_core::train::sft::SftConfig;
use soft_core::train::LmExample;

use super::prompt_args::LoraArgs;
use crate::model_arg::resolve;

/// Prompts `eval` and `sft`'s validation decode per beam-search batch (`eval/llm.rs`).
const DECODE_BATCH: usize = 32;
/// The training cutoff of the paper's reference (prompt + response tokens).
const REFERENCE_CUTOFF: usize = 700;
const F32: u64 = 4;
const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;

/// Memory to LoRA-train and beam-search decode a model (weights, adapter + AdamW state,
/// activations, KV cache), from its config alone.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// `tiny`, `smollm2` or a path (a .gguf file, a Hugging Face checkpoint directory, or a model
    /// directory of ours), resolved as `generate` and `sft` resolve it. Only the config is read:
    /// a Hugging Face directory needs nothing but config.json.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// How the frozen base weights are stored: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub weights_dtype: FloatEncoding,
    /// LoRA rank.
    #[arg(long, default_value_t = LoraConfig::default().r, allow_negative_numbers = true)]
    pub lora_r: usize,
    #[command(flatten)]
    pub lora: LoraArgs,
    /// Training examples per forward/backward pass (`sft` uses 8).
    #[arg(long, default_value_t = SftConfig::default().train.micro_batch, allow_negative_numbers = true)]
    pub micro_batch: usize,
    /// Tokens per training example, prompt and response (the reference's cutoff is 700).
    #[arg(long, default_value_t = REFERENCE_CUTOFF, allow_negative_numbers = true)]
    pub seq_len: usize,
    /// Beams per prompt in decoding.
    #[arg(long, default_value_t = SftConfig::default().beams, allow_negative_numbers = true)]
    pub beams: usize,
    /// Prompts decoded together (`eval` decodes 32 at a time).
    #[arg(long, default_value_t = DECODE_BATCH, allow_negative_numbers = true)]
    pub decode_batch: usize,
    /// Prompt tokens in decoding [default: --seq-len].
    #[arg(long, allow_negative_numbers = true)]
    pub prompt_len: Option<usize>,
    /// Tokens each beam generates; also the trained (response) tokens per training example,
    /// whose logits the loss computes.
    #[arg(long, default_value_t = SftConfig::default().max_new_tokens, allow_negative_numbers = true)]
    pub max_new_tokens: usize,
    /// GPU memory in GiB: each total is then said to fit or not.
    #[arg(long, allow_negative_numbers = true)]
    pub gpu_memory: Option<f64>,
}

/// The training and decoding setting, every value checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub weights: FloatEncoding,
    pub lora: LoraConfig,
    pub micro_batch: usize,
    pub seq_len: usize,
    pub beams: usize,
    pub decode_batch: usize,
    pub prompt_len: usize,
    pub new_tokens: usize,
    pub gpu_gib: Option<f64>,
}

impl Setting {
    /// Refuses any option out of range, naming it, before anything is read.
    pub fn from_args(args: &Args) -> Result<Self> {
        let prompt_len = args.prompt_len.unwrap_or(args.seq_len);
        let sizes = [
            ("--lora-r", args.lora_r),
            ("--micro-batch", args.micro_batch),
            ("--seq-len", args.seq_len),
            ("--beams", args.beams),
            ("--decode-batch", args.decode_batch),
            ("--prompt-len", prompt_len),
            ("--max-new-tokens", args.max_new_tokens),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            bail!("{name} must be at least 1");
        }
        // The same targets, parsed by the same flag, as `sft` trains.
        let lora = LoraConfig { r: args.lora_r, target_modules: args.lora.lora_targets(), ..LoraConfig::default() };
        // r is checked above: what validate can still refuse are the targets.
        lora.validate().context("--lora-targets")?;
        if let Some(gib) = args.gpu_memory {
            if !(gib.is_finite() && gib > 0.0) {
                bail!("--gpu-memory must be a positive number of GiB, got {gib}");
            }
        }
        Ok(Self {
            weights: args.weights_dtype,
            lora,
            micro_batch: args.micro_batch,
            seq_len: args.seq_len,
            beams: args.beams,
            decode_batch: args.decode_batch,
            prompt_len,
            new_tokens: args.max_new_tokens,
            gpu_gib: args.gpu_memory,
        })
    }

    /// Trained (response) positions per example: the loss's LM head runs on these only.
    fn trained_tokens(&self) -> usize {
        self.new_tokens.min(self.seq_len)
    }
}

/// Every parameter of the model as the loader builds it: embedding, LM head unless tied, per
/// block seven projections (Q/K/V biases where the config says) and two norm gains, final norm.
pub fn base_params(c: &LlamaConfig) -> u64 {
    let d = c.hidden_size as u64;
    let embedding = c.vocab_size as u64 * d;
    let head = if c.tie_embeddings { 0 } else { embedding };
    let projections: u64 =
        c.projections().iter().map(|p| (p.d_in * p.d_out + if p.bias { p.d_out } else { 0 }) as u64).sum();
    embedding + head + c.n_layers as u64 * (projections + 2 * d) + d
}

/// LoRA's trainable parameters: `r · (in + out)` per targeted projection of every block.
pub fn lora_params(c: &LlamaConfig, lora: &LoraConfig) -> u64 {
    let per_block: u64 = c
        .projections()
        .iter()
        .filter(|p| lora.targets(module_name(p.path)))
        .map(|p| (lora.r * (p.d_in + p.d_out)) as u64)
        .sum();
    c.n_layers as u64 * per_block
}

/// Training activations of one micro-batch, in bytes (see the module's doc for the terms).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activations {
    /// What one block keeps for its backward.
    pub block: u64,
    /// Of which the attention scores and softmax output.
    pub attention: u64,
    /// Kept once per micro-batch: attention bias, final norm input, LM head on trained positions.
    pub once: u64,
    /// A block's input (what checkpointing keeps per block).
    pub block_input: u64,
    pub layers: u64,
}

impl Activations {
    /// Everything autodiff keeps, no checkpointing.
    pub fn full(&self) -> u64 {
        self.layers * self.block + self.once
    }

    /// Per-block checkpointing: every block's input, one block's activations at a time.
    pub fn checkpointed(&self) -> u64 {
        self.layers * self.block_input + self.block + self.once
    }
}

pub fn activation_bytes(c: &LlamaConfig, s: &Setting) -> Activations {
    let [b, t, d, f] = [s.micro_batch, s.seq_len, c.hidden_size, c.intermediate_size].map(|v| v as u64);
    let (h, kv, dh) = (c.n_heads as u64, c.n_kv_heads as u64, c.head_dim as u64);
    let r = s.lora.r as u64;
    let bt = b * t;
    let norms = 2 * bt * d + 2 * bt;
    let linear_inputs = bt * d + bt * h * dh + bt * d + bt * f;
    let qkv = bt * h * dh + 2 * bt * kv * dh;
    let attention = 2 * b * h * t * t;
    let mlp = 3 * bt * f;
    let dropout_copies = if s.lora.dropout > 0.0 { 2 } else { 0 };
    let lora: u64 = c
        .projections()
        .iter()
        .filter(|p| s.lora.targets(module_name(p.path)))
        .map(|p| dropout_copies * bt * p.d_in as u64 + bt * r)
        .sum();
    let trained = b * s.trained_tokens() as u64;
    let once = b * t * t + bt * d + trained * d + 2 * trained * c.vocab_size as u64;
    Activations {
        block: F32 * (norms + linear_inputs + qkv + attention + mlp + lora),
        attention: F32 * attention,
        once: F32 * once,
        block_input: F32 * bt * d,
        layers: c.n_layers as u64,
    }
}

/// Beam search's KV cache in bytes: prompts cached once each, every beam's new tokens apart.
pub fn kv_cache_bytes(c: &LlamaConfig, s: &Setting) -> u64 {
    let per_position = 2 * c.n_layers as u64 * c.n_kv_heads as u64 * c.head_dim as u64 * F32;
    let n = s.decode_batch as u64;
    per_position * (n * s.prompt_len as u64 + n * s.beams as u64 * s.new_tokens as u64)
}

/// The plan's numbers, in bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub params: u64,
    pub lora_params: u64,
    pub weights: u64,
    /// LoRA parameters, gradients and AdamW's two moments.
    pub lora_state: u64,
    pub activations: Activations,
    pub kv_cache: u64,
}

impl Plan {
    pub fn new(c: &LlamaConfig, s: &Setting) -> Self {
        let (params, lora_params) = (base_params(c), lora_params(c, &s.lora));
        Self {
            params,
            lora_params,
            weights: params * s.weights.bytes(),
            lora_state: 4 * F32 * lora_params,
            activations: activation_bytes(c, s),
            kv_cache: kv_cache_bytes(c, s),
        }
    }

    pub fn training(&self) -> u64 {
        self.weights + self.lora_state + self.activations.full()
    }

    pub fn training_checkpointed(&self) -> u64 {
        self.weights + self.lora_state + self.activations.checkpointed()
    }

    pub fn decoding(&self) -> u64 {
        self.weights + self.kv_cache
    }
}

/// What SFT will train, for [`check_fits`].
pub struct Training<'a> {
    pub config: &'a SftConfig,
    /// The tokenized training examples.
    pub examples: &'a [LmExample],
    /// Micro-batches alive at once on the device: data-parallel workers sharing it (the CPU).
    pub sharing: usize,
}

/// Refuses, before training, a setting whose plan does not fit the `memory` bytes the device
/// holds (`device` names it and where the figure comes from): the model's weights in the run's dtype, the adapter with AdamW's
/// state, and the activations of the longest micro-batch (`sharing` of them at once); or the
/// weights and KV cache of validation's beam search, if more. The plan errs high (README,
/// "Memory plan"): a refusal on a thin margin may be one a run would survive.
pub fn check_fits(model: &Path, t: &Training, memory: u64, device: &str) -> Result<()> {
    let shape = read_shape(model)?;
    let longest = t.examples.iter().map(|e| e.tokens.len()).max().unwrap_or(1).max(1);
    let trained = t.examples.iter().map(|e| e.trained.iter().filter(|&&x| x).count()).max().unwrap_or(1).max(1);
    let c = t.config;
    let setting = Setting {
        // `stored` planned as f32: an upper bound (the plan knows the config, not the file).
        weights: c.train.base_dtype.encoding(),
        lora: c.lora.clone(),
        micro_batch: c.train.micro_batch.min(t.examples.len().max(1)),
        seq_len: longest,
        beams: c.beams,
        decode_batch: DECODE_BATCH,
        prompt_len: longest,
        new_tokens: trained.max(c.max_new_tokens),
        gpu_gib: None,
    };
    let plan = Plan::new(&shape.config, &Setting { new_tokens: trained, ..setting.clone() });
    let activations = t.sharing as u64 * plan.activations.full();
    let training = plan.weights + plan.lora_state + activations;
    let decoding = Plan::new(&shape.config, &setting).decoding();
    let gib = |b: u64| b as f64 / GIB;
    if training.max(decoding) <= memory {
        return Ok(());
    }
    bail!(
        "this training does not fit {device} ({:.2} GiB): by the memory plan it needs {:.2} GiB \
         (weights {:.2} in {}, adapter and AdamW state {:.2}, activations {:.2} for {} micro-batch(es) of {} \
         examples of up to {longest} tokens) and validation's beam search {:.2} GiB. A smaller --micro-batch \
         (with a larger --grad-accum for the same batch), --weights-dtype f16 or a larger device would fit it \
         (see `soft-train plan`)",
        gib(memory),
        gib(training),
        gib(plan.weights),
        c.train.base_dtype.name(),
        gib(plan.lora_state),
        gib(activations),
        t.sharing,
        setting.micro_batch,
        gib(decoding),
    )
}

/// "fits" or "does not fit: X GiB over", against `gpu` GiB.
pub fn verdict(bytes: u64, gpu_gib: f64) -> String {
    let over = bytes as f64 / GIB - gpu_gib;
    if over <= 0.0 {
        "fits".into()
    } else {
        format!("does not fit: {over:.2} GiB over")
    }
}

/// A model's config as read for planning, and where it came from.
pub struct ModelShape {
    pub config: LlamaConfig,
    /// The file the config was read from and its kind.
    pub source: String,
    /// How Q/K/V biases were decided.
    pub biases_from: String,
}

/// Reads the config of the model at `path` (as `load_path` tells the formats apart), never
/// its weights.
pub fn read_shape(path: &Path) -> Result<ModelShape> {
    if path.is_file() {
        return gguf_shape(path);
    }
    let ours = path.join(CONFIG_FILE);
    if ours.exists() {
        let text = std::fs::read_to_string(&ours).with_context(|| format!("reading {}", ours.display()))?;
        let config: LlamaConfig =
            serde_json::from_str(&text).with_context(|| format!("{}: not a model config", ours.display()))?;
        config.validate_file(&ours)?;
        let biases_from = format!("{CONFIG_FILE}'s attention_bias");
        return Ok(ModelShape { config, source: ours.display().to_string(), biases_from });
    }
    let hf_config = path.join(hf::CONFIG_FILE);
    if hf_config.exists() {
        return hf_shape(path, &hf_config);
    }
    bail!(
        "{}: no model here (expected a .gguf file, a directory with {CONFIG_FILE} from `soft-train pretrain`, \
         or a Hugging Face checkpoint with config.json)",
        path.display()
    )
}

const Q_BIAS: &str = "model.layers.0.self_attn.q_proj.bias";

/// A Hugging Face directory: its config.json as the loader reads it. Q/K/V biases are not in
/// the loader's reading of the config (it sees them in the weights): here from the
/// safetensors header or index when there are weights (their tensor names, not their data),
/// else from config.json's `attention_bias`, else from `model_type` (Qwen2 has them).
fn hf_shape(dir: &Path, config_path: &Path) -> Result<ModelShape> {
    let mut config = hf::read_config(config_path)?;
    let single = dir.join(hf::SINGLE_FILE);
    let index = dir.join("model.safetensors.index.json");
    let (bias, from) = if single.exists() {
        (safetensors_names(&single)?.iter().any(|n| n == Q_BIAS), format!("tensor names in {}", hf::SINGLE_FILE))
    } else if index.exists() {
        let value: Value = read_json(&index)?;
        let map = value.get("weight_map").and_then(Value::as_object);
        let map = map.with_context(|| format!("{}: no weight_map", index.display()))?;
        (map.contains_key(Q_BIAS), "the weight_map of model.safetensors.index.json".to_string())
    } else {
        let raw: Value = read_json(config_path)?;
        match raw.get("attention_bias").and_then(Value::as_bool) {
            Some(b) => (b, "config.json's attention_bias".to_string()),
            None => {
                let model_type = raw.get("model_type").and_then(Value::as_str).unwrap_or("unknown");
                (model_type == "qwen2", format!("config.json's model_type {model_type:?} (no weights beside it)"))
            }
        }
    };
    config.attention_bias = bias;
    Ok(ModelShape { config, source: format!("{} (Hugging Face)", config_path.display()), biases_from: from })
}

fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: not JSON", path.display()))
}

/// The tensor names in a safetensors file's header, without reading the tensors.
fn safetensors_names(path: &Path) -> Result<Vec<String>> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).with_context(|| format!("{}: no safetensors header", path.display()))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        bail!("{}: safetensors header of {len} bytes", path.display());
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header).with_context(|| format!("{}: truncated safetensors header", path.display()))?;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&header).with_context(|| format!("{}: bad safetensors header", path.display()))?;
    Ok(header.into_iter().map(|(k, _)| k).filter(|k| k != "__metadata__").collect())
}

/// A GGUF file: the hyper-parameters the GGUF loader reads (`gguf/llama.rs`) from its metadata
/// and tensor directory; the tensors are not dequantised.
fn gguf_shape(path: &Path) -> Result<ModelShape> {
    let file = GgufFile::open(path)?;
    // The loader's own reading of the metadata (and its refusals), without dequantising.
    let config = llama_config(&file)?;
    config.validate_file(path)?;
    Ok(ModelShape {
        config,
        source: format!("{} (GGUF)", path.display()),
        biases_from: "the GGUF tensor directory".into(),
    })
}

/// `1234567` -> `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The printed plan.
pub fn report(shape: &ModelShape, s: &Setting) -> String {
    let c = &shape.config;
    let plan = Plan::new(c, s);
    let mut out = String::new();
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    out += &format!(
        "model {}: {} layers, hidden {}, FFN {}, {} heads / {} KV heads (head dim {}), vocab {}, {} embeddings, \
         q/k/v biases: {} ({})\n",
        shape.source,
        c.n_layers,
        c.hidden_size,
        c.intermediate_size,
        c.n_heads,
        c.n_kv_heads,
        c.head_dim,
        c.vocab_size,
        if c.tie_embeddings { "tied" } else { "untied" },
        yes_no(c.attention_bias),
        shape.biases_from,
    );
    out += &format!(
        "parameters: {} base; LoRA r {} on {}: {} trainable\n",
        thousands(plan.params),
        s.lora.r,
        s.lora.target_modules.join(","),
        thousands(plan.lora_params),
    );
    let longest = s.seq_len.max(s.prompt_len + s.new_tokens);
    if longest > c.max_seq_len {
        out += &format!("note: {longest} positions exceed the model's context of {}\n", c.max_seq_len);
    }
    let row = |label: &str, bytes: u64, verdict: Option<String>| {
        let gib = bytes as f64 / GIB;
        let mib = bytes as f64 / MIB;
        let tail = verdict.map(|v| format!("  {v}")).unwrap_or_default();
        format!("{label:<62}{gib:>9.2} GiB{mib:>12.1} MiB{tail}\n")
    };
    let judge = |bytes: u64| s.gpu_gib.map(|g| verdict(bytes, g));
    let a = &plan.activations;
    out += "\n";
    out += &row(&format!("base weights ({})", s.weights.name()), plan.weights, None);
    out += &row("LoRA adapter + gradients + AdamW m, v (f32)", plan.lora_state, None);
    out += &format!(
        "activations, micro-batch {} x {} tokens, {} trained (f32):\n",
        s.micro_batch,
        s.seq_len,
        s.trained_tokens()
    );
    out += &row("  per block (of which attention scores + softmax below)", a.block, None);
    out += &row("    attention scores + softmax", a.attention, None);
    out += &row("  once per micro-batch (mask, final norm, LM head)", a.once, None);
    out += &row(&format!("  kept for backward ({} blocks)", a.layers), a.full(), None);
    out += &row("  with per-block checkpointing", a.checkpointed(), None);
    out += &row(
        &format!(
            "KV cache, {} prompts x {} beams, {} + {} tokens (f32)",
            s.decode_batch, s.beams, s.prompt_len, s.new_tokens
        ),
        plan.kv_cache,
        None,
    );
    out += "\n";
    out += &row("training total", plan.training(), judge(plan.training()));
    out += &row(
        "training total, per-block checkpointing",
        plan.training_checkpointed(),
        judge(plan.training_checkpointed()),
    );
    out += &row("decoding total", plan.decoding(), judge(plan.decoding()));
    out
}

pub fn execute(args: &Args) -> Result<()> {
    let setting = Setting::from_args(args)?;
    let path = resolve(&args.model)?;
    let shape = read_shape(&path)?;
    print!("{}", report(&shape, &setting));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::tensor::Device;
    use clap::Parser;
    use soft_core::model::config::RopeScaling;
    use soft_core::model::llama::Llama;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(flags: &[&str]) -> std::result::Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("plan").chain(flags.iter().copied())).map(|c| c.args)
    }

    fn setting(flags: &[&str]) -> Setting {
        Setting::from_args(&args(flags).unwrap()).unwrap()
    }

    fn refusal(flags: &[&str]) -> String {
        match args(flags) {
            Err(e) => e.to_string(),
            Ok(a) => format!("{:#}", Setting::from_args(&a).unwrap_err()),
        }
    }

    /// Llama-3.2-3B's published config (../shared/MODELS.md).
    fn llama32_3b() -> LlamaConfig {
        LlamaConfig {
            vocab_size: 128_256,
            hidden_size: 3072,
            intermediate_size: 8192,
            n_layers: 28,
            n_heads: 24,
            n_kv_heads: 8,
            head_dim: 128,
            rope_theta: 500_000.0,
            rope_scaling: RopeScaling::llama32(),
            rms_eps: 1e-5,
            max_seq_len: 131_072,
            tie_embeddings: true,
            attention_bias: false,
        }
    }

    #[test]
    fn parameter_count_equals_the_built_models() {
        let device = Device::flex();
        let tiny = LlamaConfig::tiny(4096);
        let untied_with_biases = LlamaConfig { tie_embeddings: false, attention_bias: true, ..LlamaConfig::tiny(300) };
        for config in [tiny.clone(), untied_with_biases] {
            let model = Llama::init(&config, &device).unwrap();
            assert_eq!(base_params(&config), model.num_params() as u64, "{config:?}");
            // LoRA: the parameters `with_lora` adds (what `sft` attaches).
            for targets in [vec!["q_proj", "v_proj"], vec!["k_proj", "o_proj", "down_proj"]] {
                let lora = LoraConfig {
                    r: 4,
                    target_modules: targets.iter().map(|t| t.to_string()).collect(),
                    ..Default::default()
                };
                let adapted = Llama::init(&config, &device).unwrap().with_lora(&lora, 1).unwrap();
                assert_eq!(lora_params(&config, &lora), (adapted.num_params() - model.num_params()) as u64);
            }
        }
        // The README's count of the tiny model (vocab 4096): embedding 4096·256 = 1,048,576;
        // a block: q 256·256 = 65,536, k and v 256·128 = 32,768 each, o 65,536, gate/up/down
        // 3·256·688 = 528,384, two norms 512: 725,504; four of them 2,902,016; final norm 256.
        assert_eq!(base_params(&tiny), 1_048_576 + 4 * 725_504 + 256);
        assert_eq!(base_params(&tiny), 3_950_848);
    }

    #[test]
    fn the_real_tiny_model_if_present_has_the_planned_parameter_count() {
        let dir = soft_core::model::formats::pretrained::tiny_dir();
        if !dir.join(CONFIG_FILE).exists() {
            eprintln!("no tiny model at {}; skipped", dir.display());
            return;
        }
        let shape = read_shape(&dir).unwrap();
        let loaded = soft_core::model::formats::pretrained::load_path(&dir, &Device::flex()).unwrap();
        assert_eq!(base_params(&shape.config), loaded.model.num_params() as u64);
    }

    #[test]
    fn published_configs_have_their_published_parameter_counts() {
        // Llama-3.2-3B: embedding 128,256·3072 = 394,002,432 (tied: no head); a block: q and o
        // 3072·3072 = 9,437,184 each, k and v 3072·1024 = 3,145,728 each, gate/up/down
        // 3·3072·8192 = 75,497,472, norms 6,144: 100,669,440; 28 blocks 2,818,744,320; final
        // norm 3,072. Total 3,212,749,824.
        let c = llama32_3b();
        assert_eq!(base_params(&c), 394_002_432 + 28 * 100_669_440 + 3072);
        assert_eq!(base_params(&c), 3_212_749_824);
        // LoRA r 8 on q, v: per block 8·(3072+3072) + 8·(3072+1024) = 81,920; 28 blocks.
        assert_eq!(lora_params(&c, &LoraConfig::default()), 28 * 81_920);
        // Llama-3.2-1B: embedding 128,256·2048 = 262,668,288; a block: q, o 2048² = 4,194,304
        // each, k, v 2048·512 = 1,048,576 each, MLP 3·2048·8192 = 50,331,648, norms 4,096:
        // 60,821,504; 16 blocks; final norm 2,048. Total 1,235,814,400.
        let c1 =
            LlamaConfig { hidden_size: 2048, n_layers: 16, n_heads: 32, n_kv_heads: 8, head_dim: 64, ..llama32_3b() };
        assert_eq!(base_params(&c1), 262_668_288 + 16 * 60_821_504 + 2048);
        assert_eq!(base_params(&c1), 1_235_814_400);
        // Qwen2.5-0.5B: embedding 151,936·896 = 136,134,656; a block: q, o 896² = 802,816
        // each, k, v 896·128 = 114,688 each, biases 896 + 128 + 128 = 1,152, MLP 3·896·4864 =
        // 13,074,432, norms 1,792: 14,912,384; 24 blocks; final norm 896. Total 494,032,768.
        let qwen = LlamaConfig {
            vocab_size: 151_936,
            hidden_size: 896,
            intermediate_size: 4864,
            n_layers: 24,
            n_heads: 14,
            n_kv_heads: 2,
            head_dim: 64,
            attention_bias: true,
            ..llama32_3b()
        };
        assert_eq!(base_params(&qwen), 136_134_656 + 24 * 14_912_384 + 896);
        assert_eq!(base_params(&qwen), 494_032_768);
        // SmolLM2-135M: 49,152·576 = 28,311,552; a block 884,736 + 2,654,208 + 1,152 = 3,540,096.
        assert_eq!(base_params(&LlamaConfig::smollm2_135m()), 28_311_552 + 30 * 3_540_096 + 576);
    }

    #[test]
    fn checkpointing_reduces_activations() {
        for config in [LlamaConfig::tiny(4096), llama32_3b()] {
            for flags in [&["--micro-batch", "8", "--seq-len", "700"][..], &["--micro-batch", "1", "--seq-len", "16"]] {
                let a = activation_bytes(&config, &setting(flags));
                assert!(a.checkpointed() < a.full(), "{flags:?}: {a:?}");
                assert!(a.block_input < a.block);
            }
        }
        // Hand-counted for the tiny model at B = 1, T = 2, R = 1, LoRA r 8 on q, v with dropout
        // (d 256, f 688, 4 heads / 2 KV heads of 64, vocab 4096), in f32 elements:
        //   norms 2·2·256 + 2·2 = 1,028; linear inputs 2·(256 + 256 + 256 + 688) = 2,912;
        //   q, k, v 2·256 + 2·2·128 = 1,024; scores + softmax 2·4·4 = 32; MLP 3·2·688 = 4,128;
        //   LoRA (q and v, both read d) 2·(2·2·256 + 2·8) = 2,080. Block: 11,204.
        //   Once: bias 4, final norm input 512, head input 256, logits + log-softmax 8,192.
        let a = activation_bytes(
            &LlamaConfig::tiny(4096),
            &setting(&["--micro-batch", "1", "--seq-len", "2", "--max-new-tokens", "1"]),
        );
        assert_eq!(a.block, 4 * 11_204);
        assert_eq!(a.once, 4 * (4 + 512 + 256 + 8_192));
        assert_eq!(a.full(), 4 * (4 * 11_204 + 8_964));
        assert_eq!(a.checkpointed(), 4 * (4 * 512 + 11_204 + 8_964));
    }

    #[test]
    fn half_precision_halves_the_weights_only() {
        let c = llama32_3b();
        let f32 = Plan::new(&c, &setting(&[]));
        for dtype in ["f16", "bf16"] {
            let half = Plan::new(&c, &setting(&["--weights-dtype", dtype]));
            assert_eq!(2 * half.weights, f32.weights);
            assert_eq!(half.weights, 2 * 3_212_749_824);
            assert_eq!(
                (half.lora_state, half.activations, half.kv_cache),
                (f32.lora_state, f32.activations, f32.kv_cache)
            );
        }
    }

    #[test]
    fn kv_cache_grows_linearly_with_beams_and_in_proportion_to_prompts() {
        let c = llama32_3b();
        let kv = |beams: usize, batch: usize| {
            kv_cache_bytes(&c, &setting(&["--beams", &beams.to_string(), "--decode-batch", &batch.to_string()]))
        };
        let step = kv(2, 1) - kv(1, 1);
        // Each beam adds its own 64 new positions: 2 (K, V) · 28 layers · 8 heads · 128 · 4 bytes each.
        assert_eq!(step, 64 * 2 * 28 * 8 * 128 * 4);
        for beams in 1..=10 {
            assert_eq!(kv(beams, 1), kv(1, 1) + (beams as u64 - 1) * step);
            assert_eq!(kv(beams, 4), 4 * kv(beams, 1));
        }
        // The prompt (700 positions) is cached once for all beams.
        assert_eq!(kv(1, 1) - step, 700 * 2 * 28 * 8 * 128 * 4);
    }

    #[test]
    fn bad_options_are_refused_naming_the_option() {
        for flag in
            ["--lora-r", "--micro-batch", "--seq-len", "--beams", "--decode-batch", "--prompt-len", "--max-new-tokens"]
        {
            let message = refusal(&[flag, "0"]);
            assert!(message.contains(flag) && message.contains("at least 1"), "{flag}: {message}");
            let message = refusal(&[flag, "-3"]);
            assert!(message.contains(flag), "{flag}: {message}");
        }
        let message = refusal(&["--weights-dtype", "f8"]);
        assert!(message.contains("--weights-dtype") && message.contains("f8"), "{message}");
        let message = refusal(&["--lora-targets", "q_proj,qkv"]);
        assert!(message.contains("--lora-targets") && message.contains("qkv"), "{message}");
        for bad in ["0", "-1", "NaN", "inf"] {
            let message = refusal(&["--gpu-memory", bad]);
            assert!(message.contains("--gpu-memory"), "{bad}: {message}");
        }
        // Refused before the model is looked for.
        let a = args(&["--model", "/nonexistent/model", "--seq-len", "0"]).unwrap();
        assert!(format!("{:#}", execute(&a).unwrap_err()).contains("--seq-len"));
        let a = args(&["--model", "/nonexistent/model"]).unwrap();
        assert!(format!("{:#}", execute(&a).unwrap_err()).contains("no model here"));
    }

    #[test]
    fn lora_targets_are_read_as_sft_reads_them() {
        assert_eq!(setting(&[]).lora, LoraConfig::default());
        let s = setting(&["--lora-targets", "q_proj,k_proj,v_proj,o_proj", "--lora-r", "16"]);
        assert_eq!(s.lora.target_modules, ["q_proj", "k_proj", "v_proj", "o_proj"]);
        assert_eq!(s.lora.r, 16);
        // r 16 on all four attention projections of the 3B: 16·(6144 + 4096 + 4096 + 6144)·28.
        assert_eq!(lora_params(&llama32_3b(), &s.lora), 16 * 20_480 * 28);
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(1 << 30, 1.0), "fits");
        assert_eq!(verdict(3 << 29, 1.0), "does not fit: 0.50 GiB over");
    }

    #[test]
    fn a_hugging_face_config_alone_is_enough() {
        let dir = std::env::temp_dir().join(format!("soft-plan-hf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = serde_json::json!({
            "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 896,
            "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
            "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
            "rope_theta": 1000000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": true
        });
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let shape = read_shape(&dir).unwrap();
        assert!(shape.config.attention_bias, "Qwen2 has Q/K/V biases");
        assert_eq!(base_params(&shape.config), 494_032_768);
        // Weights beside it decide instead: a header naming no bias.
        let header = br#"{"model.embed_tokens.weight":{"dtype":"F32","shape":[1,1],"data_offsets":[0,4]}}"#;
        let mut file = (header.len() as u64).to_le_bytes().to_vec();
        file.extend_from_slice(header);
        file.extend_from_slice(&[0; 4]);
        std::fs::write(dir.join(hf::SINGLE_FILE), file).unwrap();
        assert!(!read_shape(&dir).unwrap().config.attention_bias);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn smollm2_gguf_if_present_reads_as_the_loader_reads_it() {
        let path = soft_core::model::formats::pretrained::smollm2_path();
        if !path.exists() {
            eprintln!("no {}; skipped", path.display());
            return;
        }
        let shape = read_shape(&path).unwrap();
        // The file stores the norm epsilon as f32 (1e-5 reads back as 9.9999997e-6), as the loader reads it.
        assert!((shape.config.rms_eps - 1e-5).abs() < 1e-9);
        assert_eq!(shape.config, LlamaConfig { rms_eps: shape.config.rms_eps, ..LlamaConfig::smollm2_135m() });
        assert_eq!(base_params(&shape.config), 134_515_008);
    }
    /// Not a check: prints the micro-batch shapes `sft` trains on (padded length T and trained
    /// tokens R of its largest micro-batch, epoch 1, seed 42), to compare `plan` with a measured
    /// `sft` run. `PLAN_MODEL` (default `tiny`), `PLAN_TRAIN_SIZE` (64), `PLAN_VALID_SIZE` (32),
    /// `PLAN_HISTORY_LEN` (none), `PLAN_DATASET` (amazon-books). Run with `--ignored --nocapture`.
    #[test]
    #[ignore]
    fn sft_micro_batch_shapes() {
        use crate::cmd::data_args::DataOptions;
        use soft_core::data::prompt::PromptOptions;
        use soft_core::data::SplitConfig;
        use soft_core::model::formats::pretrained::load_path;
        use soft_core::train::epoch_loop::epoch_order;
        use soft_core::train::sft::examples;
        let env = |k: &str| std::env::var(k).ok();
        let size = |k: &str, d: usize| env(k).map_or(d, |v| v.parse().unwrap());
        let split = SplitConfig {
            train: size("PLAN_TRAIN_SIZE", 64),
            valid: size("PLAN_VALID_SIZE", 32),
            ..SplitConfig::default()
        };
        let dataset = env("PLAN_DATASET").unwrap_or("amazon-books".into());
        let data = DataOptions { dataset, domain: None, k_core: 10, split };
        let (dataset, split) = data.load().unwrap();
        let pre = load_path(&resolve(&env("PLAN_MODEL").unwrap_or("tiny".into())).unwrap(), &Device::flex()).unwrap();
        let options = PromptOptions {
            history_len: env("PLAN_HISTORY_LEN").map(|v| v.parse().unwrap()),
            ..PromptOptions::default()
        };
        let ex = examples(&pre.tokenizer, &pre.special, &dataset.catalog, dataset.meta.domain, &options, &split.train)
            .unwrap();
        let config = SftConfig::default();
        let order = epoch_order(ex.len(), config.train.seed, 1);
        let shapes: Vec<(usize, usize)> = order
            .chunks(config.train.micro_batch)
            .map(|chunk| {
                let t = chunk.iter().map(|&i| ex[i].tokens.len() - 1).max().unwrap();
                let r = chunk.iter().map(|&i| ex[i].targets()).max().unwrap();
                (t, r)
            })
            .collect();
        let lens: Vec<usize> = ex.iter().map(|e| e.tokens.len()).collect();
        println!(
            "examples {}: tokens min {} mean {:.1} max {}",
            ex.len(),
            lens.iter().min().unwrap(),
            lens.iter().sum::<usize>() as f64 / lens.len() as f64,
            lens.iter().max().unwrap()
        );
        println!("micro-batches (T, max trained R): {shapes:?}");
    }
}
