//! `soft-train distill`: SOFT's stage 2. The SFT run writes an answer for every training prompt
//! (beam search, top beam kept); the auxiliary dataset goes to `RUN/distilled.jsonl`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use soft_core::train::distill::{distill, to_jsonl};

use super::data_args::DataArgs;
use crate::backend::{choose, BackendChoice};
use crate::llm_run::LoadedRun;
use crate::run_dir::write_files;

pub const DISTILLED_FILE: &str = "distilled.jsonl";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The SFT run directory (from `soft-train sft`).
    #[arg(long)]
    pub run: PathBuf,
    /// The dataset and split the SFT run was trained on.
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
}

pub fn run(args: Args) -> Result<()> {
    let backend = choose(args.backend)?;
    let (dataset, split) = args.data.load()?;
    let loaded = LoadedRun::open(&args.run, &dataset.catalog, &backend.device, None)?;
    if loaded.info.split != args.data.split_config() {
        bail!("{}: trained on split {:?}, not {:?}", args.run.display(), loaded.info.split, args.data.split_config());
    }
    eprintln!(
        "distilling {} training prompts with {}, backend {}",
        split.train.len(),
        args.run.display(),
        backend.name
    );
    let rows = distill(&loaded.recommender(dataset.meta.domain), &dataset.catalog, &split.train)?;
    let grounded = rows.iter().filter(|r| r.grounds_to_target).count();
    write_files(&args.run, &[(DISTILLED_FILE.into(), to_jsonl(&rows))])?;
    println!(
        "{} distilled targets ({} ground to the real item, {:.1} %) -> {}",
        rows.len(),
        grounded,
        100.0 * grounded as f64 / rows.len().max(1) as f64,
        args.run.join(DISTILLED_FILE).display()
    );
    Ok(())
}
