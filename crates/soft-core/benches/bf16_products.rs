//! Training's products with the frozen weights, in bf16 dot products (`kernels::bf16_dot`)
//! against f32 (burn-flex's `gemm`): every projection of SmolLM2's blocks and its LM head, the
//! forward product `x · W` and the backward one `grad · Wᵀ`, at a training step's rows. Medians
//! of 9 alternating rounds, in G multiply-adds per second. `cargo bench -p soft-core --bench
//! bf16_products`.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use half::bf16;
use soft_core::kernels::bf16_dot::{self, Bf16Matrix};

mod smollm2_shapes;
use smollm2_shapes::{median_ms, ROUNDS, SHAPES};

fn main() {
    if !bf16_dot::available() {
        eprintln!("this CPU has no AVX512_BF16: nothing to measure");
        return;
    }
    let device = Device::flex();
    let mut shapes = SHAPES.to_vec();
    shapes.push((576, 49_152));
    println!("rows | in x out | forward f32 / bf16 (G/s) | backward f32 / bf16 (G/s)");
    for rows in [256, 1592] {
        for &(d_in, d_out) in &shapes {
            let w = Tensor::<2>::random([d_in, d_out], Distribution::Normal(0.0, 0.02), &device);
            let x = Tensor::<2>::random([rows, d_in], Distribution::Normal(0.0, 1.0), &device);
            let g = Tensor::<2>::random([rows, d_out], Distribution::Normal(0.0, 1.0), &device);
            let wv: Vec<bf16> =
                w.to_data().convert::<f32>().try_to_vec::<f32>().unwrap().into_iter().map(bf16::from_f32).collect();
            let (xv, gv) = (x.to_data().try_to_vec::<f32>().unwrap(), g.to_data().try_to_vec::<f32>().unwrap());
            let forward = Bf16Matrix { data: &wv, k: d_in, n: d_out, sk: d_out, sn: 1 };
            let backward = Bf16Matrix { data: &wv, k: d_out, n: d_in, sk: 1, sn: d_out };
            let mut t = [vec![], vec![], vec![], vec![]];
            for _ in 0..ROUNDS {
                let s = Instant::now();
                let _ = x.clone().matmul(w.clone()).to_data();
                t[0].push(s.elapsed().as_secs_f64());
                let s = Instant::now();
                std::hint::black_box(bf16_dot::matmul(&xv, rows, forward));
                t[1].push(s.elapsed().as_secs_f64());
                let s = Instant::now();
                let _ = g.clone().matmul(w.clone().transpose()).to_data();
                t[2].push(s.elapsed().as_secs_f64());
                let s = Instant::now();
                std::hint::black_box(bf16_dot::matmul(&gv, rows, backward));
                t[3].push(s.elapsed().as_secs_f64());
            }
            let gs = |t: Vec<f64>| (rows * d_in * d_out) as f64 / median_ms(t) / 1e6;
            let [a, b, c, d] = t.map(gs);
            println!("{rows:5} | {d_in:4} x {d_out:5} | {a:6.1} / {b:6.1} | {c:6.1} / {d:6.1}");
        }
    }
}
