//! The epoch slider: the SOFT model as it was after epoch e (the export ships every epoch's
//! adapter), run on the history chosen in Recommend (or a real test user), so a person watches
//! the answers move as lambda hands the curriculum from the distilled to the real targets. The
//! Curriculum view's backbone switch picks whose epochs (BIGRec's or LLaRA's).

use std::rc::Rc;
use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use soft_core::data::prompt::Backbone;
use soft_core::eval::decoding::Decoding;

use crate::charts::fmt_num;
use crate::page_data::PageData;
use crate::runtime::{ModelChoice, RecommendError, RecommendRequest, Recommendation, Recommender};

#[component]
pub fn EpochSlider(
    data: Arc<PageData>,
    recommender: StoredValue<Option<Rc<dyn Recommender>>, LocalStorage>,
    history: RwSignal<Vec<u32>>,
    model_status: RwSignal<String>,
    /// Whose SOFT epochs: BIGRec's or LLaRA's.
    #[prop(into)]
    backbone: Signal<Backbone>,
) -> impl IntoView {
    // The epoch last picked, with the backbone it was picked under.
    let picked = RwSignal::new(None::<(Backbone, usize)>);
    let epoch = Memo::new(move |_| picked.get().filter(|(b, _)| *b == backbone.get()).map(|(_, e)| e));
    let busy = RwSignal::new(false);
    let result: RwSignal<Option<(Backbone, Result<Recommendation, RecommendError>)>, LocalStorage> =
        RwSignal::new_local(None);
    // Re-read when the model finishes loading (the status changes then).
    let epochs = Memo::new(move |_| {
        model_status.track();
        let b = backbone.get();
        recommender.with_value(|r| r.as_ref().map(|r| r.soft_epochs(b)).unwrap_or_default())
    });

    let d = data.clone();
    let run = move |e: usize| {
        let b = backbone.get_untracked();
        picked.set(Some((b, e)));
        let Some(r) = recommender.get_value() else { return };
        // The history built in Recommend, else the first user of the test split.
        let mut h = history.get_untracked();
        if h.is_empty() {
            h = d.test.first().map(|w| w.history().to_vec()).unwrap_or_default();
        }
        busy.set(true);
        spawn_local(async move {
            let request = RecommendRequest {
                history: h,
                decoding: Decoding::Free,
                backbone: b,
                model: ModelChoice::Soft { epoch: Some(e) },
                top_k: 10,
            };
            let out = r.recommend(&request).await;
            // A later move of the slider (or of the switch) wins: only show the answer of the
            // epoch still selected.
            if picked.get_untracked() == Some((b, e)) {
                result.set(Some((b, out)));
            }
            busy.set(false);
        });
    };

    let body = move || {
        let list = epochs.get();
        let b = backbone.get();
        let (Some(&first), Some(&last)) = (list.first(), list.last()) else {
            if b == Backbone::Llara && recommender.with_value(|r| r.is_some()) {
                return view! { <p class="hint">"This export holds no LLaRA adapters: switch to BIGRec."</p> }
                    .into_any();
            }
            return view! { <p class="hint">"The epoch slider needs the exported model; "{move || model_status.get()}</p> }
                .into_any();
        };
        let name = ModelChoice::Soft { epoch: None }.label_for(b);
        let run = run.clone();
        let on_input = move |ev: leptos::ev::Event| {
            if let Ok(e) = event_target_value(&ev).parse::<usize>() {
                run(e);
            }
        };
        view! {
            <label class="field epoch-slider">
                <span>{move || match epoch.get() {
                    Some(e) => format!("{name} after epoch {e} of {last}"),
                    None => format!("Move the slider: {name} after epoch {first} to {last}"),
                }}</span>
                <input
                    type="range"
                    data-testid="epoch-slider"
                    min=first.to_string()
                    max=last.to_string()
                    step="1"
                    prop:value=move || epoch.get().unwrap_or(first).to_string()
                    on:change=on_input
                />
            </label>
            {move || busy.get().then(|| view! { <p class="hint">"Running…"</p> })}
            {move || result.get().filter(|(rb, _)| *rb == backbone.get()).map(|(_, r)| match r {
                Err(e) => view! { <p class="message error" role="alert" data-testid="epoch-message">{e.to_string()}</p> }.into_any(),
                Ok(r) => {
                    let rows = r.top.iter().map(|item| view! {
                        <li><span class="title">{item.title.clone()}</span><span class="id">"#"{item.id}</span>
                        <span class="dist">{fmt_num(item.distance as f64)}</span></li>
                    }).collect_view();
                    view! {
                        <div class="result" data-testid="epoch-result" data-epoch=r.answered_by.label_for(r.backbone)>
                            <h4>{format!("Answered by {}", r.answered_by.label_for(r.backbone))}</h4>
                            <p class="generated">"Wrote: " <q>{r.generated.clone()}</q></p>
                            <ol class="top10">{rows}</ol>
                            <p class="timings">{format!("{:.0} ms on {}", r.timings.total_ms(), r.backend)}</p>
                        </div>
                    }.into_any()
                }
            })}
        }
        .into_any()
    };

    view! {
        <div class="card epochs" data-testid="epochs">
            <h3>"The model after each epoch"</h3>
            <p>
                "Every SOFT epoch's adapter ships with the page. Pick an epoch: the model as it was then answers "
                "for the history chosen in Recommend (or the first user of the test split)."
            </p>
            {body}
        </div>
    }
}
