//! Typed errors of the grounding kernel and its CPU reference; bad input is an error, never a panic.

/// What can go wrong creating a [`crate::GpuGrounder`] or asking it (or [`crate::cpu_top_k`]) for neighbours.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No wgpu adapter matched: no GPU driver, and no software one either.
    #[error(
        "no wgpu adapter found (without a GPU, install Mesa's lavapipe: apt-get install mesa-vulkan-drivers, \
         as scripts/setup.sh does; in a browser, WebGPU must be available)"
    )]
    NoAdapter(#[source] wgpu::RequestAdapterError),
    /// The adapter refused a device with the limits the kernel needs (compute shaders, storage buffers).
    #[error("adapter {adapter} could not open a device for the grounding kernel")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },
    /// A flat `[rows, dim]` array does not hold `rows * dim` values.
    #[error("{what}: expected {rows} x {dim} values, got {got}")]
    ShapeMismatch { what: &'static str, rows: usize, dim: usize, got: usize },
    /// `k` is 0, above [`crate::K_MAX`], or above the number of catalog rows.
    #[error("k = {k} is out of range 1..={max}")]
    KOutOfRange { k: usize, max: usize },
    /// The catalog table has no rows or no columns.
    #[error("the catalog table is empty ({n_items} x {dim})")]
    EmptyTable { n_items: usize, dim: usize },
    /// An input holds NaN or an infinity, which has no place in a distance ranking.
    #[error("{what} holds a non-finite value ({value}) at flat index {index}")]
    NonFinite { what: &'static str, index: usize, value: f32 },
    /// An input is larger than the device can bind in one storage buffer (or index with u32).
    #[error("{what} needs {bytes} bytes, over the device's limit of {limit} bytes")]
    TooLarge { what: &'static str, bytes: u64, limit: u64 },
    /// wgpu reported a validation, out-of-memory or internal error while doing `op`.
    #[error("wgpu failed while {op}")]
    Wgpu {
        op: &'static str,
        #[source]
        source: wgpu::Error,
    },
    /// Waiting for the device to finish (natively) failed.
    #[error("waiting for the device failed")]
    Poll(#[source] wgpu::PollError),
    /// Mapping the result buffer for reading failed (or its callback was dropped).
    #[error("mapping the result buffer for reading failed")]
    Map(#[source] wgpu::BufferAsyncError),
    /// The mapped result buffer could not be viewed.
    #[error("reading the mapped result buffer failed")]
    MapRange(#[source] wgpu::MapRangeError),
}

/// Result of this crate.
pub type Result<T> = std::result::Result<T, GpuError>;
