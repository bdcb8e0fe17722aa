//! What the page loads before any view draws: the shipped dataset as the run split it, and the
//! run's reports. Here, not in the app shell, so the views, the runtime and the model can all
//! read them without importing the shell that imports them.

use std::path::Path;

use soft_core::data::prompt::Backbone;
use soft_core::data::windows::parse_sequences;
use soft_core::data::{split, Catalog, Domain, SplitConfig, Window};

use crate::domain_words::Words;
use crate::history::SearchIndex;
use crate::report::{Report, RunReport, SftReport, SoftReport};
use crate::runtime;
use crate::test_table::TestTable;

/// The shipped dataset as the run split it.
pub struct PageData {
    pub catalog: Catalog,
    pub domain: Domain,
    pub train: Vec<Window>,
    pub test: Vec<Window>,
    pub split: SplitConfig,
    pub windows: usize,
    pub index: SearchIndex,
    /// The run's test table (manifest `metrics`), shown beside every answer.
    pub table: TestTable,
    pub words: Words,
    /// Whether the shipped models were trained by a binary built from uncommitted changes
    /// (manifest `provenance.dirty`: `soft-train export --allow-dirty`).
    pub dirty: bool,
}

impl PageData {
    /// The dataset the manifest names (`dataset.items`, `dataset.sequences`, `dataset.domain`),
    /// fetched and parsed by soft_core's own readers, split as the run split it. Fetched rather
    /// than compiled in: 3 MB less wasm, and an export of another dataset needs no new build.
    pub async fn load(manifest: Option<&serde_json::Value>, split_config: SplitConfig) -> Result<Self, String> {
        let field = |k: &str, default: &str| {
            manifest
                .and_then(|m| m.get("dataset"))
                .and_then(|d| d.get(k))
                .and_then(|v| v.as_str())
                .unwrap_or(default)
                .to_string()
        };
        let items_url = runtime::asset(&field("items", "data/amazon-books/id2name.json"));
        let sequences_url = runtime::asset(&field("sequences", "data/amazon-books/sequences.csv"));
        let domain = Domain::parse(&field("domain", "books"))
            .ok_or_else(|| format!("assets/manifest.json: unknown domain `{}`", field("domain", "books")))?;
        let items = runtime::fetch_text(&items_url).await.map_err(|e| e.to_string())?;
        let catalog = Catalog::parse(Path::new(&items_url), &items).map_err(|e| e.to_string())?;
        let sequences = runtime::fetch_bytes(&sequences_url).await.map_err(|e| e.to_string())?;
        let windows = parse_sequences(Path::new(&sequences_url), &sequences, &catalog).map_err(|e| e.to_string())?;
        let parts = split::split(&windows, &split_config);
        let index = SearchIndex::new(&catalog);
        let table = TestTable::from_manifest(manifest)?;
        let dirty = manifest.and_then(|m| m.pointer("/provenance/dirty")).and_then(|d| d.as_bool()) == Some(true);
        Ok(Self {
            table,
            words: Words::of(domain),
            dirty,
            domain,
            windows: windows.len(),
            train: parts.train,
            test: parts.test,
            split: split_config,
            catalog,
            index,
        })
    }
}

/// A report and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Named<T> {
    pub source: String,
    pub method: String,
    pub report: T,
}

/// The reports the views draw: the shipped ones, replaced by any a person drops in. BIGRec's
/// stage reports and LLaRA's are kept apart (each report says its backbone).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reports {
    pub soft: Option<Named<SoftReport>>,
    pub sft: Option<Named<SftReport>>,
    pub run: Option<Named<RunReport>>,
    pub llara_soft: Option<Named<SoftReport>>,
    pub llara_sft: Option<Named<SftReport>>,
}

impl Reports {
    pub fn add(&mut self, source: String, report: Report) {
        let llara = report.backbone() == Some(Backbone::Llara);
        match report {
            Report::Soft { method, report } if llara => self.llara_soft = Some(Named { source, method, report }),
            Report::Soft { method, report } => self.soft = Some(Named { source, method, report }),
            Report::Sft(report) if llara => self.llara_sft = Some(Named { source, method: "sft".into(), report }),
            Report::Sft(report) => self.sft = Some(Named { source, method: "sft".into(), report }),
            Report::Run(report) => self.run = Some(Named { source, method: "run".into(), report }),
        }
    }

    /// `backbone`'s SOFT report.
    pub fn soft_of(&self, backbone: Backbone) -> Option<&Named<SoftReport>> {
        match backbone {
            Backbone::Bigrec => self.soft.as_ref(),
            Backbone::Llara => self.llara_soft.as_ref(),
        }
    }

    /// `backbone`'s SFT report.
    pub fn sft_of(&self, backbone: Backbone) -> Option<&Named<SftReport>> {
        match backbone {
            Backbone::Bigrec => self.sft.as_ref(),
            Backbone::Llara => self.llara_sft.as_ref(),
        }
    }
}

/// Whether the manifest's export holds LLaRA's models (`model.llara`).
pub fn has_llara(manifest: Option<&serde_json::Value>) -> bool {
    manifest.and_then(|m| m.pointer("/model/llara")).is_some_and(|l| l.is_object())
}
