//! The dataset and split options shared by every subcommand that trains: `DataArgs` as the
//! flags take them, `DataOptions` once every sample size is settled.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use soft_core::data::dataset::Source;
use soft_core::data::{split, Dataset, Domain, Split, SplitConfig};

#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// `amazon-books` (embedded), `ml-100k` (fetched by scripts/fetch-ml100k.sh) or a directory
    /// holding sequences.csv + id2name.json, interaction.csv + metadata.jsonl, or NAME.inter + NAME.item
    /// [default: amazon-books; `run --profile cpu`: ml-100k].
    #[arg(long)]
    pub dataset: Option<String>,
    /// Domain of the prompt text (books, movies, games, generic); detected when not given.
    #[arg(long, value_parser = parse_domain)]
    pub domain: Option<Domain>,
    /// k of the iterative k-core filter applied to raw formats.
    #[arg(long, default_value_t = 10)]
    pub k_core: usize,
    /// Training examples sampled from the first 80 % of windows [default: 4096, the reference's;
    /// `run` picks its own per profile].
    #[arg(long)]
    pub train_size: Option<usize>,
    /// Validation examples sampled from the next 10 % [default: 512].
    #[arg(long)]
    pub valid_size: Option<usize>,
    /// Test examples sampled from the last 10 % [default: 1000].
    #[arg(long)]
    pub test_size: Option<usize>,
    /// Seed of the sampling.
    #[arg(long, default_value_t = SplitConfig::default().seed)]
    pub split_seed: u64,
}

fn parse_domain(s: &str) -> Result<Domain, String> {
    Domain::parse(s).ok_or_else(|| format!("unknown domain `{s}` (books, movies, games, generic)"))
}

/// Which dataset, and which samples of its split, a stage works on. `run` keeps it in its
/// configuration file under these field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataOptions {
    pub dataset: String,
    pub domain: Option<Domain>,
    pub k_core: usize,
    pub split: SplitConfig,
}

/// The dataset where none is given.
pub const DEFAULT_DATASET: &str = "amazon-books";

impl DataArgs {
    /// The settings, with `dataset` and `sizes` where none is given.
    pub fn options(&self, dataset: &str, sizes: SplitConfig) -> DataOptions {
        DataOptions {
            dataset: self.dataset.clone().unwrap_or_else(|| dataset.into()),
            domain: self.domain,
            k_core: self.k_core,
            split: SplitConfig {
                train: self.train_size.unwrap_or(sizes.train),
                valid: self.valid_size.unwrap_or(sizes.valid),
                test: self.test_size.unwrap_or(sizes.test),
                seed: self.split_seed,
            },
        }
    }
}

impl From<&DataArgs> for DataOptions {
    /// The default dataset and the reference's sample sizes where none is given.
    fn from(args: &DataArgs) -> Self {
        args.options(DEFAULT_DATASET, SplitConfig::default())
    }
}

/// Where `ml-100k` lives: $SOFT_DATA_DIR/ml-100k, else data/ml-100k under the current directory.
fn ml100k_dir() -> PathBuf {
    std::env::var_os("SOFT_DATA_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("data")).join("ml-100k")
}

impl DataOptions {
    /// Refuses sizes that would leave a part of the split (or the k-core) empty.
    pub fn validate(&self) -> soft_core::Result<()> {
        if self.k_core == 0 {
            return Err(soft_core::Error::config("data", "k_core must be at least 1"));
        }
        self.split.validate()
    }

    pub fn load(&self) -> soft_core::Result<(Dataset, Split)> {
        self.validate()?;
        let source = Source::parse(&self.dataset, &ml100k_dir());
        let dataset = Dataset::load(&source, self.k_core, self.domain)?;
        let split = split::split(&dataset.windows, &self.split);
        Ok((dataset, split))
    }
}
