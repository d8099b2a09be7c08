//! Uniform parameter structs, defined once here: the host writes them as `bytemuck` bytes and
//! the generator writes their WGSL declaration (same name, fields and types) into every kernel
//! that binds them, so the templates hold no copies. A test checks every field offset and the
//! size against naga's layout of the generated struct: WGSL's uniform rules (a `vec4<u32>` sits
//! on 16 bytes) must give the `#[repr(C)]` layout, which the explicit padding fields ensure.

/// A field type of a params struct and its WGSL spelling.
pub trait WgslType {
    /// The WGSL type.
    const WGSL: &'static str;
}

impl WgslType for u32 {
    const WGSL: &'static str = "u32";
}

impl WgslType for f32 {
    const WGSL: &'static str = "f32";
}

/// A vector, not `array<u32, 4>`: uniform arrays have a 16-byte stride.
impl WgslType for [u32; 4] {
    const WGSL: &'static str = "vec4<u32>";
}

/// A `#[repr(C)]` params struct and its WGSL declaration.
pub trait WgslParams: bytemuck::Pod {
    /// The struct name, in Rust and WGSL.
    const NAME: &'static str;
    /// `(field, byte offset)` in declaration order.
    fn fields() -> Vec<(&'static str, usize)>;
    /// The WGSL declaration, `struct NAME { field: type, ... }`.
    fn wgsl() -> String;
}

macro_rules! params {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Debug, Clone, Copy, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl WgslParams for $name {
            const NAME: &'static str = stringify!($name);
            fn fields() -> Vec<(&'static str, usize)> {
                vec![$((stringify!($field), std::mem::offset_of!($name, $field)),)*]
            }
            fn wgsl() -> String {
                let mut text = format!("struct {} {{\n", Self::NAME);
                $(text.push_str(&format!(
                    "    {}: {},\n",
                    stringify!($field),
                    <$ty as WgslType>::WGSL
                ));)*
                text.push_str("}\n");
                text
            }
        }
    };
}

params! {
    /// `map.wgsl`: routing ids `(T, K)` -> expert-major lists and the work list.
    MapParams {
        /// T * K.
        n_pairs: u32,
        /// E.
        n_experts: u32,
        /// `ceil(n_pairs / 256)`: chunks of pairs counted per workgroup.
        n_chunks: u32,
        /// Padding.
        _pad0: u32,
        /// The y extent (row tiles) of each indirect-dispatch slot; 0 for unused slots.
        row_groups: [u32; 4],
    }
}

params! {
    /// `mm_id.wgsl`, `mm_id_coop.wgsl`, `mv_id.wgsl`: `y[p] = W[e(p)] @ act[p / act_row_div]`,
    /// and what the mat-vec epilogues (`mv/*.wgsl`) need.
    MatmulParams {
        /// Output rows per expert (F for gate/up, D for down).
        n_rows: u32,
        /// Input width (D for gate/up, F for down); a multiple of 32 and of the block size.
        n_cols: u32,
        /// Activation row of pair p is `p / act_row_div`: K when reading x (T, D), 1 when
        /// reading mid (T*K, F).
        act_row_div: u32,
        /// First expert held by the bound weight buffer.
        expert_base: u32,
        /// Experts held by the bound weight buffer (work outside it is skipped).
        expert_count: u32,
        /// Pairs, T * K (mat-vec only: its grid is one workgroup row per pair, or per token
        /// for `mv_sum`).
        n_pairs: u32,
        /// K: the pairs per token `mv_sum` sums.
        n_used: u32,
        /// `mv_glu`: the activation (`mode` of `ActParams`).
        clamp: u32,
        /// `mv_glu`: the clamp limit.
        limit: f32,
        /// Output values per activation row: `act_row_div * n_rows` for one row per pair, more
        /// when this weight fills some columns of an output of weights stacked by rows.
        out_stride: u32,
        /// The first output column of this weight's rows in each output row.
        out_col: u32,
        /// Epsilon of the RMS norm of activation rows (`mv_*_norm`).
        norm_eps: f32,
        /// 1: outputs are added to what the output buffer holds (a residual stream), 0:
        /// stored (plain rows and `mv_sum`).
        accumulate: u32,
        /// `mv_glu`: the sigmoid's slope of gpt-oss's activation (`clamp` 2).
        alpha: f32,
        /// Padding.
        _pad1: u32,
        /// Padding.
        _pad2: u32,
    }
}

params! {
    /// `act.wgsl`: `mid = act(gate, up) * route_weight`.
    ActParams {
        /// T * K.
        n_pairs: u32,
        /// F (even).
        n_cols: u32,
        /// 0: plain SwiGLU; 1: clamp with `limit` (`silu(min(g, l)) * clamp(u, -l, l)`); 2:
        /// gpt-oss's (`x * sigmoid(alpha x) * (clamp(u, -l, l) + 1)`, `x = min(g, l)`).
        clamp: u32,
        /// The clamp limit.
        limit: f32,
        /// The sigmoid's slope of mode 2.
        alpha: f32,
        /// Padding.
        _pad0: u32,
        /// Padding.
        _pad1: u32,
        /// Padding.
        _pad2: u32,
    }
}

params! {
    /// `sum.wgsl`: `out[t] = sum_k y[t * K + k]`.
    SumParams {
        /// T.
        n_tokens: u32,
        /// D.
        n_cols: u32,
        /// K.
        n_used: u32,
        /// Padding.
        _pad0: u32,
    }
}

params! {
    /// `embed.wgsl`: `out[t] = table[ids[t]]`.
    EmbedParams {
        /// T.
        n_tokens: u32,
        /// Values per row (D), whole blocks.
        n_cols: u32,
        /// Rows of the table in the bound buffer.
        n_rows: u32,
        /// Table row of the bound buffer's first row (0 unless the table is sliced).
        row_base: u32,
    }
}

params! {
    /// `rms_norm.wgsl`: RMS norm of every group of `group_len` values.
    NormParams {
        /// Groups (rows times groups per row).
        n_groups: u32,
        /// Values per group; also the weight vector's length.
        group_len: u32,
        /// Added to the mean square.
        eps: f32,
        /// Padding.
        _pad0: u32,
    }
}

params! {
    /// `eltwise.wgsl`: an in-place element-wise op.
    EltParams {
        /// Values of `dst`.
        n_values: u32,
        /// Values per row of `dst`.
        n_cols: u32,
        /// Values per row of `src` (`OP_REPEAT` only).
        src_cols: u32,
        /// Padding.
        _pad1: u32,
    }
}

params! {
    /// `attn_input.wgsl`: per-head q/k norms, rotary embedding and the KV-cache append of one
    /// layer's `qkv` rows.
    AttnInputParams {
        /// T: rows of `qkv`.
        n_tokens: u32,
        /// Position of row 0.
        pos0: u32,
        /// Query heads.
        n_heads: u32,
        /// Key/value heads.
        n_kv_heads: u32,
        /// Values per head (even).
        head_dim: u32,
        /// Rotated pairs per head (`n_dims / 2`).
        n_half: u32,
        /// 1: NeoX pairs `(k, k + n_half)`; 0: pairs `(2k, 2k + 1)`.
        neox: u32,
        /// Epsilon of the q/k norms.
        eps: f32,
        /// Row of `qkv` holding token 0: a batch of sequences attends one row at a time,
        /// each against its own cache (0 for a batch of one sequence).
        row0: u32,
        /// Padding.
        _pad0: u32,
        /// Padding.
        _pad1: u32,
        /// Padding.
        _pad2: u32,
    }
}

params! {
    /// `attn_*.wgsl`: causal grouped-query attention over a cache (`wgsl/attn/common.wgsl`).
    AttnParams {
        /// T: tokens of the batch.
        n_tokens: u32,
        /// Position of token 0.
        pos0: u32,
        /// Query heads.
        n_heads: u32,
        /// Key/value heads (divides `n_heads`).
        n_kv_heads: u32,
        /// Logit scale times log2(e): the kernels work with base-2 exponentials.
        scale: f32,
        /// Query heads per key/value head (`n_heads / n_kv_heads`, at least 1).
        group: u32,
        /// Query rows per key/value head (`n_tokens * group`).
        n_rows: u32,
        /// Decode: workgroups along the positions, i.e. partials per query row (1 elsewhere).
        n_splits: u32,
        /// Decode: chunks of positions each split walks (0 elsewhere).
        chunks_per_split: u32,
        /// Token row of `out` that token 0 goes to (see `AttnInputParams::row0`).
        out_row0: u32,
        /// Keys a query sees, itself included (gpt-oss's sliding window: position p sees
        /// p - window + 1 ..= p); 0 for full causal attention.
        window: u32,
        /// Padding.
        _pad0: u32,
    }
}

params! {
    /// `route.wgsl`: top-K experts per token.
    RouteParams {
        /// T.
        n_tokens: u32,
        /// E.
        n_experts: u32,
        /// K.
        n_used: u32,
        /// 0 softmax, 1 sigmoid, 2 sqrt(softplus).
        gating: u32,
        /// 1: renormalise the K weights to sum to one.
        normalize: u32,
        /// Factor on the final weights.
        weight_scale: f32,
        /// 0: the top K gates; 1: the top K of gate + bias; 2: the given ids.
        selection: u32,
        /// Padding.
        _pad0: u32,
    }
}

params! {
    /// `hc_pre.wgsl`, `hc_post.wgsl`: a hyper-connection over `HC` streams of `n_cols`.
    HyperParams {
        /// T.
        n_tokens: u32,
        /// D: the width of one stream.
        n_cols: u32,
        /// Sinkhorn column passes (at least 1).
        sinkhorn_iterations: u32,
        /// Epsilon of the RMS norm of a token's streams.
        rms_eps: f32,
        /// Added to the pre weights, the comb softmax and every Sinkhorn sum.
        eps: f32,
        /// Padding.
        _pad0: u32,
        /// Padding.
        _pad1: u32,
        /// Padding.
        _pad2: u32,
    }
}

params! {
    /// `compressor_pool.wgsl`: rows of a deepseek4 compressor from projected token rows.
    PoolParams {
        /// Compressed rows out.
        n_rows: u32,
        /// Width of a compressed row.
        n_cols: u32,
        /// Tokens per block.
        ratio: u32,
        /// Projection rows are `coff * n_cols` wide: 2 with overlap (the previous block through
        /// the first half), else 1.
        coff: u32,
        /// 1 when the first block of the input is only the previous block of the first row.
        previous: u32,
        /// Epsilon of the row's RMS norm.
        rms_eps: f32,
        /// Padding.
        _pad0: u32,
        /// Padding.
        _pad1: u32,
    }
}

params! {
    /// `conv_silu.wgsl`: the causal depthwise convolution and SiLU of a DeltaNet layer's
    /// q|k|v channels, with the carried tail.
    ConvParams {
        /// Tokens of the batch.
        n_tokens: u32,
        /// Channels (q, k and v widths); also the tail's and the output's row length.
        n_channels: u32,
        /// Row length of the projection whose first `n_channels` columns are read.
        proj_cols: u32,
        /// Convolution taps; the tail holds `taps - 1` rows.
        taps: u32,
        /// Row of `proj` and of the output holding token 0: a batch of sequences runs one row
        /// at a time, each with its own tail (0 for a batch of one sequence).
        row0: u32,
        /// Padding.
        _pad0: u32,
        /// Padding.
        _pad1: u32,
        /// Padding.
        _pad2: u32,
    }
}

params! {
    /// `delta_rule.wgsl`: the gated delta rule and gated RMS norm of a DeltaNet layer.
    DeltaParams {
        /// Tokens of the batch.
        n_tokens: u32,
        /// Row length of the projection `[qkv | z | beta | alpha]`.
        proj_cols: u32,
        /// Key (and query) heads.
        n_k_heads: u32,
        /// Value heads (one workgroup each).
        n_v_heads: u32,
        /// Added to the sum of squares of the q/k L2 norms and to the mean square of the
        /// output's RMS norm.
        eps: f32,
        /// Row of `x`, of the projection and of the output holding token 0: a batch of
        /// sequences runs one row at a time, each with its own state (0 for a batch of one
        /// sequence).
        row0: u32,
        /// Padding.
        _pad0: u32,
        /// Padding.
        _pad1: u32,
    }
}

params! {
    /// `ds4_rope.wgsl`: deepseek4's partial interleaved rotation, in place, of the heads of
    /// `n_rows` rows.
    RopeTailParams {
        /// Rows (tokens, or compressed rows).
        n_rows: u32,
        /// Heads per row.
        n_heads: u32,
        /// Width of one head; the last `n_rot` values rotate.
        head_dim: u32,
        /// Rotated values per head (even).
        n_rot: u32,
        /// Position of row 0.
        pos0: u32,
        /// Positions from one row to the next (1 for tokens, the ratio for compressed rows).
        pos_step: u32,
        /// 1: the inverse rotation (the sine negated).
        inverse: u32,
        /// Padding.
        _pad0: u32,
    }
}

params! {
    /// `ds4_attend.wgsl`: deepseek4's attention of a chunk's query heads over the raw window
    /// and the compressed rows, with sinks.
    Ds4AttnParams {
        /// T.
        n_tokens: u32,
        /// Query heads.
        n_heads: u32,
        /// Width of a head, of a key and of a compressed row.
        head_dim: u32,
        /// Position of token 0.
        pos0: u32,
        /// Raw keys a query sees, its own included.
        window: u32,
        /// Raw rows before the chunk's own keys (row `raw_before + t` is token t's key).
        raw_before: u32,
        /// Tokens per compressed row; 0 without compressed rows.
        ratio: u32,
        /// 1: token t sees only the compressed rows listed in `picked[t * top_k..]`.
        masked: u32,
        /// Compressed rows in the cache.
        n_comp: u32,
        /// Score factor, `1 / sqrt(head_dim)`.
        scale: f32,
        /// Rows listed per token in `picked` (the picks' row stride) when masked.
        top_k: u32,
        /// Padding.
        _pad0: u32,
    }
}

params! {
    /// `ds4_index_score.wgsl`, `ds4_index_pick.wgsl`: the lightning indexer's scores of a
    /// chunk's tokens over the compressed rows, and the top-k picks among the visible ones.
    IndexParams {
        /// T.
        n_tokens: u32,
        /// Indexer heads.
        n_heads: u32,
        /// Width of an indexer head and key.
        head_dim: u32,
        /// Position of token 0.
        pos0: u32,
        /// Tokens per compressed row.
        ratio: u32,
        /// Compressed rows in the cache (the scores' row stride).
        n_comp: u32,
        /// Rows a token keeps (the picks' row stride).
        top_k: u32,
        /// Factor on the head weights, `1 / sqrt(n_heads * head_dim)`.
        weight_scale: f32,
    }
}

params! {
    /// `ds4_qat.wgsl`: deepseek4's low-precision simulation of keys and indexer heads, in
    /// place.
    QatParams {
        /// Heads in the matrix (rows times heads per row).
        n_heads_total: u32,
        /// Width of a head.
        head_dim: u32,
        /// Values rounded from the head's start (a key's non-rotated ones, or all).
        n_round: u32,
        /// Values sharing a scale.
        block: u32,
        /// 0: FP8 E4M3; 1: FP4 E2M1.
        format: u32,
        /// 1: the Hadamard rotation first.
        hadamard: u32,
        /// Padding.
        _pad0: u32,
        /// Padding.
        _pad1: u32,
    }
}

/// One params struct as a value: what the generator writes and the layout test checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Struct name (the same in Rust and WGSL).
    pub name: &'static str,
    /// `(field, byte offset)` in declaration order.
    pub fields: Vec<(&'static str, usize)>,
    /// Size in bytes.
    pub size: usize,
    /// The WGSL declaration.
    pub wgsl: String,
}

/// The [`Layout`] of `P`.
pub fn layout<P: WgslParams>() -> Layout {
    Layout {
        name: P::NAME,
        fields: P::fields(),
        size: std::mem::size_of::<P>(),
        wgsl: P::wgsl(),
    }
}

/// Every params struct (the uniform size the device must allow is the largest).
pub fn all() -> Vec<Layout> {
    vec![
        layout::<MapParams>(),
        layout::<MatmulParams>(),
        layout::<ActParams>(),
        layout::<SumParams>(),
        layout::<EmbedParams>(),
        layout::<NormParams>(),
        layout::<EltParams>(),
        layout::<AttnInputParams>(),
        layout::<AttnParams>(),
        layout::<RouteParams>(),
        layout::<HyperParams>(),
        layout::<PoolParams>(),
        layout::<ConvParams>(),
        layout::<DeltaParams>(),
        layout::<RopeTailParams>(),
        layout::<Ds4AttnParams>(),
        layout::<IndexParams>(),
        layout::<QatParams>(),
    ]
}
