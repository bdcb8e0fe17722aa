//! `--work peak`: the machine's f32 multiply-add rate as measured, not as a formula gives it.
//! The nominal peak (cores x lanes x 2 FMA pipes x 2 x clock) is wrong where a core's FMA pipes
//! are narrower than its vectors (Zen 4 runs a 512-bit FMA as two 256-bit halves: one a cycle,
//! not two) or where a busy core runs at another clock than `/proc/cpuinfo` says (boost): FLOP
//! utilisation against it is then off by that factor (BENCHMARKS.md measured 0.69x on Zen 4).
//! Each core runs independent FMA chains on registers only (no memory traffic), as many as keep
//! every pipe busy through the FMA latency.

use std::time::Instant;

use anyhow::{bail, Result};

/// Loop iterations per thread: ~0.2 s of FMAs on a 2-4 GHz core.
const ITERATIONS: u64 = 40_000_000;

/// GFLOP/s (2 per multiply-add) of `threads` threads each running [`ITERATIONS`] of the widest
/// FMA loop this CPU has, and the vector's f32 lanes it used.
pub fn measure(threads: usize) -> Result<(f64, usize)> {
    if threads == 0 {
        bail!("peak: no threads");
    }
    let start = Instant::now();
    let results: Vec<(f32, u64, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(|| fma_loop(ITERATIONS))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or((f32::NAN, 0, 0))).collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut flops = 0f64;
    for &(sum, madds, lanes) in &results {
        if !sum.is_finite() || madds == 0 {
            bail!("peak: a thread's loop did not run ({sum}, {madds} multiply-adds)");
        }
        flops += 2.0 * madds as f64 * lanes as f64;
    }
    Ok((flops / seconds / 1e9, results[0].2))
}

/// The clock one core runs at while busy, in GHz, where it can be measured (x86-64): a chain
/// of dependent integer additions, one per cycle on every x86-64 core, timed. `/proc/cpuinfo`
/// gives the nominal clock; a busy core may boost well above it.
pub fn clock_ghz() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        const ITERATIONS: u64 = 50_000_000;
        // Warm-up: bring the core out of a low-power state first.
        simd::add_chain(ITERATIONS / 10);
        let start = Instant::now();
        let added = simd::add_chain(ITERATIONS);
        let seconds = start.elapsed().as_secs_f64();
        return (added == ITERATIONS * simd::ADDS_PER_ITERATION).then(|| added as f64 / seconds / 1e9);
    }
    #[allow(unreachable_code)]
    None
}

/// One thread's FMA chains: returns a checksum, the multiply-adds per lane and the lanes.
fn fma_loop(iterations: u64) -> (f32, u64, usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { simd::avx512(iterations) };
        }
        if has!("avx2") && has!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { simd::avx2(iterations) };
        }
    }
    portable(iterations)
}

/// Scalar chains where no vector FMA is known: the rate of plain f32 code (a multiply and an
/// add: `mul_add` would be a library call on an x86-64 CPU without FMA, not its rate).
fn portable(iterations: u64) -> (f32, u64, usize) {
    let (a, b) = (std::hint::black_box(1.0f32), std::hint::black_box(1e-9f32));
    let mut acc = [1.0f32; CHAINS];
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = *x * a + b;
        }
    }
    (acc.iter().sum(), iterations * CHAINS as u64, 1)
}

/// Independent chains per thread: FMA latency (4 cycles on Zen 4/5 and recent Intel) times 2
/// pipes needs 8; 12 leaves margin and fits the 16 registers of AVX2 with the two operands.
const CHAINS: usize = 12;

#[cfg(target_arch = "x86_64")]
mod simd {
    use super::CHAINS;
    use std::arch::asm;
    use std::arch::x86_64::*;

    pub(super) const ADDS_PER_ITERATION: u64 = 8;

    /// `iterations` x 8 additions of 1, each waiting for the one before (the loop counter runs
    /// beside them): 8 cycles per iteration. Returns the sum, to check every addition ran.
    pub(super) fn add_chain(iterations: u64) -> u64 {
        assert!(iterations > 0, "add_chain: no iterations");
        let (mut x, mut n) = (0u64, iterations);
        // SAFETY: register arithmetic and a local branch; no memory is touched.
        unsafe {
            asm!(
                "2:",
                "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
                "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1",
                "dec {n}",
                "jnz 2b",
                x = inout(reg) x,
                n = inout(reg) n,
                options(nomem, nostack),
            );
        }
        debug_assert_eq!(n, 0);
        x
    }

    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn avx512(iterations: u64) -> (f32, u64, usize) {
        let a = _mm512_set1_ps(std::hint::black_box(1.0));
        let b = _mm512_set1_ps(std::hint::black_box(1e-9));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..iterations {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        let sum = acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum();
        (sum, iterations * CHAINS as u64, 16)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn avx2(iterations: u64) -> (f32, u64, usize) {
        let a = _mm256_set1_ps(std::hint::black_box(1.0));
        let b = _mm256_set1_ps(std::hint::black_box(1e-9));
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        for _ in 0..iterations {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut lanes = [0f32; 8];
        let sum = acc
            .iter()
            .map(|&x| {
                // SAFETY: `lanes` holds 8 f32.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), x) };
                lanes.iter().sum::<f32>()
            })
            .sum();
        (sum, iterations * CHAINS as u64, 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lane_of_every_chain_ran_its_iterations() {
        // 1 + n·1e-9 in f32 stays 1 (the increment is below half an ulp), so the checksum is
        // the number of lanes summed: 12 chains x the loop's lanes.
        let (sum, madds, lanes) = fma_loop(1000);
        assert_eq!(madds, 12_000);
        assert_eq!(sum, (CHAINS * lanes) as f32);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(simd::add_chain(1000), 8000);
        let (rate, lanes_used) = measure(1).unwrap();
        assert!(rate > 0.0 && rate.is_finite() && lanes_used == lanes, "{rate} GFLOP/s, {lanes_used} lanes");
    }
}
