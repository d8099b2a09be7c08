//! [`WgpuContext`]: one device and queue, its capability [`Profile`], the kernel cache, and the
//! buffer plumbing every op shares (activations in and out, params, error scopes).

use std::sync::OnceLock;

use moetile::model::WeightData;
use moetile_codegen::{ActType, params::WgslParams};
use wgpu::util::DeviceExt;

use crate::adapter::{self, AdapterChoice, Profile};
use crate::error::{Result, WgpuError};
use crate::kernels::{KernelCache, ShaderChecks};
use crate::layout::{self, ExpertTensor};

/// A device with moetile's kernels. Hosts every op of the backend; the `moetile::model::Backend`
/// implementation will wrap it.
#[derive(Debug)]
pub struct WgpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    profile: Profile,
    pub(crate) kernels: KernelCache,
    iq2xxs_grid: OnceLock<wgpu::Buffer>,
}

/// A row-major activation matrix on the device: f32, or f16 stored two per `u32` word.
#[derive(Debug)]
pub struct GpuMatrix {
    pub(crate) buffer: wgpu::Buffer,
    /// Rows (tokens, or (token, k) pairs).
    pub rows: usize,
    /// Values per row.
    pub cols: usize,
    /// Element type.
    pub ty: ActType,
}

impl GpuMatrix {
    /// The buffer (for embedders binding it in their own passes).
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

impl WgpuContext {
    /// Opens the adapter `choice` names (see [`crate::adapter`]) with the features and limits
    /// moetile uses. Warns on stderr when the adapter is a CPU one.
    pub fn new(choice: &AdapterChoice) -> Result<WgpuContext> {
        let instance = adapter::instance();
        let adapter = adapter::select(&instance, choice)?;
        let info = adapter.get_info();
        let features = Profile::wanted_features(&adapter);
        let experimental = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            // SAFETY: cooperative matrices are only used by kernels that naga validated with
            // the capability, on adapters reporting a matching configuration; we accept
            // wgpu's caveat that experimental features may still have implementation bugs.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("moetile"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|source| WgpuError::RequestDevice {
            adapter: info.name.clone(),
            source,
        })?;
        let mut ctx = Self::from_device(&adapter, device, queue);
        ctx.kernels = KernelCache::new(ShaderChecks::from_env(ctx.profile.backend)?);
        if ctx.profile.is_cpu() {
            eprintln!(
                "warning: moetile is running on a CPU adapter, {}: results are correct but \
                 orders of magnitude slower than on a GPU",
                ctx.profile.describe()
            );
        }
        Ok(ctx)
    }

    /// Wraps a device an application created itself; moetile uses only the features and limits
    /// the device was created with. Its kernels run with the backend's default
    /// [`ShaderChecks`] ([`WgpuContext::new`] also reads `MOETILE_SHADER_CHECKS`).
    pub fn from_device(adapter: &wgpu::Adapter, device: wgpu::Device, queue: wgpu::Queue) -> Self {
        let profile = Profile::new(adapter, device.features(), &device.limits());
        let kernels = KernelCache::new(ShaderChecks::default_for(profile.backend));
        WgpuContext {
            device,
            queue,
            profile,
            kernels,
            iq2xxs_grid: OnceLock::new(),
        }
    }

    /// What the device offers.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The runtime checks the routed-MoE kernels run with.
    pub fn shader_checks(&self) -> ShaderChecks {
        self.kernels.checks()
    }

    /// The device.
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Uploads an expert tensor `[cols, rows, experts]` into the GPU layout, split by experts
    /// where it exceeds the device's storage binding limit.
    pub fn upload_experts(&self, w: &WeightData<'_>) -> Result<ExpertTensor> {
        self.upload_experts_with_limit(w, u64::MAX)
    }

    /// [`Self::upload_experts`] with buffers of at most `max_binding` bytes (capped by the
    /// device limit): for tests of the split path and for memory-constrained embedders.
    pub fn upload_experts_with_limit(
        &self,
        w: &WeightData<'_>,
        max_binding: u64,
    ) -> Result<ExpertTensor> {
        let limit = max_binding
            .min(self.profile.max_storage_binding)
            .min(self.profile.max_buffer);
        self.scoped(&format!("uploading {}", w.name), || {
            layout::upload(&self.device, w, limit)
        })
    }

    /// The IQ2_XXS grid buffer, created on first use.
    pub(crate) fn iq2xxs_grid(&self) -> &wgpu::Buffer {
        self.iq2xxs_grid.get_or_init(|| {
            self.device
                .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some("iq2xxs_grid"),
                    contents: &layout::iq2xxs_grid_bytes(),
                    usage: wgpu::BufferUsages::STORAGE,
                })
        })
    }

    /// A `rows x cols` matrix of `ty` from f32 host values (rounded to f16 for `F16`).
    pub fn matrix_from_host(
        &self,
        rows: usize,
        cols: usize,
        ty: ActType,
        data: &[f32],
    ) -> Result<GpuMatrix> {
        if data.len() != rows * cols {
            return Err(WgpuError::Shape {
                op: "matrix upload".into(),
                detail: format!("{} values for {rows} x {cols}", data.len()),
            });
        }
        let bytes = encode(ty, data);
        let buffer = self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("matrix"),
                contents: &padded(bytes),
                usage: storage_usage(),
            });
        Ok(GpuMatrix {
            buffer,
            rows,
            cols,
            ty,
        })
    }

    /// A `rows x cols` matrix of `ty` with every element `value` (tests poison outputs with NaN).
    pub fn matrix_filled(&self, rows: usize, cols: usize, ty: ActType, value: f32) -> GpuMatrix {
        let m = self.matrix(rows, cols, ty, "matrix");
        self.fill(&m, value);
        m
    }

    /// A `rows x cols` matrix of `ty`, zero-initialised.
    pub(crate) fn matrix(&self, rows: usize, cols: usize, ty: ActType, label: &str) -> GpuMatrix {
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: matrix_bytes(rows, cols, ty),
            usage: storage_usage(),
            mapped_at_creation: false,
        });
        GpuMatrix {
            buffer,
            rows,
            cols,
            ty,
        }
    }

    /// Sets every element of `m` to `value`.
    pub fn fill(&self, m: &GpuMatrix, value: f32) {
        let bytes = encode(m.ty, &vec![value; m.rows * m.cols]);
        self.queue.write_buffer(&m.buffer, 0, &padded(bytes));
    }

    /// Copies `m` to the host as f32, waiting for all queued work.
    pub fn read_matrix(&self, m: &GpuMatrix) -> Result<Vec<f32>> {
        let bytes = self.read_buffer(&m.buffer, "matrix")?;
        let n = m.rows * m.cols;
        Ok(match m.ty {
            ActType::F32 => bytemuck::cast_slice::<u8, f32>(&bytes)[..n].to_vec(),
            ActType::F16 => bytemuck::cast_slice::<u8, u16>(&bytes)[..n]
                .iter()
                .map(|&h| half::f16::from_bits(h).to_f32())
                .collect(),
        })
    }

    /// Copies a whole buffer to the host, waiting for all queued work.
    pub(crate) fn read_buffer(&self, buffer: &wgpu::Buffer, what: &str) -> Result<Vec<u8>> {
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: buffer.size(),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, buffer.size());
        self.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        let fail = |message: String| WgpuError::Readback {
            what: what.to_string(),
            message,
        };
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| fail(e.to_string()))?;
        rx.recv()
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        let bytes = staging
            .get_mapped_range(..)
            .map_err(|e| fail(e.to_string()))?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }

    /// A storage buffer of `bytes` (at least 4) bytes.
    pub(crate) fn storage(
        &self,
        label: &str,
        bytes: u64,
        extra: wgpu::BufferUsages,
    ) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: storage_usage() | extra,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer holding `data`.
    pub(crate) fn storage_init(&self, label: &str, data: &[u8]) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: &padded(data.to_vec()),
                usage: storage_usage(),
            })
    }

    /// A uniform buffer holding `params`.
    pub(crate) fn params<P: WgslParams>(&self, params: &P) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(P::NAME),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    /// Runs `f` inside validation and out-of-memory error scopes: a wgpu error becomes
    /// [`WgpuError::Gpu`] naming `op` instead of a panic in wgpu's default handler.
    pub(crate) fn scoped<T>(&self, op: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let result = f();
        let errors = [validation.pop(), oom.pop()].map(pollster::block_on);
        if let Some(e) = errors.into_iter().flatten().next() {
            return Err(WgpuError::Gpu {
                op: op.to_string(),
                message: e.to_string(),
            });
        }
        result
    }

    /// Workgroups `(x, y)` covering `n` invocations of `wg_size` in a folded 1-D grid (see
    /// `wgsl/grid.wgsl`).
    pub(crate) fn linear_grid(&self, op: &str, n: usize, wg_size: u32) -> Result<(u32, u32)> {
        let groups = n.div_ceil(wg_size as usize) as u64;
        let max = self.profile.max_workgroups_per_dim as u64;
        let y = groups.div_ceil(max).max(1);
        if y > max {
            return Err(WgpuError::GridTooLarge {
                op: op.to_string(),
                groups,
                limit: self.profile.max_workgroups_per_dim,
            });
        }
        Ok((groups.min(max) as u32, y as u32))
    }
}

fn storage_usage() -> wgpu::BufferUsages {
    wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST
}

/// Bytes of a `rows x cols` matrix of `ty`, rounded up to whole words.
fn matrix_bytes(rows: usize, cols: usize, ty: ActType) -> u64 {
    ((rows * cols * ty.bytes()) as u64)
        .max(4)
        .next_multiple_of(4)
}

fn encode(ty: ActType, data: &[f32]) -> Vec<u8> {
    match ty {
        ActType::F32 => bytemuck::cast_slice(data).to_vec(),
        ActType::F16 => data
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect(),
    }
}

/// `bytes` padded with zeros to a whole, non-zero number of words.
fn padded(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.resize(bytes.len().max(4).next_multiple_of(4), 0);
    bytes
}
