//! The figures of a run: SOFT's curriculum (first seed), with valid HR@10 of every language model,
//! one figure set per backbone (BIGRec's in `plots/`, LLaRA's in `plots/llara/`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use soft_core::data::prompt::Backbone;

use super::config::RunConfig;
use super::layout::{seed_dir, PLOTS_DIR, SFT, SOFT, SOFT_WITHOUT_SA};
use crate::plot;
use crate::run_info::{RunInfo, SftDetails, SoftDetails};

pub fn figures(out: &Path, config: &RunConfig) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for &backbone in &config.backbones {
        written.extend(backbone_figures(out, config, backbone)?);
    }
    Ok(written)
}

fn backbone_figures(out: &Path, config: &RunConfig, backbone: Backbone) -> Result<Vec<PathBuf>> {
    let base = seed_dir(out, 0, config.seeds[0]);
    let dir = |name: &str| base.join(backbone.run_dir(name));
    let sft = RunInfo::<SftDetails>::load(&dir(SFT))?.details;
    let soft = RunInfo::<SoftDetails>::load(&dir(SOFT))?.details.report;
    let without_sa = RunInfo::<SoftDetails>::load(&dir(SOFT_WITHOUT_SA))?.details.report;
    let hr10 = vec![
        ("SFT".to_string(), sft.epochs.iter().map(|e| e.valid.hr_at(10)).collect()),
        ("SOFT".to_string(), soft.epochs.iter().map(|e| e.valid.hr_at(10)).collect()),
        ("SOFT without SA".to_string(), without_sa.epochs.iter().map(|e| e.valid.hr_at(10)).collect()),
    ];
    let plots = match backbone {
        Backbone::Bigrec => out.join(PLOTS_DIR),
        Backbone::Llara => out.join(PLOTS_DIR).join(backbone.name()),
    };
    let epochs = &soft.epochs;
    plot::curriculum_figure(
        &plots,
        &epochs.iter().map(|e| e.lambda).collect::<Vec<_>>(),
        &epochs.iter().map(|e| e.d).collect::<Vec<_>>(),
        soft.d0,
        &epochs.iter().map(|e| e.loss_real as f64).collect::<Vec<_>>(),
        &epochs.iter().map(|e| e.loss_distilled as f64).collect::<Vec<_>>(),
        &hr10,
    )
}
