//! The page's runtime: the burn device (WebGPU when the browser has it, burn's CPU backend `flex`
//! compiled to wasm otherwise), assets fetched over HTTP, and the recommender interface the
//! Recommend view calls.
//!
//! WebGPU cannot read a tensor synchronously: everything here reads with `into_data_async`.

use std::future::Future;
use std::pin::Pin;

use burn::tensor::{Device, Tensor};
use soft_core::data::prompt::Backbone;
use soft_core::eval::decoding::Decoding;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// Which device the page computes on, as the header shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    Starting,
    WebGpu {
        adapter: String,
    },
    /// `why`: the reason WebGPU is not used.
    Cpu {
        why: String,
    },
}

impl Backend {
    pub fn label(&self) -> String {
        match self {
            Backend::Starting => "starting…".into(),
            Backend::WebGpu { adapter } => format!("WebGPU: {adapter}"),
            Backend::Cpu { .. } => "CPU (wasm)".into(),
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Backend::Starting => "looking for a WebGPU adapter".into(),
            Backend::WebGpu { .. } => "burn's wgpu backend on the browser's WebGPU".into(),
            Backend::Cpu { why } => format!("burn's CPU backend (flex) compiled to wasm: {why}"),
        }
    }
}

/// A started device and what it is.
#[derive(Clone)]
pub struct Runtime {
    pub device: Device,
    pub backend: Backend,
    /// Milliseconds the start-up check (a small computation read back) took.
    pub check_ms: f64,
}

/// The URL of a shipped asset: in `assets/` beside the page, or where the page's
/// `<meta name="soft-assets">` says (the CPU bundle, in `cpu/`, reads the root's `../assets/`).
pub fn asset(path: &str) -> String {
    let base = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.query_selector("meta[name=soft-assets]").ok().flatten())
        .and_then(|meta| meta.get_attribute("content"))
        .unwrap_or_else(|| "assets/".into());
    format!("{base}{path}")
}

/// Milliseconds since the page started (`performance.now()`): no `std::time` in a browser.
pub fn now_ms() -> f64 {
    web_sys::window().and_then(|w| w.performance()).map(|p| p.now()).unwrap_or(0.0)
}

/// Does this browser expose `navigator.gpu` at all?
#[cfg(feature = "webgpu")]
fn has_webgpu() -> bool {
    let Some(window) = web_sys::window() else { return false };
    js_sys::Reflect::get(&window.navigator(), &"gpu".into()).map(|v| !v.is_undefined() && !v.is_null()).unwrap_or(false)
}

/// A small computation on `device`, read back asynchronously: proves the device works.
async fn check(device: &Device) -> Result<(), String> {
    let a = Tensor::<2>::from_floats([[1.0, 2.0], [3.0, 4.0]], device);
    let b = Tensor::<2>::from_floats([[0.5, -1.0], [2.0, 0.25]], device);
    let data = a.matmul(b).sum().into_data_async().await.map_err(|e| format!("reading the result: {e:?}"))?;
    let v = data.convert::<f32>().as_slice::<f32>().map_err(|e| format!("{e:?}"))?.first().copied().unwrap_or(f32::NAN);
    // [[4.5, -0.5], [9.5, -2]] sums to 11.5.
    if (v - 11.5).abs() > 1e-4 {
        return Err(format!("the check computed {v}, expected 11.5"));
    }
    Ok(())
}

/// The adapter's name as the browser reports it; browsers may hide it, then the driver or type.
#[cfg(feature = "webgpu")]
fn adapter_name(info: &burn::tensor::wgpu::wgpu::AdapterInfo) -> String {
    [info.name.as_str(), info.driver.as_str(), info.driver_info.as_str()]
        .into_iter()
        .map(str::trim)
        .find(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:?} adapter", info.device_type))
}

/// What the browser itself says about its WebGPU adapter (`GPUAdapter.info`): wgpu leaves the
/// name empty in browsers.
#[cfg(feature = "webgpu")]
async fn browser_adapter_description() -> Option<String> {
    use js_sys::Reflect;
    let window = web_sys::window()?;
    let gpu = Reflect::get(&window.navigator(), &"gpu".into()).ok()?;
    let request: js_sys::Function = Reflect::get(&gpu, &"requestAdapter".into()).ok()?.dyn_into().ok()?;
    let promise: js_sys::Promise = request.call0(&gpu).ok()?.dyn_into().ok()?;
    let adapter = JsFuture::from(promise).await.ok()?;
    if adapter.is_null() || adapter.is_undefined() {
        return None;
    }
    let info = Reflect::get(&adapter, &"info".into()).ok()?;
    let field =
        |k: &str| Reflect::get(&info, &k.into()).ok().and_then(|v| v.as_string()).filter(|s| !s.trim().is_empty());
    if let Some(d) = field("description") {
        return Some(d);
    }
    let parts: Vec<String> = ["vendor", "architecture", "device"].iter().filter_map(|k| field(k)).collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// WebGPU when the browser has a working adapter, else the CPU backend; `force_cpu` skips WebGPU.
pub async fn start(force_cpu: bool) -> Runtime {
    let cpu = |why: String| async move {
        let device = Device::flex();
        let t = now_ms();
        let backend = match check(&device).await {
            Ok(()) => Backend::Cpu { why },
            Err(e) => Backend::Cpu { why: format!("{why}; the CPU check failed too: {e}") },
        };
        Runtime { device, backend, check_ms: now_ms() - t }
    };
    if force_cpu {
        return cpu("CPU requested in the address (?backend=cpu)".into()).await;
    }
    // The root page sent this browser here: no WebGPU, or no adapter.
    #[cfg(not(feature = "webgpu"))]
    return cpu("the page's CPU bundle, for a browser without a WebGPU adapter".into()).await;
    #[cfg(feature = "webgpu")]
    if !has_webgpu() {
        return cpu("this browser exposes no WebGPU (navigator.gpu is missing)".into()).await;
    }
    #[cfg(feature = "webgpu")]
    match Device::wgpu_options().init_with_setup_async().await {
        Ok((device, setup)) => {
            let info = setup.adapter.get_info();
            let adapter = if info.name.trim().is_empty() {
                browser_adapter_description().await.unwrap_or_else(|| adapter_name(&info))
            } else {
                adapter_name(&info)
            };
            let t = now_ms();
            match check(&device).await {
                Ok(()) => Runtime { device, backend: Backend::WebGpu { adapter }, check_ms: now_ms() - t },
                Err(e) => cpu(format!("WebGPU adapter {adapter} failed the check: {e}")).await,
            }
        }
        Err(e) => cpu(format!("no usable WebGPU adapter: {e}")).await,
    }
}

/// An asset could not be fetched or read.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchError {
    pub url: String,
    pub why: String,
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.url, self.why)
    }
}

fn js_err(v: wasm_bindgen::JsValue) -> String {
    v.as_string()
        .or_else(|| v.dyn_ref::<js_sys::Error>().map(|e| String::from(e.message())))
        .unwrap_or_else(|| format!("{v:?}"))
}

async fn fetch_response(url: &str) -> Result<web_sys::Response, FetchError> {
    let err = |why: String| FetchError { url: url.to_string(), why };
    let window = web_sys::window().ok_or_else(|| err("no window".into()))?;
    let resp = JsFuture::from(window.fetch_with_str(url)).await.map_err(|e| err(js_err(e)))?;
    let resp: web_sys::Response = resp.dyn_into().map_err(|_| err("not a response".into()))?;
    if !resp.ok() {
        return Err(err(format!("HTTP {} {}", resp.status(), resp.status_text())));
    }
    Ok(resp)
}

/// The bytes at `url` (relative to the page).
pub async fn fetch_bytes(url: &str) -> Result<Vec<u8>, FetchError> {
    let resp = fetch_response(url).await?;
    let buf = resp.array_buffer().map_err(|e| FetchError { url: url.into(), why: js_err(e) })?;
    let buf = JsFuture::from(buf).await.map_err(|e| FetchError { url: url.into(), why: js_err(e) })?;
    Ok(js_sys::Uint8Array::new(&buf).to_vec())
}

/// The text at `url` (relative to the page).
pub async fn fetch_text(url: &str) -> Result<String, FetchError> {
    let bytes = fetch_bytes(url).await?;
    String::from_utf8(bytes).map_err(|e| FetchError { url: url.into(), why: format!("not UTF-8 text: {e}") })
}

/// The text of a file a person picked or dropped.
pub async fn read_file(file: &web_sys::File) -> Result<String, String> {
    let text = JsFuture::from(file.text()).await.map_err(js_err)?;
    text.as_string().ok_or_else(|| "the file is not text".into())
}

/// Which tuned model answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ModelChoice {
    /// The SFT ("Tuning-Only") adapter.
    Sft,
    /// The SOFT adapter as it was after `epoch` (None: the best epoch, the one evaluated).
    Soft { epoch: Option<usize> },
}

impl ModelChoice {
    pub fn label(self) -> String {
        match self {
            ModelChoice::Sft => "SFT".into(),
            ModelChoice::Soft { epoch: None } => "SOFT".into(),
            ModelChoice::Soft { epoch: Some(e) } => format!("SOFT after epoch {e}"),
        }
    }

    /// The label with the backbone, as the run's table writes it: BIGRec's models keep their
    /// plain names ("SOFT after epoch 2"), LLaRA's are "LLaRA-SOFT after epoch 2".
    pub fn label_for(self, backbone: Backbone) -> String {
        match backbone {
            Backbone::Bigrec => self.label(),
            Backbone::Llara => format!("{}-{}", backbone.label(), self.label()),
        }
    }
}

/// A prompt as one backbone's model reads it: the text (LLaRA's with its item markers) and the
/// token ids, item slots included.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptTokens {
    pub text: String,
    pub ids: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecommendRequest {
    /// 1 to 10 catalog ids, oldest first (checked by `history::check`).
    pub history: Vec<u32>,
    pub decoding: Decoding,
    /// BIGRec (titles) or LLaRA (titles and item embeddings): which adapters answer.
    pub backbone: Backbone,
    pub model: ModelChoice,
    /// How many grounded items to return (10 on the page).
    pub top_k: usize,
}

/// Milliseconds per stage of one recommendation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    pub tokenize_ms: f64,
    pub generate_ms: f64,
    pub ground_ms: f64,
}

impl Timings {
    pub fn total_ms(&self) -> f64 {
        self.tokenize_ms + self.generate_ms + self.ground_ms
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub id: u32,
    pub title: String,
    /// L2 distance between the answer's embedding and this title's.
    pub distance: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    /// The adapter that actually answered (the page names it: "SOFT after epoch 2"), and its
    /// backbone ("LLaRA-SOFT after epoch 2").
    pub answered_by: ModelChoice,
    pub backbone: Backbone,
    /// The top beam's text, as written.
    pub generated: String,
    /// Nearest catalog items to the answer, nearest first.
    pub top: Vec<Ranked>,
    pub timings: Timings,
    /// `Backend::label()` of the device it ran on.
    pub backend: String,
}

/// Why a recommendation could not be made: shown on the page as it is.
#[derive(Debug, Clone, PartialEq)]
pub enum RecommendError {
    /// The model assets are not there (no `soft-train export` yet) or do not load.
    NoModel(String),
    BadInput(String),
    Failed(String),
}

impl std::fmt::Display for RecommendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecommendError::NoModel(why) => write!(f, "No model to run: {why}"),
            RecommendError::BadInput(why) => write!(f, "{why}"),
            RecommendError::Failed(why) => write!(f, "The model failed: {why}"),
        }
    }
}

pub type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A language model as a recommender in the page: beam search writes the next title, the base
/// model embeds it, the catalog's embedding table grounds it. One implementation serves SFT and
/// every SOFT epoch of both backbones (the adapter is chosen per request).
pub trait Recommender {
    /// What the loaded model is ("tiny, 3.9 M parameters, SOFT epochs 1-2").
    fn describe(&self) -> String;
    /// SOFT epochs of `backbone` whose adapters the export holds (for the epoch slider).
    fn soft_epochs(&self, backbone: Backbone) -> Vec<usize>;
    /// `history`'s prompt as `backbone`'s models read it (the run's prompt options).
    fn prompt_tokens(&self, backbone: Backbone, history: &[u32]) -> Result<PromptTokens, String>;
    fn recommend<'a>(
        &'a self,
        request: &'a RecommendRequest,
    ) -> LocalFuture<'a, Result<Recommendation, RecommendError>>;
}

/// What the page uses while the export has no model: says so on every request.
pub struct NoModel {
    pub why: String,
}

impl Recommender for NoModel {
    fn describe(&self) -> String {
        format!("No model: {}", self.why)
    }

    fn soft_epochs(&self, _backbone: Backbone) -> Vec<usize> {
        Vec::new()
    }

    fn prompt_tokens(&self, _backbone: Backbone, _history: &[u32]) -> Result<PromptTokens, String> {
        Err(format!("No model: {}", self.why))
    }

    fn recommend<'a>(
        &'a self,
        _request: &'a RecommendRequest,
    ) -> LocalFuture<'a, Result<Recommendation, RecommendError>> {
        Box::pin(async move { Err(RecommendError::NoModel(self.why.clone())) })
    }
}

/// A line in the browser console (info level: errors would fail the end-to-end test).
pub fn log(s: &str) {
    web_sys::console::log_1(&s.into());
}
