//! The few-row product over quantized blocks against the same product over f16 and f32
//! weights: every projection of SmolLM2's 30 layers (as its GGUF stores them, Q4_1) and its
//! tied LM head (Q8_0), at 1, 4 and 8 rows, each weight read from memory as a decoding step
//! reads it; and the same blocks in 8-bit integer dot products (`kernels::int8_dot`, where the
//! CPU has AVX512_VNNI). Medians of 9 alternating rounds, with the bytes each pass reads per
//! second.
//! `cargo bench -p soft-core --bench block_rows` (`taskset -c 0` for one core).

use std::time::Instant;

use burn::tensor::{Device, Distribution, FloatDType, Tensor};
use soft_core::kernels::blocks::{BlockMatrix, BlockType};
use soft_core::kernels::int8_dot::{self, Int8Panels};
use soft_core::kernels::{block_linear, product};

mod smollm2_shapes;
use smollm2_shapes::{median_ms, ROUNDS, SHAPES};

/// Blocks of `ty` with small scales and varied values (speed does not depend on them).
fn blocks(ty: BlockType, d_out: usize, d_in: usize, seed: u8) -> BlockMatrix {
    let mut bytes = Vec::with_capacity(d_out * d_in / 32 * ty.bytes());
    let scales = if ty == BlockType::Q4_1 { 2 } else { 1 };
    for b in 0..d_out * d_in / 32 {
        for _ in 0..scales {
            bytes.extend(half::f16::from_f32(0.01).to_le_bytes());
        }
        bytes.extend((0..ty.bytes() - 2 * scales).map(|i| (b as u8).wrapping_mul(31).wrapping_add(i as u8 ^ seed)));
    }
    BlockMatrix::new(ty, d_out, d_in, bytes).expect("whole blocks")
}

fn main() {
    let device = Device::flex();
    let quantized: Vec<Vec<BlockMatrix>> = (0..30)
        .map(|l| SHAPES.iter().map(|&(i, o)| blocks(BlockType::Q4_1, o, i, l as u8)).collect())
        .collect();
    let head_q = blocks(BlockType::Q8_0, 49_152, 576, 7);
    // The same blocks repacked for integer products, where the CPU has them.
    let int8 = int8_dot::available().then(|| {
        let layers: Vec<Vec<Int8Panels>> =
            quantized.iter().map(|l| l.iter().map(Int8Panels::pack).collect()).collect();
        (layers, Int8Panels::pack(&head_q))
    });
    let dense = |dtype: FloatDType| -> Vec<Vec<Tensor<2>>> {
        (0..30)
            .map(|_| SHAPES.iter().map(|&(i, o)| Tensor::<2>::full([i, o], 0.01, &device).cast(dtype)).collect())
            .collect()
    };
    let (f16, f32) = (dense(FloatDType::F16), dense(FloatDType::F32));
    let bytes = |b: f64| b * 30.0 * SHAPES.iter().map(|&(i, o)| (i * o) as f64).sum::<f64>();
    let layer_bytes = [bytes(0.625), bytes(2.0), bytes(4.0)];
    println!(
        "rows | 30 layers: q4_1 / f16 / f32 (ms, GB/s), q4_1 through an f32 copy and gemm (ms) | head: q8_0 (ms, GB/s) | int8 dot products: 30 layers q4_1, head q8_0 (ms)"
    );
    for rows in [1, 4, 8, 16, 32, 64, 180] {
        let x: Vec<Vec<f32>> = [576, 1536]
            .map(|d| {
                let t = Tensor::<2>::random([rows, d], Distribution::Normal(0.0, 1.0), &device);
                t.into_data().convert::<f32>().try_to_vec().expect("f32")
            })
            .to_vec();
        let xt: Vec<Tensor<2>> = [576, 1536]
            .map(|d| Tensor::<2>::random([rows, d], Distribution::Normal(0.0, 1.0), &device))
            .to_vec();
        let mut times = [vec![], vec![], vec![], vec![], vec![], vec![], vec![]];
        for _ in 0..ROUNDS {
            let start = Instant::now();
            for layer in &quantized {
                for w in layer {
                    let _ = w.product(&x[usize::from(w.dims().1 != 576)], rows);
                }
            }
            times[0].push(start.elapsed().as_secs_f64());
            for (k, layers) in [&f16, &f32].into_iter().enumerate() {
                let start = Instant::now();
                for layer in layers {
                    for w in layer {
                        let _ = product(xt[usize::from(w.dims()[0] != 576)].clone(), w.clone(), None, usize::MAX);
                    }
                }
                times[1 + k].push(start.elapsed().as_secs_f64());
            }
            let start = Instant::now();
            let _ = head_q.product(&x[0], rows);
            times[3].push(start.elapsed().as_secs_f64());
            let start = Instant::now();
            for layer in &quantized {
                for w in layer {
                    let _ = block_linear(xt[usize::from(w.dims().1 != 576)].clone(), w, None, 0);
                }
            }
            times[4].push(start.elapsed().as_secs_f64());
            if let Some((panels, head_panels)) = &int8 {
                let start = Instant::now();
                for layer in panels {
                    for (w, dims) in layer.iter().zip(SHAPES) {
                        let _ = w.product(&x[usize::from(dims.0 != 576)], rows);
                    }
                }
                times[5].push(start.elapsed().as_secs_f64());
                let start = Instant::now();
                let _ = head_panels.product(&x[0], rows);
                times[6].push(start.elapsed().as_secs_f64());
            }
        }
        let [q, h, f, head, copied, q8, head8] = times.map(|t| if t.is_empty() { f64::NAN } else { median_ms(t) });
        let rate = |b: f64, ms: f64| b / ms / 1e6;
        println!(
            "{rows:4} | {q:6.2} ({:5.1}) / {h:6.2} ({:5.1}) / {f:6.2} ({:5.1}), {copied:6.2} | {head:5.2} ({:5.1}) | {q8:6.2}, {head8:5.2}",
            rate(layer_bytes[0], q),
            rate(layer_bytes[1], h),
            rate(layer_bytes[2], f),
            rate(49_152.0 * 576.0 * 34.0 / 32.0, head)
        );
    }
}
