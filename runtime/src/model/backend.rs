//! The op interface of a backend. The forward graph in [`crate::model`] is written once against
//! it; `moetile-cpu` implements it with plain loops (the reference), `moetile-wgpu` with WGSL.
//!
//! Conventions: an activation is a row-major f32 matrix of `rows x cols` (rows are tokens, or
//! `(token, k)` pairs inside the MoE op). Weights keep GGML's dimension order: `dims[0]` is the
//! contiguous row length (the input width), `dims[1]` the output rows, `dims[2]` the experts.
//! Letters: T tokens, D hidden width, E experts, K experts per token, F expert width.

use crate::model::deepseek4::{AttentionWeights as Deepseek4Attention, Deepseek4Config};
use crate::model::gptoss::GptOssAttentionParams;
use crate::model::qwen35moe::{DeltaNetConfig, DeltaNetWeights, Qwen35MoeConfig};
use crate::quant::GgmlType;
use crate::tile::TileWidth;
use crate::{Error, Result};

/// A weight tensor as the GGUF stores it, borrowed from the memory map.
#[derive(Debug, Clone, Copy)]
pub struct WeightData<'a> {
    /// Tensor name, for error messages and GPU labels.
    pub name: &'a str,
    /// Element type.
    pub ty: GgmlType,
    /// GGML order: `[cols, rows, experts]`, trailing ones omitted.
    pub dims: &'a [usize],
    /// The raw blocks, exactly as stored.
    pub bytes: &'a [u8],
}

/// Rotary position embedding parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RopeParams {
    /// Rotated dimensions per head (the first `n_dims`; the rest pass through).
    pub n_dims: usize,
    /// Frequency base (`rope.freq_base`).
    pub freq_base: f32,
    /// Position scale for linear scaling (1 / `rope.scaling.factor`), 1 when unscaled.
    pub freq_scale: f32,
    /// NeoX layout rotates pairs `(i, i + n_dims/2)`; the normal layout rotates `(2i, 2i+1)`.
    pub neox: bool,
}

/// A Gated DeltaNet layer's shape and the epsilon of its norms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeltaNetParams {
    /// Heads, widths and convolution taps.
    pub shape: DeltaNetConfig,
    /// Epsilon of the q/k L2 norms (added to the sum of squares, as llama.cpp does) and of the
    /// gated RMS norm.
    pub eps: f32,
}

/// Grouped-query attention of one layer: its shape and how q and k are prepared.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionParams {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (divides `n_heads`).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Logit scale, usually `1 / sqrt(head_dim)`.
    pub scale: f32,
    /// The rotary embedding of q and k.
    pub rope: RopeParams,
    /// Epsilon of the per-head q and k RMS norms (when the layer has them).
    pub norm_eps: f32,
}

/// How router logits become expert probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gating {
    /// Softmax over all experts, then top-K.
    Softmax,
    /// Independent sigmoid per expert, then top-K.
    Sigmoid,
    /// `sqrt(softplus(logit))` per expert, softplus being the logit itself above 20 as ggml
    /// cuts it (deepseek4, `expert_gating_func` 4).
    SqrtSoftplus,
}

/// How the router picks each token's K experts; the route weights are always the chosen
/// experts' gates ([`Gating`]).
#[derive(Debug)]
pub enum Selection<'a, W> {
    /// The K largest gates.
    TopK,
    /// The K largest of gate + bias (f32 `[E]`, DeepSeek's `exp_probs_b`): the bias moves
    /// the choice, not the weights.
    Biased(&'a W),
    /// Fixed experts per token id (deepseek4's hash-routed layers): row `tokens[t]` of `table`
    /// (V, K) row-major, `ffn_gate_tid2eid` as the file stores it. The table stays on the
    /// host: [`hashed_ids`] gathers the T rows a batch needs, as many values as its token ids.
    Hashed {
        /// (V, K) expert ids, row-major.
        table: &'a [u32],
        /// T token ids.
        tokens: &'a [u32],
    },
}

// By hand: a derive would ask `W: Copy`, though only references to W are copied.
impl<W> Clone for Selection<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W> Copy for Selection<'_, W> {}

/// The (T, K) expert ids of a [`Selection::Hashed`] batch, every token and id checked.
pub fn hashed_ids(table: &[u32], tokens: &[u32], n_experts: usize, k: usize) -> Result<Vec<u32>> {
    let shape = |detail: String| crate::Error::Shape {
        op: "route".into(),
        detail,
    };
    if k == 0 || !table.len().is_multiple_of(k) {
        return Err(shape(format!(
            "a hash table of {} ids is not rows of K = {k}",
            table.len()
        )));
    }
    let mut ids = Vec::with_capacity(tokens.len() * k);
    for &token in tokens {
        let row = table.chunks_exact(k).nth(token as usize).ok_or_else(|| {
            shape(format!(
                "token {token} is outside the hash table's {} rows",
                table.len() / k
            ))
        })?;
        if let Some(&bad) = row.iter().find(|&&e| e as usize >= n_experts) {
            return Err(shape(format!(
                "the hash table gives token {token} expert {bad} of {n_experts}"
            )));
        }
        ids.extend_from_slice(row);
    }
    Ok(ids)
}

/// Router settings of an MoE layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouterParams {
    /// K: experts each token is routed to.
    pub n_experts_used: usize,
    /// Softmax or sigmoid gating.
    pub gating: Gating,
    /// Renormalise the K selected weights to sum to one.
    pub normalize: bool,
    /// Factor applied to the final route weights (1 for most models).
    pub weight_scale: f32,
}

/// The expert activation between up/gate and down.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ExpertActivation {
    /// `silu(g) * u`.
    SwiGlu,
    /// DeepSeek-V4-Flash flavour: `silu(min(g, limit)) * clamp(u, -limit, limit)`.
    SwiGluClamped {
        /// The clamp limit (10 in DeepSeek-V4-Flash).
        limit: f32,
    },
    /// gpt-oss flavour: with `g = min(g, limit)`, `g * sigmoid(alpha * g) * (clamp(u, -limit,
    /// limit) + 1)`.
    SwiGluOai {
        /// The sigmoid's slope (1.702).
        alpha: f32,
        /// The clamp limit (7).
        limit: f32,
    },
}

/// Settings of one routed-MoE evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoeParams {
    /// The activation applied before `down`.
    pub activation: ExpertActivation,
    /// Token-tile width of the grouped matmuls (backends without tiles ignore it).
    pub tile: TileWidth,
}

/// A routed-MoE layer's gate and up expert tensors, as the backend uploaded them
/// ([`Backend::upload_gate_up`]).
#[derive(Debug, Clone, PartialEq)]
pub enum GateUp<W> {
    /// Two tensors, each `[D, F, E]`.
    Separate {
        /// `[D, F, E]`.
        gate: W,
        /// `[D, F, E]`.
        up: W,
    },
    /// One `[D, 2F, E]` tensor whose row `2i` of each expert is gate row `i` and row `2i + 1`
    /// up row `i`: one matmul computes both, and each (gate, up) pair of outputs is adjacent.
    Interleaved(W),
}

impl<W> GateUp<W> {
    /// The same form, borrowing.
    pub fn as_ref(&self) -> GateUp<&W> {
        match self {
            GateUp::Separate { gate, up } => GateUp::Separate { gate, up },
            GateUp::Interleaved(w) => GateUp::Interleaved(w),
        }
    }
}

/// Per-expert biases of a routed-MoE layer (gpt-oss), f32, added to each expert's gate, up
/// and down outputs.
#[derive(Debug)]
pub struct ExpertBiases<W> {
    /// `[F, E]`.
    pub gate: W,
    /// `[F, E]`.
    pub up: W,
    /// `[D, E]`.
    pub down: W,
}

/// The expert tensors of a routed-MoE layer, each `[cols, rows, E]`.
#[derive(Debug)]
pub struct ExpertWeights<'a, W> {
    /// gate and up: `[D, F, E]` each, or `[D, 2F, E]` interleaved.
    pub gate_up: &'a GateUp<W>,
    /// `[F, D, E]`.
    pub down: &'a W,
}

// By hand: a derive would ask `W: Copy`, though only references to W are copied.
impl<W> Clone for ExpertWeights<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W> Copy for ExpertWeights<'_, W> {}

/// An RMS norm applied by the op that reads its input ([`Backend::project`], [`Backend::moe`]):
/// the op sees `rms_norm(x) * weight` where it reads `x`. A backend may fold it into its
/// kernels (each computes the row's RMS as it reads the row) instead of writing the normed rows
/// out first.
#[derive(Debug)]
pub struct PreNorm<'a, W> {
    /// f32 `[cols]`.
    pub weight: &'a W,
    /// Added to the mean square.
    pub eps: f32,
}

// By hand: a derive would ask `W: Copy`, though only a reference to W is copied.
impl<W> Clone for PreNorm<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W> Copy for PreNorm<'_, W> {}

/// Streams of an mHC hyper-connection (deepseek4): a token's hidden state is this many
/// residual streams of width D, side by side in one `(T, HC_STREAMS * D)` activation.
pub const HC_STREAMS: usize = 4;

/// Mixing values of a sub-block's hyper-connection per token: `HC_STREAMS` pre weights,
/// `HC_STREAMS` post weights, then the `HC_STREAMS x HC_STREAMS` comb matrix (row `src`,
/// column `dst`: the share of old stream `src` in new stream `dst`).
pub const HC_MIXES: usize = (2 + HC_STREAMS) * HC_STREAMS;

/// The weights of one mHC hyper-connection (deepseek4's `blk.N.hc_{attn,ffn}_*`).
#[derive(Debug)]
pub struct HyperWeights<'a, W> {
    /// `[HC_STREAMS * D, HC_MIXES]` (`_fn`): the raw mixes from a token's RMS-normed streams
    /// (a norm without weight, over all `HC_STREAMS * D` values at once).
    pub func: &'a W,
    /// f32 `[3]` (`_scale`): the factor of the pre, post and comb mixes.
    pub scale: &'a W,
    /// f32 `[HC_MIXES]` (`_base`): added to each mix after its factor.
    pub base: &'a W,
}

// By hand: a derive would ask `W: Copy`, though only references to W are copied.
impl<W> Clone for HyperWeights<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W> Copy for HyperWeights<'_, W> {}

/// The settings of a hyper-connection (`hyper_connection.*` keys).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HyperParams {
    /// Epsilon of the RMS norm of the streams (`attention.layer_norm_rms_epsilon`).
    pub rms_eps: f32,
    /// Added to each pre weight and to the comb softmax and every Sinkhorn sum.
    pub eps: f32,
    /// Sinkhorn column passes (at least 1).
    pub sinkhorn_iterations: usize,
}

/// The weights of a deepseek4 compressor's pooling (`blk.N.attn_compressor_*`,
/// `blk.N.indexer_compressor_*`).
#[derive(Debug)]
pub struct PoolWeights<'a, W> {
    /// f32 `[coff * width, ratio]` (`_ape`): a score bias per place in the block.
    pub ape: &'a W,
    /// f32 `[width]` (`_norm`): the pooled row's RMS norm weight.
    pub norm: &'a W,
}

// By hand: a derive would ask `W: Copy`, though only references to W are copied.
impl<W> Clone for PoolWeights<'_, W> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<W> Copy for PoolWeights<'_, W> {}

/// The settings of a compressor's pooling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolParams {
    /// Tokens per block (`attention.compress_ratios`: 4 or 128).
    pub ratio: usize,
    /// Whether a row pools the block before its own too (ratio 4): projections are then
    /// `2 * width` wide, the previous block read through the first half, its own block
    /// through the second.
    pub overlap: bool,
    /// With overlap: whether the input's first block is only the previous block of the first
    /// row (a later chunk of a sequence); without it the first row has none (the first block
    /// of a sequence, which pools only its own).
    pub previous: bool,
    /// Epsilon of the pooled row's RMS norm.
    pub rms_eps: f32,
}

/// Where in the forward pass the ops that follow belong, for profilers ([`Backend::stage`]).
/// A residual add belongs to the op that produces what is added, a norm to the first op that
/// reads its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Token embedding lookup.
    Embed,
    /// The RMS norm before attention and the q, k and v projections (and their biases).
    QkvProj,
    /// Per-head q/k RMS norms (qwen3), rotary embedding of q and k, KV-cache append and
    /// attention.
    Attention,
    /// Attention output projection and its residual add.
    OutProj,
    /// The RMS norm before the FFN, router logits, gating and top-K.
    Router,
    /// Routed experts and their residual add; backends may label sub-stages (map, gate, up,
    /// act, down, sum).
    Experts,
    /// The shared expert, its gate, and its residual add (qwen2moe).
    SharedExpert,
    /// The RMS norm before the FFN, a dense SwiGLU FFN and its residual add.
    DenseFfn,
    /// The final norm and the output projection.
    OutputHead,
}

impl Stage {
    /// Every stage, in forward order.
    pub const ALL: [Stage; 9] = [
        Stage::Embed,
        Stage::QkvProj,
        Stage::Attention,
        Stage::OutProj,
        Stage::Router,
        Stage::Experts,
        Stage::SharedExpert,
        Stage::DenseFfn,
        Stage::OutputHead,
    ];

    /// A short snake_case name (`"qkv_proj"`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Embed => "embed",
            Stage::QkvProj => "qkv_proj",
            Stage::Attention => "attention",
            Stage::OutProj => "out_proj",
            Stage::Router => "router",
            Stage::Experts => "experts",
            Stage::SharedExpert => "shared_expert",
            Stage::DenseFfn => "dense_ffn",
            Stage::OutputHead => "output_head",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The ops a forward pass needs. Every method may queue work; [`Backend::read`] waits for it.
pub trait Backend {
    /// An activation matrix living on the backend.
    type Act;
    /// An uploaded weight tensor.
    type Weight;
    /// Per-layer key/value cache.
    type KvCache;
    /// Router output of one layer: K expert ids and weights per token.
    type Routing;

    /// Human-readable description (adapter name, backend).
    fn describe(&self) -> String;
    /// Marks the start of `stage` of block `layer` (`None` for the embedding and the output
    /// head): the ops until the next call belong to it. The forward graph calls this so a
    /// profiling backend can attribute time; the default does nothing.
    fn stage(&mut self, _stage: Stage, _layer: Option<usize>) {}
    /// The largest batch the routed experts run as mat-vec products rather than tiled
    /// matmuls (decode and tiny batches, where a token tile would be mostly empty); such
    /// batches use no tile width. The default, 0, means every batch is tiled.
    fn mat_vec_max_tokens(&self) -> usize {
        0
    }
    /// `(rows, cols)` of an activation.
    fn shape(&self, x: &Self::Act) -> (usize, usize);
    /// Copies a host matrix in (tests and embedders feeding their own activations).
    fn act_from_host(&mut self, rows: usize, cols: usize, data: &[f32]) -> Result<Self::Act>;
    /// Copies an activation out, waiting for all queued work.
    fn read(&mut self, x: &Self::Act) -> Result<Vec<f32>>;

    /// Converts a tensor into the backend's own layout.
    fn upload(&mut self, w: WeightData<'_>) -> Result<Self::Weight>;
    /// Converts a routed-MoE layer's gate and up expert tensors (`[D, F, E]` each) into the
    /// backend's layout: a backend may interleave them into one tensor
    /// ([`GateUp::Interleaved`]) so one matmul computes both. The default uploads them
    /// separately.
    fn upload_gate_up(
        &mut self,
        gate: WeightData<'_>,
        up: WeightData<'_>,
    ) -> Result<GateUp<Self::Weight>> {
        Ok(GateUp::Separate {
            gate: self.upload(gate)?,
            up: self.upload(up)?,
        })
    }
    /// Gets ready to run the forward pass of `config` on the weights uploaded so far,
    /// reporting `(done, total)` steps: a GPU backend creates its pipelines here rather than in
    /// the middle of the first forward pass. Called after [`super::Model::load`] by whoever
    /// wants the work done up front; the default does nothing.
    fn prepare(
        &mut self,
        _config: &super::ModelConfig,
        _progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        Ok(())
    }
    /// An empty cache for `n_layers` layers of up to `n_ctx` positions.
    fn kv_cache(
        &mut self,
        n_layers: usize,
        n_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Result<Self::KvCache>;

    /// `n` empty caches like [`Backend::kv_cache`]'s, for sequences decoded together
    /// ([`Backend::attention_batch`]): a backend may lay them out so their rows attend in one
    /// go (the wgpu backend's KV arena). Each is used as an ordinary cache.
    fn kv_caches(
        &mut self,
        n: usize,
        n_layers: usize,
        n_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Result<Vec<Self::KvCache>> {
        (0..n)
            .map(|_| self.kv_cache(n_layers, n_ctx, n_kv_heads, head_dim))
            .collect()
    }

    /// Rows of an embedding table `[D, vocab]`: `(T, D)`.
    fn embed(&mut self, table: &Self::Weight, tokens: &[u32]) -> Result<Self::Act>;
    /// RMS norm of every group of `w.len` values of each row, times `w` (f32 `[n]`). A row of
    /// `h * n` values is normalised per head, as the q/k norms of qwen3 need.
    fn rms_norm(&mut self, x: &Self::Act, w: &Self::Weight, eps: f32) -> Result<Self::Act>;
    /// `x (T, cols) @ w[cols, rows]^T -> (T, rows)`.
    fn matmul(&mut self, x: &Self::Act, w: &Self::Weight) -> Result<Self::Act>;
    /// `h (T, cols) @ [w_0; w_1; ...]^T` with `h = rms_norm(x) * norm` (or x): the outputs of
    /// weights stacked by rows, side by side in one `(T, rows_0 + rows_1 + ...)` activation (q,
    /// k and v of a layer; one weight for the router and the output head).
    fn project(
        &mut self,
        x: &Self::Act,
        norm: Option<PreNorm<'_, Self::Weight>>,
        ws: &[Self::Weight],
    ) -> Result<Self::Act>;
    /// `x += a @ w^T`: a projection and the residual add after it, which a backend may fuse.
    /// The default is the plain composition.
    fn matmul_add(&mut self, x: &mut Self::Act, a: &Self::Act, w: &Self::Weight) -> Result<()> {
        let y = self.matmul(a, w)?;
        self.add(x, &y)
    }
    /// `x[t, :] += b` for every row; `b` is f32 `[cols]`.
    fn add_bias(&mut self, x: &mut Self::Act, b: &Self::Weight) -> Result<()>;
    /// One layer's attention from its projections: row t of `qkv` holds q (`n_heads` heads),
    /// k and v (`n_kv_heads` heads each) side by side. Each head of q and k is RMS-normed by
    /// `qk_norm` (when given: the q and k weights, one head long) and rotated by `p.rope` as
    /// position `pos0 + t`; k and v are stored at positions `pos0..pos0+T` of `layer`; then q
    /// attends causally over positions `0..=pos0+t`: `(T, n_heads * head_dim)`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        qkv: &Self::Act,
        qk_norm: Option<[&Self::Weight; 2]>,
        kv: &mut Self::KvCache,
        layer: usize,
        pos0: usize,
        p: &AttentionParams,
    ) -> Result<Self::Act>;
    /// Whether one forward pass over a new token of each of several sequences (rows that
    /// attend through [`attention_batch`](Self::attention_batch)) costs less here than a pass
    /// per sequence: a server then decodes its active sequences together, and the expert
    /// matmuls see all their tokens at once.
    fn batches_sequences(&self) -> bool {
        false
    }
    /// [`attention`](Self::attention) over rows of different sequences: row i of `qkv` is one
    /// new token of the sequence cached in `kvs[i]`, at position `positions[i]`. The default
    /// runs each row on its own through host memory: right on every backend, and cheap only
    /// where host memory is the backend's own.
    #[allow(clippy::too_many_arguments)]
    fn attention_batch(
        &mut self,
        qkv: &Self::Act,
        qk_norm: Option<[&Self::Weight; 2]>,
        kvs: &mut [&mut Self::KvCache],
        positions: &[usize],
        layer: usize,
        p: &AttentionParams,
    ) -> Result<Self::Act> {
        rows_apart(
            self,
            "attention_batch",
            qkv,
            kvs,
            positions,
            |b, row, kv, pos0| b.attention(row, qk_norm, kv, layer, pos0, p),
        )
    }
    /// `x += y`.
    fn add(&mut self, x: &mut Self::Act, y: &Self::Act) -> Result<()>;
    /// `silu(gate) * up`, element-wise.
    fn swiglu(&mut self, gate: &Self::Act, up: &Self::Act) -> Result<Self::Act>;
    /// `x[t, :] *= sigmoid(g[t, 0])` for a `g` of one column (the shared-expert gate of
    /// qwen2moe and qwen35moe), `x *= sigmoid(g)` element-wise for a `g` of x's shape
    /// (qwen35moe's attention output gate). A backend may refuse the second with a shape error.
    fn mul_sigmoid(&mut self, x: &mut Self::Act, g: &Self::Act) -> Result<()>;
    /// The last row of `x`: `(1, cols)`, so the output head runs on one token while decoding.
    fn last_row(&mut self, x: &Self::Act) -> Result<Self::Act>;

    /// The `pre` step of an mHC hyper-connection over `streams (T, HC_STREAMS * D)`: per token,
    /// the mixes `m = func @ rms_norm(streams[t])` (no norm weight), then with `a_i = m_i *
    /// scale[family(i)] + base_i`: pre weights `sigmoid(a) + eps`, post weights `2 sigmoid(a)`,
    /// comb a row softmax of `a` plus eps made doubly stochastic by `p.sinkhorn_iterations`
    /// Sinkhorn passes. Returns the sub-block input `sum_s pre[s] * streams[t][s]` `(T, D)`
    /// and those mixing values `(T, HC_MIXES)` (see [`HC_MIXES`]), which [`Backend::hc_post`]
    /// reads.
    fn hc_pre(
        &mut self,
        streams: &Self::Act,
        w: HyperWeights<'_, Self::Weight>,
        p: &HyperParams,
    ) -> Result<(Self::Act, Self::Act)>;
    /// The `post` step: the sub-block output `out (T, D)` written back into `streams (T,
    /// HC_STREAMS * D)` with the mixing values `mix (T, HC_MIXES)` of [`Backend::hc_pre`]:
    /// `new[dst] = post[dst] * out + sum_src comb[src][dst] * old[src]`.
    fn hc_post(&mut self, streams: &mut Self::Act, out: &Self::Act, mix: &Self::Act) -> Result<()>;
    /// The output head's mix of the streams `(T, HC_STREAMS * D)` into one row per token `(T,
    /// D)`, before the output norm: [`Backend::hc_pre`]'s input with only its pre weights
    /// (`w.func` is `[HC_STREAMS * D, HC_STREAMS]`, `w.scale` one factor, `w.base`
    /// `HC_STREAMS` values; the head has no post weights and no comb, so
    /// `p.sinkhorn_iterations` is not read).
    fn hc_head(
        &mut self,
        streams: &Self::Act,
        w: HyperWeights<'_, Self::Weight>,
        p: &HyperParams,
    ) -> Result<Self::Act>;

    /// The hyper-connection streams a token starts with: each of the [`HC_STREAMS`] streams
    /// its embedding, `x (T, D) -> (T, HC_STREAMS * D)`.
    fn hc_expand(&mut self, x: &Self::Act) -> Result<Self::Act>;

    /// A deepseek4 compressor's rows from projected tokens: `kv` and `score (T, coff * width)`
    /// (`coff` 2 with `p.overlap`, else 1) are the value and gate projections of consecutive
    /// tokens from a block start, T a multiple of `p.ratio`. Per row of a block of `p.ratio`
    /// tokens (the first block skipped when `p.previous`), per column c: with `s_j = score_j +
    /// ape[j % ratio]` over the block's tokens (their last `width` columns) and, with overlap,
    /// the block before's (their first `width`), `pooled[c] = sum_j softmax(s)_j kv_j`; then
    /// `rms_norm(pooled) * norm`. Returns `(T / ratio - previous, width)`.
    fn compressor_pool(
        &mut self,
        kv: &Self::Act,
        score: &Self::Act,
        w: PoolWeights<'_, Self::Weight>,
        p: &PoolParams,
    ) -> Result<Self::Act>;

    /// A block-diagonal projection (deepseek4's `attn_output_a`): `w [cols, rows]` has its rows
    /// cut into `groups` equal consecutive parts, part g reading the g-th `cols` values of each
    /// row of `x (T, groups * cols)`, so row `g * rows / groups + r` of the output `(T, rows)`
    /// is `w[g * rows / groups + r] . x[t][g * cols..(g + 1) * cols]`.
    fn grouped_matmul(
        &mut self,
        x: &Self::Act,
        w: &Self::Weight,
        groups: usize,
    ) -> Result<Self::Act>;

    /// Router: logits `(T, E)` -> K expert ids and weights per token: the experts `selection`
    /// picks (ties to the lower id), weighted by their gates, divided by the gates' sum (at
    /// least 2^-14, ggml's floor) when `p.normalize`, times `p.weight_scale`.
    fn route(
        &mut self,
        logits: &Self::Act,
        selection: Selection<'_, Self::Weight>,
        p: &RouterParams,
    ) -> Result<Self::Routing>;
    /// A routing given on the host: `ids` and `weights` are `(T, K)` row-major.
    fn routing_from_host(
        &mut self,
        n_experts: usize,
        k: usize,
        ids: &[u32],
        weights: &[f32],
    ) -> Result<Self::Routing>;
    /// Copies a routing out: `(ids, weights)`, each `(T, K)` row-major.
    fn read_routing(&mut self, r: &Self::Routing) -> Result<(Vec<u32>, Vec<f32>)>;
    /// The routed experts added into the residual stream `x (T, D)`: with `h = rms_norm(x) *
    /// norm` (or x) as it was before the add, `x[t] += sum_k w[t,k] * down[e] @ act(gate[e] @
    /// h[t], up[e] @ h[t])` with `e = ids[t, k]`.
    fn moe(
        &mut self,
        x: &mut Self::Act,
        norm: Option<PreNorm<'_, Self::Weight>>,
        routing: &Self::Routing,
        experts: ExpertWeights<'_, Self::Weight>,
        p: &MoeParams,
    ) -> Result<()>;
    /// The routed experts' output alone, `(T, D)`: what [`Backend::moe`] adds into `x`, here
    /// read from `h` (normed by `norm` when given) and returned (deepseek4, whose FFN output
    /// goes through a hyper-connection rather than into a residual).
    fn moe_out(
        &mut self,
        h: &Self::Act,
        norm: Option<PreNorm<'_, Self::Weight>>,
        routing: &Self::Routing,
        experts: ExpertWeights<'_, Self::Weight>,
        p: &MoeParams,
    ) -> Result<Self::Act>;

    /// Whether this backend implements gpt-oss's ops ([`Backend::gptoss_attention`] and
    /// [`Backend::moe_biased`]): [`super::Model::load`] asks before uploading a gpt-oss model.
    /// The default is no.
    fn runs_gptoss(&self) -> bool {
        false
    }

    /// [`Backend::attention`] as gpt-oss runs it (no q/k norms): q and k rotated by
    /// `p.attn.rope` extended by `p.yarn`, k and v stored at positions `pos0..pos0+T` of
    /// `layer`; then per head h the softmax's denominator also holds `exp(sinks[h])` (`sinks`
    /// f32 `[n_heads]`, a logit with no value), and with `p.window` a query at position q sees
    /// only the keys at `q - window + 1..=q`: `(T, n_heads * head_dim)`.
    #[allow(clippy::too_many_arguments)]
    fn gptoss_attention(
        &mut self,
        qkv: &Self::Act,
        sinks: &Self::Weight,
        kv: &mut Self::KvCache,
        layer: usize,
        pos0: usize,
        p: &GptOssAttentionParams,
    ) -> Result<Self::Act> {
        let _ = (qkv, sinks, kv, layer, pos0, p);
        Err(no_gptoss(self))
    }

    /// [`gptoss_attention`](Self::gptoss_attention) over rows of different sequences, as
    /// [`attention_batch`](Self::attention_batch) is [`attention`](Self::attention)'s; the
    /// default runs each row on its own through host memory.
    #[allow(clippy::too_many_arguments)]
    fn gptoss_attention_batch(
        &mut self,
        qkv: &Self::Act,
        sinks: &Self::Weight,
        kvs: &mut [&mut Self::KvCache],
        positions: &[usize],
        layer: usize,
        p: &GptOssAttentionParams,
    ) -> Result<Self::Act> {
        rows_apart(
            self,
            "gptoss_attention_batch",
            qkv,
            kvs,
            positions,
            |b, row, kv, pos0| b.gptoss_attention(row, sinks, kv, layer, pos0, p),
        )
    }

    /// [`Backend::moe`] with per-expert biases: expert e's gate and up outputs get
    /// `biases.gate[e]` and `biases.up[e]` before the activation, its down output
    /// `biases.down[e]` before the route weight.
    fn moe_biased(
        &mut self,
        x: &mut Self::Act,
        norm: Option<PreNorm<'_, Self::Weight>>,
        routing: &Self::Routing,
        experts: ExpertWeights<'_, Self::Weight>,
        biases: &ExpertBiases<Self::Weight>,
        p: &MoeParams,
    ) -> Result<()> {
        let _ = (x, norm, routing, experts, biases, p);
        Err(no_gptoss(self))
    }

    /// Whether this backend implements qwen35moe's Gated DeltaNet ([`Backend::qwen35moe_cache`],
    /// [`Backend::delta_net`]) and [`Backend::mul_sigmoid`]'s element-wise form:
    /// [`super::Model::load`] asks before uploading a qwen35moe model. The default is no.
    fn runs_delta_net(&self) -> bool {
        false
    }

    /// An empty cache for a qwen35moe session of `n_ctx` positions: keys and values of its
    /// attention layers (`n_kv_heads` of `head_dim`) and, per DeltaNet layer, the last
    /// `conv_taps - 1` inputs of the convolution and each value head's `head_dim x head_dim`
    /// state, all zero. The state holds a whole prefix in a fixed size, so the cache cannot
    /// rewind: it continues where it stopped, or restarts at position 0.
    fn qwen35moe_cache(
        &mut self,
        cfg: &Qwen35MoeConfig,
        n_ctx: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Result<Self::KvCache> {
        let _ = (cfg, n_ctx, n_kv_heads, head_dim);
        Err(no_delta_net(self))
    }

    /// Gated DeltaNet of layer `layer` for T tokens at positions `pos0..`, continuing the
    /// layer's state in `kv` (position 0 starts from zeros). `proj` (T, channels + values +
    /// 2 value heads) is `[qkv | z | beta | alpha]` ([`DeltaNetWeights::in_proj`]). Per token:
    /// `qkv` through the causal depthwise convolution (`w.conv`, its earlier inputs from the
    /// cache) and SiLU; q and k L2-normed per key head, q scaled by `1/sqrt(head_dim)`; per
    /// value head h (reading key head `h % n_k_heads`), with decay
    /// `g = exp(softplus(alpha + dt_bias) * a)` and `beta = sigmoid(beta)`, the gated delta rule
    /// `S = g S; S += k (beta (v - S^T k))^T; o = S^T q`; then `o` RMS-normed per head times
    /// `w.norm` times `silu(z)`. Returns (T, values), before `ssm_out`.
    fn delta_net(
        &mut self,
        proj: &Self::Act,
        w: &DeltaNetWeights<Self::Weight>,
        kv: &mut Self::KvCache,
        layer: usize,
        pos0: usize,
        p: &DeltaNetParams,
    ) -> Result<Self::Act> {
        let _ = (proj, w, kv, layer, pos0, p);
        Err(no_delta_net(self))
    }
    /// [`delta_net`](Self::delta_net) over rows of different sequences: row i of `proj` is one
    /// new token of the sequence cached in `kvs[i]`, at position `positions[i]`, continuing
    /// that cache's state of `layer`. The default runs each row on its own through host memory,
    /// as [`attention_batch`](Self::attention_batch)'s does.
    fn delta_net_batch(
        &mut self,
        proj: &Self::Act,
        w: &DeltaNetWeights<Self::Weight>,
        kvs: &mut [&mut Self::KvCache],
        positions: &[usize],
        layer: usize,
        p: &DeltaNetParams,
    ) -> Result<Self::Act> {
        rows_apart(
            self,
            "delta_net_batch",
            proj,
            kvs,
            positions,
            |b, row, kv, pos0| b.delta_net(row, w, kv, layer, pos0, p),
        )
    }

    /// Whether this backend implements deepseek4's attention ([`Backend::deepseek4_cache`],
    /// [`Backend::deepseek4_attention`]): [`super::Model::load`] asks before uploading a
    /// deepseek4 model, so a backend that cannot run it refuses before any work. The default
    /// is no.
    fn runs_deepseek4(&self) -> bool {
        false
    }
    /// An empty deepseek4 cache for up to `n_ctx` positions: per layer, what its attention
    /// reads of earlier positions (the raw window's keys, the compressed rows, the
    /// compressors' unfinished blocks). `qat_sim` chooses whether keys and indexer heads are
    /// rounded as the model was trained (FP8, FP4) or kept exact (llama.cpp's graph). The
    /// default refuses: a backend without deepseek4's attention says so before any work.
    fn deepseek4_cache(
        &mut self,
        cfg: &Deepseek4Config,
        n_ctx: usize,
        qat_sim: bool,
    ) -> Result<Self::KvCache> {
        let _ = (cfg, n_ctx, qat_sim);
        Err(no_deepseek4_attention(self))
    }
    /// deepseek4's attention sub-block of layer `layer` for the tokens at positions `pos0..`
    /// of `kv` (a [`Backend::deepseek4_cache`]), from their normed input `x (T, D)`: low-rank
    /// queries with a weightless per-head norm, one shared key/value head, per-head sinks,
    /// the raw window plus the compressed rows (those the indexer picks in a ratio-4 layer),
    /// RoPE on the heads' tails and its inverse on the outputs, the grouped low-rank output:
    /// `(T, D)`. A sequence is fed in order from position 0; `pos0` 0 starts a new one.
    fn deepseek4_attention(
        &mut self,
        x: &Self::Act,
        w: &Deepseek4Attention<Self::Weight>,
        kv: &mut Self::KvCache,
        layer: usize,
        pos0: usize,
    ) -> Result<Self::Act> {
        let _ = (x, w, kv, layer, pos0);
        Err(no_deepseek4_attention(self))
    }
    /// [`deepseek4_attention`](Self::deepseek4_attention) over rows of different sequences:
    /// row i of `x` is one new token of the sequence cached in `kvs[i]`, at position
    /// `positions[i]` (its window, compressed rows and indexer its own). The default runs each
    /// row on its own through host memory, as [`attention_batch`](Self::attention_batch)'s
    /// does.
    fn deepseek4_attention_batch(
        &mut self,
        x: &Self::Act,
        w: &Deepseek4Attention<Self::Weight>,
        kvs: &mut [&mut Self::KvCache],
        positions: &[usize],
        layer: usize,
    ) -> Result<Self::Act> {
        rows_apart(
            self,
            "deepseek4_attention_batch",
            x,
            kvs,
            positions,
            |b, row, kv, pos0| b.deepseek4_attention(row, w, kv, layer, pos0),
        )
    }
}

/// A per-sequence op over rows of different sequences, each on its own through host memory:
/// row i of `x` goes to `step` with `kvs[i]` and `positions[i]`, and the outputs are stacked
/// (the default of [`Backend::attention_batch`], [`Backend::gptoss_attention_batch`],
/// [`Backend::delta_net_batch`] and [`Backend::deepseek4_attention_batch`]). `op` names the
/// batched op in errors.
pub(crate) fn rows_apart<B: Backend + ?Sized>(
    b: &mut B,
    op: &str,
    x: &B::Act,
    kvs: &mut [&mut B::KvCache],
    positions: &[usize],
    mut step: impl FnMut(&mut B, &B::Act, &mut B::KvCache, usize) -> Result<B::Act>,
) -> Result<B::Act> {
    let (rows, cols) = b.shape(x);
    if kvs.len() != rows || positions.len() != rows {
        return Err(Error::Shape {
            op: op.into(),
            detail: format!(
                "{rows} rows, {} caches, {} positions",
                kvs.len(),
                positions.len()
            ),
        });
    }
    let host = b.read(x)?;
    let (mut out, mut out_cols) = (Vec::new(), 0);
    for ((kv, &pos0), row) in kvs.iter_mut().zip(positions).zip(host.chunks(cols)) {
        let row = b.act_from_host(1, cols, row)?;
        let y = step(b, &row, kv, pos0)?;
        out_cols = b.shape(&y).1;
        out.extend(b.read(&y)?);
    }
    b.act_from_host(rows, out_cols, &out)
}

/// The refusal of a backend without qwen35moe's ops.
pub(crate) fn no_delta_net<B: Backend + ?Sized>(b: &B) -> crate::Error {
    crate::Error::UnsupportedOp {
        op: "qwen35moe's Gated DeltaNet (Backend::delta_net: causal conv1d with its carried \
             tail, gated delta rule state, gated RMS norm) and its element-wise attention \
             output gate (mul_sigmoid)"
            .into(),
        backend: b.describe(),
    }
}

/// The refusal of a backend without gpt-oss's ops.
pub(crate) fn no_gptoss<B: Backend + ?Sized>(b: &B) -> crate::Error {
    crate::Error::UnsupportedOp {
        op: "gpt-oss's attention (Backend::gptoss_attention: per-head sinks, sliding window, \
             YaRN RoPE) and its biased experts (moe_biased)"
            .into(),
        backend: b.describe(),
    }
}

/// The refusal of a backend without deepseek4's attention.
pub(crate) fn no_deepseek4_attention<B: Backend + ?Sized>(b: &B) -> crate::Error {
    crate::Error::UnsupportedOp {
        op: "deepseek4 attention".into(),
        backend: b.describe(),
    }
}
