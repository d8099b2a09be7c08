//! Grouped-query attention over a KV cache on the device.
//!
//! ```text
//! attn_input:   qkv (T, (n_heads + 2 n_kv_heads) * head_dim) -> q/k norms (qwen3) and RoPE,
//!               q (T, n_heads * head_dim); k, v -> cache rows pos0 .. pos0 + T   (f16 or f32)
//! attn_prefill: q (T, n_heads * head_dim), cache rows 0 ..= pos0 + t (the last `window` of
//!               them with a sliding window) -> (T, n_heads * head_dim)
//! attn_decode:  the same for a few tokens, split over chunks of positions -> partials
//! attn_combine: partials (and the heads' sinks) -> (T, n_heads * head_dim)
//! ```
//! gpt-oss's per-head sinks join the softmax's denominator where a row's output is normalized
//! (the end of `attn_prefill`, or once in `attn_combine`, never in a partial); its sliding
//! window masks keys before it in both kernels.
//! Each runs in its own (timed) pass. Every kernel works on the query heads of one key/value head together, so each key and
//! value it loads serves the whole group (`wgsl/attn/common.wgsl`).
//! The next tokens of several sequences, rows of one `qkv`, run these once per row
//! ([`AttnInputs::rows`]), each at its own position of its own cache, into one output.
//! The cache stores f16 by default, two values per `u32` (`pack2x16float`, no `SHADER_F16`
//! needed): half the memory, and keys/values rounded to 2^-11 relative, which moves attention
//! outputs by about 1e-3 relative. F32 is the exact option for tests and verification.

use std::ops::Range;

use moetile::model::AttentionParams;
use moetile::model::qwen35moe::{Mixer, Qwen35MoeConfig};
use moetile_codegen::params::{AttnInputParams, AttnParams};
use moetile_codegen::{ActType, HEAD_DIMS, KernelKey};

use crate::buffers::GpuMatrix;
use crate::context::WgpuContext;
use crate::deepseek4::Deepseek4Cache;
use crate::delta_net::DeltaNetState;
use crate::dispatch::Grid;
use crate::error::{Result, WgpuError, shape};
use crate::recorder::Recorder;

/// Batches of at most this many tokens attend with the decode kernels.
pub const ATTN_DECODE_MAX_TOKENS: usize = 4;

/// Decode attention: the most workgroups along the positions per (key/value head, row
/// block) that [`AttentionKernel::for_batch`] asks for; past 256 chunks (8K positions) each
/// walks several, so the partials (256 per query row) and their merge stay bounded. On the
/// H100 a workgroup per chunk is faster up to 4K (128 chunks): a bound of 64 there cost 17%
/// of the attention time (bench/decode-h100/run-5).
pub const DECODE_MAX_SPLITS: usize = 256;

/// Which attention kernels a batch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// Flash attention over tiles of query rows and keys (`attn_prefill`).
    Prefill,
    /// Split over chunks of positions, then merged (`attn_decode`, `attn_combine`).
    Decode {
        /// The most workgroups along the positions per (key/value head, row block), at least
        /// 1: past that many chunks of positions each workgroup walks several.
        max_splits: usize,
    },
}

/// Keys and values of every layer that attends: per layer two buffers of `n_ctx` rows of
/// `n_kv_heads * head_dim` values (`None` for qwen35moe's DeltaNet layers, whose state is
/// [`KvCache::delta_net`]); or, for deepseek4, its own attention cache alone.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<Option<[wgpu::Buffer; 2]>>,
    /// qwen35moe's DeltaNet layers' state (`None` in other models' caches).
    pub delta_net: Option<DeltaNetState>,
    /// deepseek4's window, compressed rows and compressor state (no `layers` then).
    pub(crate) deepseek4: Option<Box<Deepseek4Cache>>,
    /// Positions per layer.
    pub n_ctx: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Storage type.
    pub ty: ActType,
}

impl KvCache {
    /// Values per position (`n_kv_heads * head_dim`).
    pub fn kv_width(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Layers.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// Every buffer: keys then values per attention layer, then the DeltaNet layers' state or
    /// deepseek4's cache (for embedders and test poisoning).
    pub fn buffers(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        let state = self.delta_net.iter().flat_map(DeltaNetState::buffers);
        let deepseek4 = self.deepseek4.iter().flat_map(|c| c.buffers());
        self.layers
            .iter()
            .flatten()
            .flatten()
            .chain(state)
            .chain(deepseek4)
    }

    /// A deepseek4 cache of `n_ctx` positions: `cache` alone, no key/value layers.
    pub(crate) fn deepseek4(cache: Deepseek4Cache) -> KvCache {
        KvCache {
            layers: Vec::new(),
            delta_net: None,
            n_ctx: cache.n_ctx,
            deepseek4: Some(Box::new(cache)),
            n_kv_heads: 1,
            head_dim: 0,
            ty: ActType::F32,
        }
    }
}

impl KvCache {
    /// An empty cache of `n_layers` layers of `n_ctx` positions, stored as `ty`. Refuses head
    /// widths without kernels and layers larger than a storage binding.
    pub fn new(
        ctx: &WgpuContext,
        n_layers: usize,
        n_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
        ty: ActType,
    ) -> Result<KvCache> {
        let attends = vec![true; n_layers];
        Self::for_layers(ctx, &attends, n_ctx, n_kv_heads, head_dim, ty)
    }

    /// A qwen35moe cache: keys and values for its attention layers, and the DeltaNet layers'
    /// state.
    pub fn qwen35moe(
        ctx: &WgpuContext,
        cfg: &Qwen35MoeConfig,
        n_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
        ty: ActType,
    ) -> Result<KvCache> {
        let attends: Vec<bool> = cfg.mixers.iter().map(|&m| m == Mixer::Attention).collect();
        Ok(KvCache {
            delta_net: Some(DeltaNetState::new(ctx, cfg)?),
            ..Self::for_layers(ctx, &attends, n_ctx, n_kv_heads, head_dim, ty)?
        })
    }

    /// [`KvCache::new`] with keys and values only for the layers where `attends` is true.
    fn for_layers(
        ctx: &WgpuContext,
        attends: &[bool],
        n_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
        ty: ActType,
    ) -> Result<KvCache> {
        if !HEAD_DIMS.contains(&(head_dim as u32)) {
            return Err(WgpuError::UnsupportedHeadDim {
                head_dim,
                supported: &HEAD_DIMS,
            });
        }
        let bytes = (n_ctx * n_kv_heads * head_dim * ty.bytes()) as u64;
        ctx.check_size(
            &format!("one layer's KV cache ({n_ctx} positions, {ty:?})"),
            bytes,
        )?;
        let layers = ctx.scoped("allocating the KV cache", || {
            Ok(attends
                .iter()
                .enumerate()
                .map(|(il, &attends)| {
                    attends.then(|| {
                        ["k", "v"].map(|which| {
                            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                                label: Some(&format!("kv cache {which} {il}")),
                                size: bytes.max(4),
                                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                                mapped_at_creation: false,
                            })
                        })
                    })
                })
                .collect())
        })?;
        Ok(KvCache {
            layers,
            delta_net: None,
            deepseek4: None,
            n_ctx,
            n_kv_heads,
            head_dim,
            ty,
        })
    }
}

impl AttentionKernel {
    /// The kernels a batch of `n_tokens` runs: decode for at most [`ATTN_DECODE_MAX_TOKENS`],
    /// else prefill.
    pub fn for_batch(n_tokens: usize) -> AttentionKernel {
        if n_tokens <= ATTN_DECODE_MAX_TOKENS {
            AttentionKernel::Decode {
                max_splits: DECODE_MAX_SPLITS,
            }
        } else {
            AttentionKernel::Prefill
        }
    }
}

/// The attention inputs of a batch: one layer's `qkv (T, (n_heads + 2 n_kv_heads) *
/// head_dim)`, q, k and v side by side, of which `rows` attend; the rotary angles of positions
/// from 0 past the batch's (`crate::ops::rope_angles`, `n_dims / 2` per position); the per-head
/// q and k norm weights (one head each) when the layer has them; gpt-oss's sinks and window.
#[derive(Debug, Clone)]
pub struct AttnInputs<'a> {
    /// q, k and v of the batch's tokens.
    pub qkv: &'a GpuMatrix,
    /// The rows of `qkv` (and of the output) that attend: all of them for one sequence; one
    /// row per call when the rows are the next tokens of several sequences, each of which
    /// attends over its own cache.
    pub rows: Range<usize>,
    /// `(cos, sin)` per position and rotated pair.
    pub angles: &'a wgpu::Buffer,
    /// q and k norm weights (f32, `head_dim` each).
    pub qk_norm: Option<[&'a wgpu::Buffer; 2]>,
    /// Per query head, a logit with no value in its softmax's denominator (f32, `n_heads`).
    pub sinks: Option<&'a wgpu::Buffer>,
    /// Keys a query sees, itself included (`p - window + 1..=p`); `None` for all before it.
    pub window: Option<usize>,
}

/// Where a batch's keys and values go: positions `pos0..pos0 + T` of `layer` of `cache`.
#[derive(Debug, Clone, Copy)]
pub struct CacheSlot<'a> {
    /// The cache.
    pub cache: &'a KvCache,
    /// The layer.
    pub layer: usize,
    /// The batch's first position.
    pub pos0: usize,
}

/// Records: norm and rotate q and k of `inputs.rows` and store k, v at `slot` (`attn_input`),
/// then attend q causally over positions `0..=pos0 + t` with `kernel` into the same rows of
/// `out (T, n_heads * head_dim)`; its other rows are left as they are.
pub fn attend(
    rec: &mut Recorder<'_>,
    inputs: AttnInputs<'_>,
    slot: CacheSlot<'_>,
    p: &AttentionParams,
    kernel: AttentionKernel,
    out: &GpuMatrix,
) -> Result<()> {
    let AttnInputs {
        qkv,
        rows,
        angles,
        qk_norm,
        sinks,
        window,
    } = inputs;
    let CacheSlot { cache, layer, pos0 } = slot;
    let hd = cache.head_dim;
    let n_tokens = rows.len();
    let row0 = rows.start as u32;
    let n_half = p.rope.n_dims / 2;
    let q_width = p.n_heads * hd;
    let ok = p.head_dim == hd
        && p.n_kv_heads == cache.n_kv_heads
        && p.n_kv_heads > 0
        && p.n_heads > 0
        && p.n_heads.is_multiple_of(p.n_kv_heads)
        && qkv.cols == q_width + 2 * cache.kv_width()
        && p.rope.n_dims <= hd
        && p.rope.n_dims.is_multiple_of(2)
        && angles.size() >= ((pos0 + n_tokens) * n_half * 8) as u64
        && qk_norm.is_none_or(|w| w.iter().all(|w| w.size() >= (hd * 4) as u64))
        && sinks.is_none_or(|s| s.size() >= (p.n_heads * 4) as u64)
        && window.is_none_or(|w| w > 0 && u32::try_from(w).is_ok())
        && (out.rows, out.cols) == (qkv.rows, q_width)
        && rows.end <= qkv.rows
        && [qkv, out].iter().all(|m| m.ty == ActType::F32)
        && cache.layers.get(layer).is_some_and(Option::is_some)
        && n_tokens > 0;
    if !ok {
        return Err(shape(
            "attention",
            format!(
                "rows {rows:?} of qkv ({}, {}), out ({}, {}), layer {layer} (with keys and \
                 values?) of a cache of {} layers x {} kv heads x {hd}, angle table of {} \
                 bytes, sinks of {:?} bytes, window {window:?}, {p:?}",
                qkv.rows,
                qkv.cols,
                out.rows,
                out.cols,
                cache.layers.len(),
                cache.n_kv_heads,
                angles.size(),
                sinks.map(|s| s.size()),
            ),
        ));
    }
    if pos0 + n_tokens > cache.n_ctx {
        return Err(shape(
            "attention",
            format!(
                "positions {pos0}..{} past the cache's {}",
                pos0 + n_tokens,
                cache.n_ctx
            ),
        ));
    }
    let [k_cache, v_cache] = cache.layers[layer].as_ref().expect("checked above");
    let group = p.n_heads / p.n_kv_heads;
    let n_rows = n_tokens * group;
    let n_keys = pos0 + n_tokens;
    // Past u32, the dispatch helper's check against the device limit refuses the grid too.
    let groups = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);

    let (key, n_splits, chunks_per_split) = match kernel {
        AttentionKernel::Prefill => (
            KernelKey::AttnPrefill {
                head_dim: hd as u32,
                kv: cache.ty,
                sinks: sinks.is_some(),
            },
            1,
            0,
        ),
        AttentionKernel::Decode { max_splits } => {
            let key = KernelKey::AttnDecode {
                head_dim: hd as u32,
                kv: cache.ty,
            };
            let chunk = key.decode_chunk().expect("decode attention has a chunk");
            let chunks = n_keys.div_ceil(chunk as usize);
            let per_split = chunks.div_ceil(max_splits.max(1));
            (key, chunks.div_ceil(per_split), per_split)
        }
    };
    let rows = key.attention_rows().expect("attention has a row block") as usize;
    let row_blocks = n_rows.div_ceil(rows);
    let params = rec.params(&AttnParams {
        n_tokens: n_tokens as u32,
        pos0: pos0 as u32,
        n_heads: p.n_heads as u32,
        n_kv_heads: p.n_kv_heads as u32,
        scale: p.scale * std::f32::consts::LOG2_E,
        group: group as u32,
        n_rows: n_rows as u32,
        n_splits: n_splits as u32,
        chunks_per_split: chunks_per_split as u32,
        out_row0: row0,
        window: window.unwrap_or(0) as u32,
        _pad0: 0,
    });
    let q = rec
        .buffers()
        .matrix(n_tokens, q_width, ActType::F32, "rotated queries")?;
    let input = KernelKey::AttnInput {
        kv: cache.ty,
        norm: qk_norm.is_some(),
    };
    let input_params = rec.params(&AttnInputParams {
        n_tokens: n_tokens as u32,
        pos0: pos0 as u32,
        n_heads: p.n_heads as u32,
        n_kv_heads: p.n_kv_heads as u32,
        head_dim: hd as u32,
        n_half: n_half as u32,
        neox: p.rope.neox as u32,
        eps: p.norm_eps,
        row0,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    });
    let mut bindings = vec![
        ("params", input_params.binding()),
        ("qkv", qkv.buffer.as_entire_binding()),
        ("angles", angles.as_entire_binding()),
        ("q", q.buffer.as_entire_binding()),
        ("k_cache", k_cache.as_entire_binding()),
        ("v_cache", v_cache.as_entire_binding()),
    ];
    if let Some([wq, wk]) = qk_norm {
        bindings.extend([
            ("q_norm", wq.as_entire_binding()),
            ("k_norm", wk.as_entire_binding()),
        ]);
    }
    let heads = p.n_heads + 2 * p.n_kv_heads;
    rec.set_detail("input");
    rec.dispatch(
        &input,
        &bindings,
        Grid::Groups(groups(heads), groups(n_tokens)),
    )?;
    let sinks_binding = sinks.map(|s| ("sinks", s.as_entire_binding()));
    match kernel {
        AttentionKernel::Prefill => {
            rec.set_detail("prefill");
            let mut bindings = vec![
                ("params", params.binding()),
                ("q", q.buffer.as_entire_binding()),
                ("k_cache", k_cache.as_entire_binding()),
                ("v_cache", v_cache.as_entire_binding()),
                ("out", out.buffer.as_entire_binding()),
            ];
            bindings.extend(sinks_binding);
            let grid = Grid::Groups(groups(row_blocks), groups(p.n_kv_heads));
            rec.dispatch(&key, &bindings, grid)
        }
        AttentionKernel::Decode { .. } => {
            // Partials per (out row, split): hd values, then (max, sum).
            let partials = n_tokens * p.n_heads * n_splits;
            let none = wgpu::BufferUsages::empty();
            let buffers = rec.buffers();
            let part_acc =
                buffers.storage("attention partials", (partials * hd * 4) as u64, none)?;
            let part_ml =
                buffers.storage("attention partial maxima", (partials * 8) as u64, none)?;
            let bindings = [
                ("params", params.binding()),
                ("q", q.buffer.as_entire_binding()),
                ("k_cache", k_cache.as_entire_binding()),
                ("v_cache", v_cache.as_entire_binding()),
                ("part_acc", part_acc.as_entire_binding()),
                ("part_ml", part_ml.as_entire_binding()),
            ];
            let grid = Grid::Groups(groups(n_splits), groups(p.n_kv_heads * row_blocks));
            rec.set_detail("decode");
            rec.dispatch(&key, &bindings, grid)?;
            rec.set_detail("combine");
            let combine = KernelKey::AttnCombine {
                head_dim: hd as u32,
                sinks: sinks.is_some(),
            };
            let mut bindings = vec![
                ("params", params.binding()),
                ("part_acc", part_acc.as_entire_binding()),
                ("part_ml", part_ml.as_entire_binding()),
                ("out", out.buffer.as_entire_binding()),
            ];
            bindings.extend(sinks_binding);
            rec.dispatch(
                &combine,
                &bindings,
                Grid::Groups(groups(n_tokens * p.n_heads), 1),
            )
        }
    }
}
