//! The project's own GPU grounding kernel: for a batch of answer embeddings, the `k` nearest
//! catalog rows in squared L2 distance, computed by `shaders/grounding.wgsl` through wgpu, the
//! same natively (`soft-train eval`; lavapipe without a GPU) and in the browser on WebGPU.
//!
//! The kernel streams the catalog through workgroup memory in tiles, keeps a top-k per thread
//! and merges those in workgroup memory; no `[queries, items]` distance matrix reaches global
//! memory, and no tensor `topk` is needed (burn's panics on WebGPU in wasm).
//!
//! Ranking rule, shared by [`GpuGrounder::top_k`] and the CPU reference [`cpu_top_k`]: ascending
//! squared distance, ties (bit-equal distances) to the smaller item index.
//!
//! ```no_run
//! # fn demo() -> soft_gpu::Result<()> {
//! # let (table, n_items, dim, answers, n_answers) = (vec![0.0f32; 8], 4, 2, vec![0.0f32; 2], 1);
//! // Natively, any executor drives the async API (the `native` feature adds `*_blocking` wrappers).
//! let grounder = pollster::block_on(soft_gpu::GpuGrounder::new_default(&table, n_items, dim))?;
//! let ranked = pollster::block_on(grounder.top_k(&answers, n_answers, 3))?;
//! for (answer, hits) in ranked.iter().enumerate() {
//!     println!("answer {answer}: nearest items {:?}", hits.iter().map(|h| h.0).collect::<Vec<_>>());
//! }
//! # Ok(()) }
//! ```

mod cpu;
mod error;
mod gpu;
mod map;

pub use cpu::{cpu_top_k, neighbor_order, squared_l2};
pub use error::{GpuError, Result};
pub use gpu::GpuGrounder;

/// The WGSL source of the grounding kernel.
pub const SHADER: &str = include_str!("../../../shaders/grounding.wgsl");

/// Largest `k` the kernel serves (its per-thread list length).
pub const K_MAX: usize = 64;

/// One neighbour: `(item index in the table, squared L2 distance)`.
pub type Neighbor = (u32, f32);
