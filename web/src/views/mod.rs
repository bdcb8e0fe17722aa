//! The three views of the page, one file each.

pub mod curriculum;
pub mod epochs;
pub mod recommend;
pub mod walkthrough;

use leptos::prelude::*;

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
