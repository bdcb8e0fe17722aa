//! Beam search without I/O: the bookkeeping of Hugging Face's `num_beams > 1` search as a state
//! machine fed, step by step, with each prompt's best scored continuations. The caller owns the
//! model and the reads: `generate::beam_search` reads them synchronously on the device (top-k
//! there), `generate::beam_search_async` reads the log-probabilities back with an await (WebGPU
//! has no synchronous read) and ranks them here on the host with [`host_candidates`].

use std::sync::Arc;

use super::trie::TitleTrie;
use crate::{Error, Result};

/// Beam-search settings. `new` gives the SOFT reference's: 4 beams, 4 returned sequences, at most
/// 64 new tokens, length penalty 1.0, free (unconstrained) decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamConfig {
    pub num_beams: usize,
    /// How many hypotheses to return per prompt, best first (at most `num_beams`).
    pub num_return_sequences: usize,
    pub max_new_tokens: usize,
    pub eos_token_id: u32,
    /// A hypothesis scores `sum_logprob / generated_len^length_penalty`, `generated_len`
    /// counting the EOS token, as Hugging Face does (default 1.0: mean log-probability per
    /// token). 0.0 ranks by the raw sum, which favours short answers.
    pub length_penalty: f64,
    /// Constrained decoding: beams may only follow this trie (whose EOS must be
    /// `eos_token_id`), so every finished hypothesis is one of its sequences. Shared, as one
    /// trie of all titles serves every batch.
    pub constraint: Option<Arc<TitleTrie>>,
}

impl BeamConfig {
    pub fn new(eos_token_id: u32) -> Self {
        Self {
            num_beams: 4,
            num_return_sequences: 4,
            max_new_tokens: 64,
            eos_token_id,
            length_penalty: 1.0,
            constraint: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::config("beam search", msg));
        if self.num_beams == 0 || self.max_new_tokens == 0 {
            return bad("num_beams and max_new_tokens must be positive".into());
        }
        if self.num_return_sequences == 0 || self.num_return_sequences > self.num_beams {
            return bad(format!(
                "num_return_sequences ({}) must be between 1 and num_beams ({})",
                self.num_return_sequences, self.num_beams
            ));
        }
        if let Some(trie) = &self.constraint {
            if trie.eos() != self.eos_token_id {
                return bad(format!(
                    "the constraint's EOS ({}) is not eos_token_id ({})",
                    trie.eos(),
                    self.eos_token_id
                ));
            }
            if trie.num_sequences() == 0 {
                return bad("the constraint allows no sequence".into());
            }
        }
        Ok(())
    }
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Generated tokens, without the EOS token.
    pub tokens: Vec<u32>,
    /// Sum of the log-probabilities of the generated tokens, EOS included when `finished`.
    pub sum_logprob: f32,
    /// `sum_logprob` normalised by length (see [`BeamConfig::length_penalty`]); the ranking key.
    pub score: f32,
    /// Ended with EOS (rather than by reaching `max_new_tokens`).
    pub finished: bool,
}

/// What the model must compute next: keep cache rows `rows` (in this order) and feed row i the
/// token `tokens[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub rows: Vec<usize>,
    pub tokens: Vec<u32>,
}

/// The search's state between two model calls. Rows of the model's batch are the running beams
/// of the active prompts, in order, each prompt's beams consecutive.
pub struct BeamSearch {
    config: BeamConfig,
    vocab: usize,
    finished: Vec<Finished>,
    running: Vec<Vec<Beam>>,
    /// Prompts still searching, in cache order.
    active: Vec<usize>,
    /// Tokens generated so far (the step `advance` completes is `generated + 1`).
    generated: usize,
}

impl BeamSearch {
    /// A search over `prompts` prompts for a model of `vocab` tokens; refuses settings that
    /// cannot work (see [`BeamConfig`]).
    pub fn new(config: &BeamConfig, vocab: usize, prompts: usize) -> Result<Self> {
        config.validate()?;
        let k = config.num_beams;
        if 2 * k > vocab {
            return Err(Error::config("beam search", format!("{k} beams need a vocabulary of at least {}", 2 * k)));
        }
        if let Some(trie) = config.constraint.as_deref() {
            let top = trie.max_token().map_or(trie.eos(), |t| t.max(trie.eos()));
            if top as usize >= vocab {
                return Err(Error::Input(format!(
                    "beam search: the constraint has token id {top}, outside the vocabulary ({vocab})"
                )));
            }
        }
        // Before the first step each prompt has one beam, the prompt itself.
        let root = config.constraint.as_deref().map_or(0, |t| t.root());
        Ok(Self {
            config: config.clone(),
            vocab,
            finished: (0..prompts).map(|_| Finished::new(k, config.length_penalty)).collect(),
            running: (0..prompts).map(|_| vec![Beam { tokens: Vec::new(), sum_logprob: 0.0, node: root }]).collect(),
            active: (0..prompts).collect(),
            generated: 0,
        })
    }

    pub fn active(&self) -> &[usize] {
        &self.active
    }

    pub fn running(&self) -> &[Vec<Beam>] {
        &self.running
    }

    pub fn constraint(&self) -> Option<&TitleTrie> {
        self.config.constraint.as_deref()
    }

    /// How many candidates per active prompt a step needs (`2·num_beams`, as HF: enough to
    /// keep `num_beams` running beams even if half the candidates end in EOS).
    pub fn candidates_needed(&self) -> usize {
        2 * self.config.num_beams
    }

    /// Takes, per active prompt, its best continuations, best first, as `(sum_logprob,
    /// beam·vocab + token)`, and returns the next model step, or `None` when the search is over.
    pub fn advance(&mut self, candidates: Vec<Vec<(f32, usize)>>) -> Result<Option<Step>> {
        if candidates.len() != self.active.len() {
            return Err(Error::Input(format!(
                "beam search: {} candidate lists for {} active prompts",
                candidates.len(),
                self.active.len()
            )));
        }
        let (k, vocab, eos) = (self.config.num_beams, self.vocab, self.config.eos_token_id);
        self.generated += 1;
        let generated = self.generated;
        let last = generated == self.config.max_new_tokens;
        let trie = self.config.constraint.clone();
        // The first cache row of each active prompt.
        let starts: Vec<usize> = self
            .active
            .iter()
            .scan(0, |row, &p| {
                let start = *row;
                *row += self.running[p].len();
                Some(start)
            })
            .collect();
        let (mut next_active, mut rows, mut tokens) = (Vec::new(), Vec::new(), Vec::new());
        for (a, &p) in self.active.iter().enumerate() {
            let mut beams = Vec::with_capacity(k);
            for (rank, &(score, index)) in candidates[a].iter().enumerate() {
                let (parent, token) = (&self.running[p][index / vocab], (index % vocab) as u32);
                if token == eos {
                    // Like HF, EOS only counts when it is among the top num_beams candidates.
                    if rank < k {
                        self.finished[p].add(parent.tokens.clone(), score, generated, true);
                    }
                } else {
                    let node = match &trie {
                        Some(trie) => trie
                            .child(parent.node, token)
                            .ok_or_else(|| Error::Input(format!("beam search: token {token} left the trie")))?,
                        None => parent.node,
                    };
                    let tokens = parent.tokens.iter().copied().chain([token]).collect();
                    beams.push((Beam { tokens, sum_logprob: score, node }, starts[a] + index / vocab, token));
                    if beams.len() == k {
                        break;
                    }
                }
            }
            if last {
                for (beam, _, _) in beams {
                    self.finished[p].add(beam.tokens, beam.sum_logprob, generated, false);
                }
            } else if beams.first().is_some_and(|best| !self.finished[p].is_done(best.0.sum_logprob, generated)) {
                next_active.push(p);
                rows.extend(beams.iter().map(|b| b.1));
                tokens.extend(beams.iter().map(|b| b.2));
                self.running[p] = beams.into_iter().map(|b| b.0).collect();
            }
        }
        self.active = next_active;
        Ok((!self.active.is_empty()).then_some(Step { rows, tokens }))
    }

    /// Per prompt, `num_return_sequences` hypotheses, best first.
    pub fn finish(self) -> Vec<Vec<Hypothesis>> {
        let n = self.config.num_return_sequences;
        self.finished.into_iter().map(|f| f.best(n)).collect()
    }
}

/// The candidates [`BeamSearch::advance`] takes, ranked on the host from log-probabilities
/// read back as `[rows, vocab]` (row-major, rows as the search orders them): per active prompt
/// its best `n` `(beam score + log-prob, beam·vocab + token)` over every token (free) or over
/// the tokens the constraint allows each beam. Ties go to the lower index, so the order is
/// deterministic.
pub fn host_candidates(search: &BeamSearch, logprobs: &[f32], n: usize) -> Result<Vec<Vec<(f32, usize)>>> {
    let vocab = search.vocab;
    let rows: usize = search.active.iter().map(|&p| search.running[p].len()).sum();
    if logprobs.len() != rows * vocab {
        return Err(Error::Input(format!(
            "beam search: {} log-probabilities read back, expected {rows} rows of {vocab}",
            logprobs.len()
        )));
    }
    let by_score = |x: &(f32, usize), y: &(f32, usize)| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1));
    let mut row = 0;
    Ok(search
        .active
        .iter()
        .map(|&p| {
            let mut candidates = Vec::new();
            for (b, beam) in search.running[p].iter().enumerate() {
                let values = &logprobs[row * vocab..(row + 1) * vocab];
                match search.constraint() {
                    None => candidates
                        .extend(values.iter().enumerate().map(|(t, &v)| (beam.sum_logprob + v, b * vocab + t))),
                    Some(trie) => candidates.extend(
                        trie.allowed(beam.node)
                            .map(|t| (beam.sum_logprob + values[t as usize], b * vocab + t as usize)),
                    ),
                }
                row += 1;
            }
            keep_best(&mut candidates, n, by_score);
            candidates
        })
        .collect())
}

/// Keeps the `n` first candidates in `by`'s order, sorted: a partial selection, then a sort of
/// only those. Shared by the device and the host ranking, each with its own tie rule.
pub(crate) fn keep_best(
    candidates: &mut Vec<(f32, usize)>,
    n: usize,
    by: impl Fn(&(f32, usize), &(f32, usize)) -> std::cmp::Ordering + Copy,
) {
    if candidates.len() > n {
        candidates.select_nth_unstable_by(n - 1, by);
        candidates.truncate(n);
    }
    candidates.sort_by(by);
}

/// A running beam. Public for `benches/decoding.rs`.
#[doc(hidden)]
pub struct Beam {
    pub tokens: Vec<u32>,
    pub sum_logprob: f32,
    /// The beam's trie node under a constraint (unused without one).
    pub node: usize,
}

/// The best `capacity` hypotheses of one prompt that have ended.
pub(crate) struct Finished {
    capacity: usize,
    length_penalty: f64,
    hypotheses: Vec<Hypothesis>,
}

impl Finished {
    fn new(capacity: usize, length_penalty: f64) -> Self {
        Self { capacity, length_penalty, hypotheses: Vec::with_capacity(capacity + 1) }
    }

    fn normalise(&self, sum_logprob: f32, len: usize) -> f32 {
        (sum_logprob as f64 / (len as f64).powf(self.length_penalty)) as f32
    }

    /// Adds a hypothesis of `len` generated tokens (EOS included), dropping the worst if over
    /// capacity.
    fn add(&mut self, tokens: Vec<u32>, sum_logprob: f32, len: usize, finished: bool) {
        let score = self.normalise(sum_logprob, len);
        self.hypotheses.push(Hypothesis { tokens, sum_logprob, score, finished });
        self.hypotheses.sort_by(|a, b| b.score.total_cmp(&a.score));
        self.hypotheses.truncate(self.capacity);
    }

    fn is_done(&self, best_running_sum: f32, len: usize) -> bool {
        self.hypotheses.len() >= self.capacity
            && self.hypotheses.last().is_some_and(|worst| worst.score >= self.normalise(best_running_sum, len))
    }

    fn best(mut self, n: usize) -> Vec<Hypothesis> {
        self.hypotheses.truncate(n);
        self.hypotheses
    }
}
