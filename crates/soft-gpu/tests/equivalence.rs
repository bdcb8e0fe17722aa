//! The WGSL kernel against the CPU reference. These tests need a wgpu adapter: without a GPU,
//! Mesa's lavapipe (scripts/setup.sh installs it). No adapter is a failure, never a skip.

use soft_gpu::{cpu_top_k, squared_l2, GpuError, GpuGrounder, Neighbor};
use std::time::Instant;

/// The catalog's size with the tiny model's embedding width.
const N_ITEMS: usize = 6344;
const DIM: usize = 256;
const N_QUERIES: usize = 64;

/// splitmix64: a seeded stream, so the data is the same on every run and machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A value on the grid {-1, -7/8, ..., 1}.
    fn grid(&mut self) -> f32 {
        (self.below(17) as f32 - 8.0) / 8.0
    }

    /// Roughly normal: a centred sum of four uniforms.
    fn normal(&mut self) -> f32 {
        (0..4).map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32).sum::<f32>() - 2.0
    }
}

fn grounder(table: &[f32], n_items: usize, dim: usize) -> GpuGrounder {
    pollster::block_on(GpuGrounder::new_default(table, n_items, dim))
        .unwrap_or_else(|e| panic!("the grounding kernel needs a wgpu adapter: {e} ({e:?})"))
}

fn row(table: &[f32], i: usize, dim: usize) -> &[f32] {
    &table[i * dim..(i + 1) * dim]
}

/// Copies row `src` onto row `dst`; with `nudge`, moves one coordinate by one grid step.
fn duplicate(table: &mut [f32], src: usize, dst: usize, nudge: Option<usize>, dim: usize) {
    let copy = row(table, src, dim).to_vec();
    table[dst * dim..(dst + 1) * dim].copy_from_slice(&copy);
    if let Some(c) = nudge {
        let v = &mut table[dst * dim + c];
        *v = if *v < 1.0 { *v + 0.125 } else { *v - 0.125 };
    }
}

fn assert_close(gpu: &[Vec<Neighbor>], cpu: &[Vec<Neighbor>], rel: f32) {
    for (q, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        for (p, (gh, ch)) in g.iter().zip(c).enumerate() {
            let tol = rel * ch.1.abs().max(1e-6);
            assert!((gh.1 - ch.1).abs() <= tol, "query {q} position {p}: GPU distance {} vs CPU {}", gh.1, ch.1);
        }
    }
}

/// Values on a 1/8 grid make every distance exact in f32 whatever the summation order or
/// fused multiply-adds, so ids must match exactly, ties included: exact ties are frequent among
/// the grid's distances, and duplicated rows (and queries sitting on them) add more, while
/// near-duplicates (one coordinate one step off) differ by the smallest possible amount.
#[test]
fn kernel_matches_cpu_reference_on_the_catalog_size() {
    let mut rng = Rng(0x5eed_0f50_f7a1);
    let mut table: Vec<f32> = (0..N_ITEMS * DIM).map(|_| rng.grid()).collect();
    let mut dups = Vec::new();
    for i in 0..300 {
        let (src, dst) = (rng.below(N_ITEMS), rng.below(N_ITEMS));
        if src == dst {
            continue;
        }
        let nudge = (i % 2 == 1).then(|| rng.below(DIM));
        duplicate(&mut table, src, dst, nudge, DIM);
        dups.push(dst);
    }
    let mut queries: Vec<f32> = (0..N_QUERIES * DIM).map(|_| rng.grid()).collect();
    // A quarter of the queries sit on a duplicated row (distance 0 to it and to its twin), a
    // quarter one step from one; the rest are random.
    for q in 0..N_QUERIES / 2 {
        let src = dups[rng.below(dups.len())];
        let mut v = row(&table, src, DIM).to_vec();
        if q % 2 == 1 {
            let c = rng.below(DIM);
            v[c] = if v[c] > -1.0 { v[c] - 0.125 } else { v[c] + 0.125 };
        }
        queries[q * DIM..(q + 1) * DIM].copy_from_slice(&v);
    }

    let g = grounder(&table, N_ITEMS, DIM);
    let k = 64;
    let started = Instant::now();
    let gpu = pollster::block_on(g.top_k(&queries, N_QUERIES, k)).unwrap();
    let gpu_first = started.elapsed();
    let started = Instant::now();
    let again = pollster::block_on(g.top_k(&queries, N_QUERIES, k)).unwrap();
    let gpu_second = started.elapsed();
    let started = Instant::now();
    let cpu = cpu_top_k(&table, N_ITEMS, DIM, &queries, N_QUERIES, k).unwrap();
    let cpu_time = started.elapsed();
    let info = g.adapter_info();
    println!(
        "{N_QUERIES} queries x {N_ITEMS} items x {DIM} dims, k = {k}: kernel on {} ({:?}, {:?}) {:.1} ms \
         (first call {:.1} ms), CPU reference {:.1} ms",
        info.name,
        info.backend,
        info.device_type,
        gpu_second.as_secs_f64() * 1e3,
        gpu_first.as_secs_f64() * 1e3,
        cpu_time.as_secs_f64() * 1e3
    );

    assert_eq!(gpu, again, "two runs of the kernel disagree");
    let ties: usize = cpu.iter().map(|r| r.windows(2).filter(|w| w[0].1 == w[1].1).count()).sum();
    assert!(ties > 100, "the data should exercise ties, has {ties}");
    assert!(cpu.iter().take(N_QUERIES / 2).step_by(2).all(|r| r[0].1 == 0.0), "queries on a row are at distance 0");
    for (q, (gr, cr)) in gpu.iter().zip(&cpu).enumerate() {
        let gi: Vec<u32> = gr.iter().map(|h| h.0).collect();
        let ci: Vec<u32> = cr.iter().map(|h| h.0).collect();
        assert_eq!(gi, ci, "query {q}: top-{k} ids differ");
    }
    assert_close(&gpu, &cpu, 1e-3);
    assert_eq!(gpu, cpu, "grid distances are exact, so they must be equal");
}

/// Continuous values: distances now round, and a GPU may fuse multiply-adds, so two rows within
/// rounding of each other may swap. Ids must match wherever the CPU's distances tell them apart.
#[test]
fn kernel_matches_cpu_reference_on_continuous_data() {
    let (n, dim, nq, k) = (3001, 200, 37, 50);
    let mut rng = Rng(42);
    let table: Vec<f32> = (0..n * dim).map(|_| rng.normal()).collect();
    let queries: Vec<f32> = (0..nq * dim).map(|_| rng.normal()).collect();
    let gpu = pollster::block_on(grounder(&table, n, dim).top_k(&queries, nq, k)).unwrap();
    let cpu = cpu_top_k(&table, n, dim, &queries, nq, k).unwrap();
    assert_close(&gpu, &cpu, 1e-3);
    let mut swaps = 0;
    for (q, (gr, cr)) in gpu.iter().zip(&cpu).enumerate() {
        for (p, (gh, ch)) in gr.iter().zip(cr).enumerate() {
            if gh.0 != ch.0 {
                let d = squared_l2(row(&queries, q, dim), row(&table, gh.0 as usize, dim));
                assert!(
                    (d - ch.1).abs() <= 1e-5 * ch.1,
                    "query {q} position {p}: GPU item {} at CPU distance {d}, CPU item {} at {}",
                    gh.0,
                    ch.0,
                    ch.1
                );
                swaps += 1;
            }
        }
    }
    println!("continuous data: {swaps} near-tie swaps");
}

#[test]
fn awkward_sizes_and_extreme_k() {
    // Neither the rows nor the columns fill a tile, queries don't fill a workgroup.
    let (n, dim, nq) = (70, 5, 7);
    let mut rng = Rng(7);
    let table: Vec<f32> = (0..n * dim).map(|_| rng.grid()).collect();
    let queries: Vec<f32> = (0..nq * dim).map(|_| rng.grid()).collect();
    let g = grounder(&table, n, dim);
    for k in [1, 2, 63, 64] {
        let gpu = pollster::block_on(g.top_k(&queries, nq, k)).unwrap();
        assert_eq!(gpu, cpu_top_k(&table, n, dim, &queries, nq, k).unwrap(), "k = {k}");
    }
    // A single column with k = n_items; then a table of a single row.
    let small = [3.0, 1.0, 2.0, 1.0];
    let g = grounder(&small, 4, 1);
    assert_eq!(
        pollster::block_on(g.top_k(&[1.5], 1, 4)).unwrap(),
        vec![vec![(1, 0.25), (2, 0.25), (3, 0.25), (0, 2.25)]]
    );
    let g = grounder(&[1.0, 2.0], 1, 2);
    assert_eq!(pollster::block_on(g.top_k(&[1.0, 2.0, 0.0, 0.0], 2, 1)).unwrap(), vec![vec![(0, 0.0)], vec![(0, 5.0)]]);
}

#[test]
fn bad_input_is_a_typed_error() {
    assert!(matches!(pollster::block_on(GpuGrounder::new_default(&[], 0, 4)), Err(GpuError::EmptyTable { .. })));
    assert!(matches!(
        pollster::block_on(GpuGrounder::new_default(&[1.0, f32::INFINITY], 1, 2)),
        Err(GpuError::NonFinite { what: "catalog table", index: 1, .. })
    ));
    let g = grounder(&[0.0; 12], 4, 3);
    let call = |q: &[f32], nq, k| pollster::block_on(g.top_k(q, nq, k));
    assert!(matches!(call(&[0.0; 5], 2, 1), Err(GpuError::ShapeMismatch { what: "queries", .. })));
    assert!(matches!(call(&[0.0; 3], 1, 0), Err(GpuError::KOutOfRange { k: 0, max: 4 })));
    assert!(matches!(call(&[0.0; 3], 1, 5), Err(GpuError::KOutOfRange { k: 5, max: 4 })));
    assert!(matches!(call(&[0.0, f32::NAN, 0.0], 1, 1), Err(GpuError::NonFinite { what: "queries", .. })));
    assert_eq!(call(&[], 0, 2).unwrap(), Vec::<Vec<Neighbor>>::new());
    // Still usable after the errors.
    assert_eq!(call(&[0.0; 3], 1, 1).unwrap(), vec![vec![(0, 0.0)]]);
}
