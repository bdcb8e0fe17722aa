//! LoRA (low-rank adaptation): a frozen linear layer plus a trainable update
//! `(alpha / r) · B·A`, with A `[r, in]` and B `[out, r]`, on chosen projections of the model.
//! Adapters are saved and loaded in Hugging Face PEFT's layout (`adapter_model.safetensors` +
//! `adapter_config.json`), so Python PEFT can load ours and we can load its.

use std::collections::BTreeSet;
use std::path::Path;

use burn::module::{Module, Param, ParamId};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::module::linear;
use burn::tensor::{Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::{Dtype, SafeTensors};

use super::config::{LoraConfig, LORA_TARGETS};
use super::llama::{frozen, transpose, Block, Llama};
use crate::hash::{fnv1a, FNV_OFFSET};
use crate::{Error, Result};

pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

/// A projection of the model: frozen weight and bias, and optionally a LoRA adapter.
#[derive(Module, Debug)]
pub struct LoraLinear {
    /// `[in, out]` (burn's `linear` layout; Hugging Face stores `[out, in]`).
    pub(crate) weight: Param<Tensor<2>>,
    pub(crate) bias: Option<Param<Tensor<1>>>,
    pub(crate) adapter: Option<LoraAdapter>,
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

impl LoraLinear {
    /// A projection with frozen `weight` `[in, out]` and `bias` `[out]`, no adapter.
    pub(crate) fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Self { weight: frozen(weight), bias: bias.map(frozen), adapter: None }
    }

    /// `(in, out)`.
    pub fn dims(&self) -> (usize, usize) {
        let [d_in, d_out] = self.weight.shape().dims();
        (d_in, d_out)
    }

    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let bias = self.bias.as_ref().map(Param::val);
        match &self.adapter {
            None => linear(x, self.weight.val(), bias),
            Some(adapter) => linear(x.clone(), self.weight.val(), bias) + adapter.forward(x),
        }
    }

    /// The effective weight `[in, out]`: base + (alpha/r)·(B·A)ᵀ.
    pub fn merged_weight(&self) -> Tensor<2> {
        match &self.adapter {
            None => self.weight.val(),
            Some(adapter) => self.weight.val() + adapter.delta(),
        }
    }

    /// Folds the adapter, if any, into the frozen weight; a plain projection remains.
    pub fn merge(&mut self) {
        if self.adapter.is_some() {
            self.weight = frozen(self.merged_weight().detach());
            self.adapter = None;
        }
    }
}

impl LoraAdapter {
    /// A fresh adapter as PEFT initialises one: A Kaiming-uniform (`a = √5`, which makes the
    /// bound 1/√in) and B zero, so the adapted layer starts out equal to the base layer. A is
    /// drawn from (seed, projection name), not from the backend's process-wide generator, so
    /// the same seed gives the same adapter whatever else runs in the process.
    fn init(
        path: &str,
        d_in: usize,
        d_out: usize,
        config: &LoraConfig,
        seed: u64,
        device: &burn::tensor::Device,
    ) -> Self {
        let bound = 1.0 / (d_in as f32).sqrt();
        let mut rng = StdRng::seed_from_u64(seed ^ fnv(path));
        let values: Vec<f32> = (0..d_in * config.r).map(|_| rng.random_range(-bound..bound)).collect();
        let a = Tensor::from_data(TensorData::new(values, [d_in, config.r]), device);
        let b = Tensor::zeros([config.r, d_out], device);
        Self::from_factors(path, a, b, config)
    }

    /// An adapter from Aᵀ `[in, r]` and Bᵀ `[r, out]` for the projection at `path`.
    fn from_factors(path: &str, a: Tensor<2>, b: Tensor<2>, config: &LoraConfig) -> Self {
        Self {
            a: trainable(&peft_name(path, 'A'), a),
            b: trainable(&peft_name(path, 'B'), b),
            scale: config.scale(),
            dropout: DropoutConfig::new(config.dropout).init(),
        }
    }

    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        // Scale the rank-r intermediate: the smallest tensor on the branch.
        let low = linear(self.dropout.forward(x), self.a.val(), None).mul_scalar(self.scale);
        linear(low, self.b.val(), None)
    }

    /// (alpha/r)·Aᵀ·Bᵀ, `[in, out]`.
    fn delta(&self) -> Tensor<2> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scale)
    }
}

impl Block {
    /// The seven projections, by their path inside the block (`self_attn.q_proj`, ...).
    fn projections(&self) -> [(&'static str, &LoraLinear); 7] {
        let (a, m) = (&self.self_attn, &self.mlp);
        [
            ("self_attn.q_proj", &a.q_proj),
            ("self_attn.k_proj", &a.k_proj),
            ("self_attn.v_proj", &a.v_proj),
            ("self_attn.o_proj", &a.o_proj),
            ("mlp.gate_proj", &m.gate_proj),
            ("mlp.up_proj", &m.up_proj),
            ("mlp.down_proj", &m.down_proj),
        ]
    }

    fn projections_mut(&mut self) -> [(&'static str, &mut LoraLinear); 7] {
        let (a, m) = (&mut self.self_attn, &mut self.mlp);
        [
            ("self_attn.q_proj", &mut a.q_proj),
            ("self_attn.k_proj", &mut a.k_proj),
            ("self_attn.v_proj", &mut a.v_proj),
            ("self_attn.o_proj", &mut a.o_proj),
            ("mlp.gate_proj", &mut m.gate_proj),
            ("mlp.up_proj", &mut m.up_proj),
            ("mlp.down_proj", &mut m.down_proj),
        ]
    }
}

/// A stable hash of a parameter or projection name.
fn fnv(name: &str) -> u64 {
    fnv1a(FNV_OFFSET, name.as_bytes())
}

/// A trainable parameter whose id is derived from its name: an adapter loaded from a checkpoint
/// then has the ids of the one that was saved, which is what the optimizer's saved state is
/// keyed by.
fn trainable(name: &str, value: Tensor<2>) -> Param<Tensor<2>> {
    let mut param = Param::from_tensor(value);
    param.id = ParamId::from(fnv(name));
    param
}

/// `model.layers.{i}.self_attn.q_proj` -> `q_proj`.
fn module_name(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// PEFT's tensor name for factor `A` or `B` of the projection at `path`.
fn peft_name(path: &str, factor: char) -> String {
    format!("base_model.model.{path}.lora_{factor}.weight")
}

impl Llama {
    /// Every projection with its Hugging Face path (`model.layers.3.mlp.up_proj`).
    fn projections(&self) -> impl Iterator<Item = (String, &LoraLinear)> {
        self.layers.iter().enumerate().flat_map(|(i, block)| {
            block.projections().into_iter().map(move |(p, lin)| (format!("model.layers.{i}.{p}"), lin))
        })
    }

    fn projections_mut(&mut self) -> impl Iterator<Item = (String, &mut LoraLinear)> {
        self.layers.iter_mut().enumerate().flat_map(|(i, block)| {
            block.projections_mut().into_iter().map(move |(p, lin)| (format!("model.layers.{i}.{p}"), lin))
        })
    }

    /// The adapters' settings, when the model carries LoRA adapters.
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    /// Attaches fresh adapters to the target projections, initialised from `seed`. Base
    /// weights stay frozen, so an optimizer over this model trains the adapters only.
    pub fn with_lora(mut self, config: &LoraConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        self.refuse_second_adapter()?;
        let device = self.device();
        for (path, lin) in self.projections_mut() {
            if config.targets(module_name(&path)) {
                let (d_in, d_out) = lin.dims();
                lin.adapter = Some(LoraAdapter::init(&path, d_in, d_out, config, seed, &device));
            }
        }
        self.lora = Some(config.clone());
        Ok(self)
    }

    /// Folds every adapter into its base weight: the result is a plain model with the adapted
    /// behaviour.
    pub fn merge_lora(mut self) -> Self {
        self.projections_mut().for_each(|(_, lin)| lin.merge());
        self.lora = None;
        self
    }

    /// Writes the adapters as a PEFT adapter directory: `adapter_model.safetensors` (f32) and
    /// `adapter_config.json` naming `base_model` as `base_model_name_or_path`.
    pub fn save_adapter(&self, dir: &Path, base_model: &str) -> Result<()> {
        let config =
            self.lora.as_ref().ok_or_else(|| Error::Invalid("the model has no LoRA adapters to save".into()))?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let path = dir.join(ADAPTER_WEIGHTS);

        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (proj, lin) in self.projections() {
            let Some(adapter) = &lin.adapter else { continue };
            // Back to PEFT's [out, in] orientation: A = (Aᵀ)ᵀ, B = (Bᵀ)ᵀ.
            for (factor, value) in [('A', adapter.a.val()), ('B', adapter.b.val())] {
                let value = value.transpose();
                let shape = value.dims().to_vec();
                let data = value.try_into_vec_as::<f32>().map_err(|e| Error::format(&path, e.to_string()))?;
                let bytes = data.iter().flat_map(|x| x.to_le_bytes()).collect();
                tensors.push((peft_name(&proj, factor), shape, bytes));
            }
        }
        let views = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.as_str(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::format(&path, e.to_string()))?;
        safetensors::serialize_to_file(views, None, &path).map_err(|e| Error::format(&path, e.to_string()))?;

        // PEFT reads lora_alpha as a number; write integral values as integers, as PEFT does.
        let alpha = match config.alpha.fract() == 0.0 {
            true => serde_json::json!(config.alpha as i64),
            false => serde_json::json!(config.alpha),
        };
        let json = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "revision": null,
            "r": config.r,
            "lora_alpha": alpha,
            "lora_dropout": config.dropout,
            "target_modules": config.target_modules,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "modules_to_save": null,
            "layers_to_transform": null,
            "layers_pattern": null,
        });
        let config_path = dir.join(ADAPTER_CONFIG);
        let text = serde_json::to_string_pretty(&json).map_err(|e| Error::format(&config_path, e.to_string()))?;
        std::fs::write(&config_path, text).map_err(|e| Error::io(&config_path, e))
    }

    /// Attaches the adapters of a PEFT adapter directory (ours or Python PEFT's, f32/f16/bf16).
    /// Every target projection must have both factors with matching shapes, and the file must
    /// hold nothing else.
    pub fn load_adapter(mut self, dir: &Path) -> Result<Self> {
        self.refuse_second_adapter()?;
        let config = read_adapter_config(&dir.join(ADAPTER_CONFIG))?;
        let path = dir.join(ADAPTER_WEIGHTS);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let file = SafeTensors::deserialize(&bytes).map_err(|e| Error::format(&path, e.to_string()))?;
        let mut unused: BTreeSet<String> = file.names().into_iter().map(String::from).collect();

        let device = self.device();
        let r = config.r;
        for (proj, lin) in self.projections_mut() {
            if !config.targets(module_name(&proj)) {
                continue;
            }
            let (d_in, d_out) = lin.dims();
            let (name_a, name_b) = (peft_name(&proj, 'A'), peft_name(&proj, 'B'));
            let a = read_f32(&file, &path, &name_a, &[r, d_in])?;
            let b = read_f32(&file, &path, &name_b, &[d_out, r])?;
            unused.remove(&name_a);
            unused.remove(&name_b);
            let a = Tensor::from_data(TensorData::new(transpose(&a, r, d_in), [d_in, r]), &device);
            let b = Tensor::from_data(TensorData::new(transpose(&b, d_out, r), [r, d_out]), &device);
            lin.adapter = Some(LoraAdapter::from_factors(&proj, a, b, &config));
        }
        if let Some(name) = unused.first() {
            return Err(Error::tensor(&path, name, "not a LoRA factor of a target projection of this model"));
        }
        self.lora = Some(config);
        Ok(self)
    }

    fn refuse_second_adapter(&self) -> Result<()> {
        match self.lora {
            Some(_) => Err(Error::Invalid("the model already has LoRA adapters; merge them first".into())),
            None => Ok(()),
        }
    }
}

/// One tensor of an adapter file as f32, checking its shape.
fn read_f32(file: &SafeTensors, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let view = file.tensor(name).map_err(|_| Error::tensor(path, name, "missing"))?;
    if view.shape() != shape {
        return Err(Error::tensor(path, name, format!("shape {:?}, expected {:?}", view.shape(), shape)));
    }
    let data = view.data();
    let halves = || data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]));
    match view.dtype() {
        Dtype::F32 => Ok(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        Dtype::F16 => Ok(halves().map(|h| half::f16::from_bits(h).to_f32()).collect()),
        Dtype::BF16 => Ok(halves().map(|h| half::bf16::from_bits(h).to_f32()).collect()),
        other => Err(Error::tensor(path, name, format!("unsupported dtype {other:?}"))),
    }
}

/// The LoRA settings of a PEFT `adapter_config.json`, refusing variants this model cannot
/// reproduce (rsLoRA, DoRA, per-layer ranks, trained biases).
fn read_adapter_config(path: &Path) -> Result<LoraConfig> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::format(path, e.to_string()))?;
    let bad = |msg: String| Error::format(path, msg);

    if let Some(kind) = json.get("peft_type").and_then(|v| v.as_str()) {
        if kind != "LORA" {
            return Err(bad(format!("peft_type {kind}, expected LORA")));
        }
    }
    let is_true = |key: &str| json.get(key).and_then(|v| v.as_bool()) == Some(true);
    let is_set = |key: &str| match json.get(key) {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Object(map)) => !map.is_empty(),
        Some(_) => true,
    };
    for key in ["use_rslora", "use_dora", "fan_in_fan_out"] {
        if is_true(key) {
            return Err(bad(format!("{key} = true is not supported")));
        }
    }
    for key in ["rank_pattern", "alpha_pattern", "layers_to_transform"] {
        if is_set(key) {
            return Err(bad(format!("{key} is not supported")));
        }
    }
    if let Some(bias) = json.get("bias").and_then(|v| v.as_str()) {
        if bias != "none" {
            return Err(bad(format!("bias = {bias:?} is not supported (only \"none\")")));
        }
    }

    let r = json.get("r").and_then(|v| v.as_u64()).ok_or_else(|| bad("missing integer `r`".into()))? as usize;
    let alpha = json.get("lora_alpha").and_then(|v| v.as_f64()).ok_or_else(|| bad("missing `lora_alpha`".into()))?;
    let dropout = json.get("lora_dropout").and_then(|v| v.as_f64()).unwrap_or(0.0);
    let target_modules = match json.get("target_modules") {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(String::from).ok_or_else(|| bad("target_modules holds a non-string".into())))
            .collect::<Result<Vec<_>>>()?,
        // PEFT's shorthand for every linear layer but the LM head: exactly our projections.
        Some(serde_json::Value::String(s)) if s == "all-linear" => LORA_TARGETS.iter().map(|t| t.to_string()).collect(),
        Some(serde_json::Value::String(s)) if LORA_TARGETS.contains(&s.as_str()) => vec![s.clone()],
        Some(other) => return Err(bad(format!("target_modules {other} is not supported (use a list of names)"))),
        None => return Err(bad("missing `target_modules`".into())),
    };
    let config = LoraConfig { r, alpha, dropout, target_modules };
    config.validate().map_err(|e| bad(e.to_string()))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::tests::{int_tensor, max_abs_diff, random_weights, small_config, small_model};
    use burn::optim::{AdamWConfig, GradientsParams};
    use burn::tensor::{Device, Distribution};

    fn all_targets() -> LoraConfig {
        LoraConfig { target_modules: LORA_TARGETS.iter().map(|t| t.to_string()).collect(), ..LoraConfig::default() }
    }

    /// Fresh adapters have B = 0 and change nothing; give B values so that they do.
    fn randomize_b(mut model: Llama) -> Llama {
        for (_, lin) in model.projections_mut() {
            if let Some(adapter) = lin.adapter.as_mut() {
                let shape = adapter.b.shape().dims::<2>();
                let device = adapter.b.val().device();
                adapter.b = Param::from_tensor(Tensor::random(shape, Distribution::Normal(0.0, 0.1), &device));
            }
        }
        model
    }

    fn tokens(device: &Device) -> (Tensor<2, burn::tensor::Int>, Tensor<2, burn::tensor::Int>) {
        (int_tensor(vec![5, 17, 3, 88, 42, 9, 61, 30], [2, 4], device), Tensor::ones([2, 4], device))
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("soft-lora-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_fresh_adapter_depends_on_its_seed_only() {
        let a_of = |m: &Llama| -> Vec<Vec<f32>> {
            m.projections()
                .filter_map(|(_, lin)| lin.adapter.as_ref().map(|a| a.a.val().into_data().to_vec::<f32>().unwrap()))
                .collect()
        };
        let first = a_of(&small_model(5).with_lora(&all_targets(), 3).unwrap());
        // Draws from the backend's process-wide generator in between change nothing.
        let _ = Tensor::<2>::random([64, 64], Distribution::Default, &Device::flex());
        let again = a_of(&small_model(5).with_lora(&all_targets(), 3).unwrap());
        let other = a_of(&small_model(5).with_lora(&all_targets(), 4).unwrap());
        assert_eq!(first, again);
        assert_ne!(first, other);
        // Every projection gets its own draw.
        assert_ne!(first[0][..8], first[1][..8]);
    }

    #[test]
    fn merged_weight_is_base_plus_scaled_b_times_a() {
        let device = Device::flex();
        let hf = |rows: Vec<Vec<f32>>| {
            let (r, c) = (rows.len(), rows[0].len());
            // Hugging Face [out, in] -> our [in, out].
            Tensor::<2>::from_data(TensorData::new(transpose(&rows.concat(), r, c), [c, r]), &device)
        };
        let w = vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]]; // [out 3, in 2]
        let a = vec![vec![0.5, -1.0], vec![2.0, 0.25]]; // [r 2, in 2]
        let b = vec![vec![1.0, 0.0], vec![0.0, 2.0], vec![-1.0, 1.0]]; // [out 3, r 2]
        let config = LoraConfig { r: 2, alpha: 6.0, dropout: 0.0, ..LoraConfig::default() }; // scale 3
        let mut lin = LoraLinear::new(hf(w), None);
        lin.adapter = Some(LoraAdapter::from_factors("model.layers.0.self_attn.q_proj", hf(a), hf(b), &config));

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

    #[test]
    fn merged_model_equals_adapted_model() {
        let device = Device::flex();
        let model = randomize_b(small_model(5).with_lora(&all_targets(), 5).unwrap());
        let (t, m) = tokens(&device);
        let adapted = model.forward(t.clone(), m.clone(), None);
        let base = small_model(5).forward(t.clone(), m.clone(), None);
        assert!(max_abs_diff(adapted.clone(), base) > 1e-2, "the adapters should matter");
        let merged = model.merge_lora();
        assert!(merged.lora_config().is_none());
        assert!(max_abs_diff(merged.forward(t, m, None), adapted) < 1e-4);
    }

    #[test]
    fn an_optimizer_step_changes_only_the_adapters() {
        let device = Device::flex().autodiff();
        let config = small_config();
        let model = Llama::from_weights(&config, &random_weights(&config, 5), &device)
            .unwrap()
            .with_lora(&LoraConfig::default(), 5)
            .unwrap();
        let snapshot = |m: &Llama| {
            let attn = &m.layers[0].self_attn;
            [
                m.embed_tokens.val(),
                attn.q_proj.weight.val(),
                attn.k_proj.weight.val(),
                m.layers[1].mlp.down_proj.weight.val(),
                m.norm.gamma.val().reshape([1, config.hidden_size]),
                attn.q_proj.adapter.as_ref().unwrap().b.val(),
                attn.v_proj.adapter.as_ref().unwrap().a.val(),
            ]
            .map(|t| t.inner())
        };
        let before = snapshot(&model);

        let (t, m) = tokens(&device);
        let loss = model.forward(t, m, None).square().mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        // A and B of q_proj and v_proj in each layer, nothing else.
        assert_eq!(grads.len(), 2 * 2 * config.n_layers);
        let mut optim = AdamWConfig::new().init();
        let model = optim.step(1e-2, model, grads);

        let after = snapshot(&model);
        for (i, (b, a)) in before.iter().zip(&after).take(5).enumerate() {
            assert_eq!(max_abs_diff(b.clone(), a.clone()), 0.0, "frozen tensor {i} changed");
        }
        assert!(max_abs_diff(before[5].clone(), after[5].clone()) > 0.0, "LoRA B did not train");
        assert!(max_abs_diff(before[6].clone(), after[6].clone()) > 0.0, "LoRA A did not train");
    }

    #[test]
    fn peft_adapter_round_trip() {
        let device = Device::flex();
        let dir = temp_dir("round-trip");
        let model = randomize_b(small_model(5).with_lora(&LoraConfig::default(), 5).unwrap());
        model.save_adapter(&dir, "HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();

        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(ADAPTER_CONFIG)).unwrap()).unwrap();
        assert_eq!(json["peft_type"], "LORA");
        assert_eq!(json["task_type"], "CAUSAL_LM");
        assert_eq!(json["r"], 8);
        assert_eq!(json["lora_alpha"], 16);
        assert_eq!(json["bias"], "none");
        assert_eq!(json["target_modules"], serde_json::json!(["q_proj", "v_proj"]));
        assert_eq!(json["base_model_name_or_path"], "HuggingFaceTB/SmolLM2-135M-Instruct");

        let bytes = std::fs::read(dir.join(ADAPTER_WEIGHTS)).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(file.len(), 2 * 2 * 2);
        // q_proj: in 64, out 4 heads x 16.
        let a = file.tensor("base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight").unwrap();
        assert_eq!((a.dtype(), a.shape()), (Dtype::F32, &[8, 64][..]));
        let b = file.tensor("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight").unwrap();
        assert_eq!(b.shape(), &[32, 8]);

        let loaded = small_model(5).load_adapter(&dir).unwrap();
        assert_eq!(loaded.lora_config(), model.lora_config());
        let (t, m) = tokens(&device);
        assert!(max_abs_diff(loaded.forward(t.clone(), m.clone(), None), model.forward(t, m, None)) < 1e-6);

        // A config that no longer targets v_proj leaves its tensors unexplained.
        let narrowed = json.to_string().replace(r#""q_proj","v_proj""#, r#""q_proj""#);
        std::fs::write(dir.join(ADAPTER_CONFIG), narrowed).unwrap();
        let err = small_model(5).load_adapter(&dir).unwrap_err();
        assert!(err.to_string().contains("v_proj.lora_"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn adapters_of_another_shape_are_refused() {
        let dir = temp_dir("shape");
        small_model(5).with_lora(&LoraConfig::default(), 5).unwrap().save_adapter(&dir, "tiny").unwrap();
        let wider = crate::model::config::LlamaConfig { hidden_size: 96, ..small_config() };
        let other = Llama::from_weights(&wider, &random_weights(&wider, 1), &Device::flex()).unwrap();
        let err = other.load_adapter(&dir).unwrap_err();
        assert!(err.to_string().contains("model.layers.0.self_attn.q_proj.lora_A.weight"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
