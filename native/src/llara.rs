//! LLaRA on the command line: the frozen item table comes from a SASRec run (the run's own in
//! `soft-train run`), and a model that reads item slots carries it with a projector.

use std::path::Path;

use anyhow::{bail, Context, Result};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use soft_core::baselines::SasRec;
use soft_core::data::prompt::Backbone;
use soft_core::model::llama::Llama;

use crate::run_dir::SASREC_WEIGHTS;
use crate::run_info::{RunInfo, SasrecDetails};

/// The item embeddings `[max_item + 1, d]` of the SASRec run in `dir`.
pub fn sasrec_item_table(dir: &Path, device: &Device) -> Result<Tensor<2>> {
    let details = RunInfo::<SasrecDetails>::load(dir)
        .with_context(|| format!("{}: not a SASRec run (LLaRA's item embeddings)", dir.display()))?
        .details;
    let path = dir.join(SASREC_WEIGHTS);
    let model = SasRec::new(&details.config, details.max_item, device)
        .try_load_file(&path)
        .with_context(|| format!("{}: cannot load SASRec weights", path.display()))?;
    Ok(model.item_table())
}

/// `model` as `backbone` needs it: for LLaRA with a fresh projector (from `seed`) over `table`.
pub fn for_backbone(model: Llama, backbone: Backbone, table: Option<&Tensor<2>>, seed: u64) -> Result<Llama> {
    match (backbone, table) {
        (Backbone::Bigrec, _) => Ok(model),
        (Backbone::Llara, Some(table)) => Ok(model.with_items(table.clone(), seed)?),
        (Backbone::Llara, None) => bail!("LLaRA needs an item table (from a SASRec run)"),
    }
}
