//! Recommend: build a history from the catalog (type-ahead, pasted ids, or a real user of the
//! test split), then let SFT and SOFT each write the next title, grounded to real items; with
//! LLaRA in the export, a switch picks whose SFT and SOFT answer (BIGRec's or LLaRA's).

use std::rc::Rc;
use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use soft_core::data::prompt::{self, Backbone};
use soft_core::eval::decoding::Decoding;

use super::{BackboneSwitch, Level, Message};
use crate::charts::fmt_num;
use crate::history::{self, MAX_HISTORY};
use crate::page_data::PageData;
use crate::runtime::{Backend, ModelChoice, RecommendError, RecommendRequest, Recommendation, Recommender};
use crate::test_table::{Cell, Summary};

const SUGGESTIONS: usize = 8;

/// Each model's answer (or why there is none).
type Outcome = Vec<(Backbone, ModelChoice, Result<Recommendation, RecommendError>)>;

#[component]
pub fn Recommend(
    data: Arc<PageData>,
    backend: RwSignal<Backend>,
    recommender: StoredValue<Option<Rc<dyn Recommender>>, LocalStorage>,
    model_status: RwSignal<String>,
    /// The history, shared with the epoch slider.
    items: RwSignal<Vec<u32>>,
    /// Whether the export holds LLaRA's models (then the backbone switch shows).
    llara: bool,
) -> impl IntoView {
    let backbone = RwSignal::new(Backbone::Bigrec);
    let query = RwSignal::new(String::new());
    // The true next item, when the history is a real user's from the test split.
    let target = RwSignal::new(None::<(u32, String)>);
    let cursor = RwSignal::new(0usize);
    let message = RwSignal::new(None::<(Level, String)>);
    let paste = RwSignal::new(String::new());
    let decoding = RwSignal::new(Decoding::Free);
    let outcome: RwSignal<Option<(Decoding, Outcome)>, LocalStorage> = RwSignal::new_local(None);
    let busy = RwSignal::new(false);

    let d = data.clone();
    let suggestions = Memo::new(move |_| d.index.search(&query.get(), SUGGESTIONS));

    let d = data.clone();
    let add = move |id: u32| match history::push(&d.catalog, &items.get_untracked(), id) {
        Ok(next) => {
            items.set(next);
            target.set(None);
            query.set(String::new());
            message.set(None);
        }
        Err(e) => message.set(Some((Level::Error, e.to_string()))),
    };
    let add_first = {
        let add = add.clone();
        move || match suggestions.get_untracked().first() {
            Some((id, _)) => add(*id),
            None if query.get_untracked().trim().is_empty() => {}
            None => message.set(Some((Level::Error, "No catalog title matches that text.".into()))),
        }
    };

    let d = data.clone();
    let real_user = move |_| {
        if d.test.is_empty() {
            message.set(Some((Level::Error, "The test split is empty.".into())));
            return;
        }
        let i = cursor.get_untracked() % d.test.len();
        cursor.set(i + 1);
        let w = &d.test[i];
        let title = d.catalog.title(w.target()).unwrap_or_default().to_string();
        let h: Vec<u32> = w.history().iter().rev().take(MAX_HISTORY).rev().copied().collect();
        let n = h.len();
        items.set(h);
        target.set(Some((w.target(), title)));
        message.set(Some((
            Level::Info,
            format!(
                "User {} from the test split (example {} of {}): {} in the order {}.",
                w.user,
                i + 1,
                d.test.len(),
                d.words.count(n),
                d.words.consumed,
            ),
        )));
    };

    let d = data.clone();
    let use_pasted = move |_| match history::parse_ids(&d.catalog, &paste.get_untracked()) {
        Ok(ids) => {
            items.set(ids);
            target.set(None);
            message.set(None);
        }
        Err(e) => message.set(Some((Level::Error, e.to_string()))),
    };

    let d = data.clone();
    let run = move |_| {
        let h = items.get_untracked();
        if let Err(e) = history::check(&d.catalog, &h) {
            message.set(Some((Level::Error, e.to_string())));
            return;
        }
        let Some(r) = recommender.get_value() else {
            message.set(Some((Level::Info, "The model is still loading; try again in a moment.".into())));
            return;
        };
        message.set(None);
        busy.set(true);
        let decoding = decoding.get_untracked();
        let backbone = backbone.get_untracked();
        spawn_local(async move {
            let mut out = Vec::new();
            for model in [ModelChoice::Sft, ModelChoice::Soft { epoch: None }] {
                let req = RecommendRequest { history: h.clone(), decoding, backbone, model, top_k: 10 };
                out.push((backbone, model, r.recommend(&req).await));
            }
            outcome.set(Some((decoding, out)));
            busy.set(false);
        });
    };

    let d = data.clone();
    let words = data.words;
    let history_list = move || {
        let ids = items.get();
        if ids.is_empty() {
            let none = format!("No {} yet: search the catalog, or take a real user.", words.items);
            return view! { <p class="hint">{none}</p> }.into_any();
        }
        let rows = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| {
                let title = d.catalog.title(id).unwrap_or_default().to_string();
                view! {
                    <li>
                        <span class="pos">{i + 1}</span>
                        <span class="title">{title}</span>
                        <span class="id">"#"{id}</span>
                        <button
                            class="remove"
                            title="remove"
                            aria-label=format!("remove item {id}")
                            on:click=move |_| {
                                items.update(|v| v.retain(|x| *x != id));
                                target.set(None);
                            }
                        >
                            "×"
                        </button>
                    </li>
                }
            })
            .collect_view();
        view! { <ol class="history" data-testid="history">{rows}</ol> }.into_any()
    };

    let suggestion_list = {
        let add = add.clone();
        move || {
            let s = suggestions.get();
            let q = query.get();
            if q.trim().is_empty() {
                return None;
            }
            if s.is_empty() {
                return Some(
                    view! { <p class="hint" data-testid="no-match">"No catalog title matches."</p> }.into_any(),
                );
            }
            let add = add.clone();
            let rows = s
                .into_iter()
                .map(|(id, title)| {
                    let add = add.clone();
                    view! {
                        <li>
                            <button class="suggestion" on:click=move |_| add(id)>
                                <span class="title">{title}</span>
                                <span class="id">"#"{id}</span>
                            </button>
                        </li>
                    }
                })
                .collect_view();
            Some(view! { <ul class="suggestions" data-testid="suggestions">{rows}</ul> }.into_any())
        }
    };

    let d = data.clone();
    let results = move || {
        let (decoding, out) = outcome.get()?;
        let target_id = target.get().map(|t| t.0);
        // Both models failing for the same reason: say it once.
        let errors: Vec<String> = out.iter().filter_map(|(_, _, r)| r.as_ref().err().map(|e| e.to_string())).collect();
        if errors.len() == out.len() && errors.windows(2).all(|w| w[0] == w[1]) {
            let level =
                if matches!(out[0].2, Err(RecommendError::NoModel(_))) { "message info" } else { "message error" };
            return Some(
                view! {
                    <p class=level role="alert" data-testid="recommend-message">
                        {errors[0].clone()}
                    </p>
                }
                .into_any(),
            );
        }
        // The same answer from SFT and SOFT is two separately trained adapters agreeing, not one
        // model shown twice: said, so it does not read as agreement by design.
        let answers: Vec<Option<Vec<u32>>> =
            out.iter().map(|(_, _, r)| r.as_ref().ok().map(|r| r.top.iter().map(|t| t.id).collect())).collect();
        let same = answers.len() == 2 && answers[0].is_some() && answers[0] == answers[1];
        let cards = out
            .into_iter()
            .map(|(b, model, r)| {
                let summary = d.table.summary(b, matches!(model, ModelChoice::Soft { .. }), decoding);
                view! { <ResultCard backbone=b model=model result=r target=target_id summary=summary /> }
            })
            .collect_view();
        let note = same.then(|| {
            view! {
                <p class="message info" data-testid="same-answer">
                    "SFT and SOFT give the same ten answers for this history. They are two adapters trained separately (SOFT starts from a fresh one), so this is the two models agreeing here, not one model shown twice; the numbers under each say how each does on the test users."
                </p>
            }
        });
        Some(view! { <div class="results">{cards}</div> {note} }.into_any())
    };

    let on_key = {
        let add_first = add_first.clone();
        move |ev: leptos::ev::KeyboardEvent| {
            if ev.key() == "Enter" {
                ev.prevent_default();
                add_first();
            }
        }
    };

    view! {
        <section class="view recommend" data-view="recommend">
            <div class="intro">
                <h2>{format!("Recommend the next {}", words.item)}</h2>
                <p>
                    {format!(
                        "Build a history of 1 to {MAX_HISTORY} {items}. The fine-tuned language model reads it as a prompt and \
                         writes the title of the next {item}; that answer is grounded to the nearest real {items} in the catalog. \
                         SFT and SOFT answer side by side, each with how it does on the run's held-out test users.",
                        items = words.items,
                        item = words.item,
                    )}
                    {llara
                        .then(|| format!(
                            " Two backbones were trained: BIGRec reads the titles only; LLaRA's prompt also carries, after each title, that {}'s embedding from the run's SASRec, mapped into the model's input by a trained projector.",
                            words.item,
                        ))}
                </p>
                {data.dirty.then(|| view! {
                    <p class="message error" data-testid="dirty">
                        "These models were trained by a build with uncommitted changes: no commit holds the exact code that made them."
                    </p>
                })}
            </div>
            <div class="columns">
                <div class="card">
                    <h3>"History"</h3>
                    <label class="field">
                        <span>{format!("Search {} titles", data.index.len())}</span>
                        <input
                            type="search"
                            data-testid="search"
                            placeholder="e.g. harry potter"
                            maxlength="200"
                            prop:value=move || query.get()
                            on:input=move |ev| query.set(event_target_value(&ev))
                            on:keydown=on_key
                        />
                    </label>
                    {suggestion_list}
                    <div class="row">
                        <button class="secondary" data-testid="real-user" on:click=real_user>
                            "A real user from the test split"
                        </button>
                        <button
                            class="ghost"
                            data-testid="clear"
                            on:click=move |_| {
                                items.set(Vec::new());
                                target.set(None);
                                message.set(None);
                            }
                        >
                            "Clear"
                        </button>
                    </div>
                    <Message msg=message testid="history-message" />
                    <div class="history-head">
                        <span>{move || format!("{} of {MAX_HISTORY} {}, oldest first", items.get().len(), words.items)}</span>
                    </div>
                    {history_list}
                    {move || {
                        target
                            .get()
                            .map(|(id, t)| {
                                view! {
                                    <p class="truth" data-testid="truth">
                                        {format!("Their true next {}: ", words.item)} <strong>{t}</strong> " #" {id}
                                    </p>
                                }
                            })
                    }}
                    <details class="paste">
                        <summary>"Paste item ids"</summary>
                        <textarea
                            data-testid="paste"
                            rows="2"
                            placeholder="e.g. 12, 40, 7"
                            prop:value=move || paste.get()
                            on:input=move |ev| paste.set(event_target_value(&ev))
                        ></textarea>
                        <button class="secondary" data-testid="use-ids" on:click=use_pasted>
                            "Use these ids"
                        </button>
                    </details>
                </div>
                <div class="card">
                    <h3>"Model"</h3>
                    {llara.then(|| view! { <BackboneSwitch backbone=backbone testid="backbone-recommend" /> })}
                    <fieldset class="decoding">
                        <legend>"Decoding"</legend>
                        <label>
                            <input
                                type="radio"
                                name="decoding"
                                prop:checked=move || decoding.get() == Decoding::Free
                                on:change=move |_| decoding.set(Decoding::Free)
                            />
                            " free (the paper's beam search)"
                        </label>
                        <label>
                            <input
                                type="radio"
                                name="decoding"
                                prop:checked=move || decoding.get() == Decoding::Constrained
                                on:change=move |_| decoding.set(Decoding::Constrained)
                            />
                            " constrained to real titles (a trie)"
                        </label>
                    </fieldset>
                    <p class="hint">
                        "Runs on " <strong>{move || backend.get().label()}</strong> ". "
                        <span data-testid="model-status">{move || model_status.get()}</span>
                    </p>
                    <button
                        class="primary"
                        data-testid="recommend"
                        disabled=move || busy.get()
                        on:click=run
                    >
                        {move || if busy.get() { "Running…" } else { "Recommend" }}
                    </button>
                    {results}
                </div>
            </div>
        </section>
    }
}

#[component]
fn ResultCard(
    backbone: Backbone,
    model: ModelChoice,
    result: Result<Recommendation, RecommendError>,
    target: Option<u32>,
    /// How this model does on the run's test split (the run's table), when the export has it.
    summary: Option<Summary>,
) -> impl IntoView {
    let body = match result {
        Err(e) => view! { <p class="message error" role="alert">{e.to_string()}</p> }.into_any(),
        Ok(r) => {
            let rows = r
                .top
                .iter()
                .map(|item| {
                    let hit = Some(item.id) == target;
                    view! {
                        <li class:hit=hit data-id=item.id>
                            <span class="title">{item.title.clone()}</span>
                            <span class="id">"#"{item.id}</span>
                            <span class="dist" title="L2 distance to the answer's embedding">
                                {fmt_num(item.distance as f64)}
                            </span>
                        </li>
                    }
                })
                .collect_view();
            let t = r.timings;
            // The answer as grounding reads it: without the quotes the response format adds.
            // (A response that is only quotes reads as nothing to grounding: shown without them.)
            let answer = match prompt::strip_response(&r.generated) {
                "" => r.generated.trim().trim_matches('"').trim().to_string(),
                a => a.to_string(),
            };
            view! {
                <p class="generated" title=format!("as written: {}", r.generated)>
                    "Wrote: " <q data-testid="answer">{answer}</q>
                </p>
                <ol class="top10" data-testid="top10">{rows}</ol>
                <p class="timings" data-testid="timings">
                    {format!(
                        "tokenize {:.0} ms · generate {:.0} ms · ground {:.0} ms · {:.0} ms in all on {} · answered by {}",
                        t.tokenize_ms,
                        t.generate_ms,
                        t.ground_ms,
                        t.total_ms(),
                        r.backend,
                        r.answered_by.label_for(r.backbone),
                    )}
                </p>
            }
            .into_any()
        }
    };
    let label = model.label_for(backbone);
    view! {
        <div class="result" data-model=label.clone() data-backbone=backbone.name()>
            <h4>{label.clone()}</h4>
            {body}
            <TestNumbers summary=summary />
        </div>
    }
}

/// A model's HR@10 and NDCG@10 on the run's test split with their 95 % intervals, beside
/// popularity's and SASRec's HR@10, so one answer can be told from the model's record.
#[component]
fn TestNumbers(summary: Option<Summary>) -> impl IntoView {
    let Some(s) = summary else {
        return view! {
            <p class="hint" data-testid="test-numbers">
                "This export carries no test table: how this model does on held-out users is not known here."
            </p>
        }
        .into_any();
    };
    let verdict = match s.beats_popularity() {
        Some(true) => " Its HR@10 interval lies above popularity's.",
        Some(false) => " Its HR@10 interval does not lie above popularity's: an answer here may be luck.",
        None => "",
    };
    let baseline =
        |name: &str, c: &Option<Cell>| c.as_ref().map(|c| format!(" · {name} {}", c.text())).unwrap_or_default();
    view! {
        <p class="test-numbers" data-testid="test-numbers" data-row=s.label.clone() data-hr10=s.hr10.text() data-ndcg10=s.ndcg10.text()>
            {format!(
                "On the run's {} test users ({}): HR@10 {} · NDCG@10 {}. HR@10 of the baselines{}{}.{verdict}",
                s.test_examples,
                s.label,
                s.hr10.text(),
                s.ndcg10.text(),
                baseline("popularity", &s.popularity_hr10),
                baseline("SASRec", &s.sasrec_hr10),
            )}
        </p>
    }
    .into_any()
}
