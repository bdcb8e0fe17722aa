//! `soft-train generate`: continue a prompt with a model, greedily or by beam search.

use anyhow::Result;
use soft_core::model::generate::{beam_search, greedy, BeamConfig};
use soft_core::model::pretrained::{load_path, Pretrained};
use soft_core::model::tokenizer::encode_prompt;

use crate::backend::{choose, BackendChoice};
use crate::model_arg::resolve;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// `tiny` (models/tiny from `soft-train pretrain`), `smollm2` (fetched when missing), or a
    /// path: a .gguf file, a Hugging Face checkpoint directory, or a model directory of ours.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// The prompt, tokenized as given (no special tokens unless the model's config adds BOS).
    #[arg(long)]
    pub prompt: String,
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
}

pub fn execute(args: &Args) -> Result<()> {
    let backend = choose(args.backend)?;
    let Pretrained { model, tokenizer, special, source } = load_path(&resolve(&args.model)?, &backend.device)?;
    eprintln!("model {source}, backend {}", backend.name);
    let ids = encode_prompt(&tokenizer, &special, &args.prompt)?;
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
