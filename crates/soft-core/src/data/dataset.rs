//! A dataset: its item catalog, its windows in time order and its domain. Loaded from the
//! embedded default, from MovieLens-100k fetched by the project's script, or from a directory
//! in any of the three formats (processed, Amazon 2023 raw, RecBole atomic).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::windows::{parse_sequences, sequences_csv};
use crate::data::{amazon2023, embedded, recbole, Catalog, Domain, Window};
use crate::{Error, Result};

pub const SEQUENCES_FILE: &str = "sequences.csv";
pub const ITEMS_FILE: &str = "id2name.json";
/// Written beside a prepared dataset so its domain and origin travel with it.
pub const META_FILE: &str = "dataset.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetMeta {
    pub name: String,
    pub domain: Domain,
}

#[derive(Debug, Clone)]
pub struct Dataset {
    pub meta: DatasetMeta,
    pub catalog: Catalog,
    pub windows: Vec<Window>,
}

/// Where a dataset comes from, as a user names it.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    AmazonBooks,
    /// MovieLens-100k from the `recbole` wheel, in this directory.
    Ml100k(PathBuf),
    Path(PathBuf),
}

impl Source {
    /// `amazon-books`, `ml-100k` (looked for in `ml100k_dir`) or a directory.
    pub fn parse(spec: &str, ml100k_dir: &Path) -> Self {
        match spec {
            "amazon-books" => Source::AmazonBooks,
            "ml-100k" => Source::Ml100k(ml100k_dir.to_path_buf()),
            other => Source::Path(PathBuf::from(other)),
        }
    }
}

impl Dataset {
    /// `k` is the k-core threshold for raw formats; `domain` overrides the detected one.
    pub fn load(source: &Source, k: usize, domain: Option<Domain>) -> Result<Self> {
        let mut ds = match source {
            Source::AmazonBooks => Self::embedded_books()?,
            Source::Ml100k(dir) => {
                let (inter, item) = recbole::find_files(dir).ok_or_else(|| {
                    Error::NotFound(format!(
                        "MovieLens-100k not found in {}: run scripts/fetch-ml100k.sh",
                        dir.display()
                    ))
                })?;
                let (catalog, windows) = recbole::load(&inter, &item, k)?;
                Self { meta: DatasetMeta { name: "ml-100k".into(), domain: Domain::Movies }, catalog, windows }
            }
            Source::Path(dir) => Self::load_dir(dir, k)?,
        };
        if let Some(d) = domain {
            ds.meta.domain = d;
        }
        Ok(ds)
    }

    pub fn embedded_books() -> Result<Self> {
        let catalog = Catalog::parse(Path::new("data/amazon-books/id2name.json"), embedded::AMAZON_BOOKS_ITEMS)?;
        let windows = parse_sequences(
            Path::new("data/amazon-books/sequences.csv"),
            embedded::AMAZON_BOOKS_SEQUENCES.as_bytes(),
            &catalog,
        )?;
        Ok(Self { meta: DatasetMeta { name: "amazon-books".into(), domain: Domain::Books }, catalog, windows })
    }

    fn load_dir(dir: &Path, k: usize) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::NotFound(format!(
                "{}: not a directory, nor one of the named datasets `amazon-books`, `ml-100k`",
                dir.display()
            )));
        }
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "dataset".into());
        let generic = DatasetMeta { name, domain: Domain::Generic };
        if dir.join(SEQUENCES_FILE).exists() {
            let meta_path = dir.join(META_FILE);
            let meta = if meta_path.exists() {
                let text = std::fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
                serde_json::from_str(&text).map_err(|e| Error::json(&meta_path, e))?
            } else {
                generic
            };
            let catalog = Catalog::load(&dir.join(ITEMS_FILE))?;
            let windows = crate::data::windows::load_sequences(&dir.join(SEQUENCES_FILE), &catalog)?;
            return Ok(Self { meta, catalog, windows });
        }
        if dir.join(amazon2023::INTERACTIONS_FILE).exists() {
            let (catalog, windows) = amazon2023::load_dir(dir, k)?;
            return Ok(Self { meta: generic, catalog, windows });
        }
        if let Some((inter, item)) = recbole::find_files(dir) {
            let (catalog, windows) = recbole::load(&inter, &item, k)?;
            return Ok(Self { meta: generic, catalog, windows });
        }
        Err(Error::NotFound(format!(
            "{}: no dataset found: expected sequences.csv + id2name.json, interaction.csv + metadata.jsonl, or NAME.inter + NAME.item",
            dir.display()
        )))
    }

    /// The files of the processed format, for `prepare`.
    pub fn processed_files(&self) -> Vec<(&'static str, String)> {
        vec![
            (SEQUENCES_FILE, sequences_csv(&self.windows)),
            (ITEMS_FILE, self.catalog.to_json()),
            (META_FILE, serde_json::to_string_pretty(&self.meta).expect("meta serialises")),
        ]
    }
}
