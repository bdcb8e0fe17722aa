//! Which burn device to run on. `auto` takes a hardware GPU adapter through wgpu (Vulkan,
//! Metal, DX12) when there is one and otherwise the CPU backend (`flex`); `wgpu` takes any
//! adapter, software ones (lavapipe) included. Every report names the backend and adapter.

use anyhow::{Context, Result};
use burn::tensor::{Device, DeviceKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    Auto,
    Cpu,
    Wgpu,
}

pub struct Chosen {
    pub device: Device,
    /// Backend and adapter, for reports.
    pub name: String,
    /// A wgpu adapter: grounding then runs the project's WGSL kernel on it.
    pub gpu: bool,
    /// The memory the device may be asked to hold, in bytes, where it says: the CPU's physical
    /// memory; on wgpu what cubecl reads from the graphics API (Vulkan: the largest
    /// device-local heap; Metal: the recommended working set), none elsewhere.
    pub memory: Option<u64>,
}

fn cpu() -> Chosen {
    Chosen { device: Device::flex(), name: "flex (CPU)".into(), gpu: false, memory: physical_memory() }
}

fn wgpu(kind: DeviceKind) -> Result<Chosen> {
    let (device, setup) =
        Device::wgpu_options().device_kind(kind.clone()).init_with_setup().context("no wgpu adapter")?;
    let info = setup.adapter.get_info();
    let name = format!("wgpu {:?} on {} ({:?})", info.backend, info.name, info.device_type);
    Ok(Chosen { device, name, gpu: true, memory: wgpu_memory(kind) })
}

/// cubecl's figure for the wgpu device of `kind` (burn's default graphics API).
fn wgpu_memory(kind: DeviceKind) -> Option<u64> {
    use cubecl::wgpu::{WgpuBackend, WgpuDevice, WgpuDeviceKind, WgpuRuntime};
    use cubecl_runtime::runtime::Runtime;
    let kind = match kind {
        DeviceKind::DiscreteGpu(i) => WgpuDeviceKind::DiscreteGpu(i),
        DeviceKind::IntegratedGpu(i) => WgpuDeviceKind::IntegratedGpu(i),
        DeviceKind::VirtualGpu(i) => WgpuDeviceKind::VirtualGpu(i),
        DeviceKind::Cpu => WgpuDeviceKind::Cpu,
        DeviceKind::DefaultDevice => WgpuDeviceKind::DefaultDevice,
        DeviceKind::Existing(_) => return None,
    };
    let device = WgpuDevice::new(kind).on(WgpuBackend::Auto);
    <WgpuRuntime>::client(&device).properties().memory.max_memory()
}

/// `MemTotal` of /proc/meminfo, where there is one.
fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn choose(choice: BackendChoice) -> Result<Chosen> {
    match choice {
        BackendChoice::Cpu => Ok(cpu()),
        BackendChoice::Wgpu => wgpu(DeviceKind::DefaultDevice),
        BackendChoice::Auto => Ok(wgpu(DeviceKind::DiscreteGpu(0))
            .or_else(|_| wgpu(DeviceKind::IntegratedGpu(0)))
            .unwrap_or_else(|_| cpu())),
    }
}

/// The devices data-parallel training over `n` devices adds to `chosen`: on the CPU backend the
/// CPU device again (burn's CPU backend has one device: the replicas are workers sharing its
/// cores and memory), on wgpu discrete GPUs 1 to n - 1 (`--backend auto` takes discrete GPU 0
/// first). An error names a GPU wgpu does not find.
pub fn replicas(chosen: &Chosen, n: usize) -> Result<Vec<Device>> {
    if !chosen.gpu {
        return Ok(vec![Device::flex(); n.saturating_sub(1)]);
    }
    (1..n)
        .map(|i| {
            wgpu(DeviceKind::DiscreteGpu(i))
                .map(|c| c.device)
                .with_context(|| format!("--devices {n}: wgpu finds no discrete GPU {i} (GPUs are counted from 0)"))
        })
        .collect()
}
