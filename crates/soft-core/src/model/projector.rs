//! LLaRA's item projector: a frozen table of collaborative item embeddings (one row per item id,
//! from a SASRec trained on the same training period; row 0 is padding) and a trainable
//! `Linear(d_rec -> hidden) -> GELU -> Linear(hidden -> hidden)` that maps a row into the
//! language model's input space. The model holds it as it holds LoRA layers; it trains with the
//! adapters, by the same optimizer.
//!
//! A prompt refers to an item by an *item slot*: a token id at or above [`ITEM_SLOT_BASE`]
//! (`ITEM_SLOT_BASE + item id`). No tokenizer produces one, so — unlike the reference, which
//! reuses the id of `[` — only the positions the prompt builder marked receive an item
//! embedding. Slots fit in 31 bits: every backend's integer tensors hold them.

use std::path::Path;

use burn::module::{Module, Param, ParamId};
use burn::tensor::activation::gelu;
use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use safetensors::SafeTensors;

use super::lora::frozen;
use super::weights::{host_values, safetensors_bytes, safetensors_f32, transpose, FloatEncoding, RawTensor, WeightMap};
use crate::hash::{fnv1a, FNV_OFFSET};
use crate::kernels::linear;
use crate::{Error, Result};

/// The first item slot: token id `ITEM_SLOT_BASE + id` stands for item `id`'s embedding.
pub const ITEM_SLOT_BASE: u32 = 1 << 30;

/// The file, beside a PEFT adapter, that holds the projector and the item table it reads.
pub const PROJECTOR_FILE: &str = "projector.safetensors";

/// Tensor names in [`PROJECTOR_FILE`]: the table, then PyTorch's `nn.Sequential(Linear, GELU,
/// Linear)` state-dict names (`[out, in]` weights), so Python can load the file as it is.
pub const TABLE: &str = "item_table";
const W1: &str = "projector.0.weight";
const B1: &str = "projector.0.bias";
const W2: &str = "projector.2.weight";
const B2: &str = "projector.2.bias";

/// The token id of item `id`'s slot.
pub fn item_slot(id: u32) -> u32 {
    ITEM_SLOT_BASE + id
}

/// The item a token id stands for, when it is a slot.
pub fn slot_item(token: u32) -> Option<u32> {
    token.checked_sub(ITEM_SLOT_BASE)
}

#[derive(Module, Debug)]
pub struct ItemProjector {
    /// `[items, d_rec]`, frozen.
    pub(crate) table: Param<Tensor<2>>,
    /// `[d_rec, hidden]` and `[hidden]`.
    pub(crate) w1: Param<Tensor<2>>,
    pub(crate) b1: Param<Tensor<1>>,
    /// `[hidden, hidden]` and `[hidden]`.
    pub(crate) w2: Param<Tensor<2>>,
    pub(crate) b2: Param<Tensor<1>>,
}

impl ItemProjector {
    /// A fresh projector over `table` `[items, d_rec]` into a model of width `hidden`,
    /// initialised as PyTorch's `nn.Linear` (weights and biases uniform in ±1/√fan_in) from
    /// `seed` alone, so the same seed gives the same projector whatever else the process drew.
    pub fn new(table: Tensor<2>, hidden: usize, seed: u64) -> Self {
        let device = table.device();
        let d_rec = table.dims()[1];
        let (w1, b1) = linear_init(d_rec, hidden, seed ^ fnv(W1), &device);
        let (w2, b2) = linear_init(hidden, hidden, seed ^ fnv(W2), &device);
        Self::from_parts(table, [w1, w2], [b1, b2])
    }

    /// A fresh projector over the same table (SOFT's second model starts from one).
    pub fn fresh(&self, seed: u64) -> Self {
        Self::new(self.table.val().detach(), self.hidden(), seed)
    }

    fn from_parts(table: Tensor<2>, [w1, w2]: [Tensor<2>; 2], [b1, b2]: [Tensor<1>; 2]) -> Self {
        Self { table: frozen(table), w1: named(W1, w1), b1: named(B1, b1), w2: named(W2, w2), b2: named(B2, b2) }
    }

    /// Rows of the table: the largest item id it embeds is `items() - 1`.
    pub fn items(&self) -> usize {
        self.table.shape().dims::<2>()[0]
    }

    pub fn d_rec(&self) -> usize {
        self.table.shape().dims::<2>()[1]
    }

    pub fn hidden(&self) -> usize {
        self.w1.shape().dims::<2>()[1]
    }

    /// The frozen table `[items, d_rec]`.
    pub fn table(&self) -> Tensor<2> {
        self.table.val()
    }

    /// Projected embeddings `[B, T, hidden]` of item ids `[B, T]`.
    pub fn forward(&self, items: Tensor<2, Int>) -> Tensor<3> {
        self.project(embedding(self.table.val(), items))
    }

    /// `rows` `[..., d_rec]` through the two layers, `[..., hidden]`.
    pub fn project<const D: usize>(&self, rows: Tensor<D>) -> Tensor<D> {
        let h = gelu(linear(rows, self.w1.val(), Some(self.b1.val())));
        linear(h, self.w2.val(), Some(self.b2.val()))
    }

    /// The file's bytes: the table and the two layers, f32, PyTorch orientation.
    pub fn to_safetensors(&self, path: &Path) -> Result<Vec<u8>> {
        let (d_rec, hidden) = (self.d_rec(), self.hidden());
        let table = self.table.val();
        let mut tensors = WeightMap::new();
        tensors.insert(TABLE.into(), RawTensor::new(table.dims().to_vec(), host_values::<f32, 2, _>(table)?));
        for (name, w, d_in) in [(W1, self.w1.val(), d_rec), (W2, self.w2.val(), hidden)] {
            let values = transpose(&host_values::<f32, 2, _>(w)?, d_in, hidden);
            tensors.insert(name.into(), RawTensor::new(vec![hidden, d_in], values));
        }
        for (name, b) in [(B1, self.b1.val()), (B2, self.b2.val())] {
            tensors.insert(name.into(), RawTensor::new(vec![hidden], host_values::<f32, 1, _>(b)?));
        }
        safetensors_bytes(&tensors, FloatEncoding::F32, path)
    }

    /// A projector from [`PROJECTOR_FILE`]'s bytes for a model of width `hidden` (`path` names
    /// the file in errors). Every tensor must be there with its shape, finite, and nothing else.
    pub fn from_safetensors(bytes: &[u8], path: &Path, hidden: usize, device: &Device) -> Result<Self> {
        let file = SafeTensors::deserialize(bytes).map_err(|e| Error::safetensors(path, e))?;
        let view = file.tensor(TABLE).map_err(|_| Error::tensor(path, TABLE, "missing"))?;
        let &[items, d_rec] = view.shape() else {
            return Err(Error::tensor(path, TABLE, format!("shape {:?}, expected [items, d_rec]", view.shape())));
        };
        if items < 2 || d_rec == 0 {
            return Err(Error::tensor(path, TABLE, format!("shape {:?}: no item rows", view.shape())));
        }
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let view = file.tensor(name).map_err(|_| Error::tensor(path, name, "missing"))?;
            if view.shape() != shape {
                return Err(Error::tensor(path, name, format!("shape {:?}, expected {shape:?}", view.shape())));
            }
            let values = safetensors_f32(&view, path, name)?;
            match values.iter().all(|v| v.is_finite()) {
                true => Ok(values),
                false => Err(Error::tensor(path, name, "holds a value that is not a finite number")),
            }
        };
        if let Some(extra) = file.names().into_iter().find(|n| ![TABLE, W1, B1, W2, B2].contains(n)) {
            return Err(Error::tensor(path, extra, "not a tensor of a LLaRA projector"));
        }
        let tensor2 =
            |values: Vec<f32>, shape: [usize; 2]| Tensor::<2>::from_data(TensorData::new(values, shape), device);
        let tensor1 = |values: Vec<f32>| Tensor::<1>::from_data(TensorData::new(values, [hidden]), device);
        let table = tensor2(read(TABLE, &[items, d_rec])?, [items, d_rec]);
        let w1 = tensor2(transpose(&read(W1, &[hidden, d_rec])?, hidden, d_rec), [d_rec, hidden]);
        let w2 = tensor2(transpose(&read(W2, &[hidden, hidden])?, hidden, hidden), [hidden, hidden]);
        let (b1, b2) = (tensor1(read(B1, &[hidden])?), tensor1(read(B2, &[hidden])?));
        Ok(Self::from_parts(table, [w1, w2], [b1, b2]))
    }
}

/// PyTorch's `nn.Linear` initialisation, as `[in, out]` weight and `[out]` bias.
fn linear_init(d_in: usize, d_out: usize, seed: u64, device: &Device) -> (Tensor<2>, Tensor<1>) {
    let bound = 1.0 / (d_in as f32).sqrt();
    let mut rng = StdRng::seed_from_u64(seed);
    let w: Vec<f32> = (0..d_in * d_out).map(|_| rng.random_range(-bound..bound)).collect();
    let b: Vec<f32> = (0..d_out).map(|_| rng.random_range(-bound..bound)).collect();
    (
        Tensor::from_data(TensorData::new(w, [d_in, d_out]), device),
        Tensor::from_data(TensorData::new(b, [d_out]), device),
    )
}

fn fnv(name: &str) -> u64 {
    fnv1a(FNV_OFFSET, name.as_bytes())
}

/// A trainable parameter whose id comes from its name, so a projector loaded from a checkpoint
/// has the ids the optimizer's saved state is keyed by.
fn named<const D: usize>(name: &str, value: Tensor<D>) -> Param<Tensor<D>> {
    let mut param = Param::from_tensor(value);
    param.id = ParamId::from(fnv(&format!("llara.{name}")));
    param
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::LoraConfig;
    use crate::model::decoding::batch::left_pad;
    use crate::model::decoding::generate::{beam_search, beam_search_embedded, BeamConfig, PromptBatch};
    use crate::model::llama::tests::{int_tensor, max_abs_diff, random_weights, small_config, small_model};
    use crate::model::llama::Llama;
    use crate::train::lm::{lm_loss, LmExample};

    const ITEMS: usize = 20;

    fn table(device: &Device) -> Tensor<2> {
        let mut rng = StdRng::seed_from_u64(17);
        let values: Vec<f32> = (0..ITEMS * 8).map(|_| rng.random_range(-1.0..1.0)).collect();
        Tensor::from_data(TensorData::new(values, [ITEMS, 8]), device)
    }

    fn llara(seed: u64) -> Llama {
        let model = small_model(seed);
        let device = model.device();
        model.with_items(table(&device), 3).unwrap()
    }

    /// Token ids with two slots (items 7 and 12) among text tokens.
    fn hybrid() -> Vec<u32> {
        vec![4, 9, item_slot(7), 11, 3, item_slot(12), 5, 6]
    }

    #[test]
    fn slots_receive_exactly_the_projected_rows_and_text_is_unchanged() {
        let model = llara(5);
        let device = model.device();
        let ids = hybrid();
        let tokens = int_tensor(ids.iter().map(|&t| t as i64).collect(), [1, ids.len()], &device);
        let x = model.embed(tokens).reshape([ids.len(), 64]);
        let projector = model.item_projector().unwrap();
        for (i, &id) in ids.iter().enumerate() {
            let row = x.clone().narrow(0, i, 1);
            let want = match slot_item(id) {
                Some(item) => projector.project(projector.table().narrow(0, item as usize, 1)),
                None => model.embed_tokens.val().narrow(0, id as usize, 1),
            };
            assert_eq!(max_abs_diff(row, want), 0.0, "position {i}");
        }
        // Without slots, a LLaRA model embeds text exactly as the plain model does.
        let text = int_tensor(vec![4, 9, 11, 3], [1, 4], &device);
        assert_eq!(max_abs_diff(model.embed(text.clone()), small_model(5).embed(text)), 0.0);
    }

    #[test]
    fn slots_are_checked_against_the_table_and_the_model() {
        let (model, plain) = (llara(5), small_model(5));
        model.check_input_ids(&hybrid()).unwrap();
        let err = model.check_input_ids(&[1, item_slot(ITEMS as u32)]).unwrap_err().to_string();
        assert!(err.contains(&format!("item {ITEMS}")), "{err}");
        assert!(model.check_input_ids(&[item_slot(0)]).is_err(), "row 0 is padding");
        let err = plain.check_input_ids(&hybrid()).unwrap_err().to_string();
        assert!(err.contains("no item projector"), "{err}");
        assert!(left_pad(&plain, &[hybrid()]).is_err());
    }

    #[test]
    fn gradients_reach_the_projector_and_the_adapter_but_not_the_table_or_the_base() {
        let device = Device::flex().autodiff();
        let config = small_config();
        let model = Llama::from_weights(&config, &random_weights(&config, 2), &device)
            .unwrap()
            .with_items(table(&device), 4)
            .unwrap()
            .with_lora(&LoraConfig { dropout: 0.0, ..LoraConfig::default() }, 9)
            .unwrap();
        let example = LmExample::response_only(&hybrid(), &[21, 22, 2]);
        let grads = lm_loss(&model, &[&example], 0).unwrap().backward();
        let p = model.item_projector().unwrap();
        let norm = |g: Option<Tensor<2>>| g.map(|g| g.abs().sum().into_scalar::<f32>());
        for (name, g) in [("w1", norm(p.w1.val().grad(&grads))), ("w2", norm(p.w2.val().grad(&grads)))] {
            assert!(g.is_some_and(|g| g > 0.0), "projector {name}: {g:?}");
        }
        assert!(p.b1.val().grad(&grads).is_some() && p.b2.val().grad(&grads).is_some());
        let q = &model.layers[0].self_attn.q_proj;
        let b = norm(q.adapter.as_ref().unwrap().b.val().grad(&grads));
        assert!(b.is_some_and(|g| g > 0.0), "LoRA B: {b:?}");
        assert!(p.table.val().grad(&grads).is_none(), "the item table is frozen");
        assert!(model.embed_tokens.val().grad(&grads).is_none(), "token embeddings are frozen");
        assert!(q.weight.val().grad(&grads).is_none(), "base projections are frozen");
    }

    #[test]
    fn beam_search_from_input_embeddings_equals_beam_search_from_tokens() {
        let model = llara(7);
        let plain = small_model(7);
        let device = model.device();
        let config = BeamConfig { num_beams: 3, num_return_sequences: 3, max_new_tokens: 6, ..BeamConfig::new(2) };
        let text: Vec<Vec<u32>> = vec![vec![3, 14, 15, 92], vec![65, 3]];
        // Without slots: the token embeddings handed in as embeddings; and a LLaRA model on
        // text-only prompts decodes as the plain model.
        let (tokens, mask) = left_pad(&plain, &text).unwrap();
        let embeddings = burn::tensor::module::embedding(plain.embed_tokens.val(), tokens);
        let from_tokens = beam_search(&plain, &text, &config).unwrap();
        assert_eq!(beam_search_embedded(&plain, PromptBatch { embeddings, mask }, &config).unwrap(), from_tokens);
        assert_eq!(beam_search(&model, &text, &config).unwrap(), from_tokens);
        // With slots: splicing the projected rows in by hand gives the same search.
        let prompts = vec![hybrid(), vec![8, item_slot(3), 10]];
        let (_, mask) = left_pad(&model, &prompts).unwrap();
        let p = model.item_projector().unwrap();
        let rows: Vec<Tensor<2>> = prompts
            .iter()
            .map(|ids| {
                let pad = hybrid().len() - ids.len();
                let embed = |id: u32| match slot_item(id) {
                    Some(item) => p.project(p.table().narrow(0, item as usize, 1)),
                    None => model.embed_tokens.val().narrow(0, id as usize, 1),
                };
                Tensor::cat(std::iter::repeat_n(0, pad).chain(ids.iter().copied()).map(embed).collect(), 0)
            })
            .collect();
        let embeddings = Tensor::stack(rows, 0);
        let by_hand = beam_search_embedded(&model, PromptBatch { embeddings, mask }, &config).unwrap();
        assert_eq!(beam_search(&model, &prompts, &config).unwrap(), by_hand);
        assert_ne!(
            by_hand,
            beam_search(&model.clone().with_items(table(&device), 99).unwrap(), &prompts, &config).unwrap(),
            "another projector changes the answers: the slots are read"
        );
    }

    #[test]
    fn the_projector_file_round_trips_and_damage_is_named() {
        let model = llara(5);
        let dir = std::env::temp_dir().join(format!("soft-projector-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        model.save_projector(&dir).unwrap();
        let loaded = small_model(5).load_projector(&dir).unwrap();
        let ids = hybrid();
        let device = model.device();
        let tokens = int_tensor(ids.iter().map(|&t| t as i64).collect(), [1, ids.len()], &device);
        assert_eq!(max_abs_diff(loaded.embed(tokens.clone()), model.embed(tokens)), 0.0);

        let path = dir.join(PROJECTOR_FILE);
        let good = std::fs::read(&path).unwrap();
        let check = |bytes: &[u8], hidden: usize, want: &str| {
            let err = ItemProjector::from_safetensors(bytes, &path, hidden, &device).unwrap_err().to_string();
            assert!(err.contains(PROJECTOR_FILE) && err.contains(want), "{err}");
        };
        check(&good[..good.len() / 2], 64, "");
        check(&good, 32, W1);
        // A NaN in the first layer's weights.
        let projector = model.item_projector().unwrap();
        let w1 = projector.w1.val().detach();
        let nan = w1.clone().mask_fill(w1.clone().equal_elem(w1.clone().max().into_scalar::<f32>()), f32::NAN);
        let broken = ItemProjector { w1: Param::from_tensor(nan), ..projector.clone() };
        check(&broken.to_safetensors(&path).unwrap(), 64, "finite");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_fresh_projector_depends_on_its_seed_only() {
        let device = Device::flex();
        let a = ItemProjector::new(table(&device), 64, 1);
        let b = ItemProjector::new(table(&device), 64, 1);
        let c = a.fresh(2);
        assert_eq!(max_abs_diff(a.w1.val(), b.w1.val()), 0.0);
        assert!(max_abs_diff(a.w1.val(), c.w1.val()) > 0.0);
        assert_eq!(max_abs_diff(a.table(), c.table()), 0.0);
    }
}
