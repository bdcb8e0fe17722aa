//! `soft-train prepare`: a dataset in the processed format plus its split samples.

use std::path::PathBuf;

use anyhow::Result;
use soft_core::data::windows::sequences_csv;

use super::data_args::{DataArgs, DataOptions};
use crate::run_dir::write_files;

/// The split's settings; written last, so its presence marks the directory complete.
pub const SPLIT_FILE: &str = "split.json";
/// The test examples, in the processed format.
pub const TEST_FILE: &str = "test.csv";

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub data: DataArgs,
    /// Output directory: sequences.csv, id2name.json, dataset.json, train/valid/test.csv, split.json.
    #[arg(long)]
    pub out: PathBuf,
}

pub struct Options {
    pub data: DataOptions,
    pub out: PathBuf,
}

impl From<Args> for Options {
    fn from(args: Args) -> Self {
        Self { data: (&args.data).into(), out: args.out }
    }
}

pub fn execute(o: &Options) -> Result<()> {
    let (dataset, split) = o.data.load()?;
    let mut files: Vec<(String, String)> =
        dataset.processed_files().into_iter().map(|(n, t)| (n.to_string(), t)).collect();
    files.push(("train.csv".into(), sequences_csv(&split.train)));
    files.push(("valid.csv".into(), sequences_csv(&split.valid)));
    files.push((TEST_FILE.into(), sequences_csv(&split.test)));
    files.push((SPLIT_FILE.into(), serde_json::to_string_pretty(&o.data.split)?));
    write_files(&o.out, &files)?;
    println!(
        "{}: {} items, {} windows ({} domain) -> {} train / {} valid / {} test examples in {}",
        dataset.meta.name,
        dataset.catalog.len(),
        dataset.windows.len(),
        dataset.meta.domain.name(),
        split.train.len(),
        split.valid.len(),
        split.test.len(),
        o.out.display()
    );
    Ok(())
}
