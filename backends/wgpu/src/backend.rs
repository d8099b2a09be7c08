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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moetile::model::{
    AttentionParams, Backend, ExpertActivation, ExpertWeights, GateUp, MoeParams, RopeParams,
    RouterParams, Stage, WeightData,
};
use moetile::tile::TileWidth;
use moetile_codegen::{ActType, EltOp, MatmulKey, Path, WeightType};

use crate::attention::{self, AttentionKernel, CacheSlot, KvCache, Qkv};
use crate::buffers::{Buffers, GpuMatrix};
use crate::context::WgpuContext;
use crate::encoder::Encoder;
use crate::error::WgpuError;
use crate::layout::ExpertTensor;
use crate::moe::{
    self, ExpertMap, Matmul, MoeBuffers, MoeInputs, MoeOptions, Routing, mat_vec_max_tokens,
};
use crate::ops::{self, rope_angles};
use crate::pool::{BufferPool, PooledBuffer};
use crate::profile::{ProfileReport, StageProfiler};
use crate::recorder::Recorder;

/// How the backend stores and computes what the model leaves open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendOptions {
    /// KV-cache storage: F16 (the default: half the memory, ~1e-3 relative error in attention)
    /// or F32 (exact, for verification).
    pub kv: ActType,
    /// Storage of the routed experts' intermediate `mid` (the input of `down`).
    pub mid: ActType,
    /// Matmul path of the grouped and dense matmuls (F32 weights always use `Path::Reg`).
    pub path: Path,
    /// Fill every output, intermediate and KV cache with NaN before kernels write them, so an
    /// element a kernel fails to write shows up (tests).
    pub poison: bool,
    /// The largest batch whose matmuls run the mat-vec kernels instead of the tiled ones
    /// (0: never); the default is [`mat_vec_max_tokens`] for the device.
    pub mat_vec_max_tokens: usize,
}

impl BackendOptions {
    /// The defaults on `ctx`: f16 KV cache, the `mid` type and fastest path
    /// [`MoeOptions::new`] picks for the device, no poisoning.
    pub fn for_device(ctx: &WgpuContext) -> BackendOptions {
        let moe = MoeOptions::new(
            ctx,
            &MoeParams {
                activation: ExpertActivation::SwiGlu,
                tile: TileWidth::T32,
            },
            usize::MAX,
        );
        BackendOptions {
            kv: ActType::F16,
            mid: moe.mid,
            path: moe.path,
            poison: false,
            mat_vec_max_tokens: mat_vec_max_tokens(ctx.profile(), moe.path),
        }
    }

    /// The exact configuration, which every device runs: f32 KV cache and `mid`, register
    /// tiles, mat-vec for single tokens (so decode steps take it on every adapter), no
    /// poisoning. It isolates kernel and driver errors from f16 rounding (`moetile verify`,
    /// whole-model tests).
    pub fn exact() -> BackendOptions {
        BackendOptions {
            kv: ActType::F32,
            mid: ActType::F32,
            path: Path::Reg,
            poison: false,
            mat_vec_max_tokens: 1,
        }
    }
}

/// Per batch length, what dense ops share: the one-expert routing and maps by tile width.
#[derive(Debug, Default)]
struct DenseCache {
    /// By (tokens, slices).
    routings: HashMap<(usize, usize), Arc<Routing>>,
    /// By (tokens, slices, tile).
    maps: HashMap<(usize, usize, TileWidth), Arc<ExpertMap>>,
}

/// Dispatch steps after which the open encoder is submitted, so the GPU starts on the first
/// layers while the host encodes the rest (a decode step of a 48-layer MoE is ~1000 steps, a
/// few microseconds of host time each) and the submissions' fixed costs stay small.
const SUBMIT_AFTER_STEPS: usize = 128;

/// Batch lengths whose dense routing and maps are kept (prefill chunks, decode).
const DENSE_CACHE_LENGTHS: usize = 8;

/// The angle table of the last rope call (q and k of every layer share it).
#[derive(Debug)]
struct RopeTable {
    pos0: usize,
    n_rows: usize,
    params: RopeParams,
    angles: PooledBuffer,
}

/// The wgpu backend. See the module docs.
#[derive(Debug)]
pub struct WgpuBackend {
    ctx: Arc<WgpuContext>,
    options: BackendOptions,
    /// This backend's buffers: one stream, so reuse is ordered (see `crate::pool`).
    pool: BufferPool,
    enc: Option<Encoder>,
    dense: DenseCache,
    rope: Option<RopeTable>,
    nan: Option<wgpu::Buffer>,
    profiler: Option<StageProfiler>,
    /// Host time in reads and submissions, for [`Self::take_host_times`].
    host: HostTimes,
}

/// Where a backend's host time went besides encoding: a forward pass's wall-clock time minus
/// `waiting` is the host's own work, of which `submitting` finished and submitted encoders.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HostTimes {
    /// Blocked on reads, waiting for the GPU.
    pub waiting: Duration,
    /// Finishing and submitting encoders (wgpu records the passes' commands then).
    pub submitting: Duration,
}

/// The tile width of dense matmuls over `n_tokens`: the widest not above the batch.
fn dense_tile(n_tokens: usize) -> TileWidth {
    TileWidth::ALL
        .into_iter()
        .rev()
        .find(|w| w.tokens() <= n_tokens)
        .unwrap_or(TileWidth::T32)
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
            rope: None,
            nan: None,
            profiler: None,
            host: HostTimes::default(),
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

    /// The routing of a dense op over `n_tokens` and a weight in `slices` slices (every
    /// token to every slice, weight 1).
    fn dense_routing(&mut self, n_tokens: usize, slices: usize) -> moetile::Result<Arc<Routing>> {
        if let Some(r) = self.dense.routings.get(&(n_tokens, slices)) {
            return Ok(r.clone());
        }
        if self.dense.routings.len() >= DENSE_CACHE_LENGTHS {
            self.dense = DenseCache::default();
        }
        let r = Arc::new(Routing::dense(&self.buffers(), n_tokens, slices)?);
        self.dense.routings.insert((n_tokens, slices), r.clone());
        Ok(r)
    }

    /// The map of a dense matmul over `n_tokens` and a weight in `slices` slices, in
    /// `tile`-token work items.
    fn dense_map(
        &mut self,
        n_tokens: usize,
        slices: usize,
        tile: TileWidth,
    ) -> moetile::Result<Arc<ExpertMap>> {
        let key = (n_tokens, slices, tile);
        if let Some(m) = self.dense.maps.get(&key) {
            return Ok(m.clone());
        }
        if self.dense.maps.len() >= DENSE_CACHE_LENGTHS {
            self.dense = DenseCache::default();
        }
        let map = Arc::new(ExpertMap::dense(&self.buffers(), n_tokens, slices, tile)?);
        self.dense.maps.insert(key, map.clone());
        Ok(map)
    }

    fn rope_table(&mut self, pos0: usize, n_rows: usize, p: &RopeParams) -> moetile::Result<()> {
        let fresh = self
            .rope
            .as_ref()
            .is_some_and(|r| r.pos0 == pos0 && r.n_rows == n_rows && r.params == *p);
        if !fresh {
            let angles = rope_angles(p, pos0, n_rows);
            self.rope = Some(RopeTable {
                pos0,
                n_rows,
                params: *p,
                angles: self
                    .buffers()
                    .storage_init("rope angles", bytemuck::cast_slice(&angles))?,
            });
        }
        Ok(())
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

    fn eltwise(
        &mut self,
        op: EltOp,
        dst: &GpuMatrix,
        src: &wgpu::Buffer,
        src_len: usize,
    ) -> moetile::Result<()> {
        self.record(op.name(), |rec| ops::eltwise(rec, op, dst, src, src_len))
    }
}

impl Backend for WgpuBackend {
    type Act = GpuMatrix;
    type Weight = ExpertTensor;
    type KvCache = KvCache;
    type Routing = Routing;

    fn describe(&self) -> String {
        format!(
            "wgpu on {} (KV {:?}, mid {:?}, {} path)",
            self.ctx.profile().describe(),
            self.options.kv,
            self.options.mid,
            self.options.path.name()
        )
    }

    fn mat_vec_max_tokens(&self) -> usize {
        self.options.mat_vec_max_tokens
    }

    fn stage(&mut self, stage: Stage, layer: Option<usize>) {
        if let Some(p) = &mut self.profiler {
            p.timer.set_stage(stage, layer);
        }
    }

    fn shape(&self, x: &GpuMatrix) -> (usize, usize) {
        (x.rows, x.cols)
    }

    fn act_from_host(
        &mut self,
        rows: usize,
        cols: usize,
        data: &[f32],
    ) -> moetile::Result<GpuMatrix> {
        Ok(self
            .buffers()
            .matrix_from_host(rows, cols, ActType::F32, data)?)
    }

    fn read(&mut self, x: &GpuMatrix) -> moetile::Result<Vec<f32>> {
        let n = x.rows * x.cols;
        let bytes = self.read_buffers("reading an activation", &[(&x.buffer, (n * 4) as u64)])?;
        Ok(bytemuck::cast_slice::<u8, f32>(&bytes[0])[..n].to_vec())
    }

    fn upload(&mut self, w: WeightData<'_>) -> moetile::Result<ExpertTensor> {
        if let [n] = *w.dims {
            let mut values = vec![0f32; n];
            moetile::quant::dequantize(w.ty, w.bytes, &mut values)?;
            return Ok(self.ctx.upload_vector(w.name, &values)?);
        }
        Ok(self.ctx.upload_experts(&w)?)
    }

    fn upload_gate_up(
        &mut self,
        gate: WeightData<'_>,
        up: WeightData<'_>,
    ) -> moetile::Result<GateUp<ExpertTensor>> {
        Ok(self.ctx.upload_gate_up(&gate, &up)?)
    }

    fn kv_cache(
        &mut self,
        n_layers: usize,
        n_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> moetile::Result<KvCache> {
        let kv = self.options.kv;
        let cache = KvCache::new(&self.ctx, n_layers, n_ctx, n_kv_heads, head_dim, kv)?;
        for b in cache.buffers() {
            self.poison(b, b.size());
        }
        Ok(cache)
    }

    fn embed(&mut self, table: &ExpertTensor, tokens: &[u32]) -> moetile::Result<GpuMatrix> {
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= table.dense_rows()) {
            return Err(shape(
                "embed",
                format!(
                    "token {bad} is outside the vocabulary of {}",
                    table.dense_rows()
                ),
            ));
        }
        if tokens.is_empty() {
            return Err(shape("embed", "no tokens".to_string()));
        }
        let ids = self
            .buffers()
            .storage_init("token ids", bytemuck::cast_slice(tokens))?;
        let out = self.output(tokens.len(), table.cols, "embedding")?;
        self.record("embed", |rec| ops::embed(rec, table, &ids, &out))?;
        Ok(out)
    }

    fn rms_norm(
        &mut self,
        x: &GpuMatrix,
        w: &ExpertTensor,
        eps: f32,
    ) -> moetile::Result<GpuMatrix> {
        let out = self.output(x.rows, x.cols, "rms_norm")?;
        self.record("rms_norm", |rec| ops::rms_norm(rec, x, None, w, eps, &out))?;
        Ok(out)
    }

    /// One dispatch: the norm kernel adds `y` into `x` as it first reads it.
    fn add_rms_norm(
        &mut self,
        x: &mut GpuMatrix,
        y: &GpuMatrix,
        w: &ExpertTensor,
        eps: f32,
    ) -> moetile::Result<GpuMatrix> {
        let out = self.output(x.rows, x.cols, "rms_norm")?;
        self.record("rms_norm_residual", |rec| {
            ops::rms_norm(rec, x, Some(y), w, eps, &out)
        })?;
        Ok(out)
    }

    /// One dispatch: the norm kernel's groups run over the heads of `q`, then of `k`.
    fn rms_norm_qk(
        &mut self,
        q: &GpuMatrix,
        k: &GpuMatrix,
        wq: &ExpertTensor,
        wk: &ExpertTensor,
        eps: f32,
    ) -> moetile::Result<(GpuMatrix, GpuMatrix)> {
        let out_q = self.output(q.rows, q.cols, "rms_norm")?;
        let out_k = self.output(k.rows, k.cols, "rms_norm")?;
        self.record("rms_norm_pair", |rec| {
            ops::rms_norm_pair(rec, [q, k], [wq, wk], eps, [&out_q, &out_k])
        })?;
        Ok((out_q, out_k))
    }

    /// A weight in slices (see [`ExpertTensor::slices`]) multiplies every token by every
    /// slice: the `(T * slices, rows)` pair rows are the `(T, slices * rows)` output.
    fn matmul(&mut self, x: &GpuMatrix, w: &ExpertTensor) -> moetile::Result<GpuMatrix> {
        if x.cols != w.cols || w.experts != w.slices || x.rows == 0 {
            return Err(shape(
                "matmul",
                format!(
                    "x is ({}, {}), {} is {} x {} x {}",
                    x.rows, x.cols, w.name, w.experts, w.rows, w.cols
                ),
            ));
        }
        let (n_tokens, slices) = (x.rows, w.slices);
        let mut out = self.output(n_tokens * slices, w.rows, "matmul")?;
        let mm = Matmul {
            w,
            act: x,
            act_row_div: slices,
            out: &out,
        };
        if n_tokens <= self.mat_vec_max_tokens() {
            let routing = self.dense_routing(n_tokens, slices)?;
            self.record("matmul", |rec| moe::mv_id(rec, &routing, mm))?;
        } else {
            let tile = dense_tile(n_tokens);
            let map = self.dense_map(n_tokens, slices, tile)?;
            let path = if w.weight == WeightType::F32 {
                Path::Reg
            } else {
                self.options.path
            };
            let key = MatmulKey {
                weight: w.weight,
                act: ActType::F32,
                tile,
                path,
            };
            self.record("matmul", |rec| moe::mm_id(rec, key, &map, mm))?;
        }
        (out.rows, out.cols) = (n_tokens, w.dense_rows());
        Ok(out)
    }

    fn add_bias(&mut self, x: &mut GpuMatrix, b: &ExpertTensor) -> moetile::Result<()> {
        if b.rows != 1 || b.experts != 1 {
            return Err(shape("add_bias", format!("{} is not a vector", b.name)));
        }
        self.eltwise(EltOp::AddRow, x, &b.chunks[0].buffer, b.cols)
    }

    fn rope(
        &mut self,
        x: &mut GpuMatrix,
        head_dim: usize,
        pos0: usize,
        p: &RopeParams,
    ) -> moetile::Result<()> {
        self.rope_table(pos0, x.rows, p)?;
        let angles = (*self.rope.as_ref().expect("built above").angles).clone();
        self.record("rope", |rec| ops::rope(rec, x, None, head_dim, p, &angles))
    }

    /// One dispatch: the rope kernel runs on pairs of `q` and of `k`.
    fn rope_qk(
        &mut self,
        q: &mut GpuMatrix,
        k: &mut GpuMatrix,
        head_dim: usize,
        pos0: usize,
        p: &RopeParams,
    ) -> moetile::Result<()> {
        self.rope_table(pos0, q.rows, p)?;
        let angles = (*self.rope.as_ref().expect("built above").angles).clone();
        self.record("rope_pair", |rec| {
            ops::rope(rec, q, Some(k), head_dim, p, &angles)
        })
    }

    fn attention(
        &mut self,
        q: &GpuMatrix,
        k: &GpuMatrix,
        v: &GpuMatrix,
        kv: &mut KvCache,
        layer: usize,
        pos0: usize,
        p: &AttentionParams,
    ) -> moetile::Result<GpuMatrix> {
        let end = pos0 + q.rows;
        if end > kv.n_ctx {
            return Err(moetile::Error::ContextFull {
                n_ctx: kv.n_ctx,
                needed: end,
            });
        }
        let out = self.output(q.rows, q.cols, "attention")?;
        let kernel = AttentionKernel::for_batch(self.ctx.profile(), q.rows);
        let slot = CacheSlot {
            cache: kv,
            layer,
            pos0,
        };
        self.record("attention", |rec| {
            attention::attend(rec, Qkv { q, k, v }, slot, p, kernel, &out)
        })?;
        Ok(out)
    }

    fn add(&mut self, x: &mut GpuMatrix, y: &GpuMatrix) -> moetile::Result<()> {
        if (x.rows, x.cols) != (y.rows, y.cols) {
            return Err(shape(
                "add",
                format!("({}, {}) vs ({}, {})", x.rows, x.cols, y.rows, y.cols),
            ));
        }
        self.eltwise(EltOp::Add, x, &y.buffer, y.rows * y.cols)
    }

    fn swiglu(&mut self, gate: &GpuMatrix, up: &GpuMatrix) -> moetile::Result<GpuMatrix> {
        let routing = self.dense_routing(gate.rows, 1)?;
        let out = self.output(gate.rows, gate.cols, "swiglu")?;
        self.record("swiglu", |rec| {
            moe::act(
                rec,
                GateUp::Separate { gate, up },
                &routing,
                ExpertActivation::SwiGlu,
                &out,
            )
        })?;
        Ok(out)
    }

    fn mul_sigmoid(&mut self, x: &mut GpuMatrix, g: &GpuMatrix) -> moetile::Result<()> {
        if g.cols != 1 || g.rows != x.rows {
            return Err(shape(
                "mul_sigmoid",
                format!("gate ({}, {}) for x with {} rows", g.rows, g.cols, x.rows),
            ));
        }
        self.eltwise(EltOp::MulSigmoidRow, x, &g.buffer, g.rows)
    }

    fn last_row(&mut self, x: &GpuMatrix) -> moetile::Result<GpuMatrix> {
        if x.rows == 0 {
            return Err(shape("last_row", "empty activation".to_string()));
        }
        let out = self.buffers().matrix(1, x.cols, ActType::F32, "last row")?;
        let row_bytes = (x.cols * 4) as u64;
        self.recorder().encoder().copy_buffer_to_buffer(
            &x.buffer,
            (x.rows as u64 - 1) * row_bytes,
            &out.buffer,
            0,
            row_bytes,
        );
        Ok(out)
    }

    fn route(&mut self, logits: &GpuMatrix, p: &RouterParams) -> moetile::Result<Routing> {
        self.record("route", |rec| ops::route(rec, logits, p))
    }

    fn routing_from_host(
        &mut self,
        n_experts: usize,
        k: usize,
        ids: &[u32],
        weights: &[f32],
    ) -> moetile::Result<Routing> {
        Ok(Routing::from_host(
            &self.buffers(),
            n_experts,
            k,
            ids,
            weights,
        )?)
    }

    fn read_routing(&mut self, r: &Routing) -> moetile::Result<(Vec<u32>, Vec<f32>)> {
        let n = r.n_pairs();
        let bytes = (n * 4) as u64;
        let out =
            self.read_buffers("reading a routing", &[(&r.ids, bytes), (&r.weights, bytes)])?;
        Ok((
            bytemuck::cast_slice::<u8, u32>(&out[0])[..n].to_vec(),
            bytemuck::cast_slice::<u8, f32>(&out[1])[..n].to_vec(),
        ))
    }

    fn moe(
        &mut self,
        x: &GpuMatrix,
        routing: &Routing,
        experts: ExpertWeights<'_, ExpertTensor>,
        p: &MoeParams,
    ) -> moetile::Result<GpuMatrix> {
        let opts = MoeOptions {
            path: self.options.path,
            mid: self.options.mid,
            mat_vec: x.rows <= self.mat_vec_max_tokens(),
            ..MoeOptions::new(&self.ctx, p, x.rows)
        };
        let inputs = MoeInputs {
            x,
            routing,
            experts,
        };
        // From this backend's pool: they are dropped while the encoder is still open.
        let bufs = MoeBuffers::new(&self.buffers(), &inputs, &opts)?;
        for m in bufs.all() {
            self.poison(&m.buffer, (m.rows * m.cols * m.ty.bytes()) as u64);
        }
        let out = self.output(x.rows, x.cols, "moe")?;
        self.record("moe", |rec| moe::layer(rec, &inputs, &opts, &bufs, &out))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_tiles_are_the_widest_not_above_the_batch() {
        assert_eq!(dense_tile(5), TileWidth::T32);
        assert_eq!(dense_tile(63), TileWidth::T32);
        assert_eq!(dense_tile(64), TileWidth::T64);
        assert_eq!(dense_tile(127), TileWidth::T64);
        assert_eq!(dense_tile(128), TileWidth::T128);
        assert_eq!(dense_tile(4096), TileWidth::T128);
    }
}
