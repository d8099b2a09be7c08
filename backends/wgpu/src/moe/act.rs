//! The element-wise ends of the routed-MoE layer: the activation between up/gate and down, and
//! the sum over each token's K experts (where the mat-vec epilogues do not do them); with
//! gpt-oss's per-expert biases, these are where the biases enter (gate/up before the
//! activation, down scaled by the route weight in the sum).

use moetile::model::{ExpertActivation, ExpertBiases, GateUp};
use moetile_codegen::params::{ActParams, SumParams};
use moetile_codegen::{ActType, KernelKey};

use crate::buffers::GpuMatrix;
use crate::dispatch::Grid;
use crate::error::{Result, shape};
use crate::layout::ExpertTensor;
use crate::moe::Routing;
use crate::recorder::Recorder;

/// The buffer of an `(E, cols)` F32 matrix of per-expert biases, `E` = the routing's experts.
pub(super) fn bias_rows<'w>(
    op: &KernelKey,
    w: &'w ExpertTensor,
    routing: &Routing,
    cols: usize,
) -> Result<&'w wgpu::Buffer> {
    match w.chunks.as_slice() {
        [chunk]
            if w.weight == moetile_codegen::WeightType::F32
                && (w.experts, w.rows, w.cols) == (1, routing.n_experts, cols) =>
        {
            Ok(&chunk.buffer)
        }
        _ => Err(shape(
            op,
            format!(
                "bias {} is {} x {} x {} {}, expected an F32 ({}, {cols}) matrix in one buffer",
                w.name, w.experts, w.rows, w.cols, w.weight, routing.n_experts
            ),
        )),
    }
}

/// Records `mid = activation(gate + bg, up + bu) * route_weight` over (T*K, F), from two
/// (T*K, F) matrices or one (T*K, 2F) matrix of interleaved columns; `bg` and `bu` the rows of
/// the pair's expert in `biases` (gate and up), zero without.
pub fn act(
    rec: &mut Recorder<'_>,
    gate_up: GateUp<&GpuMatrix>,
    routing: &Routing,
    activation: ExpertActivation,
    biases: Option<&ExpertBiases<ExpertTensor>>,
    mid: &GpuMatrix,
) -> Result<()> {
    let key = KernelKey::Act {
        mid: mid.ty,
        interleaved: matches!(gate_up, GateUp::Interleaved(_)),
        biased: biases.is_some(),
    };
    let (rows, cols) = (routing.n_pairs(), mid.cols);
    let f32_shape = |m: &GpuMatrix, c: usize| m.rows == rows && m.cols == c && m.ty == ActType::F32;
    let inputs_ok = match gate_up {
        GateUp::Separate { gate, up } => f32_shape(gate, cols) && f32_shape(up, cols),
        GateUp::Interleaved(gu) => f32_shape(gu, 2 * cols),
    };
    if !inputs_ok || mid.rows != rows || !cols.is_multiple_of(2) {
        let inputs = match gate_up {
            GateUp::Separate { gate, up } => format!(
                "gate {}x{} {:?}, up {}x{} {:?}",
                gate.rows, gate.cols, gate.ty, up.rows, up.cols, up.ty
            ),
            GateUp::Interleaved(gu) => {
                format!("interleaved gate/up {}x{} {:?}", gu.rows, gu.cols, gu.ty)
            }
        };
        return Err(shape(
            key,
            format!(
                "{inputs} and mid {}x{} must be {rows} x an even width F (f32 inputs, 2F wide \
                 when interleaved)",
                mid.rows, mid.cols
            ),
        ));
    }
    let glu = Glu::of(activation);
    let params = rec.params(&ActParams {
        n_pairs: rows as u32,
        n_cols: cols as u32,
        clamp: glu.mode,
        limit: glu.limit,
        alpha: glu.alpha,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
    });
    let inputs = match gate_up {
        GateUp::Separate { gate, up } => vec![
            ("gate", gate.buffer.as_entire_binding()),
            ("up", up.buffer.as_entire_binding()),
        ],
        GateUp::Interleaved(gu) => vec![("gate_up", gu.buffer.as_entire_binding())],
    };
    let biases = match biases {
        Some(b) => vec![
            ("ids", routing.ids.as_entire_binding()),
            (
                "gate_bias",
                bias_rows(&key, &b.gate, routing, cols)?.as_entire_binding(),
            ),
            (
                "up_bias",
                bias_rows(&key, &b.up, routing, cols)?.as_entire_binding(),
            ),
        ],
        None => vec![],
    };
    let bindings: Vec<_> = [("params", params.binding())]
        .into_iter()
        .chain(inputs)
        .chain([
            ("route", routing.weights.as_entire_binding()),
            ("mid", mid.buffer.as_entire_binding()),
        ])
        .chain(biases)
        .collect();
    rec.dispatch(&key, &bindings, Grid::Items(rows * cols / 2))
}

/// The parameters of `wgsl/glu/swiglu.wgsl`'s `swiglu`: which activation, its clamp limit and
/// its sigmoid's slope.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Glu {
    pub(crate) mode: u32,
    pub(crate) limit: f32,
    pub(crate) alpha: f32,
}

impl Glu {
    pub(crate) fn of(activation: ExpertActivation) -> Glu {
        match activation {
            ExpertActivation::SwiGlu => Glu::default(),
            ExpertActivation::SwiGluClamped { limit } => Glu {
                mode: 1,
                limit,
                alpha: 0.0,
            },
            ExpertActivation::SwiGluOai { alpha, limit } => Glu {
                mode: 2,
                limit,
                alpha,
            },
        }
    }
}

/// Records `out (T, D) = sum_k y[t*K + k] + w[t*K + k] * bd[e(t, k)]`, K = `routing.n_used`,
/// `w` the route weights, `bd` the down biases (zero without).
pub fn sum(
    rec: &mut Recorder<'_>,
    y: &GpuMatrix,
    routing: &Routing,
    down_bias: Option<&ExpertTensor>,
    out: &GpuMatrix,
) -> Result<()> {
    let key = KernelKey::Sum {
        biased: down_bias.is_some(),
    };
    let n_used = routing.n_used;
    if y.rows != out.rows * n_used
        || routing.n_tokens != out.rows
        || y.cols != out.cols
        || y.ty != ActType::F32
        || out.ty != ActType::F32
    {
        return Err(shape(
            "sum",
            format!(
                "y {}x{} is not ({} * {n_used}) x {} f32",
                y.rows, y.cols, out.rows, out.cols
            ),
        ));
    }
    let params = rec.params(&SumParams {
        n_tokens: out.rows as u32,
        n_cols: out.cols as u32,
        n_used: n_used as u32,
        _pad0: 0,
    });
    let mut bindings = vec![
        ("params", params.binding()),
        ("y", y.buffer.as_entire_binding()),
        ("out", out.buffer.as_entire_binding()),
    ];
    if let Some(b) = down_bias {
        bindings.extend([
            ("ids", routing.ids.as_entire_binding()),
            ("route", routing.weights.as_entire_binding()),
            (
                "down_bias",
                bias_rows(&key, b, routing, out.cols)?.as_entire_binding(),
            ),
        ]);
    }
    rec.dispatch(&key, &bindings, Grid::Items(out.rows * out.cols))
}
