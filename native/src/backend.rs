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
}

fn cpu() -> Chosen {
    Chosen { device: Device::flex(), name: "flex (CPU)".into(), gpu: false }
}

fn wgpu(kind: DeviceKind) -> Result<Chosen> {
    let (device, setup) = Device::wgpu_options().device_kind(kind).init_with_setup().context("no wgpu adapter")?;
    let info = setup.adapter.get_info();
    Ok(Chosen { device, name: format!("wgpu {:?} on {} ({:?})", info.backend, info.name, info.device_type), gpu: true })
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
