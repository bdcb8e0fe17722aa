//! SOFT in the browser: the recommender on WebGPU (or burn's CPU backend compiled to wasm), the
//! curriculum of a real run drawn as charts, and a walkthrough of the method's stages.
//!
//! The plain-Rust parts (report model, chart geometry, history rules, catalog search) build and
//! are tested on every target; the Leptos app (`app`, `views`,
//! `runtime`, `model`, `page_data`) exists on wasm32 only. Modules depend one way: `runtime`
//! (browser, fetch) <- `page_data` <- `model` <- `views` <- `app`.

pub mod charts;
pub mod domain_words;
pub mod history;
pub mod report;
pub mod test_table;

#[cfg(target_arch = "wasm32")]
pub mod app;
#[cfg(target_arch = "wasm32")]
pub mod model;
#[cfg(target_arch = "wasm32")]
pub mod page_data;
#[cfg(target_arch = "wasm32")]
pub mod runtime;
#[cfg(target_arch = "wasm32")]
pub mod views;

/// Colours shared by every chart, so a series looks the same wherever it appears.
pub mod palette {
    pub const SOFT: &str = "#e8590c";
    pub const SFT: &str = "#495057";
    pub const REAL: &str = "#1971c2";
    pub const DISTILLED: &str = "#e8590c";
    pub const MIXED: &str = "#2f9e44";
    pub const LAMBDA: &str = "#7048e8";
    pub const DISTANCE: &str = "#0c8599";
    pub const REFERENCE: &str = "#868e96";
    /// One per reference alpha: 100, 10, 1, 0.1.
    pub const ALPHAS: [&str; 4] = ["#c2255c", "#f08c00", "#2f9e44", "#1971c2"];
}
