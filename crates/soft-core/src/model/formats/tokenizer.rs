//! Byte-level BPE tokenizers in SmolLM2's style (digits split one by one, then GPT-2 byte-level
//! pre-tokenization): trained on item titles for a tiny model, or read from and written to
//! `tokenizer.json` (a GGUF's is built in `gguf/tokenizer.rs`).

use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

use crate::data::prompt::{prompt_pieces, PromptPiece};
use crate::model::projector::item_slot;
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
    /// For tokenizers trained here: `<|endoftext|>` ends and pads, nothing begins.
    pub fn endoftext(tokenizer: &Tokenizer) -> Result<Self> {
        let eos = tokenizer
            .token_to_id(ENDOFTEXT)
            .ok_or_else(|| Error::Input(format!("tokenizer has no `{ENDOFTEXT}` token")))?;
        Ok(Self { bos: None, eos, pad: eos, add_bos: false })
    }
}

/// SmolLM2's pre-tokenizer (llama.cpp's `smollm`): every digit its own piece, then GPT-2's
/// regex and byte-to-unicode mapping, with no space added in front of the text.
fn smollm_pre_tokenizer() -> Sequence {
    Sequence::new(vec![Digits::new(true).into(), ByteLevel::new(false, true, true).into()])
}

/// A tokenizer with SmolLM2's pre-tokenizer and a byte-level decoder around `model`.
pub(crate) fn byte_level_tokenizer(model: BPE) -> Tokenizer {
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(smollm_pre_tokenizer()));
    tokenizer.with_decoder(Some(ByteLevel::default()));
    tokenizer
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
        return Err(Error::config(
            "BPE tokenizer",
            format!("vocabulary size {vocab_size} is below the {floor} byte symbols and special tokens"),
        ));
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
        .map_err(|e| Error::tokenizer("training the tokenizer", e))?;
    Ok(tokenizer)
}

pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    tokenizer_from_bytes(&bytes, path)
}

/// A `tokenizer.json` already in memory (the page fetches it); `path` names it in errors.
pub fn tokenizer_from_bytes(bytes: &[u8], path: &Path) -> Result<Tokenizer> {
    // The tokenizers crate panics on some malformed files (found by the corruption suite:
    // decoders' deserializer unwraps), so the JSON is checked first and a panic still left is
    // turned into an error naming the file.
    let text = crate::data::text::utf8_text(path, bytes)?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| Error::parse(path, e.line(), format!("not a tokenizer.json: {e}")))?;
    match std::panic::catch_unwind(|| text.parse::<Tokenizer>()) {
        Ok(parsed) => parsed.map_err(|e| Error::tokenizer(path.display().to_string(), e)),
        Err(_) => Err(Error::format(path, "not a tokenizer the tokenizers library can read (it panicked on it)")),
    }
}

pub fn save_tokenizer(tokenizer: &Tokenizer, path: &Path) -> Result<()> {
    let json = tokenizer.to_string(false).map_err(|e| Error::tokenizer(path.display().to_string(), e))?;
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
    tokenizer.encode(text, false).map(|e| e.get_ids().to_vec()).map_err(|e| Error::tokenizer("encoding", e))
}

/// Prompt token ids, with BOS first when the model's tokenizer config asks for it. Each item
/// marker of a LLaRA prompt (`data::prompt::item_marker`) becomes that item's slot
/// (`model::projector::item_slot`); the text between markers is encoded piece by piece.
pub fn encode_prompt(tokenizer: &Tokenizer, special: &SpecialIds, text: &str) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for piece in prompt_pieces(text)? {
        match piece {
            PromptPiece::Text(text) => ids.extend(encode(tokenizer, text)?),
            PromptPiece::Item(id) => ids.push(item_slot(id)),
        }
    }
    if special.add_bos {
        ids.insert(0, special.bos.unwrap_or(special.eos));
    }
    Ok(ids)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A few hundred title-like sentences.
    pub(crate) fn corpus() -> Vec<String> {
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
}
