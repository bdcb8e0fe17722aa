//! The products of a step and a prompt of the page's `tiny` model (4 layers of its 7
//! projections and the tied LM head), through `kernels::product` as the page runs them on the
//! CPU backend: 10 rows (a step of 10 beams) and 100 rows (a prompt). Medians of 15 rounds,
//! with the multiply-adds a second they reach. Meant for wasm (V8 through Node's WASI, SIMD128
//! from .cargo/config.toml):
//!
//! ```sh
//! cargo build --release -p soft-core --no-default-features --bench page_products --target wasm32-wasip1
//! node bench/run-wasi.mjs "$CARGO_TARGET_DIR"/wasm32-wasip1/release/deps/page_products-*.wasm
//! ```
//!
//! Natively: `cargo bench -p soft-core --bench page_products`.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use soft_core::kernels::{linear_transposed, product};

/// `tiny`'s projections `[in, out]`: q, k, v, o, gate, up, down.
const SHAPES: [(usize, usize); 7] = [(256, 256), (256, 128), (256, 128), (256, 256), (256, 688), (256, 688), (688, 256)];
const LAYERS: usize = 4;
const VOCAB: usize = 1612;
const ROUNDS: usize = 15;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let device = Device::flex();
    let normal = |dims: [usize; 2]| Tensor::<2>::random(dims, Distribution::Normal(0.0, 0.05), &device);
    let layers: Vec<Vec<Tensor<2>>> = (0..LAYERS).map(|_| SHAPES.iter().map(|&(i, o)| normal([i, o])).collect()).collect();
    let head = normal([VOCAB, 256]);
    let macs_layers: usize = LAYERS * SHAPES.iter().map(|&(i, o)| i * o).sum::<usize>();
    // The first pass of each size is not reported: V8 runs a function in its baseline compiler
    // until the optimised code is ready, which took some of the 15 rounds.
    for (pass, rows) in [(0, 10), (0, 100), (1, 10), (1, 100)] {
        let x: Vec<Tensor<2>> = [256, 688].map(|d| normal([rows, d])).to_vec();
        let (mut projections, mut heads) = (vec![], vec![]);
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for layer in &layers {
                for w in layer {
                    let input = x[usize::from(w.dims()[0] != 256)].clone();
                    let _ = product(input, w.clone(), None, usize::MAX);
                }
            }
            projections.push(start.elapsed().as_secs_f64() * 1e3);
            let start = Instant::now();
            let _ = linear_transposed(x[0].clone(), head.clone());
            heads.push(start.elapsed().as_secs_f64() * 1e3);
        }
        if pass == 0 {
            continue;
        }
        let (p, h) = (median(projections), median(heads));
        let rate = |macs: usize, ms: f64| (rows * macs) as f64 / ms / 1e6;
        println!(
            "{rows} rows: projections {p:.2} ms ({:.1} G multiply-adds/s), LM head {h:.2} ms ({:.1} G/s)",
            rate(macs_layers, p),
            rate(VOCAB * 256, h)
        );
    }
}
