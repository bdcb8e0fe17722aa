//! Where `soft-train run` keeps each thing in its output directory, and the methods of its table.

use std::path::{Path, PathBuf};

use soft_core::eval::decoding::Decoding;

/// Method directories. Popularity and Guidance-Only have no seed: they sit at the top.
pub const POPULARITY: &str = "popularity";
pub const GUIDANCE_ONLY: &str = "guidance-only";
pub const SASREC: &str = "sasrec";
pub const SFT: &str = "sft";
/// SOFT with the first `--alpha`; every other alpha A gets `soft-alpha-A`.
pub const SOFT: &str = "soft";
pub const SOFT_WITHOUT_SA: &str = "soft-distilled-only";

/// A method of the table: its directory (inside a seed's directory when `seeded`), its row
/// label, and whether it is a language model (evaluated with both decodings).
#[derive(Debug, Clone, PartialEq)]
pub struct Method {
    pub dir: String,
    pub label: String,
    pub llm: bool,
    pub seeded: bool,
}

impl Method {
    fn new(dir: impl Into<String>, label: impl Into<String>, llm: bool, seeded: bool) -> Self {
        Self { dir: dir.into(), label: label.into(), llm, seeded }
    }
}

/// SOFT's directory for `alpha`, the `i`-th of the run's alphas.
pub fn soft_dir(i: usize, alpha: f64) -> String {
    if i == 0 {
        SOFT.into()
    } else {
        format!("soft-alpha-{alpha}")
    }
}

/// The rows of the table, in order, for a run with these alphas.
pub fn methods(alphas: &[f64]) -> Vec<Method> {
    let mut rows = vec![
        Method::new(POPULARITY, "popularity", false, false),
        Method::new(GUIDANCE_ONLY, "Guidance-Only", true, false),
        Method::new(SASREC, "SASRec", false, true),
        Method::new(SFT, "SFT", true, true),
    ];
    for (i, &alpha) in alphas.iter().enumerate() {
        let label =
            if alphas.len() > 1 { format!("SOFT (adaptive, alpha {alpha})") } else { "SOFT (adaptive)".to_string() };
        rows.push(Method::new(soft_dir(i, alpha), label, true, true));
    }
    rows.push(Method::new(SOFT_WITHOUT_SA, "SOFT without SA", true, true));
    rows
}

/// The prepared dataset and its split.
pub const DATA_DIR: &str = "data";
/// The figures of the first seed.
pub const PLOTS_DIR: &str = "plots";
/// The `tiny` model pre-trained for this run (`--pretrain-steps`).
pub const TINY_DIR: &str = "tiny";

/// Where seed number `i` keeps its methods: the run directory itself for the first seed (the
/// stable layout), `seeds/SEED/` for the others.
pub fn seed_dir(out: &Path, i: usize, seed: u64) -> PathBuf {
    if i == 0 {
        out.to_path_buf()
    } else {
        out.join("seeds").join(seed.to_string())
    }
}

/// The directories of `method`'s runs, one per seed (one in all for an unseeded method).
pub fn method_dirs(out: &Path, seeds: &[u64], method: &Method) -> Vec<PathBuf> {
    if method.seeded {
        seeds.iter().enumerate().map(|(i, &s)| seed_dir(out, i, s).join(&method.dir)).collect()
    } else {
        vec![out.join(&method.dir)]
    }
}

/// A method's evaluation on the test split with `decoding`, inside the method's directory.
pub fn test_dir(decoding: Decoding) -> &'static str {
    match decoding {
        Decoding::Free => "test",
        Decoding::Constrained => "test-constrained",
    }
}

/// The decodings a method is evaluated with: both for a language model.
pub fn decodings(llm: bool) -> &'static [Decoding] {
    if llm {
        &[Decoding::Free, Decoding::Constrained]
    } else {
        &[Decoding::Free]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_alpha_keeps_the_stable_layout_and_more_get_their_own_rows() {
        let one: Vec<String> = methods(&[1.0]).into_iter().map(|m| m.dir).collect();
        assert_eq!(one, [POPULARITY, GUIDANCE_ONLY, SASREC, SFT, SOFT, SOFT_WITHOUT_SA]);
        let sweep = methods(&[1.0, 100.0, 0.1]);
        let dirs: Vec<&str> = sweep.iter().map(|m| m.dir.as_str()).collect();
        assert_eq!(dirs[4..7], ["soft", "soft-alpha-100", "soft-alpha-0.1"]);
        assert_eq!(sweep[5].label, "SOFT (adaptive, alpha 100)");
        let out = Path::new("runs/x");
        assert_eq!(method_dirs(out, &[42, 43], &sweep[0]), [out.join("popularity")]);
        assert_eq!(method_dirs(out, &[42, 43], &sweep[3]), [out.join("sft"), out.join("seeds/43/sft")]);
    }
}
