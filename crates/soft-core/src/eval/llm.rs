//! The language model as a recommender (BIGRec style): it writes an answer for each prompt,
//! the answer is embedded with the BASE model (last-layer hidden state at its last token) and
//! every item is ranked by the L2 distance between that embedding and its title's.

use burn::module::Module;
use burn::tensor::Tensor;
use tokenizers::Tokenizer;

use crate::data::prompt::PromptOptions;
use crate::data::{prompt, Catalog, Domain};
use crate::eval::grounding::{embed_last_token, rank_by_l2_async};
use crate::eval::{rank_by_l2, Prediction, RANKED_LEN};
use crate::model::generate::{beam_search, BeamConfig};
use crate::model::llama::Llama;
use crate::model::tokenizer::{encode, encode_prompt, SpecialIds};
use crate::model::trie::TitleTrie;
use crate::progress::Progress;
use crate::{Error, Result};

/// Texts embedded per forward pass.
const EMBED_BATCH: usize = 64;
/// Prompts decoded per beam-search batch.
const GENERATE_BATCH: usize = 32;

/// The prompt of a history, titles from the catalog.
pub fn history_prompt(catalog: &Catalog, domain: Domain, history: &[u32]) -> String {
    let titles: Vec<&str> = history.iter().map(|&id| catalog.title(id).unwrap_or_default()).collect();
    prompt::prompt(domain, &titles)
}

/// The prompt of a history as `options` shape it (template, last N titles, titles cut to M
/// tokens); with the default options, [`history_prompt`]'s text.
pub fn history_prompt_with(
    catalog: &Catalog,
    domain: Domain,
    options: &PromptOptions,
    tokenizer: &Tokenizer,
    history: &[u32],
) -> Result<String> {
    let titles = options
        .recent(history)
        .iter()
        .map(|&id| {
            let title = catalog.title(id).unwrap_or_default();
            match options.title_tokens {
                Some(m) => {
                    let ids = encode(tokenizer, title)?;
                    let cut = &ids[..m.min(ids.len())];
                    tokenizer.decode(cut, true).map_err(|e| Error::tokenizer("cutting a title", e))
                }
                None => Ok(title.to_string()),
            }
        })
        .collect::<Result<Vec<String>>>()?;
    let titles: Vec<&str> = titles.iter().map(String::as_str).collect();
    Ok(prompt::prompt_in(options.template, domain, &titles))
}

/// Item embeddings of every grounding item, computed once with the base model.
pub struct Grounder {
    pub ids: Vec<u32>,
    pub table: Tensor<2>,
}

/// Last-token embeddings of texts; an empty text is embedded as the EOS token alone.
pub fn embed_texts(base: &Llama, tokenizer: &Tokenizer, special: &SpecialIds, texts: &[&str]) -> Result<Tensor<2>> {
    embed_texts_reporting(base, tokenizer, special, texts, &mut crate::progress::silent)
}

fn embed_texts_reporting(
    base: &Llama,
    tokenizer: &Tokenizer,
    special: &SpecialIds,
    texts: &[&str],
    progress: Progress,
) -> Result<Tensor<2>> {
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| encode(tokenizer, t).map(|ids| if ids.is_empty() { vec![special.eos] } else { ids }))
        .collect::<Result<_>>()?;
    embed_last_token(&base.valid(), &ids, EMBED_BATCH, progress)
}

/// Generated answers as grounding queries: quotes stripped, embedded by the base model.
fn embed_answers(base: &Llama, tokenizer: &Tokenizer, special: &SpecialIds, answers: &[String]) -> Result<Tensor<2>> {
    let stripped: Vec<&str> = answers.iter().map(|a| prompt::strip_response(a)).collect();
    embed_texts(base, tokenizer, special, &stripped)
}

impl Grounder {
    /// Embeds every grounding title: minutes for a 135 M model on a CPU, hence the progress.
    pub fn new(
        base: &Llama,
        tokenizer: &Tokenizer,
        special: &SpecialIds,
        catalog: &Catalog,
        progress: Progress,
    ) -> Result<Self> {
        let ids = catalog.grounding_ids();
        let titles: Vec<&str> = ids.iter().map(|&id| catalog.title(id).unwrap_or_default()).collect();
        Ok(Self { table: embed_texts_reporting(base, tokenizer, special, &titles, progress)?, ids })
    }

    /// A grounder from an embedding table computed elsewhere (`soft-train export` ships one to
    /// the page): row i embeds item `ids[i]`.
    pub fn from_table(ids: Vec<u32>, table: Tensor<2>) -> Result<Self> {
        if table.dims()[0] != ids.len() {
            return Err(Error::Input(format!(
                "grounding: the embedding table has {} rows for {} items",
                table.dims()[0],
                ids.len()
            )));
        }
        Ok(Self { ids, table })
    }

    /// [`Grounder::rank`] reading back with an await (WebGPU in a browser): per answer, the
    /// `k` nearest items with their L2 distances, nearest first.
    pub async fn rank_async(
        &self,
        base: &Llama,
        tokenizer: &Tokenizer,
        special: &SpecialIds,
        answers: &[String],
        k: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        let queries = embed_answers(base, tokenizer, special, answers)?;
        Ok(rank_by_l2_async(queries, self.table.clone(), k)
            .await?
            .into_iter()
            .map(|r| r.into_iter().map(|(i, d)| (self.ids[i], d)).collect())
            .collect())
    }

    /// The `k` nearest items to each answer, nearest first.
    pub fn rank(
        &self,
        base: &Llama,
        tokenizer: &Tokenizer,
        special: &SpecialIds,
        answers: &[String],
        k: usize,
    ) -> Result<Vec<Vec<u32>>> {
        let queries = embed_answers(base, tokenizer, special, answers)?;
        Ok(rank_by_l2(queries, self.table.clone(), k)
            .into_iter()
            .map(|r| r.into_iter().map(|i| self.ids[i]).collect())
            .collect())
    }
}

/// The constraint for decoding only real items: every grounding item's title in the response
/// form the model is trained to write (`"Title"`, tokenized alone as in SFT's targets), each
/// complete one followed by EOS.
pub fn title_trie(tokenizer: &Tokenizer, special: &SpecialIds, catalog: &Catalog) -> Result<TitleTrie> {
    let sequences = catalog
        .grounding_ids()
        .into_iter()
        .map(|id| encode(tokenizer, &prompt::response(catalog.title(id).unwrap_or_default())))
        .collect::<Result<Vec<_>>>()?;
    Ok(TitleTrie::new(sequences, special.eos))
}

/// The model as decoding runs it: off the autodiff graph, LoRA adapters folded into the base
/// weights (`soft-train bench`: beam search on SmolLM2 with q/v adapters kept apart was slower,
/// BENCHMARKS.md). Merging a copy leaves `model` and its trainable adapters as they are.
pub fn decoding_model(model: &Llama) -> Llama {
    model.valid().merge_lora()
}

/// The top beam's text for every prompt.
pub fn generate_answers(
    model: &Llama,
    tokenizer: &Tokenizer,
    special: &SpecialIds,
    prompts: &[String],
    beam: &BeamConfig,
) -> Result<Vec<String>> {
    let model = decoding_model(model);
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(GENERATE_BATCH) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|p| encode_prompt(tokenizer, special, p)).collect::<Result<_>>()?;
        for hyps in beam_search(&model, &ids, beam)? {
            let best = hyps.first().map(|h| h.tokens.as_slice()).unwrap_or_default();
            out.push(tokenizer.decode(best, true).map_err(|e| Error::tokenizer("decoding an answer", e))?);
        }
    }
    Ok(out)
}

/// Everything a recommendation needs: the tuned model writes, the base model grounds.
pub struct LlmRecommender<'a> {
    pub tuned: &'a Llama,
    pub base: &'a Llama,
    pub tokenizer: &'a Tokenizer,
    pub special: &'a SpecialIds,
    pub grounder: &'a Grounder,
    pub domain: Domain,
    pub prompt: PromptOptions,
    pub beam: BeamConfig,
}

impl LlmRecommender<'_> {
    /// The prompt this recommender writes an answer to for `history`.
    pub fn prompt_of(&self, catalog: &Catalog, history: &[u32]) -> Result<String> {
        history_prompt_with(catalog, self.domain, &self.prompt, self.tokenizer, history)
    }

    pub fn recommend(&self, catalog: &Catalog, histories: &[&[u32]], targets: &[u32]) -> Result<Vec<Prediction>> {
        let prompts: Vec<String> = histories.iter().map(|h| self.prompt_of(catalog, h)).collect::<Result<_>>()?;
        let answers = generate_answers(self.tuned, self.tokenizer, self.special, &prompts, &self.beam)?;
        let ranked = self.grounder.rank(self.base, self.tokenizer, self.special, &answers, RANKED_LEN)?;
        Ok(answers
            .into_iter()
            .zip(ranked)
            .zip(targets)
            .map(|((generated, ranked), &target)| Prediction { target, generated: Some(generated), ranked })
            .collect())
    }
}
