//! Backend selection: subcommands are written once, generic over [`Backend`], as a
//! [`BackendTask`]; [`with_backend`] builds the chosen backend and runs the task on it.

use anyhow::{Context, Result};
use moetile::RuntimeConfig;
use moetile::config::TilePolicyKind;
use moetile::model::Backend;
use moetile::tile::{TileCapSource, TileWidth};
use moetile_cpu::CpuBackend;
use std::sync::Arc;

use moetile_wgpu::tune::TUNING_FILE;
use moetile_wgpu::{ActType, BackendOptions, ContextOptions, Path, WgpuBackend, WgpuContext};
use serde::Serialize;

use crate::model::ModelFile;

/// Which backend runs the model.
#[derive(Debug, Clone)]
pub enum BackendChoice {
    /// The CPU reference (`--cpu`).
    Cpu,
    /// The GPU through wgpu (the default).
    Gpu(Box<GpuChoice>),
}

/// The GPU device to open and how the backend computes on it.
#[derive(Debug, Clone)]
pub struct GpuChoice {
    /// The device.
    pub context: ContextOptions,
    /// [`BackendOptions::int8_mat_vec`] (off with `--f32-mat-vec`).
    pub int8_mat_vec: bool,
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
    /// The tile cap `moetile tune` measured for the model on this adapter, if any (reports
    /// say where the cap in use came from instead).
    #[serde(skip)]
    pub tuned_tile_max: Option<TileWidth>,
}

impl BackendInfo {
    /// `config` with the tuned tile cap, which it runs with when neither `--tile-max` nor
    /// `MOETILE_TILE_MAX` sets one: then a note on stderr says so (unless a fixed width
    /// leaves no cap to choose).
    pub fn tuned(&self, config: &RuntimeConfig) -> RuntimeConfig {
        let config = RuntimeConfig {
            tuned_tile_max: self.tuned_tile_max,
            ..config.clone()
        };
        let cap = config.tile_cap();
        let capped = !matches!(config.tile_policy, TilePolicyKind::Fixed(_));
        if cap.source == TileCapSource::Tuned && capped {
            eprintln!(
                "note: tile cap {}, measured by `moetile tune` for this model on this adapter \
                 (--tile-max or {} go over it)",
                cap.width,
                moetile::tile::TILE_MAX_ENV
            );
        }
        config
    }
}

/// Work to run on whichever backend was chosen.
pub trait BackendTask {
    /// What the work returns.
    type Output;
    /// Runs on `backend`.
    fn run<B: Backend>(self, backend: &mut B, info: &BackendInfo) -> Result<Self::Output>;
}

/// Builds the backend `choice` names and runs `task`, which runs `model`, on it.
pub fn with_backend<T: BackendTask>(
    choice: &BackendChoice,
    model: &ModelFile,
    task: T,
) -> Result<T::Output> {
    match choice {
        BackendChoice::Cpu => run_on_cpu(task),
        BackendChoice::Gpu(choice) => {
            let (mut gpu, info) = gpu_backend(choice, model)?;
            task.run(&mut gpu, &info)
        }
    }
}

/// The wgpu backend `choice` makes, and its description with the tile cap tuned for `model`
/// on its device. Says on stderr which matmul paths the tuning record rules out.
pub fn gpu_backend(choice: &GpuChoice, model: &ModelFile) -> Result<(WgpuBackend, BackendInfo)> {
    let ctx = Arc::new(WgpuContext::new(&choice.context)?);
    let options = BackendOptions {
        int8_mat_vec: choice.int8_mat_vec,
        ..BackendOptions::for_device(&ctx)
    };
    let gpu = WgpuBackend::with_options(ctx.clone(), options)?;
    let record = choice
        .context
        .tuning_dir
        .as_ref()
        .map(|dir| dir.join(TUNING_FILE).display().to_string())
        .unwrap_or_default();
    for unusable in &ctx.tuning().unusable {
        if unusable.path == Path::Reg {
            eprintln!(
                "warning: `moetile tune` found the register-tile kernel {} wrong on this adapter \
                 ({}), and no other matmul path runs here: results may be wrong (delete {record} \
                 to test again)",
                unusable.kernel, unusable.reason
            );
        } else {
            eprintln!(
                "note: not using the {} matmul path: `moetile tune` found its kernel {} wrong on \
                 this adapter ({}); running {} (delete {record} to test again)",
                unusable.path.name(),
                unusable.kernel,
                unusable.reason,
                gpu.options().path.name()
            );
        }
    }
    let tuned_tile_max = gpu
        .tuned_tile_cap(&model.file, &model.config)
        .with_context(|| format!("{}", model.path.display()))?;
    let info = BackendInfo {
        kind: "wgpu",
        description: gpu.describe(),
        driver: ctx.profile().driver.clone(),
        kv_element_bytes: match gpu.options().kv {
            ActType::F16 => 2,
            ActType::F32 => 4,
        },
        tuned_tile_max,
    };
    Ok((gpu, info))
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
        tuned_tile_max: None,
    };
    (cpu, info)
}
