//! `--against llama.cpp`: SmolLM2 from its GGUF, prompt processing and greedy decoding at batch
//! 1, in this project and in llama.cpp (node-llama-cpp's prebuilt binaries,
//! bench/llamacpp/bench.mjs), with the same file, prompt ids and thread count.
//!
//! Both sides time a run the same way: from an empty KV cache, the prompt's forward pass and
//! the first new token (prompt tokens/s = prompt length / that time), then the other
//! `new_tokens - 1` greedy tokens (decode tokens/s). Exactly `new_tokens` are written on both
//! sides, EOS or not.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::tensor::Device;
use serde::Serialize;
use serde_json::json;
use soft_core::model::decoding::generate::greedy;
use soft_core::model::formats::pretrained::{load_path_as, smollm2_path, Pretrained};
use soft_core::model::weights::BaseWeights;

use super::{measured_runs, median};

pub const SETUP: &str = "scripts/setup-bench-llamacpp.sh";

/// The prompt: real text, tokenised by the model's own tokenizer, cut to `n` ids (ordinary
/// English so that greedy decoding follows likely tokens, where the two sides can agree).
const TEXT: &str = "A recommender system suggests items a user is likely to enjoy. Given the movies \
a user has watched and rated, it predicts which unseen movie they would pick next. Classic \
approaches factorise the rating matrix into user and item embeddings; sequential models read the \
history in order and predict the next item. A language model can do the same from text: the \
prompt lists the titles the user watched, one per line, and the model writes the title of the \
next movie. Decoding is constrained to the titles of the catalog, so every answer is a real \
movie. Training fine-tunes the model on such prompts with the true next movie as the target, \
and self-distillation mixes in the model's own answers to keep it close to what it already \
knows. The user watched: The Matrix, Toy Story, Star Wars, Fargo, Pulp Fiction, Casablanca, \
Heat, Alien, Braveheart, Apollo 13, Jurassic Park, The Fugitive, Forrest Gump, Twelve Monkeys. \
The next movie the user will watch is";

pub fn prompt_ids(p: &Pretrained, n: usize) -> Result<Vec<u32>> {
    let enc = p.tokenizer.encode(TEXT, false).map_err(|e| anyhow::anyhow!("tokenising the bench prompt: {e}"))?;
    let ids = enc.get_ids();
    if ids.len() < n {
        bail!("the bench prompt is {} tokens, fewer than {n}", ids.len());
    }
    Ok(ids[..n].to_vec())
}

/// The GGUF both sides load; a clear error naming the set-up script when it is missing.
pub fn gguf() -> Result<PathBuf> {
    let path = smollm2_path();
    if !path.is_file() {
        bail!("{}: no SmolLM2 GGUF; run {SETUP} (or scripts/fetch-smollm2.sh)", path.display());
    }
    Ok(path)
}

/// One side's results: throughputs per run and the greedy ids of the last run.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub prompt: Vec<f64>,
    pub decode: Vec<f64>,
    pub ids: Vec<u32>,
}

/// The project's side (and the prompt's ids): the GGUF loaded as `soft-train generate --model smollm2` loads it, and
/// its single-sequence decoding path (`greedy`, as `generate` runs with one beam). `greedy` is
/// timed with 1 new token (prompt + first token) and with `new_tokens`, back to back in each run;
/// the difference is the decode time of the other `new_tokens - 1` tokens.
pub fn project(
    device: &Device,
    dtype: BaseWeights,
    prompt_tokens: usize,
    new_tokens: usize,
    warmup: usize,
    runs: usize,
) -> Result<(Vec<u32>, Side)> {
    let path = gguf()?;
    let p = load_path_as(&path, device, dtype).with_context(|| format!("loading {}", path.display()))?;
    let prompt = prompt_ids(&p, prompt_tokens)?;
    let prompt = prompt.as_slice();
    // An EOS id outside the vocabulary: greedy writes exactly `new_tokens` tokens.
    let no_eos = p.model.config().vocab_size as u32;
    let mut ids = Vec::new();
    let pairs = measured_runs(warmup, runs, || {
        let start = Instant::now();
        let first = greedy(&p.model, &[prompt], 1, no_eos)?;
        let t1 = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let out = greedy(&p.model, &[prompt], new_tokens, no_eos)?.remove(0);
        let tn = start.elapsed().as_secs_f64();
        if out.len() != new_tokens || first[0].first() != out.first() {
            bail!("greedy wrote {} of {new_tokens} tokens (or a different first one)", out.len());
        }
        ids = out;
        if tn <= t1 {
            bail!("decoding {new_tokens} tokens took no longer than 1 ({tn:.3} s vs {t1:.3} s): timer noise");
        }
        Ok((prompt.len() as f64 / t1, (new_tokens - 1) as f64 / (tn - t1)))
    })?;
    let side = Side { prompt: pairs.iter().map(|x| x.0).collect(), decode: pairs.iter().map(|x| x.1).collect(), ids };
    Ok((prompt.to_vec(), side))
}

/// What the llama.cpp side needs, checked before any measurement: the GGUF and node-llama-cpp.
/// Returns bench/llamacpp and its script.
pub fn check() -> Result<(PathBuf, PathBuf)> {
    gguf()?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/llamacpp");
    if !dir.join("node_modules/node-llama-cpp").is_dir() {
        bail!("{}: node-llama-cpp is not installed; run {SETUP}", dir.join("node_modules").display());
    }
    let script = dir.join("bench.mjs");
    Ok((dir, script))
}

/// The llama.cpp side: bench/llamacpp/bench.mjs with node, on the same GGUF, ids and threads.
pub fn llama_cpp(
    prompt: &[u32],
    new_tokens: usize,
    threads: usize,
    warmup: usize,
    runs: usize,
) -> Result<(Side, serde_json::Value)> {
    let (dir, script) = check()?;
    let gguf = std::fs::canonicalize(gguf()?).context("resolving the GGUF path")?;
    let spec = json!({
        "gguf": gguf, "threads": threads, "prompt": prompt, "new_tokens": new_tokens,
        "runs": runs, "warmup": warmup,
    });
    let spec_path = std::env::temp_dir().join(format!("soft-bench-llamacpp-{}.json", std::process::id()));
    std::fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)
        .with_context(|| format!("writing {}", spec_path.display()))?;
    eprintln!("llama.cpp side: node {}", script.display());
    let out = Command::new("node")
        .arg(&script)
        .arg(&spec_path)
        .current_dir(&dir)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running node {} (no node? run {SETUP})", script.display()));
    let _ = std::fs::remove_file(&spec_path);
    let out = out?;
    if !out.status.success() {
        bail!("{} failed ({}); {SETUP} installs what it needs", script.display(), out.status);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("{} printed no JSON object", script.display()))?;
    let floats = |key: &str| -> Result<Vec<f64>> {
        serde_json::from_value(v[key].clone()).with_context(|| format!("{}: no list \"{key}\"", script.display()))
    };
    let side = Side {
        prompt: floats("prompt_tokens_per_s")?,
        decode: floats("decode_tokens_per_s")?,
        ids: serde_json::from_value(v["ids"].clone()).with_context(|| format!("{}: no \"ids\"", script.display()))?,
    };
    if side.prompt.len() != runs || side.decode.len() != runs || side.ids.len() != new_tokens {
        bail!(
            "{} returned {} runs and {} ids for {runs} runs of {new_tokens}",
            script.display(),
            side.prompt.len(),
            side.ids.len()
        );
    }
    let info = json!({ "llama_cpp_release": v["llama_cpp"], "threads": v["threads"] });
    Ok((side, info))
}

/// How many of the two greedy sequences' ids agree, position by position, and the length of
/// their common prefix (after the first difference the two continue from different text).
pub fn agreement(a: &[u32], b: &[u32]) -> (usize, usize) {
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    (same, prefix)
}

pub fn summary(project: &Side, llama: &Side) -> serde_json::Value {
    let (same, prefix) = agreement(&project.ids, &llama.ids);
    let (pp, pl) = (median(&project.prompt), median(&llama.prompt));
    let (dp, dl) = (median(&project.decode), median(&llama.decode));
    json!({
        "prompt": { "project": pp, "llama_cpp": pl, "ratio": pp / pl, "target": 0.8, "met": pp / pl >= 0.8 },
        "decode": { "project": dp, "llama_cpp": dl, "ratio": dp / dl, "target": 1.0, "met": dp / dl >= 1.0 },
        "greedy_ids": { "project": project.ids, "llama_cpp": llama.ids, "same_position": same, "common_prefix": prefix },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_counts_positions_and_prefix() {
        assert_eq!(agreement(&[1, 2, 3, 4], &[1, 2, 5, 4]), (3, 2));
        assert_eq!(agreement(&[1], &[2]), (0, 0));
    }
}
