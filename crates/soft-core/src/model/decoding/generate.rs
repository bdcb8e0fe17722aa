//! Decoding with the KV cache: greedy and batched beam search, free or constrained to a trie.
//!
//! Prompts of different lengths are left-padded into one batch, so every row's next token is
//! read at the same (last) column. Rows that finish are dropped from the cache, so the batch
//! shrinks as sequences end.

use crate::kernels::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::batch::left_pad;
use super::beam_search::keep_best;
pub use super::beam_search::{host_candidates, Beam, BeamConfig, BeamSearch, Hypothesis, Step};
use super::trie::TitleTrie;
use crate::model::kv_cache::KvCache;
use crate::model::llama::Llama;
use crate::model::weights::{host_values, host_values_async};
use crate::Result;

/// Greedy decoding: for each prompt, the most likely token at every step until EOS (not
/// included) or `max_new_tokens`.
pub fn greedy<S: AsRef<[u32]>>(
    model: &Llama,
    prompts: &[S],
    max_new_tokens: usize,
    eos_token_id: u32,
) -> Result<Vec<Vec<u32>>> {
    let prompts: Vec<&[u32]> = prompts.iter().map(AsRef::as_ref).collect();
    on_pool(model, || greedy_here(model, &prompts, max_new_tokens, eos_token_id))
}

/// Runs `search` on a thread of the pool that runs the products when `model` is on the CPU
/// backend: each step's ~200 parallel products (and attention) then share their work from
/// inside the pool, rather than the caller waking a worker and sleeping for every one (the
/// scheduler was ~15 % of a beam search's samples, 7 % of a greedy one's).
fn on_pool<T: Send>(model: &Llama, search: impl FnOnce() -> T + Send) -> T {
    #[cfg(not(target_arch = "wasm32"))]
    if model.device() == Device::flex() {
        return rayon::scope(|_| search());
    }
    let _ = model;
    search()
}

/// [`greedy`] on the calling thread.
fn greedy_here(model: &Llama, prompts: &[&[u32]], max_new_tokens: usize, eos_token_id: u32) -> Result<Vec<Vec<u32>>> {
    let batch = PromptBatch::from_tokens(model, prompts)?;
    let mut cache = model.new_cache(batch.len() + max_new_tokens);
    let mut outputs = vec![Vec::new(); prompts.len()];
    // The prompt each cache row belongs to.
    let mut active: Vec<usize> = (0..prompts.len()).collect();
    let mut logits = last_logits(model, batch, &mut cache);
    for step in 0..max_new_tokens {
        let next = read_ints(logits.argmax(1).reshape([active.len()]))?;
        let (mut rows, mut next_tokens) = (Vec::new(), Vec::new());
        for (row, (&prompt, &token)) in active.iter().zip(&next).enumerate() {
            let token = token as u32;
            if token != eos_token_id {
                outputs[prompt].push(token);
                rows.push(row);
                next_tokens.push(token);
            }
        }
        if rows.is_empty() || step + 1 == max_new_tokens {
            break;
        }
        active = rows.iter().map(|&r| active[r]).collect();
        logits = decode_step(model, &mut cache, &rows, &next_tokens);
    }
    Ok(outputs)
}

/// Batched beam search. Returns, per prompt, `num_return_sequences` hypotheses, best first.
///
/// Follows Hugging Face's `num_beams > 1` search: each step keeps the `num_beams` best
/// continuations out of `2·num_beams` candidates per prompt; a candidate ending in EOS among the
/// top `num_beams` becomes a finished hypothesis. A prompt is done once it has `num_beams`
/// finished hypotheses and its best running beam, scored at its current length, cannot beat the
/// worst of them (HF's `early_stopping=False` heuristic); at `max_new_tokens` the running beams
/// join the finished ones. With one beam this is greedy decoding.
///
/// With a [`BeamConfig::constraint`], only the tokens the trie allows each beam are candidates
/// (as HF's `prefix_allowed_tokens_fn`, log-probabilities still normalised over the whole
/// vocabulary), so a finished hypothesis is always one of the trie's sequences and an unfinished
/// one (cut by `max_new_tokens`) a prefix of one. A prompt with fewer allowed continuations than
/// beams keeps fewer beams, and may return fewer than `num_return_sequences` hypotheses.
pub fn beam_search<S: AsRef<[u32]>>(model: &Llama, prompts: &[S], config: &BeamConfig) -> Result<Vec<Vec<Hypothesis>>> {
    beam_search_embedded(model, PromptBatch::from_tokens(model, prompts)?, config)
}

/// [`beam_search`] from prompts given as input embeddings (`prompts`: left-padded, one row per
/// prompt): what a backbone that is not text alone (LLaRA) hands the model. With the token
/// embeddings of token prompts it is [`beam_search`].
pub fn beam_search_embedded(model: &Llama, prompts: PromptBatch, config: &BeamConfig) -> Result<Vec<Vec<Hypothesis>>> {
    // On the CPU backend the values are in memory already, and a partial selection on them
    // beats burn-flex's top-k, which sorts whole rows (BENCHMARKS.md: a profile of generation).
    let on_host = model.device() == Device::flex();
    on_pool(model, || beam_search_ranked(model, prompts, config, on_host))
}

/// [`beam_search`] with each step's candidates ranked on the host (`on_host`) or by the
/// device's top-k.
fn beam_search_ranked(
    model: &Llama,
    prompts: PromptBatch,
    config: &BeamConfig,
    on_host: bool,
) -> Result<Vec<Vec<Hypothesis>>> {
    let vocab = model.config().vocab_size;
    let (mut search, mut cache, mut logprobs) = start(model, prompts, config)?;
    loop {
        let n = search.candidates_needed();
        // Elsewhere ranked on the device: only 2·num_beams values per prompt come back.
        let candidates = match search.constraint() {
            _ if on_host => host_candidates(&search, &host_values::<f32, 2, _>(logprobs)?, n)?,
            None => top_candidates(logprobs, search.active(), search.running(), n, vocab)?,
            Some(trie) => allowed_candidates(logprobs, search.active(), search.running(), trie, n, vocab)?,
        };
        match search.advance(candidates)? {
            None => break,
            Some(step) => logprobs = log_softmax(decode_step(model, &mut cache, &step.rows, &step.tokens)),
        }
    }
    Ok(search.finish())
}

/// [`beam_search`] for devices that cannot read synchronously (WebGPU in a browser): each step's
/// log-probabilities are read back with an await and ranked on the host ([`host_candidates`]);
/// no device top-k, which panics on WebGPU in wasm (burn issue 5110). Same hypotheses as
/// [`beam_search`] up to ties between equal scores.
pub async fn beam_search_async<S: AsRef<[u32]>>(
    model: &Llama,
    prompts: &[S],
    config: &BeamConfig,
) -> Result<Vec<Vec<Hypothesis>>> {
    let (mut search, mut cache, mut logprobs) = start(model, PromptBatch::from_tokens(model, prompts)?, config)?;
    loop {
        let values: Vec<f32> = host_values_async(logprobs).await?;
        let candidates = host_candidates(&search, &values, search.candidates_needed())?;
        match search.advance(candidates)? {
            None => break,
            Some(step) => logprobs = log_softmax(decode_step(model, &mut cache, &step.rows, &step.tokens)),
        }
    }
    Ok(search.finish())
}

/// Per active prompt, its best `n` continuations, best first, as `(sum_logprob, beam·vocab +
/// token)`: a top-k over all of its beams' rows at once. Free decoding keeps every prompt at the
/// same number of beams (a step always finds `num_beams` non-EOS continuations), so the rows
/// reshape to one per prompt. Public for `benches/decoding.rs`.
#[doc(hidden)]
pub fn top_candidates(
    logprobs: Tensor<2>,
    active: &[usize],
    running: &[Vec<Beam>],
    n: usize,
    vocab: usize,
) -> Result<Vec<Vec<(f32, usize)>>> {
    let width = running[active[0]].len();
    let beam_scores: Vec<f32> = active.iter().flat_map(|&p| running[p].iter().map(|b| b.sum_logprob)).collect();
    let rows = beam_scores.len();
    let beam_scores = Tensor::<2>::from_data(TensorData::new(beam_scores, [rows, 1]), &logprobs.device());
    // Every continuation of every beam of a prompt, in one row per prompt.
    let totals = (logprobs + beam_scores).reshape([active.len(), width * vocab]);
    let (values, indices) = totals.topk_with_indices(n, 1);
    let values: Vec<f32> = host_values(values)?;
    let indices = read_ints(indices)?;
    Ok((0..active.len())
        .map(|a| {
            let mut candidates: Vec<(f32, usize)> =
                (a * n..(a + 1) * n).map(|j| (values[j], indices[j] as usize)).collect();
            candidates.sort_by(|x, y| y.0.total_cmp(&x.0));
            candidates
        })
        .collect())
}

/// [`top_candidates`] restricted to the tokens `trie` allows each beam. Rather than adding a
/// vocabulary-wide mask, only the allowed log-probabilities are gathered off the device (a
/// trie node has few children), so the cost follows the allowed sets, not the vocabulary, and
/// prompts may have different numbers of beams. A prompt can get fewer than `n` candidates.
/// Public for `benches/decoding.rs`.
#[doc(hidden)]
pub fn allowed_candidates(
    logprobs: Tensor<2>,
    active: &[usize],
    running: &[Vec<Beam>],
    trie: &TitleTrie,
    n: usize,
    vocab: usize,
) -> Result<Vec<Vec<(f32, usize)>>> {
    // Flat positions in `logprobs` of every allowed (beam, token), with the prompt-local index
    // `beam·vocab + token` and the beam's score; the cache row of a beam is its row here.
    let (mut positions, mut allowed, mut prompt_ends) = (Vec::new(), Vec::new(), Vec::with_capacity(active.len()));
    let mut row = 0;
    for &p in active {
        for (b, beam) in running[p].iter().enumerate() {
            for token in trie.allowed(beam.node) {
                positions.push((row * vocab + token as usize) as i64);
                allowed.push((beam.sum_logprob, b * vocab + token as usize));
            }
            row += 1;
        }
        prompt_ends.push(allowed.len());
    }
    if positions.is_empty() {
        return Ok(vec![Vec::new(); active.len()]);
    }
    let device = logprobs.device();
    let positions = Tensor::<1, Int>::from_data(TensorData::new(positions, [allowed.len()]), &device);
    let values = logprobs.reshape([row * vocab]).select(0, positions);
    let values: Vec<f32> = host_values(values)?;
    let by_score = |x: &(f32, usize), y: &(f32, usize)| y.0.total_cmp(&x.0);
    let mut begin = 0;
    Ok(prompt_ends
        .into_iter()
        .map(|end| {
            let mut candidates: Vec<(f32, usize)> =
                (begin..end).map(|j| (values[j] + allowed[j].0, allowed[j].1)).collect();
            begin = end;
            keep_best(&mut candidates, n, by_score);
            candidates
        })
        .collect())
}

/// Left-padded prompts as the model reads them: input embeddings `[B, T, hidden]` and the
/// attention mask `[B, T]` (1 = real position).
pub struct PromptBatch {
    pub embeddings: Tensor<3>,
    pub mask: Tensor<2, Int>,
}

impl PromptBatch {
    /// Token prompts (item slots included, see `model/projector.rs`), left-padded and embedded.
    pub fn from_tokens<S: AsRef<[u32]>>(model: &Llama, prompts: &[S]) -> Result<Self> {
        let (tokens, mask) = left_pad(model, prompts)?;
        Ok(Self { embeddings: model.embed(tokens), mask })
    }

    /// Prompts in the batch.
    pub fn rows(&self) -> usize {
        self.mask.dims()[0]
    }

    /// Positions per row (the longest prompt's length).
    pub fn len(&self) -> usize {
        self.mask.dims()[1]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The search's state, a cache sized for the whole answer, and the prompts' first log-probs
/// `[B, vocab]`: the start both drivers share.
fn start(model: &Llama, prompts: PromptBatch, config: &BeamConfig) -> Result<(BeamSearch, KvCache, Tensor<2>)> {
    let search = BeamSearch::new(config, model.config().vocab_size, prompts.rows())?;
    // Sized for the prompts alone: every beam of a prompt shares their keys and values, kept
    // contiguous, and the answers' go after them.
    let mut cache = model.new_cache(prompts.len());
    let logprobs = log_softmax(last_logits(model, prompts, &mut cache));
    cache.share_prefix(config.max_new_tokens);
    Ok((search, cache, logprobs))
}

/// Runs `inputs` through the model, extending `cache`, and returns the logits of the last
/// column, `[B, vocab]` (with left padding, every row's latest token).
fn last_logits(model: &Llama, inputs: PromptBatch, cache: &mut KvCache) -> Tensor<2> {
    let hidden = model.hidden_states_from_embeddings(inputs.embeddings, inputs.mask, Some(cache));
    let [b, t, _] = hidden.dims();
    // Only the last column goes through the LM head: vocab-wide logits for the whole prompt
    // would cost more than the rest of the model.
    model.logits(hidden.narrow(1, t - 1, 1)).reshape([b, model.config().vocab_size])
}

/// Keeps cache rows `rows` (in that order) and feeds each its next token; returns the new
/// last-token logits.
fn decode_step(model: &Llama, cache: &mut KvCache, rows: &[usize], tokens: &[u32]) -> Tensor<2> {
    let device = model.device();
    let n = rows.len();
    // Reordering copies every row's keys since the shared prefix: skip it when every row stays.
    if n != cache.batch_size() || rows.iter().enumerate().any(|(i, &r)| i != r) {
        cache.reorder(rows);
    }
    if let Some(logits) = super::fused_step::step(model, cache, tokens) {
        return logits;
    }
    let tokens = tokens.iter().map(|&t| t as i64).collect::<Vec<_>>();
    let tokens = Tensor::from_data(TensorData::new(tokens, [n, 1]), &device);
    // Generated tokens are never item slots.
    last_logits(model, PromptBatch { embeddings: model.embed_text(tokens), mask: Tensor::ones([n, 1], &device) }, cache)
}

fn read_ints<const D: usize>(t: Tensor<D, Int>) -> Result<Vec<i64>> {
    host_values(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::llama::tests::{int_tensor, small_model};
    use std::sync::Arc;

    fn prompts() -> Vec<Vec<u32>> {
        vec![vec![3, 14, 15, 92], vec![65], vec![35, 89, 79, 32, 38, 46]]
    }

    #[test]
    fn one_beam_equals_greedy() {
        let model = small_model(29);
        // Make EOS a token greedy decoding actually produces, so that stopping is exercised.
        let free = greedy(&model, &prompts(), 10, u32::MAX).unwrap();
        let eos = free[0][3];
        let expected = greedy(&model, &prompts(), 10, eos).unwrap();
        assert!(expected[0].len() <= 3);

        let config = BeamConfig { num_beams: 1, num_return_sequences: 1, max_new_tokens: 10, ..BeamConfig::new(eos) };
        let beams = beam_search(&model, &prompts(), &config).unwrap();
        for (i, (hyps, greedy)) in beams.iter().zip(&expected).enumerate() {
            assert_eq!(hyps.len(), 1);
            assert_eq!(&hyps[0].tokens, greedy, "prompt {i}");
            assert_eq!(hyps[0].finished, greedy.len() < 10, "prompt {i}");
        }
    }

    #[test]
    fn beam_hypotheses_carry_their_own_log_probabilities() {
        let model = small_model(31);
        let eos = greedy(&model, &prompts(), 4, u32::MAX).unwrap()[1][2];
        let config = BeamConfig { num_beams: 3, num_return_sequences: 3, max_new_tokens: 6, ..BeamConfig::new(eos) };
        let results = beam_search(&model, &prompts(), &config).unwrap();
        for (prompt, hyps) in prompts().iter().zip(&results) {
            assert_eq!(hyps.len(), 3);
            assert!(hyps.windows(2).all(|w| w[0].score >= w[1].score), "not sorted: {hyps:?}");
            for h in hyps {
                let generated: Vec<u32> = h.tokens.iter().copied().chain(h.finished.then_some(eos)).collect();
                assert_eq!(h.score, h.sum_logprob / generated.len() as f32);
                let sum = sum_logprob(&model, prompt, &generated);
                assert!((sum - h.sum_logprob).abs() < 1e-3, "recomputed {sum}, beam search said {}", h.sum_logprob);
            }
        }
    }

    /// The log-probability of `generated` after `prompt`, from one full forward (no cache).
    fn sum_logprob(model: &Llama, prompt: &[u32], generated: &[u32]) -> f32 {
        let device = model.device();
        let vocab = model.config().vocab_size;
        let seq: Vec<i64> = prompt.iter().chain(generated).map(|&t| t as i64).collect();
        let n = seq.len();
        let logprobs =
            log_softmax(model.forward(int_tensor(seq.clone(), [1, n], &device), Tensor::ones([1, n], &device), None))
                .reshape([n, vocab])
                .try_into_vec_as::<f32>()
                .unwrap();
        (prompt.len()..n).map(|i| logprobs[(i - 1) * vocab + seq[i] as usize]).sum()
    }

    /// Token 2 is EOS here; no title uses it.
    const EOS: u32 = 2;

    fn constrained(titles: &[Vec<u32>], num_beams: usize, max_new_tokens: usize) -> BeamConfig {
        BeamConfig {
            num_beams,
            num_return_sequences: num_beams,
            max_new_tokens,
            constraint: Some(Arc::new(TitleTrie::new(titles.to_vec(), EOS))),
            ..BeamConfig::new(EOS)
        }
    }

    #[test]
    fn constrained_beams_write_only_complete_titles() {
        let model = small_model(43);
        // Shared prefixes, a title that prefixes others, and more titles than beams.
        let titles = vec![
            vec![10, 11, 12],
            vec![10, 11, 13, 14],
            vec![10, 11],
            vec![20, 21, 22, 23, 24],
            vec![30],
            vec![10, 40, 41],
            vec![50, 51],
            vec![50, 52, 53],
        ];
        let config = constrained(&titles, 4, 8);
        let results = beam_search(&model, &prompts(), &config).unwrap();
        assert_eq!(results.len(), 3);
        for (prompt, hyps) in prompts().iter().zip(&results) {
            assert!(!hyps.is_empty() && hyps.len() <= 4, "{hyps:?}");
            assert!(hyps.windows(2).all(|w| w[0].score >= w[1].score), "not sorted: {hyps:?}");
            for (i, h) in hyps.iter().enumerate() {
                assert!(h.finished && titles.contains(&h.tokens), "not a complete title: {h:?}");
                assert!(hyps[..i].iter().all(|o| o.tokens != h.tokens), "duplicate: {hyps:?}");
                let generated: Vec<u32> = h.tokens.iter().copied().chain([EOS]).collect();
                let sum = sum_logprob(&model, prompt, &generated);
                assert!((sum - h.sum_logprob).abs() < 1e-3, "recomputed {sum}, beam search said {}", h.sum_logprob);
            }
        }
    }

    /// With more beams than titles no prefix is ever pruned, so the search is exhaustive: it
    /// returns every title, ranked by its length-normalised log-probability.
    #[test]
    fn with_beams_to_spare_constrained_search_ranks_every_title() {
        let model = small_model(47);
        let titles = vec![vec![10, 11, 12], vec![10, 11], vec![60, 61, 62, 63]];
        let results = beam_search(&model, &prompts(), &constrained(&titles, 4, 6)).unwrap();
        for (prompt, hyps) in prompts().iter().zip(&results) {
            let mut expected: Vec<(f32, &Vec<u32>)> = titles
                .iter()
                .map(|t| {
                    let generated: Vec<u32> = t.iter().copied().chain([EOS]).collect();
                    (sum_logprob(&model, prompt, &generated) / generated.len() as f32, t)
                })
                .collect();
            expected.sort_by(|x, y| y.0.total_cmp(&x.0));
            let got: Vec<&Vec<u32>> = hyps.iter().map(|h| &h.tokens).collect();
            assert_eq!(got, expected.iter().map(|e| e.1).collect::<Vec<_>>(), "{hyps:?} vs {expected:?}");
            assert!(hyps.iter().all(|h| h.finished));
        }
    }

    #[test]
    fn a_single_title_is_the_only_answer() {
        let model = small_model(53);
        let title = vec![70, 71, 72];
        let results = beam_search(&model, &prompts(), &constrained(&[title.clone()], 2, 10)).unwrap();
        for hyps in results {
            assert_eq!(hyps.len(), 1, "{hyps:?}");
            assert_eq!((&hyps[0].tokens, hyps[0].finished), (&title, true));
        }
    }

    /// `max_new_tokens` shorter than a title: the unfinished hypotheses are still title prefixes.
    #[test]
    fn cut_short_constrained_beams_are_title_prefixes() {
        let model = small_model(59);
        let titles = vec![vec![10, 11, 12, 13, 14], vec![10, 20, 21, 22], vec![30, 31, 32, 33]];
        let trie = TitleTrie::new(titles.clone(), EOS);
        let results = beam_search(&model, &prompts(), &constrained(&titles, 2, 3)).unwrap();
        for h in results.iter().flatten() {
            assert!(!h.finished && h.tokens.len() == 3 && trie.walk(&h.tokens).is_some(), "{h:?}");
        }
    }

    /// The page's search (log-probabilities read back with an await, ranked on the host) finds
    /// the same hypotheses as the native one, whether that ranks on the host (the CPU backend) or
    /// by the device's top-k (GPUs), free and constrained.
    #[test]
    fn async_beam_search_equals_sync_beam_search() {
        let model = small_model(67);
        let eos = greedy(&model, &prompts(), 4, u32::MAX).unwrap()[0][2];
        let titles =
            vec![vec![10, 11, 12], vec![10, 11, 13, 14], vec![10, 11], vec![20, 21, 22], vec![30], vec![50, 52]];
        let free = BeamConfig { num_beams: 4, num_return_sequences: 4, max_new_tokens: 7, ..BeamConfig::new(eos) };
        for config in [free, constrained(&titles, 4, 6), constrained(&titles, 2, 2)] {
            let sync = beam_search(&model, &prompts(), &config).unwrap();
            let on_device =
                beam_search_ranked(&model, PromptBatch::from_tokens(&model, &prompts()).unwrap(), &config, false)
                    .unwrap();
            let async_ = crate::block_on(beam_search_async(&model, &prompts(), &config)).unwrap();
            assert_eq!(sync.len(), async_.len());
            for (s, a) in sync.iter().zip(&async_).chain(on_device.iter().zip(&async_)) {
                assert_eq!(s.len(), a.len(), "{s:?} vs {a:?}");
                for (s, a) in s.iter().zip(a) {
                    assert_eq!((&s.tokens, s.finished), (&a.tokens, a.finished));
                    assert!((s.sum_logprob - a.sum_logprob).abs() < 1e-5, "{s:?} vs {a:?}");
                }
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let model = small_model(41);
        assert!(greedy(&model, &[vec![1u32], vec![]], 3, 0).is_err());
        assert!(greedy(&model, &[vec![1_000u32]], 3, 0).is_err());
        assert!(
            beam_search(&model, &[vec![1u32]], &BeamConfig { num_return_sequences: 5, ..BeamConfig::new(0) }).is_err()
        );
        let trie = |titles: Vec<Vec<u32>>, eos| Some(Arc::new(TitleTrie::new(titles, eos)));
        for constraint in [trie(vec![vec![5]], 3), trie(vec![], 0), trie(vec![vec![5, 1_000]], 0)] {
            assert!(beam_search(&model, &[vec![1u32]], &BeamConfig { constraint, ..BeamConfig::new(0) }).is_err());
        }
    }

    /// The real SmolLM2-135M-Instruct and its GGUF metadata, when the GGUF is in `models/`
    /// (scripts/fetch-smollm2.sh); `None`, with a note, when it is not.
    #[cfg(feature = "native")]
    fn smollm2_if_present() -> Option<(Llama, crate::model::formats::gguf::Metadata)> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
        crate::test_assets::present_or_required(&path.display().to_string(), path.exists().then_some(()))?;
        let (_, meta, weights) = crate::model::formats::gguf::llama::load_llama_gguf(&path).unwrap();
        let config = crate::model::config::LlamaConfig::smollm2_135m();
        let model = Llama::from_weights(&config, &weights, &burn::tensor::Device::flex()).unwrap();
        Some((model, meta))
    }

    /// The real SmolLM2-135M-Instruct, when present: greedy decoding knows the capital of
    /// France, as an independent numpy forward pass did.
    #[cfg(feature = "native")]
    #[test]
    fn smollm2_knows_the_capital_of_france_if_present() {
        let Some((model, meta)) = smollm2_if_present() else {
            return;
        };
        let tokenizer = crate::model::formats::gguf::tokenizer::tokenizer_from_gguf(&meta).unwrap();
        let prompt = tokenizer.encode("The capital of France is", false).unwrap().get_ids().to_vec();

        let greedy_ids = greedy(&model, &[prompt.clone()], 2, 2).unwrap();
        let text = tokenizer.decode(&greedy_ids[0], false).unwrap();
        assert!(text.starts_with(" Paris"), "greedy continuation: {text:?}");

        let config = BeamConfig { max_new_tokens: 2, ..BeamConfig::new(2) };
        let beams = beam_search(&model, &[prompt], &config).unwrap();
        let best = tokenizer.decode(&beams[0][0].tokens, false).unwrap();
        assert!(best.starts_with(" Paris"), "best beam: {best:?}");
    }

    /// The real SmolLM2, when present: constrained to four cities, the best answer to "The
    /// capital of France is" is " Paris", and every answer is one of the cities.
    #[cfg(feature = "native")]
    #[test]
    fn smollm2_constrained_to_cities_answers_paris_if_present() {
        let Some((model, meta)) = smollm2_if_present() else {
            return;
        };
        let tokenizer = crate::model::formats::gguf::tokenizer::tokenizer_from_gguf(&meta).unwrap();
        let encode = |text: &str| crate::model::formats::tokenizer::encode(&tokenizer, text).unwrap();
        let cities: Vec<Vec<u32>> = [" London", " Paris", " Berlin", " Rome"].iter().map(|c| encode(c)).collect();
        let config = BeamConfig {
            max_new_tokens: 8,
            constraint: Some(Arc::new(TitleTrie::new(cities.clone(), 2))),
            ..BeamConfig::new(2)
        };
        let beams = beam_search(&model, &[encode("The capital of France is")], &config).unwrap();
        assert!(beams[0].iter().all(|h| h.finished && cities.contains(&h.tokens)), "{:?}", beams[0]);
        assert_eq!(beams[0][0].tokens, cities[1], "{:?}", beams[0]);
    }

    /// SmolLM2's next-token logits and greedy ids against `bench/smollm2_reference.py`, an
    /// independent numpy (float64) forward pass over the same dequantized GGUF (sha256
    /// b179c952…), which rotates the GGUF's permuted Q/K rows by adjacent pairs as llama.cpp
    /// does (see bench/README.md). Its numbers are copied below: the top-5 `(id, logit)` per
    /// prompt and 10 greedy ids.
    #[cfg(feature = "native")]
    #[test]
    fn smollm2_logits_match_the_numpy_reference_if_present() {
        // "The capital of France is", then the chat-formatted question.
        let plain: Vec<u32> = vec![504, 3575, 282, 4649, 314];
        let chat: Vec<u32> = vec![1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198];
        let cases: [(&str, &[u32], [(u32, f32); 5]); 2] = [
            (
                "plain",
                &plain,
                [(7042, 17.371259), (260, 14.888589), (4528, 13.244974), (2250, 13.009467), (1315, 12.951514)],
            ),
            (
                "chat",
                &chat,
                [(504, 27.858752), (60, 26.129504), (38634, 26.101527), (15319, 25.962279), (7026, 25.18138)],
            ),
        ];
        const TOLERANCE: f32 = 2e-2;
        let Some((model, _)) = smollm2_if_present() else {
            return;
        };
        let device = model.device();
        let vocab = model.config().vocab_size;
        for (name, ids, reference) in cases {
            let n = ids.len();
            let tokens = int_tensor(ids.iter().map(|&t| t as i64).collect(), [1, n], &device);
            let logits = model
                .forward(tokens, Tensor::ones([1, n], &device), None)
                .narrow(1, n - 1, 1)
                .reshape([vocab])
                .try_into_vec_as::<f32>()
                .unwrap();
            let mut order: Vec<usize> = (0..vocab).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            let top5: Vec<(u32, f32)> = order[..5].iter().map(|&i| (i as u32, logits[i])).collect();
            // The reference's ids, at whatever rank they have here.
            let diffs: Vec<f32> = reference.iter().map(|&(id, want)| (logits[id as usize] - want).abs()).collect();
            let max_diff = diffs.iter().copied().fold(0.0, f32::max);
            println!("{name}: rust top5 {top5:?}");
            println!("{name}: |rust - numpy| at the reference's top5 {diffs:?}, max {max_diff:.3e}");
            let ids_got: Vec<u32> = top5.iter().map(|p| p.0).collect();
            let ids_want: Vec<u32> = reference.iter().map(|p| p.0).collect();
            assert_eq!(ids_got, ids_want, "{name}: top-5 ids");
            assert!(max_diff <= TOLERANCE, "{name}: max |logit difference| {max_diff} > {TOLERANCE}");
        }

        // No EOS: the reference generates 10 ids without stopping.
        let generated = greedy(&model, &[plain], 10, u32::MAX).unwrap();
        println!("plain: rust greedy {:?}", generated[0]);
        assert_eq!(generated[0], [7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34]);
    }
}
