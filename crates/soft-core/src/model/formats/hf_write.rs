//! Writing a model as a single-file Hugging Face checkpoint (`config.json` + `model.safetensors`),
//! the inverse of `hf.rs`: `soft-train export` uses it to hand the page a model in a format any
//! Llama loader reads, so a different model later needs no change to the page.

use burn::tensor::Tensor;

use super::tokenizer::SpecialIds;
use crate::model::config::LlamaConfig;
use crate::model::llama::Llama;
use crate::model::weights::{host_values, transpose, RawTensor, WeightMap};
use crate::{Error, Result};

impl Llama {
    /// The base weights by Hugging Face name, linear weights `[out, in]` as HF stores them.
    /// Refuses a model with adapters attached: merge them first, or save them apart.
    pub fn to_hf_weights(&self) -> Result<WeightMap> {
        if self.lora.is_some() {
            return Err(Error::ModelState(
                "the model has LoRA adapters: merge them before writing base weights".into(),
            ));
        }
        let mut map = WeightMap::new();
        let mut put = |name: String, t: Tensor<2>| -> Result<()> {
            let [rows, cols] = t.dims();
            map.insert(name, RawTensor::new(vec![rows, cols], host_values(t)?));
            Ok(())
        };
        put("model.embed_tokens.weight".into(), self.embed_weight())?;
        if let Some(head) = &self.lm_head {
            // Stored `[hidden, vocab]` here, `[vocab, hidden]` by HF.
            put("lm_head.weight".into(), head.val().transpose())?;
        }
        let d = self.config.hidden_size;
        let norm = |t: Tensor<1>| -> Result<RawTensor> { Ok(RawTensor::new(vec![d], host_values(t)?)) };
        map.insert("model.norm.weight".into(), norm(self.norm.gamma.val())?);
        for (i, block) in self.layers.iter().enumerate() {
            let layer = format!("model.layers.{i}");
            map.insert(format!("{layer}.input_layernorm.weight"), norm(block.input_layernorm.gamma.val())?);
            map.insert(
                format!("{layer}.post_attention_layernorm.weight"),
                norm(block.post_attention_layernorm.gamma.val())?,
            );
        }
        for (path, lin) in self.projections() {
            let (d_in, d_out) = lin.dims();
            let weight = host_values(lin.base_weight())?;
            map.insert(format!("{path}.weight"), RawTensor::new(vec![d_out, d_in], transpose(&weight, d_in, d_out)));
            if let Some(bias) = &lin.bias {
                map.insert(format!("{path}.bias"), RawTensor::new(vec![d_out], host_values(bias.val())?));
            }
        }
        Ok(map)
    }
}

/// A Llama `config.json` for `config` with `special`'s BOS and EOS, as `hf::read_config` and
/// `hf::read_special_ids` read it back (and transformers' `LlamaConfig`).
pub fn hf_config_json(config: &LlamaConfig, special: &SpecialIds, dtype: &str) -> serde_json::Value {
    let mut json = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads,
        "head_dim": config.head_dim,
        "rms_norm_eps": config.rms_eps,
        "vocab_size": config.vocab_size,
        "tie_word_embeddings": config.tie_embeddings,
        "max_position_embeddings": config.max_seq_len,
        "attention_bias": config.attention_bias,
        "hidden_act": "silu",
        "bos_token_id": special.bos,
        "eos_token_id": special.eos,
        "pad_token_id": special.pad,
        "torch_dtype": dtype,
    });
    // Theta and any scaling, in the spelling hf.rs and both transformers 4 and 5 read: a model
    // written without its scaling would load back silently wrong.
    if let Some(fields) = json.as_object_mut() {
        fields.extend(crate::model::formats::hf::rope_config_fields(&config.rope()));
    }
    json
}

/// `tokenizer_config.json`'s one field the loaders read: whether prompts start with BOS.
pub fn tokenizer_config_json(special: &SpecialIds) -> serde_json::Value {
    serde_json::json!({ "add_bos_token": special.add_bos })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::formats::hf::{config_from_bytes, safetensors_from_bytes, special_ids_from_bytes};
    use crate::model::llama::tests::{int_tensor, max_abs_diff, small_model};
    use crate::model::weights::{safetensors_bytes, FloatEncoding};

    /// Written and read back, the model computes the same logits: exactly in f32, within f16's
    /// rounding in f16.
    #[test]
    fn a_written_checkpoint_reads_back_as_the_same_model() {
        let model = small_model(61);
        let special = SpecialIds { bos: None, eos: 3, pad: 3, add_bos: false };
        let path = Path::new("model.safetensors");
        let config_json = serde_json::to_vec(&hf_config_json(model.config(), &special, "float32")).unwrap();
        let config = config_from_bytes(&config_json, Path::new("config.json")).unwrap();
        assert_eq!(&config, model.config());
        assert_eq!(special_ids_from_bytes(&config_json, None, Path::new("config.json")).unwrap(), special);

        let device = model.device();
        let tokens = int_tensor(vec![5, 6, 7, 8], [1, 4], &device);
        let logits = |m: &Llama| m.forward(tokens.clone(), burn::tensor::Tensor::ones([1, 4], &device), None);
        let expected = logits(&model);
        for (encoding, tolerance) in [(FloatEncoding::F32, 0.0), (FloatEncoding::F16, 0.05)] {
            let bytes = safetensors_bytes(&model.to_hf_weights().unwrap(), encoding, path).unwrap();
            let weights = safetensors_from_bytes(&bytes, path).unwrap();
            let back = Llama::from_weights(&config, &weights, &device).unwrap();
            let diff = max_abs_diff(logits(&back), expected.clone());
            assert!(diff <= tolerance, "{encoding:?}: max |logit difference| {diff}");
        }
    }
}
