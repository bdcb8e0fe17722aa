//! [`GpuGrounder`]: the catalog table on a wgpu device and the grounding kernel run against it.

use crate::cpu::{check_queries, check_table};
use crate::error::{GpuError, Result};
use crate::map::map_read;
use crate::{Neighbor, SHADER};
use std::future::Future;
use std::sync::{Arc, Mutex};
use wgpu::util::DeviceExt;

/// Queries served by one workgroup (`QB` in the shader).
pub(crate) const QUERIES_PER_WORKGROUP: u32 = 4;
/// Bytes of one result in the kernel's output: `(item: u32, dist: f32)`.
const HIT_BYTES: u64 = 8;

/// The catalog table on a GPU (or software) device, ready to rank batches of query embeddings.
///
/// Created once per catalog (the table is uploaded once); [`top_k`](Self::top_k) can then be called
/// any number of times. The same async API runs natively (Vulkan, Metal, DX12, GL; lavapipe without
/// a GPU) and in the browser on WebGPU, where awaiting the result yields to the event loop.
///
/// ```no_run
/// # async fn demo() -> soft_gpu::Result<()> {
/// // A 3-item catalog of 2-d embeddings, and two queries.
/// let table = [0.0, 0.0, 1.0, 0.0, 5.0, 5.0];
/// let grounder = soft_gpu::GpuGrounder::new_default(&table, 3, 2).await?;
/// let hits = grounder.top_k(&[0.9, 0.0, 4.0, 4.0], 2, 2).await?;
/// assert_eq!(hits[0][0].0, 1); // item 1 is nearest to (0.9, 0)
/// assert_eq!(hits[1][0].0, 2); // item 2 is nearest to (4, 4)
/// # Ok(()) }
/// // Natively, drive it with any executor, e.g. `pollster::block_on(demo())`.
/// ```
pub struct GpuGrounder {
    device: wgpu::Device,
    queue: wgpu::Queue,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    table: wgpu::Buffer,
    n_items: usize,
    dim: usize,
    info: wgpu::AdapterInfo,
    /// Errors wgpu raised outside our error scopes (none expected): reported by the next call.
    uncaptured: Arc<Mutex<Option<wgpu::Error>>>,
    /// Test hook: fewer queries per dispatch than the device limits allow.
    pub(crate) dispatch_cap: Option<usize>,
}

impl GpuGrounder {
    /// Uploads `table` (`[n_items, dim]`, row-major) to a device on the best adapter there is:
    /// a high-performance GPU if any, else whatever the platform offers (software included, such
    /// as lavapipe). `WGPU_BACKEND` and the other wgpu environment variables are honoured natively.
    pub async fn new_default(table: &[f32], n_items: usize, dim: usize) -> Result<Self> {
        check_table(table, n_items, dim)?;
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(GpuError::NoAdapter)?;
        Self::from_adapter(&adapter, table, n_items, dim).await
    }

    /// Like [`new_default`](Self::new_default) on an adapter the caller chose. The grounder opens
    /// its own device on it, asking only for compute and the adapter's storage-buffer size limits.
    pub async fn from_adapter(adapter: &wgpu::Adapter, table: &[f32], n_items: usize, dim: usize) -> Result<Self> {
        check_table(table, n_items, dim)?;
        let info = adapter.get_info();
        let available = adapter.limits();
        let mut limits = wgpu::Limits::downlevel_defaults();
        limits.max_storage_buffer_binding_size = available.max_storage_buffer_binding_size;
        limits.max_buffer_size = available.max_buffer_size;
        let bytes = table.len() as u64 * 4;
        let limit = binding_limit(&limits);
        if bytes > limit {
            return Err(GpuError::TooLarge { what: "catalog table", bytes, limit });
        }
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("soft-gpu grounding"),
                required_limits: limits,
                ..Default::default()
            })
            .await
            .map_err(|source| GpuError::RequestDevice { adapter: info.name.clone(), source })?;
        let uncaptured = Arc::new(Mutex::new(None));
        let stash = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |e| {
            let mut slot = stash.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert(e);
        }));

        let ((pipeline, table), errors) = scoped(&device, || {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some("grounding.wgsl"),
                source: wgpu::ShaderSource::Wgsl(SHADER.into()),
            });
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("grounding"),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            let table = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("catalog table"),
                contents: bytemuck::cast_slice(table),
                usage: wgpu::BufferUsages::STORAGE,
            });
            (pipeline, table)
        });
        if let Some(source) = errors.await {
            return Err(GpuError::Wgpu { op: "building the grounding pipeline and uploading the table", source });
        }
        let layout = pipeline.get_bind_group_layout(0);
        Ok(Self { device, queue, pipeline, layout, table, n_items, dim, info, uncaptured, dispatch_cap: None })
    }

    /// Rows of the catalog table.
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// Columns of the catalog table (the embedding width queries must have).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The adapter the device runs on (name, backend, device type: `Cpu` for lavapipe).
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// For each of the `n_queries` rows of `queries` (`[n_queries, dim]`, row-major), the `k`
    /// catalog rows nearest in squared L2 distance, as `(item index, squared distance)`.
    ///
    /// Order: ascending distance; rows at the same distance (bit-equal f32) go by the smaller item
    /// index, so the result is deterministic. `1 <= k <= min(K_MAX, n_items)`. Distances are summed
    /// in f32 four columns per step (and a GPU may fuse multiply-adds), where [`crate::cpu_top_k`]
    /// sums one column at a time: rows whose distances differ only in the last bits may rank
    /// differently between the two; values whose squared differences and sums are exact in f32
    /// (such as small multiples of a power of two) rank identically.
    /// `n_queries == 0` gives an empty result. Large batches are split into several dispatches
    /// to stay within the device's buffer limits.
    pub async fn top_k(&self, queries: &[f32], n_queries: usize, k: usize) -> Result<Vec<Vec<Neighbor>>> {
        check_queries(queries, n_queries, self.dim, self.n_items, k)?;
        let per = self.queries_per_dispatch(k);
        let mut out = Vec::with_capacity(n_queries);
        let mut start = 0;
        while start < n_queries {
            let m = per.min(n_queries - start);
            out.extend(self.dispatch(&queries[start * self.dim..(start + m) * self.dim], m, k).await?);
            start += m;
        }
        Ok(out)
    }

    /// Most queries one dispatch can take: the query and result buffers within the binding limit,
    /// the workgroups within a 2-D grid.
    fn queries_per_dispatch(&self, k: usize) -> usize {
        let limits = self.device.limits();
        let binding = binding_limit(&limits);
        let grid = u64::from(limits.max_compute_workgroups_per_dimension).pow(2);
        let per = (binding / (self.dim as u64 * 4))
            .min(binding / (k as u64 * HIT_BYTES))
            .min(grid * u64::from(QUERIES_PER_WORKGROUP))
            .max(1);
        let per = usize::try_from(per).unwrap_or(usize::MAX);
        self.dispatch_cap.map_or(per, |cap| per.min(cap.max(1)))
    }

    /// One dispatch for `m` queries (within [`Self::queries_per_dispatch`]), and its read-back.
    async fn dispatch(&self, queries: &[f32], m: usize, k: usize) -> Result<Vec<Vec<Neighbor>>> {
        let out_bytes = (m * k) as u64 * HIT_BYTES;
        let ((readback, mapping), errors) = scoped(&self.device, || {
            let params = [self.n_items as u32, self.dim as u32, k as u32, m as u32];
            let params = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("grounding params"),
                contents: bytemuck::cast_slice(&params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
            let queries = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("grounding queries"),
                contents: bytemuck::cast_slice(queries),
                usage: wgpu::BufferUsages::STORAGE,
            });
            let hits = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("grounding hits"),
                size: out_bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let readback = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("grounding read-back"),
                size: out_bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("grounding bindings"),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: self.table.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 2, resource: queries.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 3, resource: hits.as_entire_binding() },
                ],
            });
            let (x, y) = grid(m, self.device.limits().max_compute_workgroups_per_dimension);
            let mut encoder =
                self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("grounding") });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("grounding"),
                    timestamp_writes: None,
                });
                pass.set_pipeline(&self.pipeline);
                pass.set_bind_group(0, &bind, &[]);
                pass.dispatch_workgroups(x, y, 1);
            }
            encoder.copy_buffer_to_buffer(&hits, 0, &readback, 0, out_bytes);
            self.queue.submit(Some(encoder.finish()));
            let mapping = map_read(&readback);
            (readback, mapping)
        });
        // Natively this runs the GPU work and the mapping callback; in the browser it does nothing
        // and the mapping resolves from the event loop.
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(GpuError::Poll)?;
        if let Some(source) = errors.await {
            return Err(GpuError::Wgpu { op: "running the grounding kernel", source });
        }
        if let Some(source) = self.uncaptured.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(GpuError::Wgpu { op: "using the grounding device", source });
        }
        mapping.await.map_err(GpuError::Map)?;
        let hits = {
            let view = readback.get_mapped_range(..).map_err(GpuError::MapRange)?;
            parse_hits(&view, k)
        };
        readback.unmap();
        Ok(hits)
    }
}

#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
impl GpuGrounder {
    /// [`new_default`](Self::new_default), blocking the calling thread (native only).
    pub fn new_default_blocking(table: &[f32], n_items: usize, dim: usize) -> Result<Self> {
        pollster::block_on(Self::new_default(table, n_items, dim))
    }

    /// [`top_k`](Self::top_k), blocking the calling thread (native only).
    pub fn top_k_blocking(&self, queries: &[f32], n_queries: usize, k: usize) -> Result<Vec<Vec<Neighbor>>> {
        pollster::block_on(self.top_k(queries, n_queries, k))
    }
}

/// Bytes one storage binding may hold on a device with these limits.
fn binding_limit(limits: &wgpu::Limits) -> u64 {
    limits.max_storage_buffer_binding_size.min(limits.max_buffer_size)
}

/// Workgroups for `m` queries as a 2-D grid `(x, y)`, each dimension within `max_dim`.
fn grid(m: usize, max_dim: u32) -> (u32, u32) {
    let blocks = (m as u64).div_ceil(u64::from(QUERIES_PER_WORKGROUP)).max(1);
    let x = blocks.min(u64::from(max_dim.max(1)));
    let y = blocks.div_ceil(x);
    (x as u32, y as u32)
}

/// The kernel's `[m, k]` `(u32 item, f32 dist)` output, little-endian as WGSL stores it.
fn parse_hits(bytes: &[u8], k: usize) -> Vec<Vec<Neighbor>> {
    bytes
        .chunks_exact(k * HIT_BYTES as usize)
        .map(|row| {
            row.chunks_exact(HIT_BYTES as usize)
                .map(|h| {
                    let item = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
                    let dist = f32::from_le_bytes([h[4], h[5], h[6], h[7]]);
                    (item, dist)
                })
                .collect()
        })
        .collect()
}

/// Runs `f` inside validation, out-of-memory and internal error scopes; the future gives the first
/// error caught. The scopes are pushed and popped synchronously here, on one thread, as wgpu needs.
fn scoped<T>(device: &wgpu::Device, f: impl FnOnce() -> T) -> (T, impl Future<Output = Option<wgpu::Error>>) {
    let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let memory = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
    let internal = device.push_error_scope(wgpu::ErrorFilter::Internal);
    let out = f();
    let internal = internal.pop();
    let memory = memory.pop();
    let validation = validation.pop();
    (out, async move {
        let (v, m, i) = (validation.await, memory.await, internal.await);
        v.or(m).or(i)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_covers_every_query_within_limits() {
        assert_eq!(grid(1, 65535), (1, 1));
        assert_eq!(grid(64, 65535), (16, 1));
        assert_eq!(grid(65, 65535), (17, 1));
        assert_eq!(grid(4 * 65535 + 1, 65535), (65535, 2));
        assert_eq!(grid(9, 2), (2, 2));
    }

    #[test]
    fn host_constants_match_the_shader() {
        assert!(SHADER.contains(&format!("const QB: u32 = {QUERIES_PER_WORKGROUP}u;")));
        assert!(SHADER.contains(&format!("const K_MAX: u32 = {}u;", crate::K_MAX)));
    }

    #[test]
    fn splits_a_batch_over_several_dispatches() {
        let (n, dim, nq, k) = (50, 3, 11, 5);
        let table: Vec<f32> = (0..n * dim).map(|i| ((i * 37) % 23) as f32).collect();
        let queries: Vec<f32> = (0..nq * dim).map(|i| ((i * 11) % 19) as f32).collect();
        let mut g = pollster::block_on(GpuGrounder::new_default(&table, n, dim))
            .unwrap_or_else(|e| panic!("the grounding kernel needs a wgpu adapter: {e}"));
        let whole = pollster::block_on(g.top_k(&queries, nq, k)).unwrap();
        g.dispatch_cap = Some(3);
        assert_eq!(g.queries_per_dispatch(k), 3);
        assert_eq!(pollster::block_on(g.top_k(&queries, nq, k)).unwrap(), whole);
        assert_eq!(whole, crate::cpu_top_k(&table, n, dim, &queries, nq, k).unwrap());
    }

    #[test]
    fn parses_hits() {
        let mut bytes = Vec::new();
        for (i, d) in [(3u32, 0.5f32), (1, 2.0), (7, 0.0), (2, 1.0)] {
            bytes.extend(i.to_le_bytes());
            bytes.extend(d.to_le_bytes());
        }
        assert_eq!(parse_hits(&bytes, 2), vec![vec![(3, 0.5), (1, 2.0)], vec![(7, 0.0), (2, 1.0)]]);
    }
}
