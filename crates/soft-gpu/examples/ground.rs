//! Ranks a random catalog for a batch of random "answers" on the GPU (or lavapipe) and on the CPU,
//! and times both: `cargo run --release -p soft-gpu --example ground [n_items dim n_queries k]`.

use soft_gpu::{cpu_top_k, GpuGrounder};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let [n_items, dim, n_queries, k] = match args[..] {
        [a, b, c, d] => [a, b, c, d],
        _ => [6344, 256, 64, 50],
    };
    // Any deterministic values do; a small LCG keeps the example free of dependencies.
    let mut state = 1u32;
    let mut next = move || {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let table: Vec<f32> = (0..n_items * dim).map(|_| next()).collect();
    let queries: Vec<f32> = (0..n_queries * dim).map(|_| next()).collect();

    let grounder = pollster::block_on(GpuGrounder::new_default(&table, n_items, dim))?;
    println!("adapter: {:?}", grounder.adapter_info());
    for run in 0..3 {
        let started = Instant::now();
        let hits = pollster::block_on(grounder.top_k(&queries, n_queries, k))?;
        println!(
            "GPU run {run}: {:.1} ms; query 0 nearest: {:?}",
            started.elapsed().as_secs_f64() * 1e3,
            &hits[0][..k.min(3)]
        );
    }
    let started = Instant::now();
    let hits = cpu_top_k(&table, n_items, dim, &queries, n_queries, k)?;
    println!(
        "CPU reference: {:.1} ms; query 0 nearest: {:?}",
        started.elapsed().as_secs_f64() * 1e3,
        &hits[0][..k.min(3)]
    );
    Ok(())
}
