//! Where `soft-train run` keeps each thing in its output directory, and the methods of its table.

use std::path::{Path, PathBuf};

use soft_core::data::prompt::Backbone;
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
/// label, whether it is a language model (evaluated with both decodings) and, for one, its
/// backbone.
#[derive(Debug, Clone, PartialEq)]
pub struct Method {
    pub dir: String,
    pub label: String,
    pub llm: bool,
    pub seeded: bool,
    pub backbone: Option<Backbone>,
}

impl Method {
    fn new(dir: impl Into<String>, label: impl Into<String>, llm: bool, seeded: bool) -> Self {
        Self { dir: dir.into(), label: label.into(), llm, seeded, backbone: llm.then_some(Backbone::Bigrec) }
    }

    /// A language-model method of `backbone`: BIGRec's keep the stable names, LLaRA's directories
    /// get `llara-` in front and their labels `LLaRA-`.
    fn language_model(backbone: Backbone, dir: &str, label: &str, seeded: bool) -> Self {
        let label = match backbone {
            Backbone::Bigrec => label.to_string(),
            Backbone::Llara => format!("{}-{label}", backbone.label()),
        };
        Self { backbone: Some(backbone), ..Self::new(backbone.run_dir(dir), label, true, seeded) }
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

/// The rows of the table, in order, for a run with these alphas and backbones: the baselines,
/// then each backbone's Guidance-Only, SFT, SOFT per alpha and SOFT without SA. BIGRec's
/// Guidance-Only has no seed; LLaRA's reads the seed's SASRec through a projector drawn from
/// the seed, so it has one.
pub fn methods(alphas: &[f64], backbones: &[Backbone]) -> Vec<Method> {
    let mut rows =
        vec![Method::new(POPULARITY, "popularity", false, false), Method::new(SASREC, "SASRec", false, true)];
    for &backbone in backbones {
        let lm = |dir: &str, label: &str, seeded: bool| Method::language_model(backbone, dir, label, seeded);
        rows.push(lm(GUIDANCE_ONLY, "Guidance-Only", backbone == Backbone::Llara));
        rows.push(lm(SFT, "SFT", true));
        for (i, &alpha) in alphas.iter().enumerate() {
            let label = if alphas.len() > 1 {
                format!("SOFT (adaptive, alpha {alpha})")
            } else {
                "SOFT (adaptive)".to_string()
            };
            rows.push(lm(&soft_dir(i, alpha), &label, true));
        }
        rows.push(lm(SOFT_WITHOUT_SA, "SOFT without SA", true));
    }
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

    const BIGREC: &[Backbone] = &[Backbone::Bigrec];

    #[test]
    fn one_alpha_keeps_the_stable_layout_and_more_get_their_own_rows() {
        let one: Vec<String> = methods(&[1.0], BIGREC).into_iter().map(|m| m.dir).collect();
        assert_eq!(one, [POPULARITY, SASREC, GUIDANCE_ONLY, SFT, SOFT, SOFT_WITHOUT_SA]);
        let sweep = methods(&[1.0, 100.0, 0.1], BIGREC);
        let dirs: Vec<&str> = sweep.iter().map(|m| m.dir.as_str()).collect();
        assert_eq!(dirs[4..7], ["soft", "soft-alpha-100", "soft-alpha-0.1"]);
        assert_eq!(sweep[5].label, "SOFT (adaptive, alpha 100)");
        let out = Path::new("runs/x");
        assert_eq!(method_dirs(out, &[42, 43], &sweep[0]), [out.join("popularity")]);
        assert_eq!(method_dirs(out, &[42, 43], &sweep[2]), [out.join("guidance-only")]);
        assert_eq!(method_dirs(out, &[42, 43], &sweep[3]), [out.join("sft"), out.join("seeds/43/sft")]);
    }

    #[test]
    fn llara_methods_sit_beside_bigrecs_with_their_own_names() {
        let both = methods(&[1.0], &[Backbone::Bigrec, Backbone::Llara]);
        let llara: Vec<(&str, &str)> = both[6..].iter().map(|m| (m.dir.as_str(), m.label.as_str())).collect();
        assert_eq!(
            llara,
            [
                ("llara-guidance-only", "LLaRA-Guidance-Only"),
                ("llara-sft", "LLaRA-SFT"),
                ("llara-soft", "LLaRA-SOFT (adaptive)"),
                ("llara-soft-distilled-only", "LLaRA-SOFT without SA")
            ]
        );
        assert!(both[6..].iter().all(|m| m.seeded && m.backbone == Some(Backbone::Llara)));
        assert_eq!(both[..6], methods(&[1.0], BIGREC)[..]);
    }
}
