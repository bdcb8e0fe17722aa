//! The three views of the page, one file each.

pub mod curriculum;
pub mod epochs;
pub mod recommend;
pub mod walkthrough;

use leptos::prelude::*;
use soft_core::data::prompt::Backbone;

/// How a message on the page reads: an error to fix, or a plain notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Error,
    Info,
}

/// A message line, visible and announced to screen readers; nothing when `msg` is `None`.
#[component]
pub fn Message(#[prop(into)] msg: Signal<Option<(Level, String)>>, testid: &'static str) -> impl IntoView {
    move || {
        msg.get().map(|(level, text)| {
            let class = match level {
                Level::Error => "message error",
                Level::Info => "message info",
            };
            view! {
                <p class=class role="alert" data-testid=testid>
                    {text}
                </p>
            }
        })
    }
}

/// The backbone switch: BIGRec (the prompt carries titles) or LLaRA (titles, each followed by the
/// item's collaborative embedding). Pages whose export has no LLaRA do not show it.
#[component]
pub fn BackboneSwitch(backbone: RwSignal<Backbone>, testid: &'static str) -> impl IntoView {
    let options = [(Backbone::Bigrec, "titles only"), (Backbone::Llara, "titles + SASRec item embeddings")]
        .into_iter()
        .map(|(b, what)| {
            view! {
                <button
                    class="chip"
                    class:active=move || backbone.get() == b
                    aria-pressed=move || (backbone.get() == b).to_string()
                    data-backbone=b.name()
                    title=what
                    on:click=move |_| backbone.set(b)
                >
                    {b.label()}
                    <span class="chip-note">{format!(" · {what}")}</span>
                </button>
            }
        })
        .collect_view();
    view! {
        <div class="backbone-switch chips" role="group" aria-label="backbone" data-testid=testid>
            <span class="switch-label">"Backbone"</span>
            {options}
        </div>
    }
}
