//! Recommend: build a history from the catalog (type-ahead, pasted ids, or a real user of the
//! test split), then let SFT and SOFT each write the next title, grounded to real items; with
//! LLaRA in the export, a switch picks whose SFT and SOFT answer (BIGRec's or LLaRA's).

use std::rc::Rc;
use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use soft_core::data::prompt::Backbone;
use soft_core::eval::decoding::Decoding;

use super::{BackboneSwitch, Level, Message};
use crate::app::PageData;
use crate::charts::fmt_num;
use crate::history::{self, MAX_HISTORY};
use crate::runtime::{Backend, ModelChoice, RecommendError, RecommendRequest, Recommendation, Recommender};

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
    let outcome: RwSignal<Option<Outcome>, LocalStorage> = RwSignal::new_local(None);
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
                "User {} from the test split (example {} of {}): {n} book{} in the order read.",
                w.user,
                i + 1,
                d.test.len(),
                if n == 1 { "" } else { "s" },
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
            outcome.set(Some(out));
            busy.set(false);
        });
    };

    let d = data.clone();
    let history_list = move || {
        let ids = items.get();
        if ids.is_empty() {
            return view! { <p class="hint">"No books yet: search the catalog, or take a real user."</p> }.into_any();
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

    let results = move || {
        let out = outcome.get()?;
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
        let cards = out
            .into_iter()
            .map(|(b, model, r)| view! { <ResultCard backbone=b model=model result=r target=target_id /> })
            .collect_view();
        Some(view! { <div class="results">{cards}</div> }.into_any())
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
                <h2>"Recommend the next book"</h2>
                <p>
                    "Build a reading history of 1 to 10 books. The fine-tuned language model reads it as a prompt and "
                    "writes the title of the next book; that answer is grounded to the nearest real books in the catalog. "
                    "SFT and SOFT answer side by side."
                    {llara
                        .then_some(
                            " Two backbones were trained: BIGRec reads the titles only; LLaRA's prompt also carries, after each title, that book's embedding from the run's SASRec, mapped into the model's input by a trained projector.",
                        )}
                </p>
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
                        <span>{move || format!("{} of {MAX_HISTORY} books, oldest first", items.get().len())}</span>
                    </div>
                    {history_list}
                    {move || {
                        target
                            .get()
                            .map(|(id, t)| {
                                view! {
                                    <p class="truth" data-testid="truth">
                                        "Their true next book: " <strong>{t}</strong> " #" {id}
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
            view! {
                <p class="generated">
                    "Wrote: " <q>{r.generated.clone()}</q>
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
        </div>
    }
}
