//! The language-model objective shared by every stage.
//!
//! An example is a token sequence with a flag per token saying whether the model is trained to
//! predict it (pre-training: every token; instruction tuning: the response and its EOS only).
//! The loss reads logits only at flagged positions: the LM head over the full vocabulary is the
//! most expensive op of a small model's step, and prompt positions would be discarded anyway.

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use tokenizers::Tokenizer;

use crate::loss::nll;
use crate::model::decoding::batch::left_pad;
use crate::model::formats::tokenizer::encode;
use crate::model::llama::Llama;
use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LmExample {
    pub tokens: Vec<u32>,
    /// `trained[i]`: token i is a prediction target (token 0 never is: nothing precedes it).
    pub trained: Vec<bool>,
}

impl LmExample {
    /// Every token after the first is a target.
    pub fn full(tokens: Vec<u32>) -> Self {
        let trained = vec![true; tokens.len()];
        Self { tokens, trained }
    }

    /// Prompt tokens are context only; the response tokens are the targets.
    pub fn response_only(prompt: &[u32], response: &[u32]) -> Self {
        let tokens = [prompt, response].concat();
        let trained = (0..tokens.len()).map(|i| i >= prompt.len()).collect();
        Self { tokens, trained }
    }

    pub fn targets(&self) -> usize {
        self.trained.iter().skip(1).filter(|&&t| t).count()
    }
}

/// `text`'s tokens then EOS: how every response (and every pre-training title) the model
/// learns to write ends.
pub fn tokens_with_eos(tokenizer: &Tokenizer, text: &str, eos: u32) -> Result<Vec<u32>> {
    let mut ids = encode(tokenizer, text)?;
    ids.push(eos);
    Ok(ids)
}

/// Inputs, attention mask and the flat indices / ids of the trained positions for a batch,
/// right-padded to its longest example.
struct Batch {
    tokens: Tensor<2, Int>,
    mask: Tensor<2, Int>,
    positions: Tensor<1, Int>,
    targets: Tensor<1, Int>,
}

fn batch(examples: &[&LmExample], pad: u32, device: &Device) -> Option<Batch> {
    let t = examples.iter().map(|e| e.tokens.len().saturating_sub(1)).max()?;
    if t == 0 {
        return None;
    }
    let b = examples.len();
    let (mut tokens, mut mask) = (vec![pad as i64; b * t], vec![0i64; b * t]);
    let (mut positions, mut targets) = (Vec::new(), Vec::new());
    for (row, e) in examples.iter().enumerate() {
        for i in 0..e.tokens.len().saturating_sub(1) {
            tokens[row * t + i] = e.tokens[i] as i64;
            mask[row * t + i] = 1;
            if e.trained[i + 1] {
                positions.push((row * t + i) as i64);
                targets.push(e.tokens[i + 1] as i64);
            }
        }
    }
    if positions.is_empty() {
        return None;
    }
    let n = positions.len();
    Some(Batch {
        tokens: Tensor::from_data(TensorData::new(tokens, [b, t]), device),
        mask: Tensor::from_data(TensorData::new(mask, [b, t]), device),
        positions: Tensor::from_data(TensorData::new(positions, [n]), device),
        targets: Tensor::from_data(TensorData::new(targets, [n]), device),
    })
}

/// NLL of `targets` `[N]` predicted from the hidden states `[B, T, D]` at the flat positions
/// `positions` `[N]` (row-major over B x T): the LM head runs on those N rows only.
fn picked_nll(model: &Llama, hidden: Tensor<3>, positions: Tensor<1, Int>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [b, t, d] = hidden.dims();
    let picked = hidden.reshape([b * t, d]).select(0, positions);
    let n = picked.dims()[0];
    nll(model.logits(picked.unsqueeze::<3>()).reshape([n, model.config().vocab_size]), targets)
}

/// Negative log-likelihood of every trained token, `[N]`, in batch order.
fn token_nll(model: &Llama, b: Batch) -> Tensor<1> {
    let hidden = model.hidden_states(b.tokens, b.mask, None);
    picked_nll(model, hidden, b.positions, b.targets)
}

/// Mean loss over the trained tokens of `examples`; `None` when none has a target.
pub fn lm_loss(model: &Llama, examples: &[&LmExample], pad: u32) -> Option<Tensor<1>> {
    let b = batch(examples, pad, &model.device())?;
    Some(token_nll(model, b).mean())
}

/// Mean loss of each response set over prompts it shares with the others: `responses[s][i]` is
/// set `s`'s response (EOS included) to `prompts[i]`. The prompts go through the model once and
/// their keys and values serve every set — SOFT trains each prompt on its real and its
/// distilled target, and a prompt is ~15 times longer than a title, so this nearly halves its
/// step. Equal to [`lm_loss`] on prompt + response examples, one set at a time.
pub fn shared_prompt_losses(model: &Llama, prompts: &[&[u32]], responses: &[Vec<&[u32]>]) -> Result<Vec<Tensor<1>>> {
    let (b, sets) = (prompts.len(), responses.len());
    if b == 0 || sets == 0 || responses.iter().any(|r| r.len() != b) {
        return Err(Error::Input(format!("shared_prompt_losses: {b} prompts, response sets of other sizes")));
    }
    if let Some((s, i)) = (0..sets).flat_map(|s| (0..b).map(move |i| (s, i))).find(|&(s, i)| responses[s][i].is_empty())
    {
        return Err(Error::Input(format!("response {i} of set {s} is empty")));
    }
    let device = model.device();
    let (tokens, mask) = left_pad(model, prompts)?;
    let width = responses.iter().flatten().map(|r| r.len()).max().unwrap_or(1);
    let mut cache = model.new_cache(tokens.dims()[1]);
    let prompt_hidden = model.hidden_states(tokens, mask, Some(&mut cache));
    let t = prompt_hidden.dims()[1];
    // Row i·sets + s of the continuation batch is set s's response to prompt i: the rows of a
    // prompt are neighbours, so they read its keys and values as one shared prefix, uncopied.
    cache.share_prefix(width);
    let rows: Vec<usize> = (0..b).flat_map(|i| std::iter::repeat_n(i, sets)).collect();
    cache.reorder(&rows);
    let last = prompt_hidden.narrow(1, t - 1, 1);
    let hidden_size = last.dims()[2];
    let last = last.repeat_dim(1, sets).reshape([b * sets, 1, hidden_size]);

    let n = sets * b;
    let (mut cont, mut cont_mask) = (vec![0i64; n * width], vec![0i64; n * width]);
    let (mut positions, mut targets, mut counts) = (Vec::new(), Vec::new(), vec![0usize; sets]);
    for (s, set) in responses.iter().enumerate() {
        for (i, r) in set.iter().enumerate() {
            let row = i * sets + s;
            for (j, &tok) in r.iter().enumerate() {
                cont[row * width + j] = tok as i64;
                cont_mask[row * width + j] = 1;
                // Token j is predicted from the hidden state before it: the prompt's last for j = 0.
                positions.push((row * width + j) as i64);
                targets.push(tok as i64);
            }
            counts[s] += r.len();
        }
    }
    // The last response token is fed only to keep the shapes simple; its output is never read.
    let cont = Tensor::<2, Int>::from_data(TensorData::new(cont, [n, width]), &device);
    let cont_mask = Tensor::<2, Int>::from_data(TensorData::new(cont_mask, [n, width]), &device);
    // Responses are text: no item slot to project.
    let cont_hidden = model.hidden_states_from_embeddings(model.embed_text(cont), cont_mask, Some(&mut cache));
    let hidden = if width > 1 { Tensor::cat(vec![last, cont_hidden.narrow(1, 0, width - 1)], 1) } else { last };
    let total = positions.len();
    let positions = Tensor::<1, Int>::from_data(TensorData::new(positions, [total]), &device);
    let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [total]), &device);
    let nll = picked_nll(model, hidden, positions, targets);
    let mut start = 0;
    Ok(counts
        .into_iter()
        .map(|c| {
            let part = nll.clone().narrow(0, start, c).mean();
            start += c;
            part
        })
        .collect())
}

/// Summed NLL and token count over `examples`, evaluated `batch_size` at a time without
/// gradients: perplexity = exp(sum / count).
pub fn total_nll(model: &Llama, examples: &[LmExample], pad: u32, batch_size: usize) -> (f64, usize) {
    let model = model.valid();
    let (mut sum, mut count) = (0.0f64, 0usize);
    let refs: Vec<&LmExample> = examples.iter().collect();
    for chunk in refs.chunks(batch_size.max(1)) {
        if let Some(b) = batch(chunk, pad, &model.device()) {
            let nll = token_nll(&model, b);
            count += nll.dims()[0];
            sum += nll.sum().into_scalar::<f32>() as f64;
        }
    }
    (sum, count)
}

#[cfg(test)]
mod tests {
    use burn::tensor::activation::log_softmax;

    use super::*;
    use crate::train::test_model;

    #[test]
    fn response_only_masking_counts_only_response_tokens() {
        let e = LmExample::response_only(&[5, 6, 7], &[8, 9, 2]);
        assert_eq!(e.tokens, vec![5, 6, 7, 8, 9, 2]);
        assert_eq!(e.trained, vec![false, false, false, true, true, true]);
        assert_eq!(e.targets(), 3);
        assert_eq!(LmExample::full(vec![1, 2, 3]).targets(), 2);
    }

    #[test]
    fn masked_loss_equals_mean_nll_of_response_tokens_only() {
        let device = Device::flex();
        let model = test_model(&device);
        let e = LmExample::response_only(&[3, 4, 5, 6], &[7, 8]);
        // Reference: full logits, pick the two response predictions by hand.
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(vec![3i64, 4, 5, 6, 7], [1, 5]), &device);
        let mask = Tensor::<2, Int>::ones([1, 5], &device);
        let logp = log_softmax(model.forward(tokens, mask, None), 2).into_data().convert::<f32>();
        let logp = logp.as_slice::<f32>().unwrap();
        let want = -(logp[3 * 32 + 7] + logp[4 * 32 + 8]) / 2.0;
        let got: f32 = lm_loss(&model, &[&e], 0).unwrap().into_scalar();
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        // Padding another, shorter example into the batch leaves this one's terms unchanged.
        let short = LmExample::full(vec![1, 2]);
        let (sum, n) = total_nll(&model, &[e.clone(), short], 0, 2);
        let (alone, _) = total_nll(&model, &[e], 0, 1);
        assert_eq!(n, 3);
        assert!(sum > alone);
    }

    #[test]
    fn shared_prompt_losses_equal_separate_response_losses() {
        let device = Device::flex();
        let model = test_model(&device);
        let prompts: [&[u32]; 2] = [&[3, 4, 5, 6], &[9, 8]];
        let real: Vec<&[u32]> = vec![&[7, 8, 1], &[2]];
        let distilled: Vec<&[u32]> = vec![&[10], &[11, 12, 13, 1]];
        let got = shared_prompt_losses(&model, &prompts, &[real.clone(), distilled.clone()]).unwrap();
        for (set, loss) in [real, distilled].iter().zip(got) {
            let examples: Vec<LmExample> =
                prompts.iter().zip(set).map(|(p, r)| LmExample::response_only(p, r)).collect();
            let refs: Vec<&LmExample> = examples.iter().collect();
            let want: f32 = lm_loss(&model, &refs, 0).unwrap().into_scalar();
            let got: f32 = loss.into_scalar();
            assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        }
        assert!(shared_prompt_losses(&model, &prompts, &[vec![&[1u32][..]]]).is_err());
    }
}
