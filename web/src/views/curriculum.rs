//! Curriculum: the story of a SOFT run from its reports: d_t against d0, the lambda the
//! scheduler chose, real vs distilled loss, valid HR@10 per epoch, and the run's stage times.
//! Any report.json soft-train wrote can be dropped in and is drawn the same way.

use leptos::prelude::*;
use leptos::task::spawn_local;
use soft_core::data::prompt::Backbone;
use wasm_bindgen::JsCast;

use super::epochs::EpochSlider;
use super::{BackboneSwitch, Level, Message};
use crate::charts::{fmt_num, Chart, LineChart, Point, RefLine, Series};
use crate::page_data::{Named, Reports};
use crate::palette;
use crate::report::{self, SftReport, SoftReport};
use crate::runtime::read_file;

/// Files larger than this are not reports (soft-train's are a few kB).
const MAX_REPORT_BYTES: f64 = 5.0 * 1024.0 * 1024.0;

pub fn distance_chart(r: &SoftReport) -> Chart {
    let points = r
        .epochs
        .iter()
        .map(|e| Point {
            x: e.epoch as f64,
            y: e.d,
            tip: format!("epoch {}: d = {} ({:.1} % of d0)", e.epoch, fmt_num(e.d), 100.0 * e.d / r.d0),
        })
        .collect();
    Chart {
        id: "distance".into(),
        title: "d_t: how far the model's answers are from the true items".into(),
        x_label: "after epoch".into(),
        y_label: "mean L2 distance".into(),
        series: vec![Series::new("d_t", palette::DISTANCE, points)],
        refs: vec![RefLine {
            vertical: false,
            value: r.d0,
            label: format!("d0 = {} (base model)", fmt_num(r.d0)),
            color: palette::REFERENCE.into(),
        }],
        x_integer: true,
        x_range: Some((0.0, r.epochs.len().max(1) as f64)),
        ..Default::default()
    }
}

pub fn lambda_chart(r: &SoftReport) -> Chart {
    let points = r
        .epochs
        .iter()
        .map(|e| Point {
            x: e.epoch as f64,
            y: e.lambda,
            tip: format!(
                "epoch {}: λ = {} (from d measured {})",
                e.epoch,
                fmt_num(e.lambda),
                if e.epoch <= 1 { "before training: d0".to_string() } else { format!("after epoch {}", e.epoch - 1) }
            ),
        })
        .collect();
    Chart {
        id: "lambda".into(),
        title: format!("λ: the distilled share of the loss (α = {})", fmt_num(r.alpha)),
        x_label: "epoch".into(),
        y_label: "λ".into(),
        series: vec![Series::new("λ", palette::LAMBDA, points)],
        x_integer: true,
        y_range: Some((0.0, 1.0)),
        ..Default::default()
    }
}

pub fn loss_chart(r: &SoftReport) -> Chart {
    let per_epoch = |f: &dyn Fn(&report::SoftEpoch) -> f64, what: &str| -> Vec<Point> {
        r.epochs
            .iter()
            .map(|e| Point {
                x: e.epoch as f64,
                y: f(e),
                tip: format!("epoch {}: {what} loss {}", e.epoch, fmt_num(f(e))),
            })
            .collect()
    };
    Chart {
        id: "loss".into(),
        title: "Training loss on the real and the distilled targets".into(),
        x_label: "epoch".into(),
        y_label: "cross-entropy per token".into(),
        series: vec![
            Series::new("real targets", palette::REAL, per_epoch(&|e| e.loss_real, "real")),
            Series::new("distilled targets", palette::DISTILLED, per_epoch(&|e| e.loss_distilled, "distilled")),
            Series::new(
                "mixed: (1 − λ)·real + λ·distilled",
                palette::MIXED,
                per_epoch(&|e| (1.0 - e.lambda) * e.loss_real + e.lambda * e.loss_distilled, "mixed"),
            )
            .dashed()
            .width(2.0),
        ],
        x_integer: true,
        ..Default::default()
    }
}

pub fn hr_chart(soft: Option<&Named<SoftReport>>, sft: Option<&Named<SftReport>>) -> Chart {
    let mut series = Vec::new();
    if let Some(s) = sft {
        let pts = s
            .report
            .epochs
            .iter()
            .filter_map(|e| {
                let v = e.valid.hr_at(10)?;
                Some(Point {
                    x: e.epoch as f64,
                    y: v,
                    tip: format!("SFT, epoch {}: valid HR@10 = {}", e.epoch, fmt_num(v)),
                })
            })
            .collect();
        series.push(Series::new("SFT", palette::SFT, pts));
    }
    if let Some(s) = soft {
        let name = if s.method == "soft" { "SOFT".to_string() } else { s.method.clone() };
        let pts = s
            .report
            .epochs
            .iter()
            .filter_map(|e| {
                let v = e.valid.hr_at(10)?;
                Some(Point {
                    x: e.epoch as f64,
                    y: v,
                    tip: format!(
                        "{name}, epoch {}: valid HR@10 = {} ({} examples)",
                        e.epoch,
                        fmt_num(v),
                        e.valid.count
                    ),
                })
            })
            .collect();
        series.push(Series::new(name, palette::SOFT, pts));
    }
    let top = series.iter().flat_map(|s| s.points.iter().map(|p| p.y)).filter(|y| y.is_finite()).fold(0.0f64, f64::max);
    Chart {
        id: "hr10".into(),
        y_range: Some((0.0, if top > 0.0 { top * 1.15 } else { 0.05 })),
        title: "Valid HR@10 after each epoch".into(),
        x_label: "epoch".into(),
        y_label: "HR@10".into(),
        legend: Some(true),
        series,
        x_integer: true,
        ..Default::default()
    }
}

#[component]
fn Stat(label: &'static str, value: String, #[prop(optional)] note: Option<String>) -> impl IntoView {
    view! {
        <div class="stat">
            <span class="stat-label">{label}</span>
            <span class="stat-value">{value}</span>
            {note.map(|n| view! { <span class="stat-note">{n}</span> })}
        </div>
    }
}

fn soft_summary(s: &Named<SoftReport>) -> impl IntoView {
    let r = &s.report;
    let ratio = r.first_epoch_loss_ratio();
    let p = &r.provenance;
    view! {
        <div class="stats" data-testid="soft-stats">
            <Stat label="method" value=format!("{} ({})", s.method, r.schedule) />
            <Stat label="α" value=fmt_num(r.alpha) />
            <Stat label="d0" value=fmt_num(r.d0) note="base model, before any adapter".to_string() />
            <Stat label="epochs" value=r.epochs.len().to_string() note=format!("best: {}", r.best_epoch) />
            <Stat
                label="distilled / real loss, epoch 1"
                value=ratio.map(|x| format!("{:.1} %", 100.0 * x)).unwrap_or_else(|| "n/a".into())
                note="paper: about 47 %".to_string()
            />
            <Stat
                label="ran on"
                value=p.backend.clone().unwrap_or_else(|| "?".into())
                note=format!(
                    "{}{}",
                    p.base_model.clone().map(|m| format!("model {m}")).unwrap_or_default(),
                    p.git_commit.clone().map(|c| format!(", commit {c}")).unwrap_or_default(),
                )
            />
        </div>
    }
}

fn run_table(run: &Named<report::RunReport>) -> impl IntoView {
    let r = &run.report;
    let groups = report::group_stages(&r.stages);
    let longest = groups.iter().map(|g| g.mean_seconds()).fold(0.0f64, f64::max).max(1e-9);
    let rows = groups
        .iter()
        .map(|g| {
            let mean = g.mean_seconds();
            let width = format!("width: {:.1}%", 100.0 * mean / longest);
            let runs = if g.skipped > 0 { format!("{} ({} skipped)", g.runs, g.skipped) } else { g.runs.to_string() };
            view! {
                <tr class:skipped=g.skipped == g.runs>
                    <td>{g.name.clone()}</td>
                    <td class="num">{runs}</td>
                    <td class="num">{format!("{mean:.1} s")}</td>
                    <td class="bar-cell">
                        <span class="bar" style=width></span>
                    </td>
                </tr>
            }
        })
        .collect_view();
    let total = r.provenance.seconds.map(|s| format!("{:.0} s ({:.1} min)", s, s / 60.0)).unwrap_or_default();
    view! {
        <div class="card" data-testid="run-stages">
            <h3>"Where the run's time went"</h3>
            <p class="hint">
                {format!(
                    "Profile {}, model {}, on {}: {} in all. Source: {}.",
                    r.profile().unwrap_or("?"),
                    r.model().unwrap_or("?"),
                    r.provenance.backend.clone().unwrap_or_else(|| "?".into()),
                    total,
                    run.source
                )}
            </p>
            <table class="stages">
                <thead>
                    <tr>
                        <th>"stage"</th>
                        <th class="num">"runs"</th>
                        <th class="num">"time per run"</th>
                        <th></th>
                    </tr>
                </thead>
                <tbody>{rows}</tbody>
            </table>
        </div>
    }
}

#[component]
pub fn Curriculum(
    reports: RwSignal<Reports>,
    data: std::sync::Arc<crate::page_data::PageData>,
    recommender: StoredValue<Option<std::rc::Rc<dyn crate::runtime::Recommender>>, LocalStorage>,
    history: RwSignal<Vec<u32>>,
    model_status: RwSignal<String>,
    /// Whether the export holds LLaRA's models (then the backbone switch shows).
    llara: bool,
) -> impl IntoView {
    let words = data.words;
    let message = RwSignal::new(None::<(Level, String)>);
    let dragging = RwSignal::new(false);
    // Whose curriculum the charts and the epoch slider show.
    let backbone = RwSignal::new(Backbone::Bigrec);
    let show_switch = Memo::new(move |_| llara || reports.with(|r| r.llara_soft.is_some() || r.llara_sft.is_some()));

    let load = move |file: web_sys::File| {
        let name = file.name();
        if file.size() > MAX_REPORT_BYTES {
            message.set(Some((
                Level::Error,
                format!("{name}: {:.1} MB is far too large for a report.json (they are a few kB).", file.size() / 1e6),
            )));
            return;
        }
        spawn_local(async move {
            match read_file(&file).await {
                Err(e) => message.set(Some((Level::Error, format!("{name}: could not read the file: {e}")))),
                Ok(text) => match report::parse(&text) {
                    Ok(r) => {
                        let kind = r.kind();
                        // A stage report is drawn under its own backbone.
                        let own = r.backbone();
                        reports.update(|rs| rs.add(name.clone(), r));
                        let whose = match own {
                            Some(b) => {
                                backbone.set(b);
                                format!(" of {}", b.label())
                            }
                            None => String::new(),
                        };
                        message.set(Some((Level::Info, format!("Drawn: {name}, a {kind}{whose}."))));
                    }
                    Err(e) => message.set(Some((Level::Error, format!("{name}: {e}")))),
                },
            }
        });
    };

    let on_pick = move |ev: leptos::ev::Event| {
        let input: web_sys::HtmlInputElement = ev.target().expect("an input").unchecked_into();
        if let Some(f) = input.files().and_then(|fl| fl.get(0)) {
            load(f);
        }
        input.set_value("");
    };
    let on_drop = move |ev: leptos::ev::DragEvent| {
        ev.prevent_default();
        dragging.set(false);
        match ev.data_transfer().and_then(|dt| dt.files()).and_then(|fl| fl.get(0)) {
            Some(f) => load(f),
            None => message.set(Some((Level::Error, "Drop a report.json file here.".into()))),
        }
    };

    let soft = Memo::new(move |_| reports.with(|r| r.soft_of(backbone.get()).cloned()));
    let sft = Memo::new(move |_| reports.with(|r| r.sft_of(backbone.get()).cloned()));
    let run = Memo::new(move |_| reports.with(|r| r.run.clone()));

    let soft_part = move || match soft.get() {
        None => {
            let (what, dir) = match backbone.get() {
                Backbone::Bigrec => ("SOFT", "soft"),
                Backbone::Llara => ("LLaRA-SOFT", "llara-soft"),
            };
            view! {
                <p class="message info" data-testid="no-soft-report">
                    {format!("No {what} report loaded: drop one (RUN/{dir}/report.json) to draw the curriculum.")}
                </p>
            }
            .into_any()
        }
        Some(s) => {
            let r = s.report.clone();
            let (a, b, c) = (r.clone(), r.clone(), r);
            view! {
                <p class="source" data-testid="soft-source">"Source: " {s.source.clone()}</p>
                {soft_summary(&s)}
                <div class="grid">
                    <LineChart
                        chart=Signal::derive(move || distance_chart(&a))
                        caption="d_t is measured on a fixed sample of training prompts after every epoch; below d0 means closer to the real items than the base model."
                            .to_string()
                    />
                    <LineChart
                        chart=Signal::derive(move || lambda_chart(&b))
                        caption="λ = min(exp(α (d_t / d0 − 1)), 1), set before each epoch from the last measured d."
                            .to_string()
                    />
                    <LineChart
                        chart=Signal::derive(move || loss_chart(&c))
                        caption="The model's own answers are much easier to learn than the real targets: that is the curriculum's easy end."
                            .to_string()
                    />
                    <LineChart
                        chart=Signal::derive(move || hr_chart(soft.get().as_ref(), sft.get().as_ref()))
                        caption=format!(
                            "Share of the validation users whose true next {} is among the 10 nearest items to the answer.",
                            words.item
                        )
                    />
                </div>
            }
            .into_any()
        }
    };

    view! {
        <section class="view curriculum" data-view="curriculum">
            <div class="intro">
                <h2>"The curriculum of a real run"</h2>
                <p>
                    {format!("SOFT trains on the real next {} and on the SFT model's own answers at once. ", words.items)}
                    "λ, the share of the easy distilled targets, starts at 1 and falls as the model's answers "
                    "come closer to the real items (d_t below d0)."
                </p>
            </div>
            <div
                class="dropzone"
                class:dragging=move || dragging.get()
                data-testid="report-drop"
                on:dragover=move |ev: leptos::ev::DragEvent| {
                    ev.prevent_default();
                    dragging.set(true);
                }
                on:dragleave=move |_| dragging.set(false)
                on:drop=on_drop
            >
                <span>"Drop any " <code>"report.json"</code> " that soft-train wrote (sft, soft or a whole run), or "</span>
                <label class="file">
                    <input type="file" accept=".json,application/json" data-testid="report-file" on:change=on_pick />
                    <span class="button secondary">"choose a file"</span>
                </label>
            </div>
            <Message msg=message testid="report-message" />
            {move || {
                show_switch
                    .get()
                    .then(|| {
                        view! {
                            <BackboneSwitch backbone=backbone testid="backbone-curriculum" />
                            <p class="hint">
                                "The charts and the epoch slider below show the chosen backbone's SOFT run."
                            </p>
                        }
                    })
            }}
            {soft_part}
            <EpochSlider
                data=data
                recommender=recommender
                history=history
                model_status=model_status
                backbone=backbone
            />
            {move || run.get().map(|r| run_table(&r))}
        </section>
    }
}
