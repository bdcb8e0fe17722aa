//! LoRA adapters on the Llama model, in Hugging Face PEFT's layout: attaching fresh adapters to
//! the target projections, merging them, and saving and loading them as a PEFT adapter
//! directory (`adapter_model.safetensors` + `adapter_config.json`), so Python PEFT can load
//! ours and we can load its.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::{Param, ParamId};
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize, Serializer};

use crate::hash::{fnv1a, FNV_OFFSET};
use crate::model::config::{lora_targets, module_name, LoraConfig};
use crate::model::llama::Llama;
use crate::model::lora::LoraAdapter;
use crate::model::projector::{ItemProjector, PROJECTOR_FILE};
use crate::model::weights::{host_values, safetensors_f32, transpose, FloatEncoding};
use crate::{Error, Result};

pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

impl Llama {
    /// The adapters' settings, when the model carries LoRA adapters.
    pub fn lora_config(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    /// Attaches fresh adapters to the target projections, initialised from `seed`, and (LLaRA)
    /// a fresh item projector drawn from `seed`: the trainable parts of a stage. Base weights
    /// and the item table stay frozen, so an optimizer over this model trains only those parts.
    pub fn with_lora(mut self, config: &LoraConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        self.refuse_second_adapter()?;
        let device = self.device();
        for (path, lin) in self.projections_mut() {
            if config.targets(module_name(&path)) {
                let (d_in, d_out) = lin.dims();
                // Each projection draws from its own stream: (seed, projection name).
                let (a, b) = LoraAdapter::initial_factors(d_in, d_out, config.r, seed ^ fnv(&path), &device);
                lin.adapter = Some(adapter(&path, a, b, config));
            }
        }
        self.lora = Some(config.clone());
        self.items = self.items.map(|p| p.fresh(seed));
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
    /// `adapter_config.json` naming `base_model` as `base_model_name_or_path`; with an item
    /// projector (LLaRA), also [`PROJECTOR_FILE`] with the table it reads.
    pub fn save_adapter(&self, dir: &Path, base_model: &str) -> Result<()> {
        let config =
            self.lora.as_ref().ok_or_else(|| Error::ModelState("the model has no LoRA adapters to save".into()))?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if self.items.is_some() {
            self.save_projector(dir)?;
        }
        let path = dir.join(ADAPTER_WEIGHTS);

        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (proj, lin) in self.projections() {
            let Some(adapter) = &lin.adapter else { continue };
            // Back to PEFT's [out, in] orientation: A = (Aᵀ)ᵀ, B = (Bᵀ)ᵀ.
            for (factor, value) in [('A', adapter.a.val()), ('B', adapter.b.val())] {
                let value = value.transpose();
                let shape = value.dims().to_vec();
                let bytes = FloatEncoding::F32.encode(&host_values::<f32, 2, _>(value)?);
                tensors.push((peft_name(&proj, factor), shape, bytes));
            }
        }
        let views = tensors
            .iter()
            .map(|(name, shape, bytes)| {
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), bytes).map(|v| (name.as_str(), v))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::safetensors(&path, e))?;
        safetensors::serialize_to_file(views, None, &path).map_err(|e| Error::safetensors(&path, e))?;

        let config_path = dir.join(ADAPTER_CONFIG);
        let text = serde_json::to_string_pretty(&PeftConfig::new(config, base_model))
            .map_err(|e| Error::json(&config_path, e))?;
        std::fs::write(&config_path, text).map_err(|e| Error::io(&config_path, e))
    }

    /// Attaches the adapters of a PEFT adapter directory (ours or Python PEFT's, f32/f16/bf16).
    /// Every target projection must have both factors with matching shapes, and the file must
    /// hold nothing else. A directory with [`PROJECTOR_FILE`] (LLaRA) also sets the item
    /// projector and its table; a model that reads item slots refuses a directory without one.
    pub fn load_adapter(self, dir: &Path) -> Result<Self> {
        self.refuse_second_adapter()?;
        let config_path = dir.join(ADAPTER_CONFIG);
        let config = std::fs::read(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let path = dir.join(ADAPTER_WEIGHTS);
        let weights = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let model = match dir.join(PROJECTOR_FILE) {
            projector if projector.exists() => self.load_projector(dir)?,
            projector if self.items.is_some() => {
                return Err(Error::format(projector, "missing: this LLaRA model's adapter needs its item projector"))
            }
            _ => self,
        };
        model.load_adapter_from_bytes(&config, &weights, dir)
    }

    /// Writes the item projector and its table to `dir/`[`PROJECTOR_FILE`].
    pub fn save_projector(&self, dir: &Path) -> Result<()> {
        let path = dir.join(PROJECTOR_FILE);
        let projector =
            self.items.as_ref().ok_or_else(|| Error::ModelState("the model has no item projector".into()))?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let bytes = projector.to_safetensors(&path)?;
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))
    }

    /// The model with the item projector (and table) of `dir/`[`PROJECTOR_FILE`].
    pub fn load_projector(self, dir: &Path) -> Result<Self> {
        let path = dir.join(PROJECTOR_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        self.load_projector_from_bytes(&bytes, &path)
    }

    /// [`Llama::load_projector`] from the file's bytes (the page fetches them); `path` names it.
    pub fn load_projector_from_bytes(self, bytes: &[u8], path: &Path) -> Result<Self> {
        let projector = ItemProjector::from_safetensors(bytes, path, self.config.hidden_size, &self.device())?;
        self.with_projector(projector).map_err(|e| Error::format(path, e.to_string()))
    }

    /// [`Llama::load_adapter`] from the bytes of `adapter_config.json` and
    /// `adapter_model.safetensors` (the page fetches them); `dir` names them in errors.
    pub fn load_adapter_from_bytes(mut self, config: &[u8], weights: &[u8], dir: &Path) -> Result<Self> {
        self.refuse_second_adapter()?;
        let config_path = dir.join(ADAPTER_CONFIG);
        let config = adapter_config_from_bytes(config, &config_path)?;
        let path = dir.join(ADAPTER_WEIGHTS);
        let file = SafeTensors::deserialize(weights).map_err(|e| Error::safetensors(&path, e))?;
        let mut unused: BTreeSet<String> = file.names().into_iter().map(String::from).collect();

        let device = self.device();
        let r = config.r;
        for (proj, lin) in self.projections_mut() {
            if !config.targets(module_name(&proj)) {
                continue;
            }
            let (d_in, d_out) = lin.dims();
            let (name_a, name_b) = (peft_name(&proj, 'A'), peft_name(&proj, 'B'));
            let a = read_factor(&file, &path, &name_a, &[r, d_in])?;
            let b = read_factor(&file, &path, &name_b, &[d_out, r])?;
            unused.remove(&name_a);
            unused.remove(&name_b);
            let a = Tensor::from_data(TensorData::new(transpose(&a, r, d_in), [d_in, r]), &device);
            let b = Tensor::from_data(TensorData::new(transpose(&b, d_out, r), [r, d_out]), &device);
            lin.adapter = Some(adapter(&proj, a, b, &config));
        }
        if let Some(name) = unused.first() {
            return Err(Error::tensor(&path, name, "not a LoRA factor of a target projection of this model"));
        }
        self.lora = Some(config);
        Ok(self)
    }

    fn refuse_second_adapter(&self) -> Result<()> {
        match self.lora {
            Some(_) => Err(Error::ModelState("the model already has LoRA adapters; merge them first".into())),
            None => Ok(()),
        }
    }
}

/// The adapter of the projection at `path` from Aᵀ `[in, r]` and Bᵀ `[r, out]`.
fn adapter(path: &str, a: Tensor<2>, b: Tensor<2>, config: &LoraConfig) -> LoraAdapter {
    LoraAdapter::new(
        trainable(&peft_name(path, 'A'), a),
        trainable(&peft_name(path, 'B'), b),
        config.scale(),
        config.dropout,
    )
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

/// PEFT's tensor name for factor `A` or `B` of the projection at `path`.
fn peft_name(path: &str, factor: char) -> String {
    format!("base_model.model.{path}.lora_{factor}.weight")
}

/// One factor of an adapter file as f32, checking its shape.
fn read_factor(file: &SafeTensors, path: &Path, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let view = file.tensor(name).map_err(|_| Error::tensor(path, name, "missing"))?;
    if view.shape() != shape {
        return Err(Error::tensor(path, name, format!("shape {:?}, expected {:?}", view.shape(), shape)));
    }
    safetensors_f32(&view, path, name)
}

/// PEFT's `adapter_config.json`: the fields of its `LoraConfig` that this model writes or has
/// to check. Unknown fields are ignored.
#[derive(Serialize, Deserialize)]
struct PeftConfig {
    peft_type: Option<String>,
    task_type: Option<String>,
    base_model_name_or_path: Option<String>,
    revision: Option<String>,
    r: usize,
    /// PEFT reads it as a number; integral values are written as integers, as PEFT does.
    #[serde(serialize_with = "integral_as_integer")]
    lora_alpha: f64,
    lora_dropout: Option<f64>,
    target_modules: TargetModules,
    bias: Option<String>,
    fan_in_fan_out: Option<bool>,
    inference_mode: Option<bool>,
    /// `true`, or the name of an initialisation: it does not matter once trained.
    #[serde(default)]
    init_lora_weights: serde_json::Value,
    modules_to_save: Option<Vec<String>>,
    /// Layer indices: only whether it is set matters (this model adapts every layer).
    layers_to_transform: Option<serde_json::Value>,
    layers_pattern: Option<serde_json::Value>,
    // Variants this model cannot reproduce, read to refuse them and never written.
    #[serde(skip_serializing_if = "Option::is_none")]
    use_rslora: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    use_dora: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rank_pattern: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alpha_pattern: Option<BTreeMap<String, serde_json::Value>>,
}

/// A list of module names, or PEFT's shorthand: one name, or `all-linear`.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum TargetModules {
    List(Vec<String>),
    One(String),
}

fn integral_as_integer<S: Serializer>(x: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    match x.fract() == 0.0 {
        true => s.serialize_i64(*x as i64),
        false => s.serialize_f64(*x),
    }
}

impl PeftConfig {
    /// What PEFT writes for `config`, adapting `base_model`.
    fn new(config: &LoraConfig, base_model: &str) -> Self {
        Self {
            peft_type: Some("LORA".into()),
            task_type: Some("CAUSAL_LM".into()),
            base_model_name_or_path: Some(base_model.into()),
            revision: None,
            r: config.r,
            lora_alpha: config.alpha,
            lora_dropout: Some(config.dropout),
            target_modules: TargetModules::List(config.target_modules.clone()),
            bias: Some("none".into()),
            fan_in_fan_out: Some(false),
            inference_mode: Some(true),
            init_lora_weights: true.into(),
            modules_to_save: None,
            layers_to_transform: None,
            layers_pattern: None,
            use_rslora: None,
            use_dora: None,
            rank_pattern: None,
            alpha_pattern: None,
        }
    }

    /// The LoRA settings, refusing variants this model cannot reproduce (rsLoRA, DoRA,
    /// per-layer ranks, trained biases). `path` names the file in errors.
    fn lora_config(self, path: &Path) -> Result<LoraConfig> {
        let bad = |msg: String| Err(Error::format(path, msg));
        if let Some(kind) = self.peft_type.as_deref().filter(|&k| k != "LORA") {
            return bad(format!("peft_type {kind}, expected LORA"));
        }
        let flags =
            [("use_rslora", self.use_rslora), ("use_dora", self.use_dora), ("fan_in_fan_out", self.fan_in_fan_out)];
        if let Some((key, _)) = flags.iter().find(|(_, v)| *v == Some(true)) {
            return bad(format!("{key} = true is not supported"));
        }
        let patterns = [
            ("rank_pattern", self.rank_pattern.is_some_and(|p| !p.is_empty())),
            ("alpha_pattern", self.alpha_pattern.is_some_and(|p| !p.is_empty())),
            ("layers_to_transform", self.layers_to_transform.is_some()),
        ];
        if let Some((key, _)) = patterns.iter().find(|(_, set)| *set) {
            return bad(format!("{key} is not supported"));
        }
        if let Some(bias) = self.bias.filter(|b| b != "none") {
            return bad(format!("bias = {bias:?} is not supported (only \"none\")"));
        }
        let targets = lora_targets();
        let target_modules = match self.target_modules {
            TargetModules::List(names) => names,
            // PEFT's shorthand for every linear layer but the LM head: exactly our projections.
            TargetModules::One(s) if s == "all-linear" => targets.iter().map(|t| t.to_string()).collect(),
            TargetModules::One(s) if targets.contains(&s.as_str()) => vec![s],
            TargetModules::One(s) => {
                return bad(format!("target_modules {s:?} is not supported (use a list of names)"))
            }
        };
        let config =
            LoraConfig { r: self.r, alpha: self.lora_alpha, dropout: self.lora_dropout.unwrap_or(0.0), target_modules };
        config.validate().map_err(|e| Error::format(path, e.to_string()))?;
        Ok(config)
    }
}

/// The LoRA settings of a PEFT `adapter_config.json` (its bytes; `path` names it in errors).
fn adapter_config_from_bytes(bytes: &[u8], path: &Path) -> Result<LoraConfig> {
    let config: PeftConfig = serde_json::from_slice(bytes).map_err(|e| Error::json(path, e))?;
    config.lora_config(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::LlamaConfig;
    use crate::model::llama::tests::{int_tensor, max_abs_diff, random_weights, small_config, small_model};
    use burn::optim::{AdamWConfig, GradientsParams};
    use burn::tensor::{Device, Distribution, Int};

    fn all_targets() -> LoraConfig {
        LoraConfig { target_modules: lora_targets().iter().map(|t| t.to_string()).collect(), ..LoraConfig::default() }
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

    fn tokens(device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
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
                .filter_map(|(_, lin)| lin.adapter.as_ref().map(|a| a.a.val().into_data().try_to_vec::<f32>().unwrap()))
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

    /// Python PEFT's own configs: its defaults and shorthands load, the variants this model
    /// cannot reproduce are refused by name.
    #[test]
    fn peft_configs_are_read_or_refused() {
        let dir = temp_dir("configs");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(ADAPTER_CONFIG);
        let read = |json: &str| adapter_config_from_bytes(json.as_bytes(), &path);
        let peft = r#"{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "bias": "none",
            "target_modules": "all-linear", "rank_pattern": {}, "alpha_pattern": {}, "use_rslora": false,
            "use_dora": false, "layers_to_transform": null, "init_lora_weights": "gaussian", "fan_in_fan_out": false}"#;
        let config = read(peft).unwrap();
        assert_eq!((config.r, config.alpha, config.dropout), (4, 8.0, 0.1));
        assert_eq!(config.target_modules, lora_targets());
        assert_eq!(
            read(r#"{"r": 4, "lora_alpha": 8.5, "target_modules": "k_proj"}"#).unwrap().target_modules,
            ["k_proj"]
        );
        for (change, refused) in [
            (r#""use_rslora": false"#, r#""use_rslora": true"#),
            (r#""rank_pattern": {}"#, r#""rank_pattern": {"q_proj": 2}"#),
            (r#""layers_to_transform": null"#, r#""layers_to_transform": [0]"#),
            (r#""bias": "none""#, r#""bias": "all""#),
            (r#""peft_type": "LORA""#, r#""peft_type": "IA3""#),
            (r#""target_modules": "all-linear""#, r#""target_modules": "lm_head""#),
        ] {
            let key = refused.split('"').nth(1).unwrap();
            let err = read(&peft.replace(change, refused)).unwrap_err().to_string();
            assert!(err.contains(ADAPTER_CONFIG) && err.contains(key), "{refused}: {err}");
        }
        assert!(matches!(read(r#"{"lora_alpha": 8, "target_modules": []}"#), Err(Error::Json { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn adapters_of_another_shape_are_refused() {
        let dir = temp_dir("shape");
        small_model(5).with_lora(&LoraConfig::default(), 5).unwrap().save_adapter(&dir, "tiny").unwrap();
        let wider = LlamaConfig { hidden_size: 96, ..small_config() };
        let other = Llama::from_weights(&wider, &random_weights(&wider, 1), &Device::flex()).unwrap();
        let err = other.load_adapter(&dir).unwrap_err();
        assert!(err.to_string().contains("model.layers.0.self_attn.q_proj.lora_A.weight"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
