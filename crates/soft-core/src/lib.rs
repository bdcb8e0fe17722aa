//! SOFT — self-optimized fine-tuning for LLM-based recommenders: the method, on any burn device.
//!
//! Data flows one way, each layer using only those before it:
//! `data` (catalog, windows, split, prompts) -> `model` (Llama, LoRA, tokenizer, generation) ->
//! `eval` (grounding, metrics: what every method is scored by) -> `train` (pre-training and the
//! SOFT stages, which validate through `eval`) and `baselines` -> the CLI and the web app, which
//! are shells. Below them all sit the shared utilities at the crate root: errors, progress
//! events, hashing, the NLL head, early stopping and atomic file writing. Nothing here touches a
//! terminal.

#[cfg(feature = "native")]
pub mod atomic_file;
#[cfg(feature = "native")]
pub mod baselines;
#[cfg(feature = "native")]
pub mod checksums;
pub mod data;
pub mod early_stop;
pub mod error;
pub mod eval;
pub mod hash;
pub mod kernels;
pub mod loss;
pub mod model;
pub mod progress;
#[cfg(test)]
mod test_assets;
pub mod train;

pub use error::{Error, Result};

/// Runs a future to completion on this thread: the tests' executor for the async (WebGPU) paths,
/// whose reads on the CPU backend are ready at once.
#[cfg(test)]
pub(crate) fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::yield_now();
    }
}
