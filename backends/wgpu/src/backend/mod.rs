//! [`WgpuBackend`]: `moetile::model::Backend` on a [`WgpuContext`], so the one forward graph
//! runs on the GPU.
//!
//! Every op records into one open encoder through a [`Recorder`]; [`Backend::read`] (and `read_routing`) submit
//! it with a copy of the result and map that, so a forward pass is one submission. Outputs come
//! from the context's buffer pool, parameters from the encoder's arena. Each op runs inside
//! wgpu error scopes, so validation and out-of-memory errors come back as
//! [`WgpuError::Gpu`] naming the op (inside `moetile::Error::Backend`).
//!
//! Dense projections are one-expert grouped matmuls: `mv_id` for batches of at most
//! [`mat_vec_max_tokens`] tokens (decode, the output head of a `Logits::Last` pass), else
//! `mm_id` over a host-built map listing the batch's tokens, in tiles of the widest width not
//! above the batch. F32 weights (routers, norms used as a row) always take the register path,
//! whose f32 arithmetic keeps router logits exact enough not to flip routing near ties.

mod batch;
mod deepseek4;
mod ops;
mod options;

pub use options::BackendOptions;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moetile_codegen::ActType;

use crate::buffers::{Buffers, GpuMatrix};
use crate::context::WgpuContext;
use crate::encoder::Encoder;
use crate::error::WgpuError;
use crate::plan::WeightUse;
use crate::pool::{BufferPool, PooledBuffer};
use crate::profile::{ProfileReport, StageProfiler};
use crate::recorder::Recorder;
use batch::{DenseCache, RopeTable};

/// Dispatch steps after which the open encoder is submitted, so the GPU starts on the first
/// layers while the host encodes the rest (a decode step of a 48-layer MoE is ~460 steps, a
/// few microseconds of host time each) and the submissions' fixed costs stay small. Submitting
/// the first 8 steps after a read and doubling from there measured 6% slower at tg128 on the
/// H100 (`bench/decode-h100/run-10`): a submission costs more than the ~0.6 ms the GPU waits
/// for the first 128 steps.
const SUBMIT_AFTER_STEPS: usize = 128;

/// The wgpu backend. See the module docs.
#[derive(Debug)]
pub struct WgpuBackend {
    ctx: Arc<WgpuContext>,
    options: BackendOptions,
    /// This backend's buffers: one stream, so reuse is ordered (see `crate::pool`).
    pool: BufferPool,
    enc: Option<Encoder>,
    dense: DenseCache,
    rope: Vec<RopeTable>,
    /// The last batched decode's sequence table and its upload
    /// ([`crate::attention::seq_table`]): every layer of a step reads the same one.
    seq_table: Option<(Vec<[u32; 2]>, PooledBuffer)>,
    nan: Option<wgpu::Buffer>,
    profiler: Option<StageProfiler>,
    /// Host time in reads and submissions, for [`Self::take_host_times`].
    host: HostTimes,
    /// How the uploaded weights are multiplied by: what [`Backend::prepare`] compiles for.
    weight_uses: BTreeSet<WeightUse>,
}

/// Where a backend's host time went besides encoding: a forward pass's wall-clock time minus
/// `waiting` is the host's own work, of which `submitting` finished and submitted encoders.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostTimes {
    /// Blocked on reads, waiting for the GPU.
    pub waiting: Duration,
    /// Finishing and submitting encoders (wgpu records the passes' commands then).
    pub submitting: Duration,
    /// Dispatch steps recorded (one per kernel pass an op records; a weight split over several
    /// bindings dispatches once per part in one step).
    pub dispatches: usize,
}

fn shape(op: &str, detail: String) -> moetile::Error {
    moetile::Error::Shape {
        op: op.to_string(),
        detail,
    }
}

impl WgpuBackend {
    /// A backend on `ctx` with [`BackendOptions::for_device`] (which the device always runs).
    pub fn new(ctx: Arc<WgpuContext>) -> WgpuBackend {
        let options = BackendOptions::for_device(&ctx);
        Self::unchecked(ctx, options)
    }

    /// A backend on `ctx` with `options`; fails with [`WgpuError::MissingFeature`], naming
    /// what the device lacks and how to get it, when it cannot run them (a cooperative-matrix
    /// path on a device created without the features or limits it needs).
    pub fn with_options(
        ctx: Arc<WgpuContext>,
        options: BackendOptions,
    ) -> Result<WgpuBackend, WgpuError> {
        if let Err(why) = ctx.profile().supports(options.path) {
            return Err(WgpuError::MissingFeature {
                adapter: ctx.profile().describe(),
                what: format!("BackendOptions {{ path: Path::{:?}, .. }}", options.path),
                feature: why,
                fix: "create the device with moetile_wgpu::requirements::DeviceRequest, which \
                      asks for every feature the adapter has, or use Path::Reg",
            });
        }
        Ok(Self::unchecked(ctx, options))
    }

    fn unchecked(ctx: Arc<WgpuContext>, options: BackendOptions) -> WgpuBackend {
        WgpuBackend {
            ctx,
            options,
            pool: BufferPool::default(),
            enc: None,
            dense: DenseCache::default(),
            rope: Vec::new(),
            seq_table: None,
            nan: None,
            profiler: None,
            host: HostTimes::default(),
            weight_uses: BTreeSet::new(),
        }
    }

    /// The context.
    pub fn context(&self) -> &Arc<WgpuContext> {
        &self.ctx
    }

    /// The options in use.
    pub fn options(&self) -> &BackendOptions {
        &self.options
    }

    /// The tile cap `moetile tune` measured for `config`'s model (in `file`) on this adapter
    /// and this backend's matmul path, from the context's tuning record
    /// ([`crate::ContextOptions::tuning_dir`]); `None` unless every routed-expert matmul of
    /// the model was tuned. Pass it as `moetile::RuntimeConfig::tuned_tile_max`: an explicit
    /// cap and `MOETILE_TILE_MAX` still go over it.
    pub fn tuned_tile_cap(
        &self,
        file: &moetile::gguf::GgufFile,
        config: &moetile::model::ModelConfig,
    ) -> moetile::Result<Option<moetile::tile::TileWidth>> {
        let matmuls = crate::tune::expert_matmuls(file, config, self.options.mid)?;
        let adapter = crate::tune::AdapterId::of(self.ctx.profile());
        Ok(self
            .ctx
            .tuning()
            .tuned_cap(&adapter, self.options.path, &matmuls))
    }

    /// Starts (or stops) timing every pass by stage; fails, saying why, on devices without
    /// timestamp queries.
    pub fn set_profiling(&mut self, on: bool) -> Result<(), WgpuError> {
        self.profiler = if on {
            Some(StageProfiler::new(&self.ctx)?)
        } else {
            None
        };
        Ok(())
    }

    /// GPU time per stage of the work read back since profiling started or this was last
    /// called; `None` when profiling is off.
    pub fn take_profile(&mut self) -> Option<ProfileReport> {
        let adapter = self.ctx.profile().describe();
        self.profiler.as_mut().map(|p| p.take(adapter))
    }

    /// Host time spent waiting for the GPU and submitting since the last call.
    pub fn take_host_times(&mut self) -> HostTimes {
        std::mem::take(&mut self.host)
    }

    /// Submits the open encoder, if any (reads do this themselves).
    pub fn flush(&mut self) -> moetile::Result<()> {
        if let Some(enc) = self.enc.take() {
            self.submit(enc)?;
        }
        Ok(())
    }

    /// Resolves the profiler's timestamps into `enc`, submits it and collects the timings.
    fn submit(&mut self, mut enc: Encoder) -> Result<wgpu::SubmissionIndex, WgpuError> {
        if let Some(p) = &self.profiler {
            p.timer.resolve(&mut enc);
        }
        self.host.dispatches += enc.steps;
        let start = Instant::now();
        let submission = self.ctx.submit_encoder(enc)?;
        self.host.submitting += start.elapsed();
        if let Some(p) = &mut self.profiler {
            p.collect(&self.ctx)?;
        }
        Ok(submission)
    }

    /// A recorder on the open encoder (opened here if none is) with the profiler's timer.
    fn recorder(&mut self) -> Recorder<'_> {
        let ctx = &*self.ctx;
        let enc = self
            .enc
            .get_or_insert_with(|| ctx.encoder("moetile forward", self.pool.clone()));
        Recorder::new(ctx, enc, self.profiler.as_mut().map(|p| &mut p.timer))
    }

    /// Allocation from this backend's pool.
    fn buffers(&self) -> Buffers<'_> {
        Buffers {
            ctx: &self.ctx,
            pool: &self.pool,
        }
    }

    /// Runs `f` on the open encoder inside error scopes naming `op`; submits the encoder once
    /// it holds [`SUBMIT_AFTER_STEPS`] dispatch steps.
    fn record<T>(
        &mut self,
        op: &str,
        f: impl FnOnce(&mut Recorder<'_>) -> Result<T, WgpuError>,
    ) -> moetile::Result<T> {
        let ctx = self.ctx.clone();
        let out = ctx.scoped(op, || f(&mut self.recorder()))?;
        if let Some(enc) = self.enc.take_if(|e| e.steps >= SUBMIT_AFTER_STEPS) {
            self.submit(enc)?;
        }
        Ok(out)
    }

    /// Records NaN over the first `bytes` of `buffer` when poisoning.
    fn poison(&mut self, buffer: &wgpu::Buffer, bytes: u64) {
        if !self.options.poison || bytes == 0 {
            return;
        }
        let bytes = bytes.next_multiple_of(4);
        if self.nan.as_ref().is_none_or(|n| n.size() < bytes) {
            self.nan = Some(self.ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("moetile NaN"),
                size: bytes.next_power_of_two(),
                usage: wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: true,
            }));
            let nan = self.nan.as_ref().expect("set above");
            let ones = vec![0xffu8; nan.size() as usize];
            nan.get_mapped_range_mut(..)
                .expect("mapped at creation")
                .copy_from_slice(&ones);
            nan.unmap();
        }
        let nan = self.nan.clone().expect("set above");
        self.recorder()
            .encoder()
            .copy_buffer_to_buffer(&nan, 0, buffer, 0, bytes);
    }

    /// An f32 output matrix from the pool (poisoned when asked).
    fn output(&mut self, rows: usize, cols: usize, label: &str) -> moetile::Result<GpuMatrix> {
        let m = self.buffers().matrix(rows, cols, ActType::F32, label)?;
        self.poison(&m.buffer, (rows * cols * 4) as u64);
        Ok(m)
    }

    /// Submits the open encoder with copies of `buffers` (`(buffer, bytes)`) and returns their
    /// bytes.
    fn read_buffers(
        &mut self,
        what: &str,
        buffers: &[(&wgpu::Buffer, u64)],
    ) -> moetile::Result<Vec<Vec<u8>>> {
        let ctx = self.ctx.clone();
        let mut enc = self
            .enc
            .take()
            .unwrap_or_else(|| ctx.encoder(what, self.pool.clone()));
        let staging = buffers
            .iter()
            .map(|(b, bytes)| ctx.copy_for_readback(&mut enc, b, (*bytes).max(4)))
            .collect::<Result<Vec<_>, _>>()?;
        let submission = self.submit(enc)?;
        let start = Instant::now();
        let bytes = staging
            .iter()
            .zip(buffers)
            .map(|(s, (_, bytes))| ctx.read_staging(s, (*bytes).max(4), what, &submission))
            .collect::<Result<Vec<_>, _>>()?;
        self.host.waiting += start.elapsed();
        Ok(bytes)
    }
}
