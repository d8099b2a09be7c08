//! [`WgpuContext`]: one device and queue, its capability [`Profile`], the kernel cache, and the
//! buffer plumbing every op shares (pooled buffers, encoders with parameter arenas, limits,
//! error scopes, readback).

use std::sync::{Arc, Mutex, OnceLock};

use moetile::model::WeightData;
use moetile_codegen::{ActType, Path};
use wgpu::util::DeviceExt;

use crate::adapter::{self, ContextOptions, Profile};
use crate::encoder::{Encoder, ParamArena};
use crate::error::{Result, WgpuError};
use crate::kernels::{KernelCache, ShaderChecks};
use crate::layout::{self, ExpertTensor};
use crate::pool::{BufferPool, PooledBuffer, bucket};
use crate::requirements::{self, DeviceRequest};

/// A device with moetile's kernels. Hosts every op; [`crate::WgpuBackend`] wraps it as a
/// `moetile::model::Backend`.
///
/// Buffers for activations and intermediates come from pools and return to them when dropped:
/// one pool per stream of work (a backend, an encoder), and the context's own for buffers made
/// outside encoders. [`WgpuContext::fill`] writes through the queue, so the write lands before
/// any encoder submitted later runs: fill a matrix before recording work on it.
#[derive(Debug)]
pub struct WgpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    profile: Profile,
    pub(crate) kernels: KernelCache,
    iq2xxs_grid: OnceLock<wgpu::Buffer>,
    pub(crate) pool: BufferPool,
    arenas: Mutex<Vec<ParamArena>>,
    lost: Arc<Mutex<Option<String>>>,
}

/// A row-major activation matrix on the device: f32, or f16 stored two per `u32` word.
#[derive(Debug)]
pub struct GpuMatrix {
    pub(crate) buffer: PooledBuffer,
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
    /// Opens the adapter `options` name (see [`crate::adapter`]) with the features and limits
    /// [`DeviceRequest`] asks for. Warns on stderr when the adapter is a CPU one.
    pub fn new(options: &ContextOptions) -> Result<WgpuContext> {
        let instance = adapter::instance(options);
        let adapter = adapter::select(&instance, options)?;
        let request = DeviceRequest::new(&adapter)?;
        let (device, queue) = pollster::block_on(
            adapter.request_device(&request.descriptor("moetile")),
        )
        .map_err(|source| WgpuError::RequestDevice {
            adapter: adapter.get_info().name,
            source,
        })?;
        let mut ctx = Self::from_device(&adapter, device, queue)?;
        if let Some(checks) = options.shader_checks {
            ctx.kernels = KernelCache::new(checks);
        }
        let lost = ctx.lost.clone();
        ctx.device.set_device_lost_callback(move |reason, message| {
            *lost.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(format!("{reason:?}: {message}"));
        });
        if ctx.profile.is_cpu() {
            eprintln!(
                "warning: moetile is running on a CPU adapter, {}: results are correct but \
                 orders of magnitude slower than on a GPU",
                ctx.profile.describe()
            );
        }
        Ok(ctx)
    }

    /// Wraps a device (and its queue) that an application created itself on `adapter`, ideally
    /// with [`DeviceRequest`]. moetile uses only the features and limits the device was
    /// created with: it checks them here and fails, naming the capability or limit, the value
    /// needed and the device's, when the kernels could not run (see
    /// [`crate::requirements`]). Optional features the device lacks only rule out what needs
    /// them (e.g. cooperative-matrix paths, see [`Profile::supports`]).
    ///
    /// The handles are shared, not taken over: moetile submits its own command buffers to the
    /// queue, catches its errors in its own (thread-local) error scopes, and never installs an
    /// uncaptured-error handler or a device-lost callback on the device. Its kernels run with
    /// the backend's default [`ShaderChecks`] ([`WgpuContext::new`] takes them from its
    /// options).
    pub fn from_device(
        adapter: &wgpu::Adapter,
        device: wgpu::Device,
        queue: wgpu::Queue,
    ) -> Result<Self> {
        let profile = Profile::new(adapter, device.features(), &device.limits());
        requirements::check_downlevel(adapter)?;
        if let Some((need, actual)) = requirements::unmet_limit(&profile.limits, Path::Reg) {
            return Err(WgpuError::DeviceLimit {
                adapter: profile.describe(),
                limit: need.limit.name(),
                needed: need.needed,
                actual,
                needed_by: need.needed_by,
            });
        }
        let kernels = KernelCache::new(ShaderChecks::default_for(profile.backend));
        Ok(WgpuContext {
            device,
            queue,
            profile,
            kernels,
            iq2xxs_grid: OnceLock::new(),
            pool: BufferPool::default(),
            arenas: Mutex::new(Vec::new()),
            lost: Arc::new(Mutex::new(None)),
        })
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

    /// Uploads a vector as a one-row F32 tensor (norm weights, biases): any length.
    pub fn upload_vector(&self, name: &str, values: &[f32]) -> Result<ExpertTensor> {
        self.check_size(name, (values.len() * 4) as u64)?;
        self.scoped(&format!("uploading {name}"), || {
            Ok(layout::upload_vector(&self.device, name, values))
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
        self.matrix_from_host_in(&self.pool, rows, cols, ty, data)
    }

    /// [`Self::matrix_from_host`] joining `pool` when dropped.
    pub(crate) fn matrix_from_host_in(
        &self,
        pool: &BufferPool,
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
        Ok(GpuMatrix {
            buffer: self.storage_init(pool, "matrix", &encode(ty, data))?,
            rows,
            cols,
            ty,
        })
    }

    /// A `rows x cols` matrix of `ty` with every element `value` (tests poison outputs with NaN).
    pub fn matrix_filled(
        &self,
        rows: usize,
        cols: usize,
        ty: ActType,
        value: f32,
    ) -> Result<GpuMatrix> {
        let m = self.matrix(rows, cols, ty, "matrix")?;
        self.fill(&m, value);
        Ok(m)
    }

    /// A `rows x cols` matrix of `ty` from the context's pool: its contents are whatever it
    /// last held.
    pub fn matrix(&self, rows: usize, cols: usize, ty: ActType, label: &str) -> Result<GpuMatrix> {
        self.matrix_in(&self.pool, rows, cols, ty, label)
    }

    /// [`Self::matrix`] from `pool`.
    pub(crate) fn matrix_in(
        &self,
        pool: &BufferPool,
        rows: usize,
        cols: usize,
        ty: ActType,
        label: &str,
    ) -> Result<GpuMatrix> {
        Ok(GpuMatrix {
            buffer: self.storage(
                pool,
                label,
                matrix_bytes(rows, cols, ty),
                wgpu::BufferUsages::empty(),
            )?,
            rows,
            cols,
            ty,
        })
    }

    /// Sets every element of `m` to `value`, through the queue (before any work submitted
    /// later; see the type's docs).
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
        let mut enc = self.encoder("readback");
        let staging = self.copy_for_readback(&mut enc, buffer, buffer.size())?;
        self.submit_encoder(enc)?;
        self.read_staging(&staging, buffer.size(), what)
    }

    /// Records a copy of the first `bytes` of `buffer` into a mappable staging buffer.
    pub(crate) fn copy_for_readback(
        &self,
        enc: &mut Encoder,
        buffer: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<PooledBuffer> {
        let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        self.check_size("readback staging", bytes)?;
        let staging = enc.pool.take(bytes, usage, |size| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size,
                usage,
                mapped_at_creation: false,
            })
        });
        enc.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
        Ok(staging)
    }

    /// Maps a staging buffer filled by submitted work and copies its first `bytes` out,
    /// waiting for the device.
    pub(crate) fn read_staging(
        &self,
        staging: &wgpu::Buffer,
        bytes: u64,
        what: &str,
    ) -> Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
            let _ = tx.send(r);
        });
        let fail = |message: String| match self.lost_reason() {
            Some(reason) => WgpuError::DeviceLost { reason },
            None => WgpuError::Readback {
                what: what.to_string(),
                message,
            },
        };
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| fail(e.to_string()))?;
        rx.recv()
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        let bytes = staging
            .get_mapped_range(..bytes)
            .map_err(|e| fail(e.to_string()))?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }

    /// Why the device was lost, if it was.
    pub fn lost_reason(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A storage buffer of at least `bytes` bytes from `pool`, with `extra` usages.
    pub(crate) fn storage(
        &self,
        pool: &BufferPool,
        label: &str,
        bytes: u64,
        extra: wgpu::BufferUsages,
    ) -> Result<PooledBuffer> {
        self.check_size(label, bytes)?;
        let usage = storage_usage() | extra;
        Ok(pool.take(bytes, usage, |size| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            })
        }))
    }

    /// A new storage buffer holding `data` (it joins `pool` when dropped). Host data always
    /// goes to a fresh buffer: a queue write into a pooled one could land before commands an
    /// open encoder recorded on it earlier.
    pub(crate) fn storage_init(
        &self,
        pool: &BufferPool,
        label: &str,
        data: &[u8],
    ) -> Result<PooledBuffer> {
        let data = padded(data.to_vec());
        self.check_size(label, data.len() as u64)?;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bucket(data.len() as u64),
            usage: storage_usage(),
            mapped_at_creation: true,
        });
        buffer
            .get_mapped_range_mut(..data.len() as u64)
            .map_err(|e| WgpuError::Gpu {
                op: format!("writing {label}"),
                message: e.to_string(),
            })?
            .copy_from_slice(&data);
        buffer.unmap();
        Ok(pool.adopt(buffer))
    }

    /// Refuses a buffer of `bytes` that the device cannot create or bind, naming `what`.
    pub fn check_size(&self, what: &str, bytes: u64) -> Result<()> {
        let p = &self.profile;
        let (limit, name) = if p.max_buffer < p.max_storage_binding {
            (p.max_buffer, "max_buffer_size")
        } else {
            (p.max_storage_binding, "max_storage_buffer_binding_size")
        };
        if bucket(bytes) > limit {
            return Err(WgpuError::TooLarge {
                what: what.to_string(),
                bytes,
                limit,
                limit_name: name,
                adapter: p.describe(),
            });
        }
        Ok(())
    }

    /// Frees the pool's idle buffers (they are reallocated on demand).
    pub fn release_idle_buffers(&self) {
        self.pool.clear();
    }

    /// Bytes held by the pool's idle buffers.
    pub fn idle_buffer_bytes(&self) -> u64 {
        self.pool.free_bytes()
    }

    /// A new encoder with a parameter arena from the context's free list and a fresh buffer
    /// pool for what its ops allocate.
    pub fn encoder(&self, label: &str) -> Encoder {
        self.encoder_in(label, BufferPool::default())
    }

    /// A new encoder allocating from `pool` (one stream's pool, see [`crate::pool`]).
    pub(crate) fn encoder_in(&self, label: &str, pool: BufferPool) -> Encoder {
        let arena = self
            .arenas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_else(|| {
                ParamArena::new(self.device.limits().min_uniform_buffer_offset_alignment)
            });
        Encoder::new(&self.device, label, arena, pool)
    }

    /// Writes the encoder's parameters, submits its commands and recycles its arena; wgpu
    /// errors of the submission come back as [`WgpuError::Gpu`].
    pub fn submit_encoder(&self, mut enc: Encoder) -> Result<()> {
        // Ending the open pass validates its commands: inside the error scopes.
        self.scoped("ending a compute pass", || {
            enc.end_pass();
            Ok(())
        })?;
        let Encoder {
            inner, mut arena, ..
        } = enc;
        self.scoped("submitting work", || {
            arena.flush(&self.queue);
            self.queue.submit([inner.finish()]);
            Ok(())
        })?;
        arena.reset();
        self.arenas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(arena);
        match self.lost_reason() {
            Some(reason) => Err(WgpuError::DeviceLost { reason }),
            None => Ok(()),
        }
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

/// `bytes` padded with zeros to a whole, non-zero number of words (a queue write's size must be
/// a multiple of 4).
fn padded(mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.resize(bytes.len().max(4).next_multiple_of(4), 0);
    bytes
}
