//! [`WgpuContext`]: one device and queue, its capability [`Profile`], the kernel cache, and the
//! submissions every op ends in (encoders with parameter arenas, error scopes, device loss).
//! Buffers are `buffers.rs`, uploads `upload.rs`, readback and waits `readback.rs`, recording
//! `recorder.rs`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use moetile_codegen::Path;

use crate::adapter::{self, AdapterChoice, Profile};
use crate::encoder::{Encoder, ParamArena};
use crate::error::{Result, WgpuError};
use crate::kernels::{KernelCache, ShaderChecks};
use crate::pipelines::PipelineCacheFile;
use crate::pool::BufferPool;
use crate::recorder::Recorder;
use crate::requirements::{self, DeviceRequest};
use crate::timer::Timer;
use crate::tune::{AdapterId, TuningRecord};

/// A device with moetile's kernels; ops record on it through a [`Recorder`], and
/// [`crate::WgpuBackend`] wraps it as a `moetile::model::Backend`.
///
/// Buffers for activations and intermediates come from pools and return to them when dropped:
/// one pool per stream of work (a backend, an encoder), and the context's own for buffers made
/// outside encoders ([`WgpuContext::buffers`]). [`WgpuContext::fill`] writes through the queue,
/// so the write lands before any encoder submitted later runs: fill a matrix before recording
/// work on it.
#[derive(Debug)]
pub struct WgpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    profile: Profile,
    pub(crate) kernels: KernelCache,
    pub(crate) iq2xxs_grid: OnceLock<wgpu::Buffer>,
    pub(crate) pool: BufferPool,
    arenas: Mutex<Vec<ParamArena>>,
    lost: Arc<Mutex<Option<String>>>,
    options: ContextOptions,
    /// The adapter and driver's name for pipeline cache data, where the device keeps it.
    pipeline_cache_key: Option<String>,
    /// What the tuning record in [`ContextOptions::tuning_dir`] holds for this adapter.
    tuning: TuningRecord,
}

/// What a context is told rather than discovers: how [`WgpuContext::new`] finds and opens its
/// device (APIs, adapter, instance), and how any context runs (shader checks, waits, pipeline
/// cache). Nothing in moetile reads the environment but [`ContextOptions::from_env`], which the
/// CLI calls and embedders may call.
#[derive(Debug, Clone)]
pub struct ContextOptions {
    /// The adapter to open ([`WgpuContext::new`] only).
    pub adapter: AdapterChoice,
    /// The APIs searched, default all ([`WgpuContext::new`] only).
    pub backends: wgpu::Backends,
    /// The wgpu instance's flags: validation, debug labels... ([`WgpuContext::new`] only).
    pub instance_flags: wgpu::InstanceFlags,
    /// The wgpu instance's per-API options: DX12 shader compiler, GLES version...
    /// ([`WgpuContext::new`] only).
    pub backend_options: wgpu::BackendOptions,
    /// The runtime checks of the kernels; `None` is [`ShaderChecks::default_for`] the
    /// adapter's API.
    pub shader_checks: Option<ShaderChecks>,
    /// How long a wait for one submission may block before it fails with
    /// [`WgpuError::Timeout`]. The default, 60 s, covers the slowest kernels of the test
    /// suite on a CPU adapter; a GPU finishes a forward pass in milliseconds.
    pub wait_timeout: Duration,
    /// The folder where compiled pipelines are kept between runs on devices with
    /// `PIPELINE_CACHE` (see [`WgpuContext::prepare_kernels`]); `None` keeps them in memory
    /// only. The library never picks one itself: the CLI passes the user's cache folder.
    pub pipeline_cache_dir: Option<PathBuf>,
    /// The folder of the tuning record `moetile tune` writes ([`crate::tune`]): the tile caps
    /// measured on this adapter ([`crate::WgpuBackend::tuned_tile_cap`]) and the matmul paths
    /// found wrong on it, which the context then does not run ([`Profile::supports`] says
    /// why). `None` reads no record. The CLI passes the user's cache folder.
    pub tuning_dir: Option<PathBuf>,
}

impl Default for ContextOptions {
    fn default() -> ContextOptions {
        ContextOptions {
            adapter: AdapterChoice::Default,
            backends: wgpu::Backends::all(),
            instance_flags: wgpu::InstanceFlags::default(),
            backend_options: wgpu::BackendOptions::default(),
            shader_checks: None,
            wait_timeout: Duration::from_secs(60),
            pipeline_cache_dir: None,
            tuning_dir: None,
        }
    }
}

impl ContextOptions {
    /// The defaults, with what the environment sets: the APIs from `WGPU_BACKEND`, the
    /// instance from wgpu's own variables (`WGPU_VALIDATION`, `WGPU_DX12_COMPILER`...), the
    /// shader checks from `MOETILE_SHADER_CHECKS` (an invalid value is an error naming the
    /// accepted ones). Settings given explicitly (a command-line flag) go over them: overwrite
    /// the fields they set.
    pub fn from_env() -> Result<ContextOptions> {
        Ok(ContextOptions {
            backends: wgpu::Backends::all().with_env(),
            instance_flags: wgpu::InstanceFlags::default().with_env(),
            backend_options: wgpu::BackendOptions::default().with_env(),
            shader_checks: std::env::var(ShaderChecks::ENV)
                .ok()
                .map(|v| ShaderChecks::parse_env(&v))
                .transpose()?,
            ..ContextOptions::default()
        })
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
        let ctx = Self::from_device(&adapter, device, queue)?.with_options(options.clone());
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
    /// the backend's default [`ShaderChecks`] unless [`WgpuContext::with_options`] sets
    /// others.
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
        let pipeline_cache_key = device
            .features()
            .contains(wgpu::Features::PIPELINE_CACHE)
            .then(|| wgpu::util::pipeline_cache_key(&adapter.get_info()))
            .flatten();
        Ok(WgpuContext {
            device,
            queue,
            profile,
            kernels,
            iq2xxs_grid: OnceLock::new(),
            pool: BufferPool::default(),
            arenas: Mutex::new(Vec::new()),
            lost: Arc::new(Mutex::new(None)),
            options: ContextOptions::default(),
            pipeline_cache_key,
            tuning: TuningRecord::default(),
        })
    }

    /// The context with `options` instead of [`ContextOptions::default`] (their shader checks,
    /// waits, pipeline cache and tuning record; the adapter fields only matter to
    /// [`WgpuContext::new`]). Call it before recording: kernels created earlier are dropped.
    /// What the tuning record holds that cannot be used is ignored with a warning on stderr.
    pub fn with_options(self, options: ContextOptions) -> WgpuContext {
        let checks = options
            .shader_checks
            .unwrap_or(ShaderChecks::default_for(self.profile.backend));
        let file = options
            .pipeline_cache_dir
            .as_deref()
            .zip(self.pipeline_cache_key.as_deref())
            .map(|(dir, key)| PipelineCacheFile::open(&self.device, dir, key));
        let record = TuningRecord::load_or_default(options.tuning_dir.as_deref());
        let tuning = record.of_adapter(&AdapterId::of(&self.profile));
        let mut profile = self.profile.clone();
        for unusable in &tuning.unusable {
            profile.avoid(unusable);
        }
        WgpuContext {
            kernels: KernelCache::new(checks).with_pipeline_cache(file),
            options,
            profile,
            tuning,
            ..self
        }
    }

    /// What the tuning record ([`ContextOptions::tuning_dir`]) holds for this adapter: tuned
    /// widths and the paths found wrong on it.
    pub fn tuning(&self) -> &TuningRecord {
        &self.tuning
    }

    /// Whether compiled pipelines are kept on disk (a cache folder was given and the device
    /// has `PIPELINE_CACHE`).
    pub fn caches_pipelines(&self) -> bool {
        self.kernels.pipeline_cache().is_some()
    }

    /// The options in use.
    pub fn options(&self) -> &ContextOptions {
        &self.options
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

    /// Why the device was lost, if it was.
    pub fn lost_reason(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records with `f` into a fresh encoder (with a buffer pool of its own) and submits it,
    /// inside error scopes naming `op`. The way to run ops outside a [`crate::WgpuBackend`].
    pub fn record<T>(&self, op: &str, f: impl FnOnce(&mut Recorder<'_>) -> Result<T>) -> Result<T> {
        Ok(self.record_timed(op, None, f)?.0)
    }

    /// [`Self::record`], timing every pass with `timer` when given (its timestamps resolved
    /// into the same submission); also returns the submission, to wait for.
    pub(crate) fn record_timed<T>(
        &self,
        op: &str,
        mut timer: Option<&mut Timer>,
        f: impl FnOnce(&mut Recorder<'_>) -> Result<T>,
    ) -> Result<(T, wgpu::SubmissionIndex)> {
        self.scoped(op, || {
            let mut enc = self.encoder(op, BufferPool::default());
            let value = f(&mut Recorder::new(self, &mut enc, timer.as_deref_mut()))?;
            if let Some(t) = timer {
                t.resolve(&mut enc);
            }
            Ok((value, self.submit_encoder(enc)?))
        })
    }

    /// A new encoder with a parameter arena from the context's free list, allocating from
    /// `pool` (one stream's pool, see [`crate::pool`]).
    pub(crate) fn encoder(&self, label: &str, pool: BufferPool) -> Encoder {
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
    pub(crate) fn submit_encoder(&self, mut enc: Encoder) -> Result<wgpu::SubmissionIndex> {
        // Ending the open pass validates its commands: inside the error scopes.
        self.scoped("ending a compute pass", || {
            enc.end_pass();
            Ok(())
        })?;
        let Encoder {
            inner, mut arena, ..
        } = enc;
        let index = self.scoped("submitting work", || {
            arena.flush(&self.queue);
            Ok(self.queue.submit([inner.finish()]))
        })?;
        arena.reset();
        self.arenas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(arena);
        match self.lost_reason() {
            Some(reason) => Err(WgpuError::DeviceLost { reason }),
            None => Ok(index),
        }
    }

    /// Runs `f` inside validation and out-of-memory error scopes: a wgpu error becomes
    /// [`WgpuError::Gpu`] naming `op` instead of a panic in wgpu's default handler.
    pub(crate) fn scoped<T>(&self, op: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let result = f();
        let errors = [validation.pop(), oom.pop()].map(popped);
        if let Some(e) = errors.into_iter().flatten().next() {
            return Err(WgpuError::Gpu {
                op: op.to_string(),
                message: e.to_string(),
            });
        }
        result
    }
}

/// The error of a popped error scope. wgpu-core's pops are ready at once: polling them once
/// with a no-op waker skips `pollster::block_on`'s per-call signal, ~8% of the host's
/// instructions in a decode step (two pops per op); a pending one is waited for.
fn popped(pop: impl Future<Output = Option<wgpu::Error>>) -> Option<wgpu::Error> {
    let mut pop = std::pin::pin!(pop);
    match pop
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(error) => error,
        std::task::Poll::Pending => pollster::block_on(pop),
    }
}
