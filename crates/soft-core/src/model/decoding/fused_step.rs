//! One decoding step on the CPU backend as a single pass over the model's buffers: for each row
//! its new token's embedding, then per layer RMSNorm, the projections (with their biases and
//! LoRA adapters) as few-row products over the weights where they lie (f32, f16 or bf16), the
//! rotary embedding, the key/value append into the cache's own buffers, attention over the
//! shared prefix and the row's own keys, and the SwiGLU MLP; then the final norm and the LM
//! head. The same math as `Llama::forward` with a cache; what it saves is burn's per-op work:
//! a step of SmolLM2 is ~1,000 small ops, each allocating its output and dispatching, which cost
//! about as much as reading the weights (BENCHMARKS.md).
//!
//! Used for every model on the CPU backend off autodiff (decoding, validation, the page's
//! CPU path); anywhere else, or for a tensor it cannot read where it lies, `step` returns
//! `None` before touching the cache and the caller takes burn's path.

use burn::tensor::{Int, Tensor};

use crate::kernels::blocks::BlockMatrix;
use crate::kernels::host::{self, Matrix};
use crate::kernels::int8_dot::Int8Panels;
use crate::kernels::step::dispatch as kernels;
use crate::kernels::{FEW_ROWS, FEW_ROWS_OUTPUT_MAJOR};
use crate::model::kv_cache::{HostKv, KvCache};
use crate::model::llama::Llama;
use crate::model::lora::LoraLinear;
use crate::model::rope::inverse_frequencies;
use crate::model::weights::host_values;

/// Rows up to which a step's projections take the few-row product. Natively burn-flex's `gemm`
/// wins past 8 (`benches/few_rows.rs`); in wasm at any row count, as every f32 product of the
/// CPU backend there (`kernels::product`): its SIMD128 tiles beat `gemm`, which is scalar in
/// wasm (BENCHMARKS.md).
const STEP_FEW_ROWS: usize = if cfg!(target_arch = "wasm32") { usize::MAX } else { FEW_ROWS };

/// A weight read where it lies, and as the tensor it is: products of more rows than the
/// few-row product pays for (a step of 8 prompts x 4 beams) go through burn's `gemm`.
#[allow(clippy::large_enum_variant)] // one per weight, built once per step
enum Weight {
    Dense {
        matrix: Matrix,
        tensor: Tensor<2>,
        /// Rows up to which the few-row product is taken.
        few_rows: usize,
    },
    /// Quantized blocks `[out, in]`, read as they lie up to `kernels::blocks::FEW_ROWS` rows,
    /// there in integer dot products where they are also repacked for them.
    Blocks(BlockMatrix, Option<Int8Panels>),
}

impl Weight {
    fn new(tensor: Tensor<2>, few_rows: usize) -> Option<Self> {
        Some(Self::Dense { matrix: Matrix::new(&tensor)?, tensor, few_rows })
    }

    /// The frozen weight of `lin`, from its blocks or its tensor (the few-row product up to
    /// `few_rows` rows).
    fn of(lin: &LoraLinear, few_rows: usize) -> Option<Self> {
        match &lin.blocks {
            Some(blocks) => Some(Self::Blocks(blocks.clone(), lin.int8.clone())),
            None => Self::new(lin.weight.val(), few_rows),
        }
    }

    /// `x` `[m, in]` times the weight: `[m, out]`.
    fn product(&self, x: &[f32], m: usize) -> Vec<f32> {
        let many = |d_in: usize, d_out: usize, product: &dyn Fn(Tensor<2>) -> Tensor<2>| {
            let out = product(host::from_values(x.to_vec(), [m, d_in]));
            host::values(&out.reshape([m * d_out])).expect("a product on the CPU backend")
        };
        match self {
            Self::Dense { matrix, few_rows, .. } if m <= *few_rows => matrix.product(x, m),
            Self::Blocks(_, Some(panels)) if m <= crate::kernels::blocks::FEW_ROWS => panels.product(x, m),
            Self::Blocks(blocks, _) if m <= crate::kernels::blocks::FEW_ROWS => blocks.product(x, m),
            Self::Dense { matrix, tensor, .. } => {
                many(matrix.d_in, matrix.d_out, &|x| crate::kernels::product(x, tensor.clone(), None, 0))
            }
            Self::Blocks(blocks, _) => {
                many(blocks.dims().1, blocks.dims().0, &|x| crate::kernels::block_linear(x, blocks, None, 0))
            }
        }
    }
}

/// The token embedding read where it lies.
enum Embedding {
    Dense(Matrix),
    Blocks(BlockMatrix),
}

impl Embedding {
    fn row(&self, i: usize, out: &mut [f32]) {
        match self {
            Self::Dense(matrix) => matrix.row(i, out),
            Self::Blocks(blocks) => blocks.row(i, out),
        }
    }
}

/// A projection read where it lies: the frozen weight, its bias, and the adapter's factors
/// `(Aᵀ, Bᵀ, scale)`.
struct Projection {
    weight: Weight,
    bias: Option<Vec<f32>>,
    adapter: Option<(Matrix, Matrix, f32)>,
}

impl Projection {
    fn new(lin: &LoraLinear) -> Option<Self> {
        let adapter = match &lin.adapter {
            Some(a) => Some((Matrix::new(&a.a.val())?, Matrix::new(&a.b.val())?, a.scale as f32)),
            None => None,
        };
        let bias = match &lin.bias {
            Some(b) => Some(host::values(&b.val())?),
            None => None,
        };
        Some(Self { weight: Weight::of(lin, STEP_FEW_ROWS)?, bias, adapter })
    }

    /// `x` `[m, in]` to `[m, out]`: `x·W + bias + scale·(x·Aᵀ)·Bᵀ`.
    fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        let mut out = self.weight.product(x, m);
        if let Some(bias) = &self.bias {
            out.chunks_exact_mut(bias.len()).for_each(|row| row.iter_mut().zip(bias).for_each(|(o, b)| *o += b));
        }
        if let Some((a, b, scale)) = &self.adapter {
            let mut low = a.product(x, m);
            low.iter_mut().for_each(|v| *v *= scale);
            out.iter_mut().zip(b.product(&low, m)).for_each(|(o, u)| *o += u);
        }
        out
    }
}

/// One block read where it lies: its two norms' gains and its projections.
struct Block {
    input_norm: Vec<f32>,
    post_norm: Vec<f32>,
    /// q, k, v, o, gate, up, down.
    projections: Vec<Projection>,
}

/// The model read where it lies.
struct Weights {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Vec<f32>,
    head: Weight,
}

impl Weights {
    fn new(model: &Llama) -> Option<Self> {
        let blocks = model
            .layers
            .iter()
            .map(|block| {
                Some(Block {
                    input_norm: host::values(&block.input_layernorm.gamma.val())?,
                    post_norm: host::values(&block.post_attention_layernorm.gamma.val())?,
                    projections: block.projections().map(|(_, lin)| Projection::new(lin)).collect::<Option<_>>()?,
                })
            })
            .collect::<Option<_>>()?;
        let embed = model.embed_tokens.val();
        let head = match (&model.lm_head, &model.embed_blocks) {
            (Some(w), _) => Weight::new(w.val(), FEW_ROWS)?,
            (None, Some(blocks)) => Weight::Blocks(blocks.clone(), model.embed_int8.clone()),
            (None, None) => Weight::new(embed.clone().transpose(), FEW_ROWS_OUTPUT_MAJOR)?,
        };
        let embed = match &model.embed_blocks {
            Some(blocks) => Embedding::Blocks(blocks.clone()),
            None => Embedding::Dense(Matrix::new(&embed)?),
        };
        Some(Self { embed, blocks, norm: host::values(&model.norm.gamma.val())?, head })
    }
}

/// Feeds each cache row its next token `tokens[r]` and returns the logits `[rows, vocab]` of
/// the new position, appending its keys and values to `cache` — what `Llama::forward` with a
/// cache does for one token per row. `None`, with the cache untouched, where the step cannot
/// run (not the CPU backend off autodiff, a weight in a layout it cannot read).
pub(crate) fn step(model: &Llama, cache: &mut KvCache, tokens: &[u32]) -> Option<Tensor<2>> {
    let weights = Weights::new(model)?;
    if !cache.is_on_host() {
        return None;
    }
    let c = model.config();
    let (n, hidden, d) = (tokens.len(), c.hidden_size, c.head_dim);
    let (h, hkv) = (c.n_heads, c.n_kv_heads);
    let device = model.device();

    // Positions and key biases as the burn path records them.
    let mask = Tensor::<2, Int>::ones([n, 1], &device);
    let (_, start, key_bias) = cache.advance(mask, Tensor::zeros([n, 1], &device));
    let positions: Vec<i64> = host_values(start).ok()?;
    let key_bias: Vec<f32> = host_values(key_bias).ok()?;
    let keys_seen = key_bias.len() / n;
    let group = cache.prefix_group().unwrap_or(1);

    // Per row, the cosine and sine of its position's angles.
    let inv_freq = inverse_frequencies(d, &c.rope());
    let (cos, sin): (Vec<f32>, Vec<f32>) = positions
        .iter()
        .flat_map(|&p| inv_freq.iter().map(move |&f| (p.max(0) as f32) * f as f32))
        .map(|angle| (angle.cos(), angle.sin()))
        .unzip();
    let half = d / 2;

    let mut x = vec![0f32; n * hidden];
    for (row, &token) in x.chunks_exact_mut(hidden).zip(tokens) {
        weights.embed.row(token as usize, row);
    }
    let eps = c.rms_eps as f32;
    let scale = 1.0 / (d as f32).sqrt();
    let mut normed = vec![0f32; n * hidden];
    for (i, block) in weights.blocks.iter().enumerate() {
        let [q, k, v, o, gate, up, down] = &block.projections[..] else { unreachable!("seven projections") };
        kernels::rms_norm(&x, &block.input_norm, eps, &mut normed);
        let (mut queries, mut keys, values) = (q.forward(&normed, n), k.forward(&normed, n), v.forward(&normed, n));
        for r in 0..n {
            let (cos, sin) = (&cos[r * half..(r + 1) * half], &sin[r * half..(r + 1) * half]);
            kernels::rotate(&mut queries[r * h * d..(r + 1) * h * d], cos, sin);
            kernels::rotate(&mut keys[r * hkv * d..(r + 1) * hkv * d], cos, sin);
        }
        let kv = (cache.layer_mut(i).append_on_host(&keys, &values, [n, hkv, d], &device))
            .expect("the cache's buffers were checked to be on the CPU backend");
        let attended = attention(&queries, &kv, &key_bias, keys_seen, group, [n, h, hkv, d], scale);
        add(&mut x, &o.forward(&attended, n));

        kernels::rms_norm(&x, &block.post_norm, eps, &mut normed);
        let mut gated = gate.forward(&normed, n);
        kernels::swiglu(&mut gated, &up.forward(&normed, n));
        add(&mut x, &down.forward(&gated, n));
    }
    kernels::rms_norm(&x, &weights.norm, eps, &mut normed);
    Some(host::from_values(weights.head.product(&normed, n), [n, c.vocab_size]))
}

/// Attention of every row's query heads `[n, h·d]` over the shared prefix (prefix row `r /
/// group`) and the row's own keys, under `key_bias` `[n, keys_seen]`: `[n, h·d]`.
fn attention(
    queries: &[f32],
    kv: &HostKv,
    key_bias: &[f32],
    keys_seen: usize,
    group: usize,
    [n, h, hkv, d]: [usize; 4],
    scale: f32,
) -> Vec<f32> {
    let g = h / hkv;
    let prefix_len = keys_seen - kv.len;
    let mut out = vec![0f32; n * h * d];
    // One task per (row, key/value head): its query group's `g·d` outputs.
    let task = |index: usize, out: &mut [f32]| {
        let (r, j) = (index / hkv, index % hkv);
        let bias = &key_bias[r * keys_seen..(r + 1) * keys_seen];
        let prefix = match &kv.prefix {
            Some((kp, vp)) => {
                (kp.block(r / group, j, prefix_len), vp.block(r / group, j, prefix_len), &bias[..prefix_len])
            }
            None => (&[][..], &[][..], &[][..]),
        };
        let own = (kv.keys.block(r, j, kv.len), kv.values.block(r, j, kv.len), &bias[prefix_len..]);
        let mut scores = vec![0f32; g * keys_seen];
        let q = &queries[(r * h + j * g) * d..(r * h + (j + 1) * g) * d];
        kernels::attend(q, [prefix, own], d, scale, &mut scores, out);
    };
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(g * d).enumerate().for_each(|(i, o)| task(i, o));
    }
    #[cfg(target_arch = "wasm32")]
    out.chunks_mut(g * d).enumerate().for_each(|(i, o)| task(i, o));
    out
}

fn add(x: &mut [f32], y: &[f32]) {
    x.iter_mut().zip(y).for_each(|(x, y)| *x += y);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{LlamaConfig, LoraConfig, RopeScaling};
    use crate::model::llama::tests::{int_tensor, max_abs_diff, ones_mask, random_weights, small_config};
    use crate::model::weights::{BaseWeights, BlockMap, FloatEncoding, RawTensor};
    use burn::module::Param;
    use burn::tensor::{Device, Distribution};

    /// `config`'s model with LoRA on every projection, its B factors random (a fresh adapter's
    /// are zero, which would hide the adapter's path).
    fn adapted(config: &LlamaConfig, seed: u64) -> Llama {
        adapt(Llama::from_weights(config, &random_weights(config, seed), &Device::flex()).unwrap(), seed)
    }

    fn adapt(model: Llama, seed: u64) -> Llama {
        let device = Device::flex();
        let targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
        let lora = LoraConfig {
            r: 4,
            alpha: 8.0,
            dropout: 0.0,
            target_modules: targets.iter().map(|t| t.to_string()).collect(),
        };
        let mut model = model.with_lora(&lora, seed).unwrap();
        for (_, lin) in model.projections_mut() {
            let adapter = lin.adapter.as_mut().unwrap();
            let dims = adapter.b.val().dims();
            adapter.b = Param::from_tensor(Tensor::random(dims, Distribution::Normal(0.0, 0.3), &device));
        }
        model
    }

    /// Left-padded prompts, then the reorders beam search makes (expansion to beams, beams
    /// changing parent, a prompt finishing, an order no run of beams explains, more rows than
    /// the few-row product takes), each followed by
    /// one step: the fused step's logits equal `Llama::forward`'s with a cache, with and without
    /// a shared prefix, and the two caches stay interchangeable (the fused one is read by the
    /// other path's next step).
    fn check(model: &Llama, tolerance: f32) {
        let device = Device::flex();
        let prompts = int_tensor(vec![0, 0, 5, 6, 7, 11, 12, 13, 14, 15, 0, 21, 22, 23, 24], [3, 5], &device);
        let mask = int_tensor(vec![0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1], [3, 5], &device);
        // Ten rows, past the few-row product's 8: burn's product for those steps' projections.
        let steps: [&[usize]; 7] = [
            &[0, 0, 1, 1, 2, 2],
            &[1, 0, 4, 5],
            &[0, 0, 0, 1, 1, 1, 2, 2, 3, 3],
            &[2, 3, 2, 1, 9],
            &[3, 2, 1],
            &[2, 2, 0],
            &[0, 1, 2],
        ];
        for shared in [false, true] {
            // Capacity 2 after the prompt: the own buffers grow during the steps.
            let (mut burn_cache, mut fused_cache) = (model.new_cache(6), model.new_cache(6));
            for cache in [&mut burn_cache, &mut fused_cache] {
                model.forward(prompts.clone(), mask.clone(), Some(cache));
                if shared {
                    cache.share_prefix(2);
                }
            }
            for (i, rows) in steps.iter().enumerate() {
                let tokens: Vec<u32> = (0..rows.len() as u32).map(|r| 30 + r + i as u32).collect();
                let n = rows.len();
                burn_cache.reorder(rows);
                fused_cache.reorder(rows);
                let ids = int_tensor(tokens.iter().map(|&t| t as i64).collect(), [n, 1], &device);
                let expected = model.forward(ids.clone(), ones_mask(n, 1, &device), Some(&mut burn_cache));
                let expected = expected.reshape([n, model.config().vocab_size]);
                let got = step(model, &mut fused_cache, &tokens).expect("the CPU backend");
                let scale = expected.clone().abs().max().into_scalar::<f32>();
                let diff = max_abs_diff(got, expected);
                assert!(diff < tolerance * scale, "shared prefix {shared}, step {i}: {diff} (logits up to {scale})");
            }
            // The burn path reads what the fused steps wrote.
            let ids = int_tensor(vec![40, 41, 42], [3, 1], &device);
            let a = model.forward(ids.clone(), ones_mask(3, 1, &device), Some(&mut burn_cache));
            let b = model.forward(ids, ones_mask(3, 1, &device), Some(&mut fused_cache));
            let scale = a.clone().abs().max().into_scalar::<f32>();
            let diff = max_abs_diff(a, b);
            assert!(diff < 1e-4f32.max(1e-6 * scale), "{diff} (logits up to {scale})");
        }
    }

    #[test]
    fn fused_steps_equal_the_models_forward_with_lora_grouped_query_and_a_shared_prefix() {
        check(&adapted(&small_config(), 3), 1e-5);
    }

    #[test]
    fn fused_steps_equal_the_models_forward_with_bias_an_untied_head_and_llama3_rope() {
        let config = LlamaConfig {
            tie_embeddings: false,
            attention_bias: true,
            rope_theta: 500_000.0,
            rope_scaling: RopeScaling::llama32(),
            ..small_config()
        };
        check(&adapted(&config, 5), 1e-5);
    }

    #[test]
    fn fused_steps_equal_the_models_forward_over_half_precision_weights() {
        for encoding in [FloatEncoding::F16, FloatEncoding::BF16] {
            check(&adapted(&small_config(), 7).with_base_dtype(encoding).unwrap(), 1e-5);
        }
    }

    /// `config`'s model with its projections in random Q4_1 / Q4_0 / Q8_0 blocks and its token
    /// embedding in Q8_0 ([`Llama::from_parts`]), and the same model from those blocks
    /// dequantized to f32, on `device`.
    pub(crate) fn quantized_pair(config: &LlamaConfig, seed: u64, device: &Device) -> (Llama, Llama) {
        use crate::kernels::blocks::{random_blocks_scaled, BlockType, BLOCK};
        let mut weights = random_weights(config, seed);
        let mut blocks = BlockMap::new();
        let mut names: Vec<(String, usize, usize)> = config
            .projections()
            .iter()
            .flat_map(|p| (0..config.n_layers).map(move |l| (format!("model.layers.{l}.{}.weight", p.path), p.d_out, p.d_in)))
            .collect();
        names.push(("model.embed_tokens.weight".into(), config.vocab_size, config.hidden_size));
        for (i, (name, d_out, d_in)) in names.into_iter().enumerate() {
            let ty = [BlockType::Q4_1, BlockType::Q4_0, BlockType::Q8_0][if name.contains("embed") { 2 } else { i % 3 }];
            // Values up to ~0.15, as a trained model's: random blocks at full scale reach ~15
            // and make logits in the thousands, where f32 sums in another order differ by 1e-5.
            let bytes = random_blocks_scaled(ty, d_out * d_in / BLOCK, seed + i as u64, 0.01);
            let matrix = BlockMatrix::new(ty, d_out, d_in, bytes).unwrap();
            weights.insert(name.clone(), RawTensor::new(vec![d_out, d_in], matrix.dequantize()));
            blocks.insert(name.clone(), matrix);
        }
        let dense = Llama::from_weights(config, &weights, device).unwrap();
        for name in blocks.keys() {
            weights.remove(name);
        }
        let quantized = Llama::from_parts(config, &weights, &blocks, device, FloatEncoding::F32).unwrap();
        (quantized, dense)
    }

    #[test]
    fn fused_steps_over_quantized_blocks_equal_the_models_forward_and_the_dequantized_model() {
        let config = small_config();
        let device = Device::flex();
        let (quantized, dense) = quantized_pair(&config, 11, &device);
        assert!(quantized.has_blocks() && !dense.has_blocks());
        // A prompt (its products over f32 copies of the blocks) and single steps (the blocks as
        // they lie): the same logits as the f32 model's.
        let tokens = int_tensor(vec![3, 5, 7, 11, 13, 17, 19, 23, 29, 31], [1, 10], &device);
        let (mut qc, mut dc) = (quantized.new_cache(12), dense.new_cache(12));
        let a = quantized.forward(tokens.clone(), ones_mask(1, 10, &device), Some(&mut qc));
        let b = dense.forward(tokens, ones_mask(1, 10, &device), Some(&mut dc));
        let scale = b.clone().abs().max().into_scalar::<f32>();
        assert!(max_abs_diff(a, b) < 1e-5 * scale);
        for t in [37u32, 41, 43] {
            let a = step(&quantized, &mut qc, &[t]).unwrap();
            let b = step(&dense, &mut dc, &[t]).unwrap();
            assert!(max_abs_diff(a, b) < 1e-5 * scale, "token {t}");
        }
        // With adapters, through beam search's reorders, against burn's path.
        check(&adapt(quantized, 11), 1e-5);
    }

    /// `int8-dot`: a step's products over blocks in integer dot products, its inputs rounded to
    /// 8 bits per block, so its logits stay near, not equal to, those of the f32 products over
    /// the same blocks; a model without blocks is refused.
    #[test]
    fn fused_steps_in_int8_dot_products_stay_near_the_f32_products_over_the_same_blocks() {
        let device = Device::flex();
        let (quantized, dense) = quantized_pair(&small_config(), 13, &device);
        let Err(err) = dense.with_int8_products() else { panic!("int8-dot over f32 weights") };
        if !crate::kernels::int8_dot::available() {
            eprintln!("skipped: the CPU has no AVX512_VNNI ({err})");
            return;
        }
        assert!(err.to_string().contains("int8-dot"), "{err}");
        let quantized = adapt(quantized, 13);
        let int8 = quantized.clone().with_int8_products().unwrap();
        assert_eq!(int8.base_weights(), BaseWeights::Int8Dot);
        assert_eq!(quantized.base_weights(), BaseWeights::Stored);
        let tokens = int_tensor(vec![3, 5, 7, 11, 13, 17, 19, 23], [2, 4], &device);
        let (mut ic, mut qc) = (int8.new_cache(8), quantized.new_cache(8));
        int8.forward(tokens.clone(), ones_mask(2, 4, &device), Some(&mut ic));
        quantized.forward(tokens, ones_mask(2, 4, &device), Some(&mut qc));
        for t in [37u32, 41, 43] {
            let a = step(&int8, &mut ic, &[t, t + 1]).unwrap();
            let b = step(&quantized, &mut qc, &[t, t + 1]).unwrap();
            let scale = b.clone().abs().max().into_scalar::<f32>();
            let diff = max_abs_diff(a, b);
            eprintln!("int8-dot step, token {t}: largest difference {diff} (logits up to {scale})");
            assert!(diff > 0.0 && diff < 0.05 * scale, "token {t}: {diff} (logits up to {scale})");
        }
    }

    #[test]
    fn training_over_quantized_blocks_equals_training_over_their_f32_copy() {
        // With and without activation checkpointing (the op is built for either strategy).
        for device in [Device::flex().autodiff(), Device::flex().autodiff().gradient_checkpointing()] {
            training_over_blocks_on(&device);
        }
    }

    fn training_over_blocks_on(device: &Device) {
        let config = small_config();
        let device = device.clone();
        let (quantized, dense) = quantized_pair(&config, 13, &device);
        // Off the graph (as decoding takes it) the blocks stay, and adapters stay apart.
        let decoding = crate::eval::llm::decoding_model(&quantized.clone().with_lora(&LoraConfig::default(), 1).unwrap());
        assert!(decoding.has_blocks() && decoding.projections().any(|(_, lin)| lin.adapter.is_some()));
        let lora = LoraConfig { r: 4, alpha: 8.0, dropout: 0.0, target_modules: vec!["q_proj".into(), "down_proj".into()] };
        let grads = |model: Llama| {
            let model = model.with_lora(&lora, 13).unwrap();
            let tokens = int_tensor(vec![3, 5, 7, 11, 13, 17], [2, 3], &device);
            let loss = model.forward(tokens, ones_mask(2, 3, &device), None).powi_scalar(2).mean();
            let grads = loss.backward();
            let (_, lin) = model.projections().next().unwrap();
            let adapter = lin.adapter.as_ref().unwrap();
            // B's: a fresh adapter's B is zero, and so is A's gradient.
            adapter.b.val().grad(&grads).unwrap()
        };
        let (a, b) = (grads(quantized), grads(dense));
        let scale = b.clone().abs().max().into_scalar::<f32>();
        let diff = max_abs_diff(a, b);
        assert!(scale > 0.0 && diff < 1e-5 * scale, "{diff} (gradients up to {scale})");
    }

    #[test]
    fn no_fused_step_on_autodiff() {
        let model = adapted(&small_config(), 9);
        let device = Device::flex().autodiff();
        let model = Llama::from_weights(model.config(), &random_weights(model.config(), 9), &device).unwrap();
        let mut cache = model.new_cache(4);
        model.forward(int_tensor(vec![1, 2, 3], [1, 3], &device), ones_mask(1, 3, &device), Some(&mut cache));
        assert!(step(&model, &mut cache, &[4]).is_none());
        assert_eq!(cache.len(), 3, "the cache is left as it was");
    }
}
