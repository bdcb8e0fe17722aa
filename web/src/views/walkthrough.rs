//! Walkthrough: SOFT's stages in order, each on real material: a real window of the shipped
//! data turned into the prompt by soft_core's own prompt code, the run's recorded losses and
//! distances, the scheduler's formula under an alpha slider, and the metrics computed by
//! soft_core on a worked example. With LLaRA in the export, the first step also shows the same
//! window as LLaRA's hybrid prompt: the text with its item markers, and the token positions
//! whose input is an item embedding rather than a token's.

use std::rc::Rc;
use std::sync::Arc;

use leptos::prelude::*;
use soft_core::data::prompt::{self, Backbone, PromptPiece};
use soft_core::data::Window;
use soft_core::eval::metrics::{Metrics, KS};
use soft_core::model::projector::slot_item;

use crate::charts::{fmt_num, Chart, LineChart, Point, RefLine, Series};
use crate::page_data::{PageData, Reports};
use crate::palette;
use crate::report::{lambda_at_ratio, lambdas_for_alpha, SoftReport};
use crate::runtime::{PromptTokens, Recommender};

/// The alphas the reference sweeps.
pub const REFERENCE_ALPHAS: [f64; 4] = [100.0, 10.0, 1.0, 0.1];
/// The slider moves over log10(alpha).
const LOG_ALPHA_MIN: f64 = -2.0;
const LOG_ALPHA_MAX: f64 = 3.0;

fn ratio_range(r: Option<&SoftReport>) -> (f64, f64) {
    let ratios: Vec<f64> = r.map(|r| r.epochs.iter().map(|e| e.d / r.d0).collect()).unwrap_or_default();
    let lo = ratios.iter().copied().fold(0.8f64, f64::min) - 0.0;
    let hi = ratios.iter().copied().fold(1.05f64, f64::max);
    (lo, hi)
}

/// lambda against d_t / d0 for the reference alphas and the chosen one, the run's ratios marked.
pub fn alpha_curve_chart(alpha: f64, r: Option<&SoftReport>) -> Chart {
    let (lo, hi) = ratio_range(r);
    let xs: Vec<f64> = (0..=120).map(|i| lo + (hi - lo) * i as f64 / 120.0).collect();
    let curve = |a: f64| -> Vec<Point> {
        xs.iter()
            .map(|&x| Point {
                x,
                y: lambda_at_ratio(a, x),
                tip: format!("α = {}: d_t/d0 = {:.3} → λ = {:.3}", fmt_num(a), x, lambda_at_ratio(a, x)),
            })
            .collect()
    };
    let mut series: Vec<Series> = REFERENCE_ALPHAS
        .iter()
        .zip(palette::ALPHAS)
        .map(|(&a, color)| Series::new(format!("α = {}", fmt_num(a)), color, curve(a)).curve().width(1.5).dashed())
        .collect();
    series.push(Series::new(format!("your α = {}", fmt_num(alpha)), palette::LAMBDA, curve(alpha)).curve().width(3.5));
    // One line per distinct recorded ratio, naming every epoch that measured it.
    let mut marks: Vec<(f64, Vec<usize>)> = Vec::new();
    for e in r.map(|r| r.epochs.as_slice()).unwrap_or_default() {
        let ratio = e.d / r.map(|r| r.d0).unwrap_or(1.0);
        match marks.iter_mut().find(|(x, _)| (x - ratio).abs() < 1e-4) {
            Some((_, epochs)) => epochs.push(e.epoch),
            None => marks.push((ratio, vec![e.epoch])),
        }
    }
    let refs = marks
        .into_iter()
        .map(|(value, epochs)| {
            let list: Vec<String> = epochs.iter().map(|e| e.to_string()).collect();
            RefLine {
                vertical: true,
                value,
                label: format!("d_t/d0 after epoch{} {}", if epochs.len() > 1 { "s" } else { "" }, list.join(", ")),
                color: palette::DISTANCE.into(),
            }
        })
        .collect();
    Chart {
        id: "alpha-curve".into(),
        title: "λ as the model's answers approach the real items".into(),
        x_label: "d_t / d0 (1 = as far as the base model)".into(),
        y_label: "λ".into(),
        series,
        refs,
        y_range: Some((0.0, 1.0)),
        x_range: Some((lo, hi)),
        legend: Some(true),
        ..Default::default()
    }
}

/// lambda per epoch that the run's recorded d_t give under `alpha`, next to what the run used.
pub fn alpha_epochs_chart(alpha: f64, r: &SoftReport) -> Chart {
    let lambdas = lambdas_for_alpha(alpha, r.d0, &r.distances());
    let chosen = r
        .epochs
        .iter()
        .zip(&lambdas)
        .map(|(e, &l)| Point {
            x: e.epoch as f64,
            y: l,
            tip: format!("epoch {}: λ = {} under α = {}", e.epoch, fmt_num(l), fmt_num(alpha)),
        })
        .collect();
    let recorded = r
        .epochs
        .iter()
        .map(|e| Point {
            x: e.epoch as f64,
            y: e.lambda,
            tip: format!("epoch {}: the run used λ = {}", e.epoch, fmt_num(e.lambda)),
        })
        .collect();
    Chart {
        id: "alpha-lambda".into(),
        title: "λ per epoch from the run's recorded d_t".into(),
        x_label: "epoch".into(),
        y_label: "λ".into(),
        series: vec![
            Series::new(format!("α = {}", fmt_num(alpha)), palette::LAMBDA, chosen).width(3.0),
            Series::new(format!("the run (α = {})", fmt_num(r.alpha)), palette::REFERENCE, recorded).dashed(),
        ],
        x_integer: true,
        y_range: Some((0.0, 1.0)),
        ..Default::default()
    }
}

#[component]
fn Stage(n: usize, id: &'static str, title: &'static str, children: Children) -> impl IntoView {
    view! {
        <section class="stage card" data-stage=id id=format!("stage-{id}")>
            <h3>
                <span class="stage-n">{n}</span>
                {title}
            </h3>
            {children()}
        </section>
    }
}

/// The `n`-th training window of the walkthrough: full ten-item histories whose next book is not
/// already in them read best; any training window when there are none.
fn example_window(d: &PageData, n: usize) -> Option<Window> {
    let full: Vec<&Window> = d
        .train
        .iter()
        .filter(|w| {
            let t = d.catalog.title(w.target()).unwrap_or_default();
            w.history().len() == 10 && w.history().iter().all(|&h| d.catalog.title(h) != Some(t))
        })
        .collect();
    let pool = if full.is_empty() { d.train.iter().collect() } else { full };
    (!pool.is_empty()).then(|| pool[n % pool.len()].clone())
}

/// Token positions (0-based, in the prompt as the model reads it) that hold an item slot, with
/// the item each stands for.
pub fn slot_positions(ids: &[u32]) -> Vec<(usize, u32)> {
    ids.iter().enumerate().filter_map(|(i, &t)| slot_item(t).map(|item| (i, item))).collect()
}

/// LLaRA's prompt of the walkthrough's window: the text with its item markers, and the positions
/// whose input embedding is the projected SASRec row of an item (from the loaded model's own
/// prompt code and tokenizer, so they are the positions the model reads).
#[component]
fn HybridPrompt(
    data: Arc<PageData>,
    window: Memo<Option<Window>>,
    recommender: StoredValue<Option<Rc<dyn Recommender>>, LocalStorage>,
    model_status: RwSignal<String>,
) -> impl IntoView {
    let tokens = move || -> Option<Result<PromptTokens, String>> {
        // Re-read once the model (and with it the tokenizer) has loaded.
        model_status.track();
        let w = window.get()?;
        recommender.with_value(|r| r.as_ref().map(|r| r.prompt_tokens(Backbone::Llara, w.history())))
    };
    let d = data.clone();
    let body = move || match tokens() {
        None => view! {
            <p class="hint" data-testid="hybrid-waiting">
                "The token positions appear once the model's tokenizer has loaded: " {move || model_status.get()}
            </p>
        }
        .into_any(),
        Some(Err(e)) => view! { <p class="message error" role="alert">{e}</p> }.into_any(),
        Some(Ok(p)) => {
            let pieces = match prompt::prompt_pieces(&p.text) {
                Ok(pieces) => pieces
                    .into_iter()
                    .map(|piece| match piece {
                        PromptPiece::Text(t) => view! { <span>{t.to_string()}</span> }.into_any(),
                        PromptPiece::Item(id) => view! {
                            <mark class="slot" title=format!("item {id}: its SASRec embedding goes here")>
                                {prompt::item_marker(id)}
                            </mark>
                        }
                        .into_any(),
                    })
                    .collect_view()
                    .into_any(),
                Err(e) => view! { <span>{e.to_string()}</span> }.into_any(),
            };
            let slots = slot_positions(&p.ids);
            let n = p.ids.len();
            let strip = p
                .ids
                .iter()
                .enumerate()
                .map(|(i, &t)| match slot_item(t) {
                    Some(item) => {
                        view! { <span class="tok slot" title=format!("position {i}: item {item}")></span> }.into_any()
                    }
                    None => view! { <span class="tok" title=format!("position {i}: token {t}")></span> }.into_any(),
                })
                .collect_view();
            let rows = slots
                .iter()
                .map(|&(pos, item)| {
                    view! {
                        <tr data-position=pos data-item=item>
                            <td class="num">{pos}</td>
                            <td class="num">"#"{item}</td>
                            <td>{d.catalog.title(item).unwrap_or_default().to_string()}</td>
                        </tr>
                    }
                })
                .collect_view();
            let list: Vec<String> = slots.iter().map(|(pos, _)| pos.to_string()).collect();
            view! {
                <pre class="prompt hybrid" data-testid="hybrid-prompt">{pieces}</pre>
                <p data-testid="slot-summary">
                    {format!(
                        "As LLaRA's models read it, this prompt is {n} positions long; {} of them (positions {}, counted from 0 over everything the model reads) carry an item embedding instead of a token embedding. Every other position reads its token's embedding, exactly as in BIGRec.",
                        slots.len(),
                        list.join(", "),
                    )}
                </p>
                <div class="token-strip" data-testid="token-strip" aria-hidden="true">{strip}</div>
                <p class="legend-line">
                    <span class="key tok-key">"a token's embedding"</span>
                    <span class="key slot-key">"an item's projected SASRec embedding"</span>
                </p>
                <table class="numbers" data-testid="slot-positions">
                    <thead>
                        <tr>
                            <th class="num">"position"</th>
                            <th class="num">"item"</th>
                            <th>"its title (just before it in the prompt)"</th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            }
            .into_any()
        }
    };
    view! {
        <div class="hybrid-part" data-testid="hybrid">
            <h4>"LLaRA: the same window as a hybrid prompt"</h4>
            <p>
                "LLaRA, the paper's second backbone, writes the same prompt with a marker after every history title. "
                "The tokenizer never sees the marker: it becomes one position whose input is not a token's embedding but "
                "the item's row of the frozen item table (from the run's own SASRec), mapped to the language model's width "
                "by a small trained projector (Linear → GELU → Linear; each LLaRA adapter has its own). The title tells the "
                "model what the item is called; the embedding tells it what SASRec learned from who read it."
            </p>
            {body}
        </div>
    }
}

#[component]
pub fn Walkthrough(
    data: Arc<PageData>,
    reports: RwSignal<Reports>,
    recommender: StoredValue<Option<Rc<dyn Recommender>>, LocalStorage>,
    model_status: RwSignal<String>,
    /// Whether the export holds LLaRA's models (then step 1 shows the hybrid prompt too).
    llara: bool,
) -> impl IntoView {
    let example = RwSignal::new(0usize);
    let log_alpha = RwSignal::new(0.0f64);
    let alpha = Memo::new(move |_| 10f64.powf(log_alpha.get()));
    let soft = Memo::new(move |_| reports.with(|r| r.soft.as_ref().map(|s| s.report.clone())));
    let d = data.clone();
    let window = Memo::new(move |_| example_window(&d, example.get()));

    // Stage 1: a real training window as the model sees it.
    let d = data.clone();
    let prompt_view = move || {
        let Some(w) = window.get() else {
            return view! { <p class="message error">"The training split is empty."</p> }.into_any();
        };
        let titles: Vec<&str> = w.history().iter().map(|&id| d.catalog.title(id).unwrap_or_default()).collect();
        let target = d.catalog.title(w.target()).unwrap_or_default();
        let text = prompt::prompt(d.domain, &titles);
        let response = prompt::response(target);
        let items = titles.iter().map(|t| view! { <li>{t.to_string()}</li> }).collect_view();
        view! {
            <div class="two">
                <div>
                    <h4>{format!("User {}: {}, oldest first", w.user, d.words.count(titles.len()))}</h4>
                    <ol class="plain">{items}</ol>
                    <p>{format!("and the {} {} next: ", d.words.item, d.words.consumed)} <strong>{target.to_string()}</strong></p>
                </div>
                <div>
                    <h4>"The training example"</h4>
                    <pre class="prompt" data-testid="prompt">
                        <span class="masked">{text}</span>
                        <span class="trained">{response}</span>
                        <span class="eos">"⟨eos⟩"</span>
                    </pre>
                    <p class="legend-line">
                        <span class="key masked">"prompt: masked, no loss"</span>
                        <span class="key trained">"response + ⟨eos⟩: the loss"</span>
                    </p>
                </div>
            </div>
        }
        .into_any()
    };

    let ratio = move || soft.get().and_then(|r| r.first_epoch_loss_ratio());

    let loss_rows = move || {
        soft.get().map(|r| {
            let rows = r
                .epochs
                .iter()
                .map(|e| {
                    let mixed = (1.0 - e.lambda) * e.loss_real + e.lambda * e.loss_distilled;
                    view! {
                        <tr>
                            <td>{e.epoch}</td>
                            <td class="num">{fmt_num(e.lambda)}</td>
                            <td class="num">{fmt_num(e.loss_real)}</td>
                            <td class="num">{fmt_num(e.loss_distilled)}</td>
                            <td class="num strong">{fmt_num(mixed)}</td>
                        </tr>
                    }
                })
                .collect_view();
            view! {
                <table class="numbers" data-testid="mixed-loss-table">
                    <thead>
                        <tr>
                            <th>"epoch"</th>
                            <th class="num">"λ"</th>
                            <th class="num">"L_real"</th>
                            <th class="num">"L_distilled"</th>
                            <th class="num">"loss"</th>
                        </tr>
                    </thead>
                    <tbody>{rows}</tbody>
                </table>
            }
        })
    };

    // Stage 6: four examples whose targets ranked 0, 3, 12 and beyond 50, scored by soft_core.
    let ranks: [Option<usize>; 4] = [Some(0), Some(3), Some(12), None];
    let metrics = Metrics::from_ranks(&ranks);
    let per_example = ranks
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let one = Metrics::from_ranks(&[*r]);
            let cells = KS
                .iter()
                .map(|&k| {
                    view! {
                        <td class="num">{format!("{:.0} / {}", one.hr_at(k), fmt_num(one.ndcg_at(k)))}</td>
                    }
                })
                .collect_view();
            view! {
                <tr>
                    <td>{format!("user {}", i + 1)}</td>
                    <td class="num">{r.map(|r| r.to_string()).unwrap_or_else(|| "≥ 50".into())}</td>
                    {cells}
                </tr>
            }
        })
        .collect_view();
    let mean_cells = KS
        .iter()
        .map(|&k| {
            view! { <td class="num strong">{format!("{} / {}", fmt_num(metrics.hr_at(k)), fmt_num(metrics.ndcg_at(k)))}</td> }
        })
        .collect_view();
    let k_heads = KS.iter().map(|k| view! { <th class="num">{format!("@{k}")}</th> }).collect_view();

    let alpha_buttons = REFERENCE_ALPHAS
        .iter()
        .map(|&a| {
            view! {
                <button
                    class="chip"
                    class:active=move || (alpha.get() - a).abs() < a * 1e-6
                    data-alpha=a.to_string()
                    on:click=move |_| log_alpha.set(a.log10())
                >
                    {format!("α = {}", fmt_num(a))}
                </button>
            }
        })
        .collect_view();
    let ticks = REFERENCE_ALPHAS.iter().map(|a| view! { <option value=a.log10().to_string()></option> }).collect_view();

    view! {
        <section class="view walkthrough" data-view="walkthrough">
            <div class="intro">
                <h2>"SOFT in six steps"</h2>
                <p>
                    "A language model recommends by writing the title of the next item. Fine-tuning it on the real next items "
                    "is hard from the start; SOFT first lets the fine-tuned model write easier targets of its own, then moves "
                    "from those to the real ones at the pace the model sets."
                </p>
            </div>

            <Stage n=1 id="prompt" title="The task as text">
                <p>
                    "Each training example is a window of a user's history: ten items in time order and the one that came next. "
                    "The history becomes an Alpaca-style prompt and the next title is the response. The loss covers only the "
                    "response tokens and the end-of-sequence token."
                </p>
                {prompt_view}
                {llara
                    .then(|| {
                        view! {
                            <HybridPrompt
                                data=data.clone()
                                window=window
                                recommender=recommender
                                model_status=model_status
                            />
                        }
                    })}
                <button class="secondary" data-testid="next-example" on:click=move |_| example.update(|i| *i += 1)>
                    "Another training example"
                </button>
            </Stage>

            <Stage n=2 id="sft" title="SFT: learn the real targets (the baseline)">
                <p>
                    "A LoRA adapter (rank 8, α 16, dropout 0.05, on the attention's q and v projections) is trained on these "
                    "examples with the masked cross-entropy. After every epoch the model writes answers for the validation users; "
                    "the epoch with the best HR@10 is kept, and training stops after 2 epochs without improvement. "
                    "This is \"Tuning-Only\" (BIGRec): the model SOFT is compared against."
                </p>
            </Stage>

            <Stage n=3 id="distill" title="Self-distillation: the model writes its own targets">
                <p>
                    "The SFT model answers every training prompt with beam search (4 beams; the top beam is kept). Its answer ŷ, "
                    "as written and not snapped to a real item, becomes a second target for the same prompt. These answers "
                    "come from the model itself, so they are much easier to learn than the real next items."
                </p>
                <p class="callout" data-testid="distill-ratio">
                    {move || match ratio() {
                        Some(x) => format!(
                            "In the shipped run, the first SOFT epoch's loss on the distilled targets was {:.1} % of its loss on the real ones (the paper reports about 47 %).",
                            100.0 * x
                        ),
                        None => "Load a SOFT report on the Curriculum view to see how much easier the distilled targets were in a run.".into(),
                    }}
                </p>
            </Stage>

            <Stage n=4 id="scheduler" title="The self-adaptive scheduler">
                <p>
                    "A fresh adapter is trained on both targets. Before each epoch the scheduler sets λ, the weight of the "
                    "distilled targets, from d_t: the mean L2 distance between the embeddings of the model's answers and of "
                    "the true items on a fixed sample of training prompts (d0: the base model, before training)."
                </p>
                <p class="formula">"λ = min( exp( α · (d_t / d0 − 1) ), 1 )"</p>
                <p>
                    "While the answers are no closer to the real items than the base model's (d_t ≥ d0), λ = 1: distilled "
                    "targets only. As d_t falls below d0, λ falls toward 0 and the real targets take over. α sets how fast; "
                    "the reference tries 100, 10, 1 and 0.1."
                </p>
                <div class="slider">
                    <label for="alpha">"α"</label>
                    <input
                        id="alpha"
                        type="range"
                        data-testid="alpha"
                        min=LOG_ALPHA_MIN
                        max=LOG_ALPHA_MAX
                        step="0.01"
                        list="alpha-ticks"
                        prop:value=move || log_alpha.get().to_string()
                        on:input=move |ev| {
                            if let Ok(v) = event_target_value(&ev).parse::<f64>() {
                                log_alpha.set(v.clamp(LOG_ALPHA_MIN, LOG_ALPHA_MAX));
                            }
                        }
                    />
                    <datalist id="alpha-ticks">{ticks}</datalist>
                    <output data-testid="alpha-value">{move || fmt_num(alpha.get())}</output>
                </div>
                <div class="chips">{alpha_buttons}</div>
                <div class="grid">
                    <LineChart chart=Signal::derive(move || alpha_curve_chart(alpha.get(), soft.get().as_ref())) />
                    {move || {
                        soft.get()
                            .map(|r| {
                                view! {
                                    <LineChart
                                        chart=Signal::derive(move || alpha_epochs_chart(alpha.get(), &r))
                                        caption="The same recorded distances under another α. (With another α the run itself would have moved differently; this shows the formula only.)"
                                            .to_string()
                                    />
                                }
                            })
                    }}
                </div>
            </Stage>

            <Stage n=5 id="mixed-loss" title="The mixed loss">
                <p>
                    "Every batch holds the real and the distilled target of the same prompts. The prompt is read once and "
                    "both targets are scored, so a SOFT step costs about 1.2 SFT steps, not 2."
                </p>
                <p class="formula">"loss = (1 − λ) · L_real + λ · L_distilled"</p>
                {loss_rows}
                <p>
                    "Training without the scheduler (λ = 1 throughout: distilled targets only) is the ablation "
                    "\"SOFT without SA\"."
                </p>
            </Stage>

            <Stage n=6 id="grounding" title="Grounding and the metrics">
                <p>
                    "The answer (quotes stripped) is embedded by the base model: its last-layer hidden state at the last token. "
                    "Every catalog title is embedded the same way, and the items are ranked by L2 distance to the answer. "
                    "With the true item's 0-based rank r: HR@K = 1 if r < K, else 0; NDCG@K = 1 / log2(r + 2) if r < K, else 0; "
                    "both are averaged over the test users."
                </p>
                <p>"A worked example: four users whose true next items ranked 0, 3, 12 and beyond 50 (HR / NDCG, computed by soft_core):"</p>
                <table class="numbers" data-testid="metrics-table">
                    <thead>
                        <tr>
                            <th></th>
                            <th class="num">"rank r"</th>
                            {k_heads}
                        </tr>
                    </thead>
                    <tbody>
                        {per_example}
                        <tr class="mean">
                            <td>"mean"</td>
                            <td></td>
                            {mean_cells}
                        </tr>
                    </tbody>
                </table>
            </Stage>
        </section>
    }
}
