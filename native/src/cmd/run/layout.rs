//! Where `soft-train run` keeps each thing in its output directory.

use std::path::{Path, PathBuf};

use soft_core::eval::decoding::Decoding;

/// A method of the table: its directory, its row label, and whether it is a language model
/// (evaluated with both decodings).
pub struct Method {
    pub dir: &'static str,
    pub label: &'static str,
    pub llm: bool,
}

pub const POPULARITY: Method = Method { dir: "popularity", label: "popularity", llm: false };
pub const SASREC: Method = Method { dir: "sasrec", label: "SASRec", llm: false };
pub const SFT: Method = Method { dir: "sft", label: "SFT", llm: true };
pub const SOFT: Method = Method { dir: "soft", label: "SOFT (adaptive)", llm: true };
pub const SOFT_WITHOUT_SA: Method = Method { dir: "soft-distilled-only", label: "SOFT without SA", llm: true };

/// The rows of the table, in order.
pub const METHODS: [Method; 5] = [POPULARITY, SASREC, SFT, SOFT, SOFT_WITHOUT_SA];

/// The prepared dataset and its split.
pub const DATA_DIR: &str = "data";
/// The figures of the first seed.
pub const PLOTS_DIR: &str = "plots";

/// Where seed number `i` keeps its methods: the run directory itself for the first seed (the
/// stable layout), `seeds/SEED/` for the others. Popularity has no seed: it is always at the top.
pub fn seed_dir(out: &Path, i: usize, seed: u64) -> PathBuf {
    if i == 0 {
        out.to_path_buf()
    } else {
        out.join("seeds").join(seed.to_string())
    }
}

/// A method's evaluation on the test split with `decoding`, inside the method's directory.
pub fn test_dir(decoding: Decoding) -> &'static str {
    match decoding {
        Decoding::Free => "test",
        Decoding::Constrained => "test-constrained",
    }
}

/// The decodings a method is evaluated with.
pub fn decodings(method: &Method) -> &'static [Decoding] {
    if method.llm {
        &[Decoding::Free, Decoding::Constrained]
    } else {
        &[Decoding::Free]
    }
}
