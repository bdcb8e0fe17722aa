//! `soft-train distill`: SOFT's stage 2. The SFT run writes an answer for every training prompt
//! (beam search, top beam kept); the auxiliary dataset goes to `RUN/distilled.jsonl`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use soft_core::train::distill::{distill, to_jsonl};

use super::data_args::{DataArgs, DataOptions};
use crate::backend::{choose, BackendChoice};
use crate::llm_run::LoadedRun;
use crate::run_dir::write_files;
use crate::run_info::RunHeader;

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

pub struct Options {
    /// The SFT run directory.
    pub run: PathBuf,
    /// The dataset and split the SFT run was trained on.
    pub data: DataOptions,
    pub backend: BackendChoice,
}

impl From<Args> for Options {
    fn from(args: Args) -> Self {
        Self { run: args.run, data: (&args.data).into(), backend: args.backend }
    }
}

/// Refuses a run trained on another split than `data`'s: its answers would leak or miss examples.
pub fn check_split(dir: &Path, header: &RunHeader, data: &DataOptions) -> Result<()> {
    if header.split != data.split {
        bail!("{}: trained on split {:?}, not {:?}", dir.display(), header.split, data.split);
    }
    Ok(())
}

pub fn execute(o: &Options) -> Result<()> {
    let backend = choose(o.backend)?;
    let (dataset, split) = o.data.load()?;
    let loaded = LoadedRun::open(&o.run, &dataset.catalog, &backend.device, None, None)?;
    check_split(&o.run, &loaded.header, &o.data)?;
    eprintln!("distilling {} training prompts with {}, backend {}", split.train.len(), o.run.display(), backend.name);
    let rows = distill(&loaded.recommender(dataset.meta.domain), &dataset.catalog, &split.train)?;
    let grounded = rows.iter().filter(|r| r.grounds_to_target).count();
    write_files(&o.run, &[(DISTILLED_FILE.into(), to_jsonl(&rows))])?;
    println!(
        "{} distilled targets ({} ground to the real item, {:.1} %) -> {}",
        rows.len(),
        grounded,
        100.0 * grounded as f64 / rows.len().max(1) as f64,
        o.run.join(DISTILLED_FILE).display()
    );
    Ok(())
}
