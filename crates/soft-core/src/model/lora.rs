//! LoRA (low-rank adaptation) as a layer: a frozen linear projection plus an optional trainable
//! update `scale · B·A`, with A `[r, in]` and B `[out, r]` (`scale` = alpha / r). Which
//! projections of a model get one, and the PEFT file format, are in `peft.rs`.

use crate::kernels::blocks::BlockMatrix;
use crate::kernels::int8_dot::Int8Panels;
use crate::kernels::{bf16_dot_linear, block_linear, blocks, linear, FEW_ROWS};
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::dropout::dropout;

/// A projection: frozen weight and bias, and optionally a LoRA adapter.
#[derive(Module, Debug)]
pub struct LoraLinear {
    /// `[in, out]` (burn's `linear` layout; Hugging Face stores `[out, in]`); an empty `[0, 0]`
    /// tensor when the weight is kept in `blocks`.
    pub(crate) weight: Param<Tensor<2>>,
    /// The weight as the quantized blocks its file stores, `[out, in]`, read as they lie on the
    /// CPU backend (`kernels::block_linear`); `None` for a weight held in `weight`.
    #[module(skip)]
    pub(crate) blocks: Option<BlockMatrix>,
    pub(crate) bias: Option<Param<Tensor<1>>>,
    pub(crate) adapter: Option<LoraAdapter>,
    /// Whether a training step multiplies by the (bf16) weight in bf16 dot products
    /// (`Llama::with_bf16_products`).
    #[module(skip)]
    pub(crate) bf16_products: bool,
    /// `blocks` repacked for a decoding step's products in 8-bit integer dot products
    /// (`Llama::with_int8_products`).
    #[module(skip)]
    pub(crate) int8: Option<Int8Panels>,
}

/// The trainable low-rank update of one projection.
#[derive(Module, Debug)]
pub struct LoraAdapter {
    /// Aᵀ, `[in, r]` (PEFT's `lora_A.weight` is A, `[r, in]`).
    pub(crate) a: Param<Tensor<2>>,
    /// Bᵀ, `[r, out]` (PEFT's `lora_B.weight` is B, `[out, r]`).
    pub(crate) b: Param<Tensor<2>>,
    /// `alpha / r`.
    pub(crate) scale: f64,
    /// On the branch's input; active only on an autodiff device (training).
    dropout: Dropout,
}

/// A parameter that never trains: base-model weights are frozen, only LoRA adapters learn.
pub fn frozen<const D: usize>(t: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(t).set_require_grad(false)
}

impl LoraLinear {
    /// A projection with frozen `weight` `[in, out]` and `bias` `[out]`, no adapter.
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Self { weight: frozen(weight), bias: bias.map(frozen), blocks: None, adapter: None, bf16_products: false, int8: None }
    }

    /// A projection whose frozen weight is kept in quantized `blocks` `[out, in]`, with `bias`
    /// `[out]`, no adapter; `device` is where the bias and any adapter live.
    pub fn from_blocks(blocks: BlockMatrix, bias: Option<Tensor<1>>, device: &Device) -> Self {
        let weight = frozen(Tensor::zeros([0, 0], device));
        Self { weight, bias: bias.map(frozen), blocks: Some(blocks), adapter: None, bf16_products: false, int8: None }
    }

    /// `(in, out)`.
    pub fn dims(&self) -> (usize, usize) {
        if let Some(blocks) = &self.blocks {
            let (d_out, d_in) = blocks.dims();
            return (d_in, d_out);
        }
        let [d_in, d_out] = self.weight.shape().dims();
        (d_in, d_out)
    }

    /// `x` `[..., in]` to `[..., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let bias = self.bias.as_ref().map(Param::val);
        let base = |x| match &self.blocks {
            Some(weight) => block_linear(x, weight, bias, blocks::FEW_ROWS),
            None if self.bf16_products => bf16_dot_linear(x, self.weight.val(), bias, FEW_ROWS),
            None => linear(x, self.weight.val(), bias),
        };
        match &self.adapter {
            None => base(x),
            Some(adapter) => base(x.clone()) + adapter.forward(x),
        }
    }

    /// The frozen weight `[in, out]` in f32 (widened from half precision, or dequantized from
    /// blocks).
    pub fn base_weight(&self) -> Tensor<2> {
        match &self.blocks {
            Some(blocks) => blocks.to_tensor(&self.weight.val().device()).transpose(),
            None => self.weight.val().cast(FloatDType::F32),
        }
    }

    /// The effective weight `[in, out]` in f32: base (widened when stored in half precision,
    /// dequantized when kept in blocks) + (alpha/r)·(B·A)ᵀ.
    pub fn merged_weight(&self) -> Tensor<2> {
        let weight = self.base_weight();
        match &self.adapter {
            None => weight,
            Some(adapter) => weight + adapter.delta(),
        }
    }

    /// Folds the adapter, if any, into the frozen weight (then in f32); a plain projection
    /// remains.
    pub fn merge(&mut self) {
        if self.adapter.is_some() {
            self.weight = frozen(self.merged_weight().detach());
            self.blocks = None;
            self.adapter = None;
        }
    }
}

impl LoraAdapter {
    /// An adapter from the trainable factors Aᵀ `[in, r]` and Bᵀ `[r, out]`, its output scaled
    /// by `scale` (alpha / r), with dropout of probability `dropout` on its input.
    pub fn new(a: Param<Tensor<2>>, b: Param<Tensor<2>>, scale: f64, dropout: f64) -> Self {
        Self { a, b, scale, dropout: DropoutConfig::new(dropout).init() }
    }

    /// The factors Aᵀ `[in, r]` and Bᵀ `[r, out]` PEFT starts from: A Kaiming-uniform
    /// (`a = √5`, which makes the bound 1/√in) and B zero, so the adapted layer starts out equal
    /// to the base layer. A is drawn from `seed`, not from the backend's process-wide
    /// generator, so the same seed gives the same adapter whatever else runs in the process.
    pub fn initial_factors(d_in: usize, d_out: usize, r: usize, seed: u64, device: &Device) -> (Tensor<2>, Tensor<2>) {
        let bound = 1.0 / (d_in as f32).sqrt();
        let mut rng = StdRng::seed_from_u64(seed);
        let values: Vec<f32> = (0..d_in * r).map(|_| rng.random_range(-bound..bound)).collect();
        let a = Tensor::from_data(TensorData::new(values, [d_in, r]), device);
        (a, Tensor::zeros([r, d_out], device))
    }

    /// `x` `[..., in]` to the update `[..., out]`.
    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        // Scale the rank-r intermediate: the smallest tensor on the branch.
        let low = linear(dropout(&self.dropout, x), self.a.val(), None).mul_scalar(self.scale);
        linear(low, self.b.val(), None)
    }

    /// (alpha/r)·Aᵀ·Bᵀ, `[in, out]`.
    fn delta(&self) -> Tensor<2> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::tests::max_abs_diff;

    #[test]
    fn merged_weight_is_base_plus_scaled_b_times_a() {
        let device = Device::flex();
        // Hugging Face [out, in] -> our [in, out].
        let hf = |rows: [[f32; 2]; 3]| Tensor::<2>::from_floats(rows, &device).transpose();
        let w = hf([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]); // [out 3, in 2]
        let a = Tensor::<2>::from_floats([[0.5, -1.0], [2.0, 0.25]], &device).transpose(); // A: [r 2, in 2]
        let b = hf([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]]); // B: [out 3, r 2]
        let mut lin = LoraLinear::new(w, None);
        lin.adapter = Some(LoraAdapter::new(Param::from_tensor(a), Param::from_tensor(b), 3.0, 0.0));

        // W + 3·B·A, by hand.
        let expected = Tensor::<2>::from_floats([[2.5, -1.0], [15.0, 5.5], [9.5, 9.75]], &device);
        assert!(max_abs_diff(lin.merged_weight().transpose(), expected.clone()) < 1e-6);

        let x = Tensor::<2>::from_floats([[1.0, -2.0], [0.5, 3.0]], &device);
        let unmerged = lin.forward(x.clone());
        lin.merge();
        assert!(lin.adapter.is_none());
        assert!(max_abs_diff(lin.weight.val().transpose(), expected) < 1e-6);
        assert!(max_abs_diff(lin.forward(x), unmerged) < 1e-5);
    }
}
