//! SASRec (Kang & McAuley 2018): a causal self-attention encoder over item ids; the hidden
//! state at the last position scores every item by a dot product with its embedding.
//! Trained with full-softmax cross-entropy, early-stopped on valid NDCG@10.

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{activation, Bool, Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::{Catalog, Window};
use crate::early_stop::EarlyStop;
use crate::eval::{evaluate, top_k, Metrics, Prediction};
use crate::loss::nll;
use crate::model::dropout::dropout;
use crate::progress::{Event, Progress};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SasRecConfig {
    pub d_model: usize,
    pub n_blocks: usize,
    pub n_heads: usize,
    pub max_len: usize,
    pub dropout: f64,
    pub lr: f64,
    pub weight_decay: f32,
    pub batch_size: usize,
    pub max_epochs: usize,
    /// Epochs without a better valid NDCG@10 before stopping.
    pub patience: usize,
    pub seed: u64,
}

impl Default for SasRecConfig {
    fn default() -> Self {
        Self {
            d_model: 64,
            n_blocks: 2,
            n_heads: 1,
            max_len: 10,
            dropout: 0.3,
            lr: 1e-3,
            weight_decay: 0.0,
            batch_size: 128,
            max_epochs: 20,
            patience: 2,
            seed: 42,
        }
    }
}

#[derive(Module, Debug)]
struct Block {
    attn_norm: LayerNorm,
    qkv: Linear,
    out: Linear,
    ffn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    dropout: Dropout,
    n_heads: usize,
}

impl Block {
    fn new(c: &SasRecConfig, device: &Device) -> Self {
        let d = c.d_model;
        Self {
            attn_norm: LayerNormConfig::new(d).init(device),
            qkv: LinearConfig::new(d, 3 * d).init(device),
            out: LinearConfig::new(d, d).init(device),
            ffn_norm: LayerNormConfig::new(d).init(device),
            ffn_in: LinearConfig::new(d, d).init(device),
            ffn_out: LinearConfig::new(d, d).init(device),
            dropout: DropoutConfig::new(c.dropout).init(),
            n_heads: c.n_heads,
        }
    }

    /// `pad` is true at padding keys, shaped `[B, H, T, T]`.
    fn forward(&self, x: Tensor<3>, pad: Tensor<4, Bool>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let h = self.n_heads;
        let qkv = self.qkv.forward(self.attn_norm.forward(x.clone()));
        let heads = |i: usize| qkv.clone().narrow(2, i * d, d).reshape([b, t, h, d / h]).swap_dims(1, 2);
        let options = AttentionModuleOptions { is_causal: true, ..Default::default() };
        let ctx = attention(heads(0), heads(1), heads(2), Some(pad), None, options);
        let ctx = ctx.swap_dims(1, 2).reshape([b, t, d]);
        let x = x + dropout(&self.dropout, self.out.forward(ctx));
        let ffn = self
            .ffn_out
            .forward(dropout(&self.dropout, activation::gelu(self.ffn_in.forward(self.ffn_norm.forward(x.clone())))));
        x + dropout(&self.dropout, ffn)
    }
}

#[derive(Module, Debug)]
pub struct SasRec {
    item_emb: Embedding,
    pos_emb: Embedding,
    blocks: Vec<Block>,
    norm: LayerNorm,
    dropout: Dropout,
    max_len: usize,
}

impl SasRec {
    /// Item ids run 1..=`max_item`; row 0 of the embedding is padding.
    pub fn new(config: &SasRecConfig, max_item: u32, device: &Device) -> Self {
        let init = Initializer::Normal { mean: 0.0, std: 0.02 };
        Self {
            item_emb: EmbeddingConfig::new(max_item as usize + 1, config.d_model)
                .with_initializer(init.clone())
                .init(device),
            pos_emb: EmbeddingConfig::new(config.max_len, config.d_model).with_initializer(init).init(device),
            blocks: (0..config.n_blocks).map(|_| Block::new(config, device)).collect(),
            norm: LayerNormConfig::new(config.d_model).init(device),
            dropout: DropoutConfig::new(config.dropout).init(),
            max_len: config.max_len,
        }
    }

    pub fn max_item(&self) -> u32 {
        self.item_emb.weight.dims()[0] as u32 - 1
    }

    /// The learned item embeddings `[max_item + 1, d_model]` (row 0 padding), detached: the
    /// collaborative signal LLaRA's projector hands the language model.
    pub fn item_table(&self) -> Tensor<2> {
        self.item_emb.weight.val().detach()
    }

    /// Hidden states `[B, T, D]` for left-padded id sequences `[B, T]` (0 = padding).
    fn encode(&self, seq: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = seq.dims();
        let device = seq.device();
        let keep = seq.clone().greater_elem(0).float().unsqueeze_dim::<3>(2); // [B, T, 1]
        let d = self.item_emb.weight.dims()[1];
        let positions = Tensor::<1, Int>::arange(0..t as i64, &device).unsqueeze::<2>().repeat_dim(0, b);
        let x = self.item_emb.forward(seq.clone()).mul_scalar((d as f64).sqrt()) + self.pos_emb.forward(positions);
        let mut x = dropout(&self.dropout, x) * keep.clone();
        let heads = self.blocks.first().map(|blk| blk.n_heads).unwrap_or(1);
        let pad = seq.equal_elem(0).unsqueeze_dims::<4>(&[1, 2]).expand([b, heads, t, t]);
        for block in &self.blocks {
            x = block.forward(x, pad.clone()) * keep.clone();
        }
        self.norm.forward(x)
    }

    /// Hidden state at the last position, `[B, D]`: what scores the next item.
    fn last_hidden(&self, seq: Tensor<2, Int>) -> Tensor<2> {
        let [b, t] = seq.dims();
        let hidden = self.encode(seq);
        let d = hidden.dims()[2];
        hidden.narrow(1, t - 1, 1).reshape([b, d])
    }

    /// Mean cross-entropy of the targets `[B]` over all items.
    fn loss(&self, seq: Tensor<2, Int>, targets: Tensor<1, Int>) -> Tensor<1> {
        nll(self.last_hidden(seq).matmul(self.item_emb.weight.val().transpose()), targets).mean()
    }

    /// The top-`k` grounding items of `catalog` for each history, best first.
    pub fn rank(&self, catalog: &Catalog, histories: &[&[u32]], k: usize) -> Vec<Vec<u32>> {
        let n = self.max_item() as usize + 1;
        // Items the model never saw score last; duplicates of a title never appear.
        let mut allowed = vec![false; n];
        let candidates = catalog.grounding_ids();
        candidates.iter().filter(|&&id| (id as usize) < n).for_each(|&id| allowed[id as usize] = true);
        let device = self.item_emb.weight.device();
        let mut out = Vec::with_capacity(histories.len());
        for chunk in histories.chunks(256) {
            let seq = self.batch(chunk.iter().copied(), &device);
            let scores =
                self.last_hidden(seq).matmul(self.item_emb.weight.val().transpose()).into_data().convert::<f32>();
            let scores = scores.as_slice::<f32>().expect("f32 scores");
            for row in scores.chunks(n) {
                let cost: Vec<f32> =
                    row.iter().zip(&allowed).map(|(s, &ok)| if ok { -s } else { f32::INFINITY }).collect();
                let mut ranked: Vec<u32> =
                    top_k(&cost, k).into_iter().filter(|&i| allowed[i]).map(|i| i as u32).collect();
                // Fill with unseen candidates so the ranking is over the whole catalog.
                ranked.extend(candidates.iter().filter(|&&id| id as usize >= n).take(k.saturating_sub(ranked.len())));
                out.push(ranked);
            }
        }
        out
    }

    /// Left-padded id sequences `[B, T]` of the last `max_len` ids; unknown ids (beyond the
    /// embedding table) become padding.
    fn batch<'a>(&self, seqs: impl Iterator<Item = &'a [u32]>, device: &Device) -> Tensor<2, Int> {
        let t = self.max_len;
        let max_item = self.max_item();
        let (mut ids, mut rows) = (Vec::new(), 0);
        for s in seqs {
            let s = &s[s.len().saturating_sub(t)..];
            ids.extend(std::iter::repeat_n(0, t - s.len()));
            ids.extend(s.iter().map(|&id| if id <= max_item { id as i64 } else { 0 }));
            rows += 1;
        }
        Tensor::from_data(TensorData::new(ids, [rows, t]), device)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: usize,
    pub loss: f32,
    pub valid: Metrics,
    pub seconds: f64,
}

/// Each training window is one example: its history predicts its target. Windows slide by one
/// item, so every interaction is a target once, with its full history of up to 10 items; a
/// loss at every position would see each interaction about ten times over.
pub fn train(
    config: &SasRecConfig,
    catalog: &Catalog,
    train: &[Window],
    valid: &[Window],
    device: &Device,
    progress: Progress,
) -> Result<(SasRec, Vec<EpochLog>, usize)> {
    if train.is_empty() || valid.is_empty() {
        return Err(Error::Input("SASRec needs non-empty training and validation windows".into()));
    }
    device.seed(config.seed);
    let ad = device.clone().autodiff();
    let mut model = SasRec::new(config, catalog.max_id(), &ad);
    let mut optim = AdamWConfig::new().with_weight_decay(config.weight_decay).init();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let valid_hist: Vec<&[u32]> = valid.iter().map(|w| w.history()).collect();
    let (mut logs, mut stop) = (Vec::new(), EarlyStop::new(config.patience));

    for epoch in 1..=config.max_epochs {
        let started = std::time::Instant::now();
        order.shuffle(&mut rng);
        progress(Event::Begin { what: "sasrec epoch", total: Some(order.len().div_ceil(config.batch_size) as u64) });
        let (mut sum, mut steps) = (0.0f32, 0);
        for chunk in order.chunks(config.batch_size) {
            let seq = model.batch(chunk.iter().map(|&i| train[i].history()), &ad);
            let targets: Vec<i64> = chunk.iter().map(|&i| train[i].target() as i64).collect();
            let targets = Tensor::from_data(TensorData::new(targets, [chunk.len()]), &ad);
            let loss = model.loss(seq, targets);
            let value: f32 = loss.clone().into_scalar();
            if !value.is_finite() {
                return Err(Error::NonFiniteLoss { what: "SASRec", value, at: format!("epoch {epoch}") });
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(config.lr, model, grads);
            sum += value;
            steps += 1;
            progress(Event::Step { loss: Some(value) });
        }
        progress(Event::End);
        let eval_model = model.valid();
        let preds: Vec<Prediction> = eval_model
            .rank(catalog, &valid_hist, crate::eval::RANKED_LEN)
            .into_iter()
            .zip(valid)
            .map(|(ranked, w)| Prediction { target: w.target(), generated: None, ranked })
            .collect();
        let metrics = evaluate(catalog, &preds);
        let loss = sum / steps as f32;
        progress(Event::Epoch { epoch, loss, hr_at_10: metrics.hr_at(10), ndcg_at_10: metrics.ndcg_at(10) });
        logs.push(EpochLog { epoch, loss, valid: metrics, seconds: started.elapsed().as_secs_f64() });
        if stop.update(epoch, metrics.ndcg_at(10), eval_model) {
            progress(Event::Note(stop.stop_note(epoch)));
            break;
        }
    }
    let (best_epoch, model) = stop.into_best()?;
    Ok((model, logs, best_epoch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::windows::ring_windows;

    #[test]
    fn learns_a_deterministic_successor_pattern() {
        // Item i is always followed by i + 1 (mod 20): a model that learns anything ranks it first.
        let catalog = Catalog::from_titles((1..=20).map(|i| (i, format!("item {i}"))));
        let windows = ring_windows(400, 20, |s| 2 + s % 9);
        let config = SasRecConfig {
            max_epochs: 8,
            patience: 8,
            d_model: 32,
            batch_size: 64,
            lr: 5e-3,
            dropout: 0.0,
            ..Default::default()
        };
        let (model, logs, _) =
            train(&config, &catalog, &windows[..300], &windows[300..], &Device::flex(), &mut crate::progress::silent)
                .unwrap();
        assert!(logs.last().unwrap().loss < logs[0].loss);
        assert!(logs.iter().map(|l| l.valid.hr_at(1)).fold(0.0, f64::max) > 0.9, "{logs:?}");
        let ranked = model.rank(&catalog, &[&[3, 4, 5]], 3);
        assert_eq!(ranked[0][0], 6);
    }
}
