//! The exported model in the page: what `soft-train export` wrote (manifest.json's `model`),
//! fetched and loaded on the started device with soft_core's byte loaders, run through its
//! async inference (beam search and grounding read back with an await: WebGPU has no
//! synchronous read). SFT and the SOFT epochs are the base model with one adapter each, merged
//! once when first asked for. With LLaRA in the export (`model.llara`), its SFT and SOFT epochs
//! are the base model with one adapter and one item projector each: the projector's layers ship
//! beside the adapter, the item table they read ships once and is put back in here.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use burn::tensor::{Tensor, TensorData};
use serde::Deserialize;
use soft_core::data::prompt::{Backbone, PromptOptions};
use soft_core::data::Catalog;
use soft_core::eval::decoding::{title_trie, Decoding, Ranking};
use soft_core::eval::llm::{history_prompt_with, Grounder, KernelAgreement};
use soft_core::model::decoding::generate::{beam_search_async, BeamConfig};
use soft_core::model::decoding::trie::TitleTrie;
use soft_core::model::formats::hf::safetensors_from_bytes;
use soft_core::model::formats::peft::{ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use soft_core::model::formats::pretrained::{from_hf_bytes, HfBytes, Pretrained};
use soft_core::model::formats::tokenizer::encode_prompt;
use soft_core::model::llama::Llama;
use soft_core::model::projector::{PROJECTOR_FILE, TABLE};
use soft_core::model::weights::safetensors_bytes;
use soft_core::model::weights::{FloatEncoding, RawTensor};

use crate::page_data::PageData;
#[cfg(feature = "webgpu")]
use crate::runtime::Backend;
use crate::runtime::{
    asset, fetch_bytes, now_ms, LocalFuture, ModelChoice, NoModel, PromptTokens, Ranked, RecommendError,
    RecommendRequest, Recommendation, Recommender, Runtime, Timings,
};

/// manifest.json's `model` entry (paths relative to `assets/`).
#[derive(Debug, Clone, Deserialize)]
pub struct ModelManifest {
    pub name: String,
    pub config: String,
    pub weights: String,
    pub tokenizer: String,
    pub tokenizer_config: Option<String>,
    pub grounding: GroundingManifest,
    pub beam: BeamManifest,
    /// How the run ranked items from the beams (exports before it: the paper's, the top beam).
    #[serde(default)]
    pub ranking: Ranking,
    pub sft: AdapterManifest,
    pub soft: SoftManifest,
    /// The prompt options BIGRec trained with; exports before LLaRA have none: the defaults.
    #[serde(default)]
    pub prompt: PromptOptions,
    /// LLaRA's models, when the run trained them.
    #[serde(default)]
    pub llara: Option<LlaraManifest>,
}

/// `model.llara`: LLaRA's adapters, each with its projector's layers, and the item table.
#[derive(Debug, Clone, Deserialize)]
pub struct LlaraManifest {
    /// The prompt options LLaRA trained with (`backbone: llara`: item markers after the titles).
    pub prompt: PromptOptions,
    /// Beam settings when they differ from BIGRec's (`model.beam` otherwise).
    #[serde(default)]
    pub beam: Option<BeamManifest>,
    pub item_table: ItemTableManifest,
    pub sft: AdapterManifest,
    pub soft: SoftManifest,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ItemTableManifest {
    pub path: String,
    pub tensor: String,
    #[serde(default)]
    pub dtype: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GroundingManifest {
    pub table: String,
    pub tensor: String,
    pub ids: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BeamManifest {
    pub num_beams: usize,
    pub max_new_tokens: usize,
    pub length_penalty: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AdapterManifest {
    pub adapter: String,
    /// LLaRA: the item projector's layers (the item table left out).
    #[serde(default)]
    pub projector: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SoftManifest {
    pub adapter: String,
    /// LLaRA: the item projector's layers of the adapter as evaluated.
    #[serde(default)]
    pub projector: Option<String>,
    pub best_epoch: usize,
    pub epochs: Vec<EpochManifest>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EpochManifest {
    pub epoch: usize,
    pub adapter: String,
    #[serde(default)]
    pub projector: Option<String>,
}

async fn fetch(path: &str) -> Result<Vec<u8>, String> {
    fetch_bytes(&asset(path)).await.map_err(|e| e.to_string())
}

/// The loaded model: the base (which also embeds answers for grounding), the catalog's table,
/// and the tuned models, each merged on first use.
pub struct PageModel {
    manifest: ModelManifest,
    base: Pretrained,
    grounder: Grounder,
    data: Arc<PageData>,
    beam: BeamConfig,
    backend: String,
    parameters: usize,
    /// Merged models by backbone (its name) and choice.
    tuned: RefCell<BTreeMap<(&'static str, ModelChoice), Rc<Llama>>>,
    /// LLaRA's item table, fetched with the first LLaRA model.
    item_table: RefCell<Option<Rc<RawTensor>>>,
    trie: RefCell<Option<Arc<TitleTrie>>>,
    /// On WebGPU the project's WGSL kernel ranks the catalog (the grounder holds it), checked at
    /// load against the tensor ranking; `None` on the CPU backend or if the kernel did not start.
    kernel_check: Option<KernelAgreement>,
}

/// Probe queries and ranks of the kernel check at load.
#[cfg(feature = "webgpu")]
const KERNEL_CHECK_QUERIES: usize = 32;
const KERNEL_CHECK_K: usize = 10;

impl PageModel {
    /// Fetches and loads everything the manifest's `model` names; an error names the file.
    pub async fn load(runtime: &Runtime, manifest: ModelManifest, data: Arc<PageData>) -> Result<Self, String> {
        let config = fetch(&manifest.config).await?;
        let weights = fetch(&manifest.weights).await?;
        let tokenizer = fetch(&manifest.tokenizer).await?;
        let tokenizer_config = match &manifest.tokenizer_config {
            Some(path) => Some(fetch(path).await?),
            None => None,
        };
        let files = HfBytes {
            config: &config,
            weights: &weights,
            tokenizer: &tokenizer,
            tokenizer_config: tokenizer_config.as_deref(),
        };
        let dir = asset(manifest.weights.rsplit_once('/').map_or("", |(dir, _)| dir));
        let base = from_hf_bytes(&files, Path::new(&dir), &runtime.device).map_err(|e| e.to_string())?;
        let c = base.model.config();
        let parameters =
            c.vocab_size * c.hidden_size + c.n_layers * c.projections().iter().map(|p| p.d_in * p.d_out).sum::<usize>();

        let table_url = asset(&manifest.grounding.table);
        let bytes = fetch(&manifest.grounding.table).await?;
        let mut tensors = safetensors_from_bytes(&bytes, Path::new(&table_url)).map_err(|e| e.to_string())?;
        let table = tensors
            .remove(&manifest.grounding.tensor)
            .ok_or_else(|| format!("{table_url}: no tensor `{}`", manifest.grounding.tensor))?;
        let &[n, d] = table.shape.as_slice() else {
            return Err(format!(
                "{table_url}: `{}` has shape {:?}, expected 2 dimensions",
                manifest.grounding.tensor, table.shape
            ));
        };
        if d != c.hidden_size {
            return Err(format!(
                "{table_url}: embeddings of width {d}, but the model's hidden size is {}",
                c.hidden_size
            ));
        }
        let table = Tensor::<2>::from_data(TensorData::new(table.data, [n, d]), &runtime.device);
        #[cfg_attr(not(feature = "webgpu"), allow(unused_mut))]
        let mut grounder =
            Grounder::from_table(manifest.grounding.ids.clone(), table).map_err(|e| format!("{table_url}: {e}"))?;
        #[cfg_attr(not(feature = "webgpu"), allow(unused_mut))]
        let mut kernel_check = None;
        #[cfg(feature = "webgpu")]
        if let Backend::WebGpu { .. } = &runtime.backend {
            match grounder.clone().with_kernel().await {
                Ok(with_kernel) => {
                    let check = with_kernel.kernel_agreement(KERNEL_CHECK_QUERIES, KERNEL_CHECK_K).await;
                    kernel_check = check.map_err(|e| e.to_string())?;
                    grounder = with_kernel;
                }
                Err(e) => crate::runtime::log(&format!("{e}: ranking with tensors")),
            }
        }
        let beam = BeamConfig {
            num_beams: manifest.beam.num_beams,
            num_return_sequences: 1,
            max_new_tokens: manifest.beam.max_new_tokens,
            length_penalty: manifest.beam.length_penalty,
            ..BeamConfig::new(base.special.eos)
        };
        let model = Self {
            manifest,
            base,
            grounder,
            data,
            beam,
            backend: runtime.backend.label(),
            parameters,
            tuned: RefCell::new(BTreeMap::new()),
            item_table: RefCell::new(None),
            trie: RefCell::new(None),
            kernel_check,
        };
        // The models the Recommend view runs first, loaded now rather than on the first click.
        model.tuned(Backbone::Bigrec, ModelChoice::Sft).await?;
        model.tuned(Backbone::Bigrec, ModelChoice::Soft { epoch: None }).await?;
        Ok(model)
    }

    /// `backbone`'s adapters (BIGRec's, or LLaRA's when the export holds them).
    fn adapters(&self, backbone: Backbone) -> Option<(&AdapterManifest, &SoftManifest)> {
        match backbone {
            Backbone::Bigrec => Some((&self.manifest.sft, &self.manifest.soft)),
            Backbone::Llara => self.manifest.llara.as_ref().map(|l| (&l.sft, &l.soft)),
        }
    }

    /// The adapter directory of `choice` and its projector's layers (LLaRA); `None` for an
    /// adapter the export does not hold.
    fn adapter_files(&self, backbone: Backbone, choice: ModelChoice) -> Option<(&str, Option<&str>)> {
        let (sft, soft) = self.adapters(backbone)?;
        match choice {
            ModelChoice::Sft => Some((&sft.adapter, sft.projector.as_deref())),
            ModelChoice::Soft { epoch: None } => Some((&soft.adapter, soft.projector.as_deref())),
            ModelChoice::Soft { epoch: Some(e) } => {
                soft.epochs.iter().find(|x| x.epoch == e).map(|x| (x.adapter.as_str(), x.projector.as_deref()))
            }
        }
    }

    fn prompt_options(&self, backbone: Backbone) -> Result<&PromptOptions, String> {
        match backbone {
            Backbone::Bigrec => Ok(&self.manifest.prompt),
            Backbone::Llara => {
                self.manifest.llara.as_ref().map(|l| &l.prompt).ok_or_else(|| "the export has no LLaRA models".into())
            }
        }
    }

    /// LLaRA's item table `[items, d_rec]` as f32 values, fetched once.
    async fn item_table(&self) -> Result<Rc<RawTensor>, String> {
        if let Some(t) = self.item_table.borrow().as_ref() {
            return Ok(t.clone());
        }
        let entry = &self.manifest.llara.as_ref().ok_or("the export has no LLaRA models")?.item_table;
        let url = asset(&entry.path);
        let bytes = fetch(&entry.path).await?;
        let mut tensors = safetensors_from_bytes(&bytes, Path::new(&url)).map_err(|e| e.to_string())?;
        let table = tensors.remove(&entry.tensor).ok_or_else(|| format!("{url}: no tensor `{}`", entry.tensor))?;
        let table = Rc::new(table);
        *self.item_table.borrow_mut() = Some(table.clone());
        Ok(table)
    }

    /// The bytes of a whole projector file (`PROJECTOR_FILE`, as soft_core reads it): the layers
    /// the export shipped beside the adapter with the shared item table put back in.
    async fn projector_bytes(&self, layers: &str) -> Result<(Vec<u8>, String), String> {
        let url = asset(layers);
        let bytes = fetch(layers).await?;
        let mut tensors = safetensors_from_bytes(&bytes, Path::new(&url)).map_err(|e| e.to_string())?;
        if tensors.contains_key(TABLE) {
            return Err(format!("{url}: holds `{TABLE}`, which ships once in the item table file"));
        }
        tensors.insert(TABLE.to_string(), (*self.item_table().await?).clone());
        // Errors name both files the projector came from.
        let table = self.manifest.llara.as_ref().map(|l| asset(&l.item_table.path)).unwrap_or_default();
        let path = format!("{url} with {table} (as one {PROJECTOR_FILE})");
        let whole = safetensors_bytes(&tensors, FloatEncoding::F32, Path::new(&path)).map_err(|e| e.to_string())?;
        Ok((whole, path))
    }

    /// The base model with `choice`'s adapter (and for LLaRA its item projector) merged in,
    /// fetched on first use.
    async fn tuned(&self, backbone: Backbone, choice: ModelChoice) -> Result<Rc<Llama>, String> {
        let key = (backbone.name(), choice);
        if let Some(m) = self.tuned.borrow().get(&key) {
            return Ok(m.clone());
        }
        let (dir, layers) = self
            .adapter_files(backbone, choice)
            .ok_or_else(|| format!("the export has no adapter for {}", choice.label_for(backbone)))?;
        let config = fetch(&format!("{dir}/{ADAPTER_CONFIG}")).await?;
        let weights = fetch(&format!("{dir}/{ADAPTER_WEIGHTS}")).await?;
        let mut model = self
            .base
            .model
            .clone()
            .load_adapter_from_bytes(&config, &weights, Path::new(&asset(dir)))
            .map_err(|e| e.to_string())?;
        if backbone == Backbone::Llara {
            let layers = layers.ok_or_else(|| format!("{}: no item projector in the manifest", asset(dir)))?;
            let (bytes, path) = self.projector_bytes(layers).await?;
            model = model.load_projector_from_bytes(&bytes, Path::new(&path)).map_err(|e| e.to_string())?;
        }
        let model = Rc::new(model.merge_lora());
        self.tuned.borrow_mut().insert(key, model.clone());
        Ok(model)
    }

    /// Beam search's settings for `backbone` and `decoding`; the title trie is built on first use.
    fn beam(&self, backbone: Backbone, decoding: Decoding) -> Result<BeamConfig, String> {
        let own = match (backbone, self.manifest.llara.as_ref().and_then(|l| l.beam.as_ref())) {
            (Backbone::Llara, Some(b)) => BeamConfig {
                num_beams: b.num_beams,
                max_new_tokens: b.max_new_tokens,
                length_penalty: b.length_penalty,
                ..self.beam.clone()
            },
            _ => self.beam.clone(),
        };
        Ok(match decoding {
            Decoding::Free => own,
            Decoding::Constrained => {
                let mut trie = self.trie.borrow_mut();
                if trie.is_none() {
                    let built = title_trie(&self.base.tokenizer, &self.base.special, &self.data.catalog)
                        .map_err(|e| e.to_string())?;
                    *trie = Some(Arc::new(built));
                }
                BeamConfig { constraint: trie.clone(), ..own }
            }
        })
    }

    /// The `k` items the run's ranking (manifest `model.ranking`, as the run evaluated its models)
    /// makes of `beams` (best first), each with its L2 distance to the answer of the beam that
    /// ranked it: the top beam's nearest items (the paper's), or each beam's nearest item not yet
    /// ranked and the top beam's neighbours after them. Embedded with the base model, ranked by
    /// the WGSL kernel on WebGPU, as the native evaluation does.
    async fn ground(&self, beams: &[String], k: usize) -> Result<Vec<(u32, f32)>, String> {
        let (tokenizer, special) = (&self.base.tokenizer, &self.base.special);
        let grounded = match self.manifest.ranking {
            Ranking::TopBeam => &beams[..beams.len().min(1)],
            Ranking::Beams => beams,
        };
        let lists = self.grounder.rank_async(&self.base.model, tokenizer, special, grounded, k).await;
        let lists = lists.map_err(|e| e.to_string())?;
        let per_beam: Vec<Vec<u32>> = lists.iter().map(|l| l.iter().map(|&(id, _)| id).collect()).collect();
        let ids = self.manifest.ranking.merge(&per_beam, k);
        // Each item's distance in the first list that holds it: where merge found it.
        let distance = |id: u32| lists.iter().flatten().find(|&&(i, _)| i == id).map_or(f32::NAN, |&(_, d)| d);
        Ok(ids.into_iter().map(|id| (id, distance(id))).collect())
    }

    async fn run(&self, request: &RecommendRequest) -> Result<Recommendation, RecommendError> {
        let catalog: &Catalog = &self.data.catalog;
        crate::history::check(catalog, &request.history).map_err(|e| RecommendError::BadInput(e.to_string()))?;
        let failed = RecommendError::Failed;
        let backbone = request.backbone;
        let model = self.tuned(backbone, request.model).await.map_err(RecommendError::NoModel)?;
        let beam = self.beam(backbone, request.decoding).map_err(failed)?;

        let t0 = now_ms();
        let ids = self.prompt_tokens(backbone, &request.history).map_err(failed)?.ids;
        let t1 = now_ms();
        let hyps = beam_search_async(&model, &[ids], &beam).await.map_err(|e| failed(e.to_string()))?;
        let beams = hyps
            .first()
            .map(|h| h.iter().map(|h| self.base.tokenizer.decode(&h.tokens, true)).collect::<Result<Vec<_>, _>>())
            .transpose()
            .map_err(|e| failed(format!("decoding the answer: {e}")))?
            .unwrap_or_default();
        let generated = beams.first().cloned().unwrap_or_default();
        let t2 = now_ms();
        let ranked = self.ground(&beams, request.top_k).await.map_err(failed)?;
        let t3 = now_ms();
        let top = ranked
            .into_iter()
            .map(|(id, distance)| Ranked { id, title: catalog.title(id).unwrap_or_default().to_string(), distance })
            .collect();
        Ok(Recommendation {
            answered_by: request.model,
            backbone,
            generated,
            top,
            timings: Timings { tokenize_ms: t1 - t0, generate_ms: t2 - t1, ground_ms: t3 - t2 },
            backend: self.backend.clone(),
        })
    }
}

impl Recommender for PageModel {
    fn describe(&self) -> String {
        let epochs = self.soft_epochs(Backbone::Bigrec);
        let llara = self.manifest.llara.as_ref().map(|l| {
            let e = self.soft_epochs(Backbone::Llara);
            format!(
                " LLaRA: SFT and SOFT adapters with their item projectors (SOFT as evaluated: epoch {}; epochs {}-{}), the item table in {}.",
                l.soft.best_epoch,
                e.first().copied().unwrap_or(0),
                e.last().copied().unwrap_or(0),
                l.item_table.dtype.as_deref().unwrap_or("?"),
            )
        });
        format!(
            "Model: {}, {:.1} M parameters; SFT and SOFT adapters (SOFT as evaluated: epoch {}; epochs {}-{} for the slider); grounding by {}.{}",
            self.manifest.name,
            self.parameters as f64 / 1e6,
            self.manifest.soft.best_epoch,
            epochs.first().copied().unwrap_or(0),
            epochs.last().copied().unwrap_or(0),
            match (&self.kernel_check, self.grounder.kernel_adapter()) {
                (Some(c), Some(adapter)) => format!(
                    "the project's WGSL kernel on {adapter} (checked at load: the same top-{KERNEL_CHECK_K} as the tensor ranking for {} of {} probe queries, distances within {:.1e})",
                    c.same_top_k, c.queries, c.max_distance_diff
                ),
                _ => "tensor ops".to_string(),
            },
            llara.unwrap_or_default(),
        )
    }

    fn soft_epochs(&self, backbone: Backbone) -> Vec<usize> {
        self.adapters(backbone).map(|(_, soft)| soft.epochs.iter().map(|e| e.epoch).collect()).unwrap_or_default()
    }

    fn prompt_tokens(&self, backbone: Backbone, history: &[u32]) -> Result<PromptTokens, String> {
        let options = self.prompt_options(backbone)?;
        let (tokenizer, special) = (&self.base.tokenizer, &self.base.special);
        let text = history_prompt_with(&self.data.catalog, self.data.domain, options, tokenizer, history)
            .map_err(|e| e.to_string())?;
        let ids = encode_prompt(tokenizer, special, &text).map_err(|e| e.to_string())?;
        Ok(PromptTokens { text, ids })
    }

    fn recommend<'a>(
        &'a self,
        request: &'a RecommendRequest,
    ) -> LocalFuture<'a, Result<Recommendation, RecommendError>> {
        Box::pin(self.run(request))
    }
}

/// The recommender the assets allow: the exported model when `manifest.json` names one and it
/// loads, otherwise [`NoModel`] with the reason (naming the file that failed).
pub async fn load_recommender(
    runtime: &Runtime,
    manifest: Option<&serde_json::Value>,
    data: Arc<PageData>,
) -> Box<dyn Recommender> {
    let Some(entry) = manifest.and_then(|m| m.get("model")) else {
        return Box::new(NoModel {
            why: "this build ships no model: `soft-train export` writes one (base weights, the SFT adapter, every SOFT epoch's adapter, tokenizer, catalog embeddings)".into(),
        });
    };
    let manifest: ModelManifest = match serde_json::from_value(entry.clone()) {
        Ok(m) => m,
        Err(e) => return Box::new(NoModel { why: format!("assets/manifest.json: the `model` entry is not one: {e}") }),
    };
    match PageModel::load(runtime, manifest, data).await {
        Ok(model) => Box::new(model),
        Err(why) => Box::new(NoModel { why: format!("the model did not load: {why}") }),
    }
}
