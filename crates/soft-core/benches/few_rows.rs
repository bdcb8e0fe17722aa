//! Where the few-row product pays: every projection of SmolLM2's 30 layers (425 MB of weights,
//! so each call reads its weight from memory as a decoding step does), and its tied LM head,
//! at 1 to 180 rows, through `kernels::linear` with and without the few-row product (without:
//! burn-flex's `gemm`, split by columns where burn-flex would use one thread). Medians of 9
//! alternating rounds. `cargo bench -p soft-core --bench few_rows`.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use soft_core::kernels::{product, FEW_ROWS, FEW_ROWS_OUTPUT_MAJOR};

mod smollm2_shapes;
use smollm2_shapes::{median_ms, ROUNDS, SHAPES};

fn main() {
    let device = Device::flex();
    let layers: Vec<Vec<Tensor<2>>> =
        (0..30).map(|_| SHAPES.iter().map(|&(i, o)| Tensor::<2>::full([i, o], 0.01, &device)).collect()).collect();
    // The tied head: the embedding table `[vocab, hidden]`, used transposed.
    let head = Tensor::<2>::full([49_152, 576], 0.01, &device).transpose();
    println!("rows | 30 layers: few-row / gemm (ms) | LM head: few-row / gemm (ms)");
    for rows in [1, 4, 8, 16, 32, 64, 180] {
        let x: Vec<Tensor<2>> =
            [576, 1536].map(|d| Tensor::<2>::random([rows, d], Distribution::Normal(0.0, 1.0), &device)).to_vec();
        let input = |d_in: usize| x[usize::from(d_in != 576)].clone();
        let mut times = [vec![], vec![], vec![], vec![]];
        for _ in 0..ROUNDS {
            for (i, few) in [usize::MAX, 0].into_iter().enumerate() {
                let start = Instant::now();
                for layer in &layers {
                    for w in layer {
                        let _ = product(input(w.dims()[0]), w.clone(), None, few);
                    }
                }
                times[i].push(start.elapsed().as_secs_f64());
                let start = Instant::now();
                let _ = product(input(576), head.clone(), None, few).into_data();
                times[2 + i].push(start.elapsed().as_secs_f64());
            }
        }
        let [lf, lg, hf, hg] = times.map(median_ms);
        println!("{rows:4} | {lf:8.2} / {lg:8.2} | {hf:7.2} / {hg:7.2}");
    }
    println!(
        "(taken in decoding: row-major weights up to {FEW_ROWS} rows, the tied head up to {FEW_ROWS_OUTPUT_MAJOR})"
    );
}
