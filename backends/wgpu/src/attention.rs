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
//! ([`AttnInputs::rows`]), each at its own position of its own cache, into one output; or,
//! where the caches are regions of one arena ([`KvCache::arena`]), all rows in one set of
//! dispatches ([`attend_seqs`]) that read each row's region and position from a table.
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
/// Caches made by [`KvCache::arena`] share their layers' buffers, each its own region of them.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<Option<[wgpu::Buffer; 2]>>,
    /// The row of `layers`' buffers where this cache's position 0 is: 0 for a cache of its own.
    row0: usize,
    /// Whether `layers`' buffers hold other caches' regions too ([`KvCache::arena`]).
    shared: bool,
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
    /// deepseek4's cache (for embedders and test poisoning). An arena's caches all list the
    /// arena's buffers, of which each owns rows `row0()..row0() + n_ctx`.
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

    /// The row of the layers' buffers that holds this cache's position 0 (0 unless the cache is
    /// a region of an arena).
    pub fn row0(&self) -> usize {
        self.row0
    }

    /// Whether `layer`'s keys and values of `self` and `other` are regions of the same arena
    /// buffers, so one dispatch can reach both ([`attend_seqs`]).
    pub fn shares_layer(&self, other: &KvCache, layer: usize) -> bool {
        match (self.layers.get(layer), other.layers.get(layer)) {
            (Some(Some(a)), Some(Some(b))) => self.shared && other.shared && a == b,
            _ => false,
        }
    }

    /// The key and value bindings of `layer`: this cache's region of them.
    fn layer_bindings(&self, layer: usize) -> Option<[wgpu::BindingResource<'_>; 2]> {
        let pair = self.layers.get(layer)?.as_ref()?;
        if !self.shared {
            return Some(pair.each_ref().map(|b| b.as_entire_binding()));
        }
        let row_bytes = (self.kv_width() * self.ty.bytes()) as u64;
        let size = wgpu::BufferSize::new(self.n_ctx as u64 * row_bytes);
        Some(pair.each_ref().map(|buffer| {
            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer,
                offset: self.row0 as u64 * row_bytes,
                size,
            })
        }))
    }

    /// A deepseek4 cache of `n_ctx` positions: `cache` alone, no key/value layers.
    pub(crate) fn deepseek4(cache: Deepseek4Cache) -> KvCache {
        KvCache {
            layers: Vec::new(),
            row0: 0,
            shared: false,
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

    /// `n` empty caches like [`KvCache::new`]'s as regions of one pair of buffers per layer (a
    /// KV arena), cache `i` from row `i * stride` (`n_ctx` rounded up to the storage offset
    /// alignment), so the next tokens of all of them attend in one set of dispatches
    /// ([`attend_seqs`]). Each is an ordinary cache otherwise. Refuses an arena larger than a
    /// storage binding.
    pub fn arena(
        ctx: &WgpuContext,
        n: usize,
        n_layers: usize,
        n_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
        ty: ActType,
    ) -> Result<Vec<KvCache>> {
        let row_bytes = n_kv_heads * head_dim * ty.bytes();
        let align = ctx.device().limits().min_storage_buffer_offset_alignment as usize;
        // Rows whose bytes are a multiple of the alignment.
        let step = align / gcd(align, row_bytes.max(1));
        let stride = n_ctx.div_ceil(step) * step;
        let attends = vec![true; n_layers];
        let first = Self::for_layers(ctx, &attends, stride * n, n_kv_heads, head_dim, ty)?;
        Ok((0..n)
            .map(|i| KvCache {
                layers: first.layers.clone(),
                row0: i * stride,
                shared: true,
                delta_net: None,
                deepseek4: None,
                n_ctx,
                n_kv_heads,
                head_dim,
                ty,
            })
            .collect())
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
                                // COPY_SRC: embedders and tests read rows back.
                                usage: wgpu::BufferUsages::STORAGE
                                    | wgpu::BufferUsages::COPY_DST
                                    | wgpu::BufferUsages::COPY_SRC,
                                mapped_at_creation: false,
                            })
                        })
                    })
                })
                .collect())
        })?;
        Ok(KvCache {
            layers,
            row0: 0,
            shared: false,
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
    let CacheSlot { cache, layer, pos0 } = slot;
    let n_keys = pos0 + inputs.rows.len();
    check(&inputs, cache, layer, n_keys, p, out)?;
    if n_keys > cache.n_ctx {
        return Err(shape(
            "attention",
            format!(
                "positions {pos0}..{n_keys} past the cache's {}",
                cache.n_ctx
            ),
        ));
    }
    let kv = cache.layer_bindings(layer).expect("checked above");
    record(
        rec,
        inputs,
        cache,
        kv,
        Place::One { pos0 },
        n_keys,
        p,
        kernel,
        out,
    )
}

/// What [`attend_seqs`] reads of each sequence: the arena row of its position 0, and its
/// position. The same for every layer of a decode step, so uploaded once a step.
pub fn seq_table(slots: &[CacheSlot<'_>]) -> Vec<[u32; 2]> {
    slots
        .iter()
        .map(|s| [s.cache.row0 as u32, s.pos0 as u32])
        .collect()
}

/// Records the next token of each of several sequences, row `inputs.rows.start + i` at
/// `slots[i]`, with one set of decode dispatches: every slot's cache must be a region of the
/// same arena layer ([`KvCache::shares_layer`]) and hold `pos0`; `seqs` holds
/// [`seq_table`]`(slots)`. Equals [`attend`] per row
/// while no row's chunks of positions outnumber [`DECODE_MAX_SPLITS`] (past that the rows
/// share the longest row's chunks per split, which regroups the sums).
pub fn attend_seqs(
    rec: &mut Recorder<'_>,
    inputs: AttnInputs<'_>,
    slots: &[CacheSlot<'_>],
    seqs: &wgpu::Buffer,
    p: &AttentionParams,
    out: &GpuMatrix,
) -> Result<()> {
    let Some(first) = slots.first() else {
        return Err(shape("attention", "no sequences".into()));
    };
    let (cache, layer) = (first.cache, first.layer);
    let n_keys = slots.iter().map(|s| s.pos0 + 1).max().unwrap_or(1);
    check(&inputs, cache, layer, n_keys, p, out)?;
    if let Some(bad) = slots.iter().find(|s| {
        s.layer != layer || !s.cache.shares_layer(cache, layer) || s.pos0 >= s.cache.n_ctx
    }) {
        return Err(shape(
            "attention",
            format!(
                "{} sequences of one arena: position {} of layer {} of a cache of {} \
                 positions (from arena row {}, shared: {}) is not one of layer {layer}'s",
                slots.len(),
                bad.pos0,
                bad.layer,
                bad.cache.n_ctx,
                bad.cache.row0,
                bad.cache.shared,
            ),
        ));
    }
    if inputs.rows.len() != slots.len() || seqs.size() < (slots.len() * 8) as u64 {
        return Err(shape(
            "attention",
            format!(
                "rows {:?} and a table of {} bytes for {} sequences",
                inputs.rows,
                seqs.size(),
                slots.len()
            ),
        ));
    }
    let [k, v] = cache.layers[layer].as_ref().expect("checked above");
    let kv = [k.as_entire_binding(), v.as_entire_binding()];
    let kernel = AttentionKernel::Decode {
        max_splits: DECODE_MAX_SPLITS,
    };
    let place = Place::Table { seqs };
    record(rec, inputs, cache, kv, place, n_keys, p, kernel, out)
}

/// Whether [`attend_seqs`] of `rows` rows of sequences of `cache`'s arena, the longest seeing
/// `n_keys` positions, keeps its partials (one buffer for all rows) within a storage binding;
/// past that (long contexts times many rows) the rows attend one by one.
pub fn seqs_fit(
    ctx: &WgpuContext,
    cache: &KvCache,
    rows: usize,
    n_keys: usize,
    p: &AttentionParams,
) -> bool {
    let key = KernelKey::AttnDecode {
        head_dim: cache.head_dim as u32,
        kv: cache.ty,
        seq_table: true,
    };
    let (n_splits, _) = decode_splits(&key, n_keys, DECODE_MAX_SPLITS);
    let bytes = rows * p.n_heads * n_splits * cache.head_dim * 4;
    ctx.check_size("attention partials", bytes as u64).is_ok()
}

/// Splits of the decode kernel `key` over `n_keys` positions, at most `max_splits`, and chunks
/// of positions per split.
fn decode_splits(key: &KernelKey, n_keys: usize, max_splits: usize) -> (usize, usize) {
    let chunk = key.decode_chunk().expect("decode attention has a chunk");
    let chunks = n_keys.div_ceil(chunk as usize);
    let per_split = chunks.div_ceil(max_splits.max(1));
    (chunks.div_ceil(per_split), per_split)
}

/// Refuses inputs that do not fit `layer` of `cache` or `out` at up to `n_keys` positions.
fn check(
    inputs: &AttnInputs<'_>,
    cache: &KvCache,
    layer: usize,
    n_keys: usize,
    p: &AttentionParams,
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
    let hd = cache.head_dim;
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
        && angles.size() >= (n_keys * n_half * 8) as u64
        && qk_norm.is_none_or(|w| w.iter().all(|w| w.size() >= (hd * 4) as u64))
        && sinks.is_none_or(|s| s.size() >= (p.n_heads * 4) as u64)
        && window.is_none_or(|w| w > 0 && u32::try_from(w).is_ok())
        && (out.rows, out.cols) == (qkv.rows, q_width)
        && rows.end <= qkv.rows
        && [qkv, out].iter().all(|m| m.ty == ActType::F32)
        && cache.layers.get(layer).is_some_and(Option::is_some)
        && !rows.is_empty();
    if ok {
        return Ok(());
    }
    Err(shape(
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
    ))
}

/// Where a batch's tokens are in the cache.
#[derive(Clone, Copy)]
enum Place<'a> {
    /// One sequence: token t at position pos0 + t of the bound region.
    One { pos0: usize },
    /// Token t of sequence t, at the arena row and position `seqs[t]` (`wgsl/attn/seq_table.wgsl`).
    Table { seqs: &'a wgpu::Buffer },
}

/// Records the kernels of [`attend`] (or [`attend_seqs`], by `place`) over the cache bindings
/// `kv`, the longest row seeing `n_keys` positions; the inputs are checked.
#[allow(clippy::too_many_arguments)]
fn record(
    rec: &mut Recorder<'_>,
    inputs: AttnInputs<'_>,
    cache: &KvCache,
    kv: [wgpu::BindingResource<'_>; 2],
    place: Place<'_>,
    n_keys: usize,
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
    let [k_cache, v_cache] = kv;
    let hd = cache.head_dim;
    let n_tokens = rows.len();
    let row0 = rows.start as u32;
    let n_half = p.rope.n_dims / 2;
    let q_width = p.n_heads * hd;
    let group = p.n_heads / p.n_kv_heads;
    let n_rows = n_tokens * group;
    let (pos0, seqs) = match place {
        Place::One { pos0 } => (pos0, None),
        Place::Table { seqs } => (0, Some(("seqs", seqs.as_entire_binding()))),
    };
    let seq_table = seqs.is_some();
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
                seq_table,
            };
            let (n_splits, per_split) = decode_splits(&key, n_keys, max_splits);
            (key, n_splits, per_split)
        }
    };
    let block = key.attention_rows().expect("attention has a row block") as usize;
    // A table's rows are one token's query heads per workgroup.
    let row_blocks = if seq_table { group } else { n_rows }.div_ceil(block);
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
        seq_table,
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
        ("k_cache", k_cache.clone()),
        ("v_cache", v_cache.clone()),
    ];
    if let Some([wq, wk]) = qk_norm {
        bindings.extend([
            ("q_norm", wq.as_entire_binding()),
            ("k_norm", wk.as_entire_binding()),
        ]);
    }
    bindings.extend(seqs.clone());
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
                ("k_cache", k_cache),
                ("v_cache", v_cache),
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
            let mut bindings = vec![
                ("params", params.binding()),
                ("q", q.buffer.as_entire_binding()),
                ("k_cache", k_cache),
                ("v_cache", v_cache),
                ("part_acc", part_acc.as_entire_binding()),
                ("part_ml", part_ml.as_entire_binding()),
            ];
            bindings.extend(seqs);
            // With a table, wg.z is the token (the sequence).
            let z = if seq_table { n_tokens } else { 1 };
            let y = p.n_kv_heads * row_blocks;
            let grid = Grid::Groups3(groups(n_splits), groups(y), groups(z));
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

/// Greatest common divisor.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}
