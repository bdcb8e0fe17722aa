//! `--model NAME`: the language model a command loads, by preset name or path. `generate`,
//! `sft` and every opened language-model run resolve the name here.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use soft_core::model::formats::pretrained::{smollm2_path, tiny_dir};

/// Resolves a model name: `tiny` (models/tiny from `soft-train pretrain`), `smollm2` (fetched
/// through the project's script when missing), or a path (a .gguf file, a Hugging Face
/// checkpoint directory, or a model directory of ours).
pub fn resolve(name: &str) -> Result<PathBuf> {
    Ok(match name {
        "tiny" => {
            let dir = tiny_dir();
            if !dir.exists() {
                bail!("{}: no tiny model yet; run `soft-train pretrain` first", dir.display());
            }
            dir
        }
        "smollm2" => {
            let path = smollm2_path();
            if !path.exists() {
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-smollm2.sh");
                eprintln!("fetching SmolLM2 with {}", script.display());
                let status = std::process::Command::new("bash")
                    .arg(&script)
                    .status()
                    .with_context(|| format!("running {}", script.display()))?;
                if !status.success() || !path.exists() {
                    bail!("{} did not produce {}", script.display(), path.display());
                }
            }
            path
        }
        other => PathBuf::from(other),
    })
}
