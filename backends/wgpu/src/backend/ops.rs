//! `moetile::model::Backend` on the recorder: each op checks what the trait leaves to the
//! backend, takes its outputs from the backend's pool and records its kernels.

use std::ops::Range;

use moetile::model::deepseek4::{AttentionWeights as Deepseek4Attention, Deepseek4Config};
use moetile::model::gptoss::{GptOssAttentionParams, Yarn};
use moetile::model::qwen35moe::{DeltaNetWeights, Qwen35MoeConfig};
use moetile::model::{
    AttentionParams, Backend, DeltaNetParams, ExpertActivation, ExpertBiases, ExpertWeights,
    GateUp, HC_MIXES, HC_STREAMS, HyperParams, HyperWeights, ModelConfig, MoeParams, PoolParams,
    PoolWeights, PreNorm, RouterParams, Selection, Stage, WeightData, hashed_ids,
};
use moetile_codegen::{ActType, DELTA_CHUNK, DELTA_WY_FLOATS, EltOp, WeightType};

use super::{WgpuBackend, shape};
use crate::attention::{self, AttentionKernel, AttnInputs, CacheSlot, KvCache};
use crate::buffers::GpuMatrix;
use crate::deepseek4::Deepseek4Cache;
use crate::delta_net::{self, DeltaNetBuffers, DeltaNetScratch};
use crate::error::WgpuError;
use crate::layout::ExpertTensor;
use crate::moe::{self, MoeBuffers, MoeInputs, MoeOptions, MoePlan, MvExtras, Routing, RowNorm};
use crate::ops;
use crate::plan::{WeightUse, model_kernels};

/// What a layer's attention adds to [`AttentionParams`]: qwen3's per-head q/k norms; gpt-oss's
/// YaRN, per-head sinks and sliding window.
struct LayerAttention<'w> {
    qk_norm: Option<[&'w ExpertTensor; 2]>,
    yarn: Yarn,
    sinks: Option<&'w ExpertTensor>,
    window: Option<usize>,
}

impl<'w> LayerAttention<'w> {
    /// Attention over every earlier position with a plain rotation.
    fn plain(qk_norm: Option<[&'w ExpertTensor; 2]>) -> Self {
        LayerAttention {
            qk_norm,
            yarn: Yarn::NONE,
            sinks: None,
            window: None,
        }
    }

    /// gpt-oss's: sinks, its layer's window and a YaRN table, no q/k norms.
    fn gptoss(sinks: &'w ExpertTensor, p: &GptOssAttentionParams) -> Self {
        LayerAttention {
            qk_norm: None,
            yarn: p.yarn,
            sinks: Some(sinks),
            window: p.window,
        }
    }
}

/// A layer's [`LayerAttention`] as device buffers.
struct LayerBuffers {
    qk_norm: Option<[wgpu::Buffer; 2]>,
    sinks: Option<wgpu::Buffer>,
    window: Option<usize>,
}

impl LayerBuffers {
    /// The attention inputs of `rows` of `qkv` with these and `angles`.
    fn inputs<'a>(
        &'a self,
        qkv: &'a GpuMatrix,
        rows: Range<usize>,
        angles: &'a wgpu::Buffer,
    ) -> AttnInputs<'a> {
        AttnInputs {
            qkv,
            rows,
            angles,
            qk_norm: self.qk_norm.as_ref().map(|[q, k]| [q, k]),
            sinks: self.sinks.as_ref(),
            window: self.window,
        }
    }
}

/// A sequence's DeltaNet state to continue: `layer` of `kv`, whose next token is at `pos0`.
struct DeltaSlot<'c> {
    kv: &'c mut KvCache,
    layer: usize,
    pos0: usize,
}

/// Checks a batch of `rows` rows of different sequences (`op`): a cache and a position per
/// row, each with room for its token; before recording any row, so a refused batch leaves
/// every cache as it was.
fn check_batch(
    op: &str,
    rows: usize,
    kvs: &[&mut KvCache],
    positions: &[usize],
) -> moetile::Result<()> {
    if kvs.len() != rows || positions.len() != rows {
        return Err(shape(
            op,
            format!(
                "{rows} rows, {} caches, {} positions",
                kvs.len(),
                positions.len()
            ),
        ));
    }
    match kvs
        .iter()
        .zip(positions)
        .find(|(kv, pos)| **pos >= kv.n_ctx)
    {
        Some((kv, &pos)) => Err(moetile::Error::ContextFull {
            n_ctx: kv.n_ctx,
            needed: pos + 1,
        }),
        None => Ok(()),
    }
}

/// The refusal of a DeltaNet on a cache without DeltaNet state.
fn not_qwen35moe_cache() -> moetile::Error {
    shape(
        "delta_net",
        "the cache is not qwen35moe's; make it with Backend::qwen35moe_cache".into(),
    )
}

impl WgpuBackend {
    fn eltwise(
        &mut self,
        op: EltOp,
        dst: &GpuMatrix,
        src: &wgpu::Buffer,
        src_len: usize,
    ) -> moetile::Result<()> {
        self.record(op.name(), |rec| ops::eltwise(rec, op, dst, src, src_len))
    }

    /// The convolved q|k|v scratch `(rows, channels)` and the output `(rows, values)` of a
    /// DeltaNet over `rows` projection rows.
    fn delta_outputs(
        &mut self,
        rows: usize,
        p: &DeltaNetParams,
    ) -> moetile::Result<(GpuMatrix, GpuMatrix)> {
        let d = &p.shape;
        let x = self.output(rows, d.conv_channels(), "convolved qkv")?;
        let out = self.output(rows, d.value_width(), "delta_net")?;
        Ok((x, out))
    }

    /// Records the Gated DeltaNet of `rows` of `proj` at `slot` into the same rows of `x` (the
    /// convolved q|k|v) and `out`; refuses positions past the cache as a full context.
    #[allow(clippy::too_many_arguments)]
    fn delta_rows(
        &mut self,
        proj: &GpuMatrix,
        rows: Range<usize>,
        w: &DeltaNetWeights<ExpertTensor>,
        slot: DeltaSlot<'_>,
        p: &DeltaNetParams,
        x: &GpuMatrix,
        out: &GpuMatrix,
    ) -> moetile::Result<()> {
        let DeltaSlot { kv, layer, pos0 } = slot;
        let end = pos0 + rows.len();
        if end > kv.n_ctx {
            return Err(moetile::Error::ContextFull {
                n_ctx: kv.n_ctx,
                needed: end,
            });
        }
        let Some(state) = kv.delta_net.as_mut() else {
            return Err(not_qwen35moe_cache());
        };
        let d = &p.shape;
        let conv = &w.conv;
        if conv.weight != WeightType::F32
            || (conv.rows, conv.cols) != (d.conv_channels(), d.conv_taps)
        {
            return Err(shape(
                "delta_net",
                format!(
                    "{} is {} x {} {}; the layer needs {} x {} f32 taps",
                    conv.name,
                    conv.rows,
                    conv.cols,
                    conv.weight,
                    d.conv_channels(),
                    d.conv_taps
                ),
            ));
        }
        let buffers = DeltaNetBuffers {
            conv: &conv.chunks[0].buffer,
            dt_bias: ops::vector("delta_net", &w.dt_bias)?,
            a: ops::vector("delta_net", &w.a)?,
            norm: ops::vector("delta_net", &w.norm)?,
        };
        let wy = if self.options.chunked_delta_net && rows.len() > 1 {
            let chunks = rows.len().div_ceil(DELTA_CHUNK as usize);
            let wy_rows = d.n_v_heads * chunks;
            Some(self.output(wy_rows, DELTA_WY_FLOATS as usize, "delta_net chunks")?)
        } else {
            None
        };
        let scratch = DeltaNetScratch { x, wy: wy.as_ref() };
        self.record("delta_net", |rec| {
            delta_net::delta_net(
                rec, proj, rows, buffers, state, layer, pos0, p, scratch, out,
            )
        })
    }

    /// The attention of every row of `qkv`, one sequence at positions `pos0..` of `layer` of
    /// `kv`, as `with` says.
    fn attend_all(
        &mut self,
        qkv: &GpuMatrix,
        with: &LayerAttention<'_>,
        kv: &KvCache,
        layer: usize,
        pos0: usize,
        p: &AttentionParams,
    ) -> moetile::Result<GpuMatrix> {
        let out = self.output(qkv.rows, p.n_heads * p.head_dim, "attention")?;
        let slot = CacheSlot {
            cache: kv,
            layer,
            pos0,
        };
        self.attend_rows(qkv, 0..qkv.rows, with, slot, p, &out)?;
        Ok(out)
    }

    /// The attention of row i of `qkv`, the next token of the sequence of `kvs[i]` at
    /// `positions[i]`, recorded into the open encoder, so the rows never pass through host
    /// memory: one set of dispatches for all rows when their caches are regions of one arena
    /// ([`attention::attend_seqs`]), else one set per row.
    fn attend_each(
        &mut self,
        qkv: &GpuMatrix,
        with: &LayerAttention<'_>,
        kvs: &mut [&mut KvCache],
        positions: &[usize],
        layer: usize,
        p: &AttentionParams,
    ) -> moetile::Result<GpuMatrix> {
        check_batch("attention_batch", qkv.rows, kvs, positions)?;
        let out = self.output(qkv.rows, p.n_heads * p.head_dim, "attention")?;
        let slots: Vec<CacheSlot<'_>> = kvs
            .iter()
            .zip(positions)
            .map(|(kv, &pos0)| CacheSlot {
                cache: kv,
                layer,
                pos0,
            })
            .collect();
        let end = positions.iter().max().map_or(1, |&p| p + 1);
        if slots.len() > 1
            && slots.iter().all(|s| s.cache.shares_layer(kvs[0], layer))
            && attention::seqs_fit(&self.ctx, kvs[0], slots.len(), end, p)
        {
            let table = attention::seq_table(&slots);
            if self.seq_table.as_ref().is_none_or(|(t, _)| *t != table) {
                let upload = self
                    .buffers()
                    .storage_init("attention sequences", bytemuck::cast_slice(&table))?;
                self.seq_table = Some((table, upload));
            }
            let seqs = (*self.seq_table.as_ref().expect("set above").1).clone();
            let (angles, with) = self.attention_inputs(end, with, p)?;
            let inputs = with.inputs(qkv, 0..qkv.rows, &angles);
            self.record("attention", |rec| {
                attention::attend_seqs(rec, inputs, &slots, &seqs, p, &out)
            })?;
            return Ok(out);
        }
        for (row, slot) in slots.into_iter().enumerate() {
            self.attend_rows(qkv, row..row + 1, with, slot, p, &out)?;
        }
        Ok(out)
    }

    /// The rotary table of positions `0..end` and the device buffers of `layer`'s norms and
    /// sinks.
    fn attention_inputs(
        &mut self,
        end: usize,
        layer: &LayerAttention<'_>,
        p: &AttentionParams,
    ) -> moetile::Result<(wgpu::Buffer, LayerBuffers)> {
        let qk_norm = match layer.qk_norm {
            Some([wq, wk]) => Some([
                ops::vector("q norm", wq)?.clone(),
                ops::vector("k norm", wk)?.clone(),
            ]),
            None => None,
        };
        let sinks = match layer.sinks {
            Some(s) => Some(ops::vector("attention sinks", s)?.clone()),
            None => None,
        };
        let angles = self.rope_table(end, &p.rope, &layer.yarn)?;
        let buffers = LayerBuffers {
            qk_norm,
            sinks,
            window: layer.window,
        };
        Ok((angles, buffers))
    }

    /// Records the attention of `rows` of `qkv` at `slot` into the same rows of `out`, with
    /// the kernels for that many tokens; refuses positions past the cache as a full context.
    fn attend_rows(
        &mut self,
        qkv: &GpuMatrix,
        rows: Range<usize>,
        layer: &LayerAttention<'_>,
        slot: CacheSlot<'_>,
        p: &AttentionParams,
        out: &GpuMatrix,
    ) -> moetile::Result<()> {
        let end = slot.pos0 + rows.len();
        if end > slot.cache.n_ctx {
            return Err(moetile::Error::ContextFull {
                n_ctx: slot.cache.n_ctx,
                needed: end,
            });
        }
        let (angles, with) = self.attention_inputs(end, layer, p)?;
        let kernel = AttentionKernel::for_batch(rows.len());
        let inputs = with.inputs(qkv, rows, &angles);
        self.record("attention", |rec| {
            attention::attend(rec, inputs, slot, p, kernel, out)
        })
    }
}

impl Backend for WgpuBackend {
    type Act = GpuMatrix;
    type Weight = ExpertTensor;
    type KvCache = KvCache;
    type Routing = Routing;

    fn describe(&self) -> String {
        format!(
            "wgpu on {} (KV {:?}, mid {:?}, {} path, {} mat-vec input)",
            self.ctx.profile().describe(),
            self.options.kv,
            self.options.mid,
            self.options.path.name(),
            if self.options.int8_mat_vec {
                "int8"
            } else {
                "f32"
            }
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

    /// A vector, or a matrix whose rows are not whole 32-value blocks (qwen35moe's
    /// convolution taps), is stored as plain f32 values (no matmul reads it); the rest in
    /// moetile's layout (see `crate::layout`).
    fn upload(&mut self, w: WeightData<'_>) -> moetile::Result<ExpertTensor> {
        let plain = match *w.dims {
            [n] => Some((n, 1)),
            [cols, rows] if !cols.is_multiple_of(32) => Some((cols, rows)),
            _ => None,
        };
        if let Some((cols, rows)) = plain {
            let mut values = vec![0f32; cols * rows];
            moetile::quant::dequantize(w.ty, w.bytes, &mut values)?;
            let mut tensor = self.ctx.upload_vector(w.name, &values)?;
            (tensor.cols, tensor.rows) = (cols, rows);
            return Ok(tensor);
        }
        let tensor = self.ctx.upload_experts(&w)?;
        self.weight_uses.insert(match w.dims.len() {
            3 => WeightUse::Experts(tensor.weight),
            _ => WeightUse::Dense(tensor.weight),
        });
        Ok(tensor)
    }

    fn upload_gate_up(
        &mut self,
        gate: WeightData<'_>,
        up: WeightData<'_>,
    ) -> moetile::Result<GateUp<ExpertTensor>> {
        let gate_up = self.ctx.upload_gate_up(&gate, &up)?;
        match &gate_up {
            GateUp::Separate { gate, up } => {
                self.weight_uses.insert(WeightUse::Experts(gate.weight));
                self.weight_uses.insert(WeightUse::Experts(up.weight));
            }
            GateUp::Interleaved(w) => {
                self.weight_uses.insert(WeightUse::GateUp(w.weight));
            }
        }
        Ok(gate_up)
    }

    /// Creates the pipelines of every kernel the model may run (see `crate::plan`), through
    /// the context's pipeline cache.
    fn prepare(
        &mut self,
        config: &ModelConfig,
        progress: &mut dyn FnMut(usize, usize),
    ) -> moetile::Result<()> {
        let uses: Vec<WeightUse> = self.weight_uses.iter().copied().collect();
        let keys = model_kernels(config, &self.options, &uses);
        Ok(self.ctx.prepare_kernels(&keys, progress)?)
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
        Ok(self.session_cache(cache))
    }

    /// Regions of one arena ([`KvCache::arena`]), so a batch of their sequences attends in one
    /// set of dispatches; separate caches where the arena would not fit one storage binding.
    fn kv_caches(
        &mut self,
        n: usize,
        n_layers: usize,
        n_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> moetile::Result<Vec<KvCache>> {
        let kv = self.options.kv;
        let caches = match KvCache::arena(&self.ctx, n, n_layers, n_ctx, n_kv_heads, head_dim, kv) {
            Ok(caches) => caches,
            Err(WgpuError::TooLarge { .. }) => {
                return (0..n)
                    .map(|_| self.kv_cache(n_layers, n_ctx, n_kv_heads, head_dim))
                    .collect();
            }
            Err(e) => return Err(e.into()),
        };
        // Every cache's buffers are the arena's: poisoned once.
        let mut caches = caches.into_iter();
        let first = caches.next().map(|c| self.session_cache(c));
        Ok(first.into_iter().chain(caches).collect())
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
        self.record("rms_norm", |rec| ops::rms_norm(rec, x, w, eps, &out))?;
        Ok(out)
    }

    fn matmul(&mut self, x: &GpuMatrix, w: &ExpertTensor) -> moetile::Result<GpuMatrix> {
        let out = self.output(x.rows, w.dense_rows(), "matmul")?;
        self.matmul_into(x, w, &out, 0, MvExtras::default())?;
        Ok(out)
    }

    /// One matmul per weight, each writing its columns of the output; on the mat-vec path
    /// each normalizes x's rows itself as it reads them, else the normed rows are written
    /// out first.
    fn project(
        &mut self,
        x: &GpuMatrix,
        norm: Option<PreNorm<'_, ExpertTensor>>,
        ws: &[ExpertTensor],
    ) -> moetile::Result<GpuMatrix> {
        let normed;
        let (input, row_norm) = match norm {
            Some(n) if x.rows <= self.mat_vec_max_tokens() => {
                let weight = ops::vector("norm", n.weight)?;
                (x, Some(RowNorm { weight, eps: n.eps }))
            }
            Some(n) => {
                normed = self.rms_norm(x, n.weight, n.eps)?;
                (&normed, None)
            }
            None => (x, None),
        };
        let cols = ws.iter().map(|w| w.dense_rows()).sum();
        let out = self.output(x.rows, cols, "matmul")?;
        let extras = MvExtras {
            norm: row_norm,
            accumulate: false,
            int8: self.options.int8_mat_vec,
        };
        let mut col = 0;
        for w in ws {
            self.matmul_into(input, w, &out, col, extras)?;
            col += w.dense_rows();
        }
        Ok(out)
    }

    /// One mat-vec adding into x for small batches.
    fn matmul_add(
        &mut self,
        x: &mut GpuMatrix,
        a: &GpuMatrix,
        w: &ExpertTensor,
    ) -> moetile::Result<()> {
        if a.rows > self.mat_vec_max_tokens() {
            let y = self.matmul(a, w)?;
            return self.add(x, &y);
        }
        let extras = MvExtras {
            norm: None,
            accumulate: true,
            int8: self.options.int8_mat_vec,
        };
        self.matmul_into(a, w, x, 0, extras)
    }

    fn add_bias(&mut self, x: &mut GpuMatrix, b: &ExpertTensor) -> moetile::Result<()> {
        if b.rows != 1 || b.experts != 1 {
            return Err(shape("add_bias", format!("{} is not a vector", b.name)));
        }
        self.eltwise(EltOp::AddRow, x, &b.chunks[0].buffer, b.cols)
    }

    fn attention(
        &mut self,
        qkv: &GpuMatrix,
        qk_norm: Option<[&ExpertTensor; 2]>,
        kv: &mut KvCache,
        layer: usize,
        pos0: usize,
        p: &AttentionParams,
    ) -> moetile::Result<GpuMatrix> {
        self.attend_all(qkv, &LayerAttention::plain(qk_norm), kv, layer, pos0, p)
    }

    /// gpt-oss's attention is the shared kernels with sinks, the window and a YaRN table; its
    /// experts the MoE with biases in `act` and `sum`.
    fn runs_gptoss(&self) -> bool {
        true
    }

    fn gptoss_attention(
        &mut self,
        qkv: &GpuMatrix,
        sinks: &ExpertTensor,
        kv: &mut KvCache,
        layer: usize,
        pos0: usize,
        p: &GptOssAttentionParams,
    ) -> moetile::Result<GpuMatrix> {
        self.attend_all(
            qkv,
            &LayerAttention::gptoss(sinks, p),
            kv,
            layer,
            pos0,
            &p.attn,
        )
    }

    /// Each row against its own cache on the device ([`Self::attend_each`]).
    fn gptoss_attention_batch(
        &mut self,
        qkv: &GpuMatrix,
        sinks: &ExpertTensor,
        kvs: &mut [&mut KvCache],
        positions: &[usize],
        layer: usize,
        p: &GptOssAttentionParams,
    ) -> moetile::Result<GpuMatrix> {
        let gptoss = LayerAttention::gptoss(sinks, p);
        self.attend_each(qkv, &gptoss, kvs, positions, layer, &p.attn)
    }

    /// Each extra row adds only its attention's dispatches (`attention_batch` records them
    /// into the open encoder), while every weight is read once for all rows.
    fn batches_sequences(&self) -> bool {
        true
    }

    /// Each row against its own cache on the device ([`Self::attend_each`]).
    fn attention_batch(
        &mut self,
        qkv: &GpuMatrix,
        qk_norm: Option<[&ExpertTensor; 2]>,
        kvs: &mut [&mut KvCache],
        positions: &[usize],
        layer: usize,
        p: &AttentionParams,
    ) -> moetile::Result<GpuMatrix> {
        let plain = LayerAttention::plain(qk_norm);
        self.attend_each(qkv, &plain, kvs, positions, layer, p)
    }

    fn runs_delta_net(&self) -> bool {
        true
    }

    fn qwen35moe_cache(
        &mut self,
        cfg: &Qwen35MoeConfig,
        n_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> moetile::Result<KvCache> {
        let kv = self.options.kv;
        let cache = KvCache::qwen35moe(&self.ctx, cfg, n_ctx, n_kv_heads, head_dim, kv)?;
        Ok(self.session_cache(cache))
    }

    /// `conv_silu` into a scratch matrix, then `delta_rule`, or `delta_wy` and `delta_scan`
    /// with [`super::BackendOptions::chunked_delta_net`] (see `crate::delta_net`).
    fn delta_net(
        &mut self,
        proj: &GpuMatrix,
        w: &DeltaNetWeights<ExpertTensor>,
        kv: &mut KvCache,
        layer: usize,
        pos0: usize,
        p: &DeltaNetParams,
    ) -> moetile::Result<GpuMatrix> {
        let (x, out) = self.delta_outputs(proj.rows, p)?;
        let slot = DeltaSlot { kv, layer, pos0 };
        self.delta_rows(proj, 0..proj.rows, w, slot, p, &x, &out)?;
        Ok(out)
    }

    /// One `conv_silu` and one `delta_rule` per row, each reading its row of `proj` and writing
    /// its row of the output against its own cache's tail and state, all recorded into the
    /// open encoder, so the rows never pass through host memory.
    fn delta_net_batch(
        &mut self,
        proj: &GpuMatrix,
        w: &DeltaNetWeights<ExpertTensor>,
        kvs: &mut [&mut KvCache],
        positions: &[usize],
        layer: usize,
        p: &DeltaNetParams,
    ) -> moetile::Result<GpuMatrix> {
        check_batch("delta_net_batch", proj.rows, kvs, positions)?;
        for (kv, &pos0) in kvs.iter().zip(positions) {
            match &kv.delta_net {
                Some(state) => state.check_continues(layer, pos0)?,
                None => return Err(not_qwen35moe_cache()),
            }
        }
        let (x, out) = self.delta_outputs(proj.rows, p)?;
        for (row, (kv, &pos0)) in kvs.iter_mut().zip(positions).enumerate() {
            let slot = DeltaSlot { kv, layer, pos0 };
            self.delta_rows(proj, row..row + 1, w, slot, p, &x, &out)?;
        }
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
                None,
                &out,
            )
        })?;
        Ok(out)
    }

    fn mul_sigmoid(&mut self, x: &mut GpuMatrix, g: &GpuMatrix) -> moetile::Result<()> {
        let op = match (g.rows == x.rows, g.cols) {
            (true, 1) => EltOp::MulSigmoidRow,
            (true, cols) if cols == x.cols => EltOp::MulSigmoid,
            _ => {
                return Err(shape(
                    "mul_sigmoid",
                    format!(
                        "gate ({}, {}) for x ({}, {}): expected one column or x's shape",
                        g.rows, g.cols, x.rows, x.cols
                    ),
                ));
            }
        };
        self.eltwise(op, x, &g.buffer, g.rows * g.cols)
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

    /// The raw mixes as a plain matmul over the streams (the norm's factor is applied in
    /// `hc_pre`, which reads the row anyway for the input), then `hc_pre`.
    fn hc_pre(
        &mut self,
        streams: &GpuMatrix,
        w: HyperWeights<'_, ExpertTensor>,
        p: &HyperParams,
    ) -> moetile::Result<(GpuMatrix, GpuMatrix)> {
        if w.func.dense_rows() != HC_MIXES || w.func.cols != streams.cols {
            return Err(shape(
                "hc_pre",
                format!(
                    "{} is {} x {} for streams of {}; a hyper-connection has {HC_MIXES} mixes of \
                     all the streams",
                    w.func.name,
                    w.func.dense_rows(),
                    w.func.cols,
                    streams.cols
                ),
            ));
        }
        let mixes = self.matmul(streams, w.func)?;
        let input = self.output(streams.rows, streams.cols / HC_STREAMS, "hc_pre")?;
        let mix = self.output(streams.rows, HC_MIXES, "hc mix")?;
        let pre = ops::HyperPre {
            mixes: &mixes,
            scale: w.scale,
            base: w.base,
        };
        self.record("hc_pre", |rec| {
            ops::hc_pre(rec, streams, pre, p, &input, &mix)
        })?;
        Ok((input, mix))
    }

    fn hc_expand(&mut self, x: &GpuMatrix) -> moetile::Result<GpuMatrix> {
        let streams = self.output(x.rows, HC_STREAMS * x.cols, "hc streams")?;
        self.eltwise(EltOp::Repeat, &streams, &x.buffer, x.rows * x.cols)?;
        Ok(streams)
    }

    fn hc_post(
        &mut self,
        streams: &mut GpuMatrix,
        out: &GpuMatrix,
        mix: &GpuMatrix,
    ) -> moetile::Result<()> {
        self.record("hc_post", |rec| ops::hc_post(rec, streams, out, mix))
    }

    /// A hash-routed batch's ids are gathered on the host (the table stays there) and
    /// uploaded like the batch's token ids.
    /// The `HC_STREAMS` raw mixes as a plain matmul over the streams, then `hc_head`
    /// (`hc_pre`'s kernel with the pre weights only).
    fn hc_head(
        &mut self,
        streams: &GpuMatrix,
        w: HyperWeights<'_, ExpertTensor>,
        p: &HyperParams,
    ) -> moetile::Result<GpuMatrix> {
        if w.func.dense_rows() != HC_STREAMS {
            return Err(shape(
                "hc_head",
                format!(
                    "{} has {} rows; the head has {HC_STREAMS} mixes",
                    w.func.name,
                    w.func.dense_rows()
                ),
            ));
        }
        let mixes = self.matmul(streams, w.func)?;
        let out = self.output(streams.rows, streams.cols / HC_STREAMS, "hc_head")?;
        let pre = ops::HyperPre {
            mixes: &mixes,
            scale: w.scale,
            base: w.base,
        };
        self.record("hc_head", |rec| ops::hc_head(rec, streams, pre, p, &out))?;
        Ok(out)
    }

    /// The dense matmul's kernels over `w` viewed as `groups` experts (`ExpertTensor::groups`),
    /// every token routed to each with weight 1 and read as `groups` rows of `x`: no kernel of
    /// its own.
    fn grouped_matmul(
        &mut self,
        x: &GpuMatrix,
        w: &ExpertTensor,
        groups: usize,
    ) -> moetile::Result<GpuMatrix> {
        let view = (x.rows > 0 && groups > 0 && x.cols == groups * w.cols)
            .then(|| w.groups(groups))
            .flatten()
            .ok_or_else(|| {
                shape(
                    "grouped_matmul",
                    format!(
                        "x ({}, {}), {} of {} rows of {} in {} buffers, {groups} groups; \
                         expected x groups x {} wide and rows in whole groups per buffer",
                        x.rows,
                        x.cols,
                        w.name,
                        w.dense_rows(),
                        w.cols,
                        w.chunks.len(),
                        w.cols
                    ),
                )
            })?;
        let mut out = self.output(x.rows * groups, view.rows, "grouped_matmul")?;
        self.grouped_into(x, &view, &out)?;
        // Row t * G + g of the pairs' output is group g's part of token t's row.
        (out.rows, out.cols) = (x.rows, groups * view.rows);
        Ok(out)
    }

    fn compressor_pool(
        &mut self,
        kv: &GpuMatrix,
        score: &GpuMatrix,
        w: PoolWeights<'_, ExpertTensor>,
        p: &PoolParams,
    ) -> moetile::Result<GpuMatrix> {
        let coff = if p.overlap { 2 } else { 1 };
        let rows = kv.rows.checked_div(p.ratio).unwrap_or(0);
        let rows = rows.checked_sub(usize::from(p.previous)).filter(|&r| r > 0);
        let Some(rows) = rows else {
            return Err(shape(
                "compressor_pool",
                format!(
                    "{} projection rows make no compressed row at ratio {} (previous block {})",
                    kv.rows, p.ratio, p.previous
                ),
            ));
        };
        let out = self.output(rows, kv.cols / coff, "compressor_pool")?;
        self.record("compressor_pool", |rec| {
            ops::compressor_pool(rec, kv, score, w, p, &out)
        })?;
        Ok(out)
    }

    fn route(
        &mut self,
        logits: &GpuMatrix,
        selection: Selection<'_, ExpertTensor>,
        p: &RouterParams,
    ) -> moetile::Result<Routing> {
        let given;
        let choice = match selection {
            Selection::TopK => ops::RouteChoice::TopK,
            Selection::Biased(bias) => {
                if bias.cols != logits.cols {
                    return Err(shape(
                        "route",
                        format!(
                            "{} has {} values for {} experts",
                            bias.name, bias.cols, logits.cols
                        ),
                    ));
                }
                ops::RouteChoice::Biased(ops::vector("route", bias)?)
            }
            Selection::Hashed { table, tokens } => {
                if tokens.len() != logits.rows {
                    return Err(shape(
                        "route",
                        format!(
                            "{} token ids for {} rows of logits",
                            tokens.len(),
                            logits.rows
                        ),
                    ));
                }
                let ids = hashed_ids(table, tokens, logits.cols, p.n_experts_used)?;
                given = self
                    .buffers()
                    .storage_init("hashed expert ids", bytemuck::cast_slice(&ids))?;
                ops::RouteChoice::Given(&given)
            }
        };
        self.record("route", |rec| ops::route(rec, logits, choice, p))
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

    /// See `moe_into`.
    fn moe(
        &mut self,
        x: &mut GpuMatrix,
        norm: Option<PreNorm<'_, ExpertTensor>>,
        routing: &Routing,
        experts: ExpertWeights<'_, ExpertTensor>,
        p: &MoeParams,
    ) -> moetile::Result<()> {
        self.moe_into(x, norm, routing, experts, None, p)
    }

    fn moe_out(
        &mut self,
        h: &GpuMatrix,
        norm: Option<PreNorm<'_, ExpertTensor>>,
        routing: &Routing,
        experts: ExpertWeights<'_, ExpertTensor>,
        p: &MoeParams,
    ) -> moetile::Result<GpuMatrix> {
        self.experts_out(h, norm, routing, experts, None, p)
    }

    fn moe_biased(
        &mut self,
        x: &mut GpuMatrix,
        norm: Option<PreNorm<'_, ExpertTensor>>,
        routing: &Routing,
        experts: ExpertWeights<'_, ExpertTensor>,
        biases: &ExpertBiases<ExpertTensor>,
        p: &MoeParams,
    ) -> moetile::Result<()> {
        self.moe_into(x, norm, routing, experts, Some(biases), p)
    }

    fn runs_deepseek4(&self) -> bool {
        true
    }

    /// The window, compressed rows and compressor state of every layer on the device
    /// (`crate::deepseek4::Deepseek4Cache`), poisoned when asked.
    fn deepseek4_cache(
        &mut self,
        cfg: &Deepseek4Config,
        n_ctx: usize,
        qat_sim: bool,
    ) -> moetile::Result<KvCache> {
        let cache = KvCache::deepseek4(Deepseek4Cache::new(&self.ctx, cfg, n_ctx, qat_sim)?);
        Ok(self.session_cache(cache))
    }

    fn deepseek4_attention(
        &mut self,
        x: &GpuMatrix,
        w: &Deepseek4Attention<ExpertTensor>,
        kv: &mut KvCache,
        layer: usize,
        pos0: usize,
    ) -> moetile::Result<GpuMatrix> {
        self.deepseek4_attention_on_device(x, w, kv, layer, pos0)
    }

    fn deepseek4_attention_batch(
        &mut self,
        x: &GpuMatrix,
        w: &Deepseek4Attention<ExpertTensor>,
        kvs: &mut [&mut KvCache],
        positions: &[usize],
        layer: usize,
    ) -> moetile::Result<GpuMatrix> {
        check_batch("deepseek4_attention_batch", x.rows, kvs, positions)?;
        self.deepseek4_attention_rows(x, w, kvs, positions, layer)
    }
}

impl WgpuBackend {
    /// `x += moe(norm(x))` with the experts' `biases` when given: the fused mat-vec plan
    /// (`mv_glu` reading x, `mv_sum` adding into it) takes the norm and the residual add into
    /// its two kernels; other plans norm x first and add the layer's output after.
    fn moe_into(
        &mut self,
        x: &mut GpuMatrix,
        norm: Option<PreNorm<'_, ExpertTensor>>,
        routing: &Routing,
        experts: ExpertWeights<'_, ExpertTensor>,
        biases: Option<&ExpertBiases<ExpertTensor>>,
        p: &MoeParams,
    ) -> moetile::Result<()> {
        let mut opts = self.moe_options(p, x.rows);
        let plain = MoeInputs {
            x,
            norm: None,
            routing,
            experts,
            biases,
        };
        if !MoePlan::new(&plain, &opts).fused_ends() {
            let out = self.experts_out(x, norm, routing, experts, biases, p)?;
            return self.add(x, &out);
        }
        let inputs = match norm {
            Some(n) => MoeInputs {
                norm: Some(RowNorm {
                    weight: ops::vector("norm", n.weight)?,
                    eps: n.eps,
                }),
                ..plain
            },
            None => plain,
        };
        let bufs = self.moe_buffers(&inputs, &opts)?;
        opts.accumulate = true;
        self.record("moe", |rec| moe::layer(rec, &inputs, &opts, &bufs, x))
    }

    /// The routed experts' output `(T, D)` from `h`, normed by `norm` when given, with the
    /// experts' `biases` when given.
    fn experts_out(
        &mut self,
        h: &GpuMatrix,
        norm: Option<PreNorm<'_, ExpertTensor>>,
        routing: &Routing,
        experts: ExpertWeights<'_, ExpertTensor>,
        biases: Option<&ExpertBiases<ExpertTensor>>,
        p: &MoeParams,
    ) -> moetile::Result<GpuMatrix> {
        let normed = match norm {
            Some(n) => Some(self.rms_norm(h, n.weight, n.eps)?),
            None => None,
        };
        let x = normed.as_ref().unwrap_or(h);
        let opts = self.moe_options(p, x.rows);
        let inputs = MoeInputs {
            x,
            norm: None,
            routing,
            experts,
            biases,
        };
        let bufs = self.moe_buffers(&inputs, &opts)?;
        let out = self.output(x.rows, x.cols, "moe")?;
        self.record("moe", |rec| moe::layer(rec, &inputs, &opts, &bufs, &out))?;
        Ok(out)
    }

    /// A new session's `cache`, poisoned when the options say so. Bind groups cached for an
    /// earlier session's cache (and a dropped model's weights) are forgotten: they would keep
    /// those buffers alive.
    fn session_cache(&mut self, cache: KvCache) -> KvCache {
        self.ctx.kernels.forget_bind_groups();
        for b in cache.buffers() {
            self.poison(b, b.size());
        }
        cache
    }

    /// How this backend runs an MoE layer of `rows` tokens: its path and `mid` type, the
    /// mat-vec path up to [`Backend::mat_vec_max_tokens`].
    fn moe_options(&self, p: &MoeParams, rows: usize) -> MoeOptions {
        MoeOptions {
            path: self.options.path,
            mid: self.options.mid,
            mat_vec: rows <= self.mat_vec_max_tokens(),
            int8: self.options.int8_mat_vec,
            ..MoeOptions::new(&self.ctx, p, rows)
        }
    }

    /// The MoE layer's intermediate buffers for `inputs` under `opts`, poisoned when the
    /// options say so. From this backend's pool: they are dropped while the encoder is still
    /// open.
    fn moe_buffers(
        &mut self,
        inputs: &MoeInputs<'_>,
        opts: &MoeOptions,
    ) -> moetile::Result<MoeBuffers> {
        let bufs = MoeBuffers::new(&self.buffers(), inputs, opts)?;
        for m in bufs.all() {
            self.poison(&m.buffer, (m.rows * m.cols * m.ty.bytes()) as u64);
        }
        Ok(bufs)
    }
}
