//! `soft-train generate`: continue a prompt with a model, greedily or by beam search.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use burn::tensor::{Int, Tensor, TensorData};
use soft_core::model::decoding::generate::{beam_search, greedy, BeamConfig};
use soft_core::model::formats::pretrained::{load_path_as, Pretrained};
use soft_core::model::weights::BaseWeights;
use soft_core::model::formats::tokenizer::encode_prompt;

use crate::backend::{choose, BackendChoice};
use crate::model_arg::resolve;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// `tiny` (models/tiny from `soft-train pretrain`), `smollm2` (fetched when missing), or a
    /// path: a .gguf file, a Hugging Face checkpoint directory, or a model directory of ours.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// The prompt, tokenized as given (no special tokens unless the model's config adds BOS).
    #[arg(long, required_unless_present = "ids", conflicts_with = "ids")]
    pub prompt: Option<String>,
    /// The prompt as space-separated token ids instead of text.
    #[arg(long)]
    pub ids: Option<String>,
    /// A PEFT adapter directory (ours or Python PEFT's) to attach to the model first.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Also write the next-token logits after the prompt, a JSON list of vocabulary size
    /// (bench/peft_roundtrip.py compares them with transformers + peft).
    #[arg(long)]
    pub logits: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Beam search with this many beams; 1 is greedy.
    #[arg(long, default_value_t = 1)]
    pub beams: usize,
    /// End with a line of the generated token ids, space-separated.
    #[arg(long)]
    pub print_ids: bool,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    /// The base weights in f32, f16 or bf16 (`bf16-dot` decodes as bf16), or `stored`: a GGUF's Q4_0/Q4_1/Q8_0 projections
    /// and embedding kept as the file's blocks and read as they lie (CPU backend; ~6x fewer
    /// bytes per decoding step than f32 for SmolLM2, logits within ~1e-4 of f32's), or
    /// `int8-dot`: `stored` with each step's products in 8-bit integer dot products (CPU with
    /// AVX512_VNNI; the inputs quantized per block of 32 values, llama.cpp's way: faster, and
    /// logits no longer those of f32; BENCHMARKS.md).
    #[arg(long, default_value = "f32")]
    pub weights_dtype: BaseWeights,
}

pub fn execute(args: &Args) -> Result<()> {
    let backend = choose(args.backend)?;
    let Pretrained { mut model, tokenizer, special, source } =
        load_path_as(&resolve(&args.model)?, &backend.device, args.weights_dtype)?;
    eprintln!("model {source}, backend {}", backend.name);
    if let Some(dir) = &args.adapter {
        model = model.load_adapter(dir).with_context(|| format!("{}: unusable adapter", dir.display()))?;
    }
    let ids = match (&args.prompt, &args.ids) {
        (Some(prompt), _) => encode_prompt(&tokenizer, &special, prompt)?,
        (None, Some(ids)) => parse_ids(ids, model.config().vocab_size)?,
        (None, None) => bail!("give --prompt or --ids"),
    };
    if let Some(path) = &args.logits {
        let n = ids.len();
        let tokens = Tensor::<2, Int>::from_data(
            TensorData::new(ids.iter().map(|&t| t as i64).collect(), [1, n]),
            &model.device(),
        );
        let logits = model.forward(tokens, Tensor::ones([1, n], &model.device()), None).narrow(1, n - 1, 1);
        let values = logits
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("reading logits: {e:?}"))?;
        soft_core::atomic_file::write_atomic(path, serde_json::to_string(&values)?.as_bytes())?;
    }
    let out = if args.beams <= 1 {
        greedy(&model, &[ids], args.max_new_tokens, special.eos)?.remove(0)
    } else {
        let config = BeamConfig {
            num_beams: args.beams,
            num_return_sequences: 1,
            max_new_tokens: args.max_new_tokens,
            ..BeamConfig::new(special.eos)
        };
        beam_search(&model, &[ids], &config)?.remove(0).remove(0).tokens
    };
    let text = tokenizer.decode(&out, true).map_err(|e| soft_core::Error::tokenizer("decoding", e))?;
    println!("{text}");
    if args.print_ids {
        println!("{}", out.iter().map(u32::to_string).collect::<Vec<_>>().join(" "));
    }
    Ok(())
}

/// Space-separated token ids, each below the vocabulary size.
fn parse_ids(text: &str, vocab: usize) -> Result<Vec<u32>> {
    let ids: Vec<u32> = text
        .split_whitespace()
        .map(|t| t.parse::<u32>().with_context(|| format!("--ids: {t:?} is not a token id")))
        .collect::<Result<_>>()?;
    if ids.is_empty() {
        bail!("--ids is empty");
    }
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        bail!("--ids: token {bad} is outside the vocabulary (size {vocab})");
    }
    Ok(ids)
}
