//! deepseek4's attention kernels (`wgsl/ds4_*.wgsl`), each recorded by one function after
//! checking shapes, and the rotation tables they read:
//!
//! ```text
//! ds4_rope:        heads' last n_rot values rotated in place at their row's position (or back)
//! ds4_index_score: indexer queries (T, heads * dim) x compressed keys (rows, dim) -> (T, rows)
//! ds4_index_pick:  scores -> picks (T, top_k): each token's top-k visible rows, in row order
//! ds4_attend:      q (T, heads * head_dim) over raw keys + compressed rows, with sinks
//! ds4_qat:         keys' non-rotated values through FP8, indexer heads through Hadamard + FP4
//! ```
//!
//! The backend composes them with its matmuls, norms and `compressor_pool` into
//! `Backend::deepseek4_attention` (`crate::backend`), over the cache of
//! [`crate::attention::Deepseek4Cache`].

use moetile::model::deepseek4::{Compression, Deepseek4Config};
use moetile_codegen::params::{Ds4AttnParams, IndexParams, QatParams, RopeTailParams};
use moetile_codegen::{ActType, DS4_MAX_HEAD_DIM, Deepseek4Step, KernelKey};

use crate::buffers::{Buffers, GpuMatrix};
use crate::context::WgpuContext;
use crate::dispatch::Grid;
use crate::error::{Result, shape};
use crate::layout::ExpertTensor;
use crate::pool::{BufferPool, PooledBuffer};
use crate::recorder::Recorder;

/// Radians per position of each rotated pair `k < n_rot / 2` of a deepseek4 rotation, as ggml's
/// `rope_yarn` sets them (mode NORM): `base^(-2k / n_rot)` times `freq_scale`, or with YaRN
/// (`yarn_orig_ctx`) blended towards the unscaled frequency below the correction dims
/// (betas 32 and 1). The magnitude factor YaRN multiplies in is cancelled by deepseek4's
/// `attn_factor`, so the rotation keeps lengths.
pub fn rope_freqs(
    n_rot: usize,
    base: f64,
    freq_scale: f64,
    yarn_orig_ctx: Option<usize>,
) -> Vec<f64> {
    // The pair index at which a wavelength fits `beta` turns into the original context.
    let corr_dim = |ctx: usize, beta: f64| {
        n_rot as f64 * (ctx as f64 / (beta * std::f64::consts::TAU)).ln() / (2.0 * base.ln())
    };
    let ramp = |k: usize| match yarn_orig_ctx {
        None => 0.0,
        Some(ctx) => {
            let lo = corr_dim(ctx, 32.0).floor().max(0.0);
            let hi = corr_dim(ctx, 1.0).ceil().min(n_rot as f64 - 1.0);
            1.0 - ((k as f64 - lo) / (hi - lo).max(0.001)).clamp(0.0, 1.0)
        }
    };
    (0..n_rot / 2)
        .map(|k| {
            let theta = base.powf(-2.0 * k as f64 / n_rot as f64);
            let extrapolated = ramp(k);
            theta * (freq_scale * (1.0 - extrapolated) + extrapolated)
        })
        .collect()
}

/// `(cos, sin)` of `pos * freq` for positions `0..n_positions` and every pair of `freqs`,
/// computed in f64 (f32 angles of large positions would lose digits) and rounded once:
/// the table `ds4_rope` reads, position-major.
pub fn rope_table(freqs: &[f64], n_positions: usize) -> Vec<[f32; 2]> {
    (0..n_positions)
        .flat_map(|pos| {
            freqs.iter().map(move |f| {
                let (sin, cos) = (pos as f64 * f).sin_cos();
                [cos as f32, sin as f32]
            })
        })
        .collect()
}

/// Where the rows of a [`rope`] sit: row r of the matrix is at position `pos0 + r * step`.
#[derive(Debug, Clone, Copy)]
pub struct RopeAt {
    /// Position of row 0.
    pub pos0: usize,
    /// Positions between consecutive rows.
    pub step: usize,
    /// Heads per row, `head_dim` each; the last `n_rot` values of each rotate.
    pub head_dim: usize,
    /// Rotated values per head.
    pub n_rot: usize,
    /// Rotates back (the inverse rotation).
    pub inverse: bool,
}

/// Records `ds4_rope`: the tails of every head of `x` rotated in place (see [`RopeAt`]) with
/// the `(cos, sin)` pairs of `angles` ([`rope_table`], covering every row's position).
pub fn rope(
    rec: &mut Recorder<'_>,
    angles: &wgpu::Buffer,
    x: &GpuMatrix,
    at: RopeAt,
) -> Result<()> {
    let key = KernelKey::Deepseek4(Deepseek4Step::Rope);
    let half = at.n_rot / 2;
    let last = at.pos0 + x.rows.saturating_sub(1) * at.step;
    if x.ty != ActType::F32
        || at.head_dim == 0
        || !x.cols.is_multiple_of(at.head_dim)
        || at.n_rot % 2 == 1
        || at.n_rot > at.head_dim
        || (x.rows > 0 && ((last + 1) * half * 8) as u64 > angles.size())
    {
        return Err(shape(
            key,
            format!(
                "x ({}, {}) {:?}, heads of {} with {} rotated, rows at {} + r * {}, a table of {} \
                 bytes: expected f32 whole heads, an even tail within the head and angles for \
                 every position",
                x.rows,
                x.cols,
                x.ty,
                at.head_dim,
                at.n_rot,
                at.pos0,
                at.step,
                angles.size()
            ),
        ));
    }
    let n_heads = x.cols / at.head_dim;
    let params = rec.params(&RopeTailParams {
        n_rows: x.rows as u32,
        n_heads: n_heads as u32,
        head_dim: at.head_dim as u32,
        n_rot: at.n_rot as u32,
        pos0: at.pos0 as u32,
        pos_step: at.step as u32,
        inverse: u32::from(at.inverse),
        _pad0: 0,
    });
    rec.dispatch(
        &key,
        &[
            ("params", params.binding()),
            ("angles", angles.as_entire_binding()),
            ("x", x.buffer.as_entire_binding()),
        ],
        Grid::Items(x.rows * n_heads * half),
    )
}

/// The first `n_rows` rows of `rows` (`width` wide): a compressor's rows so far, each of
/// `ratio` tokens.
#[derive(Debug, Clone, Copy)]
pub struct CompressedRows<'a> {
    /// Room for the context's rows.
    pub rows: &'a GpuMatrix,
    /// Rows written.
    pub n_rows: usize,
    /// Tokens per row.
    pub ratio: usize,
}

/// What the low-precision simulation does to each head of a matrix ([`qat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// An attention key (raw or compressed): its values before the rotated tail of `n_rot`
    /// through FP8 E4M3 in blocks of 64.
    KeyFp8 {
        /// The rotated tail, kept exact.
        n_rot: usize,
    },
    /// An indexer head (query or compressed key): the Hadamard rotation, then FP4 E2M1 in
    /// blocks of 32.
    IndexerFp4,
}

/// Values sharing one FP8 scale.
const FP8_BLOCK: usize = 64;
/// Values sharing one FP4 scale; also the narrowest indexer head the simulation takes.
pub const FP4_BLOCK: usize = 32;

/// Records `ds4_qat`: every `head_dim`-wide head of `x` rounded in place as `rounding` says.
pub fn qat(
    rec: &mut Recorder<'_>,
    x: &GpuMatrix,
    head_dim: usize,
    rounding: Rounding,
) -> Result<()> {
    let key = KernelKey::Deepseek4(Deepseek4Step::Qat);
    let (n_round, block, format, hadamard) = match rounding {
        Rounding::KeyFp8 { n_rot } => (head_dim.wrapping_sub(n_rot), FP8_BLOCK, 0, false),
        Rounding::IndexerFp4 => (head_dim, FP4_BLOCK, 1, true),
    };
    if x.ty != ActType::F32
        || head_dim == 0
        || head_dim > DS4_MAX_HEAD_DIM as usize
        || n_round > head_dim
        || !x.cols.is_multiple_of(head_dim)
        || (hadamard && !head_dim.is_power_of_two())
    {
        return Err(shape(
            key,
            format!(
                "x ({}, {}) {:?}, heads of {head_dim}, {rounding:?}: expected f32 whole heads of \
                 at most {DS4_MAX_HEAD_DIM} (a power of two for the Hadamard rotation) and a \
                 tail within the head",
                x.rows, x.cols, x.ty
            ),
        ));
    }
    let n_heads = x.rows * x.cols / head_dim;
    let params = rec.params(&QatParams {
        n_heads_total: n_heads as u32,
        head_dim: head_dim as u32,
        n_round: n_round as u32,
        block: block as u32,
        format,
        hadamard: u32::from(hadamard),
        _pad0: 0,
        _pad1: 0,
    });
    rec.dispatch(
        &key,
        &[
            ("params", params.binding()),
            ("x", x.buffer.as_entire_binding()),
        ],
        Grid::Items(n_heads),
    )
}

/// The keys one [`attend`] reads besides the queries.
#[derive(Debug, Clone, Copy)]
pub struct AttendKeys<'a> {
    /// Raw keys, `head_dim` wide: `raw_before` rows before the chunk's own keys, then one per
    /// token (row `raw_before + t` is token t's key).
    pub raw: &'a GpuMatrix,
    /// Rows of `raw` before the chunk's keys.
    pub raw_before: usize,
    /// Raw keys a query sees, its own included.
    pub window: usize,
    /// The layer's compressed rows so far, when it has them.
    pub compressed: Option<CompressedRows<'a>>,
    /// The indexer's picks ([`index_pick`]), when it picks.
    pub picked: Option<Picks<'a>>,
    /// f32 `[heads]`: each head's sink logit.
    pub sinks: &'a wgpu::Buffer,
}

/// The indexer's picks: per token the `top_k` compressed rows it keeps, in row order (u32,
/// `(T, top_k)`; `u32::MAX` after the last where a token sees fewer rows).
#[derive(Debug, Clone, Copy)]
pub struct Picks<'a> {
    /// The lists, [`index_pick`]'s output.
    pub buffer: &'a wgpu::Buffer,
    /// Rows a token keeps.
    pub top_k: usize,
}

/// Records `ds4_attend`: each query head of `q (T, heads * head_dim)` at positions `pos0..`
/// attends with its sink over the raw window and its visible (picked) compressed rows, into
/// `out` (q's shape).
pub fn attend(
    rec: &mut Recorder<'_>,
    q: &GpuMatrix,
    pos0: usize,
    keys: AttendKeys<'_>,
    out: &GpuMatrix,
) -> Result<()> {
    let key = KernelKey::Deepseek4(Deepseek4Step::Attend);
    let hd = keys.raw.cols;
    let (n_comp, ratio) = keys.compressed.map_or((0, 0), |c| (c.n_rows, c.ratio));
    let heads = q.cols.checked_div(hd).unwrap_or(0);
    let fits = hd > 0
        && hd <= DS4_MAX_HEAD_DIM as usize
        && heads > 0
        && q.cols == heads * hd
        && (out.rows, out.cols) == (q.rows, q.cols)
        && keys.raw.rows == keys.raw_before + q.rows
        && keys.window > 0
        && keys.window <= keys.raw_before + 1
        && keys
            .compressed
            .is_none_or(|c| c.rows.cols == hd && c.ratio > 0 && c.n_rows <= c.rows.rows)
        && keys.picked.is_none_or(|p| {
            keys.compressed.is_some() && p.buffer.size() >= (q.rows * p.top_k * 4) as u64
        })
        && keys.sinks.size() >= (heads * 4) as u64;
    if !fits {
        return Err(shape(
            key,
            format!(
                "q ({}, {}), raw keys ({}, {hd}) with {} before the chunk, window {}, {n_comp} \
                 compressed rows at ratio {ratio}, output ({}, {}): expected whole heads of at \
                 most {DS4_MAX_HEAD_DIM}, a raw row per token after at least window - 1, \
                 compressed rows of the heads' width, top-k picks per token where picked \
                 and a sink per head",
                q.rows, q.cols, keys.raw.rows, keys.raw_before, keys.window, out.rows, out.cols
            ),
        ));
    }
    let params = rec.params(&Ds4AttnParams {
        n_tokens: q.rows as u32,
        n_heads: heads as u32,
        head_dim: hd as u32,
        pos0: pos0 as u32,
        window: keys.window as u32,
        raw_before: keys.raw_before as u32,
        ratio: ratio as u32,
        masked: u32::from(keys.picked.is_some()),
        n_comp: n_comp as u32,
        scale: 1.0 / (hd as f32).sqrt(),
        top_k: keys.picked.map_or(0, |p| p.top_k) as u32,
        _pad0: 0,
    });
    // Bindings a layer without compressed rows (or picks) never reads take the raw keys.
    let comp = keys.compressed.map_or(&keys.raw.buffer, |c| &c.rows.buffer);
    let picked: &wgpu::Buffer = keys.picked.map_or(&keys.raw.buffer, |p| p.buffer);
    rec.dispatch(
        &key,
        &[
            ("params", params.binding()),
            ("q", q.buffer.as_entire_binding()),
            ("raw", keys.raw.buffer.as_entire_binding()),
            ("comp", comp.as_entire_binding()),
            ("picked", picked.as_entire_binding()),
            ("sinks", keys.sinks.as_entire_binding()),
            ("out", out.buffer.as_entire_binding()),
        ],
        Grid::Items(q.rows * heads),
    )
}

/// The indexer's inputs for a chunk of tokens at positions `pos0..`.
#[derive(Debug, Clone, Copy)]
pub struct IndexInputs<'a> {
    /// `(T, heads * dim)`: rotated query heads.
    pub q: &'a GpuMatrix,
    /// `(T, heads)`: each head's weight, before `1 / sqrt(heads * dim)`.
    pub weights: &'a GpuMatrix,
    /// The indexer's compressed keys so far, `dim` wide (ratio 4).
    pub keys: CompressedRows<'a>,
    /// Position of the chunk's first token.
    pub pos0: usize,
    /// Rows each token keeps.
    pub top_k: usize,
}

/// Records `ds4_index_score` then `ds4_index_pick`: into `picked` ([`Picks`] of `top_k`),
/// each token's `top_k` visible compressed rows of highest `sum_h relu(q_h . k) w_h`, ties to
/// the earlier row; `scores` (`(T, keys.n_rows)` f32) is scratch.
pub fn index_pick(
    rec: &mut Recorder<'_>,
    inputs: IndexInputs<'_>,
    scores: &GpuMatrix,
    picked: &wgpu::Buffer,
) -> Result<()> {
    let IndexInputs {
        q,
        weights,
        keys,
        pos0,
        top_k,
    } = inputs;
    let key = KernelKey::Deepseek4(Deepseek4Step::IndexScore);
    let (dim, ratio, n_keys) = (keys.rows.cols, keys.ratio, keys.n_rows);
    let heads = weights.cols;
    let n = q.rows * n_keys;
    if dim == 0
        || ratio == 0
        || n_keys > keys.rows.rows
        || q.cols != heads * dim
        || weights.rows != q.rows
        || (scores.rows, scores.cols) != (q.rows, n_keys)
        || picked.size() < (q.rows * top_k * 4) as u64
    {
        return Err(shape(
            key,
            format!(
                "q ({}, {}), weights ({}, {heads}), keys ({}, {dim}), scores ({}, {}), picks of \
                 {} bytes, ratio {ratio}: expected heads of the keys' width, a weight per head \
                 and token, a score per token and key, top-k picks per token",
                q.rows,
                q.cols,
                weights.rows,
                n_keys,
                scores.rows,
                scores.cols,
                picked.size()
            ),
        ));
    }
    let params = rec.params(&IndexParams {
        n_tokens: q.rows as u32,
        n_heads: heads as u32,
        head_dim: dim as u32,
        pos0: pos0 as u32,
        ratio: ratio as u32,
        n_comp: n_keys as u32,
        top_k: top_k.min(u32::MAX as usize) as u32,
        weight_scale: 1.0 / ((heads * dim) as f32).sqrt(),
    });
    rec.dispatch(
        &key,
        &[
            ("params", params.binding()),
            ("q", q.buffer.as_entire_binding()),
            ("keys", keys.rows.buffer.as_entire_binding()),
            ("weights", weights.buffer.as_entire_binding()),
            ("scores", scores.buffer.as_entire_binding()),
        ],
        Grid::Items(n),
    )?;
    rec.dispatch(
        &KernelKey::Deepseek4(Deepseek4Step::IndexPick),
        &[
            ("params", params.binding()),
            ("scores", scores.buffer.as_entire_binding()),
            ("picked", picked.as_entire_binding()),
        ],
        Grid::Items(q.rows),
    )
}

/// The `(cos, sin)` table of one rotation ([`rope_table`]), grown to cover the positions asked
/// for (to the next power of two), so it costs what the context used does.
#[derive(Debug)]
pub(crate) struct AngleTable {
    freqs: Vec<f64>,
    n_positions: usize,
    buffer: Option<PooledBuffer>,
}

impl AngleTable {
    pub(crate) fn new(freqs: Vec<f64>) -> AngleTable {
        AngleTable {
            freqs,
            n_positions: 0,
            buffer: None,
        }
    }

    /// The table, covering positions `0..end` at least (a fresh buffer when it grows: host
    /// data never goes into a buffer an open encoder may use).
    pub(crate) fn covering(&mut self, buffers: Buffers<'_>, end: usize) -> Result<&wgpu::Buffer> {
        if self.buffer.is_none() || self.n_positions < end {
            let n_positions = end.next_power_of_two().max(64);
            let table = rope_table(&self.freqs, n_positions);
            self.buffer =
                Some(buffers.storage_init("deepseek4 rope angles", bytemuck::cast_slice(&table))?);
            self.n_positions = n_positions;
        }
        Ok(self.buffer.as_deref().expect("set above"))
    }
}

/// What a compressor keeps between chunks on the device: its rows so far and the projections
/// of the tokens its next rows still read (the block being filled and, with overlap, the last
/// complete one before it).
#[derive(Debug)]
pub(crate) struct CompressorCache {
    /// Tokens per row.
    pub(crate) ratio: usize,
    /// Ratio 4: a row also pools the block before its own.
    pub(crate) overlap: bool,
    /// Room for every row of the context, `width` wide; the first `n_rows` are written.
    pub(crate) rows: GpuMatrix,
    pub(crate) n_rows: usize,
    /// Value and gate projections (`coff * width` wide) of the carried tokens, room for two
    /// blocks; the first `n_carry` rows hold them, oldest first.
    pub(crate) carry: [GpuMatrix; 2],
    pub(crate) n_carry: usize,
    /// The carried tokens start with a complete block (only read as the previous block).
    pub(crate) has_previous: bool,
}

impl CompressorCache {
    fn new(
        buffers: Buffers<'_>,
        ratio: usize,
        width: usize,
        n_ctx: usize,
        label: &str,
    ) -> Result<CompressorCache> {
        let overlap = ratio == 4;
        let proj = if overlap { 2 * width } else { width };
        let carry = |what| buffers.matrix(2 * ratio, proj, ActType::F32, what);
        Ok(CompressorCache {
            ratio,
            overlap,
            rows: buffers.matrix((n_ctx / ratio).max(1), width, ActType::F32, label)?,
            n_rows: 0,
            carry: [
                carry("compressor carried kv")?,
                carry("compressor carried score")?,
            ],
            n_carry: 0,
            has_previous: false,
        })
    }

    /// Back to an empty sequence.
    fn restart(&mut self) {
        self.n_rows = 0;
        self.n_carry = 0;
        self.has_previous = false;
    }
}

/// One layer's attention state on the device.
#[derive(Debug)]
pub(crate) struct LayerCache {
    /// Positions fed so far.
    pub(crate) pos: usize,
    /// The last `sliding_window - 1` raw keys: row i is position `pos - (window - 1) + i`
    /// (rows of positions below 0 are never read).
    pub(crate) window: GpuMatrix,
    /// The layer's compressor (ratio 4 or 128).
    pub(crate) compressed: Option<CompressorCache>,
    /// Ratio 4: the indexer's compressor.
    pub(crate) index: Option<CompressorCache>,
}

/// deepseek4's attention cache on the device (inside a [`crate::KvCache`]): per layer the raw
/// window, the compressed rows and the compressors' carried projections, so a context costs
/// what the architecture intends (no raw key past the window is kept); the rotation tables;
/// the weightless norm of the query heads.
#[derive(Debug)]
pub struct Deepseek4Cache {
    pub(crate) cfg: Deepseek4Config,
    pub(crate) n_ctx: usize,
    /// Keys and indexer heads rounded as the model was trained (else llama.cpp's numerics).
    pub(crate) qat_sim: bool,
    pub(crate) layers: Vec<LayerCache>,
    /// f32 `[head_dim]` of ones: the query heads' norm has no weight.
    pub(crate) ones: ExpertTensor,
    /// The rotation of layers without compression.
    pub(crate) plain: AngleTable,
    /// The rotation of compressed layers, their compressed rows and their indexer.
    pub(crate) compressed: AngleTable,
}

impl Deepseek4Cache {
    /// An empty cache of `cfg` for `n_ctx` positions, computing as `qat_sim` says. With the
    /// simulation, indexer heads must be a power of two from [`FP4_BLOCK`] to the widest head
    /// the kernels hold.
    pub(crate) fn new(
        ctx: &WgpuContext,
        cfg: &Deepseek4Config,
        n_ctx: usize,
        qat_sim: bool,
    ) -> Result<Self> {
        let dim = cfg.indexer_head_dim;
        let has_indexer = cfg.compression.contains(&Compression::Ratio4);
        let fits = dim.is_power_of_two() && (FP4_BLOCK..=DS4_MAX_HEAD_DIM as usize).contains(&dim);
        if qat_sim && has_indexer && !fits {
            return Err(shape(
                "deepseek4 cache",
                format!(
                    "indexer heads of {dim}: the low-precision simulation rotates them by a \
                     Hadamard transform and rounds them in FP4 blocks of {FP4_BLOCK}, so it \
                     needs a power of two from {FP4_BLOCK} to {DS4_MAX_HEAD_DIM}; run with \
                     --qat-sim off"
                ),
            ));
        }
        // A pool of the cache's own: its buffers are freed when the cache is dropped.
        let pool = BufferPool::default();
        let buffers = Buffers { ctx, pool: &pool };
        let hd = cfg.head_dim;
        let layers = cfg
            .compression
            .iter()
            .map(|c| {
                let window = cfg.sliding_window.saturating_sub(1);
                let compressor = |width, label| match c {
                    Compression::None => Ok(None),
                    _ => CompressorCache::new(buffers, c.ratio(), width, n_ctx, label).map(Some),
                };
                Ok(LayerCache {
                    pos: 0,
                    window: buffers.matrix(window, hd, ActType::F32, "deepseek4 raw window")?,
                    compressed: compressor(hd, "deepseek4 compressed rows")?,
                    index: match c {
                        Compression::Ratio4 => {
                            compressor(cfg.indexer_head_dim, "deepseek4 indexer keys")?
                        }
                        _ => None,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Deepseek4Cache {
            cfg: cfg.clone(),
            n_ctx,
            qat_sim,
            layers,
            ones: ctx.upload_vector("deepseek4 query head norm", &vec![1.0; hd])?,
            plain: AngleTable::new(rope_freqs(cfg.n_rot, cfg.rope_freq_base, 1.0, None)),
            compressed: AngleTable::new(rope_freqs(
                cfg.n_rot,
                cfg.compress_rope_freq_base,
                cfg.compress_freq_scale,
                cfg.yarn.then_some(cfg.yarn_orig_ctx),
            )),
        })
    }

    /// Every buffer a session writes (for poisoning).
    pub(crate) fn buffers(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        self.layers.iter().flat_map(|l| {
            let compressors = l.compressed.iter().chain(&l.index);
            std::iter::once(&*l.window.buffer).chain(
                compressors
                    .flat_map(|c| [&*c.rows.buffer, &*c.carry[0].buffer, &*c.carry[1].buffer]),
            )
        })
    }

    /// Readies layer `il` for a chunk at `pos0`: where its sequence stopped, or 0 to start a
    /// new one (the compressed cache cannot go back).
    pub(crate) fn seek(&mut self, il: usize, pos0: usize) -> moetile::Result<()> {
        self.check_continues(il, pos0)?;
        if pos0 == 0 {
            let layer = &mut self.layers[il];
            layer.pos = 0;
            let compressors = layer.compressed.iter_mut().chain(&mut layer.index);
            compressors.for_each(CompressorCache::restart);
        }
        Ok(())
    }

    /// Fails unless layer `il` can take a chunk at `pos0` ([`Deepseek4Cache::seek`]'s check,
    /// which a batch of sequences makes for every row before recording any).
    pub(crate) fn check_continues(&self, il: usize, pos0: usize) -> moetile::Result<()> {
        let n_layers = self.layers.len();
        let layer = self.layers.get(il).ok_or_else(|| {
            moetile::Error::from(shape(
                "deepseek4_attention",
                format!("layer {il} of a cache of {n_layers} layers"),
            ))
        })?;
        if pos0 != 0 && pos0 != layer.pos {
            return Err(moetile::Error::InvalidSetting {
                name: format!("deepseek4 layer {il} position"),
                value: pos0.to_string(),
                expected: format!(
                    "{} (where the sequence stopped) or 0 (a new sequence): the compressed \
                     cache cannot go back",
                    layer.pos
                ),
            });
        }
        Ok(())
    }
}
