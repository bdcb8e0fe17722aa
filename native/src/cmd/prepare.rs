//! `soft-train prepare`: a dataset in the processed format plus its split samples.

use std::path::PathBuf;

use anyhow::Result;
use soft_core::data::windows::sequences_csv;

use super::data_args::DataArgs;
use crate::run_dir::write_files;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub data: DataArgs,
    /// Output directory: sequences.csv, id2name.json, dataset.json, train/valid/test.csv, split.json.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let (dataset, split) = args.data.load()?;
    let mut files: Vec<(String, String)> =
        dataset.processed_files().into_iter().map(|(n, t)| (n.to_string(), t)).collect();
    files.push(("train.csv".into(), sequences_csv(&split.train)));
    files.push(("valid.csv".into(), sequences_csv(&split.valid)));
    files.push(("test.csv".into(), sequences_csv(&split.test)));
    files.push(("split.json".into(), serde_json::to_string_pretty(&args.data.split_config())?));
    write_files(&args.out, &files)?;
    println!(
        "{}: {} items, {} windows ({} domain) -> {} train / {} valid / {} test examples in {}",
        dataset.meta.name,
        dataset.catalog.len(),
        dataset.windows.len(),
        dataset.meta.domain.name(),
        split.train.len(),
        split.valid.len(),
        split.test.len(),
        args.out.display()
    );
    Ok(())
}
