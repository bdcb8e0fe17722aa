//! `--work bandwidth`: the machine's streaming read bandwidth, and from it the floor of a
//! beam-search step, which on the CPU reads every weight once per step.

use std::time::Instant;

use anyhow::{bail, Result};
use soft_core::model::config::LlamaConfig;

/// 1 GiB of f32: far beyond any cache of the machines the bench runs on (a few tens of MiB of L3).
pub const BUFFER_FLOATS: usize = 1 << 28;

/// A buffer of `n` f32 values, written once (untimed) so its pages are mapped before the reads.
pub fn buffer(n: usize) -> Vec<f32> {
    (0..n).map(|i| (i % 1024) as f32).collect()
}

/// One pass over `data` by `threads` threads, each summing its contiguous share; returns the
/// sum (the caller checks it, so the reads cannot be dropped) and GB/s (1e9 bytes).
pub fn stream(data: &[f32], threads: usize) -> Result<(f64, f64)> {
    if threads == 0 || data.is_empty() {
        bail!("bandwidth: no threads or an empty buffer");
    }
    let start = Instant::now();
    let share = data.len().div_ceil(threads);
    // Scoped OS threads, one per core (the count rayon's pool has): soft-core's rayon is not a
    // dependency of this crate, and a streaming read needs no work stealing.
    let sum: f64 = std::thread::scope(|s| {
        let handles: Vec<_> = data.chunks(share).map(|part| s.spawn(move || sum_part(part))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or(f64::NAN)).sum()
    });
    let seconds = start.elapsed().as_secs_f64();
    Ok((sum, std::mem::size_of_val(data) as f64 / seconds / 1e9))
}

/// Sum with 16 independent accumulators: f32 addition is not associative, so a single
/// accumulator would serialise on the add latency; 16 lanes let the compiler vectorise. The lanes
/// are flushed into f64 every 16 Ki values, so the buffer's small integers add up exactly.
fn sum_part(part: &[f32]) -> f64 {
    let mut total = 0f64;
    for block in part.chunks(16 * 1024) {
        let mut acc = [0f32; 16];
        let chunks = block.chunks_exact(16);
        let rest: f32 = chunks.remainder().iter().sum();
        for c in chunks {
            for (a, x) in acc.iter_mut().zip(c) {
                *a += x;
            }
        }
        total += acc.iter().map(|&a| a as f64).sum::<f64>() + rest as f64;
    }
    total
}

/// The expected sum of [`buffer`]`(n)`, to check that every value was read.
pub fn expected_sum(n: usize) -> f64 {
    let full = (n / 1024) as f64 * (1023.0 * 1024.0 / 2.0);
    let tail = (n % 1024) as f64;
    full + tail * (tail - 1.0) / 2.0
}

/// Bytes of weights one beam-search step reads, every weight `bytes` bytes (4 in f32, 2 in f16
/// or bf16):
///
/// `bytes · (n_layers · (d·q + 2·d·kv + q·d + 3·d·ffn) + vocab·d)`
///
/// with q = heads·head_dim and kv = kv_heads·head_dim: every block projection (q, k, v, o, gate,
/// up, down) and the LM head (the tied embedding for SmolLM2), each read once per step whatever
/// the number of rows (beams x prompts). Not counted: the RMSNorm weights (~0.03 %), the token
/// embedding rows looked up (a few rows) and the KV cache the attention reads — so the floor is
/// a lower bound, and the measured step's ratio to it an upper bound on the weights' share.
pub fn step_bytes(c: &LlamaConfig, bytes: u64) -> f64 {
    let (d, q, kv) = (c.hidden_size as f64, (c.n_heads * c.head_dim) as f64, (c.n_kv_heads * c.head_dim) as f64);
    let block = d * q + 2.0 * d * kv + q * d + 3.0 * d * c.intermediate_size as f64;
    bytes as f64 * (c.n_layers as f64 * block + (c.vocab_size * c.hidden_size) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_reads_every_value() {
        let n = 100_003;
        let data = buffer(n);
        for threads in [1, 2, 3] {
            let (sum, gbs) = stream(&data, threads).expect("streams");
            assert_eq!(sum, expected_sum(n));
            assert!(gbs > 0.0);
        }
    }

    #[test]
    fn smollm2_step_reads_its_135m_parameters() {
        // SmolLM2-135M: 134.5 M parameters, all of them in the projections and the tied head.
        let bytes = step_bytes(&LlamaConfig::smollm2_135m(), 4);
        assert!((bytes / 4.0 - 134.5e6).abs() < 0.2e6, "{bytes}");
    }
}
