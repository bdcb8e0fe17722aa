//! Pre-training the `tiny` preset: a BPE tokenizer and a small Llama trained as a causal LM on
//! the dataset's text — every item title, and the title lists of training-period histories —
//! so that, like a real LLM, it knows the titles before any recommendation tuning.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::data::prompt::response;
use crate::data::{Catalog, Window};
use crate::model::config::LlamaConfig;
use crate::model::formats::tokenizer::{train_bpe, SpecialIds};
use crate::model::llama::Llama;
use crate::progress::{Event, Progress};
use crate::train::lm::{tokens_with_eos, total_nll, LmExample};
use crate::train::trainer::{LmTrainer, TrainConfig};
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    pub vocab_size: usize,
    /// Tokens per training sequence (documents are packed back to back).
    pub block_len: usize,
    pub steps: usize,
    /// Titles the perplexity is measured on (a seeded sample; all when fewer).
    pub ppl_titles: usize,
    pub train: TrainConfig,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            vocab_size: 4096,
            block_len: 128,
            steps: 160,
            ppl_titles: 1000,
            train: TrainConfig {
                lr: 2e-3,
                warmup_steps: 30,
                weight_decay: 0.01,
                micro_batch: 16,
                grad_accum: 1,
                seed: 42,
                max_steps: None,
                activation_checkpointing: false,
                base_dtype: Default::default(),
                devices: 1,
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainReport {
    pub config: PretrainConfig,
    pub model: LlamaConfig,
    pub parameters: usize,
    pub corpus_docs: usize,
    pub corpus_tokens: usize,
    /// Per-token perplexity of the sampled catalog titles (quoted, + EOS) before and after training.
    pub title_ppl_before: f64,
    pub title_ppl_after: f64,
    pub losses: Vec<f32>,
    pub seconds: f64,
    pub tokens_per_second: f64,
}

/// One document per title (`"Title"`, the form the model later learns to answer in) and per
/// training window (`"A", "B", ...`).
pub fn corpus(catalog: &Catalog, train_windows: &[Window]) -> Vec<String> {
    let quoted = |id: u32| response(catalog.title(id).unwrap_or_default());
    let mut docs: Vec<String> = catalog.iter().map(|(id, _)| quoted(id)).collect();
    docs.extend(train_windows.iter().map(|w| w.items.iter().map(|&id| quoted(id)).collect::<Vec<_>>().join(", ")));
    docs
}

/// Every title as its own example, `"Title"` then EOS: what the title perplexity is measured on.
pub fn title_examples(tokenizer: &Tokenizer, catalog: &Catalog, eos: u32) -> Result<Vec<LmExample>> {
    catalog.iter().map(|(_, t)| Ok(LmExample::full(tokens_with_eos(tokenizer, &response(t), eos)?))).collect()
}

pub fn perplexity(model: &Llama, examples: &[LmExample], pad: u32) -> f64 {
    let (sum, count) = total_nll(model, examples, pad, 256);
    (sum / count.max(1) as f64).exp()
}

fn sample(mut items: Vec<LmExample>, n: usize, seed: u64) -> Vec<LmExample> {
    items.shuffle(&mut StdRng::seed_from_u64(seed));
    items.truncate(n);
    items
}

/// Documents + EOS packed into one stream, cut into blocks of `block_len + 1` tokens.
fn packed_blocks(
    tokenizer: &Tokenizer,
    docs: &[String],
    eos: u32,
    block_len: usize,
) -> Result<(Vec<LmExample>, usize)> {
    let encoded =
        tokenizer.encode_batch(docs.to_vec(), false).map_err(|e| Error::tokenizer("encoding the corpus", e))?;
    let mut stream = Vec::new();
    for e in encoded {
        stream.extend_from_slice(e.get_ids());
        stream.push(eos);
    }
    let blocks = stream.chunks_exact(block_len + 1).map(|c| LmExample::full(c.to_vec())).collect();
    Ok((blocks, stream.len()))
}

/// Trains the tokenizer and the model; returns the model (inference mode), tokenizer and report.
pub fn pretrain(
    config: &PretrainConfig,
    catalog: &Catalog,
    train_windows: &[Window],
    device: &burn::tensor::Device,
    progress: Progress,
) -> Result<(Llama, Tokenizer, PretrainReport)> {
    let started = std::time::Instant::now();
    let docs = corpus(catalog, train_windows);
    progress(Event::Note(format!("training a {}-token BPE tokenizer on {} documents", config.vocab_size, docs.len())));
    // Titles carry the whole vocabulary; the lists only repeat them, and would cost minutes.
    let tokenizer = train_bpe(&docs[..catalog.len()], config.vocab_size, &[])?;
    let special = SpecialIds::endoftext(&tokenizer)?;
    let model_config = LlamaConfig::tiny(tokenizer.get_vocab_size(true));
    let (blocks, corpus_tokens) = packed_blocks(&tokenizer, &docs, special.eos, config.block_len)?;
    if blocks.is_empty() {
        return Err(Error::Input(format!(
            "pre-training corpus is shorter than one block of {} tokens",
            config.block_len + 1
        )));
    }
    let titles = sample(title_examples(&tokenizer, catalog, special.eos)?, config.ppl_titles, config.train.seed);

    let ad = device.clone().autodiff();
    ad.seed(config.train.seed);
    // Pre-training trains every weight; the model's own default is frozen base + LoRA.
    let model = burn::module::Module::set_require_grad(Llama::init(&model_config, &ad)?, true);
    let parameters = burn::module::Module::num_params(&model);
    let title_ppl_before = perplexity(&model, &titles, special.pad);
    progress(Event::Note(format!("{parameters} parameters; title perplexity before training {title_ppl_before:.1}")));

    let mut trainer = LmTrainer::new(model, config.train.clone(), special.pad);
    let mut rng = StdRng::seed_from_u64(config.train.seed);
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    let mut cursor = order.len();
    let mut losses = Vec::with_capacity(config.steps);
    let train_started = std::time::Instant::now();
    progress(Event::Begin { what: "pretrain", total: Some(config.steps as u64) });
    while trainer.steps < config.steps {
        if cursor + config.train.micro_batch > order.len() {
            order.shuffle(&mut rng);
            cursor = 0;
        }
        let batch: Vec<&LmExample> =
            order[cursor..cursor + config.train.micro_batch.min(order.len())].iter().map(|&i| &blocks[i]).collect();
        cursor += batch.len();
        if let Some(loss) = trainer.micro_step(&batch)? {
            losses.push(loss);
            progress(Event::Step { loss: Some(loss) });
        }
    }
    progress(Event::End);
    let train_seconds = train_started.elapsed().as_secs_f64();
    let model = burn::module::Module::valid(&trainer.model);
    let title_ppl_after = perplexity(&model, &titles, special.pad);
    progress(Event::Note(format!("title perplexity {title_ppl_before:.1} -> {title_ppl_after:.1}")));
    let trained_tokens = config.steps * config.train.micro_batch * config.train.grad_accum * config.block_len;
    let report = PretrainReport {
        config: config.clone(),
        model: model_config,
        parameters,
        corpus_docs: docs.len(),
        corpus_tokens,
        title_ppl_before,
        title_ppl_after,
        losses,
        seconds: started.elapsed().as_secs_f64(),
        tokens_per_second: trained_tokens as f64 / train_seconds.max(1e-9),
    };
    Ok((model, tokenizer, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::windows::ring_windows;
    use crate::model::formats::tokenizer::ENDOFTEXT;

    #[test]
    fn small_pretraining_lowers_title_perplexity() {
        let catalog = Catalog::from_titles((1..=40).map(|i| (i, format!("The Book of Number {i}"))));
        let windows = ring_windows(60, 40, |_| 5);
        let config = PretrainConfig {
            vocab_size: 300,
            block_len: 32,
            steps: 30,
            ppl_titles: 1000,
            train: TrainConfig {
                lr: 3e-3,
                warmup_steps: 5,
                weight_decay: 0.0,
                micro_batch: 4,
                grad_accum: 1,
                seed: 1,
                max_steps: None,
                activation_checkpointing: false,
                base_dtype: Default::default(),
                devices: 1,
            },
        };
        let (_, tok, report) =
            pretrain(&config, &catalog, &windows, &burn::tensor::Device::flex(), &mut crate::progress::silent).unwrap();
        assert!(
            report.title_ppl_after < report.title_ppl_before / 2.0,
            "{} -> {}",
            report.title_ppl_before,
            report.title_ppl_after
        );
        assert_eq!(tok.token_to_id(ENDOFTEXT), Some(0));
        assert_eq!(report.losses.len(), 30);
    }
}
