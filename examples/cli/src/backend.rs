//! Backend selection: subcommands are written once, generic over [`Backend`], as a
//! [`BackendTask`]; [`with_backend`] builds the chosen backend and runs the task on it.

use anyhow::Result;
use moetile::model::Backend;
use moetile_cpu::CpuBackend;
use std::path::PathBuf;
use std::sync::Arc;

use moetile_wgpu::{ActType, AdapterChoice, ContextOptions, WgpuBackend, WgpuContext};
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
        BackendChoice::Gpu(adapter) => {
            let (mut gpu, info) = gpu_backend(adapter)?;
            task.run(&mut gpu, &info)
        }
    }
}

/// The wgpu backend on `adapter` and its description.
pub fn gpu_backend(adapter: &AdapterChoice) -> Result<(WgpuBackend, BackendInfo)> {
    let options = ContextOptions {
        pipeline_cache_dir: pipeline_cache_dir(),
        ..ContextOptions::default()
    };
    let ctx = Arc::new(WgpuContext::new(adapter)?.with_options(options));
    let gpu = WgpuBackend::new(ctx.clone());
    let info = BackendInfo {
        kind: "wgpu",
        description: gpu.describe(),
        driver: ctx.profile().driver.clone(),
        kv_element_bytes: match gpu.options().kv {
            ActType::F16 => 2,
            ActType::F32 => 4,
        },
    };
    Ok((gpu, info))
}

/// Where compiled GPU pipelines are kept between runs: `$XDG_CACHE_HOME/moetile`, else
/// `~/.cache/moetile`; none without either variable.
fn pipeline_cache_dir() -> Option<PathBuf> {
    let var = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|home| home.join(".cache")))
        .map(|cache| cache.join("moetile"))
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
