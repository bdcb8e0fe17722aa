//! Byte-level BPE tokenizers in SmolLM2's style (digits split one by one, then GPT-2 byte-level
//! pre-tokenization): built from a GGUF's metadata, trained on item titles for a tiny model, or
//! read from and written to `tokenizer.json`.

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{BpeTrainer, Merges, Vocab, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::model::gguf::Metadata;
use crate::{Error, Result};

/// End of text; also the padding token of tokenizers trained here.
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// The token ids a prompt builder and a generator need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: u32,
    pub pad: u32,
    /// Whether prompts should start with `bos`. The tokenizer never adds it by itself.
    pub add_bos: bool,
}

impl SpecialIds {
    /// From `tokenizer.ggml.{bos,eos,padding}_token_id` and `add_bos_token`; padding defaults
    /// to EOS.
    pub fn from_gguf(meta: &Metadata) -> Result<Self> {
        let id = |key: &str| -> Result<Option<u32>> {
            meta.u64(key)?.map(|v| u32::try_from(v).map_err(|_| meta.invalid(key, "too large"))).transpose()
        };
        let eos_key = "tokenizer.ggml.eos_token_id";
        let eos = id(eos_key)?.ok_or_else(|| meta.missing(eos_key))?;
        Ok(Self {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos,
            pad: id("tokenizer.ggml.padding_token_id")?.unwrap_or(eos),
            add_bos: meta.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
        })
    }

    /// For tokenizers trained here: `<|endoftext|>` ends and pads, nothing begins.
    pub fn endoftext(tokenizer: &Tokenizer) -> Result<Self> {
        let eos = tokenizer
            .token_to_id(ENDOFTEXT)
            .ok_or_else(|| Error::Invalid(format!("tokenizer has no `{ENDOFTEXT}` token")))?;
        Ok(Self { bos: None, eos, pad: eos, add_bos: false })
    }
}

/// SmolLM2's pre-tokenizer (llama.cpp's `smollm`): every digit its own piece, then GPT-2's
/// regex and byte-to-unicode mapping, with no space added in front of the text.
fn smollm_pre_tokenizer() -> Sequence {
    Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()])
}

/// A tokenizer with SmolLM2's pre-tokenizer and a byte-level decoder around `model`.
fn byte_level_tokenizer(model: BPE) -> Tokenizer {
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(smollm_pre_tokenizer()));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    tokenizer
}

// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_CONTROL: u64 = 3;
const TOKEN_USER_DEFINED: u64 = 4;

/// Builds the tokenizer stored in a GGUF's metadata (`tokenizer.ggml.model = gpt2` with
/// `pre = smollm`). Control tokens become special added tokens, user-defined ones plain added
/// tokens, so both are matched whole in text.
pub fn tokenizer_from_gguf(meta: &Metadata) -> Result<Tokenizer> {
    let require_str = |key: &str| meta.str(key)?.ok_or_else(|| meta.missing(key));
    let model = require_str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(meta.invalid("tokenizer.ggml.model", format!("`{model}` is not supported (gpt2)")));
    }
    let pre = require_str("tokenizer.ggml.pre")?;
    if pre != "smollm" {
        return Err(meta.invalid("tokenizer.ggml.pre", format!("`{pre}` is not supported (smollm)")));
    }
    let strings = |key: &str| -> Result<Vec<&str>> {
        let items = meta.array(key)?.ok_or_else(|| meta.missing(key))?;
        items.iter().map(|v| v.as_str().ok_or_else(|| meta.invalid(key, format!("non-string item {v:?}")))).collect()
    };

    let tokens_key = "tokenizer.ggml.tokens";
    let tokens = strings(tokens_key)?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| Ok((t.to_string(), u32::try_from(id).map_err(|_| meta.invalid(tokens_key, "too many tokens"))?)))
        .collect::<Result<_>>()?;
    let merges_key = "tokenizer.ggml.merges";
    // A merge is "left right": byte-level pieces never contain a plain space.
    let merges: Merges = strings(merges_key)?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| meta.invalid(merges_key, format!("merge `{m}` is not two pieces")))
        })
        .collect::<Result<_>>()?;
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| meta.invalid(merges_key, e))?;
    let mut tokenizer = byte_level_tokenizer(bpe);

    let types_key = "tokenizer.ggml.token_type";
    if let Some(types) = meta.array(types_key)? {
        if types.len() != tokens.len() {
            return Err(meta.invalid(types_key, format!("{} types for {} tokens", types.len(), tokens.len())));
        }
        let mut special = Vec::new();
        let mut user = Vec::new();
        for (token, ty) in tokens.iter().zip(types) {
            match ty.as_u64() {
                Some(TOKEN_CONTROL) => special.push(AddedToken::from(*token, true)),
                Some(TOKEN_USER_DEFINED) => user.push(AddedToken::from(*token, false)),
                Some(_) => {}
                None => return Err(meta.invalid(types_key, format!("non-integer item {ty:?}"))),
            }
        }
        tokenizer.add_special_tokens(&special);
        tokenizer.add_tokens(&user);
    }
    Ok(tokenizer)
}

/// Trains a byte-level BPE tokenizer with SmolLM2's pre-tokenizer on `texts` (e.g. item titles),
/// for a small model trained from scratch. `<|endoftext|>` is always a special token (id 0,
/// with `special_tokens` after it); all 256 byte symbols are in the vocabulary, so any text
/// encodes.
pub fn train_bpe(texts: &[String], vocab_size: usize, special_tokens: &[&str]) -> Result<Tokenizer> {
    let mut specials = vec![ENDOFTEXT];
    specials.extend(special_tokens.iter().filter(|t| **t != ENDOFTEXT));
    let alphabet = ByteLevel::alphabet();
    let floor = alphabet.len() + specials.len();
    if vocab_size < floor {
        return Err(Error::Invalid(format!(
            "vocabulary size {vocab_size} is below the {floor} byte symbols and special tokens"
        )));
    }
    let trainer = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials.iter().map(|t| AddedToken::from(*t, true)).collect())
        .initial_alphabet(alphabet.into_iter().collect())
        .build();
    let mut tokenizer = byte_level_tokenizer(BPE::default());
    tokenizer
        .train(&mut TrainerWrapper::from(trainer), texts.iter())
        .map_err(|e| Error::Invalid(format!("training the tokenizer: {e}")))?;
    Ok(tokenizer)
}

pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Tokenizer::from_bytes(bytes).map_err(|e| Error::format(path, e.to_string()))
}

pub fn save_tokenizer(tokenizer: &Tokenizer, path: &Path) -> Result<()> {
    let json = tokenizer.to_string(false).map_err(|e| Error::format(path, e.to_string()))?;
    std::fs::write(path, json).map_err(|e| Error::io(path, e))
}

/// Checks that every id `tokenizer` can produce (`path` is where it came from) is a row of a
/// model embedding with `model_vocab` rows.
pub fn check_vocab_fits(tokenizer: &Tokenizer, model_vocab: usize, path: &Path) -> Result<()> {
    let ids = tokenizer.get_vocab(true).into_values().max().map_or(0, |max| max as usize + 1);
    if ids > model_vocab {
        return Err(Error::format(
            path,
            format!("tokenizer uses ids up to {}, but the model's vocabulary has {model_vocab}", ids - 1),
        ));
    }
    Ok(())
}

/// Token ids of `text` as given: no special tokens added.
pub fn encode(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    tokenizer.encode(text, false).map(|e| e.get_ids().to_vec()).map_err(|e| Error::Invalid(format!("tokenizer: {e}")))
}

/// Prompt token ids, with BOS first when the model's tokenizer config asks for it.
pub fn encode_prompt(tokenizer: &Tokenizer, special: &SpecialIds, text: &str) -> Result<Vec<u32>> {
    let mut ids = encode(tokenizer, text)?;
    if special.add_bos {
        ids.insert(0, special.bos.unwrap_or(special.eos));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gguf::MetaValue;
    use std::collections::BTreeMap;

    /// A few hundred title-like sentences.
    fn corpus() -> Vec<String> {
        let adjectives = ["Silent", "Golden", "Broken", "Hidden", "Last", "Little", "Dark", "Wild"];
        let nouns = ["River", "Kingdom", "Garden", "Empire", "Road", "Winter", "House", "Star"];
        let mut texts = Vec::new();
        for (i, a) in adjectives.iter().enumerate() {
            for (j, n) in nouns.iter().enumerate() {
                texts.push(format!("The {a} {n}"));
                texts.push(format!("{a} {n}: A Novel ({})", 1950 + i * 7 + j));
                texts.push(format!("Return of the {n}, Part {}", i + j));
                texts.push(format!("{n}s of the {a} Sea — édition spéciale"));
            }
        }
        texts
    }

    #[test]
    fn trained_tokenizer_round_trips_and_splits_digits() {
        let texts = corpus();
        assert!(texts.len() >= 250);
        let tok = train_bpe(&texts, 400, &["<|item|>"]).unwrap();
        assert!(tok.get_vocab_size(true) <= 400);
        let ids = SpecialIds::endoftext(&tok).unwrap();
        assert_eq!((ids.eos, ids.pad, ids.bos), (0, 0, None));
        assert_eq!(tok.token_to_id("<|item|>"), Some(1));

        for text in texts.iter().take(40).chain([&"unseen wörds 😀 and\ttabs  twice".to_string()]) {
            let enc = tok.encode(text.as_str(), false).unwrap();
            assert_eq!(&tok.decode(enc.get_ids(), false).unwrap(), text);
        }
        // Words seen often become single tokens; digits never merge.
        let enc = tok.encode("The Golden River 2024", false).unwrap();
        assert_eq!(enc.get_tokens(), &["The", "ĠGolden", "ĠRiver", "Ġ", "2", "0", "2", "4"]);
        // Special tokens are matched whole and dropped when decoding without specials.
        let enc = tok.encode("<|item|>Dark Road<|endoftext|>", false).unwrap();
        assert_eq!(enc.get_ids().first(), Some(&1));
        assert_eq!(enc.get_ids().last(), Some(&0));
        assert_eq!(tok.decode(enc.get_ids(), true).unwrap(), "Dark Road");

        assert!(train_bpe(&texts, 100, &[]).is_err());
    }

    #[test]
    fn tokenizer_json_round_trips_and_errors_name_the_file() {
        let tok = train_bpe(&corpus(), 320, &[]).unwrap();
        let dir = std::env::temp_dir().join(format!("soft-tokenizer-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        save_tokenizer(&tok, &path).unwrap();
        let loaded = load_tokenizer(&path).unwrap();
        let text = "Little Star (1999)";
        assert_eq!(loaded.encode(text, false).unwrap().get_ids(), tok.encode(text, false).unwrap().get_ids());

        check_vocab_fits(&loaded, 320, &path).unwrap();
        let err = check_vocab_fits(&loaded, 100, &path).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json") && err.contains("100"), "{err}");

        std::fs::write(&path, "{\"model\": ").unwrap();
        assert!(load_tokenizer(&path).unwrap_err().to_string().contains("tokenizer.json"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(load_tokenizer(&path).unwrap_err().to_string().contains("tokenizer.json"));
    }

    /// GGUF metadata carrying `tok`'s vocabulary and merges, as llama.cpp's converter writes them.
    fn gguf_metadata_of(tok: &Tokenizer) -> Metadata {
        let json: serde_json::Value = serde_json::from_str(&tok.to_string(false).unwrap()).unwrap();
        let mut by_id: Vec<(String, u32)> = tok.get_vocab(true).into_iter().collect();
        by_id.sort_by_key(|(_, id)| *id);
        let tokens = by_id.iter().map(|(t, _)| MetaValue::Str(t.clone())).collect();
        let types = by_id.iter().map(|(t, _)| MetaValue::I32(if t == ENDOFTEXT { 3 } else { 1 })).collect();
        let merges = json["model"]["merges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| MetaValue::Str(format!("{} {}", m[0].as_str().unwrap(), m[1].as_str().unwrap())))
            .collect();
        let entries = BTreeMap::from([
            ("tokenizer.ggml.model".to_string(), MetaValue::Str("gpt2".into())),
            ("tokenizer.ggml.pre".to_string(), MetaValue::Str("smollm".into())),
            ("tokenizer.ggml.tokens".to_string(), MetaValue::Array(tokens)),
            ("tokenizer.ggml.token_type".to_string(), MetaValue::Array(types)),
            ("tokenizer.ggml.merges".to_string(), MetaValue::Array(merges)),
            ("tokenizer.ggml.eos_token_id".to_string(), MetaValue::U32(0)),
            ("tokenizer.ggml.add_bos_token".to_string(), MetaValue::Bool(false)),
        ]);
        Metadata::new("tiny.gguf", entries)
    }

    #[test]
    fn gguf_metadata_gives_the_same_tokenizer() {
        let trained = train_bpe(&corpus(), 400, &[]).unwrap();
        let meta = gguf_metadata_of(&trained);
        let built = tokenizer_from_gguf(&meta).unwrap();
        for text in ["The Hidden Garden (1987)", "Wild Empires<|endoftext|>", "  odd   spacing\n"] {
            let (a, b) = (trained.encode(text, false).unwrap(), built.encode(text, false).unwrap());
            assert_eq!(a.get_ids(), b.get_ids(), "{text}");
            assert_eq!(built.decode(b.get_ids(), false).unwrap(), text);
        }
        assert_eq!(SpecialIds::from_gguf(&meta).unwrap(), SpecialIds { bos: None, eos: 0, pad: 0, add_bos: false });

        let mut entries = meta.entries().clone();
        entries.insert("tokenizer.ggml.pre".into(), MetaValue::Str("qwen2".into()));
        let err = tokenizer_from_gguf(&Metadata::new("tiny.gguf", entries)).unwrap_err().to_string();
        assert!(err.contains("tiny.gguf") && err.contains("qwen2"), "{err}");
    }
}
