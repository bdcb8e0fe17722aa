//! The meeting point of weight loaders (GGUF, safetensors, PEFT) and the model: a map from
//! Hugging Face tensor names (`model.layers.0.self_attn.q_proj.weight`, ...) to dense f32 data.
//! Loaders translate their own naming and layout into this one, so the model has a single
//! `load` path.

use std::collections::BTreeMap;

/// A dense row-major f32 tensor, shape outermost first (HF / PyTorch order: a linear weight
/// is `[out_features, in_features]`).
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl RawTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// Tensors by Hugging Face name.
pub type WeightMap = BTreeMap<String, RawTensor>;
