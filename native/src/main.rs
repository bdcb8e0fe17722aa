//! `soft-train`: the command-line shell around `soft-core`. Each subcommand lives in its own
//! file under `cmd/`; this file only parses arguments and turns errors into exit codes.

mod allocator;
mod backend;
mod cmd;
mod grounder_cache;
mod llara;
mod llm_run;
mod model_arg;
mod plot;
mod progress;
mod run_dir;
mod run_info;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "soft-train", version, about = "SOFT: self-optimized fine-tuning for LLM recommenders, in Rust")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load a dataset, window and split it, and write it in the processed format.
    Prepare(cmd::prepare::Args),
    /// Train a classic baseline (popularity or SASRec) into a run directory.
    Baseline(cmd::baseline::Args),
    /// Evaluate a trained run on a sequences file: metrics.json and predictions.jsonl.
    Eval(cmd::eval::Args),
    /// Pre-train the `tiny` language model (tokenizer + weights) on the dataset's titles.
    Pretrain(cmd::pretrain::Args),
    /// Continue a prompt with a language model (greedy or beam search).
    Generate(cmd::generate::Args),
    /// SOFT stage 1, "Tuning-Only": LoRA fine-tuning on the real targets.
    Sft(cmd::sft::Args),
    /// SOFT stage 2: the SFT model writes distilled targets for every training prompt.
    Distill(cmd::distill::Args),
    /// SOFT stage 3: a fresh LoRA on real + distilled targets with the adaptive curriculum.
    Soft(cmd::soft::Args),
    /// Every stage in order, each method evaluated on the test split, then one table.
    Run(cmd::run::Args),
    /// What the browser page loads from a `run` directory: base model, SFT and per-epoch SOFT
    /// adapters, tokenizer, catalog embeddings, reports and manifest.json.
    Export(cmd::export::Args),
    /// Speed on fixed work (LoRA training, SOFT step, beam search, grounding), optionally side
    /// by side with PyTorch + transformers + peft (`--against pytorch`).
    Bench(cmd::bench::Args),
    Plan(cmd::plan::Args),
}

fn main() {
    allocator::keep_freed_memory();
    quiet_vulkan_loader();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Prepare(args) => cmd::prepare::execute(&args.into()),
        Command::Baseline(args) => cmd::baseline::Options::try_from(args).and_then(|o| cmd::baseline::execute(&o)),
        Command::Eval(args) => cmd::eval::execute(&args.into()),
        Command::Pretrain(args) => cmd::pretrain::execute(&args.into()),
        Command::Generate(args) => cmd::generate::execute(&args),
        Command::Sft(args) => cmd::sft::Options::try_from(args).and_then(|o| cmd::sft::execute(&o)),
        Command::Distill(args) => cmd::distill::execute(&args.into()),
        Command::Soft(args) => cmd::soft::execute(&args.into()),
        Command::Run(args) => cmd::run::execute(&args),
        Command::Export(args) => cmd::export::execute(&args),
        Command::Bench(args) => cmd::bench::execute(&args),
        Command::Plan(args) => cmd::plan::execute(&args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// Vulkan's loader complains on every adapter probe when XDG_RUNTIME_DIR is unset (CI, ssh);
/// give it a private directory before any thread starts.
fn quiet_vulkan_loader() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join(format!("soft-train-xdg-{}", std::process::id()));
        if std::fs::create_dir_all(&dir).is_ok() {
            // SAFETY: called first thing in main, before any other thread exists.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}
