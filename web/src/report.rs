//! The reports `soft-train` writes, as far as the page draws them: a SOFT stage report (lambda, d
//! and both losses per epoch), an SFT stage report (loss and valid metrics per epoch) and the
//! report of a whole `soft-train run` (stage times). Fields the page does not use are ignored, so
//! a report with more in it still loads; one that is not a report gets a message that says why.

use std::fmt;

use serde::Deserialize;
use soft_core::data::prompt::Backbone;
use soft_core::data::SplitConfig;
use soft_core::eval::metrics::KS;

/// Valid or test metrics as `soft_core::eval::Metrics` serialises them: HR and NDCG at each K
/// of [`KS`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Metrics {
    pub hr: Vec<f64>,
    pub ndcg: Vec<f64>,
    #[serde(default)]
    pub count: usize,
}

impl Metrics {
    pub fn hr_at(&self, k: usize) -> Option<f64> {
        KS.iter().position(|&x| x == k).and_then(|i| self.hr.get(i).copied())
    }

    pub fn ndcg_at(&self, k: usize) -> Option<f64> {
        KS.iter().position(|&x| x == k).and_then(|i| self.ndcg.get(i).copied())
    }
}

/// The split a stage ran on, so the page can rebuild the same test users.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Split {
    pub seed: u64,
    pub train: usize,
    pub valid: usize,
    pub test: usize,
}

impl From<Split> for SplitConfig {
    fn from(s: Split) -> Self {
        SplitConfig { train: s.train, valid: s.valid, test: s.test, seed: s.seed }
    }
}

/// Where a report came from and what ran it; all optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Provenance {
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub git_commit: Option<String>,
    #[serde(default)]
    pub base_model: Option<String>,
    #[serde(default)]
    pub split: Option<Split>,
    #[serde(default)]
    pub seconds: Option<f64>,
}

/// What a stage report's `config` says of its prompt: the backbone it trained (reports from
/// before LLaRA say nothing: BIGRec).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct PromptPart {
    #[serde(default)]
    pub backbone: Backbone,
}

/// An SFT report's `config`, as far as the page reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct SftConfigPart {
    #[serde(default)]
    pub prompt: PromptPart,
}

/// A SOFT report's `config` (SFT's settings sit under `sft`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct SoftConfigPart {
    #[serde(default)]
    pub sft: SftConfigPart,
}

/// One SOFT epoch: `lambda` used during it, `d` measured at its end.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SoftEpoch {
    pub epoch: usize,
    pub lambda: f64,
    pub d: f64,
    pub loss_real: f64,
    pub loss_distilled: f64,
    pub valid: Metrics,
    #[serde(default)]
    pub seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SoftReport {
    pub alpha: f64,
    pub schedule: String,
    pub d0: f64,
    pub epochs: Vec<SoftEpoch>,
    pub best_epoch: usize,
    #[serde(default)]
    pub config: SoftConfigPart,
    #[serde(flatten)]
    pub provenance: Provenance,
}

impl SoftReport {
    /// The backbone this SOFT run trained (BIGRec or LLaRA).
    pub fn backbone(&self) -> Backbone {
        self.config.sft.prompt.backbone
    }

    /// The recorded d after each epoch (epoch 1 first).
    pub fn distances(&self) -> Vec<f64> {
        self.epochs.iter().map(|e| e.d).collect()
    }

    /// Distilled over real loss in the first epoch: how much easier the model's own answers are
    /// to learn (about 0.47 in the paper).
    pub fn first_epoch_loss_ratio(&self) -> Option<f64> {
        let e = self.epochs.first()?;
        (e.loss_real > 0.0).then(|| e.loss_distilled / e.loss_real)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SftEpoch {
    pub epoch: usize,
    pub loss: f64,
    pub valid: Metrics,
    #[serde(default)]
    pub seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SftReport {
    pub epochs: Vec<SftEpoch>,
    pub best_epoch: usize,
    #[serde(default)]
    pub config: SftConfigPart,
    #[serde(flatten)]
    pub provenance: Provenance,
}

impl SftReport {
    pub fn backbone(&self) -> Backbone {
        self.config.prompt.backbone
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Stage {
    pub stage: String,
    pub seconds: f64,
    #[serde(default)]
    pub skipped: bool,
}

/// The report of a whole `soft-train run`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunReport {
    pub stages: Vec<Stage>,
    #[serde(default)]
    pub config: serde_json::Value,
    #[serde(flatten)]
    pub provenance: Provenance,
}

impl RunReport {
    pub fn profile(&self) -> Option<&str> {
        self.config.get("profile")?.as_str()
    }

    pub fn model(&self) -> Option<&str> {
        self.config.get("model")?.as_str()
    }
}

/// Stages of the same kind over every seed (`sft, seed 42` and `sft, seed 43` are `sft`).
#[derive(Debug, Clone, PartialEq)]
pub struct StageGroup {
    pub name: String,
    pub runs: usize,
    pub skipped: usize,
    pub seconds: f64,
}

impl StageGroup {
    /// Mean seconds of the runs that were not skipped.
    pub fn mean_seconds(&self) -> f64 {
        let ran = self.runs - self.skipped;
        if ran == 0 {
            0.0
        } else {
            self.seconds / ran as f64
        }
    }
}

/// The kind of a stage: the seed and the run directory taken out of its name.
pub fn stage_kind(name: &str) -> String {
    if let Some((kind, _)) = name.rsplit_once(", seed ") {
        return kind.to_string();
    }
    if let Some(rest) = name.strip_prefix("eval ") {
        let (path, tail) = rest.split_once(" (").map(|(p, t)| (p, format!(" ({t}"))).unwrap_or((rest, String::new()));
        let method = path.trim_end_matches('/').rsplit('/').next().unwrap_or(path);
        return format!("eval {method}{tail}");
    }
    name.to_string()
}

/// Stages grouped by kind, in the order each kind first ran.
pub fn group_stages(stages: &[Stage]) -> Vec<StageGroup> {
    let mut groups: Vec<StageGroup> = Vec::new();
    for s in stages {
        let name = stage_kind(&s.stage);
        let i = match groups.iter().position(|g| g.name == name) {
            Some(i) => i,
            None => {
                groups.push(StageGroup { name, runs: 0, skipped: 0, seconds: 0.0 });
                groups.len() - 1
            }
        };
        let g = &mut groups[i];
        g.runs += 1;
        if s.skipped {
            g.skipped += 1;
        } else {
            g.seconds += s.seconds;
        }
    }
    groups
}

#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// `method` is `soft` or one of its ablations (`soft-distilled-only`, ...).
    Soft {
        method: String,
        report: SoftReport,
    },
    Sft(SftReport),
    Run(RunReport),
}

impl Report {
    /// The backbone a stage report trained; a whole run's report has none.
    pub fn backbone(&self) -> Option<Backbone> {
        match self {
            Report::Soft { report, .. } => Some(report.backbone()),
            Report::Sft(report) => Some(report.backbone()),
            Report::Run(_) => None,
        }
    }

    pub fn kind(&self) -> String {
        match self {
            Report::Soft { method, report } => format!("{method} report ({} schedule)", report.schedule),
            Report::Sft(_) => "sft report".into(),
            Report::Run(_) => "run report".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ReportError {
    Empty,
    NotJson {
        line: usize,
        column: usize,
        message: String,
    },
    NotAnObject,
    /// JSON, but none of the shapes soft-train writes.
    NotAReport {
        keys: Vec<String>,
    },
    /// A soft-train report of a method with nothing per epoch to draw (a baseline).
    NoCurriculum {
        method: String,
    },
    /// The right kind of report, but fields are missing or of the wrong type: another version.
    Mismatch {
        kind: &'static str,
        message: String,
    },
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReportError::Empty => write!(f, "the file is empty"),
            ReportError::NotJson { line, column, message } => {
                write!(f, "not JSON (line {line}, column {column}): {message}")
            }
            ReportError::NotAnObject => write!(f, "JSON, but not an object: a soft-train report is a JSON object"),
            ReportError::NotAReport { keys } => {
                let shown: Vec<&str> = keys.iter().take(8).map(String::as_str).collect();
                write!(
                    f,
                    "not a report written by soft-train: expected `method` with `epochs` (a stage report) or `stages` (a run report); found {}",
                    if shown.is_empty() { "no fields".to_string() } else { format!("fields {}", shown.join(", ")) }
                )
            }
            ReportError::NoCurriculum { method } => write!(
                f,
                "a soft-train report of method `{method}`, which has no epochs to draw: load an sft or soft report (or the run's report.json)"
            ),
            ReportError::Mismatch { kind, message } => {
                write!(f, "a {kind} report, but not one this page can read (another version?): {message}")
            }
        }
    }
}

impl std::error::Error for ReportError {}

fn typed<T: for<'de> Deserialize<'de>>(value: serde_json::Value, kind: &'static str) -> Result<T, ReportError> {
    serde_json::from_value(value).map_err(|e| ReportError::Mismatch { kind, message: e.to_string() })
}

/// Reads any report.json that soft-train writes.
pub fn parse(text: &str) -> Result<Report, ReportError> {
    if text.trim().is_empty() {
        return Err(ReportError::Empty);
    }
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ReportError::NotJson {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let obj = value.as_object().ok_or(ReportError::NotAnObject)?;
    let method = obj.get("method").and_then(|m| m.as_str()).map(str::to_string);
    let soft_shaped = obj.contains_key("d0") && obj.contains_key("epochs");
    match method.as_deref() {
        Some("sft") => Ok(Report::Sft(typed(value, "sft")?)),
        Some(m) if m.starts_with("soft") => Ok(Report::Soft { method: m.to_string(), report: typed(value, "soft")? }),
        None if soft_shaped => Ok(Report::Soft { method: "soft".into(), report: typed(value, "soft")? }),
        Some(m) if !obj.contains_key("epochs") => Err(ReportError::NoCurriculum { method: m.to_string() }),
        _ if obj.contains_key("stages") => Ok(Report::Run(typed(value, "run")?)),
        _ => Err(ReportError::NotAReport { keys: obj.keys().cloned().collect() }),
    }
}

/// lambda for every recorded epoch under another alpha, from the d the run recorded: epoch e
/// uses the d measured after epoch e - 1 (d0 before the first), as the scheduler does. With a
/// different alpha the run itself would have moved differently; this shows only the formula.
pub fn lambdas_for_alpha(alpha: f64, d0: f64, distances: &[f64]) -> Vec<f64> {
    use soft_core::train::scheduler::{Schedule, Scheduler};
    let Ok(s) = Scheduler::new(Schedule::Adaptive, alpha, d0) else {
        return vec![f64::NAN; distances.len()];
    };
    std::iter::once(d0).chain(distances.iter().copied()).take(distances.len()).map(|d| s.adaptive_lambda(d)).collect()
}

/// lambda as a function of the ratio d_t / d0 for one alpha (the scheduler's formula).
pub fn lambda_at_ratio(alpha: f64, ratio: f64) -> f64 {
    use soft_core::train::scheduler::{Schedule, Scheduler};
    Scheduler::new(Schedule::Adaptive, alpha, 1.0).map(|s| s.adaptive_lambda(ratio)).unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The committed default run's reports (web/assets holds whatever the latest export wrote).
    const SOFT: &str = include_str!("../../docs/default-run/soft-report-seed42.json");
    const RUN: &str = include_str!("../../docs/default-run/report.json");

    #[test]
    fn reads_the_shipped_soft_report() {
        let Report::Soft { method, report } = parse(SOFT).unwrap() else { panic!("not soft") };
        assert_eq!(method, "soft");
        assert_eq!(report.schedule, "adaptive");
        assert_eq!(report.epochs.len(), 2);
        assert!(report.d0 > 0.0);
        let ratio = report.first_epoch_loss_ratio().unwrap();
        assert!(ratio > 0.0 && ratio < 1.0, "{ratio}");
        assert!(report.epochs[0].valid.hr_at(10).is_some());
        assert_eq!(report.provenance.split.unwrap().test, 200);
    }

    #[test]
    fn recorded_lambdas_follow_the_scheduler() {
        let Report::Soft { report, .. } = parse(SOFT).unwrap() else { panic!() };
        let again = lambdas_for_alpha(report.alpha, report.d0, &report.distances());
        for (e, l) in report.epochs.iter().zip(again) {
            assert!((e.lambda - l).abs() < 1e-9, "epoch {}: {} vs {}", e.epoch, e.lambda, l);
        }
        assert_eq!(lambda_at_ratio(10.0, 1.0), 1.0);
        assert!((lambda_at_ratio(10.0, 0.9) - (-1.0f64).exp()).abs() < 1e-12);
        assert!(lambda_at_ratio(-1.0, 0.9).is_nan());
    }

    #[test]
    fn reads_the_shipped_run_report() {
        let Report::Run(run) = parse(RUN).unwrap() else { panic!("not a run") };
        assert!(!run.stages.is_empty());
        assert_eq!(run.profile(), Some("quick"));
        let groups = group_stages(&run.stages);
        let sft = groups.iter().find(|g| g.name == "sft").unwrap();
        assert_eq!(sft.runs, 3);
        assert!(groups.iter().any(|g| g.name == "eval soft (constrained)" && g.runs == 3));
        assert!(groups.len() < run.stages.len());
        assert_eq!(stage_kind("eval runs/x/seeds/43/sasrec (free)"), "eval sasrec (free)");
        assert_eq!(stage_kind("pretrain tiny"), "pretrain tiny");
    }

    #[test]
    fn reads_what_soft_core_writes() {
        use soft_core::eval::Metrics as CoreMetrics;
        use soft_core::train::scheduler::Schedule;
        use soft_core::train::soft::{SoftEpoch as CoreEpoch, SoftReport as CoreReport};
        let core = CoreReport {
            alpha: 10.0,
            schedule: Schedule::Adaptive,
            d0: 2.0,
            epochs: vec![CoreEpoch {
                epoch: 1,
                lambda: 1.0,
                d: 1.5,
                loss_real: 4.0,
                loss_distilled: 2.0,
                valid: CoreMetrics::from_ranks(&[Some(3), None]),
                seconds: 1.0,
                tokens_per_second: 10.0,
            }],
            best_epoch: 1,
        };
        let mut json = serde_json::to_value(&core).unwrap();
        json["method"] = "soft".into();
        json["something_new"] = serde_json::json!({"a": 1});
        let Report::Soft { report, .. } = parse(&json.to_string()).unwrap() else { panic!() };
        assert_eq!(report.first_epoch_loss_ratio(), Some(0.5));
        assert_eq!(report.epochs[0].valid.hr_at(5), Some(0.5));
    }

    #[test]
    fn a_report_names_its_backbone() {
        let Report::Soft { report, .. } = parse(SOFT).unwrap() else { panic!() };
        assert_eq!(report.backbone(), Backbone::Bigrec, "reports from before LLaRA are BIGRec's");
        let mut json: serde_json::Value = serde_json::from_str(SOFT).unwrap();
        json["config"]["sft"]["prompt"] = serde_json::json!({"backbone": "llara", "template": "alpaca"});
        let r = parse(&json.to_string()).unwrap();
        assert_eq!(r.backbone(), Some(Backbone::Llara));
        let sft = serde_json::json!({"method": "sft", "epochs": [], "best_epoch": 0, "config": {"prompt": {"backbone": "llara"}}});
        assert_eq!(parse(&sft.to_string()).unwrap().backbone(), Some(Backbone::Llara));
        assert_eq!(parse(RUN).unwrap().backbone(), None);
    }

    #[test]
    fn bad_files_say_why() {
        assert_eq!(parse("  "), Err(ReportError::Empty));
        assert!(matches!(parse("{\"a\": "), Err(ReportError::NotJson { line: 1, .. })));
        assert_eq!(parse("[1, 2]"), Err(ReportError::NotAnObject));
        let e = parse("{\"name\": \"x\"}").unwrap_err();
        assert!(e.to_string().contains("not a report written by soft-train"), "{e}");
        assert!(matches!(parse("{\"method\": \"sasrec\", \"seconds\": 3}"), Err(ReportError::NoCurriculum { .. })));
        let old = "{\"method\": \"soft\", \"d0\": 1.0, \"epochs\": [{\"epoch\": 1}], \"alpha\": 1, \"schedule\": \"adaptive\", \"best_epoch\": 1}";
        let e = parse(old).unwrap_err();
        assert!(matches!(e, ReportError::Mismatch { kind: "soft", .. }), "{e:?}");
        assert!(e.to_string().contains("lambda"), "{e}");
    }
}
