//! Backend selection: subcommands are written once, generic over [`Backend`], as a
//! [`BackendTask`]; [`with_backend`] builds the chosen backend and runs the task on it.

use anyhow::Result;
use moetile::model::Backend;
use moetile_cpu::CpuBackend;
use moetile_wgpu::AdapterChoice;
use serde::Serialize;

/// Which backend runs the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendChoice {
    /// The CPU reference (`--cpu`).
    Cpu,
    /// The GPU through wgpu (the default), on this adapter.
    Gpu(AdapterChoice),
}

/// What every report says about the backend that produced it.
#[derive(Debug, Clone, Serialize)]
pub struct BackendInfo {
    /// `cpu` or `wgpu`.
    pub kind: &'static str,
    /// Adapter and API, from [`Backend::describe`].
    pub description: String,
    /// Driver name and version, where there is one.
    pub driver: String,
    /// Bytes of one key or value element in the KV cache.
    pub kv_element_bytes: usize,
}

/// Work to run on whichever backend was chosen.
pub trait BackendTask {
    /// What the work returns.
    type Output;
    /// Runs on `backend`.
    fn run<B: Backend>(self, backend: &mut B, info: &BackendInfo) -> Result<Self::Output>;
}

/// Builds the backend `choice` names and runs `task` on it.
pub fn with_backend<T: BackendTask>(choice: &BackendChoice, task: T) -> Result<T::Output> {
    match choice {
        BackendChoice::Cpu => run_on_cpu(task),
        BackendChoice::Gpu(_) => {
            // moetile-wgpu does not implement `Backend` yet: this arm becomes
            // `WgpuContext::new(adapter)` wrapped in its backend when it does.
            eprintln!(
                "warning: the wgpu backend does not run whole models yet; running on the CPU \
                 reference"
            );
            run_on_cpu(task)
        }
    }
}

fn run_on_cpu<T: BackendTask>(task: T) -> Result<T::Output> {
    let (mut cpu, info) = cpu_backend();
    task.run(&mut cpu, &info)
}

/// The CPU reference and its description.
pub fn cpu_backend() -> (CpuBackend, BackendInfo) {
    let cpu = CpuBackend::new();
    let info = BackendInfo {
        kind: "cpu",
        description: cpu.describe(),
        driver: "none".into(),
        kv_element_bytes: 4,
    };
    (cpu, info)
}
