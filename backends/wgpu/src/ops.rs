//! The dense ops of a forward pass: embedding rows, RMS norm, in-place element-wise ops, the
//! rotary angle table, the router and the steps of deepseek4's hyper-connections (and its
//! output head's stream mix). Each records one kernel with a [`Recorder`] after checking
//! shapes; outputs come from the caller, which decides where buffers come from.

use std::fmt::Display;

use moetile::model::gptoss::Yarn;
use moetile::model::{Gating, RopeParams, RouterParams};
use moetile_codegen::params::{
    EltParams, EmbedParams, HyperParams, NormParams, PoolParams, RouteParams,
};
use moetile_codegen::{
    ActType, EltOp, HC_MIXES, HC_STREAMS, HyperStep, KernelKey, ROUTE_MAX_EXPERTS, ROUTE_MAX_USED,
    WeightType,
};

use crate::buffers::GpuMatrix;
use crate::dispatch::Grid;
use crate::error::{Result, shape};
use crate::layout::ExpertTensor;
use crate::moe::Routing;
use crate::recorder::Recorder;

/// Checks that `m` is an f32 matrix (the activations every dense op reads and writes).
fn f32_matrix(op: impl Display, what: &str, m: &GpuMatrix) -> Result<()> {
    if m.ty != ActType::F32 {
        return Err(shape(op, format!("{what} is {:?}, expected F32", m.ty)));
    }
    Ok(())
}

/// The f32 values of a one-row F32 tensor (norm weights, biases).
pub(crate) fn vector(op: impl Display, w: &ExpertTensor) -> Result<&wgpu::Buffer> {
    match w.chunks.as_slice() {
        [chunk] if w.weight == WeightType::F32 && w.rows == 1 && w.experts == 1 => {
            Ok(&chunk.buffer)
        }
        _ => Err(shape(
            op,
            format!(
                "{} is {} x {} x {} {}, expected an F32 vector",
                w.name, w.experts, w.rows, w.cols, w.weight
            ),
        )),
    }
}

/// Checks an RMS norm's `x`, weights `w` and output, and returns the weight buffer and the
/// number of groups of `w.cols` values in `x`.
fn norm_groups<'a>(
    op: impl Display + Copy,
    x: &GpuMatrix,
    w: &'a ExpertTensor,
    out: &GpuMatrix,
) -> Result<(&'a wgpu::Buffer, usize)> {
    let weights = vector(op, w)?;
    f32_matrix(op, "x", x)?;
    f32_matrix(op, "the output", out)?;
    let n = w.cols;
    if n == 0 || !x.cols.is_multiple_of(n) || (out.rows, out.cols) != (x.rows, x.cols) {
        return Err(shape(
            op,
            format!(
                "x ({}, {}) is not whole groups of {n} ({}) or the output is ({}, {})",
                x.rows, x.cols, w.name, out.rows, out.cols
            ),
        ));
    }
    Ok((weights, x.rows * x.cols / n))
}

/// `magnitude * (cos, sin)` of `(pos0 + t) * freq_k * stretch_k` for rows `t` of a batch and
/// pairs `k < n_dims / 2`, `freq_k = freq_base^(-2k / n_dims)`, computed in f64 as the CPU
/// reference does (f32 angles of large positions would lose digits) and rounded to f32: the
/// table `attn_input.wgsl` and `attn_decode.wgsl` read. Without YaRN (`Yarn::NONE`) the stretch
/// is `freq_scale` and the magnitude 1. YaRN (ggml's `rope_yarn`) makes the pairs that turn
/// often over the original context keep their own angle (stretch 1: extrapolation), those
/// that turn rarely `freq_scale` (interpolation), with a linear ramp between, and scales both
/// rotated values by its magnitude, so the kernels need nothing of it.
pub fn rope_angles(p: &RopeParams, yarn: &Yarn, pos0: usize, n_rows: usize) -> Vec<[f32; 2]> {
    let half = p.n_dims / 2;
    let (n_dims, base, freq_scale) = (p.n_dims as f64, p.freq_base as f64, p.freq_scale as f64);
    let ext = yarn.ext_factor as f64;
    // The pair whose frequency turns `rotations` times over the original context.
    let pair_turning = |rotations: f32| {
        let turns = yarn.n_ctx_orig as f64 / (rotations as f64 * std::f64::consts::TAU);
        n_dims * turns.ln() / (2.0 * base.ln())
    };
    let ramp_start = pair_turning(yarn.beta_fast).floor().max(0.0);
    let ramp_end = pair_turning(yarn.beta_slow).ceil().min(n_dims - 1.0);
    let stretch = |k: usize| {
        if ext == 0.0 {
            return freq_scale;
        }
        let ramp = ((k as f64 - ramp_start) / (ramp_end - ramp_start).max(0.001)).clamp(0.0, 1.0);
        let extrapolated = (1.0 - ramp) * ext;
        freq_scale * (1.0 - extrapolated) + extrapolated
    };
    let magnitude = if ext == 0.0 {
        yarn.attn_factor as f64
    } else {
        yarn.attn_factor as f64 * (1.0 + 0.1 * (1.0 / freq_scale).ln())
    };
    let freqs: Vec<f64> = (0..half)
        .map(|k| base.powf(-2.0 * k as f64 / n_dims) * stretch(k))
        .collect();
    let mut out = Vec::with_capacity(n_rows * half);
    for t in 0..n_rows {
        let pos = (pos0 + t) as f64;
        for freq in &freqs {
            let (sin, cos) = (pos * freq).sin_cos();
            out.push([(cos * magnitude) as f32, (sin * magnitude) as f32]);
        }
    }
    out
}

/// Records `out (T, D) = table[ids]`: rows of `table` `[D, rows]` dequantized. `ids` holds
/// T token ids already checked against the table's rows.
pub fn embed(
    rec: &mut Recorder<'_>,
    table: &ExpertTensor,
    ids: &wgpu::Buffer,
    out: &GpuMatrix,
) -> Result<()> {
    let key = KernelKey::Embed {
        weight: table.weight,
    };
    let op = &key;
    f32_matrix(op, "the output", out)?;
    if table.experts != table.slices || out.cols != table.cols {
        return Err(shape(
            op,
            format!(
                "{} is {} x {} x {}, output rows have {} values",
                table.name, table.experts, table.rows, table.cols, out.cols
            ),
        ));
    }
    // A sliced table binds each buffer in turn: a dispatch writes the rows of the tokens
    // whose ids fall in its buffer.
    let params: Vec<_> = table
        .chunks
        .iter()
        .map(|chunk| {
            rec.params(&EmbedParams {
                n_tokens: out.rows as u32,
                n_cols: table.cols as u32,
                n_rows: chunk.expert_count * table.rows as u32,
                row_base: chunk.expert_base * table.rows as u32,
            })
        })
        .collect();
    let sets: Vec<_> = table
        .chunks
        .iter()
        .zip(&params)
        .map(|(chunk, params)| {
            [
                ("params", params.binding()),
                ("weights", chunk.buffer.as_entire_binding()),
                ("ids", ids.as_entire_binding()),
                ("out", out.buffer.as_entire_binding()),
            ]
        })
        .collect();
    rec.dispatch_each(&key, &sets, Grid::Items(out.rows * out.cols / 8))
}

/// Records `out = rms_norm(x) * w` over every group of `w.cols` values of each row of `x`
/// (a whole row, or one head).
pub fn rms_norm(
    rec: &mut Recorder<'_>,
    x: &GpuMatrix,
    w: &ExpertTensor,
    eps: f32,
    out: &GpuMatrix,
) -> Result<()> {
    let key = KernelKey::RmsNorm;
    let (weights, n_groups) = norm_groups(key, x, w, out)?;
    let params = rec.params(&NormParams {
        n_groups: n_groups as u32,
        group_len: w.cols as u32,
        eps,
        _pad0: 0,
    });
    let bindings = [
        ("params", params.binding()),
        ("x", x.buffer.as_entire_binding()),
        ("w", weights.as_entire_binding()),
        ("out", out.buffer.as_entire_binding()),
    ];
    rec.dispatch(&key, &bindings, Grid::Items(n_groups))
}

/// Records the in-place `op` on `dst` with operand `src` of `src_len` f32 values: the whole
/// shape of `dst` for [`EltOp::Add`], one row for [`EltOp::AddRow`], one value per row for
/// [`EltOp::MulSigmoidRow`], a row that divides `dst`'s per row for [`EltOp::Repeat`].
pub fn eltwise(
    rec: &mut Recorder<'_>,
    op: EltOp,
    dst: &GpuMatrix,
    src: &wgpu::Buffer,
    src_len: usize,
) -> Result<()> {
    let key = KernelKey::Eltwise(op);
    let name = &key;
    f32_matrix(name, "the destination", dst)?;
    let src_cols = src_len.checked_div(dst.rows).unwrap_or(0);
    let fits = match op {
        EltOp::Add | EltOp::MulSigmoid => src_len == dst.rows * dst.cols,
        EltOp::AddRow => src_len == dst.cols,
        EltOp::MulSigmoidRow => src_len == dst.rows,
        EltOp::Repeat => {
            src_cols > 0 && src_len == dst.rows * src_cols && dst.cols.is_multiple_of(src_cols)
        }
    };
    if !fits {
        let expected = match op {
            EltOp::Add | EltOp::MulSigmoid => format!("{} (its shape)", dst.rows * dst.cols),
            EltOp::AddRow => format!("{} (a row)", dst.cols),
            EltOp::MulSigmoidRow => format!("{} (a value per row)", dst.rows),
            EltOp::Repeat => "a row per row, of a width dividing its rows'".to_string(),
        };
        return Err(shape(
            name,
            format!(
                "operand of {src_len} values for a ({}, {}) destination; expected {expected}",
                dst.rows, dst.cols
            ),
        ));
    }
    let n = dst.rows * dst.cols;
    let params = rec.params(&EltParams {
        n_values: n as u32,
        n_cols: dst.cols as u32,
        src_cols: src_cols as u32,
        _pad1: 0,
    });
    rec.dispatch(
        &key,
        &[
            ("params", params.binding()),
            ("src", src.as_entire_binding()),
            ("dst", dst.buffer.as_entire_binding()),
        ],
        Grid::Items(n),
    )
}

/// How [`route`] picks each token's experts (`wgsl/route.wgsl`'s `selection`).
#[derive(Debug, Clone, Copy)]
pub enum RouteChoice<'a> {
    /// The top K gates.
    TopK,
    /// The top K of gate + bias: f32 `(E)`.
    Biased(&'a wgpu::Buffer),
    /// These `(T, K)` ids, each below E (checked by the caller).
    Given(&'a wgpu::Buffer),
}

/// Records the router over `logits (T, E)`: K ids and weights per token (see
/// `wgsl/route.wgsl`), into a new [`Routing`].
pub fn route(
    rec: &mut Recorder<'_>,
    logits: &GpuMatrix,
    choice: RouteChoice<'_>,
    p: &RouterParams,
) -> Result<Routing> {
    let key = KernelKey::Route;
    let op = &key;
    rec.set_detail("top_k");
    f32_matrix(op, "the logits", logits)?;
    let (n_tokens, n_experts, k) = (logits.rows, logits.cols, p.n_experts_used);
    if k == 0 || k > n_experts || n_tokens == 0 {
        return Err(shape(
            op,
            format!("K = {k} of E = {n_experts} experts for {n_tokens} tokens"),
        ));
    }
    if n_experts > ROUTE_MAX_EXPERTS as usize || k > ROUTE_MAX_USED as usize {
        return Err(shape(
            op,
            format!(
                "K = {k} of E = {n_experts} experts; the GPU router takes at most \
                 {ROUTE_MAX_EXPERTS} experts and {ROUTE_MAX_USED} used per token"
            ),
        ));
    }
    let none = wgpu::BufferUsages::empty();
    let bytes = (n_tokens * k * 4) as u64;
    let routing = Routing {
        ids: rec.buffers().storage("routing ids", bytes, none)?,
        weights: rec.buffers().storage("routing weights", bytes, none)?,
        n_tokens,
        n_used: k,
        n_experts,
    };
    // A selection without a bias or ids binds the logits in their place (read-only, unread).
    let unread: &wgpu::Buffer = &logits.buffer;
    let (selection, bias, given) = match choice {
        RouteChoice::TopK => (0, unread, unread),
        RouteChoice::Biased(bias) => (1, bias, unread),
        RouteChoice::Given(ids) => (2, unread, ids),
    };
    let params = rec.params(&RouteParams {
        n_tokens: n_tokens as u32,
        n_experts: n_experts as u32,
        n_used: k as u32,
        gating: match p.gating {
            Gating::Softmax => 0,
            Gating::Sigmoid => 1,
            Gating::SqrtSoftplus => 2,
        },
        normalize: u32::from(p.normalize),
        weight_scale: p.weight_scale,
        selection,
        _pad0: 0,
    });
    rec.dispatch(
        &key,
        &[
            ("params", params.binding()),
            ("logits", logits.buffer.as_entire_binding()),
            ("ids", routing.ids.as_entire_binding()),
            ("weights", routing.weights.as_entire_binding()),
            ("bias", bias.as_entire_binding()),
            ("given", given.as_entire_binding()),
        ],
        Grid::Items(n_tokens),
    )?;
    Ok(routing)
}

// The kernels' stream count is the trait's.
const _: () = assert!(HC_STREAMS as usize == moetile::model::HC_STREAMS);
const _: () = assert!(HC_MIXES as usize == moetile::model::HC_MIXES);

/// The streams of a hyper-connection, `(T, HC * D)`, against an activation `(T, D)` (the
/// sub-block's input or output) and the mixing values `(T, HC_MIXES)` when the step has them:
/// the checks every step makes. Returns D.
fn hyper_shapes(
    op: impl Display + Copy,
    streams: &GpuMatrix,
    one: &GpuMatrix,
    mix: Option<&GpuMatrix>,
) -> Result<usize> {
    let hc = HC_STREAMS as usize;
    for (what, m) in [("the streams", streams), ("the sub-block activation", one)]
        .into_iter()
        .chain(mix.map(|m| ("mix", m)))
    {
        f32_matrix(op, what, m)?;
    }
    let d = one.cols;
    let mix_fits = mix.is_none_or(|m| (m.rows, m.cols) == (one.rows, HC_MIXES as usize));
    if d == 0 || streams.cols != hc * d || streams.rows != one.rows || !mix_fits {
        let mix = mix.map_or(String::new(), |m| {
            format!(
                ", mixing values ({}, {}) (expected ({}, {HC_MIXES}))",
                m.rows, m.cols, one.rows
            )
        });
        return Err(shape(
            op,
            format!(
                "streams ({}, {}), activation ({}, {d}){mix}; expected ({t}, {hc} x D), ({t}, D)",
                streams.rows,
                streams.cols,
                one.rows,
                t = one.rows,
            ),
        ));
    }
    Ok(d)
}

/// What `hc_pre` and `hc_head` read besides the streams.
pub struct HyperPre<'a> {
    /// `(T, n_mixes)`: `fn` times each token's streams, not normed (`HC_MIXES` mixes for
    /// `hc_pre`, `HC_STREAMS` for `hc_head`).
    pub mixes: &'a GpuMatrix,
    /// f32: the factor of each family of mixes (3 for `hc_pre`: pre, post, comb; 1 for
    /// `hc_head`: pre).
    pub scale: &'a ExpertTensor,
    /// f32 `[n_mixes]`.
    pub base: &'a ExpertTensor,
}

/// Records `hc_pre` (see `wgsl/hc_pre.wgsl`): from `streams (T, HC * D)` and their raw mixes,
/// the sub-block input `input (T, D)` and the mixing values `mix (T, HC_MIXES)`.
pub fn hc_pre(
    rec: &mut Recorder<'_>,
    streams: &GpuMatrix,
    w: HyperPre<'_>,
    p: &moetile::model::HyperParams,
    input: &GpuMatrix,
    mix: &GpuMatrix,
) -> Result<()> {
    if p.sinkhorn_iterations == 0 {
        return Err(shape("hc_pre", "0 Sinkhorn passes; at least one".into()));
    }
    weighted_streams(rec, HyperStep::Pre, streams, w, p, input, Some(mix))
}

/// Records `hc_head` (see `wgsl/hc_pre.wgsl` with `hc/head.wgsl`): from `streams (T, HC * D)`
/// and their `HC` raw mixes, the output head's row `out (T, D)`.
pub fn hc_head(
    rec: &mut Recorder<'_>,
    streams: &GpuMatrix,
    w: HyperPre<'_>,
    p: &moetile::model::HyperParams,
    out: &GpuMatrix,
) -> Result<()> {
    weighted_streams(rec, HyperStep::Head, streams, w, p, out, None)
}

/// `hc_pre.wgsl` as `step` (`Pre`, with `mix`, or `Head`, without).
fn weighted_streams(
    rec: &mut Recorder<'_>,
    step: HyperStep,
    streams: &GpuMatrix,
    w: HyperPre<'_>,
    p: &moetile::model::HyperParams,
    input: &GpuMatrix,
    mix: Option<&GpuMatrix>,
) -> Result<()> {
    let key = KernelKey::Hyper(step);
    let op = &key;
    let d = hyper_shapes(op, streams, input, mix)?;
    f32_matrix(op, "the mixes", w.mixes)?;
    let (scale, base) = (vector(op, w.scale)?, vector(op, w.base)?);
    let (n_mixes, n_scales) = match mix {
        Some(_) => (HC_MIXES as usize, 3),
        None => (HC_STREAMS as usize, 1),
    };
    if (w.mixes.rows, w.mixes.cols) != (input.rows, n_mixes)
        || w.scale.cols != n_scales
        || w.base.cols != n_mixes
    {
        return Err(shape(
            op,
            format!(
                "mixes ({}, {}), {} of {} values, {} of {}; expected ({}, {n_mixes}), \
                 {n_scales} and {n_mixes} values",
                w.mixes.rows,
                w.mixes.cols,
                w.scale.name,
                w.scale.cols,
                w.base.name,
                w.base.cols,
                input.rows
            ),
        ));
    }
    let params = rec.params(&HyperParams {
        n_tokens: input.rows as u32,
        n_cols: d as u32,
        sinkhorn_iterations: p.sinkhorn_iterations as u32,
        rms_eps: p.rms_eps,
        eps: p.eps,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    });
    let mut bindings = vec![
        ("params", params.binding()),
        ("streams", streams.buffer.as_entire_binding()),
        ("mixes", w.mixes.buffer.as_entire_binding()),
        ("scale", scale.as_entire_binding()),
        ("base", base.as_entire_binding()),
        ("input", input.buffer.as_entire_binding()),
    ];
    if let Some(mix) = mix {
        bindings.push(("mix", mix.buffer.as_entire_binding()));
    }
    rec.dispatch(&key, &bindings, Grid::Items(input.rows))
}

/// Records `hc_post` (see `wgsl/hc_post.wgsl`): the sub-block output `out (T, D)` written
/// back into `streams (T, HC * D)` with the mixing values `mix (T, HC_MIXES)` of [`hc_pre`].
pub fn hc_post(
    rec: &mut Recorder<'_>,
    streams: &GpuMatrix,
    out: &GpuMatrix,
    mix: &GpuMatrix,
) -> Result<()> {
    let key = KernelKey::Hyper(HyperStep::Post);
    let d = hyper_shapes(key, streams, out, Some(mix))?;
    let params = rec.params(&HyperParams {
        n_tokens: out.rows as u32,
        n_cols: d as u32,
        sinkhorn_iterations: 0,
        rms_eps: 0.0,
        eps: 0.0,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    });
    rec.dispatch(
        &key,
        &[
            ("params", params.binding()),
            ("out", out.buffer.as_entire_binding()),
            ("mix", mix.buffer.as_entire_binding()),
            ("streams", streams.buffer.as_entire_binding()),
        ],
        Grid::Items(out.rows * d),
    )
}

/// Records `compressor_pool` (see `wgsl/compressor_pool.wgsl`): compressed rows `out (rows,
/// width)` from the projections `kv` and `score (T, coff * width)` of whole blocks.
pub fn compressor_pool(
    rec: &mut Recorder<'_>,
    kv: &GpuMatrix,
    score: &GpuMatrix,
    w: moetile::model::PoolWeights<'_, ExpertTensor>,
    p: &moetile::model::PoolParams,
    out: &GpuMatrix,
) -> Result<()> {
    let key = KernelKey::CompressorPool;
    let op = &key;
    for (what, m) in [("kv", kv), ("score", score), ("the output", out)] {
        f32_matrix(op, what, m)?;
    }
    let coff = if p.overlap { 2 } else { 1 };
    let skip = usize::from(p.previous);
    let norm = vector(op, w.norm)?;
    let ape = match w.ape.chunks.as_slice() {
        [chunk] if w.ape.weight == WeightType::F32 && w.ape.experts == 1 => Some(&chunk.buffer),
        _ => None,
    };
    let fits = p.ratio > 0
        && out.cols > 0
        && kv.cols == coff * out.cols
        && (kv.rows, kv.cols) == (score.rows, score.cols)
        && kv.rows == (out.rows + skip) * p.ratio
        && (p.overlap || !p.previous)
        && w.norm.cols == out.cols
        && (w.ape.rows, w.ape.cols) == (p.ratio, kv.cols);
    let Some(ape) = ape.filter(|_| fits) else {
        return Err(shape(
            op,
            format!(
                "kv ({}, {}), score ({}, {}), {} {} x {} {}, {} of {}, output ({}, {}), ratio \
                 {}, overlap {}, previous {}: expected whole blocks, equal shapes, an F32 ape \
                 of ratio rows of the projections' width and a norm of the output's",
                kv.rows,
                kv.cols,
                score.rows,
                score.cols,
                w.ape.name,
                w.ape.rows,
                w.ape.cols,
                w.ape.weight,
                w.norm.name,
                w.norm.cols,
                out.rows,
                out.cols,
                p.ratio,
                p.overlap,
                p.previous
            ),
        ));
    };
    let params = rec.params(&PoolParams {
        n_rows: out.rows as u32,
        n_cols: out.cols as u32,
        ratio: p.ratio as u32,
        coff: coff as u32,
        previous: skip as u32,
        rms_eps: p.rms_eps,
        _pad0: 0,
        _pad1: 0,
    });
    rec.dispatch(
        &key,
        &[
            ("params", params.binding()),
            ("kv", kv.buffer.as_entire_binding()),
            ("score", score.buffer.as_entire_binding()),
            ("ape", ape.as_entire_binding()),
            ("norm", norm.as_entire_binding()),
            ("out", out.buffer.as_entire_binding()),
        ],
        Grid::Items(out.rows),
    )
}
