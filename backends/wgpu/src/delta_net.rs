//! qwen35moe's Gated DeltaNet on the device: what each DeltaNet layer carries from call to
//! call, and the recording of its two kernels.
//!
//! ```text
//! conv_silu:  proj (T, [qkv | z | beta | alpha]), tail -> x (T, channels) = silu(conv1d(qkv));
//!             the tail keeps the last taps - 1 qkv rows
//! delta_rule: x, proj, state -> out (T, values): gated delta rule per value head, then the
//!             RMS norm gated by silu(z); the state moves past the T tokens
//!   or, chunked (WY):
//! delta_wy:   x, proj -> wy: per (value head, chunk of DELTA_CHUNK tokens) its triangular
//!             solve and decayed scores, every chunk at once
//! delta_scan: x, proj, wy, state -> out, state: a chunk at a time
//! ```
//! The sequential kernels walk the tokens (or chunks) in order inside the kernel, in parallel
//! over channels and heads. The recurrent form gives a prompt split into any calls the same
//! values; the chunked one rounds differently (within f32 rounding of the recurrent one,
//! `delta_net_chunked_matches_recurrent` in the ops tests).

use std::ops::Range;

use moetile::model::DeltaNetParams;
use moetile::model::qwen35moe::{DeltaNetConfig, Mixer, Qwen35MoeConfig};
use moetile_codegen::params::{ConvParams, DeltaParams};
use moetile_codegen::{
    ActType, DELTA_CHUNK, DELTA_HEAD_DIMS, DELTA_WY_FLOATS, DeltaStep, KernelKey,
};

use crate::buffers::GpuMatrix;
use crate::context::WgpuContext;
use crate::dispatch::Grid;
use crate::error::{Result, WgpuError, shape};
use crate::recorder::Recorder;

/// One DeltaNet layer's carried values.
#[derive(Debug)]
struct LayerState {
    /// The last `taps - 1` convolution inputs, oldest first: `(taps - 1) x channels` f32.
    tail: wgpu::Buffer,
    /// Per value head the `head_dim x head_dim` state, `[head][key i][value j]` f32.
    state: wgpu::Buffer,
    /// Tokens it has seen: the only position it can continue at.
    tokens: usize,
}

/// The DeltaNet layers' state of one sequence (`None` for attention layers). It holds a whole
/// prefix in a fixed size, so it continues where it stopped or restarts at position 0.
#[derive(Debug)]
pub struct DeltaNetState {
    shape: DeltaNetConfig,
    layers: Vec<Option<LayerState>>,
}

impl DeltaNetState {
    /// State buffers for each DeltaNet layer of `cfg`, their contents undefined until a
    /// sequence starts at position 0. Refuses head widths without a `delta_rule` kernel.
    pub fn new(ctx: &WgpuContext, cfg: &Qwen35MoeConfig) -> Result<DeltaNetState> {
        let d = cfg.delta_net;
        if !DELTA_HEAD_DIMS.contains(&(d.head_dim as u32)) {
            return Err(shape(
                "delta_net",
                format!(
                    "DeltaNet heads of {} (ssm.state_size) have no kernel; supported: \
                     {DELTA_HEAD_DIMS:?} (run this model with --cpu)",
                    d.head_dim
                ),
            ));
        }
        let bytes = |floats: usize| (floats as u64 * 4).max(4);
        let tail_bytes = bytes((d.conv_taps - 1) * d.conv_channels());
        let state_bytes = bytes(d.n_v_heads * d.head_dim * d.head_dim);
        ctx.check_size("one DeltaNet layer's state", state_bytes)?;
        let buffer = |label: String, size| {
            ctx.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some(&label),
                size,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        };
        let layers = ctx.scoped("allocating the DeltaNet state", || {
            Ok(cfg
                .mixers
                .iter()
                .enumerate()
                .map(|(il, &m)| {
                    (m == Mixer::DeltaNet).then(|| LayerState {
                        tail: buffer(format!("delta_net conv tail {il}"), tail_bytes),
                        state: buffer(format!("delta_net state {il}"), state_bytes),
                        tokens: 0,
                    })
                })
                .collect())
        })?;
        Ok(DeltaNetState { shape: d, layers })
    }

    /// Fails unless layer `layer`'s state can take a token at `pos0`: where it stopped, or
    /// at 0 (a restart).
    pub fn check_continues(&self, layer: usize, pos0: usize) -> Result<()> {
        let tokens = self.layer(layer)?.tokens;
        if pos0 == 0 || pos0 == tokens {
            return Ok(());
        }
        Err(shape(
            "delta_net",
            format!(
                "layer {layer}'s state holds {tokens} tokens; it cannot continue at position \
                 {pos0} (a DeltaNet state does not rewind: continue where it stopped or restart \
                 at 0)"
            ),
        ))
    }

    fn layer(&self, layer: usize) -> Result<&LayerState> {
        self.layers
            .get(layer)
            .and_then(Option::as_ref)
            .ok_or_else(|| no_layer(layer))
    }

    fn layer_mut(&mut self, layer: usize) -> Result<&mut LayerState> {
        self.layers
            .get_mut(layer)
            .and_then(Option::as_mut)
            .ok_or_else(|| no_layer(layer))
    }

    /// Every buffer, tail then state per DeltaNet layer (for test poisoning).
    pub fn buffers(&self) -> impl Iterator<Item = &wgpu::Buffer> {
        self.layers
            .iter()
            .flatten()
            .flat_map(|l| [&l.tail, &l.state])
    }
}

/// The refusal of a layer without DeltaNet state.
fn no_layer(layer: usize) -> WgpuError {
    shape(
        "delta_net",
        format!("layer {layer} has no DeltaNet state in this cache"),
    )
}

/// The f32 values of a DeltaNet layer's small weights, as plain buffers.
#[derive(Debug, Clone, Copy)]
pub struct DeltaNetBuffers<'a> {
    /// `[channels][taps]`.
    pub conv: &'a wgpu::Buffer,
    /// `[value heads]`.
    pub dt_bias: &'a wgpu::Buffer,
    /// `[value heads]`: the decay rate `-exp(A_log)`.
    pub a: &'a wgpu::Buffer,
    /// `[head_dim]`.
    pub norm: &'a wgpu::Buffer,
}

/// The intermediate matrices of [`delta_net`], from the caller (which may poison them).
#[derive(Debug, Clone, Copy)]
pub struct DeltaNetScratch<'a> {
    /// `(T, channels)`: the convolved q|k|v.
    pub x: &'a GpuMatrix,
    /// `(value heads * ceil(T / DELTA_CHUNK), DELTA_WY_FLOATS)`: given, the delta rule runs in
    /// its chunked form (`delta_wy` writes it, `delta_scan` reads it); else token by token.
    pub wy: Option<&'a GpuMatrix>,
}

/// Records layer `layer`'s Gated DeltaNet of the T `rows` of `proj` (`[qkv | z | beta |
/// alpha]`), one sequence's tokens at positions `pos0..`, into the same rows of `out (_,
/// values)` through `scratch` (its `x` as many rows as `proj`), continuing `st` (see
/// `moetile::model::Backend::delta_net`; a batch of sequences records a row at a time, each
/// with its own state).
#[allow(clippy::too_many_arguments)]
pub fn delta_net(
    rec: &mut Recorder<'_>,
    proj: &GpuMatrix,
    rows: Range<usize>,
    w: DeltaNetBuffers<'_>,
    st: &mut DeltaNetState,
    layer: usize,
    pos0: usize,
    p: &DeltaNetParams,
    scratch: DeltaNetScratch<'_>,
    out: &GpuMatrix,
) -> Result<()> {
    let x = scratch.x;
    let d = p.shape;
    let (ch, values, heads) = (d.conv_channels(), d.value_width(), d.n_v_heads);
    let t = rows.len();
    let n_chunks = t.div_ceil(DELTA_CHUNK as usize);
    let wy_shape = (heads * n_chunks, DELTA_WY_FLOATS as usize);
    let fits = d == st.shape
        && t > 0
        && rows.end <= proj.rows
        && proj.cols == ch + values + 2 * heads
        && (x.rows, x.cols) == (proj.rows, ch)
        && (out.rows, out.cols) == (proj.rows, values)
        && [proj, x, out].iter().all(|m| m.ty == ActType::F32)
        && scratch
            .wy
            .is_none_or(|wy| (wy.rows, wy.cols) == wy_shape && wy.ty == ActType::F32)
        && w.conv.size() >= (ch * d.conv_taps * 4) as u64
        && [w.dt_bias, w.a]
            .iter()
            .all(|b| b.size() >= (heads * 4) as u64)
        && w.norm.size() >= (d.head_dim * 4) as u64;
    if !fits {
        return Err(shape(
            "delta_net",
            format!(
                "rows {rows:?} of proj ({}, {}), x ({}, {}), out ({}, {}), chunked form's \
                 scratch {:?} (needs {wy_shape:?}) for {d:?} (the state's: {:?})",
                proj.rows,
                proj.cols,
                x.rows,
                x.cols,
                out.rows,
                out.cols,
                scratch.wy.map(|wy| (wy.rows, wy.cols)),
                st.shape
            ),
        ));
    }
    st.check_continues(layer, pos0)?;
    let ls = st.layer_mut(layer)?;
    if pos0 == 0 {
        let enc = rec.encoder();
        enc.clear_buffer(&ls.tail, 0, None);
        enc.clear_buffer(&ls.state, 0, None);
    }

    let conv = KernelKey::ConvSilu;
    let row0 = rows.start as u32;
    let params = rec.params(&ConvParams {
        n_tokens: t as u32,
        n_channels: ch as u32,
        proj_cols: proj.cols as u32,
        taps: d.conv_taps as u32,
        row0,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    });
    rec.dispatch(
        &conv,
        &[
            ("params", params.binding()),
            ("proj", proj.buffer.as_entire_binding()),
            ("conv", w.conv.as_entire_binding()),
            ("tail", ls.tail.as_entire_binding()),
            ("x", x.buffer.as_entire_binding()),
        ],
        Grid::Items(ch),
    )?;

    let head_dim = d.head_dim as u32;
    let params = rec.params(&DeltaParams {
        n_tokens: t as u32,
        proj_cols: proj.cols as u32,
        n_k_heads: d.n_k_heads as u32,
        n_v_heads: heads as u32,
        eps: p.eps,
        row0,
        _pad0: 0,
        _pad1: 0,
    });
    let inputs = [
        ("params", params.binding()),
        ("x", x.buffer.as_entire_binding()),
        ("proj", proj.buffer.as_entire_binding()),
    ];
    let gates = [
        ("dt_bias", w.dt_bias.as_entire_binding()),
        ("decay_rate", w.a.as_entire_binding()),
    ];
    let outputs = [
        ("norm", w.norm.as_entire_binding()),
        ("state", ls.state.as_entire_binding()),
        ("out", out.buffer.as_entire_binding()),
    ];
    let heads_grid = Grid::Groups(heads as u32, 1);
    let Some(wy) = scratch.wy else {
        let rule = KernelKey::DeltaRule {
            head_dim,
            step: DeltaStep::Recurrent,
        };
        let bindings: Vec<_> = inputs.into_iter().chain(gates).chain(outputs).collect();
        rec.dispatch(&rule, &bindings, heads_grid)?;
        ls.tokens = pos0 + t;
        return Ok(());
    };
    let wy_key = KernelKey::DeltaRule {
        head_dim,
        step: DeltaStep::Wy,
    };
    let written = [("wy", wy.buffer.as_entire_binding())];
    let bindings: Vec<_> = inputs.iter().cloned().chain(gates).chain(written).collect();
    rec.dispatch(
        &wy_key,
        &bindings,
        Grid::Groups(n_chunks as u32, heads as u32),
    )?;
    let scan = KernelKey::DeltaRule {
        head_dim,
        step: DeltaStep::Scan,
    };
    let read = [("wy", wy.buffer.as_entire_binding())];
    let bindings: Vec<_> = inputs.into_iter().chain(read).chain(outputs).collect();
    rec.dispatch(&scan, &bindings, heads_grid)?;
    ls.tokens = pos0 + t;
    Ok(())
}
