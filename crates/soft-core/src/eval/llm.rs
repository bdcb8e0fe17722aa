//! The language model as a recommender (BIGRec style): it writes an answer for each prompt,
//! the answer is embedded with the BASE model (last-layer hidden state at its last token) and
//! every item is ranked by the L2 distance between that embedding and its title's.

use std::collections::HashSet;
use std::sync::Arc;

use burn::module::Module;
use burn::tensor::Tensor;
#[cfg(feature = "gpu")]
use burn::tensor::{Int, TensorData};
#[cfg(feature = "gpu")]
use soft_gpu::GpuGrounder;
use tokenizers::Tokenizer;

use crate::data::prompt::{Backbone, PromptOptions};
use crate::data::{prompt, Catalog, Domain};
use crate::eval::decoding::Ranking;
use crate::eval::grounding::{embed_last_token, rank_by_l2_async};
use crate::eval::{rank_by_l2, Prediction, RANKED_LEN};
use crate::model::decoding::generate::{beam_search, BeamConfig};
use crate::model::formats::tokenizer::{encode, encode_prompt, SpecialIds};
use crate::model::llama::Llama;
#[cfg(feature = "gpu")]
use crate::model::weights::host_values_async;
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
    let recent = options.recent(history);
    let titles = recent
        .iter()
        .map(|&id| {
            let title = catalog.title(id).unwrap_or_default();
            if prompt::has_item_marker(title) {
                return Err(Error::Input(format!(
                    "item {id}'s title {title:?} contains an item marker's opening; it cannot go into a prompt"
                )));
            }
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
    let items = (options.backbone == Backbone::Llara).then_some(recent);
    Ok(prompt::prompt_with_items(options.template, domain, &titles, items))
}

/// Item embeddings of every grounding item, computed once with the base model.
#[derive(Clone)]
pub struct Grounder {
    /// Row i of `table` embeds item `ids[i]`.
    ids: Vec<u32>,
    /// The same ids as a set: beam ranking asks about thousands of beams per evaluation.
    members: Arc<HashSet<u32>>,
    pub table: Tensor<2>,
    /// The project's WGSL kernel (soft-gpu) over the same table, once [`Grounder::with_kernel`]
    /// started it: it then ranks instead of the tensor ops.
    #[cfg(feature = "gpu")]
    kernel: Option<Arc<GpuGrounder>>,
}

/// How the WGSL kernel and the tensor ranking agree on probe queries ([`Grounder::kernel_agreement`]).
#[derive(Debug, Clone, PartialEq)]
pub struct KernelAgreement {
    pub queries: usize,
    /// Queries whose top-k is the same from both: the same items in the same order, except that
    /// two items at (nearly) the same distance may swap (the kernel sums in a different order).
    pub same_top_k: usize,
    /// Largest difference between the two L2 distances at the same rank.
    pub max_distance_diff: f32,
}

/// Distances this close (relative) count as a tie between the kernel and the tensor ranking.
#[cfg(feature = "gpu")]
const TIE_TOLERANCE: f32 = 1e-4;

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
        let table = embed_texts_reporting(base, tokenizer, special, &titles, progress)?;
        Self::from_table(ids, table)
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
        let members = Arc::new(ids.iter().copied().collect());
        Ok(Self {
            ids,
            members,
            table,
            #[cfg(feature = "gpu")]
            kernel: None,
        })
    }

    /// The item each row of the table embeds, in row order.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Whether `id` is one of the items the grounder ranks.
    pub fn contains(&self, id: u32) -> bool {
        self.members.contains(&id)
    }

    /// This grounder ranking with the project's WGSL kernel (shaders/grounding.wgsl) on the
    /// default wgpu adapter (WebGPU in the page; `soft-train eval --backend wgpu` natively).
    #[cfg(feature = "gpu")]
    pub async fn with_kernel(mut self) -> Result<Self> {
        let [n, d] = self.table.dims();
        let values: Vec<f32> = host_values_async(self.table.clone()).await?;
        self.kernel = Some(Arc::new(GpuGrounder::new_default(&values, n, d).await?));
        Ok(self)
    }

    /// [`Grounder::with_kernel`], blocking (native only).
    #[cfg(all(feature = "native", feature = "gpu"))]
    pub fn with_kernel_blocking(self) -> Result<Self> {
        pollster::block_on(self.with_kernel())
    }

    /// The adapter the WGSL kernel runs on, when it ranks.
    pub fn kernel_adapter(&self) -> Option<String> {
        // Browsers may hide the adapter's name: the backend then names it.
        #[cfg(feature = "gpu")]
        return self.kernel.as_ref().map(|k| match k.adapter_info() {
            info if info.name.is_empty() => format!("{:?}", info.backend),
            info => info.name.clone(),
        });
        #[cfg(not(feature = "gpu"))]
        None
    }

    /// Ranks `queries` embeddings with the kernel: per query, `(item id, L2 distance)`.
    #[cfg(feature = "gpu")]
    async fn kernel_rank(&self, kernel: &GpuGrounder, queries: Tensor<2>, k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        let n = queries.dims()[0];
        let values: Vec<f32> = host_values_async(queries).await?;
        Ok(kernel
            .top_k(&values, n, k)
            .await?
            .into_iter()
            .map(|r| r.into_iter().map(|(row, sq)| (self.ids[row as usize], sq.max(0.0).sqrt())).collect())
            .collect())
    }

    /// Checks the kernel against the tensor ranking on `n` probe queries, each a blend of two
    /// table rows (0.7 and 0.3) spread over the table: the page runs this on WebGPU so its own
    /// test can see the two agree there. `None` when no kernel ranks.
    #[cfg(feature = "gpu")]
    pub async fn kernel_agreement(&self, n: usize, k: usize) -> Result<Option<KernelAgreement>> {
        let Some(kernel) = &self.kernel else { return Ok(None) };
        let rows = self.ids.len();
        if rows < 2 || n == 0 {
            return Err(Error::Input(format!("grounding: {n} probe queries over a table of {rows} rows")));
        }
        let pick = |offset: usize| -> Tensor<1, Int> {
            let idx: Vec<i64> = (0..n).map(|i| ((i * rows / n + offset) % rows) as i64).collect();
            Tensor::from_data(TensorData::new(idx, [n]), &self.table.device())
        };
        let queries = self.table.clone().select(0, pick(0)).mul_scalar(0.7)
            + self.table.clone().select(0, pick(rows / 2 + 1)).mul_scalar(0.3);
        let by_kernel = self.kernel_rank(kernel, queries.clone(), k).await?;
        let by_tensors = self.tensor_rank(queries, k).await?;
        let mut agreement = KernelAgreement { queries: n, same_top_k: 0, max_distance_diff: 0.0 };
        for (a, b) in by_kernel.iter().zip(&by_tensors) {
            let mut same = a.len() == b.len();
            for (x, y) in a.iter().zip(b) {
                let diff = (x.1 - y.1).abs();
                agreement.max_distance_diff = agreement.max_distance_diff.max(diff);
                same &= x.0 == y.0 || diff <= TIE_TOLERANCE * y.1.max(1e-6);
            }
            agreement.same_top_k += usize::from(same);
        }
        Ok(Some(agreement))
    }

    /// The tensor ranking: per query, `(item id, L2 distance)`, nearest first.
    async fn tensor_rank(&self, queries: Tensor<2>, k: usize) -> Result<Vec<Vec<(u32, f32)>>> {
        Ok(rank_by_l2_async(queries, self.table.clone(), k)
            .await?
            .into_iter()
            .map(|r| r.into_iter().map(|(i, d)| (self.ids[i], d)).collect())
            .collect())
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
        #[cfg(feature = "gpu")]
        if let Some(kernel) = &self.kernel {
            return self.kernel_rank(kernel, queries, k).await;
        }
        self.tensor_rank(queries, k).await
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
        #[cfg(all(feature = "native", feature = "gpu"))]
        if let Some(kernel) = &self.kernel {
            let hits = pollster::block_on(self.kernel_rank(kernel, queries, k))?;
            return Ok(hits.into_iter().map(|r| r.into_iter().map(|(id, _)| id).collect()).collect());
        }
        Ok(rank_by_l2(queries, self.table.clone(), k)
            .into_iter()
            .map(|r| r.into_iter().map(|i| self.ids[i]).collect())
            .collect())
    }
}

/// The model as decoding runs it: off the autodiff graph, LoRA adapters folded into the base
/// weights (`soft-train bench`: beam search on SmolLM2 with q/v adapters kept apart was slower,
/// BENCHMARKS.md) — except over weights kept in quantized blocks, which merging would turn into
/// f32 weights ~6x the bytes per step: their adapters stay apart. Merging a copy leaves `model`
/// and its trainable adapters as they are.
pub fn decoding_model(model: &Llama) -> Llama {
    match model.has_blocks() {
        true => model.valid(),
        false => model.valid().merge_lora(),
    }
}

/// The top beam's text for every prompt.
pub fn generate_answers(
    model: &Llama,
    tokenizer: &Tokenizer,
    special: &SpecialIds,
    prompts: &[String],
    beam: &BeamConfig,
) -> Result<Vec<String>> {
    let beams = generate_beams(model, tokenizer, special, prompts, beam)?;
    Ok(beams.into_iter().map(|b| b.into_iter().next().unwrap_or_default()).collect())
}

/// Every returned beam's text for every prompt, best first.
pub fn generate_beams(
    model: &Llama,
    tokenizer: &Tokenizer,
    special: &SpecialIds,
    prompts: &[String],
    beam: &BeamConfig,
) -> Result<Vec<Vec<String>>> {
    let model = decoding_model(model);
    let mut out = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(GENERATE_BATCH) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|p| encode_prompt(tokenizer, special, p)).collect::<Result<_>>()?;
        for hyps in beam_search(&model, &ids, beam)? {
            let texts = hyps
                .iter()
                .map(|h| tokenizer.decode(&h.tokens, true).map_err(|e| Error::tokenizer("decoding an answer", e)))
                .collect::<Result<Vec<String>>>()?;
            out.push(if texts.is_empty() { vec![String::new()] } else { texts });
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
    pub ranking: Ranking,
}

impl LlmRecommender<'_> {
    /// The prompt this recommender writes an answer to for `history`.
    pub fn prompt_of(&self, catalog: &Catalog, history: &[u32]) -> Result<String> {
        history_prompt_with(catalog, self.domain, &self.prompt, self.tokenizer, history)
    }

    pub fn recommend(&self, catalog: &Catalog, histories: &[&[u32]], targets: &[u32]) -> Result<Vec<Prediction>> {
        let prompts: Vec<String> = histories.iter().map(|h| self.prompt_of(catalog, h)).collect::<Result<_>>()?;
        let beams = generate_beams(self.tuned, self.tokenizer, self.special, &prompts, &self.beam)?;
        // The paper's ranking needs only the top beam grounded.
        let grounded: Vec<&[String]> = match self.ranking {
            Ranking::TopBeam => beams.iter().map(|b| &b[..1]).collect(),
            Ranking::Beams => beams.iter().map(Vec::as_slice).collect(),
        };
        // A later beam that is exactly a grounding title (every beam of constrained decoding) is
        // that item, its own nearest: only the other answers are embedded. The top beam always
        // is, its neighbours fill the ranking.
        let items: Vec<Vec<Option<u32>>> = grounded.iter().map(|b| beam_items(catalog, self.grounder, b)).collect();
        let answers: Vec<String> = grounded
            .iter()
            .zip(&items)
            .flat_map(|(b, items)| b.iter().zip(items).filter(|(_, item)| item.is_none()).map(|(a, _)| a.clone()))
            .collect();
        let mut nearest =
            self.grounder.rank(self.base, self.tokenizer, self.special, &answers, RANKED_LEN)?.into_iter();
        Ok(grounded
            .iter()
            .zip(items)
            .zip(targets)
            .map(|((b, items), &target)| {
                let per_beam: Vec<Vec<u32>> = items
                    .into_iter()
                    .map(|item| match item {
                        Some(id) => vec![id],
                        None => nearest.next().unwrap_or_default(),
                    })
                    .collect();
                let ranked = self.ranking.merge(&per_beam, RANKED_LEN);
                Prediction { target, generated: Some(b[0].clone()), ranked }
            })
            .collect())
    }
}

/// The grounding item each beam after the first names exactly (the very title its row embeds),
/// unless an earlier beam wrote the same text (whose item the ranking then already holds, so
/// this beam's next nearest is wanted); `None` where the answer must be embedded.
fn beam_items(catalog: &Catalog, grounder: &Grounder, beams: &[String]) -> Vec<Option<u32>> {
    beams
        .iter()
        .enumerate()
        .map(|(i, answer)| {
            let text = prompt::strip_response(answer);
            let repeated = beams[..i].iter().any(|a| prompt::strip_response(a) == text);
            (i > 0 && !repeated)
                .then(|| {
                    let id = catalog.lookup_title(text)?;
                    (catalog.title(id) == Some(text) && grounder.contains(id)).then_some(id)
                })
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    /// Under constrained decoding every beam is a title: ranking a later beam as its own item,
    /// unembedded, gives the ranking that embedding every beam gives.
    #[test]
    fn beams_that_are_titles_rank_as_if_embedded() {
        let device = Device::flex();
        let (nouns, times) = (["River", "Mountain", "Garden", "Stranger", "Road"], ["Night", "Summer", "Glass"]);
        let titles: Vec<String> =
            (0..60).map(|i| format!("The {} of {} ({})", nouns[i % 5], times[i % 3], 1940 + i)).collect();
        let catalog = Catalog::from_titles(titles.iter().enumerate().map(|(i, t)| (i as u32 + 1, t.clone())));
        let corpus: Vec<String> = titles.iter().flat_map(|t| [t.clone(), prompt::response(t)]).collect();
        let tokenizer = crate::model::formats::tokenizer::train_bpe(&corpus, 400, &[]).unwrap();
        let special = SpecialIds::endoftext(&tokenizer).unwrap();
        let mut c = crate::model::config::LlamaConfig::tiny(tokenizer.get_vocab_size(true));
        (c.hidden_size, c.intermediate_size, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim) = (32, 64, 2, 2, 1, 16);
        let model = Llama::init(&c, &device).unwrap();
        let grounder = Grounder::new(&model, &tokenizer, &special, &catalog, &mut crate::progress::silent).unwrap();
        let beam =
            BeamConfig { num_beams: 5, num_return_sequences: 5, max_new_tokens: 24, ..BeamConfig::new(special.eos) };
        let beam = crate::eval::decoding::Decoding::Constrained.apply(beam, &tokenizer, &special, &catalog).unwrap();
        let rec = LlmRecommender {
            tuned: &model,
            base: &model,
            tokenizer: &tokenizer,
            special: &special,
            grounder: &grounder,
            domain: Domain::Movies,
            prompt: PromptOptions::default(),
            beam: beam.clone(),
            ranking: Ranking::Beams,
        };
        let histories: Vec<Vec<u32>> = (0..6).map(|i| vec![1 + i, 20 + i, 40 + i]).collect();
        let histories: Vec<&[u32]> = histories.iter().map(Vec::as_slice).collect();
        let got = rec.recommend(&catalog, &histories, &[1; 6]).unwrap();

        let prompts: Vec<String> = histories.iter().map(|h| rec.prompt_of(&catalog, h).unwrap()).collect();
        let mut unembedded = 0;
        for (beams, prediction) in
            generate_beams(&model, &tokenizer, &special, &prompts, &beam).unwrap().iter().zip(&got)
        {
            let nearest = grounder.rank(&model, &tokenizer, &special, beams, RANKED_LEN).unwrap();
            assert_eq!(prediction.ranked, Ranking::Beams.merge(&nearest, RANKED_LEN), "beams {beams:?}");
            assert_eq!(prediction.ranked.len(), RANKED_LEN);
            unembedded += beam_items(&catalog, &grounder, beams).iter().flatten().count();
        }
        assert_eq!(unembedded, 6 * 4, "every beam but the top one is a title, ranked without embedding");
    }

    /// The WGSL kernel (through wgpu; lavapipe without a GPU) ranks a catalog-sized table like
    /// the tensor ops: the same items in the same order (near-ties aside) at the same distances,
    /// for random queries and for the probes the page checks at load.
    #[cfg(all(feature = "native", feature = "gpu"))]
    #[test]
    fn the_wgsl_kernel_ranks_like_the_tensor_ops() {
        let device = Device::flex();
        let (n, d) = (6344, 64);
        let table = Tensor::<2>::random([n, d], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let ids: Vec<u32> = (0..n as u32).map(|i| 3 * i + 1).collect();
        let plain = Grounder::from_table(ids, table).unwrap();
        let started = plain.clone().with_kernel_blocking().map_err(|e| eprintln!("{e}")).ok();
        let Some(with_kernel) = crate::test_assets::present_or_required("a wgpu adapter", started) else {
            return;
        };
        assert!(with_kernel.kernel_adapter().is_some() && plain.kernel_adapter().is_none());

        let queries = Tensor::<2>::random([40, d], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let kernel = with_kernel.kernel.as_deref().unwrap();
        let by_kernel = crate::block_on(with_kernel.kernel_rank(kernel, queries.clone(), 50)).unwrap();
        let by_tensors = crate::block_on(plain.tensor_rank(queries, 50)).unwrap();
        for (q, (a, b)) in by_kernel.iter().zip(&by_tensors).enumerate() {
            assert_eq!(a.len(), 50);
            for (p, (x, y)) in a.iter().zip(b).enumerate() {
                assert!((x.1 - y.1).abs() <= 1e-3 * y.1, "query {q} rank {p}: distance {} vs {}", x.1, y.1);
                assert!(
                    x.0 == y.0 || (x.1 - y.1).abs() <= TIE_TOLERANCE * y.1,
                    "query {q} rank {p}: item {} vs {}",
                    x.0,
                    y.0
                );
            }
        }

        let agreement = crate::block_on(with_kernel.kernel_agreement(32, 10)).unwrap().unwrap();
        assert_eq!((agreement.queries, agreement.same_top_k), (32, 32), "{agreement:?}");
        assert!(crate::block_on(plain.kernel_agreement(32, 10)).unwrap().is_none());
        assert!(crate::block_on(with_kernel.kernel_agreement(0, 10)).is_err());
    }
}
