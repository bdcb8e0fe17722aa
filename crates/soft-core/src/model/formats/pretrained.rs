//! Loading a ready model by name: the project's pre-trained `tiny` preset (a directory written
//! by `soft-train pretrain`), a GGUF file (SmolLM2), or a Hugging Face checkpoint directory.
//! The one place that knows every format; each format's reader knows only its own.

use std::path::Path;
#[cfg(feature = "native")]
use std::path::PathBuf;

use burn::tensor::Device;
use tokenizers::Tokenizer;

use crate::model::formats::hf::{self, checkpoint_from_bytes, special_ids_from_bytes};
use crate::model::formats::tokenizer::SpecialIds;
use crate::model::llama::Llama;
use crate::{Error, Result};
#[cfg(feature = "native")]
use {
    crate::model::config::LlamaConfig,
    crate::model::formats::gguf::llama::load_llama_gguf_parts,
    crate::model::formats::gguf::tokenizer::{special_ids_from_gguf, tokenizer_from_gguf},
    crate::model::formats::hf::{load_hf_checkpoint, read_special_ids},
    crate::model::formats::tokenizer::{check_vocab_fits, load_tokenizer, save_tokenizer},
    crate::model::weights::{BaseWeights, FloatEncoding},
    burn::module::Module,
};

/// Files of a model directory written by this project.
pub const CONFIG_FILE: &str = "llama.json";
pub const WEIGHTS_FILE: &str = "model.bpk";
pub const TOKENIZER_FILE: &str = "tokenizer.json";

#[derive(Clone)]
pub struct Pretrained {
    pub model: Llama,
    pub tokenizer: Tokenizer,
    pub special: SpecialIds,
    /// Where it came from, for reports.
    pub source: String,
}

#[cfg(feature = "native")]
/// Writes a model directory: config, weights (burnpack) and tokenizer.
pub fn save_dir(dir: &Path, model: &Llama, tokenizer: &Tokenizer) -> Result<()> {
    let config = serde_json::to_string_pretty(model.config()).expect("config serialises");
    crate::atomic_file::write_atomic(&dir.join(CONFIG_FILE), config.as_bytes())?;
    let weights = dir.join(WEIGHTS_FILE);
    let tmp = dir.join(format!(".{WEIGHTS_FILE}.tmp{}", std::process::id()));
    model.clone().save_file(&tmp).map_err(|e| Error::format(&tmp, e.to_string()))?;
    std::fs::rename(&tmp, &weights).map_err(|e| Error::io(&weights, e))?;
    save_tokenizer(tokenizer, &dir.join(TOKENIZER_FILE))
}

#[cfg(feature = "native")]
fn load_project_dir(dir: &Path, device: &Device) -> Result<Pretrained> {
    let config_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let config: LlamaConfig = serde_json::from_str(&text).map_err(|e| Error::json(&config_path, e))?;
    config.validate()?;
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    let tokenizer = load_tokenizer(&tokenizer_path)?;
    check_vocab_fits(&tokenizer, config.vocab_size, &tokenizer_path)?;
    let weights = dir.join(WEIGHTS_FILE);
    if !weights.exists() {
        return Err(Error::io(&weights, std::io::Error::new(std::io::ErrorKind::NotFound, "missing model weights")));
    }
    let model = Llama::init(&config, device)?
        .try_load_file(&weights)
        .map_err(|e| Error::format(&weights, format!("cannot load weights: {e}")))?;
    let special = SpecialIds::endoftext(&tokenizer)?;
    Ok(Pretrained { model, tokenizer, special, source: dir.display().to_string() })
}

#[cfg(feature = "native")]
fn load_gguf(path: &Path, device: &Device, weights: BaseWeights) -> Result<Pretrained> {
    let (config, meta, dense, blocks) = load_llama_gguf_parts(path, weights.keeps_blocks())?;
    let tokenizer = tokenizer_from_gguf(&meta)?;
    check_vocab_fits(&tokenizer, config.vocab_size, path)?;
    let special = special_ids_from_gguf(&meta)?;
    let model =
        Llama::from_parts(&config, &dense, &blocks, device, weights.encoding()).map_err(|e| rename_path(e, path))?;
    Ok(Pretrained { model, tokenizer, special, source: path.display().to_string() })
}

#[cfg(feature = "native")]
fn load_hf(dir: &Path, device: &Device, encoding: FloatEncoding) -> Result<Pretrained> {
    let (config, weights, tokenizer) = load_hf_checkpoint(dir)?;
    let special = read_special_ids(dir)?;
    let model = Llama::from_weights_in(&config, &weights, device, encoding).map_err(|e| rename_path(e, dir))?;
    Ok(Pretrained { model, tokenizer, special, source: dir.display().to_string() })
}

/// The files of a single-file Hugging Face checkpoint, already in memory (the page fetches them).
pub struct HfBytes<'a> {
    pub config: &'a [u8],
    pub weights: &'a [u8],
    pub tokenizer: &'a [u8],
    pub tokenizer_config: Option<&'a [u8]>,
}

/// A model from the bytes of its checkpoint files, checked as a directory would be; `dir` is
/// where the files came from (a URL prefix on the page), named in errors.
pub fn from_hf_bytes(files: &HfBytes, dir: &Path, device: &Device) -> Result<Pretrained> {
    let (config, weights, tokenizer) = checkpoint_from_bytes(files.config, files.weights, files.tokenizer, dir)?;
    let special = special_ids_from_bytes(files.config, files.tokenizer_config, &dir.join(hf::CONFIG_FILE))?;
    let model =
        Llama::from_weights(&config, &weights, device).map_err(|e| rename_path(e, &dir.join(hf::SINGLE_FILE)))?;
    Ok(Pretrained { model, tokenizer, special, source: dir.display().to_string() })
}

/// `from_weights` does not know the file; name it in its tensor errors.
fn rename_path(e: Error, path: &Path) -> Error {
    match e {
        Error::Tensor { tensor, msg, .. } => Error::Tensor { path: path.to_path_buf(), tensor, msg },
        other => other,
    }
}

#[cfg(feature = "native")]
/// A `.gguf` file, a Hugging Face checkpoint directory (`config.json`), or a directory written
/// by this project (`llama.json`).
pub fn load_path(path: &Path, device: &Device) -> Result<Pretrained> {
    load_path_in(path, device, FloatEncoding::F32)
}

#[cfg(feature = "native")]
/// [`load_path`] with the base weights in `encoding` (see [`Llama::from_weights_in`]; a
/// project directory is loaded, then converted: its models are small).
pub fn load_path_in(path: &Path, device: &Device, encoding: FloatEncoding) -> Result<Pretrained> {
    if path.is_file() {
        return load_gguf(path, device, BaseWeights::Float(encoding));
    }
    if path.join(CONFIG_FILE).exists() {
        let mut pre = load_project_dir(path, device)?;
        pre.model = pre.model.with_base_dtype(encoding)?;
        return Ok(pre);
    }
    if path.join("config.json").exists() {
        return load_hf(path, device, encoding);
    }
    Err(Error::NotFound(format!(
        "{}: no model here (expected a .gguf file, a directory with {CONFIG_FILE} from `soft-train pretrain`, or a Hugging Face checkpoint with config.json)",
        path.display()
    )))
}

#[cfg(feature = "native")]
/// [`load_path_in`], or for [`BaseWeights::Stored`] a GGUF file with its quantized projections
/// and token embedding kept as the file's blocks (`Llama::from_parts`; on the CPU backend
/// only), for [`BaseWeights::Int8Dot`] also repacked for integer products. Another kind of file
/// with either is refused: only GGUF stores blocks read here.
pub fn load_path_as(path: &Path, device: &Device, weights: BaseWeights) -> Result<Pretrained> {
    let mut pre = match weights {
        BaseWeights::Float(encoding) => return load_path_in(path, device, encoding),
        BaseWeights::Bf16Dot => load_path_in(path, device, weights.encoding())?,
        BaseWeights::Stored | BaseWeights::Int8Dot if path.is_file() => load_gguf(path, device, weights)?,
        BaseWeights::Stored | BaseWeights::Int8Dot => {
            return Err(Error::config(
                "weights dtype",
                format!(
                    "`{}` keeps a GGUF file's quantized blocks; {} is not a GGUF file (use f32, f16 or bf16)",
                    weights.name(),
                    path.display()
                ),
            ))
        }
    };
    pre.model = pre.model.with_base_weights(weights)?;
    Ok(pre)
}

#[cfg(feature = "native")]
/// Where named models live: $SOFT_MODELS_DIR, else `models/` under the current directory.
pub fn models_dir() -> PathBuf {
    std::env::var_os("SOFT_MODELS_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("models"))
}

#[cfg(feature = "native")]
pub fn smollm2_path() -> PathBuf {
    models_dir().join("smollm2").join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

#[cfg(feature = "native")]
pub fn tiny_dir() -> PathBuf {
    models_dir().join("tiny")
}

#[cfg(all(test, feature = "native"))]
mod tests {
    use super::*;

    #[test]
    fn stored_weights_are_refused_for_anything_but_a_gguf_file() {
        let dir = std::env::temp_dir();
        for weights in [BaseWeights::Stored, BaseWeights::Int8Dot] {
            let Err(err) = load_path_as(&dir, &Device::flex(), weights) else { panic!("loaded {dir:?}") };
            let err = err.to_string();
            assert!(
                err.contains(weights.name())
                    && err.contains("not a GGUF file")
                    && err.contains(&dir.display().to_string()),
                "{err}"
            );
        }
        assert!("q4".parse::<BaseWeights>().unwrap_err().contains("stored"));
        assert_eq!("stored".parse::<BaseWeights>(), Ok(BaseWeights::Stored));
        assert_eq!("int8-dot".parse::<BaseWeights>(), Ok(BaseWeights::Int8Dot));
        assert_eq!("bf16".parse::<BaseWeights>(), Ok(BaseWeights::Float(FloatEncoding::BF16)));
    }
}
