//! The options of a training command's run directory, shared by `sft` and `soft`.

use std::path::PathBuf;

use crate::backend::BackendChoice;

#[derive(clap::Args, Debug)]
pub struct RunDirArgs {
    /// Run directory to create (usable as `soft-train eval --run DIR`).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    pub backend: BackendChoice,
    /// Continue from the newest epoch checkpoint in OUT/checkpoints instead of starting over.
    #[arg(long)]
    pub resume: bool,
}
