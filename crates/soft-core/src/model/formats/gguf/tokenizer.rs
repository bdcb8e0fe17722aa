//! The tokenizer a GGUF carries in its metadata (`tokenizer.ggml.*`), as a `tokenizers`
//! tokenizer, and its special token ids.

use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::{AddedToken, Tokenizer};

use super::Metadata;
use crate::model::formats::tokenizer::{byte_level_tokenizer, SpecialIds};
use crate::{Error, Result};

/// From `tokenizer.ggml.{bos,eos,padding}_token_id` and `add_bos_token`; padding defaults
/// to EOS.
pub fn special_ids_from_gguf(meta: &Metadata) -> Result<SpecialIds> {
    let id = |key: &str| -> Result<Option<u32>> {
        meta.u64(key)?.map(|v| u32::try_from(v).map_err(|_| meta.invalid(key, "too large"))).transpose()
    };
    let eos_key = "tokenizer.ggml.eos_token_id";
    let eos = id(eos_key)?.ok_or_else(|| meta.missing(eos_key))?;
    Ok(SpecialIds {
        bos: id("tokenizer.ggml.bos_token_id")?,
        eos,
        pad: id("tokenizer.ggml.padding_token_id")?.unwrap_or(eos),
        add_bos: meta.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
    })
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
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| Error::tokenizer(format!("{}: metadata key `{merges_key}`", meta.path().display()), e))?;
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

#[cfg(test)]
mod tests {
    use super::super::MetaValue;
    use super::*;
    use crate::model::formats::tokenizer::tests::corpus;
    use crate::model::formats::tokenizer::{train_bpe, ENDOFTEXT};
    use std::collections::BTreeMap;

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
        assert_eq!(special_ids_from_gguf(&meta).unwrap(), SpecialIds { bos: None, eos: 0, pad: 0, add_bos: false });

        let mut entries = meta.entries().clone();
        entries.insert("tokenizer.ggml.pre".into(), MetaValue::Str("qwen2".into()));
        let err = tokenizer_from_gguf(&Metadata::new("tiny.gguf", entries)).unwrap_err().to_string();
        assert!(err.contains("tiny.gguf") && err.contains("qwen2"), "{err}");
    }
}
