//! The app shell: header with the backend actually used, three views behind tabs (and the
//! address's `#/view`), and the start-up work: the device, the shipped reports and the
//! embedded dataset with the run's split.

use std::rc::Rc;
use std::sync::Arc;

use leptos::prelude::*;
use leptos::task::spawn_local;
use soft_core::data::SplitConfig;

use crate::page_data::{has_llara, PageData, Reports};
use crate::report;
use crate::runtime::{self, log, Backend, Recommender};
use crate::views::curriculum::Curriculum;
use crate::views::recommend::Recommend;
use crate::views::walkthrough::Walkthrough;

pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

/// What start-up loaded.
#[derive(Clone)]
pub struct Loaded {
    pub data: Arc<PageData>,
    pub manifest: Option<serde_json::Value>,
    /// Shipped assets that could not be read: shown, not fatal.
    pub problems: Vec<String>,
}

async fn load_assets() -> (Reports, Option<serde_json::Value>, Vec<String>) {
    let mut reports = Reports::default();
    let mut problems = Vec::new();
    let manifest = match runtime::fetch_text(&runtime::asset("manifest.json")).await {
        Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => Some(v),
            Err(e) => {
                problems.push(format!("assets/manifest.json: not JSON: {e}"));
                None
            }
        },
        Err(e) => {
            problems.push(e.to_string());
            None
        }
    };
    // The run's reports, then LLaRA's (`model.llara.reports`) when the export has them.
    let listed = |pointer: &str| {
        manifest.as_ref().and_then(|m| m.pointer(pointer)).and_then(|r| r.as_array()).cloned().unwrap_or_default()
    };
    let entries = listed("/reports").into_iter().chain(listed("/model/llara/reports"));
    for entry in entries {
        let Some(path) = entry.get("path").and_then(|p| p.as_str()) else { continue };
        let label = entry.get("label").and_then(|p| p.as_str()).unwrap_or(path).to_string();
        let url = runtime::asset(path);
        match runtime::fetch_text(&url).await {
            Ok(text) => match report::parse(&text) {
                Ok(r) => reports.add(label, r),
                Err(e) => problems.push(format!("{url}: {e}")),
            },
            Err(e) => problems.push(e.to_string()),
        }
    }
    (reports, manifest, problems)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Recommend,
    Curriculum,
    Walkthrough,
}

impl Tab {
    const ALL: [Tab; 3] = [Tab::Recommend, Tab::Curriculum, Tab::Walkthrough];

    fn slug(self) -> &'static str {
        match self {
            Tab::Recommend => "recommend",
            Tab::Curriculum => "curriculum",
            Tab::Walkthrough => "walkthrough",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Tab::Recommend => "Recommend",
            Tab::Curriculum => "Curriculum",
            Tab::Walkthrough => "Walkthrough",
        }
    }

    fn from_hash() -> Tab {
        let hash = window().location().hash().unwrap_or_default();
        let slug = hash.trim_start_matches('#').trim_start_matches('/');
        Tab::ALL.into_iter().find(|t| t.slug() == slug).unwrap_or(Tab::Recommend)
    }
}

fn force_cpu() -> bool {
    window().location().search().unwrap_or_default().contains("backend=cpu")
}

#[component]
pub fn App() -> impl IntoView {
    let backend = RwSignal::new(Backend::Starting);
    let recommender: StoredValue<Option<Rc<dyn Recommender>>, LocalStorage> = StoredValue::new_local(None);
    let model_status = RwSignal::new(String::from("waiting for the device"));
    let reports = RwSignal::new(Reports::default());
    let loaded: RwSignal<Option<Result<Loaded, String>>, LocalStorage> = RwSignal::new_local(None);
    let tab = RwSignal::new(Tab::from_hash());
    // The history built in Recommend; the epoch slider in Curriculum runs on it too.
    let history = RwSignal::new(Vec::<u32>::new());

    let _hash = window_event_listener(leptos::ev::hashchange, move |_| tab.set(Tab::from_hash()));

    // The shipped assets (the views need them first), then the device, then the model the
    // manifest names on that device.
    spawn_local(async move {
        let (shipped, manifest, problems) = load_assets().await;
        for p in &problems {
            log(&format!("asset problem: {p}"));
        }
        let split_config =
            shipped.soft.as_ref().and_then(|s| s.report.provenance.split).map(SplitConfig::from).unwrap_or_default();
        reports.set(shipped);
        let result = PageData::load(manifest.as_ref(), split_config).await.map(|d| Loaded {
            data: Arc::new(d),
            manifest: manifest.clone(),
            problems,
        });
        let data = result.as_ref().ok().map(|l| l.data.clone());
        loaded.set(Some(result));

        let rt = runtime::start(force_cpu()).await;
        log(&format!("backend: {} ({}; check {:.1} ms)", rt.backend.label(), rt.backend.detail(), rt.check_ms));
        backend.set(rt.backend.clone());
        let Some(data) = data else {
            model_status.set("No model: the catalog did not load.".into());
            return;
        };
        model_status.set("Loading the model…".into());
        let r = crate::model::load_recommender(&rt, manifest.as_ref(), data).await;
        let status = r.describe();
        log(&format!("model: {status}"));
        model_status.set(status);
        recommender.set_value(Some(Rc::from(r)));
    });

    let tabs = Tab::ALL
        .into_iter()
        .map(|t| {
            view! {
                <a
                    class="tab"
                    class:active=move || tab.get() == t
                    href=format!("#/{}", t.slug())
                    data-tab=t.slug()
                    on:click=move |_| tab.set(t)
                >
                    {t.title()}
                </a>
            }
        })
        .collect_view();

    let body = move || match loaded.get() {
        None => view! { <p class="loading">"Loading the catalog, the users and the run's reports…"</p> }.into_any(),
        Some(Err(e)) => {
            view! { <p class="message error" role="alert">{format!("The page could not start: {e}")}</p> }.into_any()
        }
        Some(Ok(l)) => {
            let problems = (!l.problems.is_empty()).then(|| {
                let items = l.problems.iter().map(|p| view! { <li>{p.clone()}</li> }).collect_view();
                view! {
                    <div class="message warn" role="status">
                        "Some shipped assets could not be read:"
                        <ul>{items}</ul>
                    </div>
                }
            });
            let data = l.data.clone();
            let llara = has_llara(l.manifest.as_ref());
            let view = move || match tab.get() {
                Tab::Recommend => view! {
                    <Recommend
                        data=data.clone()
                        backend=backend
                        recommender=recommender
                        model_status=model_status
                        items=history
                        llara=llara
                    />
                }
                .into_any(),
                Tab::Curriculum => view! {
                    <Curriculum
                        reports=reports
                        data=data.clone()
                        recommender=recommender
                        history=history
                        model_status=model_status
                        llara=llara
                    />
                }
                .into_any(),
                Tab::Walkthrough => view! {
                    <Walkthrough
                        data=data.clone()
                        reports=reports
                        recommender=recommender
                        model_status=model_status
                        llara=llara
                    />
                }
                .into_any(),
            };
            view! {
                {problems}
                {view}
            }
            .into_any()
        }
    };

    view! {
        <header class="top">
            <div class="brand">
                <h1>"SOFT"</h1>
                <p class="tagline">"Self-Optimized Fine-Tuning for LLM recommenders, running in your browser"</p>
            </div>
            <div
                class="backend"
                class:gpu=move || matches!(backend.get(), Backend::WebGpu { .. })
                data-testid="backend"
                title=move || backend.get().detail()
            >
                <span class="dot"></span>
                <span class="backend-label">{move || backend.get().label()}</span>
            </div>
        </header>
        <nav class="tabs">{tabs}</nav>
        <main>{body}</main>
        <footer>
            "An open implementation of SOFT (Tang et al., arXiv 2505.20771) in Rust on burn. "
            "Data: the run's own (see the Walkthrough), windows of up to 10 items + the next."
        </footer>
    }
}
